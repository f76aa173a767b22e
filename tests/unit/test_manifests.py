"""Manifests, deployments and the deployment controller's plan: the pure parts, no root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from netlab import labfile
from netlab.agent.deployments import plan
from netlab.api import deployments as api_dl
from netlab.api import manifests
from netlab.errors import UsageError
from netlab.plan import deployments as dl
from netlab.store import Item

DEP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: my-nginx8}
spec:
  replicas: 2
  selector: {matchLabels: {run: my-nginx8}}
  template:
    metadata: {labels: {run: my-nginx8}}
    spec:
      containers:
        - name: my-nginx8
          image: netlab/hello
          ports: [{containerPort: 80}]
"""
SVC = """
apiVersion: v1
kind: Service
metadata: {name: nginx-cluster-svc}
spec:
  selector: {run: my-nginx8}
  ports: [{port: 80}]
"""
SAFE = re.escape(dl.SAFE_ALPHABET)


def dep_doc(**spec_edits) -> dict:
    d = yaml.safe_load(DEP)
    d["spec"].update(spec_edits)
    return d


def lab():
    return labfile.load_lab(None)


# --------------------------------------------------------------------------- naming and hashing
def test_safe_encode_is_kubes_alphabet_mapping():
    # rand.SafeEncodeString: each character's code modulo 27 picks from "bcdf...789".
    assert dl.safe_encode("0123456789") == "456789bcdf"


def test_template_hash_is_stable_and_follows_the_template():
    t = dep_doc()["spec"]["template"]
    h = dl.template_hash(t)
    assert re.fullmatch(f"[{SAFE}]{{1,10}}", h)
    assert dl.template_hash(yaml.safe_load(yaml.safe_dump(t))) == h  # same content, same hash
    t2 = yaml.safe_load(yaml.safe_dump(t))
    t2["spec"]["containers"][0]["args"] = ["--port", "80"]
    assert dl.template_hash(t2) != h
    t3 = yaml.safe_load(yaml.safe_dump(t))
    t3["metadata"]["labels"][dl.HASH_LABEL] = "whatever"
    assert dl.template_hash(t3) == h  # the hash label itself does not count


def test_pod_from_template_is_named_like_a_replicaset_pod():
    dep = {"metadata": {"name": "my-nginx8", "namespace": "default", "uid": "u-1"},
           "spec": dep_doc()["spec"]}
    pod = dl.pod_from_template(dep, dl.random_suffix())
    h = dl.template_hash(dep["spec"]["template"])
    assert re.fullmatch(f"my-nginx8-{h}-[{SAFE}]{{5}}", pod["metadata"]["name"])
    assert pod["metadata"]["labels"] == {"run": "my-nginx8", dl.HASH_LABEL: h}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert dl.owns(dep, pod) and dl.owner_uid(pod) == "u-1"
    assert pod["spec"] == dep["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- honoured fields
def test_unsupported_field_names_its_path():
    d = dep_doc()
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    with pytest.raises(UsageError) as e:
        manifests.parse(yaml.safe_dump(d), "f.yaml")
    msg = str(e.value)
    assert msg.startswith("f.yaml: document 1: deployment my-nginx8: spec.template.spec.volumes: "
                          "not supported by netlab")
    assert msg.endswith("(supported here: containers, nodeName, restartPolicy, dnsPolicy)")  # what is, there


@pytest.mark.parametrize("edit, path", [
    (lambda d: d["spec"].update(strategy={"type": "Recreate"}), "spec.strategy"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(resources={}),
     "spec.template.spec.containers[0].resources"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(hostPort=8080),
     "spec.template.spec.containers[0].ports[0].hostPort"),
    (lambda d: d.update(status={}), "status"),
    (lambda d: d["metadata"].update(uid="x"), "metadata.uid"),
])
def test_every_level_is_checked(edit, path):
    d = dep_doc()
    edit(d)
    with pytest.raises(UsageError, match=re.escape(f"deployment my-nginx8: {path}: not supported by netlab")):
        manifests.parse(yaml.safe_dump(d), "f.yaml")


def test_wrong_types_and_unquoted_label_numbers():
    d = dep_doc(replicas="two")
    with pytest.raises(UsageError, match=r"spec.replicas: expected an integer, got 'two'"):
        manifests.parse(yaml.safe_dump(d), "f")
    d = dep_doc()
    d["spec"]["template"]["metadata"]["labels"]["version"] = 2
    with pytest.raises(UsageError, match=r"spec.template.metadata.labels.version: expected a string \(quote 2\)"):
        manifests.parse(yaml.safe_dump(d), "f")


def test_multi_document_files():
    text = "---\n" + DEP + "\n---\n\n---\n" + SVC
    docs = manifests.parse(text, "f")
    assert [(d.kind, d.name, d.namespace) for d in docs] == [
        ("Deployment", "my-nginx8", "default"), ("Service", "nginx-cluster-svc", "default")]
    assert docs[1].source == "f: document 3"  # numbered as in the file, empty ones included


@pytest.mark.parametrize("text, msg", [
    ("a: [1\n", "f: not valid YAML (line 2)"),
    ("- 1\n", "f: document 1: expected a mapping"),
    ("kind: Pod\n", "f: document 1: apiVersion and kind are required"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "apiVersion/kind v1/ConfigMap is not supported"),
    ("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\n", "apiVersion/kind apps/v1/Pod is not supported"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "f: document 1: pod: metadata.name: required"),
])
def test_bad_documents(text, msg):
    with pytest.raises(UsageError, match=re.escape(msg)):
        manifests.parse(text, "f")


def test_same_object_twice_is_refused(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(DEP + "---\n" + DEP)
    with pytest.raises(UsageError, match="deployment my-nginx8 is also defined in"):
        manifests.load([str(f)])


def test_namespace_flag_and_document_must_agree(tmp_path):
    d = dep_doc()
    d["metadata"]["namespace"] = "other"
    with pytest.raises(UsageError, match="metadata.namespace: 'other' does not match -n prod"):
        manifests.parse(yaml.safe_dump(d), "f", namespace="prod")
    assert manifests.parse(DEP, "f", namespace="prod")[0].namespace == "prod"


def test_docs_list_every_honoured_field():
    text = (Path(__file__).parents[2] / "docs" / "manifests.md").read_text()
    missing = [p for p, _ in manifests.honoured_paths() if f"`{p.split(': ', 1)[1]}`" not in text]
    assert not missing, f"docs/manifests.md does not document {missing}"


# --------------------------------------------------------------------------- deployment validation
def normalise(d):
    return api_dl.normalise(d)


def test_deployment_defaults_and_rules():
    obj = normalise(dep_doc())
    assert obj["metadata"] == {"name": "my-nginx8", "namespace": "default"}
    assert obj["spec"]["replicas"] == 2
    assert normalise(dep_doc(replicas=None))["spec"]["replicas"] is None  # decided at apply
    for edit, msg in [
        (dict(replicas=-1), "spec.replicas: -1 is not a whole number >= 0"),
        (dict(selector={"matchLabels": {"run": "other"}}),
         "spec.template.metadata.labels: do not match spec.selector.matchLabels (run=other)"),
        (dict(selector={}), "spec.selector.matchLabels: required"),
    ]:
        with pytest.raises(UsageError, match=re.escape(msg)):
            normalise(dep_doc(**edit))
    d = dep_doc()
    d["metadata"]["name"] = "x" * 50
    with pytest.raises(UsageError, match="longer than 46"):
        normalise(d)


def test_template_checked_by_the_pod_rules():
    d = dep_doc()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.25"
    with pytest.raises(UsageError, match=r"spec\.template\.spec\.containers\[0\]\.image"):
        normalise(d)


def test_same_desired_ignores_omitted_replicas():
    cur = {"metadata": {"name": "my-nginx8", "namespace": "default"}, "spec": normalise(dep_doc())["spec"]}
    cur["spec"]["replicas"] = 6  # scaled since
    assert api_dl.same_desired(cur, normalise(dep_doc(replicas=None)))
    assert not api_dl.same_desired(cur, normalise(dep_doc()))  # the file says 2
    cur["spec"]["replicas"] = 2
    assert api_dl.same_desired(cur, normalise(dep_doc()))


def test_default_lab_workloads_validate():
    docs = manifests.workload_docs(lab())
    assert [(d.kind, d.name) for d in docs] == [("Deployment", "my-nginx8"), ("Service", "nginx-cluster-svc"),
                                                ("Service", "nginx-nodeport-svc")]
    assert docs[2].obj["spec"]["ports"][0]["nodePort"] == 31295


def test_lab_file_workload_error_names_the_field():
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["workloads"][0]["spec"]["template"]["spec"]["volumes"] = []
    with pytest.raises(UsageError, match=re.escape(
            "workloads[0]: deployment my-nginx8: spec.template.spec.volumes: not supported by netlab")):
        manifests.workload_docs(labfile.parse_lab(yaml.safe_dump(doc)))


# --------------------------------------------------------------------------- the controller's plan
def mkdep(replicas=2, template=None):
    spec = normalise(dep_doc())["spec"]
    if template:
        spec["template"] = template
    spec["replicas"] = replicas
    return {"metadata": {"name": "my-nginx8", "namespace": "default", "uid": "u", "generation": 3},
            "spec": spec, "status": {}}


_rev = iter(range(100, 10_000))


def mkpod(dep, phase="Running", ready=True, node="kub-node-1", thash=None):
    p = dl.pod_from_template(dep, dl.random_suffix())
    if thash:
        p["metadata"]["labels"][dl.HASH_LABEL] = thash
    p["spec"]["nodeName"] = node
    p["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    r = next(_rev)
    return Item(f"/registry/pods/default/{p['metadata']['name']}", p, r, r)


def test_plan_creates_missing_and_replaces_failed():
    dep = mkdep(2)
    assert plan(dep, [])[:2] == (2, [])
    failed = mkpod(dep, phase="Failed", ready=False)
    ok = mkpod(dep)
    create, delete, status = plan(dep, [failed, ok])
    assert create == 1 and delete == [failed]
    assert status["replicas"] == 1 and status["readyReplicas"] == 1 and status["unavailableReplicas"] == 1
    assert status["conditions"][0]["status"] == "False"


def test_plan_scale_down_prefers_unready_and_newest():
    dep = mkdep(1)
    old_ready = mkpod(dep)
    new_ready = mkpod(dep)
    unready = mkpod(dep, ready=False)
    create, delete, _ = plan(dep, [old_ready, new_ready, unready])
    assert create == 0 and delete == [unready, new_ready]


def test_plan_scale_down_keeps_the_spread():
    dep = mkdep(2)
    a1, b1, a2, a3 = mkpod(dep), mkpod(dep, node="kub-node-2"), mkpod(dep), mkpod(dep)
    _, delete, _ = plan(dep, [a1, b1, a2, a3])
    assert delete == [a3, a2]  # kub-node-1 had three: its newest go, one stays on each node


def test_plan_status_when_available():
    dep = mkdep(2)
    _, _, status = plan(dep, [mkpod(dep), mkpod(dep, node="kub-node-2")])
    assert {k: status[k] for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                                   "observedGeneration")} == {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 3}
    assert "unavailableReplicas" not in status and status["conditions"][0]["status"] == "True"


def test_plan_rolls_a_new_template_keeping_old_ready_pods_until_new_ones_are_ready():
    dep = mkdep(2)
    olds = [mkpod(dep, thash="oldhash"), mkpod(dep, thash="oldhash")]
    create, delete, status = plan(dep, olds)
    assert create == 2 and delete == [] and status["updatedReplicas"] == 0
    news = [mkpod(dep, ready=False), mkpod(dep, ready=False)]
    assert plan(dep, olds + news)[:2] == (0, [])
    news[0].value["status"]["conditions"][0]["status"] = "True"
    create, delete, _ = plan(dep, olds + news)
    assert create == 0 and len(delete) == 1 and delete[0] in olds
    news[1].value["status"]["conditions"][0]["status"] = "True"
    assert sorted(i.key for i in plan(dep, olds + news)[1]) == sorted(i.key for i in olds)


# --------------------------------------------------------------------------- CLI: usage errors before root
@pytest.mark.parametrize("args, msg", [
    (["scale", "deployment", "x", "--replicas", "-1"], "--replicas: -1 is not a whole number >= 0"),
    (["scale", "pod", "x", "--replicas", "1"], "scale: KIND 'pod' is not supported (deployment)"),
    (["apply", "-f", "/nonexistent.yaml"], "-f /nonexistent.yaml: No such file or directory"),
    (["delete", "deployment"], "delete: KIND and NAME are required (or -f FILE)"),
    (["delete", "deploy", "x", "-f", "y.yaml"], "delete: give either KIND NAME or -f FILE, not both"),
    (["delete", "frobs", "x"], "delete: unknown kind 'frobs'"),
])
def test_cli_usage_errors_are_exit_2_before_anything(args, msg):
    from typer.testing import CliRunner

    from netlab.cli.app import app

    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, UsageError) and r.exception.exit_code == 2
    assert str(r.exception).startswith(msg)


def test_cli_apply_checks_the_manifest_before_root(tmp_path):
    from typer.testing import CliRunner

    from netlab.cli.app import app

    d = dep_doc()
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {}
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(app, ["apply", "-f", str(f)])
    assert isinstance(r.exception, UsageError)
    assert "spec.template.spec.containers[0].livenessProbe: not supported by netlab" in str(r.exception)
