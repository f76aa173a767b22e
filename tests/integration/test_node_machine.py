"""Nodes that look and behave like the seed's machines (issue 17; issue 16's first bullet).

One lab with the default workloads (my-nginx8 x2 behind nginx-cluster-svc), shared by every
test here; each test runs the article's commands from inside a node, as a learner would.
"""

from __future__ import annotations

import re

import pytest

from netlab import names
from tests.labkit import Lab, lab_doc, leftovers, new_lab_name


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"), lab_doc(new_lab_name(), workloads=True))
    lab.up()
    yield lab
    lab.down("--purge", check=False)
    assert not any(leftovers(lab.name).values()), leftovers(lab.name)


def _pods(lab: Lab) -> list[dict]:
    return [p for p in lab.get_json("pods")["items"] if p["metadata"]["name"].startswith("my-nginx8-")]


def test_pod_interfaces_have_no_ipv6_and_dockers_mac(lab):
    for pod in _pods(lab):
        ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]
        ns = names.pod_ns(lab.name, "default", pod["metadata"]["name"])
        out = lab.exec(node, "ip", "netns", "exec", ns, "ip", "addr").stdout
        assert "inet6" not in out, out
        mac = "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        eth0 = re.search(r"eth0@\S+: .*? mtu (\d+) .*\n\s+link/ether (\S+)", out)
        assert eth0 and eth0.group(2) == mac and eth0.group(1) == "1400", out
        assert f"inet {ip}/24" in out
    # the node's own links: ens3, docker0, flannel.1 carry no IPv6 either
    out = lab.exec("kub-node-1", "ip", "addr").stdout
    for dev in ("ens3", "docker0", "flannel.1"):
        assert f": {dev}" in out or f": {dev}@" in out, out
    assert "inet6" not in out, out
