"""Issue 4: pods (S1-S3, S8, S9, S18, S19) with real pause processes, veths, IPAM and curl.

One lab is shared by the module; its tests create their own pods and leave the ones they
share (web-a on kub-node-1, web-b on kub-node-2, the first pods of the lab, scheduled by
the scheduler) in place. Network checks run inside the namespaces with nsenter (what
`netlab exec` does, minus the CLI's start-up time); the CLI is tested for what it prints
and refuses. The last test downs the lab and checks nothing of it is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from netlab import names
from netlab.api import meta, pods
from netlab.cli import output
from netlab.kernel import netns, proc
from netlab.lab import pods as node_pods
from netlab.plan import podrecord
from tests.labkit import Lab, lab_doc, leftovers, new_lab_name, root_ns_snapshot, wait_for

NODE_IP = {"kub-node-0": "172.23.100.4", "kub-node-1": "172.23.100.5", "kub-node-2": "172.23.100.6"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("pods"), lab_doc(new_lab_name()))
    lab.root_before = root_ns_snapshot()
    try:
        lab.up()
        yield lab
    finally:
        lab.down("--purge", check=False)
        assert not any(leftovers(lab.name).values()), leftovers(lab.name)


# --------------------------------------------------------------------------- helpers
def sh(lab: Lab, ns: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A shell script in a network namespace of the lab (node, pod pin or underlay)."""
    return subprocess.run([*netns.ns_exec_prefix(ns), "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout)


def node_ns(lab: Lab, node: str) -> str:
    return names.node_ns(lab.name, node)


def in_container(lab: Lab, pod: str, script: str, container: str | None = None) -> str:
    """Run a script in a container's namespaces (mount namespace included), as exec does."""
    argv = node_pods.exec_argv(lab.name, pod, ["sh", "-c", script], container=container)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def record(lab: Lab, name: str) -> dict:
    return node_pods.find_record(lab.name, "default", name)[1]


def get(lab: Lab, name: str) -> dict | None:
    st = lab.store()
    try:
        return pods.get_pod(st, "default", name)
    finally:
        st.close()


def create(lab: Lab, *objs: dict, wait: bool = True) -> list[dict]:
    st = lab.store()
    try:
        made = [pods.create_pod(st, o) for o in objs]
        return [pods.wait_running(st, "default", m["metadata"]["name"], 60) for m in made] if wait else made
    finally:
        st.close()


def delete(lab: Lab, name: str) -> None:
    st = lab.store()
    try:
        gone = pods.delete_pod(st, "default", name)
    finally:
        st.close()
    assert node_pods.wait_gone(lab.name, "default", name, gone["metadata"]["uid"])


def hello(name: str, node: str | None = None, port: int = 80, **extra) -> dict:
    c = {"name": name, "image": "netlab/hello", "ports": [{"containerPort": port}], **extra}
    spec: dict = {"containers": [c]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def veths_on_docker0(lab: Lab, node: str) -> set[str]:
    out = sh(lab, node_ns(lab, node), "ip -o link show master docker0").stdout
    return {re.match(r"\d+: ([^:@]+)", ln).group(1) for ln in out.splitlines()}


def flannel_packets(lab: Lab, node: str) -> tuple[int, int]:
    s = json.loads(sh(lab, node_ns(lab, node), "ip -j -s link show flannel.1").stdout)[0]["stats64"]
    return s["tx"]["packets"], s["rx"]["packets"]


def curl(lab: Lab, ns: str, ip: str, port: int = 80) -> str:
    return sh(lab, ns, f"curl -s -m 3 http://{ip}:{port}/").stdout


def bulk_processes(lab: Lab) -> list[int]:
    """Processes of the bulk-* pods: their pause (argv) and containers (POD_NAME)."""
    out = []
    for pid in proc.lab_pids(lab.name):
        argv = proc.pid_cmdline(pid)
        if (len(argv) == 2 and argv[1].startswith("bulk-")) or \
                proc.pid_environ(pid).get("POD_NAME", "").startswith("bulk-"):
            out.append(pid)
    return out


def ipam_files(lab: Lab, node: str) -> set[str]:
    d = names.node_dir(lab.name, node) / "ipam"
    return {p.name for p in d.iterdir() if re.fullmatch(r"[\d.]+", p.name)} if d.exists() else set()


@pytest.fixture(scope="module")
def web(lab):
    """The lab's first two pods, placed by the scheduler: web-a and web-b."""
    lab.cli("run", "web-a")
    lab.cli("run", "web-b")
    return {n: get(lab, n) for n in ("web-a", "web-b")}


# --------------------------------------------------------------------------- scheduler, IPAM
def test_scheduler_spreads_over_workers_and_ipam_starts_at_range_start(lab, web):
    a, b = web["web-a"], web["web-b"]
    # never the master; two pods on two workers; host-local from the lab's rangeStart
    assert (a["spec"]["nodeName"], b["spec"]["nodeName"]) == ("kub-node-1", "kub-node-2")
    assert (a["status"]["podIP"], b["status"]["podIP"]) == ("10.1.1.4", "10.1.79.11")
    assert a["status"]["hostIP"] == "172.23.100.5" and b["status"]["hostIP"] == "172.23.100.6"
    for p in (a, b):
        assert p["status"]["phase"] == "Running" and meta.pod_ready(p)
        assert p["metadata"]["labels"] == {"run": p["metadata"]["name"]}  # like kubectl run
        assert re.fullmatch(r"[0-9a-f-]{36}", p["metadata"]["uid"])


# --------------------------------------------------------------------------- S1 / S19 / S18
def test_pause_and_app_container_share_one_netns_with_the_same_eth0(lab, web):
    rec = record(lab, "web-a")
    pause, app = rec["pause"]["pid"], rec["containers"]["web-a"]["pid"]
    pin = names.pod_ns(lab.name, "default", "web-a")
    # one network namespace (same inode) for pause, app container and the /run/netns pin
    assert netns.pid_netns_inode(pause) == netns.pid_netns_inode(app) == netns.netns_inode(pin)
    for ns in ("uts", "ipc"):
        assert os.stat(f"/proc/{pause}/ns/{ns}").st_ino == os.stat(f"/proc/{app}/ns/{ns}").st_ino
    # but not the node's or the host's
    assert netns.pid_netns_inode(pause) != netns.netns_inode(node_ns(lab, "kub-node-1"))
    # `ip netns exec <pod> ip addr` and the same command in the container: same eth0, same IP
    via_pin = sh(lab, pin, "ip -o -4 addr show eth0").stdout.split()
    via_app = in_container(lab, "web-a", "ip -o -4 addr show eth0").split()
    assert via_pin[3] == via_app[3] == "10.1.1.4/24"
    assert in_container(lab, "web-a", "hostname").strip() == "web-a"
    assert in_container(lab, "web-a", "ls /sys/class/net").split() == ["eth0", "lo"]  # its own sysfs
    assert "default via 10.1.1.1 dev eth0" in sh(lab, pin, "ip route").stdout
    assert "mtu 1400" in sh(lab, pin, "ip -o link show eth0").stdout
    # the pause is tiny: a static C program, not an interpreter
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pause}/status").read_text()).group(1))
    assert rss <= 1024, f"pause RSS {rss} kB"
    assert Path(f"/proc/{pause}/exe").resolve().name == "netlab-pause"


def test_veth_on_docker0_with_hairpin_and_flannel_mtu(lab, web):
    rec = record(lab, "web-a")
    veth = rec["veth"]
    assert re.fullmatch(r"veth[0-9a-f]{8}", veth) and veth == podrecord.host_veth(rec["uid"])
    link = sh(lab, node_ns(lab, "kub-node-1"), f"ip -d -o link show {veth}").stdout
    assert "master docker0" in link and "mtu 1400" in link and "hairpin on" in link
    assert veth in veths_on_docker0(lab, "kub-node-1")
    # the peer of the pod's eth0 is that veth
    peer = re.search(r"eth0@if(\d+)", sh(lab, names.pod_ns(lab.name, "default", "web-a"),
                                         "ip -o link show eth0").stdout).group(1)
    assert re.search(rf"^{peer}: {veth}@", sh(lab, node_ns(lab, "kub-node-1"), "ip -o link").stdout, re.M)
    # the pin works for `ip netns` on the host
    assert names.pod_ns(lab.name, "default", "web-a") in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_ps_lists_pause_and_app_containers_docker_style(lab, web):
    out = lab.cli("ps").stdout.splitlines()
    assert re.split(r"\s{2,}", out[0]) == node_pods.PS_HEADERS
    names_col = [re.split(r"\s{2,}", ln)[5] for ln in out[1:]]
    for p in web.values():
        m = p["metadata"]
        assert f"k8s_POD_{m['name']}_default_{m['uid']}_0" in names_col
        assert f"k8s_{m['name']}_{m['name']}_default_{m['uid']}_0" in names_col
    only2 = lab.cli("ps", "--node", "kub-node-2").stdout
    assert "web-b" in only2 and "web-a" not in only2


# --------------------------------------------------------------------------- S2
def test_two_containers_talk_over_localhost_and_see_the_pods_hosts_file(lab):
    host_hosts = Path("/etc/hosts").read_text()
    duo = {"metadata": {"name": "duo"}, "spec": {"nodeName": "kub-node-1", "containers": [
        {"name": "front", "image": "netlab/hello", "ports": [{"containerPort": 80}]},
        {"name": "back", "image": "netlab/hello", "ports": [{"name": "alt", "containerPort": 8080}]}]}}
    ip = create(lab, duo)[0]["status"]["podIP"]
    # each reaches the other on 127.0.0.1, on the other's port
    assert "pod address: 127.0.0.1:8080" in in_container(lab, "duo", "curl -s 127.0.0.1:8080", "front")
    assert "pod address: 127.0.0.1:80\n" in in_container(lab, "duo", "curl -s 127.0.0.1:80", "back")
    assert "127.0.0.1:" in node_pods.log_path(lab.name, "default", "duo", "back").read_text()
    for c in ("front", "back"):
        hosts = in_container(lab, "duo", "cat /etc/hosts", c)
        assert re.search(r"^127\.0\.0\.1\s+localhost$", hosts, re.M)
        assert re.search(rf"^{re.escape(ip)}\s+duo$", hosts, re.M), hosts
        assert in_container(lab, "duo", "getent ahostsv4 duo", c).split()[0] == ip
    # each container has a mount namespace of its own; the host's /etc/hosts is untouched
    rec = record(lab, "duo")
    mnts = {os.stat(f"/proc/{rec['containers'][c]['pid']}/ns/mnt").st_ino for c in ("front", "back")}
    assert len(mnts) == 2 and os.stat("/proc/self/ns/mnt").st_ino not in mnts
    assert Path("/etc/hosts").read_text() == host_hosts
    # the CLI's exec: into the named container, with its environment
    out = lab.cli("exec", "pod/duo", "-c", "back", "--", "sh", "-c", "hostname; env").stdout
    assert out.startswith("duo\n") and f"POD_IP={ip}" in out and "POD_NAME=duo" in out
    # logs of a pod with two containers needs -c, as kubectl says
    p = lab.cli("logs", "duo", check=False)
    assert p.returncode == 2 and "front back" in p.stderr


# --------------------------------------------------------------------------- S3
def test_pods_on_one_node_talk_through_docker0_not_flannel(lab, web):
    create(lab, hello("near", "kub-node-1"))
    a_ip = web["web-a"]["status"]["podIP"]
    near_ip = get(lab, "near")["status"]["podIP"]
    before = flannel_packets(lab, "kub-node-1")
    out = sh(lab, names.pod_ns(lab.name, "default", "web-a"),
             f"for i in 1 2 3 4 5; do curl -s -m 2 http://{near_ip}/; done").stdout
    assert out.count("Hello from pod near") == 5
    assert f"client address: {a_ip}:" in out  # no NAT between pods
    assert flannel_packets(lab, "kub-node-1") == before
    # `bridge link` on the node: one veth per pod of the node, all on docker0
    on_node1 = {r["veth"] for _, r in podrecord.records(lab.name, "kub-node-1") if not r.get("terminated")}
    assert on_node1 <= veths_on_docker0(lab, "kub-node-1")
    assert {record(lab, "web-a")["veth"], record(lab, "near")["veth"]} <= on_node1
    bl = sh(lab, node_ns(lab, "kub-node-1"), "bridge link").stdout
    assert all(f"{v}" in bl for v in on_node1)


# --------------------------------------------------------------------------- S8 / S9
def test_pod_to_pod_across_nodes_every_node_to_every_pod_and_not_from_outside(lab, web):
    a_ip, b_ip = web["web-a"]["status"]["podIP"], web["web-b"]["status"]["podIP"]
    before = flannel_packets(lab, "kub-node-1")
    pin_a = names.pod_ns(lab.name, "default", "web-a")
    page = curl(lab, pin_a, b_ip)
    assert "Hello from pod web-b" in page and f"client address: {a_ip}:" in page  # TCP, no SNAT
    assert sh(lab, pin_a, f"ping -c 2 -W 2 {b_ip}").returncode == 0  # ICMP
    tx, rx = flannel_packets(lab, "kub-node-1")
    assert tx > before[0] and rx > before[1], "cross-node traffic crosses flannel.1"
    for node in NODE_IP:
        for name, ip in (("web-a", a_ip), ("web-b", b_ip)):
            assert f"Hello from pod {name}" in curl(lab, node_ns(lab, node), ip), f"{node} -> {name}"
    ext = names.underlay_ns(lab.name)
    for ip in (a_ip, b_ip):
        assert sh(lab, ext, f"curl -s -m 2 http://{ip}/").returncode != 0
        assert sh(lab, ext, f"ping -c 1 -W 1 {ip}").returncode != 0


# --------------------------------------------------------------------------- restarts, logs
def test_exited_container_restarts_with_growing_backoff_and_logs(lab):
    script = 'echo "run of $POD_NAME at $POD_IP"; echo oops >&2; exit 3'
    create(lab, {"metadata": {"name": "crash"}, "spec": {"nodeName": "kub-node-2", "containers": [
        {"name": "crash", "command": ["sh", "-c", script]}]}}, wait=False)
    def restarted():
        q = get(lab, "crash")
        cs = q["status"].get("containerStatuses") or [{}]
        return cs[0].get("restartCount", 0) >= 3 and "waiting" in cs[0]["state"] and q
    p = wait_for(restarted, timeout=30, what="3 restarts")
    cs = p["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and not cs["ready"]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert p["status"]["phase"] == "Running"
    # growing back-off: the gaps between starts grow
    log = (names.log_file(lab.name, "agent-kub-node-2")).read_text()
    delays = [float(x) for x in re.findall(r"container crash exited \(code 3\) .*restart in ([\d.]+)s", log)]
    assert len(delays) >= 3 and delays[:3] == sorted(delays[:3]) and delays[2] > delays[0]
    rows = lab.cli("get", "pods", "crash").stdout.splitlines()
    assert re.split(r"\s{2,}", rows[0]) == output.POD_HEADERS
    row = rows[1].split()
    assert row[1] == "0/1" and row[2] in ("CrashLoopBackOff", "Running") and int(row[3]) >= 3
    ip = p["status"]["podIP"]
    out = lab.cli("logs", "crash").stdout
    assert out.count(f"run of crash at {ip}") == 1 and "oops" in out  # this instance only
    assert f"run of crash at {ip}" in lab.cli("logs", "crash", "-p").stdout
    delete(lab, "crash")


def test_logs_follow_ends_with_the_container(lab):
    create(lab, {"metadata": {"name": "ticker"}, "spec": {"nodeName": "kub-node-1", "containers": [
        {"name": "ticker", "command": ["sh", "-c", "for i in 1 2 3; do echo tick$i; sleep 0.3; done"]}]}},
        wait=False)
    wait_for(lambda: (get(lab, "ticker")["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running"),
             what="ticker running")
    out = lab.cli("logs", "ticker", "-f", timeout=30).stdout
    assert "tick1" in out and "tick3" in out
    delete(lab, "ticker")


# --------------------------------------------------------------------------- CLI
def test_get_pods_formats(lab, web):
    rows = lab.cli("get", "pods", "-o", "wide").stdout.splitlines()
    assert re.split(r"\s{2,}", rows[0]) == output.POD_WIDE_HEADERS
    r = {ln.split()[0]: ln.split() for ln in rows[1:]}
    assert r["web-a"][1:4] == ["1/1", "Running", "0"] and r["web-a"][5:7] == ["10.1.1.4", "kub-node-1"]
    lst = json.loads(lab.cli("get", "pods", "-o", "json").stdout)
    assert lst["kind"] == "List" and {"web-a", "web-b"} <= {i["metadata"]["name"] for i in lst["items"]}
    one = yaml.safe_load(lab.cli("get", "pod", "web-b", "-o", "yaml").stdout)
    assert one["kind"] == "Pod" and one["apiVersion"] == "v1" and one["status"]["podIP"] == "10.1.79.11"
    cs = one["status"]["containerStatuses"][0]
    assert cs["ready"] is True and "running" in cs["state"] and cs["restartCount"] == 0
    assert {c["type"]: c["status"] for c in one["status"]["conditions"]}["Ready"] == "True"
    all_ns = lab.cli("get", "po", "-A").stdout.splitlines()
    assert all_ns[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert {ln.split()[1]: ln.split()[2] for ln in all_ns[1:]}["duo"] == "2/2"  # two containers


@pytest.mark.parametrize("args, says", [
    (["run", "Bad_Name"], "NAME: 'Bad_Name' is not a DNS label"),
    (["run", "x", "--image", "nginx"], "--image: 'nginx' is not available"),
    (["run", "x", "--node", "kub-node-0"], "--node: kub-node-0 is the master"),
    (["run", "x", "--node", "kub-node-9"], "--node: node 'kub-node-9' is not part of lab"),
    (["run", "x", "-l", "nolabel"], "-l: 'nolabel' is not KEY=VALUE"),
    (["run", "x", "--port", "70000"], "--port: 70000 is not a port"),
    (["run", "web-a"], 'pods "web-a" already exists'),
    (["logs", "web-a", "-c", "nope"], "-c: container nope is not valid for pod web-a"),
    (["get", "pod", "nope"], 'pods "nope" not found'),
    (["delete", "pod", "nope"], 'pods "nope" not found'),
])
def test_bad_input_is_one_line_and_changes_nothing(lab, web, args, says):
    st = lab.store()
    try:
        before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods.list_pods(st)}
    finally:
        st.close()
    p = lab.cli(*args, check=False)
    assert p.returncode == (1 if "exists" in says or "not found" in says else 2), p.stderr
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    st = lab.store()
    try:
        assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods.list_pods(st)} == before
    finally:
        st.close()


# --------------------------------------------------------------------------- faults
def test_killed_agent_leaves_pods_running_and_the_next_one_adopts_them(lab, web):
    node = "kub-node-1"
    before = {r["uid"]: r for _, r in podrecord.records(lab.name, node) if not r.get("terminated")}
    assert before
    ips = {r["podIP"] for r in before.values()}
    veths = veths_on_docker0(lab, node)
    pid = proc.read_pid(names.pid_file(lab.name, f"agent-{node}"))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not proc.pid_alive(pid), what="agent gone")
    # like containerd's shims: the pods do not notice
    for r in before.values():
        assert proc.proc_alive(r["pause"])
    assert "Hello from pod web-a" in curl(lab, node_ns(lab, node), web["web-a"]["status"]["podIP"])
    # the node's init starts a new agent by itself (as systemd would), `up` has nothing to do
    wait_for(lambda: proc.is_lab_process(proc.read_pid(names.pid_file(lab.name, f"agent-{node}")), lab.name)
             and proc.read_pid(names.pid_file(lab.name, f"agent-{node}")) != pid, 5, what="agent restarted")
    assert "nothing to repair" in lab.up().stderr
    # the new agent works (a new pod runs) ...
    create(lab, hello("later", node))
    later = get(lab, "later")["status"]["podIP"]
    assert later not in ips  # no address given twice
    # ... and adopted the old pods: same processes, addresses and links, nothing doubled
    after = {r["uid"]: r for _, r in podrecord.records(lab.name, node) if not r.get("terminated")}
    assert set(after) == set(before) | {get(lab, "later")["metadata"]["uid"]}
    for uid, r in before.items():
        assert after[uid]["pause"] == r["pause"] and after[uid]["podIP"] == r["podIP"]
        assert {c: x["pid"] for c, x in after[uid]["containers"].items()} == \
            {c: x["pid"] for c, x in r["containers"].items()}
    assert veths_on_docker0(lab, node) == veths | {after[get(lab, "later")["metadata"]["uid"]]["veth"]}
    assert ipam_files(lab, node) == ips | {later}
    pauses = [ln for ln in lab.cli("ps", "--node", node).stdout.splitlines() if "k8s_POD_web-a_" in ln]
    assert len(pauses) == 1
    st = lab.store()
    try:
        for p in pods.list_pods(st):
            if p["spec"].get("nodeName") == node and p["metadata"]["name"] in ("web-a", "near", "duo"):
                assert meta.pod_ready(p)
                assert all(c["restartCount"] == 0 for c in p["status"]["containerStatuses"])
    finally:
        st.close()


def test_killed_pause_fails_the_pod_and_reclaims_its_resources(lab):
    create(lab, hello("victim", "kub-node-2"))
    rec = record(lab, "victim")
    app = rec["containers"]["victim"]["pid"]
    os.kill(rec["pause"]["pid"], signal.SIGKILL)
    p = wait_for(lambda: (q := get(lab, "victim"))["status"]["phase"] == "Failed" and q, timeout=20,
                 what="pod Failed")
    assert not meta.pod_ready(p) and "sandbox" in p["status"]["message"]
    pin = names.pod_ns(lab.name, "default", "victim")
    wait_for(lambda: not netns.netns_path(pin).exists(), what="pin removed")
    wait_for(lambda: rec["veth"] not in veths_on_docker0(lab, "kub-node-2"), what="veth removed")
    assert not proc.pid_alive(app)
    assert rec["podIP"] not in ipam_files(lab, "kub-node-2")
    row = lab.cli("get", "pods", "victim").stdout.splitlines()[1].split()
    assert row[1] == "0/1" and row[2] != "Running"
    # it stays Failed (a failed pod is not started again); its logs are kept until deleted
    assert get(lab, "victim")["status"]["phase"] == "Failed"
    assert not netns.netns_path(pin).exists()
    assert "listening on port 80" in node_pods.log_path(lab.name, "default", "victim").read_text()
    delete(lab, "victim")
    wait_for(lambda: not any(r["name"] == "victim" for _, r in podrecord.records(lab.name)),
             what="the failed pod's directory removed")


def test_delete_pod_removes_veth_pin_processes_and_address(lab):
    create(lab, hello("gone", "kub-node-1"))
    rec = record(lab, "gone")
    procs = [rec["pause"]["pid"], rec["containers"]["gone"]["pid"]]
    out = lab.cli("delete", "pod", "gone").stdout
    assert out.strip() == 'pod "gone" deleted'
    # `delete` returns once the node has torn it down
    assert not netns.netns_path(names.pod_ns(lab.name, "default", "gone")).exists()
    assert not any(proc.pid_alive(p) for p in procs)
    assert rec["podIP"] not in ipam_files(lab, "kub-node-1")
    wait_for(lambda: rec["veth"] not in veths_on_docker0(lab, "kub-node-1"), what="veth gone")


# --------------------------------------------------------------------------- 200 pods
def test_200_pods_on_one_node_created_and_deleted_leave_nothing(lab, record_property):
    node, n = "kub-node-2", 200
    base_veths, base_ipam = veths_on_docker0(lab, node), ipam_files(lab, node)
    base_pins = set(netns.netns_list(f"{lab.name}-pod-"))
    log = names.log_file(lab.name, f"agent-{node}")
    log_mark = log.stat().st_size
    st = lab.store()
    try:
        t0 = time.monotonic()
        for i in range(n):
            pods.create_pod(st, hello(f"bulk-{i}", node))
        wait_for(lambda: sum(meta.pod_ready(p) for p in pods.list_pods(st) if p["metadata"]["name"].startswith("bulk-")) == n,
                 timeout=180, interval=0.2, what=f"{n} pods Ready")
        created = time.monotonic() - t0
        ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods.list_pods(st)
               if p["metadata"]["name"].startswith("bulk-")}
        assert len(set(ips.values())) == n and all(ip.startswith("10.1.79.") for ip in ips.values())
        assert len(set(netns.netns_list(f"{lab.name}-pod-")) - base_pins) == n
        assert len(veths_on_docker0(lab, node) - base_veths) == n
        for i in (0, n // 2, n - 1):
            assert f"Hello from pod bulk-{i}" in curl(lab, node_ns(lab, "kub-node-1"), ips[f"bulk-{i}"])
        t1 = time.monotonic()
        for i in range(n):
            pods.delete_pod(st, "default", f"bulk-{i}")

        def clean():
            return (veths_on_docker0(lab, node) == base_veths and ipam_files(lab, node) == base_ipam
                    and set(netns.netns_list(f"{lab.name}-pod-")) == base_pins
                    and not bulk_processes(lab)
                    and not any(r["name"].startswith("bulk-") for _, r in podrecord.records(lab.name)))
        wait_for(clean, timeout=120, interval=0.2, what="200 pods gone without a trace")
        deleted = time.monotonic() - t1
    finally:
        st.close()
    kubelet = [ln for ln in log.read_text()[log_mark:].splitlines() if "netlab.kubelet" in ln]
    made = [(int(m.group(1)), float(m.group(2))) for ln in kubelet
            if (m := re.search(r"created (\d+) pods in ([\d.]+) ms", ln))]
    gone = [(int(m.group(1)), float(m.group(2))) for ln in kubelet
            if (m := re.search(r"removed (\d+) pods in ([\d.]+) ms", ln))]
    per_create = sum(ms for _, ms in made) / sum(k for k, _ in made)
    per_delete = sum(ms for _, ms in gone) / sum(k for k, _ in gone)
    record_property("create_end_to_end_s", round(created, 2))
    record_property("delete_end_to_end_s", round(deleted, 2))
    record_property("kubelet_create_ms_per_pod", round(per_create, 2))
    record_property("kubelet_delete_ms_per_pod", round(per_delete, 2))
    print(f"\n{n} pods on {node}: all Ready {created:.1f}s after the first create "
          f"(kubelet {per_create:.2f} ms/pod), all gone {deleted:.1f}s after the first delete "
          f"(kubelet {per_delete:.2f} ms/pod)")


def test_root_namespace_untouched(lab):
    assert root_ns_snapshot() == lab.root_before
