"""The CI entry point (issue 19): `netlab up -f FILE -- CMD` brings the lab up, runs the
user's command against it on the host, removes the lab and exits with the command's code.
Run here without a container engine: the command is what a container would run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from netlab import names
from tests.labkit import PY, Lab, cli, lab_doc, leftovers, new_lab_name, wait_for

VENV_BIN = str(Path(sys.executable).parent)
# `netlab` inside the user's command is this checkout's (as in the image, where it is on PATH)
ENV = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "KUBECONFIG": "/nonexistent/someone-elses"}


def has_kubeconfig_command() -> bool:
    return cli("kubeconfig", "--help", check=False).returncode == 0


def assert_gone(lab: str) -> None:
    assert not any(leftovers(lab).values()), leftovers(lab)
    assert not names.state_dir(lab).exists(), "etcd data kept: up -- CMD purges"


def test_failing_check_inside_the_lab_gives_its_exit_code_and_removes_the_lab(tmp_path):
    lab = Lab(tmp_path, lab_doc(new_lab_name(), workloads=True))  # the seed's nginx + services
    seen = tmp_path / "seen"
    script = f"""
        echo "lab=$NETLAB_LAB kubeconfig=${{KUBECONFIG:-unset}}" > {seen}
        netlab exec kub-node-1 -- curl -s --max-time 5 http://192.1.47.211/ >> {seen}
        netlab exec external -- curl -s --max-time 5 http://172.23.100.6:31295/ >> {seen}
        if [ -n "${{KUBECONFIG:-}}" ] && command -v kubectl >/dev/null; then
            kubectl get nodes -o name >> {seen}
        fi
        echo only-this-on-stdout
        exit 3"""
    try:
        p = cli("up", "-f", str(lab.file), "--", "sh", "-c", script, check=False, env=ENV, timeout=240)
        assert p.returncode == 3, p.stderr
        assert p.stdout.strip() == "only-this-on-stdout"  # the lab's table went to stderr
        assert "kub-node-1" in p.stderr and f"lab {lab.name} removed" in p.stderr
        out = seen.read_text()
        first = out.splitlines()[0]
        assert first.startswith(f"lab={lab.name} ")
        # both curls were answered by the default lab's hello pods (the seed's my-nginx8)
        assert out.count("my-nginx8-") >= 2, out
        if has_kubeconfig_command():
            assert "kubeconfig=unset" not in first and "someone-elses" not in first
            if shutil.which("kubectl", path=ENV["PATH"]):
                assert "node/kub-node-1" in out, out  # real kubectl against the lab's API server
        else:
            assert first.endswith("kubeconfig=unset"), first  # never the caller's cluster
        assert_gone(lab.name)
    finally:
        lab.down("--purge", check=False)


def test_passing_command_and_a_signal_both_remove_the_lab(tmp_path):
    lab = Lab(tmp_path, lab_doc(new_lab_name()))
    try:
        p = cli("up", "-f", str(lab.file), "--", "netlab", "exec", "kub-node-2", "--",
                "ping", "-c1", "-W2", "172.23.100.4", check=False, env=ENV, timeout=240)
        assert p.returncode == 0, p.stderr
        assert "1 received" in p.stdout
        assert_gone(lab.name)

        # SIGTERM while the command runs (a CI job cancelled): passed on, the command's own
        # background process is taken too, exit 128+15
        started = tmp_path / "started"
        proc = subprocess.Popen(
            [PY, "-m", "netlab", "up", "-f", str(lab.file), "--", "sh", "-c",
             f"sleep 300 & echo $! > {started}.pid; touch {started}; wait"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
        wait_for(started.exists, 240, 0.5, what="the command to start")
        bg = int(Path(f"{started}.pid").read_text())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert f"lab {lab.name} removed" in err
        assert_gone(lab.name)
        assert not Path(f"/proc/{bg}").exists() or "zombie" in Path(f"/proc/{bg}/status").read_text()
    finally:
        lab.down("--purge", check=False)


def test_bad_lab_file_runs_nothing(tmp_path):
    name = new_lab_name()
    doc = lab_doc(name)
    doc["workloads"] = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                         "spec": {"ports": [{"port": 99999}]}}]
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump(doc))
    marker = tmp_path / "ran"
    p = cli("up", "-f", str(f), "--", "touch", str(marker), check=False, env=ENV)
    assert p.returncode == 2, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert errors == ["error: workloads[0]: service x: spec.ports[0].port: 99999 is not a port (1-65535)"]
    assert not marker.exists()
    assert_gone(name)
    # a command without `--` is refused before anything happens
    p = cli("up", "-f", str(f), "touch", str(marker), check=False, env=ENV)
    assert p.returncode == 2 and "after `--`" in p.stderr and not marker.exists()
