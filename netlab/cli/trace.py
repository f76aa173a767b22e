"""CLI for `netlab trace SRC DST` and `netlab topology --svg FILE`.

Only parses and prints (a numbered table of hops in kubectl's plain style, the why of each
hop beneath it, the verdict last; or `-o json|yaml`); netlab.lab.trace does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from netlab.cli import app as cli
from netlab.cli import output
from netlab.lab import trace as tracing
from netlab.errors import UsageError


def _why(h) -> list[str]:
    """The hop's reasons, without the noise: jumps into chains where nothing matched and
    policies that only let the packet go on (all of them are in -o json)."""
    lines = []
    if h.route:
        lines.append(f"route: {h.route}")
    nf = h.netfilter
    for i, d in enumerate(nf):
        if d.rule is None and d.action.endswith("policy ACCEPT"):
            continue
        if d.action.startswith(("jump ", "goto ")):
            target = d.action.split()[1]
            if not (i + 1 < len(nf) and nf[i + 1].chain == target):
                continue
            act = ""
            if d.choices:
                act = "  => " + d.action.split(" (", 1)[1].rstrip(")")
        else:
            act = f"  => {d.action}"
        where = f"{d.table} {d.chain} #{d.rule}" if d.rule else f"{d.table} {d.chain} policy"
        lines.append(f"{where}: {d.text}{act}")
        for c in d.choices or []:
            lines.append(f"    {'*' if c.chosen else ' '} {c.target} -> {c.endpoint or '?'} "
                         f"(probability {c.probability:.2f})")
    lines += h.notes
    return lines


def print_trace(res) -> None:
    t = res.trace
    headers = ["HOP", "NODE", "WHERE", "DEVICE", "PACKET", "WHAT"]
    rows = [[str(h.n), h.node or "-", h.where, h.device, str(h.packet), h.what] for h in t.hops]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    live = (res.live or {}).get("hops", {})
    print("   ".join(c.ljust(w) for c, w in zip(headers, widths)).rstrip())
    for h, r in zip(t.hops, rows):
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for line in _why(h):
            print(f"      {line}")
        for line in live.get(str(h.n), []):
            print(f"      live: {line}")
    if res.live:
        for line in res.live.get("summary", []):
            print(f"live: {line}")
    print(f"VERDICT: {t.verdict}")


def trace(src: str = typer.Argument(..., help="pod/NAME, a node name, or external."),
          dst: str = typer.Argument(..., help="IP:PORT, pod/NAME:PORT or svc/NAME[:PORT]."),
          proto: Optional[str] = typer.Option(None, "--proto", help="tcp (default), udp or icmp."),
          live: bool = typer.Option(False, "--live", help="Also send one real probe and capture it on every device."),
          endpoint: Optional[str] = typer.Option(None, "--endpoint",
                                                 help="At a service's random choice, follow this endpoint IP."),
          fmt: str = typer.Option("table", "-o", "--output", help="table, json or yaml."),
          svg: Optional[Path] = typer.Option(None, "--svg", help="Also draw the path on the topology (SVG)."),
          lab: Optional[str] = cli.LabOpt):
    """Follow a packet hop by hop through the lab's real kernel state, and say why."""
    if fmt not in ("table", "json", "yaml"):
        raise UsageError(f"-o: '{fmt}' is not one of table, json, yaml")
    cli.need_root()
    res = tracing.run(cli.lab_name(lab), src, dst, proto, live=live, endpoint=endpoint)
    if svg:
        svg.write_bytes(tracing.svg_for_trace(res))
    if fmt == "table":
        print_trace(res)
    else:
        output.dump(res.to_dict(), fmt)


def topology(svg: Path = typer.Option(..., "--svg", help="Where to write the picture (SVG)."),
             lab: Optional[str] = cli.LabOpt):
    """Draw the lab's topology: nodes, bridges, VXLAN devices, the node network, pods."""
    cli.need_root()
    svg.write_bytes(tracing.svg_for_lab(cli.lab_name(lab)))
    print(f"wrote {svg}")


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
    app.command("topology")(topology)
