"""Issue 6: deployments, the control loop, nodes going away, and Kubernetes manifests (S17).

One lab with the default lab's workloads (my-nginx8, nginx-cluster-svc, nginx-nodeport-svc)
and a short nodeMonitorGracePeriod is shared by the module; each test puts back what it
changed (2 replicas, every node started) so the next one starts from the seed's state.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from netlab import names
from netlab.api import meta
from netlab.api import nodes as api_nodes
from netlab.cli import output
from netlab.kernel import netns, proc
from netlab.lab import running as lab_running
from netlab.plan import deployments as dl
from tests.labkit import PY, Lab, lab_doc, leftovers, new_lab_name, wait_for

GRACE = 5  # seconds without heartbeat before a node is NotReady (lab file: nodeMonitorGracePeriod)
CLUSTER_IP = "192.1.47.211"
WORKERS = ("kub-node-1", "kub-node-2")
SAFE = re.escape(dl.SAFE_ALPHABET)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("deploy"),
              lab_doc(new_lab_name(), workloads=True, nodeMonitorGracePeriod=f"{GRACE}s"))
    try:
        lab.up()
        yield lab
    finally:
        if lab.name in _stores:
            _stores.pop(lab.name).close()
        lab.down("--purge", check=False)
        assert not any(leftovers(lab.name).values()), leftovers(lab.name)


# --------------------------------------------------------------------------- helpers
# Polling reads etcd directly (a CLI call costs a Python start-up); what a person would look
# at (get deploy, get nodes, iptables, curl) goes through the CLI.
_stores: dict = {}


def _st(lab: Lab):
    if lab.name not in _stores:
        _stores[lab.name] = lab.store()
    return _stores[lab.name]


def pods(lab: Lab, app: str = "my-nginx8") -> list[dict]:
    return [i.value for i in _st(lab).list("/registry/pods/default/")
            if (i.value["metadata"].get("labels") or {}).get("run") == app]


def running(lab: Lab, app: str = "my-nginx8") -> list[dict]:
    return [p for p in pods(lab, app) if meta.pod_ready(p) and p["status"].get("podIP")]


def deploy(lab: Lab, name: str = "my-nginx8") -> dict:
    return _st(lab).get(f"/registry/deployments/default/{name}").value


def endpoint_ips(lab: Lab, svc: str = "nginx-cluster-svc") -> set[str]:
    item = _st(lab).get(f"/registry/services/endpoints/default/{svc}")
    return {a["ip"] for s in (item.value.get("subsets") or [] if item else []) for a in s.get("addresses") or []}


def sep_targets(lab: Lab, node: str) -> set[str]:
    """The pod IPs the KUBE-SEP chains of nginx-cluster-svc DNAT to, on one worker."""
    rules = lab.exec(node, "iptables", "-t", "nat", "-S").stdout
    return set(re.findall(r'--comment "?default/nginx-cluster-svc:"? .*-j DNAT --to-destination ([\d.]+):80', rules))


def registry(lab: Lab) -> dict[str, int]:
    """Every API object key (pods, services, endpoints, deployments, allocations) -> mod revision."""
    out = {}
    for prefix in ("/registry/pods/", "/registry/services/", "/registry/deployments/", "/registry/ranges/"):
        out.update({i.key: i.mod_revision for i in _st(lab).list(prefix)})
    return out


def curl(lab: Lab, node: str, url: str, tries: int = 1) -> list[str]:
    """The first line of each answer ("Hello from pod NAME"), one per try; FAIL for a failure."""
    out = lab.sh(node, f'for i in $(seq {tries}); do r=$(curl -s -m 2 {url} | head -n1); echo "${{r:-FAIL}}"; done')
    return out.splitlines()


def settled(lab: Lab, replicas: int) -> bool:
    d = deploy(lab)
    return (d["status"].get("readyReplicas") == replicas == d["spec"]["replicas"]
            and len(pods(lab)) == replicas)


# --------------------------------------------------------------------------- up: the seed's state
def test_up_applies_the_default_workloads_and_every_seed_curl_answers(lab):
    d = deploy(lab)
    assert d["spec"]["replicas"] == 2 and d["status"]["readyReplicas"] == 2
    ps = running(lab)
    # The scheduler spread the two replicas; host-local's rangeStart gave the seed's addresses.
    assert sorted((p["spec"]["nodeName"], p["status"]["podIP"]) for p in ps) == [
        ("kub-node-1", "10.1.1.4"), ("kub-node-2", "10.1.79.11")]
    h = dl.template_hash(d["spec"]["template"])
    for p in ps:
        assert re.fullmatch(f"my-nginx8-{h}-[{SAFE}]{{5}}", p["metadata"]["name"]), p["metadata"]["name"]
        assert p["metadata"]["labels"] == {"run": "my-nginx8", "pod-template-hash": h}
    # `up` returned only once the proxies had the rules: no polling here.
    for node, url in (("kub-node-1", "172.23.100.6:31295"), ("kub-node-2", "172.23.100.5:31295"),
                      ("external", "172.23.100.6:31295")):
        out = lab.sh(node, f"curl -s -m 2 {url} | head -n1; " +
                     (f"curl -s -m 2 {CLUSTER_IP} | head -n1" if node != "external" else "echo"))
        assert out.count("Hello from pod my-nginx8-") == (2 if node != "external" else 1), (node, out)
    svcs = lab.cli("get", "svc").stdout
    assert re.search(r"nginx-cluster-svc\s+ClusterIP\s+192\.1\.47\.211\s+<none>\s+80/TCP", svcs), svcs
    assert re.search(r"nginx-nodeport-svc\s+NodePort\s+192\.1\.88\.35\s+<none>\s+80:31295/TCP", svcs), svcs


def test_get_deploy_is_kubectl_shaped(lab):
    lines = lab.cli("get", "deploy").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:4] == ["my-nginx8", "2/2", "2", "2"]
    wide = lab.cli("get", "deployments", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[5:] == ["my-nginx8", "netlab/hello", "run=my-nginx8"]
    lst = lab.get_json("deployment")
    assert lst["kind"] == "List" and [i["metadata"]["name"] for i in lst["items"]] == ["my-nginx8"]
    obj = yaml.safe_load(lab.cli("get", "deploy", "my-nginx8", "-o", "yaml").stdout)
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["spec"]["selector"] == {"matchLabels": {"run": "my-nginx8"}}
    p = lab.cli("get", "deploy", "nope", check=False)
    assert p.returncode == 1 and 'deployments.apps "nope" not found' in p.stderr


# --------------------------------------------------------------------------- manifests
def workloads_file(lab: Lab, tmp_path) -> str:
    f = tmp_path / "workloads.yaml"
    f.write_text(yaml.safe_dump_all(lab.doc["workloads"]))
    return str(f)


def test_apply_twice_changes_nothing(lab, tmp_path):
    f = workloads_file(lab, tmp_path)
    before = registry(lab)
    uids = {p["metadata"]["uid"] for p in pods(lab)}
    out = lab.cli("apply", "-f", f).stdout.splitlines()
    assert out == ["deployment.apps/my-nginx8 unchanged", "service/nginx-cluster-svc unchanged",
                   "service/nginx-nodeport-svc unchanged"]
    # From stdin too, and a second time: still nothing written.
    out = lab.cli("apply", "-f", "-", input=open(f).read()).stdout.splitlines()
    assert all(l.endswith(" unchanged") for l in out)
    after = registry(lab)
    assert {k: v for k, v in after.items() if not k.startswith("/registry/pods/")} == \
        {k: v for k, v in before.items() if not k.startswith("/registry/pods/")}
    assert {p["metadata"]["uid"] for p in pods(lab)} == uids


def test_unsupported_field_is_exit_2_naming_it_and_nothing_changes(lab, tmp_path):
    good_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "early"},
                "spec": {"selector": {"run": "x"}, "ports": [{"port": 81}]}}
    bad = yaml.safe_load(yaml.safe_dump(lab.doc["workloads"][0]))
    bad["metadata"]["name"] = "web"
    bad["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump_all([good_svc, bad]))
    before = registry(lab)
    p = lab.cli("apply", "-f", str(f), check=False)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: {f}: document 2: deployment web: spec.template.spec.volumes: not supported by netlab "
        "(supported here: containers, nodeName, restartPolicy, dnsPolicy)"]
    # A value the lab refuses (the seed's ClusterIP is taken) is checked before writing too.
    taken = dict(good_svc, spec={**good_svc["spec"], "clusterIP": CLUSTER_IP})
    f.write_text(yaml.safe_dump_all([lab.doc["workloads"][0], taken]))
    p = lab.cli("apply", "-f", str(f), check=False)
    assert p.returncode == 2
    assert "service early: spec.clusterIP: 192.1.47.211 is already allocated to default/nginx-cluster-svc" in p.stderr
    assert registry(lab) == before


def test_delete_f_removes_exactly_what_apply_made(lab, tmp_path):
    objs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"run": "web"}},
                  "template": {"metadata": {"labels": {"run": "web"}},
                               "spec": {"containers": [{"name": "web", "image": "netlab/hello",
                                                        "ports": [{"containerPort": 8080, "name": "http"}],
                                                        "args": ["--port", "8080"]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"type": "NodePort", "selector": {"run": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"run": "web"}},
         "spec": {"containers": [{"name": "solo", "image": "netlab/hello",
                                  "ports": [{"containerPort": 8080, "name": "http"}], "args": ["--port", "8080"]}]}},
    ]
    f = tmp_path / "web.yaml"
    f.write_text(yaml.safe_dump_all(objs))
    before = registry(lab)
    seed_pods = {p["metadata"]["uid"] for p in pods(lab)}
    out = lab.cli("apply", "-f", str(f)).stdout.splitlines()
    assert out == ["deployment.apps/web created", "service/web created", "pod/solo created"]
    web = running(lab, "web")
    assert len(web) == 3 and endpoint_ips(lab, "web") == {p["status"]["podIP"] for p in web}
    svc = lab.get_json("svc", "web")
    answers = curl(lab, "kub-node-1", f"{svc['spec']['clusterIP']}:80", tries=12)
    assert len(answers) == 12 and all("web-" in a or "solo" in a for a in answers), answers
    pod_ns = [names.pod_ns(lab.name, "default", p["metadata"]["name"]) for p in web]
    assert all(netns.netns_exists(n) for n in pod_ns)

    out = lab.cli("delete", "-f", str(f)).stdout.splitlines()
    assert out == ['service "web" deleted', 'deployment.apps "web" deleted', 'pod "solo" deleted']
    after = registry(lab)
    assert set(after) == set(before), set(after) ^ set(before)
    assert {p["metadata"]["uid"] for p in pods(lab)} == seed_pods  # the seed's pods untouched
    for node in WORKERS:
        assert "default/web" not in lab.exec(node, "iptables", "-t", "nat", "-S").stdout
    wait_for(lambda: not any(netns.netns_exists(n) for n in pod_ns), 20, what="web pods' namespaces removed")
    p = lab.cli("delete", "-f", str(f), check=False)
    assert p.returncode == 1 and 'deployment.apps "web" not found' in p.stderr
    assert lab.cli("delete", "-f", str(f), "--ignore-not-found").returncode == 0


def test_bad_arguments_are_exit_2(lab):
    # (Usage errors found before the lab is read are unit-tested in tests/unit/test_manifests.py.)
    for args, msg in [
        (("node", "stop", "kub-node-0"), "kub-node-0 is the master"),
        (("node", "stop", "kub-node-9"), "node 'kub-node-9' is not part of lab"),
    ]:
        p = lab.cli(*args, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr, (args, p.stderr)
    assert deploy(lab)["spec"]["replicas"] == 2


# --------------------------------------------------------------------------- S17: pods come and go
def test_s17_deleted_pod_is_replaced_and_the_service_keeps_answering(lab, tmp_path):
    old = {p["metadata"]["name"]: p["status"]["podIP"] for p in running(lab)}
    victim = next(n for n, ip in old.items() if ip == "10.1.79.11")
    stop = tmp_path / "stop"
    # A person's loop of curls on kub-node-1 through the change (each try at most 1 s).
    loop = subprocess.Popen(
        [PY, "-m", "netlab", "exec", "kub-node-1", "--", "sh", "-c",
         # curl prints 000 for a try that got no answer
         f"while [ ! -e {stop} ]; do curl -s -m 1 -o /dev/null -w '%{{http_code}}\\n' {CLUSTER_IP}; "
         "sleep 0.02; done"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "NETLAB_LAB": lab.name})
    try:
        time.sleep(1)
        t0 = time.monotonic()
        lab.cli("delete", "pod", victim)
        new = wait_for(lambda: [p for p in running(lab) if p["metadata"]["name"] not in old
                                and meta.pod_ready(p)], 30, what="a replacement pod")
        assert len(new) == 1
        replaced_after = time.monotonic() - t0
        repl = new[0]
        assert repl["metadata"]["name"] != victim and repl["status"]["podIP"] not in old.values()
        assert repl["metadata"]["labels"]["pod-template-hash"] == victim.split("-")[-2]
        want = set(old.values()) - {old[victim]} | {repl["status"]["podIP"]}
        wait_for(lambda: endpoint_ips(lab) == want, 15, what="endpoints to follow")
        for node in WORKERS:  # the KUBE-SEP rules name the new endpoint, not the old one
            wait_for(lambda: sep_targets(lab, node) == want, 15, what=f"KUBE-SEP rules on {node}")
        time.sleep(1)  # a second of curls after the change
    finally:
        stop.touch()
        out, _ = loop.communicate(timeout=30)
    results = out.split()
    ok = results.count("200")
    lost = len(results) - ok
    print(f"S17: replacement ready {replaced_after:.1f}s after `delete pod` returned... "
          f"{lost} of {len(results)} curls lost")
    assert ok > 20, results
    # Only the tries in flight while the old pod went away may fail: the kubelet stops the pod
    # as soon as it is deleted, the proxies drop it a few ms later (as in Kubernetes).
    assert lost <= 3, f"{lost} of {len(results)} curls failed: {results}"
    assert "my-nginx8" in curl(lab, "kub-node-2", CLUSTER_IP)[0]


def test_scale_2_to_6_to_1(lab):
    out = lab.cli("scale", "deployment", "my-nginx8", "--replicas", "6").stdout
    assert out.strip() == "deployment.apps/my-nginx8 scaled"
    # scale waits until the pods are ready; the listing and the rules follow.
    d = deploy(lab)
    assert d["status"]["readyReplicas"] == d["status"]["availableReplicas"] == 6
    ps = running(lab)
    assert len(ps) == 6 and {p["spec"]["nodeName"] for p in ps} == set(WORKERS)  # never the master
    assert len({p["status"]["podIP"] for p in ps}) == 6
    assert lab.cli("get", "deploy").stdout.splitlines()[1].split()[:4] == ["my-nginx8", "6/6", "6", "6"]
    ips = {p["status"]["podIP"] for p in ps}
    wait_for(lambda: endpoint_ips(lab) == ips, 15, what="6 endpoints")
    wait_for(lambda: sep_targets(lab, "kub-node-1") == ips, 15, what="6 KUBE-SEP chains")
    answers = set(curl(lab, "kub-node-2", CLUSTER_IP, tries=40))
    assert len(answers) >= 4, answers  # random balancing reaches most of the 6

    lab.cli("scale", "deployment", "my-nginx8", "--replicas", "1")
    ps = pods(lab)
    assert len(ps) == 1 and meta.pod_ready(ps[0])
    wait_for(lambda: endpoint_ips(lab) == {ps[0]["status"]["podIP"]}, 15, what="1 endpoint")
    assert "my-nginx8" in curl(lab, "kub-node-1", CLUSTER_IP)[0]

    lab.cli("scale", "deployment", "my-nginx8", "--replicas", "2")
    assert settled(lab, 2)


# --------------------------------------------------------------------------- nodes going away
def test_node_stop_moves_its_pods_and_node_start_brings_it_back(lab):
    assert settled(lab, 2)
    on2 = [p for p in running(lab) if p["spec"]["nodeName"] == "kub-node-2"]
    if not on2:  # put one replica on kub-node-2 (the scheduler spreads a scale-up)
        lab.cli("scale", "deployment", "my-nginx8", "--replicas", "3")
        on2 = [p for p in running(lab) if p["spec"]["nodeName"] == "kub-node-2"]
    assert on2
    gone = {p["metadata"]["name"] for p in on2}
    gone_ns = [names.pod_ns(lab.name, "default", n) for n in gone]
    agent = proc.read_pid(names.pid_file(lab.name, "agent-kub-node-2"))
    want = deploy(lab)["spec"]["replicas"]

    t0 = time.monotonic()
    out = lab.cli("node", "stop", "kub-node-2").stdout
    assert out.startswith("node/kub-node-2 stopped (agent pid")
    assert not proc.pid_alive(agent)
    assert not any(proc.pids_in_netns(n) for n in gone_ns)  # its pods' processes are gone
    assert netns.netns_exists(names.node_ns(lab.name, "kub-node-2"))  # the "host" is still there

    def node2_status(via_cli: bool = False):
        if not via_cli:  # what `get nodes` prints, without a Python start-up per poll
            running_lab, st = lab_running.open_lab(lab.name)
            try:
                node = api_nodes.list_nodes(st, running_lab.node_monitor_grace_period, "kub-node-2")[0]
            finally:
                st.close()
            return output.node_row(node, False)[1]
        return next(l.split()[1] for l in lab.cli("get", "nodes").stdout.splitlines()[1:]
                    if l.split()[0] == "kub-node-2")
    wait_for(lambda: node2_status() == "NotReady", GRACE + 10, interval=0.1, what="kub-node-2 NotReady")
    assert node2_status(via_cli=True) == "NotReady"
    assert time.monotonic() - t0 >= GRACE - 1  # not before the grace period
    # Its pods reappear on kub-node-1 with new names; the endpoints drop the old ones.
    wait_for(lambda: settled(lab, want) and all(p["spec"]["nodeName"] == "kub-node-1" for p in pods(lab)),
             30, what="the pods to move to kub-node-1")
    ips = {p["status"]["podIP"] for p in running(lab)}
    assert not gone & {p["metadata"]["name"] for p in pods(lab)}
    wait_for(lambda: endpoint_ips(lab) == ips, 15, what="endpoints without kub-node-2's pods")
    wait_for(lambda: sep_targets(lab, "kub-node-1") == ips, 15, what="kub-node-1's rules to follow")
    answers = curl(lab, "kub-node-1", CLUSTER_IP, tries=10)
    assert len(answers) == 10 and all("my-nginx8" in a for a in answers), answers
    moved_after = time.monotonic() - t0
    # While it is down, a scale-up goes to the Ready worker only (and does not wait for the
    # stopped node's proxy).
    lab.cli("scale", "deployment", "my-nginx8", "--replicas", str(want + 1), timeout=60)
    assert {p["spec"]["nodeName"] for p in pods(lab)} == {"kub-node-1"} and settled(lab, want + 1)

    out = lab.cli("node", "start", "kub-node-2").stdout
    assert out.startswith("node/kub-node-2 started (agent pid")
    wait_for(lambda: node2_status() == "Ready", 15, what="kub-node-2 Ready again")
    # The agent cleans up the sandboxes of the pods evicted while it was away.
    wait_for(lambda: not any(netns.netns_exists(n) for n in gone_ns), 20,
             what="evicted pods' namespaces removed on kub-node-2")
    # It takes pods again: a scale-up lands there.
    lab.cli("scale", "deployment", "my-nginx8", "--replicas", str(want + 3))
    assert "kub-node-2" in {p["spec"]["nodeName"] for p in running(lab)}
    lab.cli("scale", "deployment", "my-nginx8", "--replicas", "2")
    assert settled(lab, 2)
    print(f"pods moved {moved_after:.1f}s after node stop (grace {GRACE}s)")


def test_expose_and_delete_deployment(lab, tmp_path):
    doc = yaml.safe_load(yaml.safe_dump(lab.doc["workloads"][0]))
    doc["metadata"]["name"] = "other"
    doc["spec"]["selector"]["matchLabels"] = doc["spec"]["template"]["metadata"]["labels"] = {"run": "other"}
    doc["spec"]["replicas"] = 1
    f = tmp_path / "other.yaml"
    f.write_text(yaml.safe_dump(doc))
    lab.cli("apply", "-f", str(f))
    assert len(running(lab, "other")) == 1
    # `expose deployment` selects the deployment's pods (kubectl expose).
    lab.cli("expose", "deployment", "other", "--port", "80", "--type", "NodePort")
    port = lab.get_json("svc", "other")["spec"]["ports"][0]["nodePort"]
    assert "Hello from pod other-" in curl(lab, "external", f"172.23.100.5:{port}")[0]
    lab.cli("delete", "svc", "other")
    out = lab.cli("delete", "deployment", "other").stdout
    assert out.strip() == 'deployment.apps "other" deleted'
    assert pods(lab, "other") == []
    assert "other" not in lab.cli("get", "deploy").stdout
    assert settled(lab, 2)
