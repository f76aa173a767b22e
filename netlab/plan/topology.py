"""The lab's topology as a Graphviz graph, with a traced path drawn on it (pure: builds DOT).

Owns what the picture shows: one box per node (its pods, docker0, flannel.1, ens3), the
node network (the underlay bridge and the router / outside host), the links between them
(veth pairs, routing inside a node, VXLAN over ens3) and, for a trace, the path in red with
each hop numbered and the packet as it looked there. Laying it out is Graphviz's `dot`
(the caller renders it); no coordinates are placed by hand.
"""

from __future__ import annotations

import html
import re
import textwrap

import graphviz

from netlab.plan.trace import Namespace, Snapshot, Trace

PATH = "#d62728"
GREY = "#7f7f7f"


def _ider(snap: Snapshot):
    """Node ids named after what the reader sees (pod/NAME, kub-node-1), not the lab's
    namespace names, so a picture does not depend on the lab it was drawn from."""
    labels = {ns.name: (ns.pod or ns.label) for ns in snap.namespaces.values()}
    return lambda ns, dev: re.sub(r"[^A-Za-z0-9_]", "_", f"{labels.get(ns, ns)}__{dev}")


def _addr(link) -> str:
    return ", ".join(f"{a}/{p}" for a, p in link.addresses)


def _label(title: str, lines: list[str], hops: list[int]) -> str:
    rows = [f"<b>{html.escape(title)}</b>"] + [html.escape(x) for x in lines if x]
    if hops:
        rows.append(f'<font color="{PATH}"><b>hop {", ".join(map(str, hops))}</b></font>')
    return "<" + "<br/>".join(rows) + ">"


def _involved_pods(snap: Snapshot, tr: Trace | None) -> set[str]:
    if tr is None:
        return {ns.name for ns in snap.namespaces.values() if ns.role == "pod"}
    out = {h.namespace for h in tr.hops if snap.namespaces[h.namespace].role == "pod"}
    for h in tr.hops:
        for d in h.netfilter:
            for c in d.choices or []:
                ip = (c.endpoint or "").split(":")[0]
                p = snap.pod_by_ip(ip) if ip else None
                if p:
                    out.add(p.name)
    return out


def graph(snap: Snapshot, tr: Trace | None) -> graphviz.Digraph:
    g = graphviz.Digraph("netlab", graph_attr={
        "rankdir": "TB", "fontname": "Helvetica", "fontsize": "11", "nodesep": "0.35", "ranksep": "0.55",
        "labelloc": "t", "label": _title(tr)}, node_attr={
        "shape": "box", "style": "rounded,filled", "fillcolor": "white", "fontname": "Helvetica",
        "fontsize": "10"}, edge_attr={"fontname": "Helvetica", "fontsize": "9", "color": GREY,
                                      "arrowhead": "none"})
    _id = _ider(snap)
    hops: dict[str, list[int]] = {}
    if tr:
        for h in tr.hops:
            hops.setdefault(_id(h.namespace, h.device), []).append(h.n)
    pods = _involved_pods(snap, tr)
    drawn: set[str] = set()

    def node(ns: Namespace, dev: str, title: str, lines: list[str], **attrs) -> str:
        nid = _id(ns.name, dev)
        hl = hops.get(nid, [])
        if hl:
            attrs = {**attrs, "color": PATH, "penwidth": "2"}
        g.node(nid, _label(title, lines, hl), **attrs)
        drawn.add(nid)
        return nid

    under = next((ns for ns in snap.namespaces.values() if ns.role == "underlay"), None)
    nodes = sorted((ns for ns in snap.namespaces.values() if ns.role == "node"), key=lambda n: n.node or "")
    for ns in nodes:
        ip = next((a for l in ns.links.values() if l.kind == "veth" and l.peer and under and
                   l.peer[0] == under.name for a, _ in l.addresses), "")
        with g.subgraph(name=f"cluster_{_id(ns.name, '')}") as c:
            c.attr(label=f"{ns.node}  {ip}", style="rounded", color="#1f77b4", fontcolor="#1f77b4",
                   fontsize="12")
            for link in ns.links.values():
                if link.kind == "bridge":
                    nid = _id(ns.name, link.name)
                    c.node(nid, _label(link.name, [f"bridge {_addr(link)}"], hops.get(nid, [])),
                           fillcolor="#e8f1fa", **({"color": PATH, "penwidth": "2"} if hops.get(nid) else {}))
                    drawn.add(nid)
                elif link.kind == "vxlan":
                    vx = link.vxlan
                    nid = _id(ns.name, link.name)
                    c.node(nid, _label(link.name, [f"VXLAN VNI {vx.vni}, UDP {vx.port}", _addr(link)],
                                       hops.get(nid, [])),
                           fillcolor="#fdf1e3", **({"color": PATH, "penwidth": "2"} if hops.get(nid) else {}))
                    drawn.add(nid)
                elif link.kind == "veth" and link.peer and under and link.peer[0] == under.name:
                    nid = _id(ns.name, link.name)
                    c.node(nid, _label(link.name, [_addr(link)], hops.get(nid, [])),
                           fillcolor="#eeeeee", **({"color": PATH, "penwidth": "2"} if hops.get(nid) else {}))
                    drawn.add(nid)
            for pns in sorted((snap.namespaces[p] for p in pods), key=lambda n: n.name):
                if pns.node != ns.node:
                    continue
                for link in pns.links.values():
                    if link.kind == "veth":
                        nid = _id(pns.name, link.name)
                        c.node(nid, _label(f"pod/{pns.pod.split('/')[1]}", [f"{link.name} {_addr(link)}"],
                                           hops.get(nid, [])),
                               fillcolor="#eaf6ea", **({"color": PATH, "penwidth": "2"} if hops.get(nid) else {}))
                        drawn.add(nid)
    if under:
        with g.subgraph(name="cluster_underlay") as c:
            br = next((l for l in under.links.values() if l.kind == "bridge"), None)
            c.attr(label=f"node network {', '.join(_addr(l) for l in under.links.values() if l.kind == 'bridge')}",
                   style="rounded", color="#555555", fontcolor="#555555", fontsize="12")
            if br:
                nid = _id(under.name, br.name)
                c.node(nid, _label(f"{br.name}: router / external", [_addr(br)], hops.get(nid, [])),
                       fillcolor="#f3f3f3", **({"color": PATH, "penwidth": "2"} if hops.get(nid) else {}))
                drawn.add(nid)
    # The wiring: veth pairs (to a bridge when the peer is a bridge port), routing, VXLAN.
    for ns in [*nodes, *(snap.namespaces[p] for p in pods)]:
        for link in ns.links.values():
            if link.kind != "veth" or not link.peer or link.peer[0] not in snap.namespaces:
                continue
            pns = snap.namespaces[link.peer[0]]
            plink = pns.links.get(link.peer[1])
            if plink is None:
                continue
            far = _id(pns.name, plink.master) if plink.master else _id(pns.name, plink.name)
            near = _id(ns.name, link.name)
            if near in drawn and far in drawn and ns.role != "underlay":
                g.edge(near, far, label=f" veth {plink.name}", style="solid")
    for ns in nodes:
        bridge = next((l for l in ns.links.values() if l.kind == "bridge"), None)
        vx = next((l for l in ns.links.values() if l.kind == "vxlan"), None)
        uplink = next((l for l in ns.links.values() if l.kind == "veth" and l.peer and under
                       and l.peer[0] == under.name), None)
        if bridge and vx:
            g.edge(_id(ns.name, bridge.name), _id(ns.name, vx.name), label=" routed", style="dashed")
        if vx and uplink:
            g.edge(_id(ns.name, vx.name), _id(ns.name, uplink.name), label=" encap", style="dashed")
    if tr:
        _path(g, tr, drawn, _id)
    return g


def _title(tr: Trace | None) -> str:
    if tr is None:
        return "netlab topology"
    first = tr.hops[0].packet if tr.hops else None
    head = f"{tr.hops[0].where} → {first.dst}" + (f":{first.dport}" if first and first.dport else "") if first else ""
    return f"netlab trace {head} ({first.proto if first else ''}): {tr.verdict}"


def _path(g: graphviz.Digraph, tr: Trace, drawn: set[str], _id) -> None:
    prev, prev_hop = None, None
    for h in tr.hops:
        cur = _id(h.namespace, h.device)
        if cur not in drawn:
            continue
        if prev and prev != cur:
            # The packet as it crossed this edge: what the previous hop sent, except where a
            # hop makes a new one (VXLAN's outer packet) or unwraps one (decapsulation).
            p = h.packet if h.event in ("send", "decap") or prev_hop is None else prev_hop.packet
            lab = f"{h.n}: {p.src} → {p.dst}" + (f":{p.dport}" if p.dport else "")
            if h.outer and h.event in ("send", "receive", "bridge") and p.proto == "udp" and p.dport == h.outer.get("dport"):
                lab += f" (VXLAN {h.outer['vni']})"
            g.edge(prev, cur, label=lab, color=PATH, fontcolor=PATH, penwidth="2.2", arrowhead="normal",
                   constraint="false")
        prev, prev_hop = cur, h
    if tr.hops:
        last = _id(tr.hops[-1].namespace, tr.hops[-1].device)
        if last in drawn:
            g.node("verdict", "\n".join(textwrap.wrap(str(tr.verdict), 60)), shape="note", fillcolor="#fff6d5" if tr.verdict.delivered
                   else "#fde0dc", color=PATH)
            g.edge(last, "verdict", color=PATH, style="dotted", arrowhead="normal")
