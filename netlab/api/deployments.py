"""Deployments (apps/v1): the API side of the object and its roll-out status.

Owns what the API server does with a Deployment: validation and defaults, create / update /
scale / delete under /registry/deployments/<ns>/<name> with compare-and-swap, and the waits
for a roll-out and for its pods to go. The pure rules it shares with the deployment
controller (template hash, pod names, the pod a template makes) are netlab.plan.deployments;
pods themselves are created and deleted through netlab.api.pods.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from netlab import store
from netlab.api import pods
from netlab.api.meta import check_annotations, check_labels, check_name, matches, pod_gone, pod_ready
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.plan.deployments import (
    API_VERSION,
    HASH_LABEL,
    KIND,
    MAX_NAME,
    owns,
    replicas_problem,
    selector_string,
    template_hash,
)
from netlab.store import Store


def key(namespace: str, name: str) -> str:
    return f"{store.DEPLOYMENTS}{namespace}/{name}"


# --------------------------------------------------------------------------- validation
def normalise(doc: dict, where: str = "") -> dict:
    """Validate an apps/v1 Deployment (already limited to honoured fields) and add defaults.

    Returns {apiVersion, kind, metadata: {name, namespace, labels?, annotations?}, spec}.
    The pod template's own rules (images, commands, ports) are checked by netlab.api.pods.
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
        out_tmeta["annotations"] = check_annotations(tmeta["annotations"], f"{p}spec.template.metadata.annotations")
    out_meta: dict[str, Any] = {"name": name, "namespace": ns}
    if meta.get("labels"):
        out_meta["labels"] = check_labels(meta["labels"], f"{p}metadata.labels")
    if meta.get("annotations"):
        out_meta["annotations"] = check_annotations(meta["annotations"], f"{p}metadata.annotations")
    pod_spec = _pod_spec(tmpl["spec"], name, ns, tlabels, f"{p}spec.template.spec")
    return {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": out_meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                 "template": {"metadata": out_tmeta, "spec": pod_spec}},
    }


def _pod_spec(spec: dict, dep_name: str, ns: str, labels: dict, path: str) -> dict:
    """The template's pod spec, validated and defaulted by the pods module's own rules."""
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


def check_replicas(lab, replicas: int | None, path: str = "spec.replicas") -> None:
    """Refuse a count far beyond what the lab can run (UsageError naming `path`)."""
    why = replicas_problem(replicas, lab.total_pod_capacity)
    if why:
        raise UsageError(f"{path}: {why}")


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
