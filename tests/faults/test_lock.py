"""The lab lock under concurrency: commands on both sides of a `down` (`apply` and `run` racing
a `down`: tests/faults/test_kills.py, on its shared lab).

Real processes and the real lock file; each lock holder logs when it held the lock, and no
two logged intervals may overlap.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from netlab import names
from tests.labkit import PY, new_lab_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the lock lives in /run/netlab)")

HOLD = """
import sys, time
from netlab.lab.lock import lab_lock
with lab_lock(sys.argv[1], wait=30):
    t0 = time.time()
    time.sleep(float(sys.argv[3]))
    open(sys.argv[2], "a").write(f"{t0} {time.time()}\\n")
"""


def holder(lab: str, log: Path, hold: float) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", HOLD, lab, str(log), str(hold)])


def intervals(log: Path) -> list[tuple[float, float]]:
    return sorted(tuple(map(float, l.split())) for l in log.read_text().splitlines())


def test_commands_on_both_sides_of_down_never_hold_the_lock_together(tmp_path):
    lab = new_lab_name()
    log = tmp_path / "held.log"
    first = holder(lab, log, 1.5)  # holds the lock while `down` and a second holder queue up
    time.sleep(0.5)
    down = subprocess.Popen([PY, "-m", "netlab", "down", "--lab", lab],
                            env={**os.environ, "NETLAB_LOCK_WAIT": "30"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = holder(lab, log, 2.0)  # opened the lock file before `down` finished with it
    assert down.wait(timeout=60) == 0, down.stderr.read()
    third = holder(lab, log, 0.5)  # started after `down`: must wait for `second`
    for p in (first, second, third):
        assert p.wait(timeout=60) == 0
    held = intervals(log)
    assert len(held) == 3
    for (s1, e1), (s2, e2) in zip(held, held[1:]):
        assert s2 >= e1, f"two commands held lab {lab}'s lock together: {held}"
    assert names.lock_file(lab).exists()  # the lock file outlives `down`


def test_lock_file_is_outside_every_lab_directory():
    assert names.lock_file("tabc").parent == names.LOCK_DIR
    assert not str(names.lock_file("tabc")).startswith(str(names.run_dir("tabc")) + "/")
