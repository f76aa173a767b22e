"""netlab.proxy_rules: kube-proxy iptables-mode rules as text, checked against the seed listing."""

import pytest

from netlab.plan.proxy_rules import (
    JUMPS,
    Endpoint,
    ServicePort,
    dangling_jumps,
    generate,
    parse_restore,
    sep_chain,
    svc_chain,
    trace,
)

EPS = [Endpoint("10.1.1.4", 80), Endpoint("10.1.79.11", 80)]
CLUSTER = ServicePort("default", "nginx-cluster-svc", "", "TCP", "192.1.47.211", 80)
NODEPORT = ServicePort("default", "nginx-nodeport-svc", "", "TCP", "192.1.88.35", 80, node_port=31295)
SEED = [(CLUSTER, EPS), (NODEPORT, EPS)]
NODE_IP = "172.16.0.11"

# Verbatim from the seed's `iptables -S -t nat` output (lines ~231-305), for the two services above.
SEED_NAT_LINES = """\
-A KUBE-SERVICES -d 192.1.47.211/32 -p tcp -m comment --comment "default/nginx-cluster-svc: cluster IP" -m tcp --dport 80 -j KUBE-SVC-XQHY67DURS27F2QJ
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-FO4LSVXACD7WOMVW
-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -j KUBE-SEP-DCSHEKS5WGS4LYVT
-A KUBE-SEP-FO4LSVXACD7WOMVW -s 10.1.1.4/32 -m comment --comment "default/nginx-cluster-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-FO4LSVXACD7WOMVW -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp -j DNAT --to-destination 10.1.1.4:80
-A KUBE-SEP-DCSHEKS5WGS4LYVT -s 10.1.79.11/32 -m comment --comment "default/nginx-cluster-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-DCSHEKS5WGS4LYVT -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp -j DNAT --to-destination 10.1.79.11:80
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295 -j KUBE-MARK-MASQ
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295 -j KUBE-SVC-YN4D7LGVMIQA3S2Y
-A KUBE-SVC-YN4D7LGVMIQA3S2Y -m comment --comment "default/nginx-nodeport-svc:" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-H7QSASJ4XBTCRED7
-A KUBE-SEP-H7QSASJ4XBTCRED7 -s 10.1.1.4/32 -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-H7QSASJ4XBTCRED7 -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp -j DNAT --to-destination 10.1.1.4:80
-A KUBE-SEP-YLSXRQMQKCP2ZZ6B -s 10.1.79.11/32 -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-MARK-MASQ
-A KUBE-SEP-YLSXRQMQKCP2ZZ6B -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp -j DNAT --to-destination 10.1.79.11:80
-A KUBE-SVC-YN4D7LGVMIQA3S2Y -m comment --comment "default/nginx-nodeport-svc:" -j KUBE-SEP-YLSXRQMQKCP2ZZ6B
""".splitlines()
SEED_JUMP_LINES = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
]


@pytest.mark.parametrize("spn, ep, chain", [
    ("default/nginx-cluster-svc:", None, "KUBE-SVC-XQHY67DURS27F2QJ"),
    ("default/nginx-cluster-svc:", EPS[0], "KUBE-SEP-FO4LSVXACD7WOMVW"),
    ("default/nginx-cluster-svc:", EPS[1], "KUBE-SEP-DCSHEKS5WGS4LYVT"),
    ("default/nginx-nodeport-svc:", None, "KUBE-SVC-YN4D7LGVMIQA3S2Y"),
    ("default/nginx-nodeport-svc:", EPS[0], "KUBE-SEP-H7QSASJ4XBTCRED7"),
    ("default/nginx-nodeport-svc:", EPS[1], "KUBE-SEP-YLSXRQMQKCP2ZZ6B"),
    ("default/kubernetes:https", None, "KUBE-SVC-NPX46M4PTMTKRN6Y"),
])
def test_seed_chain_names(spn, ep, chain):
    assert (svc_chain(spn, "TCP") if ep is None else sep_chain(spn, "TCP", ep)) == chain


def test_service_port_name_keeps_colon():
    assert CLUSTER.service_port_name == "default/nginx-cluster-svc:"
    assert ServicePort("default", "kubernetes", "https", "TCP", "192.1.0.1", 443).service_port_name \
        == "default/kubernetes:https"


def test_seed_rules_verbatim():
    nat = generate(SEED).nat.splitlines()
    missing = [line for line in SEED_NAT_LINES if line not in nat]
    assert not missing
    assert parse_restore(generate(SEED).nat)["nat"]["KUBE-SERVICES"][-1] == SEED_NAT_LINES[1]


def test_jumps_match_seed():
    def render(chain, args):
        return " ".join(["-A", chain, *(f'"{a}"' if " " in a else a for a in args)])
    nat_jumps = [render(chain, args) for table, chain, args in JUMPS if table == "nat"]
    assert all(line in nat_jumps for line in SEED_JUMP_LINES)
    assert len(set(map(str, JUMPS))) == len(JUMPS)


def test_ruleset_sections():
    rs = generate(SEED, masquerade_mark="0x8000/0x8000")
    assert rs.text() == rs.filter + rs.nat
    assert rs.filter.startswith("*filter\n") and rs.nat.startswith("*nat\n")
    assert rs.filter.endswith("COMMIT\n") and rs.nat.endswith("COMMIT\n")
    assert ":KUBE-PROXY-CANARY - [0:0]" in rs.nat.splitlines()
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x8000/0x8000" in rs.nat.splitlines()
    assert "-m mark --mark 0x8000/0x8000 -j ACCEPT" in rs.filter
    # Built-in chains are the applier's business (JUMPS), never appended by the restore.
    assert not any(c in rs.text() for c in ("-A PREROUTING", "-A OUTPUT", "-A POSTROUTING", "-A INPUT"))


@pytest.mark.parametrize("n", [3, 5])
def test_probabilities(n):
    eps = [Endpoint(f"10.1.{i}.2", 8080) for i in range(n)]
    sp = ServicePort("ns", "web", "http", "TCP", "192.1.9.9", 80)
    rules = parse_restore(generate([(sp, eps)]).nat)["nat"][svc_chain(sp.service_port_name, "TCP")]
    assert len(rules) == n
    printed = [rule.split("--probability ")[1].split()[0] for rule in rules[:-1]]
    assert [float(p) for p in printed] == pytest.approx([1 / (n - i) for i in range(n - 1)], abs=1e-9)
    # As real `iptables -S` listings of kube-proxy rules print them.
    assert printed == {3: ["0.33333333349", "0.50000000000"],
                       5: ["0.20000000019", "0.25000000000", "0.33333333349", "0.50000000000"]}[n]
    assert "statistic" not in rules[-1]
    assert [ip for ip, _, _ in trace(generate([(sp, eps)]).text(), "10.9.0.1", "tcp", "192.1.9.9", 80, set())] \
        == [ep.ip for ep in eps]


def test_no_dangling_jumps():
    services = SEED + [
        (ServicePort("kube-system", "dns", "dns", "UDP", "192.1.0.10", 53), [Endpoint("10.1.1.9", 53)]),
        (ServicePort("default", "empty", "", "TCP", "192.1.0.77", 80, node_port=30077), []),
    ]
    stale = {"nat": {"KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB"}}
    assert dangling_jumps(generate(services, existing_chains=stale).text()) == []
    # ...and the checker does see one.
    broken = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-NOPE\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n"
    assert dangling_jumps(broken) == ["nat: -A KUBE-SERVICES -j KUBE-SVC-NOPE"]


def test_trace_cluster_ip_and_hairpin():
    text = generate(SEED).text()
    assert trace(text, "10.1.2.7", "tcp", "192.1.47.211", 80, {NODE_IP}) == [
        ("10.1.1.4", 80, False), ("10.1.79.11", 80, False)]
    # A pod reaching itself through its service is masqueraded; going to the other one is not.
    assert trace(text, "10.1.1.4", "tcp", "192.1.47.211", 80, {NODE_IP}) == [
        ("10.1.1.4", 80, True), ("10.1.79.11", 80, False)]
    assert trace(text, "10.1.2.7", "tcp", "192.1.47.211", 81, {NODE_IP}) == []
    assert trace(text, "10.1.2.7", "udp", "192.1.47.211", 80, {NODE_IP}) == []


def test_trace_node_port():
    text = generate(SEED).text()
    both_masq = [("10.1.1.4", 80, True), ("10.1.79.11", 80, True)]
    assert trace(text, "172.16.0.99", "tcp", NODE_IP, 31295, {NODE_IP}) == both_masq
    assert trace(text, "172.16.0.99", "tcp", NODE_IP, 31295, set()) == []  # not a local address
    assert trace(text, "172.16.0.99", "tcp", NODE_IP, 31296, {NODE_IP}) == []


def test_service_without_endpoints_rejects():
    sp = ServicePort("default", "empty", "", "TCP", "192.1.0.77", 80, node_port=30077)
    rs = generate([(sp, [])])
    assert ('-A KUBE-SERVICES -d 192.1.0.77/32 -p tcp -m comment --comment "default/empty: has no endpoints" '
            "-m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable") in rs.filter.splitlines()
    assert ('-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/empty: has no endpoints" '
            "-m addrtype --dst-type LOCAL -m tcp --dport 30077 -j REJECT --reject-with icmp-port-unreachable"
            ) in rs.filter.splitlines()
    assert svc_chain(sp.service_port_name, "TCP") not in rs.text()
    assert "192.1.0.77" not in rs.nat and "30077" not in rs.nat
    assert trace(rs.text(), "10.1.2.7", "tcp", "192.1.0.77", 80, set()) == []


def test_udp():
    sp = ServicePort("kube-system", "dns", "dns", "UDP", "192.1.0.10", 53, node_port=30053)
    ep = Endpoint("10.1.1.9", 5353)
    nat = generate([(sp, [ep])]).nat.splitlines()
    svc, sep = svc_chain("kube-system/dns:dns", "UDP"), sep_chain("kube-system/dns:dns", "UDP", ep)
    assert svc != svc_chain("kube-system/dns:dns", "TCP")
    assert (f'-A KUBE-SERVICES -d 192.1.0.10/32 -p udp -m comment --comment "kube-system/dns:dns cluster IP" '
            f"-m udp --dport 53 -j {svc}") in nat
    assert (f'-A {sep} -p udp -m comment --comment "kube-system/dns:dns" -m udp '
            "-j DNAT --to-destination 10.1.1.9:5353") in nat
    assert (f'-A KUBE-NODEPORTS -p udp -m comment --comment "kube-system/dns:dns" -m udp --dport 30053 '
            f"-j {svc}") in nat
    text = "\n".join(nat)
    assert trace(text, "10.1.2.7", "udp", "192.1.0.10", 53, set()) == [("10.1.1.9", 5353, False)]
    assert trace(text, "10.1.2.7", "tcp", "192.1.0.10", 53, set()) == []


def test_stale_chains_deleted_foreign_untouched():
    live = svc_chain(CLUSTER.service_port_name, "TCP")
    empty = ServicePort("default", "gone-empty", "", "TCP", "192.1.0.78", 80)
    was_live = svc_chain(empty.service_port_name, "TCP")  # had endpoints last sync, none now
    existing = {
        "nat": {live, was_live, "KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB",
                "DOCKER", "KUBE-XLB-CCCCCCCCCCCCCCCC", "KUBE-SERVICES"},
        "filter": {"KUBE-SEP-DDDDDDDDDDDDDDDD", "CNI-FORWARD"},
    }
    rs = generate([(CLUSTER, EPS), (empty, [])], existing_chains=existing)
    nat, filt = rs.nat.splitlines(), rs.filter.splitlines()
    for chain in (was_live, "KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB"):
        assert f":{chain} - [0:0]" in nat and f"-X {chain}" in nat
    assert nat[-1] == "COMMIT" and nat[-2].startswith("-X ")  # deletions close the section
    assert "-X KUBE-SEP-DDDDDDDDDDDDDDDD" in filt and "-X KUBE-SEP-DDDDDDDDDDDDDDDD" not in nat
    assert f"-X {live}" not in nat and f"-A {live} " in rs.nat
    for foreign in ("DOCKER", "KUBE-XLB-CCCCCCCCCCCCCCCC", "CNI-FORWARD"):
        assert foreign not in rs.text()
    assert not any(line.startswith("-X KUBE-SERVICES") for line in nat)
    after = parse_restore(rs.text())
    assert was_live not in after["nat"] and live in after["nat"]
    assert dangling_jumps(rs.text()) == []


def test_deterministic():
    services = SEED + [(ServicePort("a", "b", "", "UDP", "192.1.0.5", 53), [Endpoint("10.1.3.3", 53)])]
    scrambled = [(sp, list(reversed(eps))) for sp, eps in reversed(services)]
    assert generate(services).text() == generate(scrambled).text() == generate(services).text()


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        generate([(ServicePort("a", "b", "", "SCTP", "192.1.0.5", 53), [])])
    with pytest.raises(ValueError):
        generate([(CLUSTER, EPS), (CLUSTER, [])])


def test_ten_thousand_services():
    services = [
        (ServicePort("ns", f"svc{i}", "", "TCP", f"192.2.{i // 256}.{i % 256}", 80),
         [Endpoint(f"10.2.{i // 256}.{i % 256}", 8080), Endpoint(f"10.3.{i // 256}.{i % 256}", 8080)])
        for i in range(10_000)
    ]
    nat = generate(services).nat
    assert nat.count(":KUBE-SVC-") == 10_000
    assert nat.count(":KUBE-SEP-") == 20_000
