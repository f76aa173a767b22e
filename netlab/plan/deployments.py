"""Deployments, the pure rules: pod-template hash, pod names, owner references, the pod a
template makes. Shared by the API side (netlab/api/deployments.py) and the deployment
controller (netlab/agent/deployments.py); no store, no kernel.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

API_VERSION = "apps/v1"
KIND = "Deployment"
HASH_LABEL = "pod-template-hash"
# Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words), no confusable 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Pod names are <deployment>-<hash (up to 10)>-<5>; keep them DNS labels (63).
MAX_NAME = 63 - 1 - 10 - 1 - 5


# The ReplicaSet controller's burstReplicas: at most this many pods created per sync.
BURST_REPLICAS = 500
# Refused outright (422 / exit 2 naming spec.replicas): beyond this, or beyond
# CAPACITY_FACTOR times what the lab's workers can hold, a count is a typo, not a plan.
MAX_REPLICAS = 10_000
CAPACITY_FACTOR = 10


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """The ReplicaSet controller's slowStartBatch sizes: 1, 2, 4, ... summing to `count`, so
    a failing create costs one call, not `count`."""
    out, size = [], initial
    while count > 0:
        out.append(min(size, count))
        count -= out[-1]
        size *= 2
    return out


def replicas_problem(replicas: int | None, capacity: int) -> str | None:
    """Why a replica count is refused, or None. `capacity`: pods the lab's workers can hold."""
    if replicas is None:
        return None
    limit = min(MAX_REPLICAS, CAPACITY_FACTOR * capacity)
    if replicas > limit:
        return (f"{replicas} is more than netlab allows ({limit}: at most {MAX_REPLICAS}, and at most "
                f"{CAPACITY_FACTOR} times the {capacity} pods the lab's workers can hold)")
    return None


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


def selector_string(dep: dict) -> str:
    ml = (dep["spec"].get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(ml.items()))
