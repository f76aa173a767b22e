"""A running lab as the host sees it: its lab file copy, its pid files, its store.

One place to load the running lab (`load_running_lab`, netlab.labfile.load_running), to
find the pid of a node's agent or of etcd (only if that pid really is the lab's process,
netlab.kernel.proc.is_lab_process), and to open lab + store for a command (`open_lab`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from netlab import labfile, names
from netlab.kernel import netns, proc
from netlab.labfile import Lab
from netlab.store import Store

load_running_lab = labfile.load_running


def running_labs() -> list[str]:
    try:
        return sorted(d.name for d in names.RUN_ROOT.iterdir()
                      if d.is_dir() and (d / "lab.yaml").exists())
    except FileNotFoundError:
        return []


def write_lab_copy(lab: Lab) -> None:
    """The running lab's copy, replaced atomically (agents and the CLI read it any time)."""
    copy = names.lab_copy(lab.name)
    tmp = copy.with_suffix(".tmp")
    tmp.write_text(lab.to_yaml())
    tmp.replace(copy)


def open_lab(lab: str, timeout: float | None = 5.0) -> tuple[Lab, Store]:
    """The running lab and a store client for it (the caller closes the store)."""
    return load_running_lab(lab), Store.for_lab(lab, timeout=timeout)


def agent_pid(lab: str, node: str) -> int | None:
    """The pid in the node's agent pid file (check it with our_pid before signalling it)."""
    return proc.read_pid(names.pid_file(lab, f"agent-{node}"))


def init_pid(lab: str, node: str) -> int | None:
    """The host pid of the node's init (PID 1 of the node's PID namespace)."""
    return proc.read_pid(names.pid_file(lab, f"node-{node}"))


def native(name: str) -> str:
    """The lab's small static programs live next to the Python that runs us (setup.sh)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else (shutil.which(name) or str(p))


def etcd_pid(lab: str) -> int | None:
    return proc.read_pid(names.pid_file(lab, "etcd"))


def our_pid(lab: str, pid: int | None) -> int | None:
    """`pid` if it is a live process of the lab (a pid file may name a recycled pid)."""
    return pid if proc.is_lab_process(pid, lab) else None


def pid_in_ns(pid: int | None, ns: str) -> bool:
    """Alive and inside the current pin of `ns` (not a namespace deleted under it)."""
    return (proc.pid_alive(pid) and netns.netns_inode(ns) is not None
            and netns.pid_netns_inode(pid) == netns.netns_inode(ns))


def lab_exists(lab: str) -> bool:
    return bool(names.run_dir(lab).exists() or netns.netns_list(names.ns_prefix(lab))
                or proc.lab_pids(lab))
