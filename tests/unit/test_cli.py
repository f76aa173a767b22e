"""CLI behaviour that needs no root: not-root refusal, usage errors, default-lab printing."""

import os
import subprocess
import sys

import yaml

from netlab import labfile, names
from netlab.kernel import netns


def run(*args, env=None):
    return subprocess.run([sys.executable, "-c",
                           "import os, sys; os.geteuid = lambda: 1000; "
                           "sys.argv = ['netlab'] + sys.argv[1:]; "
                           "from netlab.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_not_root_is_one_line_and_touches_nothing(tmp_path):
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["name"] = "tnotroot" + str(os.getpid() % 1000)
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump(doc))
    p = run("up", "-f", str(f))
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"netlab: must run as root (it creates namespaces, links, iptables rules and etcd): sudo netlab up -f {f}"]
    assert netns.netns_list(doc["name"] + "-") == []
    assert not (names.RUN_ROOT / doc["name"]).exists()


def test_bad_lab_file_is_checked_before_root(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: x\n")
    p = run("up", "-f", str(f))
    assert p.returncode == 2
    assert "nodeNetwork: required field is missing" in p.stderr


def test_missing_lab_file(tmp_path):
    p = run("up", "-f", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "No such file" in p.stderr


def test_unknown_output_format_is_usage_error():
    p = run("status", "-o", "xml")
    assert p.returncode == 2 and "-o: 'xml'" in p.stderr


def test_unknown_command_is_usage_error():
    p = run("frobnicate")
    assert p.returncode == 2


def test_default_lab_prints_a_valid_lab():
    p = run("default-lab")
    assert p.returncode == 0
    assert labfile.parse_lab(p.stdout) == labfile.load_lab(None)
    assert yaml.safe_load(p.stdout)["name"] == "seed"
