"""Services without a kernel or etcd: validation/defaulting, allocation picks, Endpoints,
the proxy's input and its partial restores (checked against a full sync), table columns."""

import random

import pytest

from netlab import labfile
from netlab.agent import endpoints, proxy
from netlab.api import services
from netlab.cli import output
from netlab.errors import UsageError
from netlab.plan.proxy_rules import Endpoint, ServicePort, dangling_jumps, parse_restore, svc_chain, trace

LAB = labfile.load_lab(None)


def svc(**spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"run": "web"}, "ports": [{"port": 80}], **spec}}


# --------------------------------------------------------------------------- validation
def test_defaults_like_kubernetes():
    s = services.normalise(svc(), LAB)
    assert s["metadata"] == {"name": "web", "namespace": "default"}
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 80}]
    assert s["spec"]["clusterIP"] is None  # allocated at create
    assert s["spec"]["sessionAffinity"] == "None"


def test_seed_services_are_valid():
    seed = [w for w in LAB.workloads if w["kind"] == "Service"]
    np_ = services.normalise(seed[1], LAB)
    assert np_["spec"]["clusterIP"] == "192.1.88.35"
    assert np_["spec"]["ports"][0]["nodePort"] == 31295
    assert output.ports_column({"spec": np_["spec"]}) == "80:31295/TCP"


@pytest.mark.parametrize("spec, field", [
    ({"type": "ExternalName"}, "spec.type"),
    ({"ports": []}, "spec.ports"),
    ({"ports": [{"port": 0}]}, "spec.ports[0].port"),
    ({"ports": [{"port": 70000}]}, "spec.ports[0].port"),
    ({"ports": [{"port": "http"}]}, "spec.ports[0].port"),
    ({"ports": [{}]}, "spec.ports[0].port"),
    ({"ports": [{"port": 80, "protocol": "SCTP"}]}, "spec.ports[0].protocol"),
    ({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "targetPort": 0}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort"),  # ClusterIP
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 29999}]}, "spec.ports[0].nodePort"),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 32768}]}, "spec.ports[0].nodePort"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.ports[1].name"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "spec.ports[1].port"),
    ({"clusterIP": "10.1.0.5"}, "spec.clusterIP"),
    ({"clusterIP": "192.1.300.1"}, "spec.clusterIP"),
    ({"clusterIP": "192.1.0.1"}, "spec.clusterIP"),  # reserved: the range's first address
    ({"clusterIP": "192.1.0.0"}, "spec.clusterIP"),
    ({"clusterIP": "192.1.255.255"}, "spec.clusterIP"),
    ({"clusterIP": "None", "type": "NodePort"}, "spec.clusterIP"),
    ({"selector": {"run": "a b"}}, "spec.selector.run"),
    ({"externalIPs": ["1.2.3.4"]}, "spec.externalIPs"),
    ({"sessionAffinity": "ClientIP"}, "spec.sessionAffinity"),
])
def test_bad_fields_are_named(spec, field):
    with pytest.raises(UsageError) as e:
        services.normalise(svc(**spec), LAB)
    assert str(e.value).startswith(field + ":"), str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("name", ["Web", "9web", "web_1", "-web", "a" * 64, ""])
def test_bad_names(name):
    doc = svc()
    doc["metadata"]["name"] = name
    with pytest.raises(UsageError, match=r"^metadata\.name:"):
        services.normalise(doc, LAB)


def test_target_port_number_name_and_string_digits():
    s = services.normalise(svc(ports=[{"name": "a", "port": 80, "targetPort": "http-alt"},
                                      {"name": "b", "port": 81, "targetPort": "8081", "protocol": "UDP"}]), LAB)
    assert [p["targetPort"] for p in s["spec"]["ports"]] == ["http-alt", 8081]
    assert s["spec"]["ports"][1]["protocol"] == "UDP"


def test_node_port_fields():
    s = services.normalise(svc(type="NodePort", ports=[{"port": 80, "nodePort": 30000}]), LAB)
    assert s["spec"]["ports"][0]["nodePort"] == 30000 and s["spec"]["externalTrafficPolicy"] == "Cluster"


# --------------------------------------------------------------------------- allocation picks
def test_cluster_ip_pool_skips_network_first_and_broadcast():
    lo, hi = services.cluster_ip_pool(LAB)
    import ipaddress

    assert str(ipaddress.IPv4Address(lo)) == "192.1.0.2"
    assert str(ipaddress.IPv4Address(hi)) == "192.1.255.254"
    assert services.reserved_ip(LAB) == "192.1.0.1"


def test_picks_avoid_taken_and_stay_in_range():
    rng = random.Random(7)
    small = labfile.parse_lab(labfile.default_lab_text().replace("192.1.0.0/16", "192.1.0.0/29")
                              .replace("30000-32767", "30000-30003").replace("clusterIP: 192.1.47.211", "")
                              .replace("clusterIP: 192.1.88.35", "").replace("clusterIP: 192.1.0.10 ", "# ").replace("replicas: 1\n", "replicas: 0\n"))
    taken = {"192.1.0.2", "192.1.0.4", "192.1.0.6"}
    picks = {services._pick_ip(small, taken, rng) for _ in range(50)}
    assert picks == {"192.1.0.3", "192.1.0.5"}
    assert {services._pick_port(small, {"30000", "30002"}, rng) for _ in range(50)} == {30001, 30003}
    with pytest.raises(Exception, match="no free cluster IP"):
        services._pick_ip(small, taken | {"192.1.0.3", "192.1.0.5"}, rng)
    with pytest.raises(Exception, match="no free node port"):
        services._pick_port(small, {"30000", "30001", "30002", "30003"}, rng)


# --------------------------------------------------------------------------- endpoints
def pod(name, ip, ready=True, labels=None, ns="default", ports=None, phase="Running", node="kub-node-1"):
    return {"metadata": {"name": name, "namespace": ns, "uid": "u-" + name, "labels": labels or {"run": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def stored(doc):
    s = services.normalise(doc, LAB)
    s["spec"]["clusterIP"] = "192.1.0.9"
    return s


def test_endpoints_ready_pods_sorted_with_target_ref():
    s = stored(svc(ports=[{"port": 80, "targetPort": 8080}]))
    pods = [pod("b", "10.1.79.11"), pod("a", "10.1.1.4"), pod("c", "10.1.1.9", ready=False),
            pod("d", "10.1.1.10", labels={"run": "other"}), pod("e", "10.1.1.11", ns="prod"),
            pod("f", None), pod("g", "10.1.1.12", phase="Succeeded")]
    ep = endpoints.build_endpoints(s, pods)
    assert ep["kind"] == "Endpoints" and ep["metadata"]["name"] == "web"
    (subset,) = ep["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.1.1.4", "10.1.79.11"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.1.1.9"]
    assert subset["addresses"][0]["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "u-a"}
    assert subset["addresses"][0]["nodeName"] == "kub-node-1"
    assert subset["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert output.endpoints_column(ep) == "10.1.1.4:8080,10.1.79.11:8080"


def test_named_target_port_resolved_per_pod():
    s = stored(svc(ports=[{"name": "web", "port": 80, "targetPort": "http"}]))
    pods = [pod("a", "10.1.1.4", ports=[{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
            pod("b", "10.1.1.5", ports=[{"name": "http", "containerPort": 9090, "protocol": "TCP"}]),
            pod("c", "10.1.1.6", ports=[{"name": "other", "containerPort": 80, "protocol": "TCP"}])]
    subsets = endpoints.build_subsets(s, pods)
    got = {(a["ip"], ss["ports"][0]["port"]) for ss in subsets for a in ss["addresses"]}
    assert got == {("10.1.1.4", 8080), ("10.1.1.5", 9090)}  # c has no port named http
    assert all(ss["ports"][0]["name"] == "web" for ss in subsets)
    inp = proxy.service_ports(s, {"subsets": subsets})
    assert inp[0][1] == (Endpoint("10.1.1.4", 8080), Endpoint("10.1.1.5", 9090))


def test_no_matching_pods_gives_empty_subsets():
    s = stored(svc())
    ep = endpoints.build_endpoints(s, [pod("x", "10.1.1.4", labels={"run": "nope"})])
    assert ep["subsets"] == [] and output.endpoints_column(ep) == "<none>"


def test_endpoints_column_truncates_like_kubectl():
    ep = {"subsets": [{"addresses": [{"ip": f"10.1.1.{i}"} for i in range(2, 7)], "ports": [{"port": 80}]}]}
    assert output.endpoints_column(ep) == "10.1.1.2:80,10.1.1.3:80,10.1.1.4:80 + 2 more..."


# --------------------------------------------------------------------------- proxy input and syncs
def test_service_ports_pairs_ports_by_name_and_protocol():
    s = stored(svc(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080},
                                           {"name": "dns", "port": 53, "protocol": "UDP"}]))
    ep = {"subsets": [{"addresses": [{"ip": "10.1.1.4"}],
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                                 {"name": "dns", "port": 5353, "protocol": "UDP"}]}]}
    (http, eps_h), (dns, eps_d) = proxy.service_ports(s, ep)
    assert http == ServicePort("default", "web", "http", "TCP", "192.1.0.9", 80, 30080)
    assert eps_h == (Endpoint("10.1.1.4", 8080),)
    assert dns.service_port_name == "default/web:dns" and eps_d == (Endpoint("10.1.1.4", 5353),)
    assert proxy.service_ports(s, None)[0][1] == ()


def _apply(state, text):
    """A small model of iptables-restore --noflush with -A/-I/-D/-X, strict like the kernel."""
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = state.setdefault(line[1:], {})
        elif line.startswith(":"):
            table[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            chain, rest = line[3:].split(" ", 1)
            table[chain].append(f"-A {chain} {rest}")
        elif line.startswith("-I "):
            chain, pos, rest = line[3:].split(" ", 2)
            table[chain].insert(int(pos) - 1, f"-A {chain} {rest}")
        elif line.startswith("-D "):
            chain, rest = line[3:].split(" ", 1)
            table[chain].remove(f"-A {chain} {rest}")  # ValueError: restore would fail
        elif line.startswith("-X "):
            chain = line[3:]
            assert not table[chain], f"-X {chain}: chain not empty"
            del table[chain]
        elif line == "COMMIT":
            refs = [r for rules in table.values() for r in rules if r.split(" -j ")[-1].startswith("KUBE-")]
            assert all(r.split(" -j ")[-1].split()[0] in table for r in refs), "dangling jump"


def _input(rng, i):
    proto = rng.choice(["TCP", "UDP"])
    sp = ServicePort("default", f"s{i}", rng.choice(["", "http"]), proto, f"192.1.0.{i + 2}", 80,
                     30000 + i if rng.random() < 0.5 else None)
    eps = {Endpoint(f"10.1.{rng.randint(1, 2)}.{rng.randint(2, 9)}", 80) for _ in range(rng.randint(0, 3))}
    return ((sp, tuple(sorted(eps, key=lambda e: (e.ip, e.port)))),)


@pytest.mark.parametrize("seed", range(5))
def test_partial_syncs_end_where_a_full_sync_does(seed):
    rng = random.Random(seed)
    applied = {i: _input(rng, i) for i in range(6)}
    text, _ = proxy.full_text(applied.values(), {})
    state: dict = {}
    _apply(state, text)
    for _ in range(30):
        changes = []
        for i in rng.sample(range(10), 3):
            new = _input(rng, i) if rng.random() < 0.7 else None
            if applied.get(i) != new:
                changes.append((applied.get(i), new))
            applied.pop(i, None)
            if new:
                applied[i] = new
        ptext, made, gone = proxy.partial_text(changes)
        assert "KUBE-POSTROUTING" not in ptext and "KUBE-MARK-MASQ -j" not in ptext  # only what changed
        _apply(state, ptext)
        want, _ = proxy.full_text(applied.values(), {})
        want_state = parse_restore(want)
        for t in ("nat", "filter"):
            assert {c: sorted(r) for c, r in state[t].items()} == {c: sorted(r) for c, r in want_state[t].items()}
        assert "KUBE-NODEPORTS" in state["nat"]["KUBE-SERVICES"][-1]  # still the last rule


def test_partial_text_for_an_unchanged_service_is_empty():
    inp = _input(random.Random(1), 1)
    assert proxy.partial_text([(inp, inp)])[0] == ""


def test_full_text_has_both_canaries_and_reports_its_chains():
    rng = random.Random(3)
    inputs = [_input(rng, i) for i in range(4)]
    stale = {"nat": {"KUBE-SVC-AAAAAAAAAAAAAAAA"}}
    text, chains = proxy.full_text(inputs, stale)
    assert dangling_jumps(text) == []
    tables = parse_restore(text)
    assert "KUBE-PROXY-CANARY" in tables["nat"] and "KUBE-PROXY-CANARY" in tables["filter"]
    assert "KUBE-SVC-AAAAAAAAAAAAAAAA" not in chains["nat"]
    assert set(tables["nat"]) == chains["nat"] and set(tables["filter"]) == chains["filter"]


def test_seed_services_through_the_proxy_input():
    """The seed's services with its two pods give the seed's chain names and a working trace."""
    eps = {"subsets": [{"addresses": [{"ip": "10.1.1.4"}, {"ip": "10.1.79.11"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}
    seed = [services.normalise(w, LAB) for w in LAB.workloads if w["kind"] == "Service"]
    inputs = [proxy.service_ports(s, eps) for s in seed]
    text, _ = proxy.full_text(inputs, {})
    assert "KUBE-SVC-XQHY67DURS27F2QJ" in text and "KUBE-SVC-YN4D7LGVMIQA3S2Y" in text
    assert svc_chain("default/nginx-cluster-svc:", "TCP") == "KUBE-SVC-XQHY67DURS27F2QJ"
    assert trace(text, "172.23.100.1", "tcp", "172.23.100.6", 31295, {"172.23.100.6"}) == [
        ("10.1.1.4", 80, True), ("10.1.79.11", 80, True)]


def test_stale_udp_flows():
    sp = ServicePort("default", "dns", "", "UDP", "192.1.0.10", 53, 30053)
    a, b = Endpoint("10.1.1.4", 5353), Endpoint("10.1.79.11", 5353)
    assert proxy.stale_udp_flows(((sp, (a, b)),), ((sp, (b,)),)) == [
        ["-p", "udp", "--orig-dst", "192.1.0.10", "--reply-src", "10.1.1.4"],
        ["-p", "udp", "--orig-port-dst", "30053", "--reply-src", "10.1.1.4"]]
    # From no endpoints to some: flows made meanwhile are dropped.
    assert proxy.stale_udp_flows(((sp, ()),), ((sp, (a,)),)) == [["-p", "udp", "--orig-dst", "192.1.0.10"]]
    tcp = ServicePort("default", "web", "", "TCP", "192.1.0.11", 80)
    assert proxy.stale_udp_flows(((tcp, (a, b)),), None) == []
    assert len(proxy.stale_udp_flows(((sp, (a, b)),), None)) == 4


# --------------------------------------------------------------------------- columns
def test_service_rows():
    s = stored(svc(type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 31295},
                                           {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053}]))
    row = output.service_row(s, wide=True)
    assert row[:5] == ["web", "NodePort", "192.1.0.9", "<none>", "80:31295/TCP,53:30053/UDP"]
    assert row[6] == "run=web"
    no_sel = stored(svc(selector=None))
    assert output.service_row(no_sel, wide=True)[6] == "<none>"
    assert output.service_row(stored(svc()))[4] == "80/TCP"


# --------------------------------------------------------------------------- CLI refusals before root
@pytest.mark.parametrize("args, msg", [
    (["--port", "80", "--type", "ExternalName"], "error: --type: 'ExternalName' is not one of ClusterIP, NodePort, LoadBalancer"),
    (["--port", "0"], "error: --port: 0 is not a port (1-65535)"),
    (["--port", "80", "--protocol", "SCTP"], "error: --protocol: 'SCTP' is not one of TCP, UDP"),
])
def test_expose_usage_errors_need_no_root_and_touch_nothing(args, msg):
    from tests.unit.test_cli import run

    p = run("expose", "pod", "web", *args)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [msg], p.stderr
