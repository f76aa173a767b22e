"""Where the time goes: py-spy samples of netlab's processes, summarised for the report.

py-spy (bench/requirements.txt) writes collapsed stacks ("frame;frame;... count"); we keep
the functions with the most samples, inclusive (on the stack) and self (at the top), so
the report can say what is in the way without anyone opening a flame graph.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from bench.common import PY, log

PYSPY = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def available() -> bool:
    return Path(PYSPY).exists() or shutil.which("py-spy") is not None


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    f = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{m['fn']} ({f})"


def summarise(raw: str, top: int = 12) -> dict:
    incl: Counter = Counter()
    self_: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        for f in set(frames):
            incl[f] += n
        self_[frames[-1]] += n
    def pctl(c: Counter, keep=lambda f: True) -> list:
        return [[f, round(100 * v / total, 1)] for f, v in c.most_common() if keep(f)][:top] if total else []

    # netlab's own functions on the stack say which step the time belongs to.
    ours = lambda f: "(netlab/" in f  # noqa: E731
    return {"samples": total, "inclusive": pctl(incl), "self": pctl(self_), "netlab_inclusive": pctl(incl, ours)}


def record_pids(pids: list[int], seconds: float, idle: bool = False) -> dict:
    """Sample running processes for `seconds` (all at once); one summary over all of them."""
    outs, procs = [], []
    tmp = Path(tempfile.mkdtemp(prefix="netlabbench-prof"))
    for pid in pids:
        out = tmp / f"{pid}.txt"
        cmd = [PYSPY, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out), "-p", str(pid),
               "-d", str(max(1, int(seconds)))] + (["--idle"] if idle else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outs.append(out)
    return _collect(procs, outs, tmp)


def start_pids(pids: list[int], idle: bool = False):
    """Start sampling until stop() is called on the returned handle."""
    tmp = Path(tempfile.mkdtemp(prefix="netlabbench-prof"))
    procs, outs = [], []
    for pid in pids:
        out = tmp / f"{pid}.txt"
        cmd = [PYSPY, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out), "-p", str(pid)] + \
            (["--idle"] if idle else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outs.append(out)

    class Handle:
        def stop(self) -> dict:
            for p in procs:
                p.send_signal(2)  # py-spy writes its output on SIGINT
            return _collect(procs, outs, tmp)

    return Handle()


def record_cmd(cmd: list[str], idle: bool = True, env: dict | None = None, prefix: list[str] = ()) -> dict:
    """Run a command under py-spy (idle stacks kept: waiting is where a CLI spends its time).
    `prefix` (e.g. nsenter) runs py-spy itself, and so the command, inside a namespace."""
    tmp = Path(tempfile.mkdtemp(prefix="netlabbench-prof"))
    out = tmp / "cmd.txt"
    full = [*prefix, PYSPY, "record", "-r", "200", "-f", "raw", "-o", str(out)] + \
        (["--idle"] if idle else []) + ["--", *cmd]
    p = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return _collect([p], [out], tmp)


def _collect(procs, outs, tmp: Path) -> dict:
    raw = ""
    for p, out in zip(procs, outs):
        try:
            p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
        if out.exists():
            raw += out.read_text()
    shutil.rmtree(tmp, ignore_errors=True)
    s = summarise(raw)
    if not s["samples"]:
        log("profile: py-spy collected no samples")
    return s
