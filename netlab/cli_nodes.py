"""CLI for nodes: `netlab get nodes [NAME] [-o wide|json|yaml]` and `netlab node add|delete`.

Only parses and prints; netlab.nodes does the work.
"""

from __future__ import annotations

from typing import Optional

import typer

from netlab import cli, output

node_app = typer.Typer(no_args_is_help=True, help="Add, delete, stop or start nodes of a running lab.")


@cli.register_get("nodes", "node", "no")
def get_nodes(a: cli.GetArgs) -> None:
    from netlab import nodes

    items = nodes.list_nodes(a.lab, a.name)
    if a.fmt in ("json", "yaml"):
        output.dump(items[0] if a.name else output.as_list(items), a.fmt)
        return
    wide = a.fmt == "wide"
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] + (["INTERNAL-IP", "POD-CIDR"] if wide else [])
    if not items:
        output.err.print("No resources found")
        return
    output.table(headers, [nodes.row(n, wide) for n in items])


@node_app.command("add")
def add(name: str = typer.Argument(..., help="Node name (a DNS label, e.g. kub-node-3)."),
        ip: str = typer.Option(..., "--ip", help="Its address on the node network."),
        role: str = typer.Option("worker", "--role", help="Only worker: a lab has one master."),
        lab: Optional[str] = cli.LabOpt):
    """Create a node (namespace, ens3, agent) in a running lab; it joins the overlay."""
    from netlab import nodes

    cli._need_root()
    res = nodes.add(cli._lab_name(lab), name, ip, role, report=cli._progress)
    extra = f", pod subnet {res['subnet']}" if res["subnet"] else ""
    print(f"node/{res['name']} added ({res['ip']}{extra}; "
          f"other nodes programmed it in {res['programmedSeconds']}s)")


@node_app.command("delete")
def delete(name: str = typer.Argument(..., help="Node name."), lab: Optional[str] = cli.LabOpt):
    """Stop a worker's agent, revoke its flannel lease and remove its namespace."""
    from netlab import nodes

    cli._need_root()
    res = nodes.delete(cli._lab_name(lab), name, report=cli._progress)
    print(f"node/{res['name']} deleted")


def register(app: typer.Typer) -> None:
    from netlab import cli_workloads  # node stop|start: nodes going away (netlab.nodecontrol)

    node_app.command("stop")(cli_workloads.node_stop)
    node_app.command("start")(cli_workloads.node_start)
    app.add_typer(node_app, name="node")
