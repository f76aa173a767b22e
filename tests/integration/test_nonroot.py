"""A user without root (issue 18, item 7): `netlab --help` works, a real command says in one
line that it must run as root and how, and nothing is created."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from netlab import labfile, names
from netlab.kernel import netns
from tests.labkit import new_lab_name

NETLAB = str(Path(sys.executable).parent / "netlab")  # this venv's entry point (setup.sh)
ROOT = Path(__file__).resolve().parents[2]


def others_reach(path: Path) -> bool:
    """Whether a user other than root can open PATH (every directory above it o+x)."""
    p = path.resolve()
    return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents) and bool(p.stat().st_mode & stat.S_IROTH)


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", NETLAB, *args], capture_output=True,
                          text=True, timeout=60, cwd="/", env={"PATH": os.environ["PATH"], "HOME": "/"})


@pytest.fixture(scope="module", autouse=True)
def readable_checkout():
    if not others_reach(ROOT / "pyproject.toml"):
        pytest.skip(f"{ROOT} is not readable by other users (setup.sh says so; README 'Running as a user')")


def test_help_works_without_root():
    p = as_nobody("--help")
    assert p.returncode == 0, p.stderr
    assert "Usage: netlab" in p.stdout and "up" in p.stdout and "down" in p.stdout
    p = as_nobody("up", "--help")
    assert p.returncode == 0 and "--file" in p.stdout


@pytest.mark.parametrize("args", [["status"], ["get", "pods", "-o", "wide"], ["down", "--purge"],
                                  ["exec", "kub-node-1", "--", "route", "-n"]])
def test_real_command_says_must_run_as_root(args):
    p = as_nobody(*args)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("netlab: must run as root (")
    assert lines[0].endswith("): sudo netlab " + " ".join(args))
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_up_as_user_creates_nothing():
    lab = new_lab_name()
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["name"], doc["workloads"] = lab, []
    with tempfile.TemporaryDirectory() as d:  # pytest's tmp_path is root-only
        os.chmod(d, 0o755)
        f = Path(d) / "lab.yaml"
        f.write_text(yaml.safe_dump(doc))
        f.chmod(0o644)
        p = as_nobody("up", "-f", str(f))
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == f"netlab: must run as root (it creates namespaces, links, iptables rules and etcd): sudo netlab up -f {f}"
    assert netns.netns_list(names.ns_prefix(lab)) == []
    assert not names.run_dir(lab).exists()
