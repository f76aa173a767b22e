"""Object metadata and readiness: one definition each, used by every kind and every role.

Owns the DNS-label and label regexes and their checks (names, namespaces, label keys and
values, port names), label selectors (`matches`), pod readiness (`pod_ready`, `pod_gone`)
and node readiness from the node's Lease (`node_ready`: renewed within the lab's
nodeMonitorGracePeriod). Errors are FieldErrors, UsageErrors that know their field.
"""

from __future__ import annotations

import re
import time
from typing import Any

from netlab.errors import UsageError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
DNS_LABEL_WHAT = "a DNS label: lower-case letters, digits, '-'"
DNS1035_WHAT = "a DNS-1035 label: a lower-case letter, then letters, digits, '-'"


class FieldError(UsageError):
    """A UsageError that knows which field it is about (so `expose` can name its flag)."""

    def __init__(self, field: str, msg: str):
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


# --------------------------------------------------------------------------- names
def check_name(value: Any, field: str, dns1035: bool = False) -> str:
    """A DNS label (RFC 1123; RFC 1035 with dns1035: starts with a letter), at most 63."""
    rx, what = (DNS1035_LABEL, DNS1035_WHAT) if dns1035 else (DNS1123_LABEL, DNS_LABEL_WHAT)
    if not isinstance(value, str) or not value:
        raise FieldError(field, f"required ({what})")
    if len(value) > 63 or not rx.match(value):
        raise FieldError(field, f"'{value}' is not {what.replace(': ', ' (', 1)}, at most 63)")
    return value


def is_port_name(value: Any) -> bool:
    """IANA_SVC_NAME: at most 15 lower-case letters, digits and '-', a letter, no '--'."""
    return (isinstance(value, str) and 0 < len(value) <= 15 and DNS1123_LABEL.match(value) is not None
            and "--" not in value and re.search("[a-z]", value) is not None)


# --------------------------------------------------------------------------- labels
def check_labels(value: Any, field: str) -> dict[str, str]:
    """Labels (or a selector's matchLabels): keys [prefix/]name, values strings of <= 63."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, "must be a mapping of label keys to values")
    out = {}
    for k, v in value.items():
        k = str(k)
        prefix, _, name = k.rpartition("/")
        if not LABEL_NAME.match(name) or len(name) > 63 or (prefix and not DNS1123_SUBDOMAIN.match(prefix)):
            raise FieldError(field, f"'{k}' is not a valid label key")
        if isinstance(v, bool) or v is None or not isinstance(v, (str, int, float)):
            raise FieldError(f"{field}.{k}", f"label values are strings (quote {v!r})")
        v = str(v)
        if len(v) > 63 or not LABEL_VALUE.match(v):
            raise FieldError(f"{field}.{k}", f"'{v}' is not a valid label value")
        out[k] = v
    return out


def check_annotations(value: Any, field: str) -> dict[str, str]:
    """Annotations: any string values."""
    if not isinstance(value, dict):
        raise FieldError(field, "must be a mapping of strings")
    return {str(k): str(v) for k, v in value.items()}


def matches(selector: dict, labels: dict) -> bool:
    """An equality-based selector (matchLabels) selects these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def selector_text(selector: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


# --------------------------------------------------------------------------- readiness
def pod_ready(pod: dict) -> bool:
    """Running with the Ready condition True (what endpoints and roll-outs count)."""
    s = pod.get("status") or {}
    return s.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in s.get("conditions") or [])


def pod_gone(pod: dict) -> bool:
    """Failed, finished or being deleted: no longer counts towards the replica count."""
    s = pod.get("status") or {}
    return (s.get("phase") in ("Failed", "Succeeded")
            or bool(pod.get("metadata", {}).get("deletionTimestamp")))


def fresh(renewed_at: float, now: float, grace: float) -> bool:
    """A heartbeat seen at `renewed_at` still counts at `now` (the grace period has not passed)."""
    return now - renewed_at < grace


def node_ready(lease: dict | None, now: float | None = None, grace: float = 10.0) -> bool:
    """Ready while the node's Lease was renewed within `grace` seconds (the lab's
    nodeMonitorGracePeriod). The one definition `get nodes`, `status`, the scheduler and
    the waits use; the node lifecycle controller applies `fresh` to its own clock."""
    renew = ((lease or {}).get("spec") or {}).get("renewTime")
    try:
        renewed_at = float(renew)
    except (TypeError, ValueError):
        return False
    return fresh(renewed_at, time.time() if now is None else now, grace)
