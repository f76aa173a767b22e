"""Issue 13: `netlab trace` on a real lab with the seed's workloads.

One lab for the module: the seed's my-nginx8 (10.1.1.4 on kub-node-1, 10.1.79.11 on
kub-node-2) behind nginx-cluster-svc 192.1.47.211:80 and nginx-nodeport-svc :31295, plus a
client pod on kub-node-1 and a service without endpoints. Each seed path is traced from the
real kernel state (the hop sequence of S8, the chains of S14, the verdicts of S12/S13), and
the `--live` probe's capture must agree with the prediction. Two tests break the lab by
hand (a DROP rule, a deleted route) and put it back.
"""

from __future__ import annotations

import html
import json
import subprocess

import pytest
import yaml

from netlab import names
from netlab.api import pods
from netlab.kernel import iptables as kipt
from netlab.lab import trace as tracing
from netlab.errors import UsageError
from tests.labkit import Lab, lab_doc, leftovers, new_lab_name, wait_for

A = "10.1.1.4"  # my-nginx8 on kub-node-1
B = "10.1.79.11"  # my-nginx8 on kub-node-2
CLUSTER_IP = "192.1.47.211"
SVC_CHAIN = "KUBE-SVC-XQHY67DURS27F2QJ"  # default/nginx-cluster-svc: (S14)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("trace"), lab_doc(new_lab_name(), workloads=True))
    try:
        lab.up()
        client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
                  "spec": {"nodeName": "kub-node-1", "containers": [{"name": "c", "image": "netlab/hello"}]}}
        empty = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty-svc"},
                 "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}
        lab.cli("apply", "-f", "-", input=yaml.safe_dump_all([client, empty]))
        st = lab.store()
        try:
            pods.wait_running(st, "default", "client", 60)
            lab.pods = {p["status"].get("podIP"): p["metadata"]["name"] for p in pods.list_pods(st, "default")}
        finally:
            st.close()
        assert {A, B} <= set(lab.pods), lab.pods
        yield lab
    finally:
        lab.down("--purge", check=False)
        assert not any(leftovers(lab.name).values()), leftovers(lab.name)


def tr(lab: Lab, src: str, dst: str, *extra: str) -> dict:
    """What `netlab trace SRC DST -o json [--live] [--endpoint IP] [--proto P]` prints, computed
    in this process (the CLI's own start-up is tested once, in test_table_output_and_bad_targets)."""
    opts = {"live": "--live" in extra}
    for flag, key in (("--endpoint", "endpoint"), ("--proto", "proto")):
        if flag in extra:
            opts[key] = extra[extra.index(flag) + 1]
    return json.loads(json.dumps(tracing.run(lab.name, src, dst, opts.pop("proto", None), **opts).to_dict()))


def pod(lab: Lab, ip: str) -> str:
    return f"pod/{lab.pods[ip]}"


def path(t: dict) -> list[str]:
    """where:device of each hop; the node network's bridge is left out (S8 does not list it)."""
    return [f"{h['where']}:{h['device']}" for h in t["hops"] if h["where"] != "external"]


def nat_chain_walk(hop: dict) -> list[str]:
    return [d["chain"] for d in hop["netfilter"] if d["table"] == "nat" and d["rule"]]


def assert_live_agrees(t: dict) -> None:
    live = t["live"]
    assert live["agree"], live["mismatches"]


def node_ns(lab: Lab, node: str) -> str:
    return names.node_ns(lab.name, node)


# --------------------------------------------------------------------------- seed paths


def test_pod_to_pod_on_one_node_is_bridged_by_docker0(lab):
    t = tr(lab, "pod/client", f"{pod(lab, A)}:80", "--live")
    assert path(t) == ["pod/client:eth0", "kub-node-1:docker0", f"{pod(lab, A)}:eth0"]  # S3
    assert t["hops"][1]["event"] == "bridge"
    assert t["verdict"]["result"] == "delivered" and t["verdict"]["endpoint"] == f"{A}:80"
    assert_live_agrees(t)
    assert t["live"]["result"] == "connected"
    assert not any(f["dev"] == "flannel.1" for f in t["live"]["frames"])  # never crosses flannel.1


def test_pod_to_pod_across_nodes_follows_the_seeds_path(lab):
    t = tr(lab, pod(lab, A), f"{pod(lab, B)}:80", "--live")
    # S8: containerA -> docker0 -> flannel.1 -> ens3 -> ens3 -> flannel.1 -> docker0 -> containerB
    assert path(t) == [f"{pod(lab, A)}:eth0", "kub-node-1:docker0", "kub-node-1:flannel.1", "kub-node-1:ens3",
                       "kub-node-2:ens3", "kub-node-2:flannel.1", "kub-node-2:docker0", f"{pod(lab, B)}:eth0"]
    assert t["hops"][1]["route"].startswith("10.1.79.0/24 via 10.1.79.0 dev flannel.1")
    enc = t["hops"][2]
    assert {k: enc["outer"][k] for k in ("src", "dst", "dport", "vni")} == {
        "src": "172.23.100.5", "dst": "172.23.100.6", "dport": 8472, "vni": 1}
    assert_live_agrees(t)
    # A capture on the node network shows UDP 8472 between the node IPs with the pod IPs inside.
    under = [f for f in t["live"]["frames"] if f["netns"] == names.underlay_ns(lab.name) and f["kind"] == "fwd"]
    assert under and all(f["dport"] == 8472 and f["vni"] == 1 for f in under)
    assert (under[0]["src"], under[0]["dst"]) == ("172.23.100.5", "172.23.100.6")
    assert (under[0]["inner"]["src"], under[0]["inner"]["dst"]) == (A, B)
    assert t["live"]["answered"]["src"] == B


def test_pod_to_cluster_ip_lists_both_endpoints_and_is_dnated_at_docker0(lab):
    t = tr(lab, "pod/client", "svc/nginx-cluster-svc", "--live")
    hop = t["hops"][1]
    assert (hop["where"], hop["device"]) == ("kub-node-1", "docker0")
    walk = nat_chain_walk(hop)
    assert walk[:3] == ["PREROUTING", "KUBE-SERVICES", SVC_CHAIN] and walk[3].startswith("KUBE-SEP-")  # S14
    svc_rule = next(d for d in hop["netfilter"] if d["chain"] == "KUBE-SERVICES")
    assert f"-d {CLUSTER_IP}/32" in svc_rule["text"] and "default/nginx-cluster-svc: cluster IP" in svc_rule["text"]
    choice = next(d for d in hop["netfilter"] if d.get("choices"))
    assert sorted((c["endpoint"], c["probability"]) for c in choice["choices"]) == [(f"{A}:80", 0.5), (f"{B}:80", 0.5)]
    dnat = [d for d in hop["netfilter"] if d["action"].startswith("DNAT")]
    assert len(dnat) == 1 and "--to-destination" in dnat[0]["text"]
    assert_live_agrees(t)
    got = t["live"]["endpoint"]
    assert got in (A, B) and t["verdict"]["endpoint"] == f"{got}:80"
    # The DNAT rule's counter moved for the probe (read before and after, not reset).
    assert any(l.startswith(f"counter nat {dnat[0]['chain']} #2 +") for l in t["live"]["hops"]["2"])
    assert any("dport=80" in c for c in t["live"]["conntrack"][node_ns(lab, "kub-node-1")])


def test_node_to_cluster_ip_is_translated_in_output(lab):
    t = tr(lab, "kub-node-1", f"{CLUSTER_IP}:80", "--live")
    first = t["hops"][0]
    assert first["route"].startswith("default via 172.23.100.1 dev ens3")  # S7: why a default route matters
    assert nat_chain_walk(first)[:3] == ["OUTPUT", "KUBE-SERVICES", SVC_CHAIN]
    assert t["verdict"]["result"] == "delivered"  # S11
    assert_live_agrees(t)


def test_outside_host_to_node_port_on_a_node_without_the_endpoint(lab):
    t = tr(lab, "external", "172.23.100.5:31295", "--endpoint", B)
    assert path(t) == ["kub-node-1:ens3", "kub-node-1:flannel.1", "kub-node-1:ens3", "kub-node-2:ens3",
                       "kub-node-2:flannel.1", "kub-node-2:docker0", f"{pod(lab, B)}:eth0"]
    walk = nat_chain_walk(t["hops"][1])
    assert walk[:4] == ["PREROUTING", "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ"]  # S15
    assert t["verdict"]["result"] == "delivered"  # S16
    # Live: the random choice decides which endpoint; the capture agrees with the prediction for
    # the endpoint it took, and when that is kub-node-2's pod, with the path above.
    live = tr(lab, "external", "172.23.100.5:31295", "--live")
    assert_live_agrees(live)
    assert live["live"]["endpoint"] in (A, B) and live["live"]["answered"]["src"] == live["live"]["endpoint"]
    if live["live"]["endpoint"] == B:
        assert path(live) == path(t)


def test_master_to_cluster_ip_leaves_by_the_default_route(lab):
    t = tr(lab, "kub-node-0", f"{CLUSTER_IP}:80", "--live")
    v = t["verdict"]
    assert v["result"] == "stopped" and v["reason"] == "not-forwarded"  # S13
    assert "kub-node-0 has no kube-proxy rules" in v["message"] and "left kub-node-0 by the default route" in v["message"]
    assert_live_agrees(t)
    assert t["live"]["result"].startswith("no answer")


def test_outside_host_has_no_route_to_a_cluster_ip(lab):
    t = tr(lab, "external", f"{CLUSTER_IP}:80")
    assert t["verdict"]["reason"] == "no-route"  # S13


def test_ping_to_a_cluster_ip_is_not_translated(lab):
    t = tr(lab, "pod/client", CLUSTER_IP, "--proto", "icmp")  # S12
    assert t["verdict"]["result"] == "stopped" and not any(
        d["action"].startswith("DNAT") for h in t["hops"] for d in h["netfilter"])
    assert tr(lab, "pod/client", B, "--proto", "icmp")["verdict"]["reason"] == "echo-reply"


def test_service_without_endpoints_is_rejected(lab):
    t = tr(lab, "pod/client", "svc/empty-svc", "--live")
    v = t["verdict"]
    assert v["reason"] == "rejected" and "has no endpoints" in v["message"]
    assert "filter KUBE-SERVICES" in v["message"]
    assert_live_agrees(t)
    assert t["live"]["result"] == "refused"


def test_table_output_and_bad_targets(lab, tmp_path):
    out = lab.cli("trace", pod(lab, A), f"{B}:80", "--svg", str(tmp_path / "p.svg")).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["HOP", "NODE", "WHERE", "DEVICE", "PACKET", "WHAT"]
    assert lines[-1].startswith("VERDICT: delivered")
    assert "route: 10.1.79.0/24 via 10.1.79.0 dev flannel.1" in out
    svg = html.unescape((tmp_path / "p.svg").read_text())
    assert svg.lstrip().startswith("<?xml") and "flannel.1" in svg and "hop 3" in svg
    p = lab.cli("trace", "pod/client", "pod/nope:80", check=False)
    assert p.returncode == 2 and p.stderr.strip() == "error: DST: no pod 'nope' in this lab"
    for bad in ("10.1.1.300:80", f"{B}:70000", "svc/nope", "svc/nginx-cluster-svc:81", B):
        with pytest.raises(UsageError, match="^DST: "):  # what the CLI prints as one line, exit 2
            tr(lab, "pod/client", bad)
    with pytest.raises(UsageError, match="^SRC: 'nonode' is not"):
        tr(lab, "nonode", f"{B}:80")
    topo = lab.cli("topology", "--svg", str(tmp_path / "t.svg"))
    # Graphviz writes '-' as &#45; in SVG text.
    assert "kub-node-0" in html.unescape((tmp_path / "t.svg").read_text()) and topo.returncode == 0


# --------------------------------------------------------------------------- a lab broken by hand


def _ipt_rules(lab: Lab, node: str) -> str:
    return "\n".join(l for l in kipt.iptables_save(node_ns(lab, node)).splitlines()
                     if l.startswith("-A"))


def test_a_drop_rule_inserted_by_hand_is_named_and_nothing_else_changes(lab):
    ns = node_ns(lab, "kub-node-2")
    rule = ["FORWARD", "-d", f"{B}/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DROP"]
    before = _ipt_rules(lab, "kub-node-2")
    assert kipt.iptables(ns, "-I", *rule).returncode == 0
    try:
        t = tr(lab, pod(lab, A), f"{pod(lab, B)}:80", "--live")
        v = t["verdict"]
        assert v["reason"] == "dropped" and v["namespace"] == ns
        assert f"filter FORWARD rule 1: -A FORWARD -d {B}/32 -p tcp -m tcp --dport 80 -j DROP" in v["message"]
        assert_live_agrees(t)  # seen on kub-node-2's flannel.1, never on its docker0
        assert not any(f["netns"] == ns and f["dev"] == "docker0" for f in t["live"]["frames"])
    finally:
        kipt.iptables(ns, "-D", *rule)
    # The live trace left no rule behind (and reset no counter: the counters are only read).
    assert _ipt_rules(lab, "kub-node-2") == before


def test_a_deleted_flannel_route_is_named(lab):
    ns = node_ns(lab, "kub-node-1")
    route = ["10.1.79.0/24", "via", "10.1.79.0", "dev", "flannel.1", "onlink"]
    try:
        for _ in range(3):  # flanneld's resync puts the route back within 10 s: retry if it won
            subprocess.run(["ip", "-n", ns, "route", "del", "10.1.79.0/24"], check=False, capture_output=True)
            t = tr(lab, pod(lab, A), f"{pod(lab, B)}:80")
            if t["hops"][1]["route"].startswith("default"):
                break
        assert t["hops"][1]["route"] == "default via 172.23.100.1 dev ens3 proto static"
        v = t["verdict"]
        assert v["result"] == "stopped" and f"{B} left kub-node-1 by the default route" in v["message"]
        assert "kub-node-1:flannel.1" not in path(t)
    finally:
        subprocess.run(["ip", "-n", ns, "route", "replace", *route, "proto", "static"], check=False)
    wait_for(lambda: "10.1.79.0/24" in subprocess.run(["ip", "-n", ns, "route"], capture_output=True,
                                                      text=True).stdout, 15, what="the route back")
