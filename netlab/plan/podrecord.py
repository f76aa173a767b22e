"""A pod's run directory on its node: /run/netlab/<lab>/pods/<ns>_<name>_<uid>/.

Holds record.json (what the kubelet runs for the pod: pause and container pids with their
start times, addresses, restart counts), the pod's managed /etc/hosts, and one log file per
container instance (<container>_<restart>.log). The kubelet (netlab/agent/kubelet) writes
it; `netlab ps`, `logs`, `exec` and node delete/stop (netlab/lab) read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from netlab import names

RECORD = "record.json"


def pods_root(lab: str) -> Path:
    return names.run_dir(lab) / "pods"


def pod_dir(lab: str, namespace: str, name: str, uid: str) -> Path:
    return pods_root(lab) / f"{namespace}_{name}_{uid}"


def host_veth(uid: str) -> str:
    """The pod's veth on docker0: `veth` + 8 hex characters, derived from the pod's uid."""
    return "veth" + hashlib.sha1(uid.encode()).hexdigest()[:8]


def container_id(uid: str, container: str, restart: int) -> str:
    return hashlib.sha256(f"{uid}/{container}/{restart}".encode()).hexdigest()


def container_log(pdir: Path, container: str, restart: int) -> Path:
    # kubelet keeps /var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log; one directory
    # level less saves a mkdir per container on the hot path.
    return pdir / f"{container}_{restart}.log"


def hosts_text(pod_ip: str, pod_name: str) -> str:
    """The kubelet's managed /etc/hosts of a pod."""
    return ("# Kubernetes-managed hosts file (netlab).\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n"
            "fe00::2\tip6-allrouters\n"
            f"{pod_ip}\t{pod_name}\n")


def load_record(pdir: Path) -> dict | None:
    try:
        return json.loads((pdir / RECORD).read_text())
    except (OSError, ValueError):
        return None


# Pids. The kubelet runs in its node's PID namespace and works with the node's pids; the
# host (netlab ps, node stop, tests) needs the host's. A record on disk says "pid" = the
# host's and "nsPid" = the node's; in the kubelet's memory "pid" is the node's and "hostPid"
# the host's. to_disk() and node_view() convert; records without nsPid are the same in both.
def _procs(rec: dict) -> list[dict]:
    return [p for p in [rec.get("pause"), *(rec.get("containers") or {}).values()] if isinstance(p, dict)]


def to_disk(rec: dict) -> dict:
    out = json.loads(json.dumps(rec))
    for p in _procs(out):
        if "hostPid" in p:
            host = p.pop("hostPid")
            p["nsPid"], p["pid"] = p.get("pid"), host if p.get("pid") else None
    return out


def node_view(rec: dict) -> dict:
    for p in _procs(rec):
        if "nsPid" in p:
            ns = p.pop("nsPid")
            p["hostPid"], p["pid"] = p.get("pid"), ns
    return rec


def save_record(pdir: Path, rec: dict) -> None:
    tmp = pdir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(to_disk(rec), separators=(",", ":")))
    os.replace(tmp, pdir / RECORD)


def records(lab: str, node: str | None = None, in_node: bool = False) -> list[tuple[Path, dict]]:
    """The pod records (of one node), with host pids, or the node's own (`in_node`: the
    kubelet and its server, inside the node's PID namespace)."""
    out = []
    try:
        dirs = sorted(pods_root(lab).iterdir())
    except FileNotFoundError:
        return []
    for d in dirs:
        rec = load_record(d)
        if rec is not None and (node is None or rec.get("node") == node):
            out.append((d, node_view(rec) if in_node else rec))
    return out
