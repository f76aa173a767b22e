"""CLI for services: `expose pod|deployment NAME`, `get svc`, `get endpoints`, `delete svc`.

Only parses and prints (kubectl's columns and words); netlab.api.services does the work.
"""

from __future__ import annotations

from typing import Optional

import typer

from netlab.api import services
from netlab.cli import app as cli
from netlab.cli import output
from netlab.errors import NotFound, UsageError


def expose(kind: str = typer.Argument(..., help="pod or deployment"),
           name: str = typer.Argument(..., help="The pod's or deployment's name."),
           port: Optional[int] = typer.Option(None, "--port", help="The service's port (default: the first container port)."),
           target_port: Optional[str] = typer.Option(None, "--target-port",
                                                     help="Container port number or name (default: --port)."),
           type_: str = typer.Option("ClusterIP", "--type", help="ClusterIP or NodePort."),
           svc_name: Optional[str] = typer.Option(None, "--name", help="The service's name (default: NAME)."),
           node_port: Optional[int] = typer.Option(None, "--node-port", help="A fixed node port (NodePort only)."),
           protocol: Optional[str] = typer.Option(None, "--protocol", help="TCP (default) or UDP."),
           namespace: str = typer.Option("default", "-n", "--namespace"),
           wait: bool = typer.Option(True, "--wait/--no-wait",
                                     help="Wait until every worker's proxy has the rules in place."),
           timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait."),
           lab: Optional[str] = cli.LabOpt):
    """Create a Service selecting a pod's (or a deployment's pods') labels, as kubectl expose."""
    if type_ not in services.TYPES:
        raise UsageError(f"--type: '{type_}' is not one of {', '.join(services.TYPES)}")
    if protocol is not None and protocol not in services.PROTOCOLS:
        raise UsageError(f"--protocol: '{protocol}' is not one of {', '.join(services.PROTOCOLS)}")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a port (1-65535)")
    cli.need_root()
    with cli.writing_lab(cli.lab_name(lab)) as (lab_obj, st):
        svc, rev = services.expose(st, lab_obj, kind, name, namespace, port=port, target_port=target_port,
                                   type_=type_, svc_name=svc_name, node_port=node_port, protocol=protocol)
    print(f"service/{svc['metadata']['name']} exposed")
    if not wait:
        return
    lab_obj, st = cli.open_lab(cli.lab_name(lab))  # the wait runs outside the lock
    try:
        services.wait_in_place(st, lab_obj, svc, rev, timeout)
    finally:
        st.close()


def _list(args: "cli.GetArgs", one, many) -> list[dict]:
    _, st = cli.open_lab(args.lab)
    try:
        if args.name:
            return [one(st, args.namespace, args.name)]
        return many(st, None if args.all_namespaces else args.namespace)
    finally:
        st.close()


def get_services(args: "cli.GetArgs") -> None:
    items = _list(args, services.get, services.list_services)
    wide = args.fmt == "wide"
    output.print_list(args, items, output.SVC_HEADERS + (["SELECTOR"] if wide else []),
           [output.service_row(s, wide) for s in items])


def get_endpoints(args: "cli.GetArgs") -> None:
    items = _list(args, services.get_endpoints, services.list_endpoints)
    output.print_list(args, items, output.EP_HEADERS, [output.endpoints_row(e) for e in items])


def delete_service(args: "cli.DeleteArgs") -> None:
    try:
        with cli.writing_lab(args.lab) as (lab_obj, st):
            _, rev = services.delete(st, args.namespace, args.name)
    except NotFound:
        if args.ignore_not_found:
            return
        raise
    print(f'service "{args.name}" deleted')
    lab_obj, st = cli.open_lab(args.lab)
    try:
        services.wait_proxies(st, lab_obj, rev)
    finally:
        st.close()


def register(app: typer.Typer) -> None:
    app.command(help=expose.__doc__)(expose)
    cli.register_get("svc", "service", "services")(get_services)
    cli.register_get("endpoints", "ep", "endpoint")(get_endpoints)
    cli.register_delete("svc", "service", "services")(delete_service)
