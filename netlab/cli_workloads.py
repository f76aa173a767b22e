"""CLI for workloads: `apply -f`, `delete -f`, `get deploy`, `scale deployment`, `delete deployment`,
and `node stop|start`. Parses and prints only; the work is in netlab/manifests.py,
netlab/deployments.py and netlab/nodecontrol.py.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from netlab import cli, output
from netlab.errors import NotFound, UsageError

WAIT_HELP = "Wait until deployments are available, pods run and every proxy has the rules."


def _store(lab: str):
    from netlab import lifecycle
    from netlab.store import Store

    return lifecycle.load_running_lab(lab), Store.for_lab(lab)


def apply(files: List[str] = typer.Option(..., "-f", "--filename", help="Manifest file ('-' = stdin); repeatable."),
          namespace: Optional[str] = typer.Option(None, "-n", "--namespace",
                                                  help="For objects that name no namespace (default: default)."),
          wait: bool = typer.Option(True, "--wait/--no-wait", help=WAIT_HELP),
          timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait."),
          lab: Optional[str] = cli.LabOpt):
    """Create or update the Deployments, Services and Pods of Kubernetes manifests (idempotent)."""
    from netlab import manifests

    docs = manifests.load(list(files), namespace)  # fields checked before root or the lab
    cli._need_root()
    lab_obj, st = _store(cli._lab_name(lab))
    try:
        manifests.apply(st, lab_obj, docs, report=print)
        if wait:
            manifests.wait_ready(st, lab_obj, docs, timeout)
    finally:
        st.close()


def scale(kind: str = typer.Argument(..., help="deployment"),
          name: str = typer.Argument(...),
          replicas: int = typer.Option(..., "--replicas", help="The new number of pods."),
          namespace: str = typer.Option("default", "-n", "--namespace"),
          wait: bool = typer.Option(True, "--wait/--no-wait",
                                    help="Wait until exactly that many pods are ready and every proxy has them."),
          timeout: float = typer.Option(60.0, "--timeout"),
          lab: Optional[str] = cli.LabOpt):
    """Set a deployment's replica count."""
    from netlab import deployments, manifests

    if kind.lower() not in ("deployment", "deployments", "deploy"):
        raise UsageError(f"scale: KIND '{kind}' is not supported (deployment)")
    if replicas < 0:
        raise UsageError(f"--replicas: {replicas} is not a whole number >= 0")
    cli._need_root()
    lab_obj, st = _store(cli._lab_name(lab))
    try:
        deployments.scale(st, namespace, name, replicas)
        print(f"deployment.apps/{name} scaled")
        if wait:
            manifests.wait_deployment(st, lab_obj, namespace, name, timeout)
    finally:
        st.close()


def get_deployments(args: "cli.GetArgs") -> None:
    from netlab import deployments

    _, st = _store(args.lab)
    try:
        if args.name:
            item = deployments.get(st, args.namespace, args.name)
            if item is None:
                raise NotFound(f'deployments.apps "{args.name}" not found in namespace {args.namespace}')
            items = [item.value]
        else:
            items = deployments.list_deployments(st, None if args.all_namespaces else args.namespace)
    finally:
        st.close()
    wide = args.fmt == "wide"
    headers = deployments.WIDE_HEADERS if wide else deployments.HEADERS
    output.print_list(args, items, headers, [deployments.row(d, wide) for d in items])


def delete_deployment(args: "cli.DeleteArgs") -> None:
    from netlab import deployments, manifests

    lab_obj, st = _store(args.lab)
    try:
        item = deployments.get(st, args.namespace, args.name)
        gone = deployments.delete(st, args.namespace, args.name)
        if gone is None:
            if args.ignore_not_found:
                return
            raise NotFound(f'deployments.apps "{args.name}" not found in namespace {args.namespace}')
        print(f'deployment.apps "{args.name}" deleted')
        deployments.wait_pods_gone(st, args.namespace, gone, 60.0)
        labels = item.value["spec"]["template"]["metadata"].get("labels") or {} if item else {}
        manifests.wait_services(st, lab_obj, manifests.services_selecting(st, {args.namespace: [labels]}), 30.0)
    finally:
        st.close()


def delete_files(args: "cli.DeleteArgs") -> None:
    from netlab import manifests

    docs = manifests.load(args.files, check=False)
    lab_obj, st = _store(args.lab)
    try:
        res = manifests.delete(st, lab_obj, docs, report=print)
        manifests.wait_deleted(st, lab_obj, res, 60.0)
    finally:
        st.close()
    missing = [r for r in res if not r.found]
    if missing and not args.ignore_not_found:
        raise NotFound("; ".join(r.line for r in missing))


def node_stop(name: str = typer.Argument(..., help="A worker node."), lab: Optional[str] = cli.LabOpt):
    """Stop a worker's agent and its pods' processes, as a host crash would."""
    from netlab import nodecontrol

    cli._need_root()
    res = nodecontrol.stop(cli._lab_name(lab), name)
    agent = f"agent pid {res.agent_pid}" if res.agent_pid else "agent was not running"
    print(f"node/{name} stopped ({agent}, {len(res.pod_pids)} pod processes killed); "
          f"NotReady after {res.grace}s without heartbeat, then its pods move")


def node_start(name: str = typer.Argument(...), lab: Optional[str] = cli.LabOpt):
    """Start a stopped node's agent again."""
    from netlab import nodecontrol

    cli._need_root()
    pid = nodecontrol.start(cli._lab_name(lab), name)
    print(f"node/{name} started (agent pid {pid})")


def register(app: typer.Typer) -> None:
    app.command(help=apply.__doc__)(apply)
    app.command(help=scale.__doc__)(scale)
    cli.register_get("deploy", "deployments", "deployment")(get_deployments)
    cli.register_delete("deploy", "deployments", "deployment")(delete_deployment)
    cli.register_delete("-f")(delete_files)
