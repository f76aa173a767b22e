"""What the kernel modules share: errors as domain errors, libc's setns/mount, running a tool.

Callers above netlab.kernel never see a raw NetlinkError or OSError: `fail()` turns an errno
into KernelError/NotFound/AlreadyExists with a sentence naming the object. `run()` runs an
external tool (sysctl, iptables-legacy-*) and raises KernelError with its last stderr line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from typing import Sequence

from netlab.errors import AlreadyExists, KernelError, NotFound

NOT_FOUND = (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL)
libc = ctypes.CDLL(None, use_errno=True)
CLONE_FS, CLONE_NEWNS, CLONE_NEWNET = 0x200, 0x20000, 0x40000000
MS_BIND, MNT_DETACH = 4096, 2
MS_REC, MS_SHARED = 0x4000, 1 << 20


def fail(what: str, e: Exception) -> KernelError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = f"{what}: {os.strerror(code) if isinstance(code, int) and code > 0 else e}"
    if code == errno.EEXIST:
        return AlreadyExists(msg)
    if code in NOT_FOUND:
        return NotFound(msg)
    return KernelError(msg)


def libc_ok(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise fail(what, OSError(e, os.strerror(e)))


def run(cmd: Sequence[str], *, input: str | None = None, what: str | None = None,
        env: dict | None = None) -> str:
    return completed(cmd, input=input, what=what, env=env).stdout


def completed(cmd: Sequence[str], *, input: str | None = None, what: str | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise KernelError(f"{what or cmd[0]}: command {cmd[0]} not found (try `netlab doctor`)") from None
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise KernelError(f"{what or cmd[0]} failed: {err[-1] if err else 'exit ' + str(p.returncode)}")
    return p
