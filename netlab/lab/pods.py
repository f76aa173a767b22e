"""The pods of a running lab as their nodes hold them: exec, logs and `ps` read pod records.

Reads each pod's run directory (netlab.plan.podrecord) and checks its processes
(netlab.kernel.proc): `netlab exec pod/...` (nsenter into a container), `netlab logs`
(which log file, following it), `netlab ps` (docker's columns), and waiting until a
deleted pod is torn down on its node.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from netlab import names
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.kernel import netns, proc
from netlab.plan.podrecord import container_id, container_log, records

PAUSE_IMAGE = "netlab/pause"  # what `ps` shows for the sandbox (netlab/native/pause.c)
PS_HEADERS = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES", "NODE", "PID"]


def wait_gone(lab: str, namespace: str, name: str, uid: str | None, timeout: float = 30.0) -> bool:
    """Until the node has torn the pod down (its netns pin and run directory are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = [d for d, _ in records(lab) if d.name.startswith(f"{namespace}_{name}_")
                and (uid is None or d.name.endswith(f"_{uid}"))]
        if not dirs and not netns.netns_path(names.pod_ns(lab, namespace, name)).exists():
            return True
        time.sleep(0.05)
    return False


def find_record(lab: str, namespace: str, name: str) -> tuple[Path, dict]:
    found = [(d, r) for d, r in records(lab) if r["namespace"] == namespace and r["name"] == name]
    if not found:
        raise NotFound(f"pod {name} (namespace {namespace}) runs on no node of lab {lab} "
                       "(see `netlab get pods`)")
    # While a pod of the same name is replaced, prefer the one whose sandbox lives.
    found.sort(key=lambda dr: (not proc.proc_alive(dr[1].get("pause")), -dr[1].get("created", 0)))
    return found[0]


def _split(name: str) -> tuple[str, str]:
    ns, _, pod = name.rpartition("/")
    return ns or "default", pod


def _pick(rec: dict, container: str | None, name: str) -> tuple[str, dict]:
    cs = rec.get("containers") or {}
    if container is None:
        if not rec.get("order"):
            raise NotFound(f"pod {name} has no containers yet")
        container = rec["order"][0]
    if container not in cs:
        raise UsageError(f"-c: container {container} is not valid for pod {name} "
                         f"(choose one of: {', '.join(rec.get('order') or cs)})")
    return container, cs[container]


def exec_argv(lab: str, name: str, cmd: list[str], container: str | None = None) -> list[str]:
    """`netlab exec pod/[NS/]NAME [-c C] -- CMD`: CMD in that container's namespaces
    (net, UTS, IPC and its own mount namespace, where /etc/hosts is the pod's)."""
    ns, pod = _split(name)
    _, rec = find_record(lab, ns, pod)
    cname, c = _pick(rec, container, pod)
    if not proc.proc_alive(c):
        raise NetlabError(f"container {cname} of pod {pod} is not running (see `netlab get pods`)")
    # The container's environment too (POD_IP, ...), as kubectl exec gives it; PATH stays ours.
    env = [f"{k}={v}" for k, v in proc.pid_environ(c["pid"]).items() if k != "PATH"]
    return ["nsenter", "-t", str(c["pid"]), "-n", "-u", "-i", "-m", "--", "env", *env, *cmd]


def log_path(lab: str, namespace: str, name: str, container: str | None = None,
             previous: bool = False) -> Path:
    d, rec = find_record(lab, namespace, name)
    if container is None and len(rec.get("order") or []) > 1:
        raise UsageError(f"a container name must be specified for pod {name}, choose one of: "
                         f"[{' '.join(rec['order'])}] (-c)")
    cname, c = _pick(rec, container, name)
    n = c.get("restartCount", 0) - (1 if previous else 0)
    if n < 0:
        raise NotFound(f"previous terminated container {cname} in pod {name} not found")
    return container_log(d, cname, n)


def log_ended(lab: str, namespace: str, name: str, path: Path):
    """For `logs -f`: a test that is true once that container instance is over (it exited,
    was restarted, or the pod was deleted)."""
    cname, n = path.stem.rsplit("_", 1)
    n = int(n)

    def stop() -> bool:
        try:
            _, rec = find_record(lab, namespace, name)
        except NotFound:
            return True
        c = (rec.get("containers") or {}).get(cname)
        return c is None or c.get("restartCount") != n or not proc.proc_alive(c)
    return stop


def follow(path: Path, stop, poll: float = 0.2) -> Iterator[bytes]:
    """The file's content, then what is appended to it until stop() is true."""
    with open(path, "rb") as f:  # noqa: PTH123
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if stop():
                yield f.read()
                return
            time.sleep(poll)


def _human(seconds: float) -> str:
    """docker's HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if s < 3600:
        return "About a minute" if s < 120 else f"{s // 60} minutes"
    if s < 48 * 3600:
        return "About an hour" if s < 7200 else f"{s // 3600} hours"
    return f"{s // 86400} days"


def _command(argv: list[str]) -> str:
    text = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else ""
    return '"' + (text if len(text) <= 20 else text[:19] + "…") + '"'


def ps_rows(lab: str, node: str | None = None) -> list[list]:
    """`docker ps` of the lab's nodes: per pod the pause (k8s_POD_...) and its app containers."""
    now = time.time()
    rows = []
    for _, rec in records(lab, node):
        if rec.get("terminated"):
            continue
        suffix = f"{rec['name']}_{rec['namespace']}_{rec['uid']}"
        p = rec.get("pause") or {}
        if proc.proc_alive(p):
            rows.append((p["started"], [container_id(rec["uid"], "POD", 0)[:12], PAUSE_IMAGE,
                                        _command(["netlab-pause", rec["name"]]),
                                        _human(now - p["started"]) + " ago",
                                        "Up " + _human(now - p["started"]), f"k8s_POD_{suffix}_0",
                                        rec["node"], p["pid"]]))
        for cname in rec.get("order") or []:
            c = rec["containers"][cname]
            if not proc.proc_alive(c):
                continue
            n = c.get("restartCount", 0)
            rows.append((c["started"], [container_id(rec["uid"], cname, n)[:12], c.get("image") or "<none>",
                                        _command(c.get("argv") or []), _human(now - c["started"]) + " ago",
                                        "Up " + _human(now - c["started"]), f"k8s_{cname}_{suffix}_{n}",
                                        rec["node"], c["pid"]]))
    rows.sort(key=lambda r: -r[0])  # newest first, as docker lists them
    return [r for _, r in rows]
