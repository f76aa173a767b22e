"""iptables (legacy) and conntrack inside a namespace: restore, save, single calls.

iptables is written only with `iptables-legacy-restore` (or, for flannel's appended jumps,
single `iptables-legacy -A/-D/-C` calls), under the lab's own xtables lock file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from netlab import names
from netlab.errors import KernelError
from netlab.kernel.common import run
from netlab.kernel.netns import ns_exec_prefix


def xtables_lock(lab: str) -> Path:
    """The lab's own iptables lock file (XTABLES_LOCKFILE).

    Tables are per namespace, so one lab never has to wait for another's writes (or for a
    10,000-service restore of a benchmark) on the host-wide /run/xtables.lock.
    """
    return names.run_dir(lab) / "xtables.lock"


def _xtables_env(netns: str | None) -> dict | None:
    lab = netns.partition("-")[0] if netns else os.environ.get(names.ENV_MARK)
    if not lab or not names.run_dir(lab).is_dir():
        return None  # not a lab's namespace: the host-wide lock, as any iptables
    return {**os.environ, "XTABLES_LOCKFILE": str(xtables_lock(lab))}


def iptables_restore(netns: str | None, text: str, *, noflush: bool = True) -> None:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-restore", "-w", "5"]
    if noflush:
        cmd.append("--noflush")
    run(cmd, input=text, what=f"iptables-legacy-restore{' in ' + netns if netns else ''}",
        env=_xtables_env(netns))


def iptables(netns: str | None, *args: str) -> subprocess.CompletedProcess:
    """One iptables-legacy call; returns the result (exit 1 is an answer for -C)."""
    cmd = [*ns_exec_prefix(netns), "iptables-legacy", "-w", "5", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=_xtables_env(netns))


def iptables_save(netns: str | None, table: str | None = None) -> str:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-save"]
    if table:
        cmd += ["-t", table]
    return run(cmd, what="iptables-legacy-save")


def conntrack_delete(netns: str | None, *filters: str) -> int:
    """`conntrack -D FILTERS`: drop matching flows (stale UDP service flows); how many went."""
    cmd = [*ns_exec_prefix(netns), "conntrack", "-D", *filters]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelError("conntrack: command not found (apt-get install conntrack)") from None
    # Exit 1 with "0 flow entries have been deleted" just means there was nothing to drop.
    for line in p.stderr.splitlines():
        if "flow entries have been deleted" in line:
            return int(line.split(":")[-1].split()[0])
    if p.returncode not in (0, 1):
        raise KernelError(f"conntrack -D {' '.join(filters)} failed: {p.stderr.strip()}")
    return 0
