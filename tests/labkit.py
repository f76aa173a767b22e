"""Test helpers: run the real CLI, bring up throw-away labs, inspect the host.

Every test lab has its own name (`t` + 7 hex digits) so it never touches a user's lab,
and is brought down (with --purge) when the test ends, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from netlab import labfile, names
from netlab.kernel import netns, proc

PY = sys.executable


def cli(*args: str, input: str | None = None, check: bool = True, timeout: float = 180,
        env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([PY, "-m", "netlab", *args], input=input, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} exited {p.returncode}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def new_lab_name() -> str:
    return "t" + uuid.uuid4().hex[:7]


def lab_doc(name: str, workloads: bool = False, dns: bool = False, hello: bool = True, **edits) -> dict:
    """The default lab renamed; without its workloads unless asked. `hello`: the workloads'
    nginx containers run netlab/hello instead, whose answer names the pod (which pod
    answered is what most tests check)."""
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["name"] = name
    if not workloads:
        doc["workloads"] = []
    if not dns:  # no coredns pod where DNS is not under test: keeps `up` and CI fast
        doc["dns"] = {**doc.get("dns", {}), "replicas": 0}
    for w in doc["workloads"] if hello else []:
        for c in ((w.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", []):
            if c.get("image") in ("nginx", "sammyliu8/nginx"):
                c["image"] = "netlab/hello"
    for k, v in edits.items():
        doc[k] = v
    return doc


class Lab:
    def __init__(self, tmp: Path, doc: dict):
        self.doc = doc
        self.name = doc["name"]
        self.file = tmp / f"{self.name}.yaml"
        self.file.write_text(yaml.safe_dump(doc))

    def up(self, **kw) -> subprocess.CompletedProcess:
        return cli("up", "-f", str(self.file), **kw)

    def down(self, *extra: str, **kw) -> subprocess.CompletedProcess:
        return cli("down", "--lab", self.name, *extra, **kw)

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return cli(*args, env={"NETLAB_LAB": self.name}, **kw)

    def exec(self, target: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.cli("exec", target, "--", *cmd, check=check, timeout=timeout)

    def sh(self, target: str, script: str, check: bool = True, timeout: float = 60) -> str:
        return self.exec(target, "sh", "-c", script, check=check, timeout=timeout).stdout

    def etcdctl(self, *args: str) -> str:
        return self.cli("etcdctl", *args).stdout

    def get_json(self, *args: str) -> dict:
        return json.loads(self.cli("get", *args, "-o", "json").stdout)

    def store(self):
        from netlab.store import Store

        return Store.for_lab(self.name)


def leftovers(lab: str) -> dict:
    """Everything of the lab that should be gone after `down`."""
    mounts = [l for l in Path("/proc/self/mountinfo").read_text().splitlines()
              if f"/run/netns/{lab}-" in l or f"/run/netlab/{lab}" in l]
    return {
        "namespaces": netns.netns_list(names.ns_prefix(lab)),
        "processes": proc.lab_pids(lab),
        "run_dir": names.run_dir(lab).exists(),
        "mounts": mounts,
    }


def nothing_left(lab: str) -> bool:
    return not any(leftovers(lab).values())


def root_ns_snapshot() -> dict:
    """The root namespace as a person would compare it: addresses, routes, rules, sysctls."""
    def run(*cmd):
        p = subprocess.run(cmd, capture_output=True, text=True)
        return p.stdout

    def strip_counters(text):
        return "\n".join(re.sub(r"\[\d+:\d+\]", "", l) for l in text.splitlines()
                         if not l.startswith("#"))

    return {
        "links": run("ip", "-o", "link", "show"),
        "addrs": run("ip", "-o", "addr", "show"),
        "routes": run("ip", "route", "show", "table", "all"),
        "rules": run("ip", "rule", "show"),
        "neigh_perm": run("ip", "neigh", "show", "nud", "permanent"),
        "iptables_legacy": strip_counters(run("iptables-legacy-save")),
        "iptables_nft": strip_counters(run("iptables-nft-save")),
        "sysctl": run("sysctl", "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
                      "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.forwarding"),
    }


def wait_for(pred, timeout: float = 20, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
