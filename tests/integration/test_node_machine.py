"""Nodes that look and behave like the seed's machines (issue 17; issue 16's first bullet).

One lab with the default workloads (my-nginx8 x2 behind nginx-cluster-svc), shared by every
test here; each test runs the article's commands from inside a node, as a learner would.
"""

from __future__ import annotations

import re

import pytest

from netlab import names
from tests.labkit import Lab, lab_doc, leftovers, new_lab_name


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # the default lab as it is: my-nginx8 runs the seed's sammyliu8/nginx (Debian's nginx)
    lab = Lab(tmp_path_factory.mktemp("lab"), lab_doc(new_lab_name(), workloads=True, hello=False))
    lab.up()
    yield lab
    lab.down("--purge", check=False)
    assert not any(leftovers(lab.name).values()), leftovers(lab.name)


def _pods(lab: Lab) -> list[dict]:
    return [p for p in lab.get_json("pods")["items"] if p["metadata"]["name"].startswith("my-nginx8-")]


def test_pod_interfaces_have_no_ipv6_and_dockers_mac(lab):
    for pod in _pods(lab):
        ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]
        ns = names.pod_ns(lab.name, "default", pod["metadata"]["name"])
        out = lab.exec(node, "ip", "netns", "exec", ns, "ip", "addr").stdout
        assert "inet6" not in out, out
        mac = "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        eth0 = re.search(r"eth0@\S+: .*? mtu (\d+) .*\n\s+link/ether (\S+)", out)
        assert eth0 and eth0.group(2) == mac and eth0.group(1) == "1400", out
        assert f"inet {ip}/24" in out
    # the node's own links: ens3, docker0, flannel.1 carry no IPv6 either
    out = lab.exec("kub-node-1", "ip", "addr").stdout
    for dev in ("ens3", "docker0", "flannel.1"):
        assert f": {dev}" in out or f": {dev}@" in out, out
    assert "inet6" not in out, out


def test_each_node_has_its_own_hostname_and_process_table(lab):
    assert lab.exec("kub-node-1", "hostname").stdout.strip() == "kub-node-1"
    assert lab.exec("kub-node-0", "hostname").stdout.strip() == "kub-node-0"
    # an interactive shell's prompt: bash -i shows root@kub-node-1
    p = lab.exec("kub-node-1", "bash", "-ic", "echo ${USER:-root}@$(hostname)")
    assert "root@kub-node-1" in p.stdout
    ps = lab.exec("kub-node-1", "ps", "-eo", "pid,comm,args").stdout.splitlines()[1:]
    rows = [l.split(None, 2) for l in ps]
    assert rows[0][:2] == ["1", "nodeinit"], ps
    comms = [r[1] for r in rows]
    assert "kubelet" in comms
    assert "etcd" not in comms and "kube-apiserver" not in comms, ps  # those are the master's
    # this node's pods only: a pause and an app per pod bound here, nothing of other nodes
    mine = [p["metadata"]["name"] for p in _pods(lab) if p["spec"]["nodeName"] == "kub-node-1"]
    others = [p["metadata"]["name"] for p in _pods(lab) if p["spec"]["nodeName"] != "kub-node-1"]
    text = "\n".join(ps)
    assert all(f"netlab-pause {m}" in text for m in mine), text
    assert not any(o in text for o in others), text
    assert len(rows) <= 3 + 3 * len(mine), text  # init, kubelet, ps; per pod pause, nginx master+worker
    # flannel and kube-proxy are threads of the kubelet's agent, named so
    threads = lab.exec("kub-node-1", "ps", "-T", "-o", "comm=", "-p", "2").stdout.split()
    assert {"kubelet", "flanneld", "kube-proxy"} <= set(threads), threads
    master = lab.exec("kub-node-0", "ps", "-eo", "comm=").stdout.split()
    assert {"nodeinit", "etcd", "kube-apiserver", "kube-controller"} <= set(master), master  # comm: 15 bytes


def test_docker_ps_and_inspect_inside_a_node(lab):
    node = "kub-node-2"
    mine = [p for p in _pods(lab) if p["spec"]["nodeName"] == node]
    others = [p for p in _pods(lab) if p["spec"]["nodeName"] != node]
    out = lab.exec(node, "docker", "ps").stdout.splitlines()
    assert re.split(r"\s{2,}", out[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                           "PORTS", "NAMES"], out[0]
    names_ = [l.split()[-1] for l in out[1:]]
    want = set()
    for p in mine:
        m = p["metadata"]
        want |= {f"k8s_POD_{m['name']}_default_{m['uid']}_0", f"k8s_my-nginx8_{m['name']}_default_{m['uid']}_0"}
    assert set(names_) == want, out
    assert not any(o["metadata"]["name"] in "\n".join(out) for o in others)
    assert all(re.fullmatch(r"[0-9a-f]{12}", l.split()[0]) for l in out[1:])
    full = lab.exec(node, "docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.split()
    assert all(len(i) == 64 for i in full[0::2]) and set(full[1::2]) == want
    pause = next(n for n in want if n.startswith("k8s_POD_"))
    info = __import__("json").loads(lab.exec(node, "docker", "inspect", pause).stdout)
    assert info[0]["Name"] == "/" + pause and info[0]["State"]["Running"] is True
    pid = info[0]["State"]["Pid"]  # the node's own pid numbering, as docker inspect shows it
    assert "netlab-pause" in lab.exec(node, "cat", f"/proc/{pid}/cmdline").stdout
    p = lab.exec(node, "docker", "run", "nginx", check=False)
    assert p.returncode == 1 and "not available in the lab" in p.stderr and len(p.stderr.splitlines()) == 1


def test_killed_node_daemons_come_back_and_the_data_plane_keeps_answering(lab):
    import json
    import os
    import signal
    import subprocess
    import time

    from netlab.kernel import proc
    from tests.labkit import PY, wait_for

    before = {p["metadata"]["uid"]: p["status"]["podIP"] for p in _pods(lab)}
    # a curl loop through the ClusterIP from the outside host's view of a node, meanwhile
    stop = names.run_dir(lab.name) / "curl-loop.stop"  # the node sees the host's files
    loop = subprocess.Popen(
        [PY, "-m", "netlab", "exec", "--lab", lab.name, "kub-node-1", "--", "sh", "-c",
         f"while [ ! -e {stop} ]; do curl -s -m 2 -o /dev/null -w '%{{http_code}}\\n' "
         "192.1.47.211 || echo fail; sleep 0.05; done"],
        stdout=subprocess.PIPE, text=True)
    pids = names.run_dir(lab.name) / "pids"
    came_back = {}
    try:
        time.sleep(1.0)
        for daemon in ("agent-kub-node-1", "agent-kub-node-2", "etcd", "apiserver", "agent-kub-node-0"):
            f = pids / f"{daemon}.pid"
            old = proc.read_pid(f)
            assert proc.is_lab_process(old, lab.name), daemon
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: proc.read_pid(f) != old and proc.pid_alive(proc.read_pid(f)), 2.0,
                     interval=0.02, what=f"{daemon} to be restarted by its node init")
            came_back[daemon] = round(time.monotonic() - t0, 2)
        # the agents report again (their node lease names the new process)
        wait_for(lambda: json.loads(lab.cli("status", "-o", "json").stdout)["status"]["nodes"][1]["ready"],
                 20, what="nodes ready")
    finally:
        time.sleep(1.0)
        stop.touch()
        out, _ = loop.communicate(timeout=20)
    codes = out.split()
    assert len(codes) > 20 and set(codes) == {"200"}, (came_back, codes)
    # the pods were adopted, not re-created: same pods, same addresses, no duplicates
    after = {p["metadata"]["uid"]: p["status"]["podIP"] for p in _pods(lab)}
    assert after == before and len(set(after.values())) == len(after)
    leases = lab.etcdctl("get", "--prefix", "/coreos.com/network/subnets", "--print-value-only")
    ips = [json.loads(l)["PublicIP"] for l in leases.splitlines() if l.strip()]
    assert len(ips) == len(set(ips)), leases


def test_curl_pod_ip_prints_the_nginx_welcome_page(lab):
    pod = next(p for p in _pods(lab) if p["status"]["podIP"] == "10.1.79.11")
    out = lab.exec("kub-node-0", "curl", "-s", "10.1.79.11:80").stdout
    assert "<h1>Welcome to nginx!</h1>" in out and "Thank you for using nginx." in out, out
    # nginx as the seed's docker ps shows it, with its own pid file and temp paths
    node = pod["spec"]["nodeName"]
    ps = lab.exec(node, "docker", "ps", "--format", "{{.Image}} {{.Command}}").stdout
    assert "sammyliu8/nginx \"nginx -g 'daemon of…\"" in ps, ps
    assert "nginx: master process nginx -g daemon off;" in lab.exec(node, "ps", "-eo", "args").stdout
    # the access goes to the container's log (kubectl logs), as docker's nginx image has it
    logs = lab.cli("logs", pod["metadata"]["name"]).stdout
    assert '"GET / HTTP/1.1" 200' in logs, logs


def test_unknown_image_is_refused_naming_the_field(lab):
    p = lab.cli("run", "bad", "--image", "redis", check=False)
    assert p.returncode == 2 and "image" in p.stderr and "redis" in p.stderr, p.stderr
    assert "bad" not in lab.cli("get", "pods").stdout
