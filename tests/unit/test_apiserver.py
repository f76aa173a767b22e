"""The API server's pure parts: Table rows, selectors, patches, Status shaping, kubeconfig
merging, discovery/OpenAPI documents, tokens, and what is stripped from incoming objects."""

from __future__ import annotations

import time

import pytest

from netlab.api.http import auth, kubeconfig, objects, patch, resources, selectors, tables
from netlab.api.http import status as S


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (50 * 3600, "2d2h"), (8 * 86400, "8d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y"), (-1, "0s"),
])
def test_human_duration_is_kubernetes_own(seconds, text):
    assert tables.human_duration(seconds) == text


def _pod(**status):
    return {"metadata": {"name": "p", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}], "nodeName": "kub-node-1"}, "status": status}


def test_pod_row_has_kubectls_cells():
    now = tables.parse_time("2026-01-01T00:05:00Z")
    pod = _pod(phase="Running", podIP="10.1.1.4",
               conditions=[{"type": "Ready", "status": "True"}],
               containerStatuses=[{"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}}])
    assert tables.pod_row(pod, now) == ["p", "1/1", "Running", "0", "5m", "10.1.1.4", "kub-node-1", "<none>", "<none>"]


def test_pod_row_restarts_say_when():
    now = tables.parse_time("2026-01-01T00:10:00Z")
    pod = _pod(phase="Running", containerStatuses=[{
        "name": "a", "ready": False, "restartCount": 2,
        "lastState": {"terminated": {"finishedAt": "2026-01-01T00:09:00Z"}}, "state": {"running": {}}}])
    assert tables.pod_row(pod, now)[3] == "2 (60s ago)"


def test_service_row_and_wide_selector():
    svc = {"metadata": {"name": "nginx-nodeport-svc", "creationTimestamp": None},
           "spec": {"type": "NodePort", "clusterIP": "192.1.88.35", "selector": {"run": "my-nginx8"},
                    "ports": [{"port": 80, "nodePort": 31295, "protocol": "TCP"}]}}
    assert tables.service_row(svc, time.time()) == ["nginx-nodeport-svc", "NodePort", "192.1.88.35", "<none>",
                                                    "80:31295/TCP", "<unknown>", "run=my-nginx8"]


def test_table_has_priority_one_columns_for_wide_and_partial_metadata():
    t = tables.table("pods", [_pod(phase="Pending")], "42")
    names = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert names[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert [n for n, p in names if p == 1] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert t["metadata"]["resourceVersion"] == "42"


def test_endpoints_cell_shows_three_then_more():
    ep = {"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)],
                                                  "ports": [{"port": 80}]}]}
    assert tables.endpoints_row(ep, time.time())[1] == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."


# --------------------------------------------------------------------------- selectors
@pytest.mark.parametrize("sel,labels,ok", [
    ("run=x", {"run": "x"}, True), ("run==x", {"run": "y"}, False), ("run!=x", {}, True),
    ("a in (x, y),b", {"a": "y", "b": "1"}, True), ("a notin (x)", {"a": "x"}, False),
    ("!a", {"a": "1"}, False), ("a", {}, False), ("", {"z": "1"}, True),
])
def test_label_selector(sel, labels, ok):
    assert selectors.label_selector(sel)(labels) is ok


def test_field_selector_and_unsupported_field():
    m = selectors.field_selector("spec.nodeName=kub-node-1,status.phase!=Failed", ("spec.nodeName", "status.phase"))
    assert m({"spec": {"nodeName": "kub-node-1"}, "status": {"phase": "Running"}})
    assert not m({"spec": {"nodeName": "kub-node-2"}, "status": {"phase": "Running"}})
    with pytest.raises(ValueError, match="field label not supported: spec.hostname"):
        selectors.field_selector("spec.hostname=x", ("spec.nodeName",))


def test_malformed_label_selector_is_an_error():
    with pytest.raises(ValueError):
        selectors.label_selector("a in (x")


# --------------------------------------------------------------------------- patches
DEP = {"metadata": {"name": "d", "labels": {"a": "1", "b": "2"}},
       "spec": {"replicas": 1, "template": {"spec": {"containers": [
           {"name": "c1", "image": "i1", "env": [{"name": "X", "value": "1"}]},
           {"name": "c2", "image": "i2"}]}}}}


def test_merge_patch_replaces_lists_and_null_deletes():
    out = patch.merge_patch(DEP, {"metadata": {"labels": {"a": None}}, "spec": {"replicas": 3}})
    assert out["metadata"]["labels"] == {"b": "2"} and out["spec"]["replicas"] == 3
    assert DEP["metadata"]["labels"] == {"a": "1", "b": "2"}  # the input is left alone


def test_strategic_merge_merges_containers_by_name():
    p = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}],
                                        "containers": [{"name": "c2", "image": "new"}]}}}}
    cs = patch.strategic_merge(DEP, p)["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in cs] == [("c1", "i1"), ("c2", "new")]
    assert cs[0]["env"] == [{"name": "X", "value": "1"}]


def test_strategic_merge_delete_directive_and_replace():
    p = {"spec": {"template": {"spec": {"containers": [{"name": "c1", "$patch": "delete"}]}}}}
    cs = patch.strategic_merge(DEP, p)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["c2"]
    out = patch.strategic_merge(DEP, {"metadata": {"labels": {"$patch": "replace", "z": "9"}}})
    assert out["metadata"]["labels"] == {"z": "9"}


def test_json_patch_and_bad_ops():
    out = patch.json_patch(DEP, [{"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert out["spec"]["replicas"] == 4
    with pytest.raises(patch.PatchError):
        patch.json_patch(DEP, [{"op": "remove", "path": "/spec/nothere"}])
    with pytest.raises(patch.PatchError, match="not supported"):
        patch.apply("application/x-unknown", DEP, {})


# --------------------------------------------------------------------------- Status
def test_not_found_is_kube_apiservers():
    e = S.not_found("pods", "x")
    assert e.code == 404
    assert e.body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": 'pods "x" not found', "reason": "NotFound", "code": 404,
                      "details": {"name": "x", "kind": "pods"}}
    assert S.already_exists("deployments", "d", "apps").body["message"] == 'deployments.apps "d" already exists'


def test_invalid_names_the_field():
    e = S.invalid("Pod", "bad", "spec.containers[0].image: 'nginx' is not available in netlab")
    assert e.code == 422 and e.body["reason"] == "Invalid"
    assert e.body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.containers[0].image",
                                            "message": "'nginx' is not available in netlab"}]
    assert e.body["message"].startswith('Pod "bad" is invalid: spec.containers[0].image: ')


# --------------------------------------------------------------------------- kubeconfig
def test_kubeconfig_merge_keeps_others_and_remove_undoes_it():
    mine = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
            "clusters": [{"name": "work", "cluster": {"server": "https://w"}}],
            "users": [{"name": "work", "user": {}}], "contexts": [{"name": "work", "context": {}}]}
    lab = kubeconfig.build("seed", "https://127.0.0.1:6443", b"PEM", "tok")
    merged = kubeconfig.merge(mine, lab)
    assert merged["current-context"] == "netlab-seed"
    assert [c["name"] for c in merged["clusters"]] == ["work", "netlab-seed"]
    assert kubeconfig.merge(merged, lab) == merged  # twice: one entry each
    back = kubeconfig.remove(merged, "seed")
    assert [c["name"] for c in back["contexts"]] == ["work"] and back["current-context"] == ""
    assert kubeconfig.remove(mine, "seed") is None


# --------------------------------------------------------------------------- discovery
def test_openapi_v3_tells_kubectl_the_server_validates_fields():
    doc = resources.openapi_v3("apps/v1")
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in [p["name"] for p in op["parameters"]]
    root = resources.openapi_v3_root()["paths"]
    assert set(root) == {"api/v1", "apis/apps/v1", "apis/discovery.k8s.io/v1"}
    assert root["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")


def test_resource_list_has_scale_subresource_in_autoscaling():
    rl = resources.resource_list("apps/v1")["resources"]
    scale = next(r for r in rl if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert next(r for r in resources.resource_list("v1")["resources"] if r["name"] == "pods")["shortNames"] == ["po"]


# --------------------------------------------------------------------------- tokens
def test_tokens():
    t = auth.Tokens("admin-secret", "key")
    assert t.user("admin-secret") == "kubernetes-admin"
    good = auth.sa_token("key", "default")
    assert t.user(good) == "system:serviceaccount:default:default"
    assert t.user(good[:-1] + ("0" if good[-1] != "0" else "1")) is None
    assert t.user(auth.sa_token("other-key", "default")) is None
    assert t.user("") is None


# --------------------------------------------------------------------------- incoming objects
def test_what_kubectl_run_sends_is_reduced_to_what_netlab_honours():
    sent = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"creationTimestamp": None, "labels": {"run": "x"}, "name": "x"},
            "spec": {"containers": [{"image": "netlab/hello", "name": "x", "resources": {},
                                     "imagePullPolicy": "IfNotPresent",
                                     "terminationMessagePath": "/dev/termination-log"}],
                     "dnsPolicy": "ClusterFirst", "restartPolicy": "Always"},
            "status": {}}
    assert objects.incoming("pods", sent) == {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"run": "x"}, "name": "x"},
        "spec": {"containers": [{"image": "netlab/hello", "name": "x"}], "restartPolicy": "Always"}}


def test_non_default_values_stay_to_be_refused():
    sent = {"spec": {"dnsPolicy": "Default", "containers": []}}
    assert objects.incoming("pods", sent)["spec"]["dnsPolicy"] == "Default"
    with pytest.raises(S.ApiError) as e:
        objects.incoming("pods", ["not", "an", "object"])
    assert e.value.code == 400


# --------------------------------------------------------------------------- protobuf bodies
DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_protobuf_bodies_kubectl_v132_sent_decode_to_their_json_form():
    from netlab.api.http import protobuf

    dep = protobuf.decode((DATA / "kubectl-create-deployment.pb").read_bytes())  # create deployment cd1 --replicas=2
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"] == {"name": "cd1", "labels": {"app": "cd1"}}
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["selector"] == {"matchLabels": {"app": "cd1"}}
    assert dep["spec"]["template"]["spec"]["containers"] == [
        {"name": "hello", "image": "netlab/hello", "ports": [{"containerPort": 80}], "resources": {}}]
    svc = protobuf.decode((DATA / "kubectl-create-service-nodeport.pb").read_bytes())  # --tcp=80:8080
    assert svc["spec"] == {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                           "selector": {"app": "np1"}, "type": "NodePort"}
    assert protobuf.decode((DATA / "kubectl-create-namespace.pb").read_bytes())["metadata"] == {"name": "demo"}


def test_protobuf_refuses_what_it_does_not_know():
    from netlab.api.http import protobuf

    with pytest.raises(protobuf.ProtobufError, match="no k8s"):
        protobuf.decode(b'{"kind": "Pod"}')
    body = (DATA / "kubectl-create-namespace.pb").read_bytes()
    with pytest.raises(protobuf.ProtobufError, match="truncated"):
        protobuf.decode(body[:-3])
    # a ConfigMap (kind not honoured) is refused as such
    cm = body.replace(b"\x09Namespace", b"\x09ConfigMap")
    with pytest.raises(protobuf.ProtobufError, match="ConfigMap"):
        protobuf.decode(cm)
