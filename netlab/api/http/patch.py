"""The three patch types of `PATCH`: JSON merge patch, JSON patch, strategic merge patch.

Strategic merge patch is Kubernetes' own: lists of named things (containers, ports, env,
...) merge element by element on a merge key instead of being replaced, and `$patch`,
`$setElementOrder/...`, `$retainKeys` and `$deleteFromPrimitiveList/...` directives say
what to do. kubectl's client-side `apply` sends one. Pure functions over JSON values.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

# Merge keys of the lists netlab's objects hold (from the Kubernetes types' patchMergeKey).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name",
    "conditions": "type", "ownerReferences": "uid", "addresses": "type",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
}
MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 (through the jsonpatch library)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, ops)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
        raise PatchError(f"the JSON patch could not be applied: {e}") from None


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":  # container ports merge on containerPort, service ports on port
        probe = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in probe else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    p = dict(patch)
    directive = p.pop("$patch", None)
    if directive == "replace":
        return _strip(p)
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch directive $patch: {directive!r}")
    retain = p.pop("$retainKeys", None)
    out = copy.deepcopy(target)
    for k in list(p):
        if k.startswith("$setElementOrder/"):
            p.pop(k)
        elif k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            drop = p.pop(k) or []
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in drop]
    for k, v in p.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _merge_list(k, out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        for k in list(out):
            if k not in retain:
                out.pop(k)
    return out


def _merge_list(field: str, cur: Any, patch: list) -> list:
    mk = _merge_key(field, patch + (cur if isinstance(cur, list) else []))
    if not isinstance(cur, list) or mk is None or not all(isinstance(i, dict) for i in patch):
        # Lists without a merge key are replaced (as Kubernetes does for atomic lists).
        if len(patch) == 1 and isinstance(patch[0], dict) and patch[0].get("$patch") == "replace":
            return []
        return [_strip(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    out = copy.deepcopy(cur)
    for item in patch:
        if item.get("$patch") == "replace" and len(item) == 1:
            return [_strip(i) for i in patch if i is not item]
        key = item.get(mk)
        idx = next((n for n, c in enumerate(out) if isinstance(c, dict) and c.get(mk) == key), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip(item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _strip(v: Any) -> Any:
    """A patch value without directives, as it lands in the object."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if not k.startswith("$") and x is not None}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def apply(content_type: str, target: dict, body: Any) -> dict:
    ct = content_type.split(";")[0].strip()
    if ct == MERGE:
        out = merge_patch(target, body)
    elif ct == JSON:
        out = json_patch(target, body)
    elif ct == STRATEGIC:
        out = strategic_merge(target, body)
    else:
        raise PatchError(f"the patch type {ct!r} is not supported")
    if not isinstance(out, dict):
        raise PatchError("the patched object is not an object")
    return out
