"""Deployments (apps/v1): the API side of the object, its pods' names, and its status summary.

Owns what the CLI (as the API server) does with a Deployment: validation and defaults,
create / update / scale / delete under /registry/deployments/<ns>/<name> with compare-and-swap,
and the pure rules the deployment controller (netlab/agent/deployments.py) shares with it:
the pod-template hash, pod names as a ReplicaSet makes them (`<deployment>-<hash>-<5 chars>`),
the pod built from the template, and which pods a deployment owns. Pods themselves are
created and deleted through netlab/pods.py.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
import uuid
from typing import Any

from netlab import store
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.store import Store

API_VERSION = "apps/v1"
KIND = "Deployment"
HASH_LABEL = "pod-template-hash"
# Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words), no confusable 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Pod names are <deployment>-<hash (up to 10)>-<5>; keep them DNS labels (63).
MAX_NAME = 63 - 1 - 10 - 1 - 5


def key(namespace: str, name: str) -> str:
    return f"{store.DEPLOYMENTS}{namespace}/{name}"


# --------------------------------------------------------------------------- pure rules
def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in s)


def template_hash(template: dict) -> str:
    """kube's ComputeHash: fnv32a of the template, printed in decimal, safe-encoded.

    Kubernetes hashes its Go struct dump; we hash canonical JSON of the normalised template
    (without the hash label itself), which is just as stable and changes when it should.
    """
    t = copy.deepcopy(template)
    (t.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    canon = json.dumps(t, sort_keys=True, separators=(",", ":")).encode()
    return safe_encode(str(_fnv32a(canon)))


def random_suffix(rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(SAFE_ALPHABET) for _ in range(5))


def pod_name(deployment: str, thash: str, suffix: str) -> str:
    return f"{deployment}-{thash}-{suffix}"


def owner_reference(dep: dict) -> dict:
    # netlab has no ReplicaSet objects: the deployment owns its pods directly.
    return {"apiVersion": API_VERSION, "kind": KIND, "name": dep["metadata"]["name"],
            "uid": dep["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owner_uid(pod: dict) -> str | None:
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return ref.get("uid")
    return None


def owns(dep: dict, pod: dict) -> bool:
    return (pod.get("metadata", {}).get("namespace") == dep["metadata"]["namespace"]
            and owner_uid(pod) == dep["metadata"]["uid"])


def pod_from_template(dep: dict, suffix: str) -> dict:
    """The Pod a deployment's controller creates: template labels + pod-template-hash."""
    tmpl = dep["spec"]["template"]
    thash = template_hash(tmpl)
    meta = tmpl.get("metadata") or {}
    pod_meta: dict[str, Any] = {
        "name": pod_name(dep["metadata"]["name"], thash, suffix),
        "namespace": dep["metadata"]["namespace"],
        "labels": {**(meta.get("labels") or {}), HASH_LABEL: thash},
        "ownerReferences": [owner_reference(dep)],
    }
    if meta.get("annotations"):
        pod_meta["annotations"] = dict(meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(tmpl["spec"])}


def pod_ready(pod: dict) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def pod_gone(pod: dict) -> bool:
    """Failed, finished or being deleted: no longer counts towards the replica count."""
    st = pod.get("status") or {}
    return (st.get("phase") in ("Failed", "Succeeded")
            or bool(pod.get("metadata", {}).get("deletionTimestamp")))


def selector_string(dep: dict) -> str:
    ml = (dep["spec"].get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(ml.items()))


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- validation
def check_name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{path}: required (a DNS label: lower-case letters, digits, '-')")
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise UsageError(f"{path}: '{value}' is not a DNS label (lower-case letters, digits, '-', at most 63)")
    return value


def check_labels(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: must be a mapping of label keys to values")
    out = {}
    for k, v in value.items():
        k = str(k)
        prefix, _, name = k.rpartition("/")
        if (not LABEL_KEY_NAME.match(name) or len(name) > 63
                or (prefix and not DNS1123_SUBDOMAIN.match(prefix))):
            raise UsageError(f"{path}: '{k}' is not a valid label key")
        if isinstance(v, bool) or v is None or not isinstance(v, (str, int, float)):
            raise UsageError(f"{path}.{k}: label values are strings (quote {v!r})")
        v = str(v)
        if len(v) > 63 or not LABEL_VALUE.match(v):
            raise UsageError(f"{path}.{k}: '{v}' is not a valid label value")
        out[k] = v
    return out


def normalise(doc: dict, where: str = "") -> dict:
    """Validate an apps/v1 Deployment (already limited to honoured fields) and add defaults.

    Returns {apiVersion, kind, metadata: {name, namespace, labels?, annotations?}, spec}.
    The pod template's own rules (images, commands, ports) are checked by netlab.pods.
    """
    p = where
    meta = doc.get("metadata") or {}
    name = check_name(meta.get("name"), f"{p}metadata.name")
    if len(name) > MAX_NAME:
        raise UsageError(f"{p}metadata.name: '{name}' is longer than {MAX_NAME} characters "
                         "(its pods are named <name>-<hash>-<5 characters>, at most 63)")
    ns = check_name(meta.get("namespace", "default"), f"{p}metadata.namespace")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise UsageError(f"{p}spec: required")
    replicas = spec.get("replicas")  # None: 1 on create, unchanged on update (as kubectl apply)
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0):
        raise UsageError(f"{p}spec.replicas: {replicas!r} is not a whole number >= 0")
    sel = (spec.get("selector") or {}).get("matchLabels")
    if not sel:
        raise UsageError(f"{p}spec.selector.matchLabels: required (apps/v1 needs a selector)")
    sel = check_labels(sel, f"{p}spec.selector.matchLabels")
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict):
        raise UsageError(f"{p}spec.template.spec: required")
    tmeta = tmpl.get("metadata") or {}
    tlabels = check_labels(tmeta.get("labels"), f"{p}spec.template.metadata.labels")
    if not matches(sel, tlabels):
        raise UsageError(f"{p}spec.template.metadata.labels: do not match spec.selector.matchLabels "
                         f"({', '.join(f'{k}={v}' for k, v in sel.items())})")
    if HASH_LABEL in tlabels:
        raise UsageError(f"{p}spec.template.metadata.labels.{HASH_LABEL}: set by netlab, not by the manifest")
    out_tmeta: dict[str, Any] = {"labels": tlabels}
    if tmeta.get("annotations"):
        out_tmeta["annotations"] = check_labels_any(tmeta["annotations"], f"{p}spec.template.metadata.annotations")
    out_meta: dict[str, Any] = {"name": name, "namespace": ns}
    if meta.get("labels"):
        out_meta["labels"] = check_labels(meta["labels"], f"{p}metadata.labels")
    if meta.get("annotations"):
        out_meta["annotations"] = check_labels_any(meta["annotations"], f"{p}metadata.annotations")
    pod_spec = _pod_spec(tmpl["spec"], name, ns, tlabels, f"{p}spec.template.spec")
    return {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": out_meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                 "template": {"metadata": out_tmeta, "spec": pod_spec}},
    }


def check_labels_any(value: Any, path: str) -> dict[str, str]:
    """Annotations: any string values."""
    if not isinstance(value, dict):
        raise UsageError(f"{path}: must be a mapping of strings")
    return {str(k): str(v) for k, v in value.items()}


def _pod_spec(spec: dict, dep_name: str, ns: str, labels: dict, path: str) -> dict:
    """The template's pod spec, validated and defaulted by the pods module's own rules."""
    from netlab import pods

    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{dep_name}-hash-xxxxx", "namespace": ns, "labels": labels},
             "spec": copy.deepcopy(spec)}
    try:
        checked = pods.validate_pod(probe)
    except UsageError as e:
        # pods names its paths from the pod's root ("spec.containers[0].image"); ours is the template's.
        msg = str(e)
        msg = msg.replace("spec.", path + ".", 1) if msg.startswith("spec.") else f"{path}: {msg}"
        raise UsageError(msg) from None
    return checked["spec"]


# --------------------------------------------------------------------------- store operations
def get(st: Store, namespace: str, name: str) -> store.Item | None:
    return st.get(key(namespace, name))


def list_deployments(st: Store, namespace: str | None = None) -> list[dict]:
    prefix = store.DEPLOYMENTS + (f"{namespace}/" if namespace else "")
    return [i.value for i in st.list(prefix)]


def same_desired(current: dict, desired: dict) -> bool:
    """Would applying `desired` change `current`? Compares labels, annotations and spec."""
    cm, dm = current["metadata"], desired["metadata"]
    return (cm.get("labels") or {}) == (dm.get("labels") or {}) \
        and (cm.get("annotations") or {}) == (dm.get("annotations") or {}) \
        and current["spec"] == _spec_for(desired, current)


def _spec_for(desired: dict, current: dict | None) -> dict:
    spec = copy.deepcopy(desired["spec"])
    if spec["replicas"] is None:  # omitted in the manifest: keep what scale set
        spec["replicas"] = current["spec"]["replicas"] if current else 1
    return spec


def apply(st: Store, desired: dict) -> tuple[str, dict]:
    """Create or update; returns ("created"|"configured"|"unchanged", stored object)."""
    ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    k = key(ns, name)
    for _ in range(20):
        item = st.get(k)
        if item is None:
            obj = {
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {**desired["metadata"], "uid": str(uuid.uuid4()),
                             "creationTimestamp": store.now_rfc3339(), "generation": 1},
                "spec": _spec_for(desired, None),
                "status": {"observedGeneration": 0, "replicas": 0, "updatedReplicas": 0,
                           "readyReplicas": 0, "availableReplicas": 0},
            }
            if st.create(k, obj):
                return "created", obj
            continue
        cur = item.value
        if same_desired(cur, desired):
            return "unchanged", cur
        obj = copy.deepcopy(cur)
        spec = _spec_for(desired, cur)
        if spec["selector"] != cur["spec"]["selector"]:
            raise UsageError(f"deployment {name}: spec.selector is immutable "
                             f"(is {selector_string(cur)}); delete the deployment first")
        obj["spec"] = spec
        for field in ("labels", "annotations"):
            obj["metadata"].pop(field, None)
            if desired["metadata"].get(field):
                obj["metadata"][field] = desired["metadata"][field]
        if obj["spec"] != cur["spec"]:
            obj["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        if st.update(k, obj, item.mod_revision):
            return "configured", obj
    raise NetlabError(f"deployment {name}: too many concurrent changes, try again")


def scale(st: Store, namespace: str, name: str, replicas: int) -> dict:
    if replicas < 0:
        raise UsageError(f"--replicas: {replicas} is not a whole number >= 0")
    k = key(namespace, name)
    for _ in range(20):
        item = st.get(k)
        if item is None:
            raise NotFound(f'deployments.apps "{name}" not found in namespace {namespace}')
        obj = item.value
        if obj["spec"]["replicas"] == replicas:
            return obj
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        if st.update(k, obj, item.mod_revision):
            return obj
    raise NetlabError(f"deployment {name}: too many concurrent changes, try again")


def delete(st: Store, namespace: str, name: str) -> list[str] | None:
    """Delete the deployment and its pods (garbage collection in the foreground).

    Returns the names of the pods deleted, or None if there was no such deployment. The
    controller also removes pods whose owner is gone, which covers a pod it was creating
    at this very moment.
    """
    from netlab import pods

    item = get(st, namespace, name)
    if item is None:
        return None
    st.delete(key(namespace, name))
    gone = []
    for pod in pods.list_pods(st, namespace):
        if owns(item.value, pod):
            pods.delete_pod(st, namespace, pod["metadata"]["name"])
            gone.append(pod["metadata"]["name"])
    return gone


# --------------------------------------------------------------------------- waiting
def rolled_out(dep: dict, owned_pods: list[dict]) -> bool:
    """Every replica of the current template is ready and nothing else is left."""
    thash = template_hash(dep["spec"]["template"])
    want = dep["spec"]["replicas"]
    current = [p for p in owned_pods if p["metadata"].get("labels", {}).get(HASH_LABEL) == thash
               and not pod_gone(p)]
    # Every owned pod counts, terminating ones too: after scale 6 -> 1, one pod is listed.
    return len(owned_pods) == want and len(current) == want and all(pod_ready(p) for p in current)


def wait_rolled_out(st: Store, namespace: str, name: str, timeout: float) -> dict:
    """Block until `rolled_out`; NetlabError naming what is missing on timeout."""
    from netlab import pods

    deadline = time.monotonic() + timeout
    while True:
        item = get(st, namespace, name)
        if item is None:
            raise NetlabError(f"deployment {name} was deleted while waiting for it")
        owned = [p for p in pods.list_pods(st, namespace) if owns(item.value, p)]
        if rolled_out(item.value, owned):
            return item.value
        if time.monotonic() >= deadline:
            ready = sum(pod_ready(p) for p in owned)
            raise NetlabError(f"deployment {name}: {ready}/{item.value['spec']['replicas']} pods ready "
                              f"after {timeout:.0f}s ({len(owned)} pods exist); "
                              "see `netlab get pods -o wide` and the agents' logs")
        time.sleep(0.1)


def wait_pods_gone(st: Store, namespace: str, names_: list[str], timeout: float) -> None:
    from netlab import pods

    deadline = time.monotonic() + timeout
    left = set(names_)
    while left:
        present = {p["metadata"]["name"] for p in pods.list_pods(st, namespace)}
        left &= present
        if not left:
            return
        if time.monotonic() >= deadline:
            raise NetlabError(f"pods still present after {timeout:.0f}s: {', '.join(sorted(left))}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- listing
def row(dep: dict, wide: bool) -> list:
    from netlab import output

    st = dep.get("status") or {}
    r = [dep["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{dep['spec']['replicas']}",
         st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
         output.age(dep["metadata"].get("creationTimestamp"))]
    if wide:
        cs = dep["spec"]["template"]["spec"].get("containers", [])
        r += [",".join(c["name"] for c in cs), ",".join(c.get("image") or "<none>" for c in cs),
              selector_string(dep)]
    return r


HEADERS = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
WIDE_HEADERS = HEADERS + ["CONTAINERS", "IMAGES", "SELECTOR"]
