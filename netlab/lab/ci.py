"""`netlab up -- CMD`: a lab brought up around one command (the CI entry point).

Owns the order and the exit code: up (the lab file's workloads included), then the command
on the host with NETLAB_LAB and, once the lab has an API server, KUBECONFIG in its
environment, then `down --purge`, which also takes whatever the command left running. The
lab is removed after a failed `up`, a failed command and a signal too. A lab that was up
before is used and left up.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from netlab import names
from netlab.errors import KernelError
from netlab.kernel import common, proc
from netlab.lab import lifecycle
from netlab.lab.running import lab_exists
from netlab.labfile import Lab


@dataclass
class CiResult:
    lab: str
    exit_code: int = 1
    up: lifecycle.UpResult | None = None
    down: lifecycle.DownResult | None = None
    was_up: bool = False  # up before we started: left up
    kubeconfig: Path | None = None
    error: str | None = None  # the command could not be started
    signal: int | None = None  # a signal ended `up` before the command ran


class _Stopped(BaseException):
    def __init__(self, sig: int):
        super().__init__(sig)
        self.sig = sig


def _stop(sig: int, _frame) -> None:
    raise _Stopped(sig)


def kubeconfig(lab: str) -> Path | None:
    """A kubeconfig for the lab's API server, from `netlab kubeconfig --lab LAB` (YAML on
    stdout, or the path of a file); None while the lab has no API server (the command is
    missing or fails)."""
    try:
        text = common.run([sys.executable, "-m", "netlab", "kubeconfig", "--lab", lab],
                          what="netlab kubeconfig")
    except KernelError:
        return None
    text = text.strip()
    if text and "\n" not in text and Path(text).is_file():
        return Path(text)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or not doc.get("clusters"):
        return None
    path = names.run_dir(lab) / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def run(lab: Lab, cmd: Sequence[str], report: lifecycle.Report | None = None,
        on_up: Callable[[lifecycle.UpResult], None] | None = None) -> CiResult:
    """Bring `lab` up, run `cmd` against it, take the lab down; the result carries the
    command's exit code (128+N for signal N, 127 when it could not start)."""
    res = CiResult(lab.name, was_up=lab_exists(lab.name))
    stops = (signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, _stop) for s in stops}
    try:
        try:
            res.up = lifecycle.up(lab, report) if report else lifecycle.up(lab)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if on_up:
            on_up(res.up)
        env = {**os.environ, names.ENV_MARK: lab.name}
        res.kubeconfig = kubeconfig(lab.name)
        if res.kubeconfig:
            env["KUBECONFIG"] = str(res.kubeconfig)
        else:
            env.pop("KUBECONFIG", None)  # never someone else's cluster
        try:
            res.exit_code = proc.run_attached(cmd, env)
        except KernelError as e:
            res.error, res.exit_code = str(e), 127
    except _Stopped as e:
        res.signal, res.exit_code = e.sig, 128 + e.sig
    except KeyboardInterrupt:
        res.signal, res.exit_code = signal.SIGINT, 128 + signal.SIGINT
    finally:
        if not res.was_up:
            # Nothing may interrupt the removal: a second Ctrl-C or SIGTERM waits for it.
            ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, *stops)}
            try:
                res.down = (lifecycle.down(lab.name, purge=True, report=report) if report
                            else lifecycle.down(lab.name, purge=True))
            finally:
                for s, h in ignored.items():
                    signal.signal(s, h)
    return res
