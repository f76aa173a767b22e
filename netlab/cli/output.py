"""Printing in kubectl's manner: plain tables by default, `-o wide`, `-o json|yaml`.

Lists of objects print as a Kubernetes `List` with `items`; a single object prints as itself.
Owns the table rows of every `get KIND` (kubectl's columns and words).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import yaml
from rich.console import Console

from netlab.api import nodes
from netlab.api.pods import status_text
from netlab.plan.deployments import selector_string

FORMATS = ("table", "wide", "json", "yaml")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """kubectl's plain table: columns padded to width, three spaces apart, never cut."""
    cells = [list(headers)] + [["<none>" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def dump(obj: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2))
    else:
        print(yaml.safe_dump(obj, sort_keys=False), end="")


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def age(ts: float | str | None) -> str:
    """kubectl's AGE column (5s, 3m, 2h, 4d)."""
    if ts is None:
        return "<unknown>"
    if isinstance(ts, str):
        ts = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    s = max(0, int(time.time() - ts))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def print_list(args, items: list[dict], headers: list[str], rows: list[list]) -> None:
    """What `get KIND` prints: the object(s) as json/yaml, or kubectl's table (-A adds NAMESPACE)."""
    if args.fmt in ("json", "yaml"):
        dump(items[0] if args.name else as_list(items), args.fmt)
        return
    if not items:
        where = "any namespace" if args.all_namespaces else f"{args.namespace} namespace"
        err.print(f"No resources found in {where}.")
        return
    if args.all_namespaces:
        headers = ["NAMESPACE", *headers]
        rows = [[i["metadata"]["namespace"], *r] for i, r in zip(items, rows)]
    table(headers, rows)


# --------------------------------------------------------------------------- pods
POD_HEADERS = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
POD_WIDE_HEADERS = POD_HEADERS + ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]


def pod_row(pod: dict, wide: bool = False, with_namespace: bool = False) -> list:
    s = pod.get("status") or {}
    cs = s.get("containerStatuses") or []
    n = len(pod["spec"]["containers"])
    r = [pod["metadata"]["name"], f"{sum(1 for c in cs if c.get('ready'))}/{n}", status_text(pod),
         sum(c.get("restartCount", 0) for c in cs), age(pod["metadata"].get("creationTimestamp"))]
    if wide:
        r += [s.get("podIP"), pod["spec"].get("nodeName"), None, None]
    if with_namespace:
        r = [pod["metadata"]["namespace"], *r]
    return r


# --------------------------------------------------------------------------- services, endpoints
SVC_HEADERS = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
EP_HEADERS = ["NAME", "ENDPOINTS", "AGE"]


def ports_column(svc: dict) -> str:
    """kubectl's PORT(S): 80/TCP, or 80:31295/TCP for a node port."""
    out = []
    for p in svc["spec"].get("ports") or []:
        np_ = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p['port']}{np_}/{p.get('protocol', 'TCP')}")
    return ",".join(out)


def external_column(svc: dict) -> str:
    """kubectl's EXTERNAL-IP: a LoadBalancer's ingress addresses (<pending> before one is given)."""
    ing = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
           if i.get("ip")]
    return ",".join(ing) or ("<pending>" if svc["spec"].get("type") == "LoadBalancer" else "<none>")


def selector_column(svc: dict) -> str:
    sel = svc["spec"].get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>"


def service_row(svc: dict, wide: bool = False) -> list:
    row = [svc["metadata"]["name"], svc["spec"]["type"], svc["spec"].get("clusterIP") or "<none>",
           external_column(svc), ports_column(svc), age(svc["metadata"].get("creationTimestamp"))]
    if wide:
        row.append(selector_column(svc))
    return row


def endpoints_column(ep: dict, limit: int = 3) -> str:
    """kubectl's ENDPOINTS: ip:port pairs, the first three, then "+ N more..."."""
    pairs = [f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
             for a in s.get("addresses") or [] for p in s.get("ports") or []]
    if not pairs:
        return "<none>"
    more = len(pairs) - limit
    return ",".join(pairs[:limit]) + (f" + {more} more..." if more > 0 else "")


def endpoints_row(ep: dict) -> list:
    return [ep["metadata"]["name"], endpoints_column(ep), age(ep["metadata"].get("creationTimestamp"))]


# --------------------------------------------------------------------------- deployments
DEPLOY_HEADERS = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
DEPLOY_WIDE_HEADERS = DEPLOY_HEADERS + ["CONTAINERS", "IMAGES", "SELECTOR"]


def deployment_row(dep: dict, wide: bool) -> list:
    st = dep.get("status") or {}
    r = [dep["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{dep['spec']['replicas']}",
         st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
         age(dep["metadata"].get("creationTimestamp"))]
    if wide:
        cs = dep["spec"]["template"]["spec"].get("containers", [])
        r += [",".join(c["name"] for c in cs), ",".join(c.get("image") or "<none>" for c in cs),
              selector_string(dep)]
    return r


# --------------------------------------------------------------------------- nodes
NODE_HEADERS = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
NODE_WIDE_HEADERS = NODE_HEADERS + ["INTERNAL-IP", "POD-CIDR"]


def node_row(node: dict, wide: bool) -> list:
    """kubectl's columns: NAME STATUS ROLES AGE VERSION (+ INTERNAL-IP POD-CIDR with -o wide)."""
    md = node.get("metadata") or {}
    r = [md.get("name"), "Ready" if nodes.is_ready(node) else "NotReady", nodes.roles(node),
         age(md.get("creationTimestamp")),
         ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")]
    if wide:
        r += [nodes.internal_ip(node), (node.get("spec") or {}).get("podCIDR")]
    return r
