"""The lab lock under concurrency: commands on both sides of a `down`, and `apply` racing `down`.

Real processes and the real lock file; each lock holder logs when it held the lock, and no
two logged intervals may overlap.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from netlab import names
from tests.labkit import PY, Lab, cli, lab_doc, new_lab_name, wait_for

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


MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata: {name: racer}
spec:
  replicas: 1
  selector: {matchLabels: {app: racer}}
  template:
    metadata: {labels: {app: racer}}
    spec:
      containers: [{name: c, image: nginx}]
"""


def test_apply_racing_down_fails_with_one_line_and_writes_nothing(tmp_path):
    lab = Lab(tmp_path, lab_doc(new_lab_name()))
    mf = tmp_path / "racer.yaml"
    mf.write_text(MANIFEST)
    try:
        lab.up()
        # `down` starts; as soon as it holds the lock, `apply` is started against the dying lab
        down = subprocess.Popen([PY, "-m", "netlab", "down", "--lab", lab.name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: _locked(lab.name) or down.poll() is not None, timeout=30, interval=0.02,
                 what="down to take the lock")
        # --lab, not NETLAB_LAB=: `down` kills every process carrying NETLAB_LAB=<lab> (its mark)
        p = cli("apply", "-f", str(mf), "--no-wait", "--lab", lab.name, check=False)
        r = cli("run", "racerpod", "--no-wait", "--lab", lab.name, check=False)
        assert down.wait(timeout=120) == 0, down.stderr.read()
        for q in (p, r):
            assert q.returncode != 0, q.stdout
            lines = q.stderr.strip().splitlines()
            assert len(lines) == 1 and "is not up" in lines[0], (q.returncode, q.stdout, q.stderr)
            assert "Traceback" not in q.stderr
        # nothing written: the lab's etcd data (kept by a plain down) has no deployment 'racer'
        lab.up()
        got = lab.cli("get", "deploy", "racer", check=False)
        assert got.returncode != 0 and "not found" in (got.stderr + got.stdout)
        assert lab.get_json("pods")["items"] == []
    finally:
        lab.down("--purge", check=False)


def _locked(lab: str) -> bool:

    try:
        fd = os.open(names.lock_file(lab), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
