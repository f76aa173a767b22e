"""Shared plumbing of the benchmarks: scratch namespaces, labs, subprocesses, statistics.

Everything the bench creates is named `netlabbench-*` (scratch namespaces) or `bench*`
(labs), and is removed again in a `finally`, so a failed run leaves nothing behind. The
host's root namespace is never written: every link, bridge and rule goes into a scratch
namespace or a bench lab.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable  # the venv's python (netlab and its deps)
SYS_PY = "/usr/bin/python3"  # Debian's python3: Mininet's Python API lives there
SCRATCH = "netlabbench-"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, input: str | None = None, check: bool = True, timeout: float | None = 600,
       env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-2000:]}")
    return p


def json_out(*cmd: str, **kw) -> dict:
    """Run a bench helper that prints one JSON object as its last line."""
    return json.loads(sh(*cmd, **kw).stdout.strip().splitlines()[-1])


def in_ns(ns: str, *cmd: str) -> list[str]:
    # nsenter keeps the mount namespace (pins made inside stay visible to everyone).
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *cmd]


@contextlib.contextmanager
def scratch_ns(*suffixes: str) -> Iterator[list[str]]:
    """Fresh, empty network namespaces of our own, deleted afterwards whatever happens."""
    made = []
    try:
        for s in suffixes:
            ns = SCRATCH + s
            if Path(f"/run/netns/{ns}").exists():  # left by a killed run: start clean
                sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for ns in made:
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", ns, check=False)


# --------------------------------------------------------------------------- labs
def netlab(*args: str, timeout: float = 900, check: bool = True, env: dict | None = None):
    return sh(PY, "-m", "netlab", *args, timeout=timeout, check=check, env=env)


def lab_file(name: str, workers: int | None = None, tmp: Path | None = None, proxy_mode: str | None = None) -> Path:
    """The default lab renamed. With `workers`: that many fresh workers (kub-node-1..N), no
    workloads, no flannel reservations, and /22 node subnets so 1,000 pods fit on 4 nodes."""
    from netlab.labfile import default_lab_text

    doc = yaml.safe_load(default_lab_text())
    doc["name"] = name
    if workers is not None:
        doc["workloads"] = []
        doc["nodes"] = [doc["nodes"][0]] + [
            {"name": f"kub-node-{i}", "ip": f"172.23.100.{4 + i}", "role": "worker"} for i in range(1, workers + 1)]
        doc["flannel"].pop("reservations", None)
        doc["flannel"]["SubnetLen"] = 22
    if proxy_mode:
        doc["kubeProxy"] = {"mode": proxy_mode}
    path = (tmp or Path(tempfile.mkdtemp(prefix="netlabbench"))) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextlib.contextmanager
def lab(name: str, workers: int | None, proxy_mode: str | None = None) -> Iterator[Path]:
    """A bench lab, up for the block and brought down (--purge) after it, whatever happens."""
    path = lab_file(name, workers, proxy_mode=proxy_mode)
    netlab("down", "--lab", name, "--purge", check=False)  # a previous run's leftovers
    try:
        netlab("up", "-f", str(path))
        yield path
    finally:
        netlab("down", "--lab", name, "--purge", check=False)


def store(name: str):
    from netlab.store import Store

    return Store.for_lab(name)


def close_store(st) -> None:
    """Close a Store that had watches. python-etcd3's watch thread otherwise retries on the
    dead lab's socket in a busy loop (it burned a core during later sections); closing
    ends that thread with a 'Channel closed' error, which is expected and kept quiet."""
    import threading

    prev = threading.excepthook

    def hook(args):
        if args.thread is not None and args.thread.name.startswith("etcd3_watch") and \
                args.exc_type is ValueError and "Channel closed" in str(args.exc_value):
            return
        prev(args)

    threading.excepthook = hook
    st.close()


# --------------------------------------------------------------------------- processes
def status_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- statistics
def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
