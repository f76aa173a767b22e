"""`netlab trace` and `netlab topology` on the host side: resolve targets, snapshot, predict, draw.

Owns turning SRC/DST words (`pod/NAME`, a node name, `external`; `IP:PORT`, `pod/NAME:PORT`,
`svc/NAME[:PORT]`) into namespaces and addresses, reading the lab's kernel state
(netlab.kernel.snapshot), running the planner (netlab.plan.trace), the live probe
(netlab.kernel.capture) and rendering the picture (netlab.plan.topology through Graphviz).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import graphviz

from netlab import names
from netlab.kernel import capture as kernel_capture
from netlab.kernel import netns as kns
from netlab.kernel import snapshot as kernel_snapshot
from netlab.errors import LabNotUp, UsageError
from netlab.plan import topology
from netlab.plan.trace import Snapshot, Trace, trace

_PROTOS = ("tcp", "udp", "icmp")


@dataclass
class Target:
    netns: str | None  # for sources
    ip: str | None
    port: int | None
    label: str
    proto: str | None = None  # a service port's own protocol


def _port(text: str, arg: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text or ""):
        raise UsageError(f"{arg}: port '{text}' is not a number")
    p = int(text)
    if not 1 <= p <= 65535:
        raise UsageError(f"{arg}: port {p} is out of range 1-65535")
    return p


def _ip(text: str, arg: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UsageError(f"{arg}: '{text}' is not an IPv4 address") from None


def _find_pod(snap: Snapshot, name: str, arg: str):
    ns_name, _, pod = name.rpartition("/")
    cands = [ns for ns in snap.namespaces.values() if ns.role == "pod"
             and ns.pod.split("/")[1] == pod and (not ns_name or ns.pod.split("/")[0] == ns_name)]
    if not cands:
        raise UsageError(f"{arg}: no pod '{name}' in this lab")
    if len(cands) > 1:
        cands = [c for c in cands if c.pod.startswith("default/")] or cands
        if len(cands) > 1:
            raise UsageError(f"{arg}: pod '{name}' exists in several namespaces; write pod/NAMESPACE/NAME")
    return cands[0]


def resolve_source(lab: str, snap: Snapshot, text: str) -> Target:
    kind, _, name = text.partition("/")
    if text == "external":
        ns = names.underlay_ns(lab)
        if ns not in snap.namespaces:
            raise LabNotUp(f"lab '{lab}' has no underlay namespace (is it up?)")
        return Target(ns, None, None, "external")
    if kind in ("pod", "po", "pods") and name:
        p = _find_pod(snap, name, "SRC")
        return Target(p.name, None, None, f"pod/{p.pod.split('/')[1]}")
    node = name if kind in ("node", "nodes", "no") and name else text
    ns = names.node_ns(lab, node)
    if "/" in node or ns not in snap.namespaces or snap.namespaces[ns].role != "node":
        raise UsageError(f"SRC: '{text}' is not pod/NAME, a node of lab '{lab}' or external")
    return Target(ns, None, None, node)


def resolve_dest(lab: str, snap: Snapshot, text: str, proto: str) -> Target:
    kind, slash, rest = text.partition("/")
    if slash and kind in ("pod", "po", "pods"):
        name, colon, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        p = _find_pod(snap, name, "DST")
        ip = next((a for l in p.links.values() if l.name != "lo" for a, _ in l.addresses), None)
        if ip is None:
            raise UsageError(f"DST: pod '{name}' has no address")
        if proto != "icmp" and not colon:
            raise UsageError(f"DST: give the port: pod/{name}:PORT")
        return Target(None, ip, _port(port, "DST") if colon else None, f"pod/{name}")
    if slash and kind in ("svc", "service", "services"):
        name, colon, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        return _service(lab, name, _port(port, "DST") if colon else None)
    host, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if slash or not re.fullmatch(r"[0-9.]+", host):
        raise UsageError(f"DST: '{text}' is not IP:PORT, pod/NAME:PORT or svc/NAME[:PORT]")
    ip = _ip(host, "DST")
    if proto != "icmp" and not colon:
        raise UsageError(f"DST: give the port: {ip}:PORT")
    return Target(None, ip, _port(port, "DST") if colon else None, text)


def _service(lab: str, name: str, port: int | None) -> Target:
    from netlab.api import services  # the store client (etcd, gRPC) only when a service is named
    from netlab.store import Store

    namespace, _, svc_name = name.rpartition("/")
    namespace = namespace or "default"
    st = Store.for_lab(lab)
    try:
        item = st.get(services.key(namespace, svc_name))
    finally:
        st.close()
    if item is None:
        raise UsageError(f"DST: no service '{svc_name}' in namespace {namespace}")
    spec = item.value["spec"]
    ports = spec.get("ports") or []
    chosen = next((p for p in ports if port is None or p["port"] == port), None)
    if chosen is None:
        raise UsageError(f"DST: service {svc_name} has no port {port} "
                         f"(it has {', '.join(str(p['port']) for p in ports) or 'none'})")
    return Target(None, spec["clusterIP"], chosen["port"], f"svc/{svc_name}",
                  proto=chosen.get("protocol", "TCP").lower())


def snapshot(lab: str) -> Snapshot:
    from netlab.lab import running  # here: it pulls in the etcd client (grpc), ~0.3 s

    if not kns.netns_exists(names.underlay_ns(lab)):
        raise LabNotUp(f"lab '{lab}' is not up (no namespace {names.underlay_ns(lab)})")
    try:
        cidr = running.load_running_lab(lab).services.cluster_ip_range
    except Exception:  # noqa: BLE001 - a lab copy missing: the explanation loses one sentence
        cidr = None
    return kernel_snapshot.read(lab, service_cidr=cidr)


@dataclass
class Result:
    trace: Trace
    snapshot: Snapshot
    source: Target
    dest: Target
    proto: str
    live: dict | None = None

    def to_dict(self) -> dict:
        d = self.trace.to_dict()
        if self.live is not None:
            d["live"] = self.live
        return d


def run(lab: str, src: str, dst: str, proto: str | None = None, *, live: bool = False,
        endpoint: str | None = None) -> Result:
    if proto is not None and proto not in _PROTOS:
        raise UsageError(f"--proto: '{proto}' is not tcp, udp or icmp")
    if endpoint is not None:
        _ip(endpoint.split(":")[0], "--endpoint")
    if live and proto == "icmp":
        raise UsageError("--live: probes are TCP or UDP; use --proto tcp|udp")
    snap = snapshot(lab)
    s = resolve_source(lab, snap, src)
    d = resolve_dest(lab, snap, dst, proto or "tcp")
    proto = proto or d.proto or "tcp"
    if live:
        if not _inside_lab(snap, d.ip):
            raise UsageError(f"--live: {d.ip} is not an address of this lab's namespaces or services")
        probe = kernel_capture.probe(snap, s.netns, d.ip, d.port, proto, _capture_points(snap))
        res = Result(trace(snap, s.netns, d.ip, d.port, proto, prefer=probe.get("endpoint") or endpoint,
                           sport=probe.get("sport"), src=probe.get("src")), snap, s, d, proto)
        res.live = kernel_capture.compare(res.trace, probe, kernel_capture.bridge_ports(snap))
        return res
    return Result(trace(snap, s.netns, d.ip, d.port, proto, prefer=endpoint), snap, s, d, proto)


def _inside_lab(snap: Snapshot, ip: str) -> bool:
    if any(ip in ns.local_addresses() for ns in snap.namespaces.values()):
        return True
    return bool(snap.service_cidr) and ipaddress.ip_address(ip) in ipaddress.ip_network(snap.service_cidr)


def _capture_points(snap: Snapshot) -> list[tuple[str, str]]:
    """Every (namespace, device) a probe can cross: all links but loopback."""
    return [(ns.name, l.name) for ns in snap.namespaces.values() for l in ns.links.values()
            if l.kind != "loopback" and l.up]


def render_svg(graph) -> bytes:
    """Lay the graph out with Graphviz's dot (a subprocess of the graphviz binding)."""
    try:
        return graph.pipe(format="svg")
    except graphviz.ExecutableNotFound:
        raise UsageError("--svg: Graphviz's `dot` is not installed (apt-get install graphviz)") from None


def svg_for_trace(res: Result) -> bytes:
    return render_svg(topology.graph(res.snapshot, res.trace))


def svg_for_lab(lab: str) -> bytes:
    return render_svg(topology.graph(snapshot(lab), None))
