"""Packaging (issue 19): the systemd unit, setup.sh's switches, and the one container command
that the Containerfile, the README and the CI workflow all show."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "scripts" / "netlab.service"
SETUP = ROOT / "scripts" / "setup.sh"


def unit_sections() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_brings_the_lab_file_up_at_boot_and_down_at_stop():
    u = unit_sections()
    assert u["Service"]["Type"] == "oneshot" and u["Service"]["RemainAfterExit"] == "yes"
    assert u["Service"]["ExecStart"].split() == ["/usr/local/bin/netlab", "up", "-f", "/etc/netlab/lab.yaml"]
    stop = u["Service"]["ExecStop"].split()
    assert stop[:2] == ["/usr/local/bin/netlab", "down"] and "--purge" not in stop  # etcd data kept
    assert "network.target" in u["Unit"]["After"].split()
    assert u["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify also checks that ExecStart's binary exists: point it at this venv's netlab.
    text = UNIT.read_text().replace("/usr/local/bin/netlab", str(Path(sys.executable).parent / "netlab"))
    (tmp_path / "netlab.service").write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "netlab.service")],
                       capture_output=True, text=True, timeout=60)
    complaints = [l for l in p.stderr.splitlines() if "netlab.service" in l]
    assert p.returncode == 0 and complaints == [], p.stderr
    # and it does complain about a misspelt key, so the check above can fail
    (tmp_path / "netlab.service").write_text(text.replace("RemainAfterExit", "RemainAfterExt"))
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "netlab.service")],
                       capture_output=True, text=True, timeout=60)
    assert "RemainAfterExt" in p.stderr


def test_setup_help_and_bad_argument_need_no_root():
    p = subprocess.run(["bash", str(SETUP), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--service" in p.stdout and "--venv-only" in p.stdout
    p = subprocess.run(["bash", str(SETUP), "--servic"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip() == "setup.sh: unknown argument '--servic' (known: --service, --venv-only, --help)"


@pytest.mark.skipif(os.geteuid() != 0, reason="setup.sh refuses non-root before looking at systemd")
@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="this host runs systemd: --service would install the unit")
def test_setup_service_refuses_without_systemd():
    before = sorted(Path("/etc/systemd/system").glob("*")) if Path("/etc/systemd/system").exists() else []
    p = subprocess.run(["bash", str(SETUP), "--service"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "setup.sh: --service needs a host running systemd (/run/systemd/system is missing); "
        "start the lab with: netlab up -f FILE"]
    assert p.stdout == ""  # refused before installing anything
    assert not Path("/etc/systemd/system/netlab.service").exists()
    after = sorted(Path("/etc/systemd/system").glob("*")) if Path("/etc/systemd/system").exists() else []
    assert after == before


def _header_command() -> str:
    for line in (ROOT / "Containerfile").read_text().splitlines():
        if line.startswith("#   podman build"):
            return line[1:].strip()
    raise AssertionError("no build command in the Containerfile's header")


def test_one_container_command_everywhere():
    cmd = _header_command()
    assert cmd == "podman build -t netlab-ci -f Containerfile . && podman run --rm --privileged netlab-ci"
    assert cmd in (ROOT / "README.md").read_text()
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    runs = [s["run"].strip() for s in wf["jobs"]["test"]["steps"] if "run" in s]
    assert runs == [cmd.replace("podman", "docker")]


def test_build_context_ignores_venv_and_caches():
    def entries(name):
        return [l for l in (ROOT / name).read_text().splitlines() if l and not l.startswith("#")]

    assert entries(".containerignore") == entries(".dockerignore")
    for pattern in (".venv/", "*.egg-info", "**/__pycache__", ".git", "build/"):
        assert pattern in entries(".containerignore")


def test_containerfile_base_is_an_argument_and_runtime_has_no_compiler():
    text = (ROOT / "Containerfile").read_text()
    assert re.search(r"^ARG BASE=debian:bookworm$", text, re.M)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split()[0] for s in stages] == ["${BASE}", "${BASE}"]
    runtime = "\n".join(l for l in stages[-1].splitlines() if not l.lstrip().startswith("#"))
    assert "gcc" not in runtime and "libc6-dev" not in runtime
    assert "COPY --from=build /opt/netlab-venv" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
