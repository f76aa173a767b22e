"""Lab file validation and the embedded default lab (no root needed)."""

import pytest
import yaml

from netlab import labfile, names
from netlab.errors import UsageError


def test_default_lab_is_the_seed_cluster():
    lab = labfile.load_lab(None)
    assert lab.name == "seed"
    assert [(n.name, n.ip, n.role) for n in lab.nodes] == [
        ("kub-node-0", "172.23.100.4", "master"),
        ("kub-node-1", "172.23.100.5", "worker"),
        ("kub-node-2", "172.23.100.6", "worker"),
    ]
    assert lab.node_network.gateway == "172.23.100.1" and lab.node_network.mtu == 1450
    assert lab.flannel.config_json() == {"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}
    assert lab.etcd_endpoint == "http://172.23.100.4:2379"
    assert lab.services.cluster_ip_range == "192.1.0.0/16" and lab.services.node_ports == (30000, 32767)
    kinds = [(w["kind"], w["metadata"]["name"]) for w in lab.workloads]
    assert kinds == [("Deployment", "my-nginx8"), ("Service", "nginx-cluster-svc"), ("Service", "nginx-nodeport-svc")]


def test_round_trip_through_yaml():
    lab = labfile.load_lab(None)
    again = labfile.parse_lab(lab.to_yaml())
    assert again == lab


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["nodes"][2].update(ip="172.23.100.300"), "nodes[2].ip: '172.23.100.300' is not an IPv4 address"),
    (lambda d: d.pop("nodes"), "nodes: required field is missing"),
    (lambda d: d["flannel"]["Backend"].update(Type="udp"), "flannel.Backend.Type: 'udp' is not allowed"),
    (lambda d: d["flannel"].update(SubnetLen=16), "flannel.SubnetLen: 16 must be longer than the network's /16"),
    (lambda d: d["flannel"].update(SubnetMin="10.2.0.0"), "flannel.SubnetMin: 10.2.0.0 is not inside"),
    (lambda d: d["etcd"].update(peerPort=2379), "etcd.peerPort: must differ from etcd.clientPort"),
    (lambda d: d["nodes"][1].update(name="pod-x"), "nodes[1].name: 'pod-x' is reserved"),
    (lambda d: d.update(extra=1), "extra: unknown field"),
    (lambda d: d.update(kubeProxy={"mode": "ipvs"}), "kubeProxy.mode: 'ipvs' is not allowed"),
])
def test_errors_name_the_field(edit, message):
    doc = yaml.safe_load(labfile.default_lab_text())
    edit(doc)
    with pytest.raises(UsageError) as e:
        labfile.parse_lab(yaml.safe_dump(doc))
    assert message in str(e.value)
    assert e.value.exit_code == 2


def test_lab_names_are_prefix_free():
    # '-' is forbidden so that "<lab>-" never matches another lab's objects
    assert names.LAB_NAME_RE.match("seed") and not names.LAB_NAME_RE.match("seed-2")
    assert names.node_ns("a", "kub-node-1") == "a-kub-node-1"
    assert len(names.underlay_veth("a-very-long-node-name-indeed")) <= 15
    assert names.node_mac("a", "n1") == names.node_mac("a", "n1") != names.node_mac("b", "n1")
