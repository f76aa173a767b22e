"""Reading a lab's real kernel state into the trace planner's Snapshot.

Owns every read the tracer makes: per namespace (through a netlink socket opened inside it
with setns, never a forked helper) the links with their kind, MAC, master, veth peer
(resolved through the namespace ids the kernel assigned), VXLAN and bridge-port data,
addresses, the main routing table, neighbours, the FDB; from /proc (read from a thread
inside the namespace) the listening TCP and bound UDP sockets, ip_forward and
bridge-nf-call-iptables; and the iptables tables with their counters through
`iptables-legacy-save -c`. Nothing here writes.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

from netlab import names
from netlab.errors import KernelError
from netlab.kernel import common, netns as kns, nft as knft
from netlab.plan.nft_trace import NftRules
from netlab.plan.trace import (FdbEntry, IptablesRules, Link, Namespace, Neighbour, Route, Snapshot,
                               Socket, Vxlan)

_NUD = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
        0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}
_PROTO = {2: "kernel", 4: "static", 16: "dhcp", 186: "bgp"}  # 3 (boot) is not printed by ip
_SCOPE = {253: "link", 254: "host"}
_RTYPE = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit",
          9: "throw"}
_NSID_NONE = 0xFFFFFFFF


def _role(lab: str, netns: str) -> tuple[str, str | None, str | None]:
    """(role, node, pod) from the lab's naming scheme (names.py)."""
    if netns == names.underlay_ns(lab):
        return "underlay", None, None
    rest = netns[len(names.ns_prefix(lab)):]
    if rest.startswith("pod-"):
        ns, _, pod = rest[4:].partition("_")
        return "pod", None, f"{ns}/{pod}"
    return "node", rest, None


def _proc_sockets(text: str, proto: str) -> list[Socket]:
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 4:
            continue
        ip_hex, port_hex = f[1].split(":")
        state = int(f[3], 16)
        if proto == "tcp" and state != 0x0A:  # LISTEN
            continue
        if proto == "udp" and state != 0x07:  # unconnected (bound)
            continue
        ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))
        out.append(Socket(proto, ip, int(port_hex, 16)))
    return [Socket(*t) for t in sorted({(s.proto, s.ip, s.port) for s in out})]


def _read_file(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_netlink(netns: str, all_ns: list[str]) -> dict:
    """Everything netlink and /proc say about one namespace (run in a worker thread)."""
    from pyroute2 import IPRoute  # imported here: pyroute2 costs ~0.2 s to import, only trace needs it

    with kns.in_netns(netns):
        ipr = IPRoute()
        sockets = (_proc_sockets(_read_file("/proc/thread-self/net/tcp") or "", "tcp")
                   + _proc_sockets(_read_file("/proc/thread-self/net/udp") or "", "udp"))
        fwd = (_read_file("/proc/sys/net/ipv4/ip_forward") or "0").strip() == "1"
        brnf = (_read_file("/proc/sys/net/bridge/bridge-nf-call-iptables") or "0").strip() == "1"
    try:
        nsids = {}
        for other in all_ns:
            fd = os.open(kns.netns_path(other), os.O_RDONLY | os.O_CLOEXEC)
            try:
                r = ipr.get_netnsid(fd=fd)
            finally:
                os.close(fd)
            if r and r.get("nsid") not in (None, _NSID_NONE):
                nsids[r["nsid"]] = other
        links = list(ipr.get_links())
        addrs = list(ipr.get_addr(family=2))
        routes = list(ipr.get_routes(family=2, table=254))
        neigh = list(ipr.get_neighbours(family=2))
        fdb = list(ipr.fdb("dump"))
    finally:
        ipr.close()
    return {"links": links, "addrs": addrs, "routes": routes, "neigh": neigh, "fdb": fdb,
            "nsids": nsids, "sockets": sockets, "ip_forward": fwd, "brnf": brnf}


def _iptables(netns: str) -> str:
    try:
        return common.run([*kns.ns_exec_prefix(netns), "iptables-legacy-save", "-c"],
                          what=f"iptables-legacy-save in {netns}")
    except KernelError:
        return ""


def _nft_tables(netns: str) -> list[str]:
    """`nft list tables` in a namespace ([] when nft is missing or there are none)."""
    if not shutil.which("nft"):
        return []
    try:
        out = common.run([*kns.ns_exec_prefix(netns), "nft", "list", "tables"], what=f"nft in {netns}")
    except KernelError:
        return []
    return [line.strip()[len("table "):] for line in out.splitlines() if line.startswith("table ")]


def read(lab: str, service_cidr: str | None = None, with_rules: bool = True) -> Snapshot:
    """A Snapshot of every namespace of `lab` (`/run/netns/<lab>-*`)."""
    all_ns = kns.netns_list(names.ns_prefix(lab))
    with ThreadPoolExecutor(max_workers=8) as pool:
        raw = dict(zip(all_ns, pool.map(lambda n: _read_netlink(n, all_ns), all_ns)))
        rules = dict(zip(all_ns, pool.map(_iptables, all_ns))) if with_rules else {}
        nodes = [n for n in all_ns if _role(lab, n)[0] == "node"]
        nft = dict(zip(nodes, pool.map(_nft_tables, nodes))) if with_rules else {}
    snap = Snapshot({}, service_cidr=service_cidr)
    by_index: dict[str, dict[int, str]] = {}
    for netns, r in raw.items():
        by_index[netns] = {m["index"]: m.get_attr("IFLA_IFNAME") for m in r["links"]}
    for netns, r in raw.items():
        role, node, pod = _role(lab, netns)
        ns = snap.add(Namespace(netns, role, node=node, pod=pod, ip_forward=r["ip_forward"],
                                bridge_nf_call_iptables=r["brnf"], sockets=r["sockets"]))
        idx = by_index[netns]
        for m in r["links"]:
            name = m.get_attr("IFLA_IFNAME")
            info = m.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or (
                "loopback" if name == "lo" else "")
            link = Link(name, kind, m.get_attr("IFLA_ADDRESS") or "", [],
                        master=idx.get(m.get_attr("IFLA_MASTER")) if m.get_attr("IFLA_MASTER") else None,
                        up=bool(m["flags"] & 1), mtu=m.get_attr("IFLA_MTU") or 0,
                        alias=m.get_attr("IFLA_IFALIAS"))
            if info is not None and info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
                sd = info.get_attr("IFLA_INFO_SLAVE_DATA")
                link.hairpin = bool(sd and sd.get_attr("IFLA_BRPORT_MODE"))
            if kind == "vxlan":
                d = info.get_attr("IFLA_INFO_DATA")
                link.vxlan = Vxlan(d.get_attr("IFLA_VXLAN_ID"), d.get_attr("IFLA_VXLAN_PORT"),
                                   d.get_attr("IFLA_VXLAN_LOCAL"), idx.get(d.get_attr("IFLA_VXLAN_LINK")),
                                   bool(d.get_attr("IFLA_VXLAN_LEARNING")))
            peer_index = m.get_attr("IFLA_LINK")
            if kind == "veth" and peer_index:
                nsid = m.get_attr("IFLA_LINK_NETNSID")
                pns = netns if nsid is None else r["nsids"].get(nsid)
                if pns in by_index and peer_index in by_index[pns]:
                    link.peer = (pns, by_index[pns][peer_index])
            ns.links[name] = link
        for a in r["addrs"]:
            name = idx.get(a["index"])
            if name in ns.links:
                ns.links[name].addresses.append((a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
        for rt in r["routes"]:
            dst = rt.get_attr("RTA_DST")
            ns.routes.append(Route(
                dst=f"{dst}/{rt['dst_len']}" if dst else "default", dev=idx.get(rt.get_attr("RTA_OIF")),
                gateway=rt.get_attr("RTA_GATEWAY"), src=rt.get_attr("RTA_PREFSRC"),
                type=_RTYPE.get(rt["type"], str(rt["type"])), scope=_SCOPE.get(rt["scope"]),
                proto=_PROTO.get(rt["proto"]), onlink=bool(rt["flags"] & 4),
                metric=rt.get_attr("RTA_PRIORITY") or 0, linkdown=bool(rt["flags"] & 16)))
        for n in r["neigh"]:
            if n.get_attr("NDA_DST") is None:
                continue
            ns.neighbours.append(Neighbour(n.get_attr("NDA_DST"), idx.get(n["ifindex"], "?"),
                                           n.get_attr("NDA_LLADDR"), _NUD.get(n["state"], hex(n["state"]))))
        for e in r["fdb"]:
            mac = e.get_attr("NDA_LLADDR")
            if not mac or mac.startswith(("33:33:", "01:00:5e:")):
                continue  # multicast entries: not on a unicast path
            master = e.get_attr("NDA_MASTER")
            ns.fdb.append(FdbEntry(mac, idx.get(e["ifindex"], "?"),
                                   master=idx.get(master) if master else None, dst=e.get_attr("NDA_DST"),
                                   permanent=bool(e["state"] & 0x80)))
        if with_rules:
            ns.rules = [IptablesRules(rules.get(netns, ""))]
            for t in nft.get(netns, []):
                if t == "ip kube-proxy":  # kubeProxy.mode nftables
                    ns.rules.append(NftRules(knft.nft_json(netns, "list", "table", "ip", "kube-proxy")))
                else:
                    ns.notes.append(f"nftables table {t} present: its rules are not evaluated by this trace")
    for ns in snap.namespaces.values():  # a pod's node: where its eth0's peer lives
        if ns.role == "pod":
            for link in ns.links.values():
                if link.peer and link.peer[0] in snap.namespaces:
                    ns.node = snap.namespaces[link.peer[0]].node
    return snap


def iptables_counters(netns_list: list[str]) -> dict[str, dict]:
    """{netns: {(table, chain, rule number): (packets, bytes)}} (read, never reset)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = dict(zip(netns_list, pool.map(_iptables, netns_list)))
    return {ns: IptablesRules(t).counters() for ns, t in texts.items()}
