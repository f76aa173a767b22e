"""CLI for workloads: `apply -f`, `delete -f`, `get deploy`, `scale deployment`, `delete deployment`.

Parses and prints only; the work is in netlab/api/manifests.py and netlab/api/deployments.py.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional

import typer

from netlab.api import deployments, manifests
from netlab.cli import app as cli
from netlab.cli import output
from netlab.errors import NotFound, UsageError

WAIT_HELP = "Wait until deployments are available, pods run and every proxy has the rules."


def apply(files: List[str] = typer.Option(..., "-f", "--filename", help="Manifest file ('-' = stdin); repeatable."),
          namespace: Optional[str] = typer.Option(None, "-n", "--namespace",
                                                  help="For objects that name no namespace (default: default)."),
          wait: bool = typer.Option(True, "--wait/--no-wait", help=WAIT_HELP),
          timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait."),
          lab: Optional[str] = cli.LabOpt):
    """Create or update the Deployments, Services and Pods of Kubernetes manifests (idempotent)."""
    docs = manifests.load(list(files), namespace)  # fields checked before root or the lab
    cli.need_root()
    with contextlib.ExitStack() as writing:
        lab_obj, st = cli.open_lab_writing(cli.lab_name(lab), writing)
        writing.callback(st.close)
        manifests.apply(st, lab_obj, docs, report=print)
    if not wait:
        return
    lab_obj, st = cli.open_lab(cli.lab_name(lab))  # the wait runs outside the lock
    try:
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
    if kind.lower() not in ("deployment", "deployments", "deploy"):
        raise UsageError(f"scale: KIND '{kind}' is not supported (deployment)")
    if replicas < 0:
        raise UsageError(f"--replicas: {replicas} is not a whole number >= 0")
    cli.need_root()
    with contextlib.ExitStack() as writing:
        lab_obj, st = cli.open_lab_writing(cli.lab_name(lab), writing)
        writing.callback(st.close)
        deployments.check_replicas(lab_obj, replicas, "--replicas")
        deployments.scale(st, namespace, name, replicas)
    print(f"deployment.apps/{name} scaled")
    if not wait:
        return
    lab_obj, st = cli.open_lab(cli.lab_name(lab))
    try:
        manifests.wait_deployment(st, lab_obj, namespace, name, timeout)
    finally:
        st.close()


def get_deployments(args: "cli.GetArgs") -> None:
    _, st = cli.open_lab(args.lab)
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
    headers = output.DEPLOY_WIDE_HEADERS if wide else output.DEPLOY_HEADERS
    output.print_list(args, items, headers, [output.deployment_row(d, wide) for d in items])


def delete_deployment(args: "cli.DeleteArgs") -> None:
    with cli.writing_lab(args.lab) as (_, st):
        item = deployments.get(st, args.namespace, args.name)
        gone = deployments.delete(st, args.namespace, args.name)
    if gone is None:
        if args.ignore_not_found:
            return
        raise NotFound(f'deployments.apps "{args.name}" not found in namespace {args.namespace}')
    print(f'deployment.apps "{args.name}" deleted')
    lab_obj, st = cli.open_lab(args.lab)  # the waits run outside the lock
    try:
        deployments.wait_pods_gone(st, args.namespace, gone, 60.0)
        labels = item.value["spec"]["template"]["metadata"].get("labels") or {} if item else {}
        manifests.wait_services(st, lab_obj, manifests.services_selecting(st, {args.namespace: [labels]}), 30.0)
    finally:
        st.close()


def delete_files(args: "cli.DeleteArgs") -> None:
    docs = manifests.load(args.files, check=False)
    with cli.writing_lab(args.lab) as (lab_obj, st):
        res = manifests.delete(st, lab_obj, docs, report=print)
    lab_obj, st = cli.open_lab(args.lab)
    try:
        manifests.wait_deleted(st, lab_obj, res, 60.0)
    finally:
        st.close()
    missing = [r for r in res if not r.found]
    if missing and not args.ignore_not_found:
        raise NotFound("; ".join(r.line for r in missing))


def register(app: typer.Typer) -> None:
    app.command(help=apply.__doc__)(apply)
    app.command(help=scale.__doc__)(scale)
    cli.register_get("deploy", "deployments", "deployment")(get_deployments)
    cli.register_delete("deploy", "deployments", "deployment")(delete_deployment)
    cli.register_delete("-f")(delete_files)
