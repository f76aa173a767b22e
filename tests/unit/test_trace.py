"""The trace planner on hand-made snapshots of the seed's cluster (no root, no kernel).

The snapshot below is what the default lab's kernel holds (copied from a running lab:
`ip route`, `ip neigh`, `bridge fdb`, `iptables-legacy-save`), trimmed to what matters:
master kub-node-0 172.23.100.4 (no kube-proxy), workers kub-node-1 .5 (10.1.1.0/24) and
kub-node-2 .6 (10.1.79.0/24), router 172.23.100.1, the my-nginx8 pods 10.1.1.4 and
10.1.79.11, a client pod 10.1.1.5 on kub-node-1, nginx-cluster-svc 192.1.47.211:80 and
nginx-nodeport-svc 192.1.88.35:80 / 31295.
"""

from __future__ import annotations

import pytest

from netlab.plan.trace import (FdbEntry, IptablesRules, Link, Namespace, Neighbour, Snapshot,
                               Socket, Vxlan, parse_iptables_save, parse_route, trace)

MAC = {
    "n0-ens3": "02:d4:8b:ac:60:bf", "n1-ens3": "02:25:64:8c:8a:e2", "n2-ens3": "02:bf:cc:51:90:67",
    "n0-vtep": "ea:ea:8b:b2:fb:f5", "n1-vtep": "d6:34:79:93:57:10", "n2-vtep": "16:e9:6e:14:e8:fc",
    "n0-docker0": "02:42:4a:4a:3b:fe", "n1-docker0": "02:42:a5:a9:46:8d", "n2-docker0": "02:42:11:22:33:44",
    "br0": "02:42:74:0b:14:f8",
    "a": "02:42:0a:01:01:04", "b": "02:42:0a:01:4f:0b", "c": "02:42:0a:01:01:05",
}

FLANNEL_NAT = """\
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s {sub} -d 10.1.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.1.0.0/16 -d {sub} -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d {sub} -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.1.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
"""

FLANNEL_FILTER = """\
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.1.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.1.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
"""

WORKER_NAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-DCSHEKS5WGS4LYVT - [0:0]
:KUBE-SEP-FO4LSVXACD7WOMVW - [0:0]
:KUBE-SEP-H7QSASJ4XBTCRED7 - [0:0]
:KUBE-SEP-YLSXRQMQKCP2ZZ6B - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XQHY67DURS27F2QJ - [0:0]
:KUBE-SVC-YN4D7LGVMIQA3S2Y - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
{flannel}-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295 -j KUBE-MARK-MASQ
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295 -j KUBE-SVC-YN4D7LGVMIQA3S2Y
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A KUBE-SEP-DCSHEKS5WGS4LYVT -s 10.1.79.11/32 -m comment --comment "default/nginx-cluster-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-DCSHEKS5WGS4LYVT -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp -j DNAT --to-destination 10.1.79.11:80
-A KUBE-SEP-FO4LSVXACD7WOMVW -s 10.1.1.4/32 -m comment --comment "default/nginx-cluster-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-FO4LSVXACD7WOMVW -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp -j DNAT --to-destination 10.1.1.4:80
-A KUBE-SEP-H7QSASJ4XBTCRED7 -s 10.1.1.4/32 -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-H7QSASJ4XBTCRED7 -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp -j DNAT --to-destination 10.1.1.4:80
-A KUBE-SEP-YLSXRQMQKCP2ZZ6B -s 10.1.79.11/32 -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-YLSXRQMQKCP2ZZ6B -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp -j DNAT --to-destination 10.1.79.11:80
-A KUBE-SERVICES -d 192.1.88.35/32 -p tcp -m comment --comment "default/nginx-nodeport-svc: cluster IP" -m tcp --dport 80 -j KUBE-SVC-YN4D7LGVMIQA3S2Y
-A KUBE-SERVICES -d 192.1.47.211/32 -p tcp -m comment --comment "default/nginx-cluster-svc: cluster IP" -m tcp --dport 80 -j KUBE-SVC-XQHY67DURS27F2QJ
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-FO4LSVXACD7WOMVW
-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -j KUBE-SEP-DCSHEKS5WGS4LYVT
-A KUBE-SVC-YN4D7LGVMIQA3S2Y -m comment --comment "default/nginx-nodeport-svc:" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-H7QSASJ4XBTCRED7
-A KUBE-SVC-YN4D7LGVMIQA3S2Y -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-SEP-YLSXRQMQKCP2ZZ6B
COMMIT
"""

WORKER_FILTER = """\
*filter
:INPUT ACCEPT [41:17442]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [51:5833]
:FLANNEL-FWD - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
{flannel}-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
{extra}COMMIT
"""

NO_ENDPOINTS = ('-A KUBE-SERVICES -d 192.1.9.9/32 -p tcp -m comment --comment "default/empty-svc: has no '
                'endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable\n')

MASTER = """\
*nat
:PREROUTING ACCEPT [2:228]
:INPUT ACCEPT [2:228]
:OUTPUT ACCEPT [2:180]
:POSTROUTING ACCEPT [2:180]
:FLANNEL-POSTRTG - [0:0]
{flannel}COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
{ffwd}COMMIT
"""

NODES = {  # name: (ip, subnet, docker0 address, vtep mac key)
    "kub-node-0": ("172.23.100.4", "10.1.101", "n0"),
    "kub-node-1": ("172.23.100.5", "10.1.1", "n1"),
    "kub-node-2": ("172.23.100.6", "10.1.79", "n2"),
}
PODS = {  # key: (pod name, node, ip, listens on 80?)
    "a": ("my-nginx8-654b79496c-9qsk2", "kub-node-1", "10.1.1.4", True),
    "b": ("my-nginx8-654b79496c-xdxjh", "kub-node-2", "10.1.79.11", True),
    "c": ("client", "kub-node-1", "10.1.1.5", False),
}


def pod_ns(key: str) -> str:
    return f"seed-pod-default_{PODS[key][0]}"


def seed(*, extra_filter: dict | None = None, drop_routes: dict | None = None,
         insert: dict | None = None) -> Snapshot:
    """The seed's cluster as a Snapshot; `extra_filter` adds filter rules per node,
    `insert` puts rule lines first in a node's filter table, `drop_routes` removes routes."""
    snap = Snapshot({}, service_cidr="192.1.0.0/16")
    net = snap.add(Namespace("seed-net", "underlay"))
    net.links["lo"] = Link("lo", "loopback", addresses=[("127.0.0.1", 8)])
    net.links["br0"] = Link("br0", "bridge", MAC["br0"], [("172.23.100.1", 24)])
    net.routes = [parse_route("172.23.100.0/24 dev br0 proto kernel scope link src 172.23.100.1")]
    net.rules = [IptablesRules("")]
    for name, (ip, sub, k) in NODES.items():
        ns = snap.add(Namespace(f"seed-{name}", "node", node=name, ip_forward=True,
                                bridge_nf_call_iptables=True))
        port = f"ve-{k}"
        net.links[port] = Link(port, "veth", f"02:ff:00:00:00:0{k[1]}", master="br0",
                               peer=(ns.name, "ens3"), alias=name)
        net.fdb.append(FdbEntry(MAC[f"{k}-ens3"], port, master="br0"))
        ns.links["lo"] = Link("lo", "loopback", addresses=[("127.0.0.1", 8)])
        ns.links["ens3"] = Link("ens3", "veth", MAC[f"{k}-ens3"], [(ip, 24)], peer=("seed-net", port), mtu=1450)
        ns.links["flannel.1"] = Link("flannel.1", "vxlan", MAC[f"{k}-vtep"], [(f"{sub}.0", 32)],
                                     vxlan=Vxlan(1, 8472, ip, "ens3"), mtu=1400)
        ns.links["docker0"] = Link("docker0", "bridge", MAC[f"{k}-docker0"], [(f"{sub}.1", 24)], mtu=1400)
        ns.routes = [parse_route("default via 172.23.100.1 dev ens3 proto static"),
                     parse_route(f"{sub}.0/24 dev docker0 proto kernel scope link src {sub}.1"),
                     parse_route(f"172.23.100.0/24 dev ens3 proto kernel scope link src {ip}")]
        for other, (oip, osub, ok) in NODES.items():
            if other == name:
                continue
            ns.routes.append(parse_route(f"{osub}.0/24 via {osub}.0 dev flannel.1 onlink"))
            ns.neighbours.append(Neighbour(f"{osub}.0", "flannel.1", MAC[f"{ok}-vtep"]))
            ns.fdb.append(FdbEntry(MAC[f"{ok}-vtep"], "flannel.1", dst=oip, permanent=True))
        ns.sockets = [Socket("udp", "0.0.0.0", 8472)]
        for r in (drop_routes or {}).get(name, []):
            ns.routes = [x for x in ns.routes if str(x).split()[0] != r]
        flannel = FLANNEL_NAT.format(sub=f"{sub}.0/24")
        if name == "kub-node-0":
            text = MASTER.format(flannel=flannel, ffwd=FLANNEL_FILTER)
        else:
            text = WORKER_NAT.format(flannel=flannel) + WORKER_FILTER.format(
                flannel=FLANNEL_FILTER, extra=(extra_filter or {}).get(name, ""))
        for line in reversed((insert or {}).get(name, [])):
            at = text.index("\n-A ", text.index("*filter")) + 1  # before the first filter rule
            text = text[:at] + line + "\n" + text[at:]
        ns.rules = [IptablesRules(text)]
    for key, (pod, node, ip, listens) in PODS.items():
        node_ns = snap.namespaces[f"seed-{node}"]
        ns = snap.add(Namespace(pod_ns(key), "pod", node=node, pod=f"default/{pod}"))
        gw = ip.rsplit(".", 1)[0] + ".1"
        veth = f"veth{key}"
        ns.links["lo"] = Link("lo", "loopback", addresses=[("127.0.0.1", 8)])
        ns.links["eth0"] = Link("eth0", "veth", MAC[key], [(ip, 24)], peer=(node_ns.name, veth), mtu=1400)
        ns.routes = [parse_route(f"default via {gw} dev eth0"),
                     parse_route(f"{gw[:-2]}.0/24 dev eth0 proto kernel scope link src {ip}")]
        ns.sockets = [Socket("tcp", "0.0.0.0", 80)] if listens else []
        ns.rules = [IptablesRules("")]
        node_ns.links[veth] = Link(veth, "veth", f"02:94:92:00:00:0{len(node_ns.links)}", master="docker0",
                                   peer=(ns.name, "eth0"), hairpin=True, mtu=1400)
        node_ns.fdb.append(FdbEntry(MAC[key], veth, master="docker0"))
        node_ns.fdb.append(FdbEntry(node_ns.links[veth].mac, veth, master="docker0", permanent=True))
    return snap


def devices(t) -> list[str]:
    """(where, device) of every hop, the underlay's bridge left out (S8 does not list it)."""
    return [f"{h.where}:{h.device}" for h in t.hops if h.where != "external"]


def rules_hit(t) -> list[str]:
    return [f"{d.table} {d.chain} {d.rule}" for h in t.hops for d in h.netfilter if d.rule]


A, B = "pod/my-nginx8-654b79496c-9qsk2", "pod/my-nginx8-654b79496c-xdxjh"


# ----------------------------------------------------------------------------- parsing


def test_iptables_save_parses_into_chains_with_rule_numbers_and_counters():
    tables = parse_iptables_save("*filter\n:INPUT ACCEPT [3:120]\n:X - [0:0]\n"
                                 "[5:300] -A INPUT -p tcp -j X\n-A INPUT -j DROP\n-A X -j RETURN\nCOMMIT\n")
    inp = tables["filter"]["INPUT"]
    assert inp.policy == "ACCEPT" and inp.counters == (3, 120)
    assert [(r.num, r.text, r.counters) for r in inp.rules] == [
        (1, "-A INPUT -p tcp -j X", (5, 300)), (2, "-A INPUT -j DROP", None)]
    assert tables["filter"]["X"].policy is None


def test_route_lines_read_back_as_ip_route_prints_them():
    for line in ("default via 172.23.100.1 dev ens3 proto static",
                 "10.1.79.0/24 via 10.1.79.0 dev flannel.1 onlink",
                 "10.1.1.0/24 dev docker0 proto kernel scope link src 10.1.1.1",
                 "blackhole 10.9.0.0/16"):
        assert str(parse_route(line)) == line


# ----------------------------------------------------------------------------- seed paths


def test_pod_to_pod_on_the_same_node_is_bridged_by_docker0_and_never_crosses_flannel():
    t = trace(seed(), pod_ns("c"), "10.1.1.4", 80)
    assert devices(t) == ["pod/client:eth0", "kub-node-1:docker0", f"{A}:eth0"]  # S3
    assert t.verdict.delivered and t.verdict.pod == "default/my-nginx8-654b79496c-9qsk2"
    bridge = t.hops[1]
    assert bridge.event == "bridge" and "out vetha" in bridge.what
    assert "fdb: 02:42:0a:01:01:04 dev vetha master docker0" in bridge.notes
    # br_netfilter: the bridged frame still passes FORWARD, and flannel's rule accepts it.
    assert "filter FLANNEL-FWD 1" in rules_hit(t)
    assert "tcp 0.0.0.0:80 LISTEN" in t.hops[-1].what


def test_pod_to_pod_across_nodes_follows_the_seeds_path_through_vxlan():
    t = trace(seed(), pod_ns("a"), "10.1.79.11", 80)
    # S8: containerA -> docker0 -> flannel.1 -> ens3 -> ens3 -> flannel.1 -> docker0 -> containerB
    assert devices(t) == [f"{A}:eth0", "kub-node-1:docker0", "kub-node-1:flannel.1", "kub-node-1:ens3",
                          "kub-node-2:ens3", "kub-node-2:flannel.1", "kub-node-2:docker0", f"{B}:eth0"]
    h = {f"{x.where}:{x.device}:{x.event}": x for x in t.hops}
    assert h[f"{A}:eth0:send"].route == "default via 10.1.1.1 dev eth0"
    assert h["kub-node-1:docker0:receive"].route == "10.1.79.0/24 via 10.1.79.0 dev flannel.1 onlink"
    enc = h["kub-node-1:flannel.1:encap"]
    assert enc.outer == {"src": "172.23.100.5", "dst": "172.23.100.6", "proto": "udp", "dport": 8472,
                         "vni": 1, "inner_dst_mac": MAC["n2-vtep"]}
    assert f"neighbour: 10.1.79.0 dev flannel.1 lladdr {MAC['n2-vtep']} PERMANENT" in enc.notes
    assert f"fdb: {MAC['n2-vtep']} dev flannel.1 dst 172.23.100.6 self permanent" in enc.notes
    outer = h["kub-node-1:ens3:send"]
    assert str(outer.packet) == "udp 172.23.100.5:* > 172.23.100.6:8472"
    assert outer.outer["inner"]["src"] == "10.1.1.4" and outer.outer["inner"]["dst"] == "10.1.79.11"
    under = [x for x in t.hops if x.where == "external"]
    assert len(under) == 1 and under[0].what == "bridged: in ve-n1, out ve-n2"
    assert "UDP 8472 to the VXLAN socket of flannel.1" in h["kub-node-2:ens3:receive"].what
    dec = h["kub-node-2:flannel.1:decap"]
    assert dec.what.startswith("VXLAN decapsulation (VNI 1)") and dec.route == "10.1.79.0/24 dev docker0 proto kernel scope link src 10.1.79.1"
    # No NAT on the way: the pod sees the other pod's own address (flannel's RETURN rules).
    assert str(t.hops[-1].packet) == "tcp 10.1.1.4:* > 10.1.79.11:80"
    assert "nat FLANNEL-POSTRTG 2" in rules_hit(t)
    assert t.verdict.delivered and t.verdict.endpoint == "10.1.79.11:80"


def test_pod_to_cluster_ip_is_dnated_at_docker0_with_every_endpoint_and_its_probability():
    t = trace(seed(), pod_ns("c"), "192.1.47.211", 80, prefer="10.1.79.11")
    recv = t.hops[1]
    assert (recv.where, recv.device) == ("kub-node-1", "docker0")
    chains = [f"{d.chain} {d.rule}" for d in recv.netfilter if d.table == "nat"]
    # S14: PREROUTING -> KUBE-SERVICES -> KUBE-SVC-... (random) -> KUBE-SEP-... DNAT
    assert chains == ["PREROUTING 1", "KUBE-SERVICES 2", "KUBE-SVC-XQHY67DURS27F2QJ 2",
                      "KUBE-SEP-DCSHEKS5WGS4LYVT 2"]
    choice = next(d for d in recv.netfilter if d.choices)
    assert [(c.target, c.endpoint, c.probability, c.chosen) for c in choice.choices] == [
        ("KUBE-SEP-FO4LSVXACD7WOMVW", "10.1.1.4:80", 0.5, False),
        ("KUBE-SEP-DCSHEKS5WGS4LYVT", "10.1.79.11:80", 0.5, True)]
    dnat = recv.netfilter[3]
    assert dnat.text.endswith("-j DNAT --to-destination 10.1.79.11:80")
    assert dnat.action == "DNAT 192.1.47.211:80 -> 10.1.79.11:80"
    assert str(recv.packet) == "tcp 10.1.1.5:* > 10.1.79.11:80"
    assert devices(t)[-1] == f"{B}:eth0" and t.verdict.delivered
    # Without a preference the first endpoint is followed: the pod on the same node.
    t1 = trace(seed(), pod_ns("c"), "192.1.47.211", 80)
    assert devices(t1) == ["pod/client:eth0", "kub-node-1:docker0", "kub-node-1:docker0", f"{A}:eth0"]


def test_node_to_cluster_ip_is_dnated_in_output_and_masqueraded_by_flannel():
    t = trace(seed(), "seed-kub-node-1", "192.1.47.211", 80, prefer="10.1.79.11")
    first = t.hops[0]
    assert first.route == "default via 172.23.100.1 dev ens3 proto static"
    assert [f"{d.table} {d.chain} {d.rule}" for d in first.netfilter if d.rule][:4] == [
        "nat OUTPUT 1", "nat KUBE-SERVICES 2", "nat KUBE-SVC-XQHY67DURS27F2QJ 2",
        "nat KUBE-SEP-DCSHEKS5WGS4LYVT 2"]
    assert "rerouted after DNAT: 10.1.79.0/24 via 10.1.79.0 dev flannel.1 onlink" in first.notes
    assert first.device == "flannel.1"
    masq = [d for d in first.netfilter if "MASQUERADE" in d.action]
    assert masq[0].chain == "FLANNEL-POSTRTG" and masq[0].rule == 6
    assert str(first.packet) == "tcp 10.1.1.0:* > 10.1.79.11:80"
    assert t.verdict.delivered and t.verdict.endpoint == "10.1.79.11:80"


def test_outside_host_to_node_port_on_a_node_without_the_chosen_pod():
    t = trace(seed(), "seed-net", "172.23.100.5", 31295, prefer="10.1.79.11")
    assert devices(t) == ["kub-node-1:ens3", "kub-node-1:flannel.1", "kub-node-1:ens3",
                          "kub-node-2:ens3", "kub-node-2:flannel.1", "kub-node-2:docker0", f"{B}:eth0"]
    assert t.hops[0].where == "external" and "bridged out ve-n1" in t.hops[0].what
    recv = t.hops[1]
    nat = [f"{d.chain} {d.rule}" for d in recv.netfilter if d.table == "nat" and d.rule]
    # S15: the last KUBE-SERVICES rule (local address) -> KUBE-NODEPORTS marks and jumps.
    assert nat == ["PREROUTING 1", "KUBE-SERVICES 3", "KUBE-NODEPORTS 1", "KUBE-MARK-MASQ 1",
                   "KUBE-NODEPORTS 2", "KUBE-SVC-YN4D7LGVMIQA3S2Y 2", "KUBE-SEP-YLSXRQMQKCP2ZZ6B 2"]
    assert "filter KUBE-FORWARD 1" in rules_hit(t)  # the mark lets it through FORWARD
    out = t.hops[2]
    kmasq = next(d for d in out.netfilter if d.chain == "KUBE-POSTROUTING" and d.rule == 1)
    assert kmasq.action.startswith("MASQUERADE source 172.23.100.1 -> 10.1.1.0")
    assert str(t.hops[-1].packet) == "tcp 10.1.1.0:* > 10.1.79.11:80"
    assert t.verdict.delivered


def test_master_to_cluster_ip_leaves_by_the_default_route_untranslated():
    t = trace(seed(), "seed-kub-node-0", "192.1.47.211", 80)
    assert t.hops[0].route == "default via 172.23.100.1 dev ens3 proto static"
    assert not any("DNAT" in d.action for h in t.hops for d in h.netfilter)
    assert not t.verdict.delivered and t.verdict.reason == "not-forwarded"  # S13
    assert "192.1.47.211 is a ClusterIP, but nothing translated it (kub-node-0 has no kube-proxy rules)" in t.verdict.message
    assert "left kub-node-0 by the default route" in t.verdict.message
    assert t.verdict.namespace == "seed-net"


def test_outside_host_has_no_route_to_a_cluster_ip():
    t = trace(seed(), "seed-net", "192.1.47.211", 80)
    assert t.verdict.reason == "no-route" and "no route to 192.1.47.211 in external" in t.verdict.message


def test_ping_to_a_cluster_ip_is_not_translated():
    t = trace(seed(), pod_ns("c"), "192.1.47.211", proto="icmp")  # S12: only ip:port is translated
    assert not t.verdict.delivered and t.verdict.namespace == "seed-net"
    assert "left kub-node-1 by the default route" in t.verdict.message
    assert "a Service translates only its ip:port, not ICMP" in t.verdict.message
    # ...while a pod IP answers a ping.
    assert trace(seed(), pod_ns("c"), "10.1.79.11", proto="icmp").verdict.reason == "echo-reply"


def test_service_without_endpoints_is_rejected_in_filter_forward():
    snap = seed(extra_filter={"kub-node-1": NO_ENDPOINTS})
    t = trace(snap, pod_ns("c"), "192.1.9.9", 80)
    v = t.verdict
    assert v.reason == "rejected" and v.namespace == "seed-kub-node-1"
    assert "filter KUBE-SERVICES rule 1" in v.message and "has no endpoints" in v.message
    assert "service default/empty-svc has no endpoints" in v.message
    # From the node itself the same rule rejects it in OUTPUT.
    t2 = trace(snap, "seed-kub-node-1", "192.1.9.9", 80)
    assert t2.verdict.reason == "rejected" and len(t2.hops) == 1
    assert [d.chain for d in t2.hops[0].netfilter if d.table == "filter"] == ["OUTPUT", "KUBE-SERVICES"]


def test_a_drop_rule_inserted_by_hand_is_named():
    drop = "-A FORWARD -d 10.1.79.11/32 -p tcp -m tcp --dport 80 -j DROP"
    t = trace(seed(insert={"kub-node-2": [drop]}), pod_ns("a"), "10.1.79.11", 80)
    v = t.verdict
    assert v.reason == "dropped" and v.namespace == "seed-kub-node-2" and v.device == "flannel.1"
    assert f"filter FORWARD rule 1: {drop}" in v.message
    # The same rule does not stop another port.
    assert trace(seed(insert={"kub-node-2": [drop]}), pod_ns("a"), "10.1.79.11", 81).verdict.reason == "no-listener"


def test_a_deleted_flannel_route_sends_pod_traffic_to_the_default_route():
    t = trace(seed(drop_routes={"kub-node-1": ["10.1.79.0/24"]}), pod_ns("a"), "10.1.79.11", 80)
    assert t.hops[1].route == "default via 172.23.100.1 dev ens3 proto static"
    assert "kub-node-1:flannel.1" not in devices(t)
    v = t.verdict
    assert not v.delivered and "10.1.79.11 left kub-node-1 by the default route" in v.message
    # flannel's RETURN rule (pod network to pod network) keeps the pod's own source.
    assert str(t.hops[-1].packet) == "tcp 10.1.1.4:* > 10.1.79.11:80"


def test_no_route_at_all_fails_before_netfilter():
    t = trace(seed(drop_routes={"kub-node-0": ["default"]}), "seed-kub-node-0", "192.1.47.211", 80)
    assert t.verdict.reason == "no-route" and len(t.hops) == 1 and t.hops[0].netfilter == []


def test_no_listener_on_the_port():
    t = trace(seed(), pod_ns("a"), "10.1.79.11", 8080)
    assert t.verdict.reason == "no-listener" and "TCP RST" in t.verdict.message
    assert t.verdict.pod == "default/my-nginx8-654b79496c-xdxjh"


def test_missing_vxlan_neighbour_is_named():
    snap = seed()
    n1 = snap.namespaces["seed-kub-node-1"]
    n1.neighbours = [n for n in n1.neighbours if n.ip != "10.1.79.0"]
    t = trace(snap, pod_ns("a"), "10.1.79.11", 80)
    assert t.verdict.reason == "no-neighbour" and "10.1.79.0 on flannel.1" in t.verdict.message


def test_json_shape():
    d = trace(seed(), pod_ns("a"), "10.1.79.11", 80).to_dict()
    assert set(d) == {"hops", "verdict"}
    assert d["hops"][0]["hop"] == 1 and d["hops"][0]["packet"]["dst"] == "10.1.79.11"
    assert d["verdict"]["result"] == "delivered"


def test_bad_input():
    with pytest.raises(ValueError, match="source"):
        trace(seed(), "nope", "10.1.1.4", 80)
    with pytest.raises(ValueError, match="proto"):
        trace(seed(), pod_ns("a"), "10.1.1.4", 80, proto="sctp")


def test_forward_policy_drop_and_goto_semantics():
    snap = seed()
    n2 = snap.namespaces["seed-kub-node-2"]
    text = WORKER_NAT.format(flannel=FLANNEL_NAT.format(sub="10.1.79.0/24")) + (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:G - [0:0]\n:H - [0:0]\n"
        "-A FORWARD -g G\n-A FORWARD -j ACCEPT\n-A G -j H\n-A H -j RETURN\nCOMMIT\n")
    n2.rules = [IptablesRules(text)]
    t = trace(snap, pod_ns("a"), "10.1.79.11", 80)
    # G was entered by goto: when it falls off its end, FORWARD is left too, so rule 2 never
    # runs and the policy decides.
    v = t.verdict
    assert v.reason == "dropped" and "filter FORWARD policy DROP" in v.message
    assert [f"{d.chain} {d.rule}" for d in t.hops[-1].netfilter if d.table == "filter"] == [
        "FORWARD 1", "G 1", "H 1", "FORWARD None"]


def test_the_topology_picture_numbers_the_hops_and_draws_the_path():
    from netlab.plan.topology import graph

    t = trace(seed(), pod_ns("a"), "10.1.79.11", 80)
    src = graph(seed(), t).source
    assert "cluster_" in src and "hop 3" in src and "VXLAN VNI 1, UDP 8472" in src
    # One red edge per change of device along the path, plus the arrow to the verdict.
    assert src.count("penwidth=2.2") == len(t.hops) - 1
    assert "4: 172.23.100.5 → 172.23.100.6:8472 (VXLAN 1)" in src
    assert "seed-kub" not in src and "seed-pod" not in src  # ids from what the reader sees
