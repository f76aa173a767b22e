"""Label and field selectors as the API takes them in `labelSelector=` / `fieldSelector=`.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
commas. Field selectors: `f=v`, `f==v`, `f!=v` for the fields each resource supports
(metadata.name, metadata.namespace, and per kind spec.nodeName, status.phase, ...).
Pure: parse once, match many objects; a malformed selector is a ValueError.
"""

from __future__ import annotations

import re
from typing import Any, Callable

Matcher = Callable[[dict], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_CMP = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError(f"unbalanced parentheses in {text!r}")
    parts.append(cur)
    return [p for p in parts if p.strip()]


def label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over a label mapping."""
    if not text or not text.strip():
        return lambda labels: True
    tests: list[Callable[[dict], bool]] = []
    for req in _split(text):
        m = _SET.match(req)
        if m:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            k = m["key"]
            if m["op"] == "in":
                tests.append(lambda lb, k=k, vs=values: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=k, vs=values: lb.get(k) not in vs)
            continue
        m = _CMP.match(req)
        if m:
            k, v = m["key"], m["value"]
            if m["op"] == "!=":
                tests.append(lambda lb, k=k, v=v: lb.get(k) != v)
            else:
                tests.append(lambda lb, k=k, v=v: lb.get(k) == v)
            continue
        m = _EXISTS.match(req)
        if m:
            k = m["key"]
            if m["neg"]:
                tests.append(lambda lb, k=k: k not in lb)
            else:
                tests.append(lambda lb, k=k: k in lb)
            continue
        raise ValueError(f"unable to parse requirement: {req.strip()!r}")
    return lambda labels: all(t(labels) for t in tests)


def field_value(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_selector(text: str | None, supported: tuple[str, ...]) -> Matcher:
    """A predicate over an object; fields outside `supported` are a ValueError (as the API)."""
    if not text or not text.strip():
        return lambda obj: True
    tests: list[Matcher] = []
    for req in _split(text):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not m:
            raise ValueError(f"invalid selector: {req.strip()!r}; can't understand {req.strip()!r}")
        f, op, v = m.groups()
        if f not in supported:
            raise ValueError(f'field label not supported: {f}')
        if op == "!=":
            tests.append(lambda o, f=f, v=v: field_value(o, f) != v)
        else:
            tests.append(lambda o, f=f, v=v: field_value(o, f) == v)
    return lambda obj: all(t(obj) for t in tests)


def matcher(label_text: str | None, field_text: str | None, supported: tuple[str, ...]) -> Matcher:
    lab = label_selector(label_text)
    fld = field_selector(field_text, supported)
    return lambda obj: lab((obj.get("metadata") or {}).get("labels") or {}) and fld(obj)
