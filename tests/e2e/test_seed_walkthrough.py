"""Issue 7: the seed, replayed. One test per observation S1–S20 of the seed walkthrough
(../shared/docs/seed-walkthrough.md), against one lab brought up the way `sudo netlab up`
brings up the default lab (only its name differs), using the commands a reader of the article
types: route -n, iptables -t nat -S, etcdctl get, brctl show docker0, ip netns exec, curl,
ping, tcpdump on the node network, netlab get pods -o wide, netlab ps.

These are the reader's checks, one per observation and fast; tests/integration checks each
part in depth. Every failure message names its observation and shows what was seen. Tests
run in file order; S17 (pods come and go) changes the lab, so it comes last.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections import Counter

import pytest
import yaml

from netlab import names
from netlab.api import meta
from tests.labkit import PY, Lab, wait_for

NODE_IP = {"kub-node-0": "172.23.100.4", "kub-node-1": "172.23.100.5", "kub-node-2": "172.23.100.6"}
WORKERS = ("kub-node-1", "kub-node-2")
SUBNET = {"kub-node-1": "10.1.1.0/24", "kub-node-2": "10.1.79.0/24"}
SEED_POD_IP = {"kub-node-1": "10.1.1.4", "kub-node-2": "10.1.79.11"}
OTHER = {"kub-node-1": "kub-node-2", "kub-node-2": "kub-node-1"}
CLUSTER_IP, NODEPORT_CLUSTER_IP, NODE_PORT = "192.1.47.211", "192.1.88.35", 31295
HELLO = re.compile(r"^Hello from pod (\S+)$", re.M)

# The article's `iptables -S -t nat` lines on kub-node-1, verbatim (its pods had the same IPs).
SEED_NAT_LINES = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-SERVICES -d 192.1.47.211/32 -p tcp -m comment --comment "default/nginx-cluster-svc: cluster IP"'
    ' -m tcp --dport 80 -j KUBE-SVC-XQHY67DURS27F2QJ',
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in'
    ' this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    '-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -m statistic --mode random'
    ' --probability 0.50000000000 -j KUBE-SEP-FO4LSVXACD7WOMVW',
    '-A KUBE-SVC-XQHY67DURS27F2QJ -m comment --comment "default/nginx-cluster-svc:" -j KUBE-SEP-DCSHEKS5WGS4LYVT',
    '-A KUBE-SEP-FO4LSVXACD7WOMVW -s 10.1.1.4/32 -m comment --comment "default/nginx-cluster-svc:" -j KUBE-MARK-MASQ',
    '-A KUBE-SEP-FO4LSVXACD7WOMVW -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp'
    ' -j DNAT --to-destination 10.1.1.4:80',
    '-A KUBE-SEP-DCSHEKS5WGS4LYVT -s 10.1.79.11/32 -m comment --comment "default/nginx-cluster-svc:"'
    ' -j KUBE-MARK-MASQ',
    '-A KUBE-SEP-DCSHEKS5WGS4LYVT -p tcp -m comment --comment "default/nginx-cluster-svc:" -m tcp'
    ' -j DNAT --to-destination 10.1.79.11:80',
]
SEED_NODEPORT_LINES = [
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295'
    ' -j KUBE-MARK-MASQ',
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp --dport 31295'
    ' -j KUBE-SVC-YN4D7LGVMIQA3S2Y',
    '-A KUBE-SVC-YN4D7LGVMIQA3S2Y -m comment --comment "default/nginx-nodeport-svc:" -m statistic --mode random'
    ' --probability 0.50000000000 -j KUBE-SEP-H7QSASJ4XBTCRED7',
    '-A KUBE-SEP-H7QSASJ4XBTCRED7 -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp'
    ' -j DNAT --to-destination 10.1.1.4:80',
    '-A KUBE-SEP-YLSXRQMQKCP2ZZ6B -p tcp -m comment --comment "default/nginx-nodeport-svc:" -m tcp'
    ' -j DNAT --to-destination 10.1.79.11:80',
]

# S2's pod: two containers, each the hello app on its own port, pinned to kub-node-1 where
# it also gives S3 two pods on one node.
DUO = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "duo", "labels": {"app": "duo"}},
       "spec": {"nodeName": "kub-node-1", "containers": [
           {"name": "front", "image": "netlab/hello", "ports": [{"containerPort": 80}]},
           {"name": "back", "image": "netlab/hello", "ports": [{"containerPort": 8080}]}]}}


# --------------------------------------------------------------------------- helpers
def sh(lab: Lab, target: str, script: str) -> subprocess.CompletedProcess:
    """`netlab exec TARGET -- sh -c SCRIPT`; the caller judges the exit code."""
    return lab.exec(target, "sh", "-c", script, check=False)


def host(*cmd: str) -> subprocess.CompletedProcess:
    """A command in the host's shell, as the article's `ip netns exec ...` lines are typed."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def hellos(text: str) -> list[str]:
    """The pod names of the hello app's answers ("Hello from pod NAME"), in order."""
    return HELLO.findall(text)


def pin(lab: Lab, pod: str) -> str:
    return names.pod_ns(lab.name, "default", pod)


def pod_list(lab: Lab) -> list[dict]:
    return lab.get_json("pods")["items"]


def nginx_pods(lab: Lab) -> list[dict]:
    return [p for p in pod_list(lab) if (p["metadata"].get("labels") or {}).get("run") == "my-nginx8"]


def ready(p: dict) -> bool:
    return meta.pod_ready(p) and bool(p["status"].get("podIP"))


def ps_rows(lab: Lab) -> list[dict]:
    """`netlab ps` as dicts; columns are at least 3 spaces apart, values have single spaces."""
    lines = lab.cli("ps").stdout.splitlines()
    heads = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(heads, re.split(r"\s{2,}", l.strip()))) for l in lines[1:] if l.strip()]


def etcd_leases(lab: Lab) -> dict[str, dict]:
    """flannel's leases as `etcdctl get --prefix` prints them: subnet -> JSON value."""
    lines = lab.etcdctl("get", "--prefix", "/coreos.com/network/subnets/").splitlines()
    return {k.rsplit("/", 1)[1].replace("-", "/"): json.loads(v) for k, v in zip(lines[::2], lines[1::2])}


def route_n(text: str) -> list[tuple[str, str, str, str, str]]:
    """`route -n` rows as (Destination, Gateway, Genmask, Flags, Iface)."""
    rows = []
    for line in text.splitlines()[2:]:
        f = line.split()
        if len(f) == 8:
            rows.append((f[0], f[1], f[2], f[3], f[7]))
    return rows


def dnat_targets(rules: str, svc: str) -> set[str]:
    return set(re.findall(rf'--comment "default/{svc}:" -m tcp -j DNAT --to-destination ([\d.]+):80', rules))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def seed(lab) -> dict[str, dict]:
    """The two my-nginx8 pods as `netlab up` left them: node -> pod object. Like the
    article's: one per worker, at 10.1.1.4 and 10.1.79.11."""
    ps = nginx_pods(lab)
    where = {p["spec"].get("nodeName"): p for p in ps}
    seen = [(p["metadata"]["name"], p["spec"].get("nodeName"), p["status"].get("podIP")) for p in ps]
    assert len(ps) == 2 and all(ready(p) for p in ps), f"netlab up left my-nginx8 pods {seen}"
    assert {n: p["status"]["podIP"] for n, p in where.items()} == SEED_POD_IP, \
        f"the seed's pod addresses 10.1.1.4 (kub-node-1) and 10.1.79.11 (kub-node-2), got {seen}"
    return where


@pytest.fixture(scope="module")
def duo(lab) -> dict:
    """S2's pod with two containers (applied like any manifest), Running on kub-node-1."""
    lab.cli("apply", "-f", "-", input=yaml.safe_dump(DUO))
    p = lab.get_json("pods", "duo")
    assert ready(p) and p["spec"]["nodeName"] == "kub-node-1", p
    return p


def name_of(p: dict) -> str:
    return p["metadata"]["name"]


def ip_of(p: dict) -> str:
    return p["status"]["podIP"]


# --------------------------------------------------------------------------- pods
def test_S01_pause_holds_pod_netns_and_the_app_container_joins_it(lab, seed):
    listed = host("ip", "netns", "list").stdout
    pause = {r["NAMES"]: r for r in ps_rows(lab) if r["IMAGE"] == "netlab/pause"}
    for node, p in seed.items():
        name, ns = name_of(p), pin(lab, name_of(p))
        assert ns in listed, f"S1: `ip netns list` lacks the pod's namespace {ns}:\n{listed}"
        # the pod's IP as the pause container holds it, and as its app container sees it
        held = host("ip", "netns", "exec", ns, "ip", "addr").stdout
        seen = lab.exec(f"pod/{name}", "ip", "addr").stdout
        addrs = re.findall(r"^\s+inet (\S+) .* (\S+)$", held, re.M)
        assert addrs == [("127.0.0.1/8", "lo"), (f"{ip_of(p)}/24", "eth0")], \
            f"S1: `ip netns exec {ns} ip addr` should show one pod IP {ip_of(p)}/24 on eth0:\n{held}"
        eth0 = re.search(r"^\d+: eth0@.*\n.*link/ether (\S+)", held, re.M)
        assert eth0 and re.search(rf"^\d+: eth0@.*\n.*link/ether {eth0.group(1)}", seen, re.M) \
            and f"inet {ip_of(p)}/24" in seen, \
            f"S1: the app container of {name} should see the same eth0 as its pause:\n{held}\n---\n{seen}"
        # the pause is a process of its own, and its network namespace is the pod's
        row = next((r for k, r in pause.items() if k.startswith(f"k8s_POD_{name}_default_")), None)
        assert row, f"S1: `netlab ps` shows no pause container of {name}:\n{pause}"
        comm = host("cat", f"/proc/{row['PID']}/comm").stdout.strip()
        ident = host("ip", "netns", "identify", row["PID"]).stdout.split()
        assert comm == "netlab-pause" and ident == [ns], \
            f"S1: pause of {name} (pid {row['PID']}) is {comm!r} in netns {ident}, expected netlab-pause in {ns}"


def test_S02_two_containers_of_a_pod_talk_on_localhost_and_share_hosts(lab, duo):
    for src, port in (("front", 8080), ("back", 80)):
        out = lab.cli("exec", "pod/duo", "-c", src, "--", "curl", "-s", "-m", "2",
                      f"127.0.0.1:{port}", check=False).stdout
        assert hellos(out) == ["duo"] and f"pod address: 127.0.0.1:{port}\n" in out, \
            f"S2: container {src} of pod duo: curl 127.0.0.1:{port} should reach the other container:\n{out}"
    for c in ("front", "back"):
        out = lab.cli("exec", "pod/duo", "-c", c, "--", "sh", "-c", "hostname; cat /etc/hosts").stdout
        assert out.startswith("duo\n") and re.search(rf"^{re.escape(ip_of(duo))}\s+duo$", out, re.M), \
            f"S2: container {c}'s /etc/hosts should map the pod IP {ip_of(duo)} to its host name duo:\n{out}"


def test_S03_pods_on_one_node_meet_on_docker0_not_flannel(lab, seed, duo):
    node = "kub-node-1"
    brctl = sh(lab, node, "brctl show docker0").stdout
    ports = re.findall(r"\b(veth\w+)", brctl)
    on_node = [name_of(p) for p in pod_list(lab) if p["spec"].get("nodeName") == node]
    assert len(ports) == len(on_node) == 2, \
        f"S3: `brctl show docker0` on {node} should list one veth per pod ({on_node}):\n{brctl}"
    # each pod's eth0 is the peer of one of those veths (eth0@ifN: N is the veth's index)
    links = sh(lab, node, "ip -o link").stdout
    for pod in on_node:
        eth0 = host("ip", "netns", "exec", pin(lab, pod), "ip", "-o", "link", "show", "eth0").stdout
        peer = re.search(r"eth0@if(\d+)", eth0)
        veth = peer and re.search(rf"^{peer.group(1)}: (veth\w+)@", links, re.M)
        assert veth and veth.group(1) in ports, \
            f"S3: eth0 of {pod} ({eth0.strip()}) should pair with a veth on docker0 {ports}:\n{links}"
    # pod to pod on the node: straight over docker0 (no NAT), flannel.1 counts no packet
    count = "cat /sys/class/net/flannel.1/statistics/tx_packets /sys/class/net/flannel.1/statistics/rx_packets"
    before = sh(lab, node, count).stdout.split()
    target = seed[node]
    out = lab.cli("exec", "pod/duo", "--", "curl", "-s", "-m", "2", ip_of(target), check=False).stdout
    after = sh(lab, node, count).stdout.split()
    assert hellos(out) == [name_of(target)] and f"client address: {ip_of(duo)}:" in out, \
        f"S3: duo ({ip_of(duo)}) -> {ip_of(target)} on the same node should answer, unNATed:\n{out}"
    assert before == after, f"S3: flannel.1 tx/rx packets moved {before} -> {after} for same-node traffic"


def test_S04_docker0_and_subnet_env_follow_the_nodes_lease(lab):
    for node in WORKERS:
        net = ipaddress.ip_network(SUBNET[node])
        gw = f"{net.network_address + 1}/{net.prefixlen}"
        env = sh(lab, node, "cat /run/flannel/subnet.env").stdout
        assert env.split() == ["FLANNEL_NETWORK=10.1.0.0/16", f"FLANNEL_SUBNET={gw}", "FLANNEL_MTU=1400",
                               "FLANNEL_IPMASQ=true"], f"S4: /run/flannel/subnet.env on {node}:\n{env}"
        dock = sh(lab, node, "ip addr show docker0").stdout
        assert " mtu 1400 " in dock and f"inet {gw} " in dock, \
            f"S4: docker0 on {node} should carry {gw} and mtu 1400 (FLANNEL_SUBNET, FLANNEL_MTU):\n{dock}"


# --------------------------------------------------------------------------- flannel and etcd
def test_S05_etcd_on_the_master_holds_flannels_config_and_leases(lab):
    listen = sh(lab, "kub-node-0", "ss -ltnp").stdout
    assert re.search(r"172\.23\.100\.4:2379 .*\"etcd\"", listen), \
        f"S5: `ss -ltnp` on kub-node-0 should show etcd listening on 172.23.100.4:2379:\n{listen}"
    # the article's command, from a worker over the node network (API v3)
    out = sh(lab, "kub-node-1", "ETCDCTL_API=3 etcdctl --endpoints=http://172.23.100.4:2379 "
                                "get /coreos.com/network/config").stdout.splitlines()
    assert out[:1] == ["/coreos.com/network/config"] and len(out) == 2 and \
        json.loads(out[1]) == {"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}, \
        f"S5: etcdctl get /coreos.com/network/config from kub-node-1:\n{out}"
    for node in WORKERS:
        key = "/coreos.com/network/subnets/" + SUBNET[node].replace("/", "-")
        got = lab.etcdctl("get", key).splitlines()
        assert got[:1] == [key] and len(got) == 2, f"S5: no lease {key} for {node}:\n{got}"
        v = json.loads(got[1])
        assert v["PublicIP"] == NODE_IP[node] and v["BackendType"] == "vxlan" and \
            re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", v["BackendData"]["VtepMAC"]), \
            f"S5: lease {key} should name {NODE_IP[node]}, vxlan and a VtepMAC: {got[1]}"


def test_S06_flannel_1_is_a_vxlan_vtep_with_the_leases_mac(lab):
    leases = etcd_leases(lab)
    for node in WORKERS:
        mac = leases[SUBNET[node]]["BackendData"]["VtepMAC"]
        out = sh(lab, node, "ip -d link show flannel.1; ip addr show flannel.1").stdout
        want = [" mtu 1400 ", f"link/ether {mac} ", f"vxlan id 1 local {NODE_IP[node]} dev ens3 ",
                " dstport 8472 ", " nolearning ", f"inet {SUBNET[node].split('/')[0]}/32 "]
        missing = [w for w in want if w not in out]
        assert not missing, f"S6: flannel.1 on {node} lacks {missing}:\n{out}"


def test_S07_route_n_on_a_worker(lab):
    leases = etcd_leases(lab)
    for node in WORKERS:
        out = sh(lab, node, "route -n").stdout
        rows = route_n(out)
        own = SUBNET[node].split("/")[0]
        want = [("0.0.0.0", "172.23.100.1", "0.0.0.0", "UG", "ens3"),
                (own, "0.0.0.0", "255.255.255.0", "U", "docker0"),
                ("172.23.100.0", "0.0.0.0", "255.255.255.0", "U", "ens3")]
        missing = [w for w in want if w not in rows]
        assert not missing, f"S7: route -n on {node} lacks {missing}:\n{out}"
        # every other node's lease (the other worker's, and the master's) goes to flannel.1
        over_vxlan = {r[0] for r in rows if r[4] == "flannel.1" and r[2] == "255.255.255.0"}
        others = {s.split("/")[0] for s in leases} - {own}
        assert SUBNET[OTHER[node]].split("/")[0] in others and over_vxlan == others, \
            f"S7: route -n on {node} should send the other leases {sorted(others)} to flannel.1:\n{out}"


def test_S08_pod_to_pod_across_nodes_is_vxlan_on_the_node_network(lab, seed):
    a, b = seed["kub-node-1"], seed["kub-node-2"]
    # containerA -> docker0 (its default route) -> flannel.1 (the node's route to B's subnet)
    r_pod = lab.exec(f"pod/{name_of(a)}", "ip", "route").stdout
    r_node = sh(lab, "kub-node-1", f"ip route get {ip_of(b)}").stdout
    assert "default via 10.1.1.1 dev eth0" in r_pod and "dev flannel.1" in r_node, \
        f"S8: pod {name_of(a)} routes via docker0 10.1.1.1, node to {ip_of(b)} via flannel.1:\n{r_pod}\n{r_node}"
    cap = subprocess.Popen([PY, "-m", "netlab", "exec", "--lab", lab.name, "external", "--",
                            "timeout", "20", "tcpdump", "-lni", "br0", "-c", "2", "udp", "port", "8472"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = cap.stderr.readline()  # "listening on br0 ..." once the capture is armed
        while line and "listening on" not in line:
            line = cap.stderr.readline()
        page = lab.exec(f"pod/{name_of(a)}", "curl", "-s", "-m", "2", ip_of(b), check=False).stdout
        wire, _ = cap.communicate(timeout=25)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert hellos(page) == [name_of(b)] and f"client address: {ip_of(a)}:" in page, \
        f"S8: curl {ip_of(b)} from pod {name_of(a)} should reach {name_of(b)} with the pod IP as source:\n{page}"
    # outer: node IPs on UDP 8472 (tcpdump names the port OTV); inner: the pod IPs
    assert re.search(r"IP 172\.23\.100\.5\.\d+ > 172\.23\.100\.6\.8472: ", wire) and \
        re.search(rf"IP {re.escape(ip_of(a))}\.\d+ > {re.escape(ip_of(b))}\.80: ", wire), \
        f"S8: tcpdump -ni br0 udp port 8472 should show VXLAN between the node IPs with the pod IPs inside:\n{wire}"


def test_S09_every_node_and_pod_reaches_every_pod_ip_outside_does_not(lab, seed, duo):
    targets = {ip_of(p): name_of(p) for p in [*seed.values(), duo]}
    script = "; ".join(f"curl -s -m 2 {ip} | head -n1" for ip in targets)
    sources = [*NODE_IP, *(f"pod/{name_of(p)}" for p in seed.values()), "pod/duo"]
    for src in sources:
        out = sh(lab, src, script).stdout
        assert hellos(out) == list(targets.values()), \
            f"S9: from {src}, curl of every pod IP {list(targets)} should answer:\n{out}"
    script = "; ".join(f"curl -s -m 1 {ip}; echo curl {ip}: $?; ping -c 1 -W 1 {ip} >/dev/null 2>&1; "
                       f"echo ping {ip}: $?" for ip in targets)
    out = sh(lab, "external", script).stdout
    assert not re.search(r": 0$", out, re.M) and not hellos(out), \
        f"S9: the outside host 172.23.100.1 should reach no pod IP (exit codes):\n{out}"


# --------------------------------------------------------------------------- services
def test_S10_cluster_ip_service_gets_an_address_from_the_range(lab):
    out = lab.cli("get", "svc").stdout
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] and \
        re.search(r"^nginx-cluster-svc\s+ClusterIP\s+192\.1\.47\.211\s+<none>\s+80/TCP\s+\S+$", out, re.M), \
        f"S10: netlab get svc:\n{out}"
    # as the article's `kubectl expose deployment my-nginx8 --type ClusterIP`: an address allocated
    lab.cli("expose", "deployment", "my-nginx8", "--name", "s10-svc")
    try:
        out = lab.cli("get", "svc").stdout
        row = re.search(r"^s10-svc\s+ClusterIP\s+(\S+)\s+<none>\s+80/TCP\s", out, re.M)
        assert row and ipaddress.ip_address(row.group(1)) in ipaddress.ip_network("192.1.0.0/16") and \
            row.group(1) not in (CLUSTER_IP, NODEPORT_CLUSTER_IP), \
            f"S10: an exposed service should get a free address of 192.1.0.0/16:\n{out}"
    finally:
        lab.cli("delete", "svc", "s10-svc")


def test_S11_cluster_ip_answers_from_every_worker_and_pod_balanced(lab, seed, duo):
    want = {name_of(p) for p in seed.values()}
    # 20 tries: with two endpoints at 50%, all from one pod has odds of 2 in a million
    script = f"for i in $(seq 20); do curl -s -m 2 {CLUSTER_IP} | head -n1; done"
    for src in [*WORKERS, *(f"pod/{n}" for n in sorted(want)), "pod/duo"]:
        got = Counter(hellos(sh(lab, src, script).stdout))
        assert sum(got.values()) == 20 and set(got) == want, \
            f"S11: 20 curls of {CLUSTER_IP} from {src} should all answer, from both {sorted(want)}: {dict(got)}"


def test_S12_ping_of_cluster_ip_gets_no_answer(lab):
    p = sh(lab, "kub-node-1", f"ping -c 1 -W 1 {CLUSTER_IP}")
    assert p.returncode != 0 and " 0 received" in p.stdout, \
        f"S12: ping {CLUSTER_IP} from kub-node-1 should get no answer (only ip:port is translated):\n{p.stdout}"


def test_S13_cluster_ip_not_from_the_master_nor_from_outside(lab):
    for src in ("kub-node-0", "external"):
        out = sh(lab, src, f"curl -s -m 1 {CLUSTER_IP}; echo curl=$?").stdout
        assert not hellos(out) and "curl=0" not in out, f"S13: curl {CLUSTER_IP} from {src} answered:\n{out}"
    nat = sh(lab, "kub-node-0", "iptables -t nat -S").stdout
    assert "KUBE-SERVICES" not in nat, f"S13: the master runs no kube-proxy, yet its nat table has:\n{nat}"


def test_S14_iptables_nat_shows_the_seeds_chains(lab, seed):
    for node in WORKERS:
        nat = sh(lab, node, "iptables -t nat -S").stdout
        lines = nat.splitlines()
        missing = [l for l in SEED_NAT_LINES if l not in lines]
        assert not missing, f"S14: iptables -t nat -S on {node} lacks the article's lines:\n" + \
            "\n".join(missing) + f"\n--- seen:\n{nat}"
        services = [l for l in lines if l.startswith("-A KUBE-SERVICES ")]
        assert services[-1].endswith("-j KUBE-NODEPORTS"), \
            f"S14: the last KUBE-SERVICES rule on {node} should jump to KUBE-NODEPORTS:\n{nat}"


def test_S15_node_port_answers_on_every_worker_even_without_the_pod(lab, seed, duo):
    out = lab.cli("get", "svc").stdout
    assert re.search(r"^nginx-nodeport-svc\s+NodePort\s+192\.1\.88\.35\s+<none>\s+80:31295/TCP\s", out, re.M), \
        f"S15: netlab get svc:\n{out}"
    for node in WORKERS:
        # this node's rules, and 10 curls of the other worker's IP:31295 from here
        out = sh(lab, node, "iptables -t nat -S; echo ---; for i in $(seq 10); do "
                            f"curl -s -m 2 {NODE_IP[OTHER[node]]}:{NODE_PORT} | head -n1; done").stdout
        rules, _, answers = out.partition("\n---\n")
        missing = [l for l in SEED_NODEPORT_LINES if l not in rules.splitlines()]
        assert not missing, f"S15: iptables -t nat -S on {node} lacks the article's lines:\n" + \
            "\n".join(missing) + f"\n--- seen:\n{rules}"
        got = Counter(hellos(answers))
        assert sum(got.values()) == 10 and set(got) == {name_of(p) for p in seed.values()}, \
            f"S15: 10 curls of {NODE_IP[OTHER[node]]}:{NODE_PORT} should all answer, from both pods: {dict(got)}"
    # a worker that runs none of the service's pods: duo runs on kub-node-1 only
    lab.cli("expose", "pod", "duo", "--type", "NodePort", "--name", "s15-duo")
    try:
        svc = lab.get_json("svc", "s15-duo")
        port = svc["spec"]["ports"][0]["nodePort"]
        assert 30000 <= port <= 32767, f"S15: node port {port} is outside 30000-32767: {svc['spec']}"
        out = sh(lab, "kub-node-1", f"curl -s -m 2 172.23.100.6:{port}").stdout
        assert hellos(out) == ["duo"], \
            f"S15: kub-node-2 (no pod of s15-duo) should forward {port} to duo on kub-node-1:\n{out}"
    finally:
        lab.cli("delete", "svc", "s15-duo")


def test_S16_node_port_answers_a_client_outside_the_cluster(lab, seed):
    for node in WORKERS:
        out = sh(lab, "external", f"for i in $(seq 5); do curl -s -m 2 {NODE_IP[node]}:{NODE_PORT}; done").stdout
        assert len(hellos(out)) == 5 and set(hellos(out)) <= {name_of(p) for p in seed.values()}, \
            f"S16: curl {NODE_IP[node]}:{NODE_PORT} from 172.23.100.1 should answer 5 of 5:\n{out}"
        # KUBE-MARK-MASQ: the pod sees the node, not the outside client
        assert "client address: 172.23.100.1:" not in out, \
            f"S16: NodePort traffic should be masqueraded on {node}:\n{out}"


# --------------------------------------------------------------------------- listings
def test_S18_pod_listing_and_docker_ps_listing(lab, seed, duo):
    out = lab.cli("get", "pods", "-o", "wide").stdout
    assert re.split(r"\s{2,}", out.splitlines()[0].strip())[:7] == \
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], f"S18: netlab get pods -o wide:\n{out}"
    for node, p in seed.items():
        assert re.search(rf"^{name_of(p)}\s+1/1\s+Running\s+0\s+\S+\s+{re.escape(ip_of(p))}\s+{node}\s", out, re.M), \
            f"S18: netlab get pods -o wide should list {name_of(p)} 1/1 Running on {node} at {ip_of(p)}:\n{out}"
    rows = ps_rows(lab)
    names_ = {r["NAMES"]: r for r in rows}
    for p, containers in [*((p, ["my-nginx8"]) for p in seed.values()), (duo, ["front", "back"])]:
        suffix = f"{name_of(p)}_default_{p['metadata']['uid']}"
        want = {f"k8s_POD_{suffix}_0": "netlab/pause", **{f"k8s_{c}_{suffix}_0": "netlab/hello" for c in containers}}
        got = {n: names_[n]["IMAGE"] for n in want if n in names_}
        assert got == want and all(names_[n]["NODE"] == p["spec"]["nodeName"] for n in want), \
            f"S18: netlab ps should list {want} on {p['spec']['nodeName']}:\n" + lab.cli("ps").stdout


def test_S19_pause_and_app_containers_share_one_network_namespace(lab, seed, duo):
    rows = ps_rows(lab)
    inodes = {}
    for p in [*seed.values(), duo]:
        pids = [r["PID"] for r in rows if r["NAMES"].split("_")[2] == name_of(p)]
        assert len(pids) == len(p["spec"]["containers"]) + 1, f"S19: netlab ps rows of {name_of(p)}: {pids}"
        out = host("sh", "-c", " ".join(f"readlink /proc/{pid}/ns/net;" for pid in pids)
                   + f" stat -L -c net:[%i] /run/netns/{pin(lab, name_of(p))}").stdout.split()
        assert len(out) == len(pids) + 1 and len(set(out)) == 1, \
            f"S19: pause, app containers (pids {pids}) and the pinned netns of {name_of(p)} differ: {out}"
        inodes[name_of(p)] = out[0]
    assert len(set(inodes.values())) == len(inodes), f"S19: two pods share a network namespace: {inodes}"


def test_S20_load_balancer(lab, seed):
    # The seed's "for later": an address outside the cluster reaches, spread over the pods.
    lab.cli("expose", "deployment", "my-nginx8", "--type", "LoadBalancer", "--name", "my-nginx8-lb")
    try:
        row = next(l.split() for l in lab.cli("get", "svc").stdout.splitlines() if l.startswith("my-nginx8-lb "))
        assert row[1] == "LoadBalancer" and row[3] == "172.23.100.200", f"S20: get svc row {row}"
        out = sh(lab, "external", "for i in 1 2 3 4 5 6; do curl -s -m 3 172.23.100.200; done").stdout
        assert len(hellos(out)) == 6 and set(hellos(out)) <= {name_of(p) for p in seed.values()}, \
            f"S20: curl of the LoadBalancer address from outside:\n{out}"
        neigh = sh(lab, "external", "ip neigh show 172.23.100.200").stdout
        macs = {n: re.search(r"link/ether (\S+)", sh(lab, n, "ip link show ens3").stdout).group(1) for n in WORKERS}
        assert sum(m in neigh for m in macs.values()) == 1, f"S20: one worker answers ARP: {neigh} {macs}"
    finally:
        lab.cli("delete", "svc", "my-nginx8-lb", check=False)


# --------------------------------------------------------------------------- last: it changes the lab
def test_S17_a_deleted_pod_is_replaced_and_the_rules_follow(lab, seed):
    gone = seed["kub-node-2"]
    lab.cli("delete", "pod", name_of(gone))

    def replaced():
        ps = nginx_pods(lab)
        return ps if len(ps) == 2 and all(ready(p) for p in ps) and name_of(gone) not in map(name_of, ps) else None
    now = wait_for(replaced, timeout=30, interval=0.5, what="S17: a new my-nginx8 pod in place of the deleted one")
    new = next(p for p in now if name_of(p) != name_of(seed["kub-node-1"]))
    ips = {ip_of(p) for p in now}

    def rules_follow():
        return all(dnat_targets(sh(lab, n, "iptables -t nat -S").stdout, svc) == ips
                   for n in WORKERS for svc in ("nginx-cluster-svc", "nginx-nodeport-svc"))
    try:
        wait_for(rules_follow, timeout=30, interval=0.5, what="KUBE-SEP rules of the new endpoint")
    except AssertionError:
        raise AssertionError(f"S17: KUBE-SEP DNAT targets should be {sorted(ips)} (new pod {name_of(new)} on "
                             f"{new['spec']['nodeName']}):\n" + sh(lab, "kub-node-1", "iptables -t nat -S").stdout)
    eps = lab.cli("get", "endpoints").stdout
    assert re.search(rf"^nginx-cluster-svc\s+\S*{re.escape(ip_of(new))}:80", eps, re.M), \
        f"S17: netlab get endpoints should list the new pod {ip_of(new)}:\n{eps}"
    # the services keep answering, now also from the new pod
    got = Counter(hellos(sh(lab, "kub-node-1", f"for i in $(seq 20); do curl -s -m 2 {CLUSTER_IP} | head -n1; "
                                               "done").stdout))
    assert sum(got.values()) == 20 and set(got) == {name_of(p) for p in now}, \
        f"S17: 20 curls of {CLUSTER_IP} after the replacement should answer from {sorted(map(name_of, now))}: {dict(got)}"
    out = sh(lab, "external", f"curl -s -m 2 172.23.100.6:{NODE_PORT}").stdout
    assert len(hellos(out)) == 1, f"S17: the NodePort from outside after the replacement:\n{out}"
