"""Issue 14, the pure parts: LoadBalancer allocation and validation, the KUBE-EXT/FW/SVL
chains, the L2 speaker's candidacy, ARP frames, kube-proxy's health answer, DNS answers."""

from __future__ import annotations

import pytest

from netlab import labfile, store
from netlab.agent import lb, proxy
from netlab.api import services
from netlab.api.meta import FieldError
from netlab.kernel import arp
from netlab.plan import dns
from netlab.plan.proxy_rules import Endpoint, ServicePort, ext_chain, fw_chain, generate, svc_chain, svl_chain
from tests.unit.test_proxy_rules import EPS, SEED, SEED_NAT_LINES

LAB = labfile.load_lab(None)


def lb_doc(**spec):
    return {"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"run": "web"},
                                                   "ports": [{"port": 80}], **spec}}


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("spec, field", [
    ({"loadBalancerIP": "172.23.100.7"}, "spec.loadBalancerIP"),
    ({"loadBalancerIP": "x"}, "spec.loadBalancerIP"),
    ({"externalTrafficPolicy": "Nearby"}, "spec.externalTrafficPolicy"),
    ({"loadBalancerSourceRanges": ["10.0.0.0/33"]}, "spec.loadBalancerSourceRanges[0]"),
    ({"healthCheckNodePort": 30001}, "spec.healthCheckNodePort"),  # only with Local
    ({"clusterIP": "None"}, "spec.clusterIP"),  # headless is ClusterIP only
])
def test_bad_load_balancer_fields_are_named(spec, field):
    with pytest.raises(FieldError) as e:
        services.normalise(lb_doc(**spec), LAB)
    assert e.value.field == field


def test_load_balancer_ip_only_for_load_balancers():
    with pytest.raises(FieldError) as e:
        services.normalise({"metadata": {"name": "a"}, "spec": {"loadBalancerIP": "172.23.100.201",
                                                                "ports": [{"port": 80}]}}, LAB)
    assert e.value.field == "spec.loadBalancerIP"


def test_defaults_of_a_load_balancer():
    s = services.normalise(lb_doc(), LAB)["spec"]
    assert s["externalTrafficPolicy"] == "Cluster" and s["internalTrafficPolicy"] == "Cluster"
    assert s["allocateLoadBalancerNodePorts"] is True


def test_pool_lab_file_checks():
    text = labfile.default_lab_text()
    with pytest.raises(Exception, match="services.loadBalancerPool.*not inside nodeNetwork.cidr"):
        labfile.parse_lab(text.replace("172.23.100.200-172.23.100.250", "10.9.0.1-10.9.0.9"))
    with pytest.raises(Exception, match="services.loadBalancerPool: holds 172.23.100.4"):
        labfile.parse_lab(text.replace("172.23.100.200-172.23.100.250", "172.23.100.2-172.23.100.9"))
    with pytest.raises(Exception, match="services.loadBalancerPool"):
        labfile.parse_lab(text.replace("172.23.100.200-172.23.100.250", "172.23.100.250-172.23.100.200"))
    assert LAB.dns_ip == "192.1.0.10" and LAB.dns.domain == "cluster.local"


class FakeStore:
    """create_all/list_keys over a dict: enough for services.create's transaction logic."""

    def __init__(self):
        self.kv: dict = {}

    def get(self, k):
        return None

    def list_keys(self, prefix):
        return [k for k in self.kv if k.startswith(prefix)]

    def create_all(self, objs, delete=()):
        clash = {k: self.kv[k] for k in objs if k in self.kv}
        if clash:
            return False, 0, clash
        self.kv.update(objs)
        return True, 1, {}


def test_allocation_takes_the_lowest_free_address_and_refuses_a_taken_one():
    st = FakeStore()
    a, _ = services.create(st, LAB, lb_doc())
    assert a["status"]["loadBalancer"]["ingress"][0]["ip"] == "172.23.100.200"
    b, _ = services.create(st, LAB, {**lb_doc(), "metadata": {"name": "b"}})
    assert services.lb_ip(b) == "172.23.100.201"
    assert st.kv[services.lb_key("172.23.100.201")]["service"] == "default/b"
    with pytest.raises(FieldError, match="172.23.100.200 is already allocated to default/web") as e:
        services.create(st, LAB, {**lb_doc(loadBalancerIP="172.23.100.200"), "metadata": {"name": "c"}})
    assert e.value.field == "spec.loadBalancerIP"
    loc, _ = services.create(st, LAB, {**lb_doc(externalTrafficPolicy="Local"), "metadata": {"name": "d"}})
    hc = loc["spec"]["healthCheckNodePort"]
    assert hc != loc["spec"]["ports"][0]["nodePort"] and services.port_key(hc) in st.kv
    assert services.lb_key("172.23.100.202") in services.allocation_keys(loc)


def test_headless_allocates_no_cluster_ip():
    st = FakeStore()
    h, _ = services.create(st, LAB, {"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
                                                                      "ports": [{"port": 80}]}})
    assert h["spec"]["clusterIP"] == "None" and not st.list_keys(store.ALLOC_CLUSTER_IP)
    assert proxy.service_ports(h, None) == ()


# --------------------------------------------------------------------------- proxy rules
def lbsp(**kw):
    return ServicePort("default", "web", "", "TCP", "192.1.5.5", 80, node_port=30080, lb_ip="172.23.100.200", **kw)


LOCAL_EPS = [Endpoint("10.1.1.4", 80, local=True), Endpoint("10.1.79.11", 80)]


def test_seed_chains_unchanged_next_to_a_load_balancer():
    nat = generate(SEED + [(lbsp(), EPS)]).nat.splitlines()
    assert all(line in nat for line in SEED_NAT_LINES)


def test_cluster_policy_lb_masquerades_through_ext():
    sp = lbsp()
    spn, ext, svc = "default/web:", ext_chain("default/web:", "TCP"), svc_chain("default/web:", "TCP")
    nat = generate([(sp, EPS)]).nat.splitlines()
    assert (f'-A KUBE-SERVICES -d 172.23.100.200/32 -p tcp -m comment --comment "{spn} loadbalancer IP" '
            f"-m tcp --dport 80 -j {ext}") in nat
    assert f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" -j KUBE-MARK-MASQ' in nat
    assert f"-A {ext} -j {svc}" in nat
    assert f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{spn}" -m tcp --dport 30080 -j {ext}' in nat


def test_local_policy_keeps_the_source_and_uses_local_endpoints_only():
    sp = lbsp(external_local=True, cluster_cidr="10.1.0.0/16")
    spn, ext, svl = "default/web:", ext_chain("default/web:", "TCP"), svl_chain("default/web:", "TCP")
    text = generate([(sp, LOCAL_EPS)]).text()
    nat = text.splitlines()
    assert f'-A {ext} -s 10.1.0.0/16 -m comment --comment "pod traffic for {spn} external destinations" ' \
           f"-j {svc_chain(spn, 'TCP')}" in nat
    assert f"-A {ext} -j {svl}" in nat
    svl_rules = [ln for ln in nat if ln.startswith(f"-A {svl} ")]
    assert len(svl_rules) == 1 and "statistic" not in svl_rules[0]
    assert not any(ln.startswith(f"-A {ext}") and "KUBE-MARK-MASQ" in ln and "LOCAL" not in ln for ln in nat)
    # An external client reaches only the local endpoint, unmasqueraded.
    from netlab.plan.proxy_rules import trace
    assert trace(text, "172.23.100.1", "tcp", "172.23.100.200", 80, set()) == [("10.1.1.4", 80, False)]
    # Without a local endpoint: external traffic is dropped in filter, nothing DNATed.
    rs = generate([(sp, [Endpoint("10.1.79.11", 80)])])
    assert f"-A {ext} -j {svl}" not in rs.nat and f":{svl} - [0:0]" not in rs.nat
    assert any("-d 172.23.100.200/32" in ln and "has no local endpoints" in ln and ln.endswith("-j DROP")
               for ln in rs.filter.splitlines())


def test_source_ranges_go_through_fw_and_the_rest_is_dropped():
    sp = lbsp(source_ranges=("172.23.100.1/32", "10.9.0.0/16"))
    spn, fw, ext = "default/web:", fw_chain("default/web:", "TCP"), ext_chain("default/web:", "TCP")
    rs = generate([(sp, EPS)])
    nat = rs.nat.splitlines()
    assert f'-A {fw} -s 172.23.100.1/32 -m comment --comment "{spn} loadbalancer IP" -j {ext}' in nat
    assert f'-A {fw} -s 10.9.0.0/16 -m comment --comment "{spn} loadbalancer IP" -j {ext}' in nat
    assert any(ln.startswith("-A KUBE-SERVICES -d 172.23.100.200/32") and ln.endswith(f"-j {fw}") for ln in nat)
    assert (f'-A KUBE-SERVICES -d 172.23.100.200/32 -p tcp -m comment --comment "{spn} traffic not accepted '
            f'by {fw}" -m tcp --dport 80 -j DROP') in rs.filter.splitlines()


def test_internal_local_picks_local_endpoints_for_the_cluster_ip():
    sp = ServicePort("default", "web", "", "TCP", "192.1.5.5", 80, internal_local=True)
    text = generate([(sp, LOCAL_EPS)]).text()
    from netlab.plan.proxy_rules import trace
    assert trace(text, "10.1.1.9", "tcp", "192.1.5.5", 80, set()) == [("10.1.1.4", 80, False)]
    rs = generate([(sp, [Endpoint("10.1.79.11", 80)])])
    assert any("has no local endpoints" in ln and "REJECT" in ln for ln in rs.filter.splitlines())


def test_partial_restore_of_a_load_balancer_matches_a_full_one():
    inp = proxy.service_ports(
        {"metadata": {"name": "web", "namespace": "default"},
         "spec": {"type": "LoadBalancer", "clusterIP": "192.1.5.5", "externalTrafficPolicy": "Local",
                  "loadBalancerSourceRanges": ["172.23.100.1/32"],
                  "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "172.23.100.200"}]}}},
        {"subsets": [{"addresses": [{"ip": "10.1.1.4", "nodeName": "kub-node-1"}],
                      "ports": [{"port": 80, "protocol": "TCP"}]}]}, "kub-node-1", "10.1.0.0/16")
    sp, eps = inp[0]
    assert sp.lb_ip == "172.23.100.200" and sp.external_local and eps[0].local
    text, made, gone = proxy.partial_text([(None, inp)])
    assert {ext_chain("default/web:", "TCP"), fw_chain("default/web:", "TCP"),
            svl_chain("default/web:", "TCP")} <= made["nat"]
    back, _, gone = proxy.partial_text([(inp, None)])
    assert ext_chain("default/web:", "TCP") in gone["nat"]


# --------------------------------------------------------------------------- health check, speaker, ARP
def test_health_answer_is_kube_proxys():
    assert proxy.health_body("default", "web", 2) == (200, {"service": {"namespace": "default", "name": "web"},
                                                           "localEndpoints": 2, "serviceProxyHealthy": True})
    assert proxy.health_body("default", "web", 0)[0] == 503
    ep = {"subsets": [{"addresses": [{"ip": "10.1.1.4", "nodeName": "n1"}, {"ip": "10.1.79.11", "nodeName": "n2"}]}]}
    assert proxy.local_endpoints(ep, "n1") == 1 and proxy.local_endpoints(ep, "n3") == 0


def test_speaker_candidacy_follows_the_policy():
    def svc(name, policy, ip):
        return {"metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
    cache = {store.SERVICES + "default/a": svc("a", "Cluster", "172.23.100.200"),
             store.SERVICES + "default/b": svc("b", "Local", "172.23.100.201"),
             store.ENDPOINTS + "default/b": {"subsets": [{"addresses": [{"ip": "10.1.1.4", "nodeName": "n1"}]}]}}
    assert lb.wanted(cache, "n1") == {"172.23.100.200": "default/a", "172.23.100.201": "default/b"}
    assert lb.wanted(cache, "n2") == {"172.23.100.200": "default/a"}


def test_arp_frames_round_trip():
    me, peer = bytes.fromhex("02c21b443b4e"), bytes.fromhex("024ecf77775d")
    req = arp.arp_frame(peer, arp.BROADCAST, 1, peer, "172.23.100.1", b"\0" * 6, "172.23.100.200")
    assert arp.parse_request(req) == (peer, "172.23.100.1", "172.23.100.200")
    reply = arp.arp_frame(me, peer, 2, me, "172.23.100.200", peer, "172.23.100.1")
    assert arp.parse_request(reply) is None and len(reply) == 42 and reply[:6] == peer


# --------------------------------------------------------------------------- DNS answers
SVCS = {
    ("default", "nginx-cluster-svc"): {"spec": {"clusterIP": "192.1.47.211", "ports": [{"name": "http", "port": 80,
                                                                                      "protocol": "TCP"}]}},
    ("default", "db"): {"spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
}
EPS_DNS = {("default", "db"): {"subsets": [{"addresses": [{"ip": "10.1.79.11"}, {"ip": "10.1.1.4"}],
                                            "notReadyAddresses": [{"ip": "10.1.1.9"}],
                                            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}}


def ask(name, qtype="A"):
    return dns.answer(name, qtype, "cluster.local", SVCS, EPS_DNS)


def test_service_a_record_is_the_cluster_ip():
    a = ask("nginx-cluster-svc.default.svc.cluster.local.")
    assert a.rcode == "NOERROR" and [r.data for r in a.records] == [("192.1.47.211",)]


def test_headless_gives_one_a_per_ready_endpoint():
    a = ask("db.default.svc.cluster.local")
    assert [r.data[0] for r in a.records] == ["10.1.1.4", "10.1.79.11"]
    assert ask("10-1-1-4.db.default.svc.cluster.local").records[0].data == ("10.1.1.4",)
    assert ask("10-1-1-9.db.default.svc.cluster.local").rcode == "NXDOMAIN"  # not ready


def test_srv_for_named_ports():
    a = ask("_http._tcp.nginx-cluster-svc.default.svc.cluster.local", "SRV")
    assert [r.data for r in a.records] == [(0, 100, 80, "nginx-cluster-svc.default.svc.cluster.local")]
    assert a.additional[0].data == ("192.1.47.211",)
    h = ask("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted(r.data[3] for r in h.records) == ["10-1-1-4.db.default.svc.cluster.local",
                                                     "10-1-79-11.db.default.svc.cluster.local"]
    assert ask("_nope._tcp.db.default.svc.cluster.local", "SRV").rcode == "NXDOMAIN"


def test_pod_records_nxdomain_refused():
    assert ask("10-1-79-11.default.pod.cluster.local").records[0].data == ("10.1.79.11",)
    assert ask("10-1-79-300.default.pod.cluster.local").rcode == "NXDOMAIN"
    n = ask("nope.default.svc.cluster.local")
    assert n.rcode == "NXDOMAIN" and n.authority[0].type == "SOA"
    assert ask("nginx-cluster-svc.default.svc.cluster.local", "AAAA").rcode == "NOERROR"  # exists, no AAAA
    assert ask("nginx-cluster-svc.other.svc.cluster.local").rcode == "NXDOMAIN"
    assert ask("example.com").rcode == "REFUSED"
    assert ask("default.svc.cluster.local").rcode == "NOERROR"


def test_addon_and_resolv_conf_as_kubeadm_and_kubelet_write_them():
    dep, svc = dns.addon_manifests("192.1.0.10", "cluster.local", 1, ["python3", "-m", "netlab.agent.dns"])
    assert (dep["metadata"]["namespace"], dep["metadata"]["name"]) == ("kube-system", "coredns")
    assert svc["metadata"]["name"] == "kube-dns" and svc["spec"]["clusterIP"] == "192.1.0.10"
    assert {(p["protocol"], p["port"]) for p in svc["spec"]["ports"]} == {("UDP", 53), ("TCP", 53)}
    services.normalise(svc, LAB)  # a valid Service
    assert dns.resolv_conf("192.1.0.10", "default", "cluster.local") == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 192.1.0.10\noptions ndots:5\n")


def test_a_stored_load_balancer_passes_the_manifest_field_check():
    from netlab.api import manifests

    st = FakeStore()
    obj, _ = services.create(st, LAB, lb_doc(externalTrafficPolicy="Local"))
    manifests.check_fields(obj["spec"], manifests.HONOURED[("v1", "Service")]["spec"], "spec")
