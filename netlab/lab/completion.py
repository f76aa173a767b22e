"""Shell completion of names from the running lab: nodes, pods, services, deployments.

Cheap on purpose (a completion runs at every TAB): nodes come from the running lab's copy
of its lab file, everything else from one request to the lab's API server on its loopback
port; nothing here imports etcd or pyroute2. Without root (the lab's files are root-only)
or without a running lab, nothing is offered.
"""

from __future__ import annotations

import json
import ssl
import urllib.request

import yaml

from netlab import names

KIND_RESOURCE = {
    "pod": "pods", "pods": "pods", "po": "pods", "svc": "services", "service": "services",
    "services": "services", "endpoints": "endpoints", "ep": "endpoints", "deploy": "deployments",
    "deployment": "deployments", "deployments": "deployments", "node": "nodes", "nodes": "nodes", "no": "nodes",
}


def _labs() -> list[str]:
    try:
        return sorted(d.name for d in names.RUN_ROOT.iterdir() if (d / "lab.yaml").exists())
    except OSError:
        return []


def _lab(ctx_lab: str | None) -> str | None:
    if ctx_lab:
        return ctx_lab
    labs = _labs()
    return labs[0] if len(labs) == 1 else (names.DEFAULT_LAB if names.DEFAULT_LAB in labs else None)


def node_names(lab: str | None) -> list[str]:
    lab = _lab(lab)
    if lab is None:
        return []
    try:
        doc = yaml.safe_load(names.lab_copy(lab).read_text())
        return [n["name"] for n in doc.get("nodes") or []]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []


def api_names(lab: str | None, resource: str, namespace: str = "default") -> list[str]:
    """Names of one resource from the lab's API server (all namespaces: ns/name outside `namespace`)."""
    lab = _lab(lab)
    if lab is None:
        return []
    pki = names.state_dir(lab) / "pki"
    try:
        port = int((names.state_dir(lab) / "apiserver.port").read_text())
        token = (pki / "admin.token").read_text().strip()
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        path = f"/api/v1/{resource}" if resource != "deployments" else "/apis/apps/v1/deployments"
        rq = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(rq, context=ctx, timeout=2) as r:  # noqa: S310 - the lab's own API server
            items = json.loads(r.read())["items"]
    except (OSError, ValueError, KeyError, ssl.SSLError):
        return []
    out = []
    for i in items:
        m = i.get("metadata") or {}
        ns = m.get("namespace")
        out.append(m["name"] if ns in (None, namespace) else f"{ns}/{m['name']}")
    return out


def complete(candidates: list[str], incomplete: str) -> list[str]:
    return [c for c in candidates if c.startswith(incomplete)]


def exec_targets(lab: str | None, incomplete: str) -> list[str]:
    if incomplete.startswith("pod/"):
        return complete([f"pod/{p}" for p in api_names(lab, "pods")], incomplete)
    if incomplete.startswith("node/"):
        return complete([f"node/{n}" for n in node_names(lab)], incomplete)
    return complete([*node_names(lab), "external", "pod/", "node/"], incomplete)


def kind_names(lab: str | None, kind: str | None, incomplete: str, namespace: str = "default") -> list[str]:
    resource = KIND_RESOURCE.get((kind or "").lower())
    if resource is None:
        return []
    if resource == "nodes":
        return complete(node_names(lab), incomplete)
    return complete(api_names(lab, resource, namespace), incomplete)
