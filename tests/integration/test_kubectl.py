"""Real kubectl and the official Python client against the lab's API server.

One lab with the seed's workloads for the module. kubectl runs with a kubeconfig that
`netlab up` wrote into a temporary $KUBECONFIG (tests/conftest.py), so the user's own is
never touched; what is asserted is what a person reads on the screen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.labkit import Lab, lab_doc, leftovers, new_lab_name

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (scripts/setup.sh installs it)")

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: netlab/hello
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kubectl")
    lab = Lab(tmp, lab_doc(new_lab_name(), workloads=True))
    try:
        lab.up()
    except BaseException:
        lab.down("--purge", check=False)  # a failed `up` must leave nothing behind either
        raise
    lab.tmp = tmp
    yield lab
    lab.down("--purge", check=False)
    assert not any(leftovers(lab.name).values()), leftovers(lab.name)  # the API server too
    assert f"netlab-{lab.name}" not in open(os.environ["KUBECONFIG"]).read()  # --purge took the context out


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", ln.strip()) for ln in text.strip().splitlines()]


def kubeconfig() -> dict:
    return yaml.safe_load(open(os.environ["KUBECONFIG"]))


class Raw:
    """Plain HTTPS requests to the API server, with or without the admin token."""

    def __init__(self):
        cfg = kubeconfig()
        cur = cfg["current-context"]
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == cur)
        self.server = cluster["server"]
        self.token = next(u["user"]["token"] for u in cfg["users"] if u["name"] == cur)
        import base64
        import tempfile

        ca = tempfile.NamedTemporaryFile(suffix=".crt", delete=False)
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.close()
        self.ctx = ssl.create_default_context(cafile=ca.name)

    def __call__(self, method: str, path: str, body: bytes | None = None, token: bool = True,
                 ctype: str = "application/json") -> tuple[int, dict]:
        rq = urllib.request.Request(self.server + path, data=body, method=method)
        if token:
            rq.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            rq.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(rq, context=self.ctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


# --------------------------------------------------------------------------- the seed's lines
def test_get_pod_o_wide_is_the_seeds_listing(lab):
    out = rows(kubectl("get", "pod", "-o", "wide").stdout)
    assert out[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    pods = {r[6]: r for r in out[1:]}
    assert set(pods) == {"kub-node-1", "kub-node-2"}
    assert pods["kub-node-1"][5] == "10.1.1.4" and pods["kub-node-2"][5] == "10.1.79.11"
    for r in pods.values():
        assert r[0].startswith("my-nginx8-") and r[1:4] == ["1/1", "Running", "0"] and r[7:] == ["<none>", "<none>"]


def test_get_svc_starts_with_the_kubernetes_service(lab):
    out = rows(kubectl("get", "svc").stdout)
    assert out[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert out[1][:5] == ["kubernetes", "ClusterIP", "192.1.0.1", "<none>", "443/TCP"]
    by = {r[0]: r for r in out[1:]}
    assert by["nginx-cluster-svc"][1:5] == ["ClusterIP", "192.1.47.211", "<none>", "80/TCP"]
    assert by["nginx-nodeport-svc"][1:5] == ["NodePort", "192.1.88.35", "<none>", "80:31295/TCP"]
    ep = rows(kubectl("get", "endpoints", "kubernetes").stdout)
    assert ep[1][:2] == ["kubernetes", "172.23.100.4:6443"]


def test_the_kubernetes_service_is_programmed_like_the_seeds(lab):
    nat = lab.exec("kub-node-1", "iptables-legacy-save", "-t", "nat").stdout
    assert re.search(r'-A KUBE-SERVICES -d 192\.1\.0\.1/32 -p tcp -m comment --comment '
                     r'"default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-', nat), nat


def test_expose_deployment_as_in_the_seed(lab):
    out = kubectl("expose", "deployment", "my-nginx8", "--type", "NodePort", "--name", "my-nginx8-np")
    assert out.stdout.strip() == "service/my-nginx8-np exposed"
    row = next(r for r in rows(kubectl("get", "svc").stdout) if r[0] == "my-nginx8-np")
    assert row[1] == "NodePort" and re.fullmatch(r"80:3\d{4}/TCP", row[4])
    port = row[4].split(":")[1].split("/")[0]
    # the same service as `netlab expose` makes: the node port answers from outside
    deadline = time.monotonic() + 20
    while True:
        p = lab.exec("external", "curl", "-s", "-m", "2", f"http://172.23.100.5:{port}/", check=False)
        if p.returncode == 0 and "my-nginx8-" in p.stdout:
            break
        assert time.monotonic() < deadline, p
        time.sleep(0.3)
    kubectl("delete", "svc", "my-nginx8-np")
    assert "my-nginx8-np" not in lab.cli("get", "svc").stdout


def test_every_resource_lists_with_kubectls_columns(lab):
    nodes = rows(kubectl("get", "nodes", "-o", "wide").stdout)
    assert nodes[0][:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    assert [(r[0], r[1], r[5]) for r in nodes[1:]] == [("kub-node-0", "Ready", "172.23.100.4"),
                                                       ("kub-node-1", "Ready", "172.23.100.5"),
                                                       ("kub-node-2", "Ready", "172.23.100.6")]
    dep = rows(kubectl("get", "deploy").stdout)
    assert dep[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] and dep[1][:4] == ["my-nginx8", "2/2", "2", "2"]
    ns = [r[0] for r in rows(kubectl("get", "ns").stdout)[1:]]
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(ns)
    ev = kubectl("get", "events")
    assert ev.returncode == 0 and "No resources found in default namespace." in ev.stderr
    allns = rows(kubectl("get", "pods", "-A").stdout)
    assert allns[0][:2] == ["NAMESPACE", "NAME"] and allns[1][0] == "default"


def test_output_formats_and_selectors(lab):
    doc = json.loads(kubectl("get", "pods", "-o", "json").stdout)
    assert doc["kind"] == "List" and len(doc["items"]) == 2
    assert all(i["metadata"]["resourceVersion"].isdigit() for i in doc["items"])
    ips = kubectl("get", "pods", "-o", "jsonpath={.items[*].status.podIP}").stdout.split()
    assert sorted(ips) == ["10.1.1.4", "10.1.79.11"]
    one = rows(kubectl("get", "pods", "--field-selector", "spec.nodeName=kub-node-1", "-o", "wide").stdout)
    assert len(one) == 2 and one[1][6] == "kub-node-1"
    assert len(rows(kubectl("get", "pods", "-l", "run=my-nginx8").stdout)) == 3
    assert "No resources found" in kubectl("get", "pods", "-l", "run=nothing").stderr
    assert len(rows(kubectl("get", "pods", "--field-selector", "status.phase=Running").stdout)) == 3
    y = yaml.safe_load(kubectl("get", "svc", "kubernetes", "-o", "yaml").stdout)
    assert y["spec"]["ports"] == [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}]


# --------------------------------------------------------------------------- writes
def test_apply_twice_is_unchanged_and_delete_waits(lab):
    f = lab.tmp / "web.yaml"
    f.write_text(DEPLOYMENT.format(replicas=1))
    assert kubectl("apply", "-f", str(f)).stdout.split("\n")[:2] == ["deployment.apps/web created", "service/web created"]
    assert kubectl("apply", "-f", str(f)).stdout.split("\n")[:2] == ["deployment.apps/web unchanged",
                                                                     "service/web unchanged"]
    f.write_text(DEPLOYMENT.format(replicas=2))
    assert kubectl("apply", "-f", str(f)).stdout.split("\n")[:2] == ["deployment.apps/web configured",
                                                                     "service/web unchanged"]
    out = kubectl("rollout", "status", "deployment", "web", "--timeout", "60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    # the netlab CLI sees the very same objects
    assert "web" in lab.cli("get", "deploy").stdout and "2/2" in lab.cli("get", "deploy", "web").stdout
    out = kubectl("delete", "-f", str(f)).stdout
    assert 'deployment.apps "web" deleted' in out and 'service "web" deleted' in out
    assert not [p for p in lab.get_json("pods")["items"] if p["metadata"]["name"].startswith("web-")]


def test_create_with_kubectls_typed_clients(lab):
    """`kubectl create namespace|deployment|service` post protobuf bodies."""
    assert kubectl("create", "namespace", "demo").stdout.strip() == "namespace/demo created"
    out = kubectl("create", "deployment", "cd1", "--image=netlab/hello", "--port=80", "-n", "demo").stdout.strip()
    assert out == "deployment.apps/cd1 created"
    assert kubectl("create", "service", "clusterip", "cd1", "--tcp=80:80", "-n", "demo").stdout.strip() == "service/cd1 created"
    kubectl("rollout", "status", "deployment", "cd1", "-n", "demo", "--timeout", "60s")
    assert rows(kubectl("get", "endpoints", "cd1", "-n", "demo").stdout)[1][1].endswith(":80")
    p = kubectl("create", "deployment", "bad", "--image=redis", check=False)
    assert p.returncode == 1 and "spec.template.spec.containers[0].image" in p.stderr
    assert kubectl("delete", "namespace", "demo").stdout.strip() == 'namespace "demo" deleted'
    assert not [p for p in lab.get_json("pods", "-A")["items"] if p["metadata"]["namespace"] == "demo"]


def test_run_logs_exec_and_delete_a_pod(lab):
    assert kubectl("run", "hello", "--image=netlab/hello").stdout.strip() == "pod/hello created"
    kubectl("wait", "--for=condition=Ready", "pod/hello", "--timeout=60s")
    assert "netlab-hello: pod hello listening on port 80" in kubectl("logs", "hello").stdout
    assert kubectl("exec", "hello", "--", "hostname").stdout.strip() == "hello"
    p = kubectl("exec", "hello", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout.strip()) == (3, "out") and "err" in p.stderr
    assert kubectl("exec", "-i", "hello", "--", "cat", input="through stdin\n").stdout == "through stdin\n"
    # exec -it: a terminal with job control
    p = subprocess.run(["script", "-qec", f"{KUBECTL} exec -it hello -- sh -c 'tty; exit 5'", "/dev/null"],
                       capture_output=True, text=True, timeout=30, input="")
    assert "/dev/pts/" in p.stdout and p.returncode == 5, p
    assert kubectl("delete", "pod", "hello").stdout.strip() == 'pod "hello" deleted'
    p = kubectl("get", "pod", "hello", check=False)
    assert p.returncode == 1 and p.stderr.strip() == 'Error from server (NotFound): pods "hello" not found'


def test_logs_follow_streams_new_lines(lab):
    kubectl("run", "ticker", "--image=netlab/hello", "--command", "--", "sh", "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")
    kubectl("wait", "--for=condition=Ready", "pod/ticker", "--timeout=60s")
    p = subprocess.Popen([KUBECTL, "logs", "-f", "ticker"], stdout=subprocess.PIPE, text=True)
    try:
        seen = [p.stdout.readline().strip() for _ in range(8)]
    finally:
        p.kill()
        p.wait()
    assert seen[0].startswith("tick ") and len(set(seen)) == 8
    kubectl("delete", "pod", "ticker", "--wait=false")


def test_scale_patch_and_label(lab):
    assert kubectl("scale", "deployment", "my-nginx8", "--replicas=3").stdout.strip() == "deployment.apps/my-nginx8 scaled"
    kubectl("rollout", "status", "deployment", "my-nginx8", "--timeout", "60s")
    assert len(rows(kubectl("get", "pods", "-l", "run=my-nginx8").stdout)) == 4
    out = kubectl("patch", "deployment", "my-nginx8", "-p", '{"spec":{"replicas":2}}').stdout.strip()
    assert out == "deployment.apps/my-nginx8 patched"
    out = kubectl("patch", "deployment", "my-nginx8", "--type=json",
                  "-p", '[{"op":"replace","path":"/spec/replicas","value":2}]').stdout.strip()
    assert out == "deployment.apps/my-nginx8 patched (no change)"
    kubectl("rollout", "status", "deployment", "my-nginx8", "--timeout", "60s")
    pod = rows(kubectl("get", "pods", "-l", "run=my-nginx8").stdout)[1][0]
    kubectl("label", "pod", pod, "checked=yes")
    assert rows(kubectl("get", "pods", "-l", "checked=yes").stdout)[1][0] == pod
    kubectl("label", "pod", pod, "checked-")


def test_describe_and_kubeconfig(lab):
    pod = rows(kubectl("get", "pods", "-l", "run=my-nginx8").stdout)[1][0]
    d = kubectl("describe", "pod", pod).stdout
    assert re.search(rf"^Name:\s+{pod}$", d, re.M) and re.search(r"^Status:\s+Running$", d, re.M)
    d = kubectl("describe", "svc", "nginx-cluster-svc").stdout
    assert re.search(r"^IP:\s+192\.1\.47\.211$", d, re.M)
    assert re.search(r"^Endpoints:\s+(10\.1\.1\.4:80,10\.1\.79\.11:80|10\.1\.79\.11:80,10\.1\.1\.4:80)$", d, re.M), d
    assert "MinimumReplicasAvailable" in kubectl("describe", "deploy", "my-nginx8").stdout
    assert "PodCIDR:" in kubectl("describe", "node", "kub-node-1").stdout
    cfg = yaml.safe_load(lab.cli("kubeconfig").stdout)
    assert cfg["current-context"] == f"netlab-{lab.name}"
    assert cfg["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert kubeconfig()["current-context"] == f"netlab-{lab.name}"  # `up` merged it and made it current


def test_watch_streams_changes(lab):
    w = subprocess.Popen([KUBECTL, "get", "pods", "-w", "--field-selector", "metadata.name=watched"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        kubectl("run", "watched", "--image=netlab/hello")
        kubectl("wait", "--for=condition=Ready", "pod/watched", "--timeout=60s")
        kubectl("delete", "pod", "watched")
        time.sleep(0.5)
    finally:
        w.terminate()
        out, _ = w.communicate(timeout=10)
    states = [r[2] for r in rows(out) if r[0] == "watched"]
    assert states[0] == "Pending" and "Running" in states, out


def test_shell_completion_offers_the_labs_names(lab):
    import sys

    netlab = os.path.join(os.path.dirname(sys.executable), "netlab")

    def complete(words: str) -> list[str]:
        cword = len(words.split()) - (0 if words.endswith(" ") else 1)
        env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(cword), "_NETLAB_COMPLETE": "complete_bash"}
        return subprocess.run([netlab], env=env, capture_output=True, text=True, timeout=30).stdout.split()

    assert complete(f"netlab exec --lab {lab.name} kub-node-") == ["kub-node-0", "kub-node-1", "kub-node-2"]
    pods = complete(f"netlab get pods --lab {lab.name} my-")
    assert len(pods) == 2 and all(p.startswith("my-nginx8-") for p in pods)
    assert {"kubernetes", "nginx-cluster-svc", "nginx-nodeport-svc"} <= set(complete(f"netlab get svc --lab {lab.name} "))
    assert complete(f"netlab exec --lab {lab.name} pod/my-") == [f"pod/{p}" for p in pods]


def test_a_crashed_api_server_comes_back_on_the_same_port(lab):
    """kill -9 of kube-apiserver: the master's node init starts it again on the listening
    socket it holds, so the kubeconfig written at `up` stays valid and no `up` is needed."""
    import signal

    from netlab import names
    from netlab.kernel import proc as kernel

    pid_file = names.pid_file(lab.name, "apiserver")
    pid = kernel.read_pid(pid_file)
    def server_of_lab():
        return next(c["cluster"]["server"] for c in kubeconfig()["clusters"] if c["name"] == f"netlab-{lab.name}")

    server = server_of_lab()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (kernel.read_pid(pid_file) not in (None, pid)
                                               and kernel.pid_alive(kernel.read_pid(pid_file))):
        time.sleep(0.05)
    new = kernel.read_pid(pid_file)
    assert new != pid and kernel.is_lab_process(new, lab.name), (pid, new)
    assert rows(kubectl("get", "svc", "kubernetes", timeout=30).stdout)[1][:3] == ["kubernetes", "ClusterIP", "192.1.0.1"]
    assert server_of_lab() == server  # the kubeconfig stays valid
    assert "API server https://127.0.0.1:" in lab.cli("status").stdout and "(ready," in lab.cli("status").stdout


# --------------------------------------------------------------------------- errors
def test_status_errors_are_kube_apiservers(lab):
    api = Raw()
    code, body = api("GET", "/api/v1/namespaces/default/pods", token=False)
    assert (code, body["kind"], body["reason"]) == (401, "Status", "Unauthorized")
    code, body = api("GET", "/api/v1/namespaces/default/pods/nothere")
    assert (code, body["reason"], body["message"], body["details"]) == \
        (404, "NotFound", 'pods "nothere" not found', {"name": "nothere", "kind": "pods"})
    before = len(lab.get_json("pods")["items"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dup"},
           "spec": {"containers": [{"name": "c", "image": "netlab/hello"}]}}
    assert api("POST", "/api/v1/namespaces/default/pods", json.dumps(pod).encode())[0] == 201
    code, body = api("POST", "/api/v1/namespaces/default/pods", json.dumps(pod).encode())
    assert (code, body["reason"], body["message"]) == (409, "AlreadyExists", 'pods "dup" already exists')
    code, cur = api("GET", "/api/v1/namespaces/default/pods/dup")
    stale = dict(cur, metadata=dict(cur["metadata"], resourceVersion=str(int(cur["metadata"]["resourceVersion"]) - 1)))
    code, body = api("PUT", "/api/v1/namespaces/default/pods/dup", json.dumps(stale).encode())
    assert (code, body["reason"]) == (409, "Conflict") and "has been modified" in body["message"]
    bad = dict(pod, metadata={"name": "bad"}, spec={"containers": [{"name": "c", "image": "netlab/hello"}],
                                                    "hostNetwork": True})
    code, body = api("POST", "/api/v1/namespaces/default/pods", json.dumps(bad).encode())
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.hostNetwork"
    code, body = api("POST", "/api/v1/namespaces/default/pods", b'{"apiVersion": "v1", "kind": ')
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = api("POST", "/api/v1/namespaces/default/pods", b"{" + b" " * (4 * 1024 * 1024) + b"}")
    assert (code, body["reason"]) == (413, "RequestEntityTooLarge")
    code, body = api("GET", "/api/v1/namespaces/..%2f..%2fminions/pods/x")
    assert code in (400, 404) and body["kind"] == "Status"
    kubectl("delete", "pod", "dup")
    assert len(lab.get_json("pods")["items"]) == before  # the refused requests changed nothing


def test_kubectl_and_netlab_apply_refuse_alike(lab):
    f = lab.tmp / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: badimg}\n"
                 "spec:\n  containers:\n  - {name: c, image: redis}\n")
    k = kubectl("apply", "-f", str(f), check=False)
    n = lab.cli("apply", "-f", str(f), check=False)
    assert k.returncode == 1 and n.returncode == 2
    why = "spec.containers[0].image: 'redis' is not available in netlab"
    assert why in k.stderr and why in n.stderr


# --------------------------------------------------------------------------- Python client, in-cluster
def test_python_client_lists_creates_watches_and_deletes(lab):
    from kubernetes import client, config, watch

    config.load_kube_config()
    v1 = client.CoreV1Api()
    assert {s.spec.cluster_ip for s in v1.list_namespaced_service("default").items} >= {"192.1.0.1", "192.1.47.211"}
    assert [n.metadata.name for n in v1.list_node().items] == ["kub-node-0", "kub-node-1", "kub-node-2"]
    assert client.AppsV1Api().read_namespaced_deployment("my-nginx8", "default").spec.replicas == 2
    v1.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="pyclient"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="netlab/hello")])))
    w = watch.Watch()
    phases = []
    for ev in w.stream(v1.list_namespaced_pod, "default", field_selector="metadata.name=pyclient", timeout_seconds=60):
        phases.append((ev["type"], ev["object"].status.phase))
        if ev["object"].status.phase == "Running":
            w.stop()
    assert phases[0] == ("ADDED", "Pending") and phases[-1] == ("MODIFIED", "Running")
    v1.delete_namespaced_pod("pyclient", "default")
    with pytest.raises(client.ApiException) as e:
        v1.read_namespaced_pod("pyclient", "default")
    assert e.value.status == 404


def test_in_cluster_access_with_the_pods_service_account(lab):
    pod = rows(kubectl("get", "pods", "-l", "run=my-nginx8").stdout)[1][0]
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    out = lab.sh(f"pod/{pod}", f'cat {sa}/namespace; echo; echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; '
                               f'curl -s --cacert {sa}/ca.crt -H "Authorization: Bearer $(cat {sa}/token)" '
                               f'https://kubernetes.default.svc.cluster.local/api/v1/namespaces/default/pods '
                               f'--resolve kubernetes.default.svc.cluster.local:443:$KUBERNETES_SERVICE_HOST')
    ns, hostport, body = out.split("\n", 2)
    assert (ns, hostport) == ("default", "192.1.0.1:443")
    assert json.loads(body)["kind"] == "PodList"
    anon = lab.sh(f"pod/{pod}", f"curl -s --cacert {sa}/ca.crt https://192.1.0.1/api/v1/pods")
    assert json.loads(anon)["code"] == 401


def test_S21_the_seeds_expose_line_verbatim(lab):
    """Last in the module: it replaces the lab's nginx-cluster-svc by the one kubectl makes."""
    kubectl("delete", "svc", "nginx-cluster-svc")
    out = kubectl("expose", "deployment", "my-nginx8", "--type", "ClusterIP", "--name", "nginx-cluster-svc")
    assert out.stdout.strip() == "service/nginx-cluster-svc exposed"
    row = next(r for r in rows(kubectl("get", "svc").stdout) if r[0] == "nginx-cluster-svc")
    assert row[1] == "ClusterIP" and row[2].startswith("192.1.") and row[3:5] == ["<none>", "80/TCP"]
    # netlab's own listing shows the same object
    assert any(ln.split()[:3] == ["nginx-cluster-svc", "ClusterIP", row[2]] for ln in lab.cli("get", "svc").stdout.splitlines())
