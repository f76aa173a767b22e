"""CLI for nodes: `netlab get nodes [NAME] [-o wide|json|yaml]` and `netlab node add|delete|stop|start`.

Only parses and prints; netlab.api.nodes (reading) and netlab.lab.nodes (node operations)
do the work.
"""

from __future__ import annotations

from typing import Optional

import typer

from netlab.api import nodes as api_nodes
from netlab.cli import app as cli
from netlab.cli import output
from netlab.lab import nodes

node_app = typer.Typer(no_args_is_help=True, help="Add, delete, stop or start nodes of a running lab.")


@cli.register_get("nodes", "node", "no")
def get_nodes(a: cli.GetArgs) -> None:
    lab, st = cli.open_lab(a.lab)
    try:
        items = api_nodes.list_nodes(st, lab.node_monitor_grace_period, a.name)
    finally:
        st.close()
    if a.fmt in ("json", "yaml"):
        output.dump(items[0] if a.name else output.as_list(items), a.fmt)
        return
    wide = a.fmt == "wide"
    headers = output.NODE_WIDE_HEADERS if wide else output.NODE_HEADERS
    if not items:
        output.err.print("No resources found")
        return
    output.table(headers, [output.node_row(n, wide) for n in items])


@node_app.command("add")
def add(name: str = typer.Argument(..., help="Node name (a DNS label, e.g. kub-node-3)."),
        ip: str = typer.Option(..., "--ip", help="Its address on the node network."),
        role: str = typer.Option("worker", "--role", help="Only worker: a lab has one master."),
        lab: Optional[str] = cli.LabOpt):
    """Create a node (namespace, ens3, agent) in a running lab; it joins the overlay."""
    cli.need_root()
    res = nodes.add(cli.lab_name(lab), name, ip, role, report=cli.progress)
    extra = f", pod subnet {res['subnet']}" if res["subnet"] else ""
    print(f"node/{res['name']} added ({res['ip']}{extra}; "
          f"other nodes programmed it in {res['programmedSeconds']}s)")


@node_app.command("delete")
def delete(name: str = typer.Argument(..., autocompletion=cli.complete_kind("nodes"), help="Node name."), lab: Optional[str] = cli.LabOpt):
    """Stop a worker's agent, revoke its flannel lease and remove its namespace."""
    cli.need_root()
    res = nodes.delete(cli.lab_name(lab), name, report=cli.progress)
    print(f"node/{res['name']} deleted")


@node_app.command("stop")
def stop(name: str = typer.Argument(..., autocompletion=cli.complete_kind("nodes"), help="A worker node."), lab: Optional[str] = cli.LabOpt):
    """Stop a worker's agent and its pods' processes, as a host crash would."""
    cli.need_root()
    res = nodes.stop(cli.lab_name(lab), name)
    agent = f"agent pid {res.agent_pid}" if res.agent_pid else "agent was not running"
    print(f"node/{name} stopped ({agent}, {len(res.pod_pids)} pod processes killed); "
          f"NotReady after {res.grace}s without heartbeat, then its pods move")


@node_app.command("start")
def start(name: str = typer.Argument(..., autocompletion=cli.complete_kind("nodes")), lab: Optional[str] = cli.LabOpt):
    """Start a stopped node's agent again."""
    cli.need_root()
    pid = nodes.start(cli.lab_name(lab), name)
    print(f"node/{name} started (agent pid {pid})")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
