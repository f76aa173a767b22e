"""Foundation (issue 2): up, down, repair, lock, two labs, bad lab files, root namespace untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import yaml

from netlab import names
from netlab.kernel import netns, proc
from netlab.lab import lock
from tests.labkit import PY, Lab, cli, lab_doc, leftovers, new_lab_name, root_ns_snapshot, wait_for


def test_up_builds_node_network_and_etcd(module_lab):
    lab = module_lab
    nodes = {"kub-node-0": "172.23.100.4", "kub-node-1": "172.23.100.5", "kub-node-2": "172.23.100.6"}
    # every node reaches the others and the router over ens3
    for src in nodes:
        for dst_ip in [*nodes.values(), "172.23.100.1"]:
            p = lab.exec(src, "ping", "-c1", "-W2", dst_ip, check=False)
            assert p.returncode == 0, f"{src} -> {dst_ip}: {p.stdout}{p.stderr}"
    route = lab.exec("kub-node-1", "route", "-n").stdout
    assert any(l.split()[:2] == ["0.0.0.0", "172.23.100.1"] and l.endswith("ens3") for l in route.splitlines()), route
    link = lab.exec("kub-node-1", "ip", "-o", "link", "show", "ens3").stdout
    assert "mtu 1450" in link
    # node sysctls are set inside the node, not on the host
    assert lab.exec("kub-node-1", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert lab.exec("kub-node-1", "sysctl", "-n", "net.bridge.bridge-nf-call-iptables").stdout.strip() == "1"
    # real etcdctl from a node over the node network, and from the CLI through the socket
    out = lab.sh("kub-node-2", "ETCDCTL_API=3 etcdctl --endpoints http://172.23.100.4:2379 get /coreos.com/network/config --print-value-only")
    assert json.loads(out) == {"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}
    assert "/registry/minions/kub-node-1" in lab.etcdctl("get", "--prefix", "/registry/minions", "--keys-only")
    # etcd runs inside the master's namespace
    epid = proc.read_pid(names.pid_file(lab.name, "etcd"))
    assert netns.pid_netns_inode(epid) == netns.netns_inode(names.node_ns(lab.name, "kub-node-0"))
    assert names.etcd_data_dir(lab.name).is_dir()
    # exec puts iptables-legacy first on PATH
    assert "legacy" in lab.exec("kub-node-1", "iptables", "--version").stdout


def test_status_and_exec_exit_code(module_lab):
    lab = module_lab
    st = json.loads(lab.cli("status", "-o", "json").stdout)
    assert st["status"]["etcd"]["healthy"] is True
    assert [n["ready"] for n in st["status"]["nodes"]] == [True, True, True]
    assert lab.exec("kub-node-1", "sh", "-c", "exit 7", check=False).returncode == 7
    assert lab.exec("external", "ip", "-o", "addr", "show", "br0").stdout.count("172.23.100.1/24") == 1
    table = lab.cli("status").stdout
    assert "kub-node-2" in table and "Ready" in table


def test_up_twice_is_safe_and_repairs(make_lab):
    lab = make_lab()
    lab.up()
    p = lab.up()
    assert "nothing to repair" in p.stderr
    agent = proc.read_pid(names.pid_file(lab.name, "agent-kub-node-1"))
    etcd = proc.read_pid(names.pid_file(lab.name, "etcd"))
    os.kill(agent, signal.SIGKILL)
    os.kill(etcd, signal.SIGKILL)
    netns.netns_delete(names.node_ns(lab.name, "kub-node-2"))
    wait_for(lambda: not proc.pid_alive(agent) and not proc.pid_alive(etcd), 5, what="processes to die")
    p = lab.up()
    assert "repaired" in p.stderr
    for what in ("namespace " + names.node_ns(lab.name, "kub-node-2"), "etcd", "kub-node-1", "agent started"):
        assert what in p.stderr, p.stderr
    st = json.loads(lab.cli("status", "-o", "json").stdout)
    assert st["status"]["etcd"]["healthy"]
    assert all(n["agentRunning"] for n in st["status"]["nodes"])
    assert lab.exec("kub-node-2", "ping", "-c1", "-W2", "172.23.100.4", check=False).returncode == 0
    # etcd kept its data across the restart
    assert "/coreos.com/network/config" in lab.etcdctl("get", "--prefix", "/coreos.com", "--keys-only")


def test_down_leaves_root_namespace_as_found(make_lab):
    before = root_ns_snapshot()
    lab = make_lab()
    lab.up()
    p = lab.down("--purge")
    assert "removed" in p.stdout
    assert leftovers(lab.name) == {"namespaces": [], "processes": [], "run_dir": False, "mounts": []}
    assert not names.state_dir(lab.name).exists()
    after = root_ns_snapshot()
    for key in before:
        assert after[key] == before[key], f"root namespace {key} changed"
    # down of a lab that is not up says so, exit 0
    p = lab.down()
    assert p.returncode == 0 and "not up" in p.stdout


def test_down_keeps_etcd_data_without_purge(make_lab):
    lab = make_lab()
    lab.up()
    lab.cli("etcdctl", "put", "/netlab-test/marker", "kept")
    lab.down()
    assert names.etcd_data_dir(lab.name).is_dir()
    lab.up()
    assert "kept" in lab.etcdctl("get", "/netlab-test/marker")


@pytest.mark.parametrize("delay", [0.05, 0.4, 1.0, 2.0])
def test_kill_9_of_up_then_down_leaves_nothing(make_lab, delay):
    lab = make_lab()
    p = subprocess.Popen([PY, "-m", "netlab", "up", "-f", str(lab.file)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = lab.down("--purge")
    assert r.returncode == 0
    assert leftovers(lab.name) == {"namespaces": [], "processes": [], "run_dir": False, "mounts": []}


def test_down_without_run_dir_and_etcd_dead(make_lab):
    lab = make_lab()
    lab.up()
    os.kill(proc.read_pid(names.pid_file(lab.name, "etcd")), signal.SIGKILL)
    import shutil

    # The agents are still running and may be writing into the run directory: remove it
    # until it stays gone, as a crash or an over-eager cleanup would leave things.
    for _ in range(20):
        shutil.rmtree(names.run_dir(lab.name), ignore_errors=True)
        if not names.run_dir(lab.name).exists():
            break
        time.sleep(0.05)
    assert not (names.run_dir(lab.name) / "lab.yaml").exists()
    lab.down("--purge")
    assert leftovers(lab.name) == {"namespaces": [], "processes": [], "run_dir": False, "mounts": []}


def test_two_labs_side_by_side(make_lab):
    a, b = make_lab(), make_lab()
    a.up()
    b.up()
    for lab in (a, b):
        assert lab.exec("kub-node-1", "ping", "-c1", "-W2", "172.23.100.6", check=False).returncode == 0
    a.down()
    # b is untouched by a's down
    assert b.exec("kub-node-1", "ping", "-c1", "-W2", "172.23.100.6", check=False).returncode == 0
    assert json.loads(b.cli("status", "-o", "json").stdout)["status"]["etcd"]["healthy"]


def test_second_mutating_command_waits_then_says_busy(make_lab):
    lab = make_lab()
    with lock.lab_lock(lab.name):
        t0 = time.monotonic()
        p = cli("up", "-f", str(lab.file), check=False, env={"NETLAB_LOCK_WAIT": "1"})
        waited = time.monotonic() - t0
    assert p.returncode == 1
    assert "lab busy" in p.stderr
    assert waited >= 1.0
    assert not netns.netns_list(names.ns_prefix(lab.name))


BAD_LABS = [
    ("nodes[2].ip: '172.23.100.300' is not an IPv4 address", lambda d: d["nodes"][2].update(ip="172.23.100.300")),
    ("name: 'Bad-Name'", lambda d: d.update(name="Bad-Name")),
    ("nodes[1].ip: 172.23.100.4 is already used by nodes[0]", lambda d: d["nodes"][1].update(ip="172.23.100.4")),
    ("nodes[0].ip: 10.9.9.9 is not a host address", lambda d: d["nodes"][0].update(ip="10.9.9.9")),
    ("nodes[1].ip: 172.23.100.1 is the gateway", lambda d: d["nodes"][1].update(ip="172.23.100.1")),
    ("nodes[2].name: 'kub-node-1' is already used", lambda d: d["nodes"][2].update(name="kub-node-1")),
    ("nodes[0].role: 'boss' is not allowed", lambda d: d["nodes"][0].update(role="boss")),
    ("nodes: exactly one node must have role master", lambda d: d["nodes"][0].update(role="worker")),
    ("nodes[0].color: unknown field", lambda d: d["nodes"][0].update(color="red")),
    ("nodeNetwork.mtu: 100:", lambda d: d["nodeNetwork"].update(mtu=100)),
    ("nodeNetwork.cidr: 'banana' is not an IPv4 network", lambda d: d["nodeNetwork"].update(cidr="banana")),
    ("nodeNetwork: gateway 10.0.0.1 is not inside cidr", lambda d: d["nodeNetwork"].update(gateway="10.0.0.1")),
    ("etcd.node: 'kub-node-9' is not a node", lambda d: d["etcd"].update(node="kub-node-9")),
    ("flannel.Network: '10.1.0.0/33'", lambda d: d["flannel"].update(Network="10.1.0.0/33")),
    ("flannel.reservations.kub-node-1: 10.2.1.0/24 is not a /24 inside", lambda d: d["flannel"]["reservations"].update({"kub-node-1": "10.2.1.0/24"})),
    ("flannel.reservations.kub-node-7: 'kub-node-7' is not a node", lambda d: d["flannel"]["reservations"].update({"kub-node-7": "10.1.7.0/24"})),
    ("services.clusterIPRange: 10.1.0.0/16 overlaps flannel.Network", lambda d: d["services"].update(clusterIPRange="10.1.0.0/16")),
    ("services.nodePortRange: '40000-30000'", lambda d: d["services"].update(nodePortRange="40000-30000")),
    ("flannel.leaseTTL: 'soon' is not a duration", lambda d: d["flannel"].update(leaseTTL="soon")),
    ("nodes[1].podRange.rangeStart: 10.1.2.4 is not inside the node's reserved subnet", lambda d: d["nodes"][1].update(podRange={"rangeStart": "10.1.2.4"})),
    ("workloads: [0]: apiVersion/kind v1/ConfigMap is not supported", lambda d: d.update(workloads=[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])),
]


def test_malformed_lab_files_exit_2_and_create_nothing(tmp_path):
    assert len(BAD_LABS) >= 20
    for i, (expected, mutate) in enumerate(BAD_LABS):
        doc = lab_doc(new_lab_name())
        mutate(doc)
        f = tmp_path / f"bad{i}.yaml"
        f.write_text(yaml.safe_dump(doc))
        p = cli("up", "-f", str(f), check=False)
        assert p.returncode == 2, (expected, p.stdout, p.stderr)
        assert expected in p.stderr, (expected, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        name = doc["name"] if isinstance(doc["name"], str) else ""
        assert not netns.netns_list(f"{name}-"), expected
        assert not names.run_dir(name).exists()
    # not YAML at all
    f = tmp_path / "notyaml.yaml"
    f.write_text("nodes: [\n")
    p = cli("up", "-f", str(f), check=False)
    assert p.returncode == 2 and "not valid YAML" in p.stderr


def test_doctor_passes_here():
    p = cli("doctor")
    assert "checks passed" in p.stdout and "FAIL" not in p.stdout
