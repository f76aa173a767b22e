"""Runaway deployments (issue 18 item 1), the pure parts: node capacity from the lab file,
the scheduler's choice and its Unschedulable message, slow-start batches, the replica limit."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from netlab import labfile
from netlab.agent.scheduler import choose, unschedulable_message
from netlab.api import deployments as api_dl
from netlab.api import manifests
from netlab.errors import UsageError
from netlab.plan import deployments as dl


def lab_with(**node1) -> labfile.Lab:
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["nodes"][1].update(node1)
    return labfile.parse_lab(yaml.safe_dump(doc), "lab.yaml")


def test_capacity_is_max_pods_default_110_bounded_by_the_ipam_range():
    lab = labfile.load_lab(None)
    assert [lab.pod_capacity(n.name) for n in lab.nodes] == [0, 110, 110]  # the master runs none
    assert lab.pod_range_size("kub-node-1") == 251  # 10.1.1.4 - 10.1.1.254
    assert lab_with(maxPods=3).pod_capacity("kub-node-1") == 3
    small = lab_with(maxPods=None, podRange={"rangeStart": "10.1.1.200", "rangeEnd": "10.1.1.219"})
    assert small.pod_capacity("kub-node-1") == 20 and small.total_pod_capacity == 130
    assert "maxPods" not in labfile.load_lab(None).to_yaml()  # the default stays implicit


def test_max_pods_beyond_the_range_or_not_positive_is_refused():
    with pytest.raises(UsageError, match=r"^lab.yaml: nodes\[1\].maxPods: 300 is more than the 251 pod "
                                         r"addresses of the node's IPAM range \(a /24 subnet\)$"):
        lab_with(maxPods=300)
    with pytest.raises(UsageError, match=r"^lab.yaml: nodes\[1\].maxPods: "):
        lab_with(maxPods=0)


def test_scheduler_leaves_pods_when_every_worker_is_full():
    ready = ["kub-node-1", "kub-node-2"]
    cap = {"kub-node-1": 2, "kub-node-2": 1}
    load: Counter = Counter()
    picks = []
    for _ in range(4):
        n = choose(ready, load, cap)
        if n:
            load[n] += 1
        picks.append(n)
    assert picks == ["kub-node-1", "kub-node-2", "kub-node-1", None]
    msg = unschedulable_message(3, Counter({
        "node(s) had untolerated taint {node-role.kubernetes.io/master: }": 1, "Too many pods": 2}))
    assert msg == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                   "{node-role.kubernetes.io/master: }, 2 Too many pods.")


def test_slow_start_batches_double_like_the_replicaset_controller():
    assert dl.slow_start_batches(0) == []
    assert dl.slow_start_batches(1) == [1]
    assert dl.slow_start_batches(10) == [1, 2, 4, 3]
    assert sum(dl.slow_start_batches(dl.BURST_REPLICAS)) == dl.BURST_REPLICAS
    assert len(dl.slow_start_batches(dl.BURST_REPLICAS)) == 9


DEP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: big}
spec:
  replicas: 100000
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec: {containers: [{name: c, image: netlab/hello}]}
"""


def test_absurd_replicas_are_refused_naming_spec_replicas():
    lab = labfile.load_lab(None)  # 220 pods fit: 2200 is the limit
    api_dl.check_replicas(lab, 2200)
    api_dl.check_replicas(lab, None)
    with pytest.raises(UsageError, match=r"^spec.replicas: 2201 is more than netlab allows \(2200: "):
        api_dl.check_replicas(lab, 2201)
    docs = manifests.parse(DEP, "big.yaml")
    manifests.validate(docs, lab)
    with pytest.raises(UsageError, match=r"^big.yaml: document 1: deployment big: spec.replicas: 100000 is more "
                                         r"than netlab allows \(2200: at most 10000"):
        manifests.KINDS["Deployment"].check_against(None, lab, docs[0], None)


def test_etcd_guard_rules_reject_the_pod_network_only():
    from netlab.plan import etcd_guard

    text = etcd_guard.restore_text("10.1.0.0/16", "172.23.100.4", (2379, 2380), ["FORWARD"])
    assert text.splitlines() == [
        "*filter", ":NETLAB-ETCD - [0:0]",
        "-A NETLAB-ETCD -s 10.1.0.0/16 -d 172.23.100.4/32 -p tcp -m multiport --dports 2379,2380 "
        '-m comment --comment "netlab: pods may not reach etcd; use the API server" -j REJECT --reject-with tcp-reset',
        "-I FORWARD 1 -j NETLAB-ETCD", "COMMIT"]
    assert "-I" not in etcd_guard.restore_text("10.1.0.0/16", "172.23.100.4", (2379, 2380), [])


def test_lab_file_workloads_get_the_same_checks_before_anything_is_touched():
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["workloads"][0]["spec"]["replicas"] = 100000
    with pytest.raises(UsageError, match=r"^workloads\[0\]: deployment my-nginx8: spec.replicas: 100000 is more"):
        manifests.workload_docs(labfile.parse_lab(yaml.safe_dump(doc)))
    doc["workloads"][0]["spec"]["replicas"] = 2
    doc["workloads"][0]["spec"]["template"]["spec"]["nodeName"] = "kub-node-0"
    with pytest.raises(UsageError, match=r"spec.template.spec.nodeName: 'kub-node-0' is the master"):
        manifests.workload_docs(labfile.parse_lab(yaml.safe_dump(doc)))
