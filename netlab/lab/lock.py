"""The lab lock: mutating netlab commands on one lab are serialised by flock on a file.

`up`, `down` and node operations hold it exclusively; commands that only write objects
(`apply`, `scale`, `delete`) hold it shared, then check the lab is still up, so none of them
writes while `down` removes the lab. The lock file lives in names.LOCK_DIR and is never
unlinked (a waiter may hold it open). The kernel drops the lock when its holder dies, so a
crashed command never blocks the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator

from netlab import labfile, names
from netlab.errors import LabBusy, LabNotUp
from netlab.labfile import Lab


@contextlib.contextmanager
def lab_lock(lab: str, wait: float | None = None, shared: bool = False) -> Iterator[None]:
    """Hold the lab's lock (exclusive, or shared with other object writers) for the block."""
    if wait is None:
        wait = float(os.environ.get("NETLAB_LOCK_WAIT", "10"))
    path = names.lock_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabBusy(f"lab busy: another netlab command is changing lab '{lab}' "
                                  f"(lock {path}); try again when it has finished") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(lab: str) -> Iterator[Lab]:
    """For a command that writes objects: the shared lock, and the running lab read inside
    it (LabNotUp if a `down` removed it meanwhile, so nothing is written to a dying lab)."""
    was_up = names.lab_copy(lab).exists()
    with lab_lock(lab, shared=True):
        try:
            running = labfile.load_running(lab)
        except LabNotUp:
            if was_up:  # it was up when we came: a `down` ran while we waited for the lock
                raise LabNotUp(f"lab '{lab}' is not up: a concurrent `netlab down` removed it while "
                               "this command waited; nothing was written") from None
            raise
        yield running
