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


_PODS: dict[str, list] = {}


def _pods(lab: Lab) -> list[dict]:
    """my-nginx8's pods (read once: the tests below check that they stay the same)."""
    if lab.name not in _PODS:
        _PODS[lab.name] = [p for p in lab.get_json("pods")["items"]
                           if p["metadata"]["name"].startswith("my-nginx8-")]
    return _PODS[lab.name]


def _sections(out: str) -> dict[str, str]:
    """Output of several commands run in one `netlab exec`, each after a line '== NAME'."""
    parts = re.split(r"^== (\S+)\n", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_pod_interfaces_have_no_ipv6_and_dockers_mac(lab):
    pods = _pods(lab)
    script = "".join(f"echo == {p['metadata']['name']}; ip netns exec "
                     f"{names.pod_ns(lab.name, 'default', p['metadata']['name'])} ip addr; " for p in pods)
    out = _sections(lab.sh("kub-node-1", script + "echo == node; ip addr"))
    for pod in pods:
        ip, text = pod["status"]["podIP"], out[pod["metadata"]["name"]]
        assert "inet6" not in text, text
        mac = "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        eth0 = re.search(r"eth0@\S+: .*? mtu (\d+) .*\n\s+link/ether (\S+)", text)
        assert eth0 and eth0.group(2) == mac and eth0.group(1) == "1400", text
        assert f"inet {ip}/24" in text
    # the node's own links: ens3, docker0, flannel.1 carry no IPv6 either
    for dev in ("ens3", "docker0", "flannel.1"):
        assert f": {dev}:" in out["node"] or f": {dev}@" in out["node"], out["node"]
    assert "inet6" not in out["node"], out["node"]


def test_each_node_has_its_own_hostname_and_process_table(lab):
    out = _sections(lab.sh("kub-node-1", "echo == hostname; hostname; "
                           # an interactive shell's prompt (\u@\h as Debian's bashrc has it)
                           "echo == prompt; bash --norc -ic 'PS1=\"\\u@\\h:\\w\\$ \"; echo \"${PS1@P}\"'; "
                           "echo == ps; ps -eo pid,comm,args; echo == threads; ps -T -o comm= -p 2"))
    assert out["hostname"].strip() == "kub-node-1"
    assert out["prompt"].strip().startswith("root@kub-node-1:"), out["prompt"]
    ps = out["ps"].splitlines()[1:]
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
    # init, kubelet, sh, ps; per pod its pause and nginx's master and worker
    assert len(rows) <= 4 + 3 * len(mine), text
    # flannel and kube-proxy are threads of the kubelet's agent, named so
    assert {"kubelet", "flanneld", "kube-proxy"} <= set(out["threads"].split()), out["threads"]
    master = lab.sh("kub-node-0", "hostname; ps -eo comm=").split()
    assert master[0] == "kub-node-0"
    assert {"nodeinit", "etcd", "kube-apiserver", "kube-controller"} <= set(master), master  # comm: 15 bytes


def test_docker_ps_and_inspect_inside_a_node(lab):
    node = "kub-node-2"
    mine = [p for p in _pods(lab) if p["spec"]["nodeName"] == node]
    others = [p for p in _pods(lab) if p["spec"]["nodeName"] != node]
    out = _sections(lab.sh(node, "echo == ps; docker ps; echo == full; docker ps -a --no-trunc --format "
                           "'{{.ID}} {{.Names}}'; echo == inspect; docker inspect $(docker ps -q); "
                           "echo == comm; for p in $(docker inspect -f '{{.State.Pid}}' $(docker ps -q)); "
                           "do cat /proc/$p/comm; done; echo == run; docker run nginx 2>&1; echo rc=$?"))
    ps = out["ps"].splitlines()
    assert re.split(r"\s{2,}", ps[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                          "PORTS", "NAMES"], ps[0]
    want = set()
    for p in mine:
        m = p["metadata"]
        want |= {f"k8s_POD_{m['name']}_default_{m['uid']}_0", f"k8s_my-nginx8_{m['name']}_default_{m['uid']}_0"}
    assert {l.split()[-1] for l in ps[1:]} == want, ps
    assert not any(o["metadata"]["name"] in out["ps"] for o in others)
    assert all(re.fullmatch(r"[0-9a-f]{12}", l.split()[0]) for l in ps[1:])
    full = out["full"].split()
    assert all(len(i) == 64 for i in full[0::2]) and set(full[1::2]) == want
    info = {o["Name"]: o for o in __import__("json").loads(out["inspect"])}
    assert set(info) == {"/" + n for n in want} and all(o["State"]["Running"] for o in info.values())
    # State.Pid in the node's own numbering, as docker inspect shows it on the node
    assert sorted(out["comm"].split()) == ["netlab-pause", "nginx"], out["comm"]
    run = out["run"].splitlines()
    assert run[-1] == "rc=1" and len(run) == 2 and "not available in the lab" in run[0], run


def test_killed_node_daemons_come_back_and_the_data_plane_keeps_answering(lab):
    import json
    import os
    import signal
    import subprocess
    import time

    from netlab.kernel import proc
    from netlab.store import StoreError
    from tests.labkit import PY, wait_for

    def fresh():
        return {p["metadata"]["uid"]: p["status"]["podIP"] for p in lab.get_json("pods")["items"]
                if p["metadata"]["name"].startswith("my-nginx8-")}

    before = fresh()
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
        first = loop.stdout.readline().strip()  # the loop answers before anything is killed
        assert first == "200", first
        for daemon in ("agent-kub-node-1", "agent-kub-node-2", "etcd", "apiserver", "agent-kub-node-0"):
            f = pids / f"{daemon}.pid"
            old = proc.read_pid(f)
            assert proc.is_lab_process(old, lab.name), daemon
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: proc.read_pid(f) != old and proc.pid_alive(proc.read_pid(f)), 2.0,
                     interval=0.02, what=f"{daemon} to be restarted by its node init")
            came_back[daemon] = round(time.monotonic() - t0, 2)
        # the new agents report (each node's lease names the new process)
        st = lab.store()
        try:
            def reported():
                try:  # etcd's new process may not serve yet when its pid is already there
                    items = st.list("/registry/leases/kube-node-lease/")
                except StoreError:
                    return False
                got = {i.key.rsplit("/", 1)[1]: i.value["spec"]["agentPid"] for i in items}
                return all(got.get(n) == proc.read_pid(pids / f"agent-{n}.pid")
                           for n in ("kub-node-0", "kub-node-1", "kub-node-2"))
            wait_for(reported, 20, interval=0.1, what="the new agents' heartbeats")
        finally:
            st.close()
    finally:
        time.sleep(1.0)
        stop.touch()
        out, _ = loop.communicate(timeout=20)
    codes = [first, *out.split()]
    assert len(codes) > 20 and set(codes) == {"200"}, (came_back, codes)
    # the pods were adopted, not re-created: same pods, same addresses, no duplicates
    after = fresh()
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
    out = _sections(lab.sh(node, "echo == docker; docker ps --format '{{.Image}} {{.Command}}'; "
                                 "echo == ps; ps -eo args"))
    assert "sammyliu8/nginx \"nginx -g 'daemon of…\"" in out["docker"], out["docker"]
    assert "nginx: master process nginx -g daemon off;" in out["ps"]
    # the access goes to the container's log (kubectl logs), as docker's nginx image has it
    logs = lab.cli("logs", pod["metadata"]["name"]).stdout
    assert '"GET / HTTP/1.1" 200' in logs, logs


def test_unknown_image_is_refused_naming_the_field(lab):
    p = lab.cli("run", "bad", "--image", "redis", check=False)
    assert p.returncode == 2 and "image" in p.stderr and "redis" in p.stderr, p.stderr
    st = lab.store()
    try:  # nothing was created
        assert st.get("/registry/pods/default/bad") is None
    finally:
        st.close()
