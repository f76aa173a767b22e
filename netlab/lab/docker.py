"""`docker ps` and `docker inspect` inside a node: that node's containers, as dockerd lists them.

On the seed's nodes the kubelet ran pods through dockerd, so `docker ps` there shows each
pod's sandbox (k8s_POD_<pod>_<ns>_<uid>_0) and its app containers
(k8s_<container>_<pod>_<ns>_<uid>_<restart>). netlab has no dockerd: this reads the node's
pod records (netlab.plan.podrecord) from inside the node (its PID namespace: the records'
node pids) and renders docker's columns, `--no-trunc`, `-a`, `--format` (Go-template fields
as docker names them) and `inspect`'s JSON. Every other verb is refused in one line.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

from netlab.kernel import proc
from netlab.plan.podrecord import container_id, records

PAUSE_IMAGE = "netlab/pause"
PAUSE_ARGV = ["/pause"]  # what the seed's docker shows for kubernetes/pause
HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
           "RunningFor": "CREATED", "Ports": "PORTS", "Status": "STATUS", "Size": "SIZE",
           "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
           "State": "STATE"}
DEFAULT_FIELDS = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]


def _human(seconds: float) -> str:
    """docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if s < 3600:
        return "About a minute" if s < 120 else f"{s // 60} minutes"
    if s < 48 * 3600:
        return "About an hour" if s < 7200 else f"{s // 3600} hours"
    if s < 14 * 86400:
        return f"{s // 86400} days"
    return f"{s // (7 * 86400)} weeks"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"


def containers(lab: str, node: str) -> list[dict]:
    """The node's containers, newest first, each a dict of what docker knows about one."""
    out = []
    for d, rec in records(lab, node, in_node=True):
        suffix = f"{rec['name']}_{rec['namespace']}_{rec['uid']}"
        labels = {"io.kubernetes.pod.name": rec["name"], "io.kubernetes.pod.namespace": rec["namespace"],
                  "io.kubernetes.pod.uid": rec["uid"]}
        p = rec.get("pause") or {}
        pause_id = container_id(rec["uid"], "POD", 0)
        if p.get("started"):
            alive = proc.proc_alive(p) and not rec.get("terminated")
            out.append({"id": pause_id, "image": PAUSE_IMAGE, "argv": PAUSE_ARGV, "created": p["started"],
                        "running": alive, "pid": p.get("pid") if alive else 0, "exitCode": 0 if alive else 137,
                        "finished": (rec.get("terminated") or {}).get("at"), "name": f"k8s_POD_{suffix}_0",
                        "labels": {**labels, "io.kubernetes.container.name": "POD"},
                        "network": "default", "hostname": rec["name"], "ip": rec.get("podIP"), "dir": d})
        for cname in rec.get("order") or []:
            c = (rec.get("containers") or {}).get(cname)
            if not c:
                continue
            n = c.get("restartCount", 0)
            base = {"image": c.get("image") or "<none>", "argv": c.get("argv") or [],
                    "labels": {**labels, "io.kubernetes.container.name": cname},
                    "network": f"container:{pause_id}", "hostname": rec["name"], "ip": None, "dir": d}
            alive = bool(c.get("pid")) and proc.proc_alive(c) and not rec.get("terminated")
            last = (c.get("last") or {}).get("terminated") or {}
            if c.get("started"):
                out.append({**base, "id": container_id(rec["uid"], cname, n), "created": c["started"],
                            "running": alive, "pid": c["pid"] if alive else 0,
                            "exitCode": 0 if alive else last.get("exitCode", 137),
                            "finished": None if alive else _ts(last.get("finishedAt")),
                            "name": f"k8s_{cname}_{suffix}_{n}"})
            if n > 0 and alive and last:  # the attempt before this one, exited (docker ps -a)
                out.append({**base, "id": container_id(rec["uid"], cname, n - 1),
                            "created": _ts(last.get("startedAt")) or c["started"], "running": False, "pid": 0,
                            "exitCode": last.get("exitCode"), "finished": _ts(last.get("finishedAt")),
                            "name": f"k8s_{cname}_{suffix}_{n - 1}"})
    out.sort(key=lambda c: -c["created"])
    return out


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        import calendar

        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _command(argv: list[str], no_trunc: bool) -> str:
    # docker quotes arguments that hold spaces: "nginx -g 'daemon of…"
    text = " ".join([Path(argv[0]).name, *map(shlex.quote, argv[1:])] if argv and argv != PAUSE_ARGV else argv)
    if not no_trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


def _fields(c: dict, no_trunc: bool, now: float) -> dict[str, str]:
    if c["running"]:
        status = "Up " + _human(now - c["created"])
    else:
        ago = f" {_human(now - c['finished'])} ago" if c.get("finished") else ""
        status = f"Exited ({c['exitCode'] if c['exitCode'] is not None else 'unknown'}){ago}"
    return {"ID": c["id"] if no_trunc else c["id"][:12], "Image": c["image"],
            "Command": _command(c["argv"], no_trunc), "RunningFor": _human(now - c["created"]) + " ago",
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(c["created"])),
            "Status": status, "Ports": "", "Names": c["name"], "Size": "0B", "Mounts": "",
            "Networks": "" if c["network"].startswith("container:") else "none",
            "State": "running" if c["running"] else "exited",
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(c["labels"].items()))}


def _tabulate(rows: list[list[str]]) -> str:
    """docker's tabwriter: columns padded to the widest cell plus three spaces."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows) + "\n"


_FIELD = re.compile(r"{{\s*\.(\w+)\s*}}")


def ps(lab: str, node: str, all_: bool = False, no_trunc: bool = False, fmt: str | None = None,
       quiet: bool = False) -> str:
    now = time.time()
    cs = [c for c in containers(lab, node) if all_ or c["running"]]
    rows = [_fields(c, no_trunc, now) for c in cs]
    if quiet:
        return "".join(r["ID"] + "\n" for r in rows)
    if fmt is None or fmt == "table":
        return _tabulate([[HEADERS[f] for f in DEFAULT_FIELDS]] + [[r[f] for f in DEFAULT_FIELDS] for r in rows])
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    unknown = [f for f in _FIELD.findall(fmt) if f not in HEADERS]
    if unknown:
        raise ValueError(f"--format: can't evaluate field {unknown[0]} "
                         f"(fields: {', '.join(sorted(HEADERS))})")
    if fmt.startswith("table"):
        body = fmt[len("table"):].lstrip()
        head = _FIELD.sub(lambda m: HEADERS[m.group(1)], body)
        lines = [head] + [_FIELD.sub(lambda m, r=r: r[m.group(1)], body) for r in rows]
        return _tabulate([ln.split("\t") for ln in lines])
    return "".join(_FIELD.sub(lambda m, r=r: r[m.group(1)], fmt) + "\n" for r in rows)


def inspect(lab: str, node: str, refs: list[str]) -> tuple[list[dict], list[str]]:
    """docker inspect: the objects found (by name, full or short id) and the refs not found."""
    cs = containers(lab, node)
    found, missing = [], []
    for ref in refs:
        ref = ref.lstrip("/")
        c = next((c for c in cs if c["name"] == ref or (len(ref) >= 4 and c["id"].startswith(ref))), None)
        if c is None:
            missing.append(ref)
            continue
        found.append({
            "Id": c["id"], "Created": _iso(c["created"]), "Path": (c["argv"] or [""])[0],
            "Args": c["argv"][1:],
            "State": {"Status": "running" if c["running"] else "exited", "Running": c["running"],
                      "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False,
                      "Pid": c["pid"], "ExitCode": 0 if c["running"] else c["exitCode"],
                      "StartedAt": _iso(c["created"]),
                      "FinishedAt": _iso(c["finished"]) if c.get("finished") else "0001-01-01T00:00:00Z"},
            "Image": c["image"], "Name": "/" + c["name"], "RestartCount": 0, "Driver": "netlab",
            "LogPath": str(Path(c["dir"])), "HostConfig": {"NetworkMode": c["network"]},
            "Config": {"Hostname": c["hostname"], "Image": c["image"], "Cmd": c["argv"],
                       "Labels": c["labels"]},
            "NetworkSettings": {"IPAddress": "", "Networks": {}, "SandboxKey": ""},
        })
    return found, missing
