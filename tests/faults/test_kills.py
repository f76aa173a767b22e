"""Faults on one real lab (issue 18): bad input against the live lab and its API server,
a runaway deployment, pods reaching for etcd, kill -9 of every daemon under a curl loop,
kill -9 of `up` at two points, then `up` (repaired) and `down` (nothing left).

One lab for the module (the tests run in order; the last ones break it on purpose).
Workers take 3 pods each (maxPods), so capacity is reached with a handful of pods.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from netlab import names, store
from netlab.kernel import netns, proc
from tests.labkit import PY, Lab, lab_doc, leftovers, new_lab_name, wait_for

MAX_PODS = 3
NODEPORT = "http://172.23.100.5:31295/"  # the default lab's nginx-nodeport-svc
MSG_FULL = ("0/3 nodes are available: 1 node(s) had untolerated taint "
            "{node-role.kubernetes.io/master: }, 2 Too many pods.")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    doc = lab_doc(new_lab_name(), workloads=True)
    for n in doc["nodes"][1:]:
        n["maxPods"] = MAX_PODS
    lab = Lab(tmp_path_factory.mktemp("faults"), doc)
    lab.up()
    yield lab
    lab.down("--purge", check=False)
    assert not any(leftovers(lab.name).values()), leftovers(lab.name)


def kubectl(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    path = names.run_dir(lab.name) / "test-kubeconfig"
    if not path.exists():
        path.write_text(lab.cli("kubeconfig").stdout)
    p = subprocess.run(["kubectl", "--kubeconfig", str(path), *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {p.stderr}")
    return p


def api(lab: Lab, method: str, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    state = names.state_dir(lab.name)
    port = (state / "apiserver.port").read_text().strip()
    token = (state / "pki" / "admin.token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    ctx.check_hostname = False
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def one_line(p: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code and len(lines) == 1 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    return lines[0]


def pods(lab: Lab, prefix: str = "") -> list[dict]:
    """The pod objects as etcd holds them (read in-process: polling stays cheap)."""
    st = lab.store()
    try:
        return [i.value for i in st.list(store.PODS) if i.value["metadata"]["name"].startswith(prefix)]
    finally:
        st.close()


POD_ON_MASTER = """apiVersion: v1
kind: Pod
metadata: {name: onmaster}
spec:
  nodeName: kub-node-0
  containers: [{name: c, image: netlab/hello}]
"""
BIG = """apiVersion: apps/v1
kind: Deployment
metadata: {name: big}
spec:
  replicas: %d
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec: {containers: [{name: c, image: netlab/hello}]}
"""


def test_bad_input_on_the_live_lab_is_refused_and_creates_nothing(lab, tmp_path):
    before = sorted(p["metadata"]["name"] for p in pods(lab))
    f = tmp_path / "m.yaml"
    f.write_text(POD_ON_MASTER)
    line = one_line(lab.cli("apply", "-f", str(f), check=False))
    assert f"{f}: document 1: pod onmaster: spec.nodeName: 'kub-node-0' is the master of lab {lab.name}" in line
    f.write_text(BIG % 100000)
    line = one_line(lab.cli("apply", "-f", str(f), check=False))
    assert "deployment big: spec.replicas: 100000 is more than netlab allows (60: at most 10000" in line
    # The API server: 422 Status objects for the same cases
    code, st = api(lab, "POST", "/api/v1/namespaces/default/pods", json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "onmaster"},
        "spec": {"nodeName": "kub-node-0", "containers": [{"name": "c", "image": "netlab/hello"}]}}).encode())
    assert (code, st["kind"], st["reason"]) == (422, "Status", "Invalid")
    assert "spec.nodeName" in st["message"] and "is the master" in st["message"]
    code, st = api(lab, "POST", "/api/v1/namespaces/default/pods",
                   b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "name": "b"}, '
                   b'"spec": {"containers": [{"name": "c", "image": "netlab/hello"}]}}')
    assert (code, st["reason"]) == (422, "Invalid") and "duplicate key name" in st["message"]
    code, st = api(lab, "POST", "/api/v1/namespaces/default/pods",
                   POST_YAML_DUP.encode(), "application/yaml")
    assert code == 422 and "duplicate key name" in st["message"]
    code, st = api(lab, "POST", "/apis/apps/v1/namespaces/default/deployments",
                   json.dumps(yaml.safe_load(BIG % 100000)).encode())
    assert code == 422 and st["details"]["causes"][0]["field"] == "spec.replicas"
    code, st = api(lab, "POST", "/api/v1/namespaces/default/pods", b"\xff\xfe{}")
    assert code == 400 and "not UTF-8" in st["message"]
    p = kubectl(lab, "scale", "deployment", "my-nginx8", "--replicas=100000", check=False)
    assert p.returncode == 1 and 'The Scale "my-nginx8" is invalid: spec.replicas' in p.stderr
    # nothing was created or changed
    assert sorted(p["metadata"]["name"] for p in pods(lab)) == before
    st = lab.store()
    deps = [i.value for i in st.list(store.DEPLOYMENTS)]
    st.close()
    assert [(d["metadata"]["name"], d["spec"]["replicas"]) for d in deps] == [("my-nginx8", 2)]


POST_YAML_DUP = """apiVersion: v1
kind: Pod
metadata:
  name: a
  name: b
spec: {containers: [{name: c, image: netlab/hello}]}
"""


def test_a_deployment_beyond_capacity_pends_with_a_reason_and_goes_with_its_deployment(lab, tmp_path):
    node = kubectl(lab, "get", "node", "kub-node-1", "-o", "json").stdout
    assert json.loads(node)["status"]["capacity"]["pods"] == str(MAX_PODS)
    f = tmp_path / "big.yaml"
    f.write_text(BIG % 20)
    lab.cli("apply", "-f", str(f), "--no-wait")
    free = 2 * MAX_PODS - 2  # my-nginx8 holds two places

    def settled():
        big = pods(lab, "big-")
        bound = [p for p in big if p["spec"].get("nodeName")]
        waiting = [p for p in big if not p["spec"].get("nodeName") and any(
            c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", []))]
        return len(big) == 20 and len(bound) == free and len(waiting) == 20 - free and waiting
    waiting = wait_for(settled, timeout=30, what="20 big pods: 4 bound, 16 Unschedulable")
    cond = next(c for c in waiting[0]["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", MSG_FULL)
    rows = kubectl(lab, "get", "pods", "-l", "app=big", "--no-headers").stdout.splitlines()
    assert sum(r.split()[2] == "Pending" for r in rows) == 20 - free
    desc = kubectl(lab, "describe", "pod", waiting[0]["metadata"]["name"]).stdout
    assert "FailedScheduling" in desc and MSG_FULL in desc
    # Deleting the deployment takes its pods (ownerReferences) and nothing more is created.
    kubectl(lab, "delete", "deployment", "big", "--wait=false")
    wait_for(lambda: not pods(lab, "big-"), timeout=30, what="the big pods to go")
    time.sleep(1.0)  # a controller still creating would show here
    assert pods(lab, "big-") == []
    assert len(pods(lab, "my-nginx8-")) == 2


def test_pods_cannot_reach_etcd_but_nodes_and_the_api_server_can(lab):
    rules = lab.exec("kub-node-1", "iptables", "-S", "NETLAB-ETCD").stdout
    assert ("-A NETLAB-ETCD -s 10.1.0.0/16 -d 172.23.100.4/32 -p tcp -m multiport --dports 2379,2380"
            in rules and "-j REJECT --reject-with tcp-reset" in rules)
    assert "-A FORWARD -j NETLAB-ETCD" in lab.exec("kub-node-1", "iptables", "-S", "FORWARD").stdout
    pod = pods(lab, "my-nginx8-")[0]["metadata"]["name"]
    p = lab.exec(f"pod/{pod}", "curl", "-sS", "-m", "3", "http://172.23.100.4:2379/version", check=False)
    assert p.returncode == 7, (p.returncode, p.stdout)  # refused: the reset of the REJECT rule
    assert "etcdserver" in lab.exec("kub-node-1", "curl", "-sS", "-m", "3", "http://172.23.100.4:2379/version").stdout
    assert '"major"' in lab.exec(f"pod/{pod}", "curl", "-sk", "-m", "3", "https://172.23.100.4:6443/version").stdout


def pod_ips(lab: Lab) -> list[str]:
    """Every pod's eth0 address, read from the kernel (each pod namespace)."""
    out = []
    for ns in netns.netns_list(f"{lab.name}-pod-"):
        text = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                              capture_output=True, text=True).stdout
        out += [w.split("/")[0] for line in text.splitlines() for w in line.split()[3:4]]
    return out


def test_kill_9_of_every_daemon_keeps_the_data_plane_answering(lab):
    """Without supervision (branch node adds restarts) nothing comes back, but what is in
    the kernel keeps working: every request of a 100-request loop through the NodePort is
    answered while the agents, the API server and etcd are killed in turn (bound: 0 lost)."""
    leases = lab.etcdctl("get", "--prefix", "--keys-only", "/coreos.com/network/subnets/").split()
    assert len(leases) == len(set(leases)) == 3
    ips = pod_ips(lab)
    assert len(ips) == len(set(ips)) == 2
    loop = subprocess.Popen(
        [PY, "-m", "netlab", "exec", "--lab", lab.name, "external", "--", "sh", "-c",
         f"for i in $(seq 100); do curl -s -m 2 -o /dev/null -w '%{{http_code}}\\n' {NODEPORT}; sleep 0.02; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    killed = []
    for name in ("agent-kub-node-1", "agent-kub-node-2", "agent-kub-node-0", "apiserver", "etcd"):
        pid = proc.read_pid(names.pid_file(lab.name, name))
        assert pid and proc.is_lab_process(pid, lab.name), name
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        time.sleep(0.4)
    out, err = loop.communicate(timeout=120)
    codes = out.split()
    assert len(codes) == 100, (out, err)
    assert codes.count("200") == 100, f"lost {100 - codes.count('200')} of 100: {sorted(set(codes))}"
    assert not any(proc.pid_alive(p) for p in killed)
    ips = pod_ips(lab)
    assert len(ips) == len(set(ips)) == 2  # no pod lost its address, none doubled


def _up_killed_after(lab: Lab, marker: str) -> None:
    p = subprocess.Popen([PY, "-m", "netlab", "up", "-f", str(lab.file)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if marker in line:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()


def _answers(lab: Lab) -> bool:
    return lab.exec("external", "curl", "-s", "-m", "2", NODEPORT, check=False).returncode == 0


RACER = """apiVersion: apps/v1
kind: Deployment
metadata: {name: racer}
spec:
  replicas: 1
  selector: {matchLabels: {app: racer}}
  template:
    metadata: {labels: {app: racer}}
    spec: {containers: [{name: c, image: netlab/hello}]}
"""


def race_down(lab: Lab, tmp_path) -> None:
    """`down`; as soon as it holds the lab lock, `apply` and `run` are started against the
    dying lab: each fails with one line and writes nothing (issue 18 item 3)."""
    mf = tmp_path / "racer.yaml"
    mf.write_text(RACER)
    down = subprocess.Popen([PY, "-m", "netlab", "down", "--lab", lab.name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _locked(lab.name) or down.poll() is not None, timeout=30, interval=0.02,
             what="down to take the lock")
    # --lab, not NETLAB_LAB=: `down` kills every process carrying NETLAB_LAB=<lab> (its mark)
    racers = [subprocess.Popen([PY, "-m", "netlab", *args, "--lab", lab.name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for args in (["apply", "-f", str(mf), "--no-wait"], ["run", "racerpod", "--no-wait"])]
    assert down.wait(timeout=120) == 0, down.stderr.read()
    for q in racers:
        out, err = q.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert q.returncode == 1 and len(lines) == 1 and "Traceback" not in err, (q.returncode, out, err)
        assert f"lab '{lab.name}' is not up" in lines[0], lines


def _locked(lab: str) -> bool:
    try:
        fd = os.open(names.lock_file(lab), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_down_raced_then_up_killed_twice_repairs_and_leaves_nothing(lab, tmp_path):
    """On the lab whose daemons were killed (the test before): a down raced by apply and
    run: they fail in one line, write nothing. up killed after the API server started: up
    repairs. up killed after etcd started: down leaves nothing. (Kills at random times,
    then down: tests/integration/test_lifecycle.py.)"""
    race_down(lab, tmp_path)
    _up_killed_after(lab, "apiserver    started")
    assert lab.up().returncode == 0  # repaired
    wait_for(lambda: _answers(lab), timeout=30, what="the NodePort after up was killed")
    # what raced the down was not written: the etcd data (kept by a plain down) has neither
    assert pods(lab, "racer") == []
    st = lab.store()
    assert st.get(f"{store.DEPLOYMENTS}default/racer") is None
    st.close()
    lab.down()
    _up_killed_after(lab, "etcd         started")  # killed once more, then only down
    r = lab.down("--purge")
    assert r.returncode == 0
    assert leftovers(lab.name) == {"namespaces": [], "processes": [], "run_dir": False, "mounts": []}
