"""CLI for pods: `run`, `get pods`, `delete pod`, `logs` and `ps`.

Only parses and prints (kubectl's and docker's columns and words); netlab.api.pods (the
objects) and netlab.lab.pods (what the nodes run) do the work.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from netlab.api import pods
from netlab.cli import app as cli
from netlab.cli import output
from netlab.errors import NotFound, UsageError
from netlab.lab import pods as node_pods
from netlab.lab import running


def _pairs(values: list[str], opt: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        for part in v.split(","):
            k, sep, val = part.partition("=")
            if not sep or not k:
                raise UsageError(f"{opt}: '{part}' is not KEY=VALUE")
            out[k] = val
    return out


def run(name: str = typer.Argument(..., help="The pod's name (a DNS label)."),
        cmd: Optional[List[str]] = typer.Argument(None, help="The container's command, after --."),
        image: Optional[str] = typer.Option(None, "--image",
                                            help="netlab/hello (the default without a command)."),
        port: Optional[int] = typer.Option(None, "--port", help="The container port it serves."),
        labels: List[str] = typer.Option([], "-l", "--labels", help="k=v[,k=v] (default run=NAME)."),
        env: List[str] = typer.Option([], "--env", help="K=V for the container; repeatable."),
        node: Optional[str] = typer.Option(None, "--node", help="Run it on this worker (else the scheduler picks)."),
        namespace: str = typer.Option("default", "-n", "--namespace"),
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it runs."),
        timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait."),
        lab: Optional[str] = cli.LabOpt):
    """Run a bare pod, like kubectl run: `netlab run web` (the HTTP app) or `netlab run x -- CMD...`."""
    pods.check_name(name, "NAME")
    if image not in (None, pods.HELLO_IMAGE):
        raise UsageError(f"--image: '{image}' is not available in netlab (only {pods.HELLO_IMAGE}; "
                         "or give a command after --)")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a port (1-65535)")
    pod = pods.new_pod(name, namespace, command=list(cmd or []) or None, image=image, port=port,
                       labels=_pairs(labels, "-l") or None, env=_pairs(env, "--env"), node=node)
    pods.validate_pod(pod)
    cli.need_root()
    with cli.writing_lab(cli.lab_name(lab)) as (lab_obj, st):
        if node:
            try:
                n = lab_obj.node(node)
            except UsageError as e:
                raise UsageError(f"--node: {e}") from None
            if n.role != "worker":
                raise UsageError(f"--node: {node} is the master; pods run on workers")
        pods.create_pod(st, pod)
    print(f"pod/{name} created")
    if not wait:
        return
    _, st = cli.open_lab(cli.lab_name(lab))  # the wait runs outside the lock
    try:
        p = pods.wait_running(st, namespace, name, timeout)
        s = p.get("status") or {}
        print(f"pod/{name} {pods.status_text(p)} on {p['spec']['nodeName']}, IP {s.get('podIP')}")
    finally:
        st.close()


def get_pods(a: "cli.GetArgs") -> None:
    _, st = cli.open_lab(a.lab)
    try:
        if a.name:
            p = pods.get_pod(st, a.namespace, a.name)
            if p is None:
                raise NotFound(f'pods "{a.name}" not found')
            items = [p]
        else:
            items = pods.list_pods(st, None if a.all_namespaces else a.namespace)
    finally:
        st.close()
    if a.fmt in ("json", "yaml"):
        output.dump(items[0] if a.name else output.as_list(items), a.fmt)
        return
    if not items:
        output.err.print("No resources found" + ("" if a.all_namespaces else f" in {a.namespace} namespace") + ".")
        return
    wide = a.fmt == "wide"
    headers = output.POD_WIDE_HEADERS if wide else output.POD_HEADERS
    if a.all_namespaces:
        headers = ["NAMESPACE", *headers]
    output.table(headers, [output.pod_row(p, wide, a.all_namespaces) for p in items])


def delete_pod(a: "cli.DeleteArgs") -> None:
    with cli.writing_lab(a.lab) as (_, st):
        gone = pods.delete_pod(st, a.namespace, a.name)
    if gone is None:
        if a.ignore_not_found:
            return
        raise NotFound(f'pods "{a.name}" not found')
    print(f'pod "{a.name}" deleted')
    # Like kubectl, return once the pod is really gone (its node tore it down).
    if gone["spec"].get("nodeName") and not node_pods.wait_gone(a.lab, a.namespace, a.name, gone["metadata"]["uid"]):
        output.err.print(f"warning: {gone['spec']['nodeName']} has not removed pod {a.name} yet")


def logs(pod: str = typer.Argument(..., autocompletion=cli.complete_kind("pods"), help="The pod's name."),
         container: Optional[str] = typer.Option(None, "-c", "--container"),
         follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing what it writes."),
         previous: bool = typer.Option(False, "-p", "--previous", help="The previous instance's log."),
         namespace: str = typer.Option("default", "-n", "--namespace"),
         lab: Optional[str] = cli.LabOpt):
    """Print a container's output (stdout and stderr)."""
    cli.need_root()
    name = cli.lab_name(lab)
    path = node_pods.log_path(name, namespace, pod, container, previous)
    if not path.exists():
        raise NotFound(f"container log {path} does not exist (yet)")
    stop = (lambda: True) if not follow or previous else node_pods.log_ended(name, namespace, pod, path)
    for chunk in node_pods.follow(path, stop):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def ps(node: Optional[str] = typer.Option(None, "--node", help="Only this node's containers."),
       lab: Optional[str] = cli.LabOpt):
    """The pods' containers in the manner of `docker ps`: pause (k8s_POD_...) and app containers."""
    cli.need_root()
    name = cli.lab_name(lab)
    if node:
        running.load_running_lab(name).node(node)
    output.table(node_pods.PS_HEADERS, node_pods.ps_rows(name, node))


def register(app: typer.Typer) -> None:
    app.command(context_settings={"ignore_unknown_options": True}, help=run.__doc__)(run)
    app.command(help=logs.__doc__)(logs)
    app.command(help=ps.__doc__)(ps)
    cli.register_get("pods", "pod", "po")(get_pods)
    cli.register_delete("pod", "pods", "po")(delete_pod)
