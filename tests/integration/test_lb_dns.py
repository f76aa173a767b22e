"""Issue 14: LoadBalancer services in L2 mode (S20), traffic policies, headless services, DNS.

One lab is shared by the module, with the cluster DNS add-on (one coredns pod behind
kube-dns 192.1.0.10): the seed's two pods (web1 on kub-node-1, web2 on kub-node-2, label
run=my-nginx8), the seed's nginx-cluster-svc, a third pod `solo` on kub-node-1 only. The
outside host is the underlay namespace (172.23.100.1), which reaches LoadBalancer addresses
only because exactly one worker answers ARP for each. DNS is asked from inside a pod (its
own /etc/resolv.conf, through the kube-dns service). The test that stops a node runs last.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from netlab import labfile, names
from netlab.api import pods, services
from netlab.kernel import nft
from netlab.lab.running import agent_pid
from tests.integration.test_services import pod, sh
from tests.labkit import Lab, lab_doc, leftovers, new_lab_name, wait_for

NODE_IP = {"kub-node-1": "172.23.100.5", "kub-node-2": "172.23.100.6"}


def svc(name: str, selector: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "selector": selector, "ports": [{"port": 80}], **spec}}


def make_lab(tmp_path_factory, mode: str):
    edits = {"kubeProxy": {"mode": mode}} if mode != "iptables" else {}
    lab = Lab(tmp_path_factory.mktemp("lb"), lab_doc(new_lab_name(), dns=mode == "iptables", **edits))
    lab.mode = mode
    try:
        lab.up()
        st = lab.store()
        try:
            for p in (pod("web1", "kub-node-1", {"run": "my-nginx8"}), pod("web2", "kub-node-2", {"run": "my-nginx8"}),
                      pod("solo", "kub-node-1", {"app": "solo"})):
                pods.create_pod(st, p)
            for name in ("web1", "web2", "solo"):
                pods.wait_running(st, "default", name, 60)
        finally:
            st.close()
        seed_svc = next(w for w in labfile.load_lab(None).workloads if w["metadata"]["name"] == "nginx-cluster-svc")
        lab.cli("apply", "-f", "-", input=yaml.safe_dump_all([
            seed_svc,
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-headless"},
             "spec": {"clusterIP": "None", "selector": {"run": "my-nginx8"}, "ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostdns"},
             "spec": {"nodeName": "kub-node-2", "dnsPolicy": "Default",
                      "containers": [{"name": "c", "image": "netlab/hello"}]}},
            svc("web-lb", {"run": "my-nginx8"}),  # first in the pool: 172.23.100.200
            svc("web-local", {"app": "solo"}, externalTrafficPolicy="Local", loadBalancerIP="172.23.100.210"),
            svc("web-fw", {"run": "my-nginx8"}, loadBalancerIP="172.23.100.220",
                loadBalancerSourceRanges=["172.23.100.1/32"]),
        ]))
        yield lab
    finally:
        lab.down("--purge", check=False)
        assert not any(leftovers(lab.name).values()), leftovers(lab.name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """kube-proxy in iptables mode, with the cluster DNS add-on."""
    yield from make_lab(tmp_path_factory, "iptables")


@pytest.fixture(scope="module")
def nft_lab(tmp_path_factory):
    """The same services with kubeProxy.mode nftables (no DNS add-on: DNS is mode-blind)."""
    yield from make_lab(tmp_path_factory, "nftables")


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def any_lab(request):
    """The LoadBalancer traffic tests run against both proxy modes, one lab per mode."""
    return request.getfixturevalue("lab" if request.param == "iptables" else "nft_lab")


def mac(lab: Lab, node: str) -> str:
    return re.search(r"link/ether (\S+)", sh(lab, node, "ip link show ens3").stdout).group(1)


def leader(lab: Lab, ip: str) -> str | None:
    st = lab.store()
    try:
        item = st.get(f"/registry/netlab/lb/{ip}")
        return item.value["node"] if item else None
    finally:
        st.close()


def curl(lab: Lab, target: str, url: str, timeout: float = 3) -> tuple[int, str]:
    p = sh(lab, target, f"curl -s -m {timeout} {url}")
    return p.returncode, p.stdout


def client_address(body: str) -> str:
    return re.search(r"client address: ([\d.]+):", body).group(1)


# --------------------------------------------------------------------------- allocation
def test_lb_gets_an_address_from_the_pool_shown_as_external_ip(lab):
    out = lab.cli("get", "svc").stdout
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("web-lb "))
    assert row[1] == "LoadBalancer" and row[3] == "172.23.100.200" and re.fullmatch(r"80:3\d{4}/TCP", row[4]), out
    obj = lab.get_json("svc", "web-local")
    assert obj["status"]["loadBalancer"]["ingress"][0]["ip"] == "172.23.100.210"
    assert obj["spec"]["healthCheckNodePort"] and obj["spec"]["externalTrafficPolicy"] == "Local"


@pytest.mark.parametrize("ip, msg", [
    ("172.23.100.200", "spec.loadBalancerIP: 172.23.100.200 is already allocated to default/web-lb"),
    ("172.23.100.7", "spec.loadBalancerIP: 172.23.100.7 is not inside services.loadBalancerPool"),
])
def test_taken_or_out_of_pool_address_is_refused_and_nothing_written(lab, ip, msg):
    p = lab.cli("apply", "-f", "-", input=yaml.safe_dump(svc("web-bad", {"run": "x"}, loadBalancerIP=ip)),
                check=False)
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert lab.cli("get", "svc", "web-bad", check=False).returncode != 0


# --------------------------------------------------------------------------- L2 announcement
def test_outside_host_reaches_lb_and_exactly_one_node_answers_arp(any_lab):
    owner = wait_for(lambda: leader(any_lab, "172.23.100.200"), what="a leader for 172.23.100.200")
    # Capture the ARP replies for the address while the outside host resolves it afresh.
    out = sh(any_lab, "external", "ip neigh flush dev br0; "
                              "tcpdump -i br0 -nn -e -l 'arp[6:2] = 2 and arp[14:4] = 0xac1764c8' "
                              ">/tmp/$$.arp 2>/dev/null & t=$!; sleep 0.5; "
                              "curl -s -m 3 http://172.23.100.200/; sleep 0.3; kill $t; wait $t; "
                              "echo ===; cat /tmp/$$.arp; rm -f /tmp/$$.arp; echo ===; ip neigh show 172.23.100.200")
    body, replies, neigh = out.stdout.split("===\n")
    assert body.startswith("Hello from pod web"), out
    senders = set(re.findall(r"^\S+ (\S+) >", replies, re.M))
    assert senders == {mac(any_lab, owner)}, replies
    assert mac(any_lab, owner) in neigh, neigh


def test_cluster_policy_masquerades_local_keeps_the_client_address(any_lab):
    rc, body = curl(any_lab, "external", "http://172.23.100.200/")
    assert rc == 0 and client_address(body) != "172.23.100.1", body
    # Local: only the node with an endpoint announces the address (as MetalLB).
    wait_for(lambda: leader(any_lab, "172.23.100.210") == "kub-node-1", what="kub-node-1 to announce 172.23.100.210")
    rc, body = curl(any_lab, "external", "http://172.23.100.210/")
    assert rc == 0 and body.startswith("Hello from pod solo") and client_address(body) == "172.23.100.1", \
        (rc, body, leader(any_lab, "172.23.100.210"), sh(any_lab, "external", "ip neigh").stdout,
         sh(any_lab, "kub-node-1", f"cat {names.run_dir(any_lab.name)}/logs/*kub-node-1* | grep -i 'lb\\|arp' | tail -20").stdout)


def test_health_check_node_port_answers_200_where_endpoints_are_503_elsewhere(any_lab):
    port = any_lab.get_json("svc", "web-local")["spec"]["healthCheckNodePort"]
    out = {}
    for node, ip in NODE_IP.items():
        p = sh(any_lab, "external", f"curl -s -w ' %{{http_code}}' http://{ip}:{port}/")
        out[node] = p.stdout
    assert out["kub-node-1"].endswith(" 200") and '"localEndpoints": 1' in out["kub-node-1"], out
    assert out["kub-node-2"].endswith(" 503") and '"localEndpoints": 0' in out["kub-node-2"], out
    assert '"service": {"namespace": "default", "name": "web-local"}' in out["kub-node-2"]


def test_source_ranges_let_the_listed_client_in_and_refuse_others(any_lab):
    rc, body = curl(any_lab, "external", "http://172.23.100.220/")
    assert rc == 0 and body.startswith("Hello from pod web"), body
    rc, _ = curl(any_lab, "kub-node-1", "http://172.23.100.220/", timeout=1)  # 172.23.100.5: not listed
    assert rc == 28  # dropped: the connection times out
    if any_lab.mode == "iptables":
        rules = sh(any_lab, "kub-node-1", "iptables-legacy -t nat -S; iptables-legacy -S KUBE-SERVICES").stdout
        assert re.search(r"-A KUBE-FW-\S+ -s 172.23.100.1/32 .*loadbalancer IP.* -j KUBE-EXT-", rules), rules
        assert re.search(r"-d 172.23.100.220/32 .*traffic not accepted by KUBE-FW-\S+.* -j DROP", rules), rules
    else:  # kube-proxy's nftables layout: an element of firewall-ips, a firewall- chain dropping the rest
        objs = nft.nft_json(names.node_ns(any_lab.name, "kub-node-1"), "list", "table", "ip", "kube-proxy")
        (fw,) = [o["map"] for o in objs if o.get("map", {}).get("name") == "firewall-ips"]
        (elem,) = fw["elem"]
        assert elem[0]["concat"] == ["172.23.100.220", "tcp", 80], elem
        chain = elem[1]["goto"]["target"]
        assert chain.startswith("firewall-") and chain.endswith("-default/web-fw/tcp/")
        (rule,) = [o["rule"]["expr"] for o in objs if o.get("rule", {}).get("chain") == chain]
        assert rule[0]["match"]["op"] == "!=" and rule[-1] == {"drop": None}, rule


# --------------------------------------------------------------------------- DNS
DIG = f"{sys.executable} -m dnslib.client --server 192.1.0.10:53"


def pod_ip(lab: Lab, name: str) -> str:
    return lab.get_json("pod", name)["status"]["podIP"]


def test_pod_resolv_conf_and_service_names(lab):
    out = lab.sh("pod/web1", "cat /etc/resolv.conf; echo ===; getent hosts nginx-cluster-svc; "
                             "getent hosts nginx-cluster-svc.default.svc.cluster.local; "
                             "getent hosts kube-dns.kube-system; echo ===; cat /etc/resolv.conf", timeout=30)
    resolv, hosts, _ = out.split("===\n")
    assert resolv == ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 192.1.0.10\noptions ndots:5\n")
    assert [ln.split() for ln in hosts.splitlines()] == [
        ["192.1.47.211", "nginx-cluster-svc.default.svc.cluster.local"]] * 2 + [
        ["192.1.0.10", "kube-dns.kube-system.svc.cluster.local"]]


def test_dns_policy_default_keeps_the_nodes_resolv_conf(lab):
    inside = lab.sh("pod/hostdns", "cat /etc/resolv.conf")
    assert inside == sh(lab, "kub-node-2", "cat /etc/resolv.conf").stdout and "192.1.0.10" not in inside


def test_headless_srv_pod_records_nxdomain_refused(lab):
    ips = sorted([pod_ip(lab, "web1"), pod_ip(lab, "web2")])
    dashed = ips[1].replace(".", "-")
    out = lab.sh("pod/web1", f"getent ahostsv4 web-headless | awk '{{print $1}}' | sort -u; echo ===; "
                             f"{DIG} --tcp _http._tcp.web-headless.default.svc.cluster.local SRV; echo ===; "
                             f"getent hosts {dashed}.default.pod.cluster.local; echo ===; "
                             f"{DIG} nope.default.svc.cluster.local A; echo ===; {DIG} example.com A; echo ===; "
                             "iptables-legacy -t nat -S 2>/dev/null | grep -c web-headless", check=False, timeout=30)
    headless, srv, podrec, nx, refused, _ = out.split("===\n")
    assert sorted(headless.split()) == ips
    targets = re.findall(r"SRV\s+0 100 80 (\S+)", srv)
    assert sorted(targets) == sorted(f"{ip.replace('.', '-')}.web-headless.default.svc.cluster.local." for ip in ips), srv
    assert podrec.split() == [ips[1], f"{dashed}.default.pod.cluster.local"]
    assert "status: NXDOMAIN" in nx and "SOA" in nx, nx
    assert "status: REFUSED" in refused, refused
    rules = sh(lab, "kub-node-1", "iptables-legacy -t nat -S").stdout
    assert "web-headless" not in rules  # headless: no proxy rules at all


def test_dns_follows_a_created_and_a_deleted_service(lab):
    # Written as the API server writes it (the CLI would also wait for every proxy).
    st, running = lab.store(), labfile.load_running(lab.name)
    try:
        doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
               "spec": {"selector": {"run": "my-nginx8"}, "ports": [{"port": 8080, "targetPort": 80}]}}
        ip = services.create(st, running, doc)[0]["spec"]["clusterIP"]
        # The pod asks right away: the DNS server's watch has the new service within milliseconds.
        assert lab.sh("pod/web1", "getent hosts late", timeout=30).split() == [ip, "late.default.svc.cluster.local"]
        services.delete(st, "default", "late")
    finally:
        st.close()
    p = lab.exec("pod/web1", "getent", "hosts", "late", check=False)
    assert p.returncode == 2 and not p.stdout  # NXDOMAIN on every search domain: not found


# --------------------------------------------------------------------------- failover (last)
def test_failover_when_the_owner_node_stops(lab):
    owner = leader(lab, "172.23.100.200")
    other = next(n for n in NODE_IP if n != owner)
    assert curl(lab, "external", "http://172.23.100.200/")[0] == 0  # the outside host has the owner's MAC
    want = mac(lab, other)
    pid = agent_pid(lab.name, owner)
    began = time.monotonic()
    stop = subprocess.Popen([sys.executable, "-m", "netlab", "node", "stop", owner],
                            env={**os.environ, "NETLAB_LAB": lab.name}, stdout=subprocess.DEVNULL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=30, interval=0.01, what="the agent to die")
    died = time.monotonic()
    # The new owner's gratuitous ARP moves the outside host's entry without a new request.
    wait_for(lambda: want in sh(lab, "external", "ip neigh show 172.23.100.200").stdout, timeout=10,
             interval=0.05, what=f"ip neigh to show {other}'s MAC")
    print(f"failover: the outside host's neighbour entry moved {time.monotonic() - began:.2f}s after "
          f"`netlab node stop {owner}` began, {time.monotonic() - died:.2f}s after its agent was gone")
    assert stop.wait(60) == 0
    assert leader(lab, "172.23.100.200") == other
    # web1 or web2 was on the stopped node (a node stop is a power cut: its pods are gone)
    # until it is evicted, and each new connection picks either endpoint: some tries time out.
    assert any(curl(lab, "external", "http://172.23.100.200/", timeout=2)[0] == 0 for _ in range(20))
