"""kubeconfig documents: the lab's own, and merging it into (or out of) a user's, as kind does.

Pure: dicts in, dicts out; reading and writing the user's file is the lab layer's job.
"""

from __future__ import annotations

import base64
import copy


def context_name(lab: str) -> str:
    return f"netlab-{lab}"


def build(lab: str, server: str, ca_pem: bytes, token: str) -> dict:
    name = context_name(lab)
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server,
                                                "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }


def _upsert(items: list, entry: dict) -> list:
    return [i for i in items if i.get("name") != entry["name"]] + [entry]


def merge(existing: dict | None, lab_cfg: dict) -> dict:
    """`existing` with the lab's cluster, user and context added (replacing older ones of
    the same name) and made current."""
    out = copy.deepcopy(existing) if isinstance(existing, dict) and existing else \
        {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    for section in ("clusters", "users", "contexts"):
        items = out.get(section) or []
        for entry in lab_cfg[section]:
            items = _upsert(items, entry)
        out[section] = items
    out["current-context"] = lab_cfg["current-context"]
    return out


def remove(existing: dict | None, lab: str) -> dict | None:
    """`existing` without the lab's entries; None if there was nothing of the lab in it."""
    if not isinstance(existing, dict):
        return None
    name = context_name(lab)
    if not any(i.get("name") == name for s in ("clusters", "users", "contexts") for i in existing.get(s) or []):
        return None
    out = copy.deepcopy(existing)
    for section in ("clusters", "users", "contexts"):
        out[section] = [i for i in out.get(section) or [] if i.get("name") != name]
    if out.get("current-context") == name:
        out["current-context"] = ""
    return out
