"""The lab lock: one mutating netlab command per lab at a time (flock on a file).

The kernel drops the lock when its holder dies, so a crashed command never blocks the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator

from netlab import names
from netlab.errors import LabBusy


@contextlib.contextmanager
def lab_lock(lab: str, wait: float | None = None) -> Iterator[None]:
    """Serialise mutating commands on one lab; the kernel drops the lock if we die."""
    if wait is None:
        wait = float(os.environ.get("NETLAB_LOCK_WAIT", "10"))
    path = names.lock_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabBusy(f"lab busy: another netlab command is changing lab '{lab}' "
                                  f"(lock {path}); try again when it has finished") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
