"""netlab.plan.nft_rules: kube-proxy's nftables layout, checked by tracing packets through it
(as kube-proxy's pkg/proxy/nftables/helpers_test.go does) with the module's interpreter."""

import re
from fractions import Fraction

import pytest

from netlab.plan import nft_rules as nr
from netlab.plan.nft_rules import Contribution, Packet, contribution, delta_text, ruleset, trace
from netlab.plan.proxy_rules import Endpoint, ServicePort

EPS = [Endpoint("10.1.1.4", 80), Endpoint("10.1.79.11", 80)]
CLUSTER = ServicePort("default", "nginx-cluster-svc", "", "TCP", "192.1.47.211", 80)
NODEPORT = ServicePort("default", "nginx-nodeport-svc", "", "TCP", "192.1.88.35", 80, node_port=31295)
EMPTY = ServicePort("default", "empty", "", "TCP", "192.1.3.3", 80, node_port=30001)
UDP = ServicePort("default", "dns", "dns", "UDP", "192.1.0.10", 53)
NODE_IP = "172.23.100.5"
LOCAL = frozenset({NODE_IP, "10.1.1.0", "10.1.1.1", "127.0.0.1"})


def seed(vmap=True):
    return [contribution([(CLUSTER, EPS)], vmap=vmap), contribution([(NODEPORT, EPS)], vmap=vmap),
            contribution([(EMPTY, [])], vmap=vmap), contribution([(UDP, [Endpoint("10.1.1.9", 5353)])], vmap=vmap)]


def pkt(src, dst, dport, proto="tcp"):
    return Packet(src, proto, dst, dport, LOCAL)


def test_chain_names_are_kube_proxys():
    # The examples in kube-proxy's servicePortChainNameBase / servicePortEndpointChainNameBase docs.
    sp = ServicePort("ns1", "svc1", "p80", "TCP", "172.30.0.41", 80)
    assert nr.svc_chain(sp) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert nr.ep_chain(sp, Endpoint("10.180.0.1", 80)) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert nr.ext_chain(sp) == "external-ULMVA6XW-ns1/svc1/tcp/p80"


def test_seed_service_layout():
    c = contribution([(CLUSTER, EPS)])
    svc = nr.svc_chain(CLUSTER)
    assert c.elements[("service-ips", "192.1.47.211 . tcp . 80")] == f"goto {svc}"
    assert c.elements[("cluster-ips", "192.1.47.211")] == ""
    a, b = (nr.ep_chain(CLUSTER, e) for e in EPS)
    assert c.chains[svc] == (f"numgen random mod 2 vmap {{ 0 : goto {a}, 1 : goto {b} }}",)
    assert c.chains[a] == ("ip saddr 10.1.1.4 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.1.1.4:80")
    n = contribution([(NODEPORT, EPS)])
    assert n.elements[("service-nodeports", "tcp . 31295")] == f"goto {nr.ext_chain(NODEPORT)}"
    assert n.chains[nr.ext_chain(NODEPORT)] == ("jump mark-for-masquerade", f"goto {nr.svc_chain(NODEPORT)}")
    e = contribution([(EMPTY, [])])
    assert e.chains == {}
    assert e.elements[("no-endpoint-services", "192.1.3.3 . tcp . 80")] == "goto reject-chain"
    assert e.elements[("no-endpoint-nodeports", "tcp . 30001")] == "goto reject-chain"


@pytest.mark.parametrize("vmap", [True, False])
def test_trace_cluster_ip_from_a_pod_and_from_the_node(vmap):
    rs = ruleset(seed(vmap))
    both = [("10.1.1.4", 80, False), ("10.1.79.11", 80, False)]
    assert trace(rs, pkt("10.1.1.7", "192.1.47.211", 80)) == {"rejected": False, "dropped": False, "dnat": both}
    assert trace(rs, pkt(NODE_IP, "192.1.47.211", 80), hook="output") == {"rejected": False, "dropped": False, "dnat": both}
    assert trace(rs, pkt("10.1.1.7", "192.1.0.10", 53, "udp"))["dnat"] == [("10.1.1.9", 5353, False)]
    # the same port over the other protocol is no service
    assert trace(rs, pkt("10.1.1.7", "192.1.0.10", 53, "tcp"))["dnat"] == []


@pytest.mark.parametrize("vmap", [True, False])
def test_trace_hairpin_is_masqueraded(vmap):
    got = trace(ruleset(seed(vmap)), pkt("10.1.1.4", "192.1.47.211", 80))["dnat"]
    assert ("10.1.1.4", 80, True) in got and ("10.1.79.11", 80, False) in got


@pytest.mark.parametrize("vmap", [True, False])
def test_trace_node_port_only_on_local_addresses_and_masqueraded(vmap):
    rs = ruleset(seed(vmap))
    got = trace(rs, pkt("172.23.100.1", NODE_IP, 31295))
    assert got == {"rejected": False, "dropped": False, "dnat": [("10.1.1.4", 80, True), ("10.1.79.11", 80, True)]}
    assert trace(rs, pkt("172.23.100.1", "172.23.100.6", 31295))["dnat"] == []  # another node's address
    assert trace(rs, pkt("10.1.1.7", "127.0.0.1", 31295), hook="output")["dnat"] == []  # not on localhost


def test_trace_rejections():
    rs = ruleset(seed())
    assert trace(rs, pkt("10.1.1.7", "192.1.3.3", 80)) == {"rejected": True, "dropped": False, "dnat": []}  # no endpoints
    assert trace(rs, pkt("172.23.100.1", NODE_IP, 30001))["rejected"]  # ... nor on its node port
    assert trace(rs, pkt("10.1.1.7", "192.1.47.211", 81))["rejected"]  # a cluster IP's other port
    assert trace(rs, pkt("10.1.1.7", "10.1.79.11", 80)) == {"rejected": False, "dropped": False, "dnat": []}  # not a service


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_rule_form_chooses_uniformly(n):
    eps = [Endpoint(f"10.1.1.{i + 2}", 80) for i in range(n)]
    rules = contribution([(CLUSTER, eps)], vmap=False).chains[nr.svc_chain(CLUSTER)]
    # Rule i is reached with what the earlier ones left and wins 1/mod of it.
    left, p = Fraction(1), []
    for r in rules:
        m = nr._NUMGEN_EQ.match(r)
        share = Fraction(1, int(m.group(1))) if m else Fraction(1)
        p.append(left * share)
        left -= left * share
    assert p == [Fraction(1, n)] * n and left == 0


def test_full_text_declares_every_chain_before_use():
    text = nr.full_text(seed())
    lines = text.splitlines()
    assert lines[:3] == ["add table ip kube-proxy", "delete table ip kube-proxy", "table ip kube-proxy {"]
    declared = {ln.split()[1] for ln in lines if ln.startswith("\tchain ") and ln.endswith("{ }")}
    for name, *_ in nr.BASE_CHAINS:
        assert any(ln.startswith(f"\tchain {name} {{ type ") for ln in lines)
    for target in re.findall(r"goto (\S+?)[,\s}]", text + " "):
        assert target in declared or target == "reject-chain", target


def test_delta_touches_only_what_changed():
    old = contribution([(CLUSTER, EPS)])
    assert delta_text([(old, old)]) == ""
    new = contribution([(CLUSTER, EPS[:1])])
    text = delta_text([(old, new)])
    gone = nr.ep_chain(CLUSTER, EPS[1])
    t = "ip kube-proxy"
    assert text.splitlines() == [
        f"flush chain {t} {nr.svc_chain(CLUSTER)}",
        f"flush chain {t} {gone}",
        f"add rule {t} {nr.svc_chain(CLUSTER)} numgen random mod 1 vmap {{ 0 : goto {nr.ep_chain(CLUSTER, EPS[0])} }}",
        f"delete chain {t} {gone}",
    ]
    removed = delta_text([(old, None)]).splitlines()
    assert f"delete element {t} service-ips {{ 192.1.47.211 . tcp . 80 }}" in removed
    assert f"delete element {t} cluster-ips {{ 192.1.47.211 }}" in removed
    # three chains (service + 2 endpoints) flushed first and deleted last, after the elements
    kinds = [" ".join(ln.split()[:2]) for ln in removed]
    assert kinds == ["flush chain"] * 3 + ["delete element"] * 2 + ["delete chain"] * 3
    added = delta_text([(None, old)]).splitlines()
    assert added[0].startswith("add chain") and added[-1].startswith("add element")
    assert delta_text([(Contribution(), Contribution())]) == ""


def test_duplicate_service_ports_refused():
    with pytest.raises(ValueError, match="duplicate"):
        nr.full_text([contribution([(CLUSTER, EPS)]), contribution([(CLUSTER, EPS)])])
    with pytest.raises(ValueError, match="unsupported protocol"):
        contribution([(ServicePort("d", "s", "", "SCTP", "192.1.1.1", 80), EPS)])


# --------------------------------------------------------------------------- LoadBalancer, traffic policies
HERE, THERE = Endpoint("10.1.1.4", 80, True), Endpoint("10.1.79.11", 80, False)
LB_IP, CLIENT = "172.23.100.200", "172.23.100.1"


def lb(**kw):
    return ServicePort("default", "lb", "", "TCP", "192.1.5.5", 80, node_port=30080, lb_ip=LB_IP, **kw)


@pytest.mark.parametrize("vmap", [True, False])
def test_load_balancer_ip_cluster_policy_masquerades_to_every_endpoint(vmap):
    rs = ruleset([contribution([(lb(), [HERE, THERE])], vmap=vmap)])
    got = trace(rs, pkt(CLIENT, LB_IP, 80))
    assert got["dnat"] == [("10.1.1.4", 80, True), ("10.1.79.11", 80, True)] and not got["rejected"]


def test_source_ranges_drop_other_clients():
    rs = ruleset([contribution([(lb(source_ranges=("172.23.100.1/32",)), [HERE, THERE])])])
    assert not trace(rs, pkt(CLIENT, LB_IP, 80))["dropped"]
    assert trace(rs, pkt("172.23.100.9", LB_IP, 80))["dropped"]
    assert not trace(rs, pkt("172.23.100.9", "192.1.5.5", 80))["dropped"]  # the cluster IP is not firewalled


def test_external_policy_local_keeps_the_client_and_short_circuits_pods_and_the_node():
    sp = lb(external_local=True, cluster_cidr="10.1.0.0/16")
    rs = ruleset([contribution([(sp, [HERE, THERE])])])
    assert trace(rs, pkt(CLIENT, LB_IP, 80))["dnat"] == [("10.1.1.4", 80, False)]  # local only, source kept
    assert trace(rs, pkt(CLIENT, NODE_IP, 30080))["dnat"] == [("10.1.1.4", 80, False)]
    assert trace(rs, pkt("10.1.1.7", LB_IP, 80))["dnat"] == [("10.1.1.4", 80, False), ("10.1.79.11", 80, False)]
    assert trace(rs, pkt(NODE_IP, LB_IP, 80), hook="output")["dnat"] == [("10.1.1.4", 80, True),
                                                                         ("10.1.79.11", 80, True)]
    # no local endpoint on this node: outside traffic is dropped, pods still reach the service
    rs = ruleset([contribution([(sp, [THERE])])])
    assert trace(rs, pkt(CLIENT, NODE_IP, 30080))["dropped"]
    assert trace(rs, pkt(CLIENT, LB_IP, 80))["dropped"]
    assert trace(rs, pkt("10.1.1.7", LB_IP, 80))["dnat"] == [("10.1.79.11", 80, False)]
    assert trace(rs, pkt("10.1.1.7", "192.1.5.5", 80))["dnat"] == [("10.1.79.11", 80, False)]


def test_internal_policy_local():
    sp = ServicePort("default", "itp", "", "TCP", "192.1.6.6", 80, internal_local=True)
    rs = ruleset([contribution([(sp, [HERE, THERE])])])
    assert trace(rs, pkt("10.1.1.7", "192.1.6.6", 80))["dnat"] == [("10.1.1.4", 80, False)]
    rs = ruleset([contribution([(sp, [THERE])])])
    got = trace(rs, pkt("10.1.1.7", "192.1.6.6", 80))
    assert got["dropped"] and got["dnat"] == [] and not got["rejected"]


def test_lb_service_loads_in_the_delta_order():
    old = contribution([(lb(source_ranges=("172.23.100.1/32",)), [HERE, THERE])])
    ops = nr.delta_ops([(None, old)])
    kinds = [o[0] for o in ops]
    assert kinds.index("add_element") > kinds.index("add_rule") > kinds.index("add_chain")
    assert ("add_element", "firewall-ips", f"{LB_IP} . tcp . 80", f"goto {nr.fw_chain(lb())}") in ops
