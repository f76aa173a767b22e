"""Printing in kubectl's manner: plain tables by default, `-o wide`, `-o json|yaml`.

Lists of objects print as a Kubernetes `List` with `items`; a single object prints as itself.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import yaml
from rich.console import Console

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
