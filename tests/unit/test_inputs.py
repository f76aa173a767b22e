"""Hostile input files (issue 18 item 5): binary, duplicate keys, huge, long values, the
master as a pod's node. Each is one line naming the file and field, exit 2, before root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from netlab import labfile, yamlin
from netlab.api import manifests, pods
from netlab.errors import UsageError

POD = """apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  containers: [{name: c, image: netlab/hello}]
"""


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-c",
                           "import os, sys; os.geteuid = lambda: 1000; "
                           "sys.argv = ['netlab'] + sys.argv[1:]; "
                           "from netlab.cli import main; main()", *args],
                          capture_output=True, input=stdin, timeout=30)


def one_error_line(p) -> str:
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("cmd", [["up", "-f"], ["apply", "-f"]])
def test_binary_file_is_refused_in_one_line(tmp_path, cmd):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"name: \xff\xfe\x00\x01garbage")
    line = one_error_line(run(*cmd, str(f)))
    assert f"{f}: not UTF-8 text (byte 0xff at offset 6)" in line


def test_nul_byte_is_refused(tmp_path):
    f = tmp_path / "nul.yaml"
    f.write_bytes(POD.encode() + b"\x00")
    assert "contains a NUL byte" in one_error_line(run("apply", "-f", str(f)))


def test_duplicate_keys_in_the_lab_file_are_refused(tmp_path):
    text = labfile.default_lab_text().replace("name: seed ", "name: seed\nname: other ", 1)
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    line = one_error_line(run("up", "-f", str(f)))
    assert line.startswith(f"error: {f}: not valid YAML (line 6): duplicate key name (first at line 5)")


def test_duplicate_keys_in_a_manifest_are_refused(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD.replace("metadata: {name: p1}", "metadata: {name: p1, name: p2}"))
    assert "duplicate key name" in one_error_line(run("apply", "-f", str(f)))


def test_merge_keys_are_not_duplicates():
    docs = yamlin.load_all("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n", "t")
    assert docs == [{"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}]


def test_dev_zero_is_refused_without_reading_it_all():
    p = run("apply", "-f", "/dev/zero")
    assert "/dev/zero: larger than 1024 KiB" in one_error_line(p)


def test_big_stdin_is_refused():
    p = run("up", "-f", "-", stdin=b"a" * (yamlin.MAX_BYTES + 10))
    assert "<stdin>: larger than 1024 KiB" in one_error_line(p)


def test_a_directory_is_refused(tmp_path):
    assert f"-f {tmp_path}: is a directory" in one_error_line(run("apply", "-f", str(tmp_path)))


def test_a_long_value_is_shortened_in_the_error_line(tmp_path):
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["nodes"][1]["ip"] = "9" * 900_000
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump(doc))
    line = one_error_line(run("up", "-f", str(f)))
    assert line.startswith(f"error: {f}: nodes[1].ip: ")
    assert "...(900002 characters)" in line and len(line) < 400


def test_a_value_with_newlines_stays_one_line():
    lab = labfile.parse_lab(labfile.default_lab_text())
    docs = manifests.parse(POD.replace("image: netlab/hello", 'image: "a\\nb\\nc"'), "pod.yaml")
    with pytest.raises(UsageError) as e:
        manifests.validate(docs, lab)
    assert str(e.value).startswith("pod.yaml: document 1: pod p1: spec.containers[0].image: 'a\\nb\\nc'")
    assert "\n" not in str(e.value)


def test_alias_bomb_and_deep_nesting_are_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(UsageError, match="expands to more than 200000 values"):
        yamlin.load_all(bomb, "bomb.yaml")
    with pytest.raises(UsageError, match="nested (more than 200 levels|too) deep"):
        yamlin.load_all("[" * 5000 + "]" * 5000, "deep.yaml")


def test_several_documents_in_a_lab_file_are_refused():
    with pytest.raises(UsageError, match="expected one YAML document, found 2"):
        labfile.parse_lab(labfile.default_lab_text() + "\n---\nname: x\n", "lab.yaml")


def test_the_master_and_unknown_nodes_are_refused_as_pod_nodes():
    lab = labfile.parse_lab(labfile.default_lab_text())
    pods.check_node(lab, "kub-node-1", "spec.nodeName")
    pods.check_node(lab, None, "spec.nodeName")
    with pytest.raises(UsageError, match=r"^spec.nodeName: 'kub-node-0' is the master of lab seed, "
                                         r"which runs no pods \(workers: kub-node-1, kub-node-2\)$"):
        pods.check_node(lab, "kub-node-0", "spec.nodeName")
    with pytest.raises(UsageError, match=r"^spec.nodeName: 'kub-node-9' is not a node of lab seed"):
        pods.check_node(lab, "kub-node-9", "spec.nodeName")
    doc = manifests.parse(POD.replace("spec:\n", "spec:\n  nodeName: kub-node-0\n"), "pod.yaml")[0]
    manifests.validate([doc], lab)
    with pytest.raises(UsageError, match=r"^pod.yaml: document 1: pod p1: spec.nodeName: 'kub-node-0' is the master"):
        manifests.KINDS["Pod"].check_against(None, lab, doc, None)


def test_a_huge_name_is_refused_before_the_lab_is_opened(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD.replace("name: p1", "name: '" + "a" * 900_000 + "'"))
    p = subprocess.run([sys.executable, "-m", "netlab", "apply", "-f", str(f), "--lab", "nosuchlab"],
                       capture_output=True, timeout=60)
    line = one_error_line(p)
    assert f"{f}: document 1: pod: metadata.name: 'aaaa" in line and "(900002 characters)" in line
