"""Pure parts of nodes and flannel, without root: the flannel role's plans (iptables rules,
entries per lease, stale entries), node add/delete validation, the `get nodes` row, and
how `up` merges a lab file into a running lab whose nodes changed at runtime."""

import time
from ipaddress import IPv4Network

import pytest
import yaml

from netlab import labfile
from netlab.agent import flannel as F
from netlab.api import nodes as api_nodes
from netlab.cli import output
from netlab.errors import UsageError
from netlab.lab import lifecycle, nodes
from netlab.plan import flannel_leases as fl

N = IPv4Network


def default_lab(**edits):
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["workloads"] = []
    doc.update(edits)
    return labfile.parse_lab(yaml.safe_dump(doc))


# -- iptables -------------------------------------------------------------------
def test_masq_rules_are_flannels():
    rules = F.masq_rules(N("10.1.0.0/16"), N("10.1.1.0/24"))
    c = '-m comment --comment "flanneld masq"'
    assert rules == [
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.1.0/24 -d 10.1.0.0/16 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.0.0/16 -d 10.1.1.0/24 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.1.0/24 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.0.0/16 ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.0.0/16 {c} -j MASQUERADE --random-fully",
    ]


def test_restore_text_declares_each_chain_once_and_skips_masq_when_off():
    on = F.restore_text(F.desired_chains(N("10.1.0.0/16"), N("10.1.79.0/24"), True))
    assert on.count(":FLANNEL-POSTRTG - [0:0]") == 1 and on.count(":FLANNEL-FWD - [0:0]") == 1
    assert on.count("COMMIT") == 2 and "POSTROUTING" not in on  # jumps are added one by one
    off = F.restore_text(F.desired_chains(N("10.1.0.0/16"), N("10.1.79.0/24"), False))
    assert "FLANNEL-POSTRTG" not in off and "-A FLANNEL-FWD -d 10.1.0.0/16" in off


def test_jump_in_save_form_and_chain_rules():
    chain, spec = F.JUMPS["nat"]
    line = F.save_form(chain, spec)
    assert line == '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
    save = "*nat\n:FLANNEL-POSTRTG - [0:0]\n" + line + "\n-A FLANNEL-POSTRTG -j RETURN\nCOMMIT\n"
    assert F.chain_rules(save, "FLANNEL-POSTRTG") == ["-A FLANNEL-POSTRTG -j RETURN"]


# -- peers ----------------------------------------------------------------------
def lease(sn, ip, mac="02:00:00:00:00:01", backend="vxlan"):
    return fl.Lease(subnet=N(sn), public_ip=ip, vtep_mac=mac, vni=1, backend_type=backend)


def test_peers_skip_self_and_bare_reservations():
    leases = {
        N("10.1.1.0/24"): lease("10.1.1.0/24", "172.23.100.5"),
        N("10.1.79.0/24"): lease("10.1.79.0/24", "172.23.100.6", "02:00:00:00:00:02"),
        N("10.1.5.0/24"): lease("10.1.5.0/24", "172.23.100.7", None, ""),  # {"PublicIP": ...} only
    }
    got = F.peers(leases, N("10.1.1.0/24"), "172.23.100.5")
    assert list(got) == [N("10.1.79.0/24")]
    assert got[N("10.1.79.0/24")].gateway == "10.1.79.0"


def test_plan_adds_missing_and_removes_stale_entries():
    want = F.peers({N("10.1.79.0/24"): lease("10.1.79.0/24", "172.23.100.6", "02:00:00:00:00:02")},
                   N("10.1.1.0/24"), "172.23.100.5")
    plan = F.plan_peers(want,
                        routes={"10.1.9.0/24": "10.1.9.0"},
                        neighs={"10.1.9.0": "02:00:00:00:00:09"},
                        fdb={("02:00:00:00:00:09", "172.23.100.9")})
    assert plan.add_neigh == [("10.1.79.0", "02:00:00:00:00:02")]
    assert plan.add_fdb == [("02:00:00:00:00:02", "172.23.100.6")]
    assert plan.add_route == [("10.1.79.0/24", "10.1.79.0")]
    assert plan.del_route == ["10.1.9.0/24"] and plan.del_neigh == ["10.1.9.0"]
    assert plan.del_fdb == [("02:00:00:00:00:09", "172.23.100.9")]
    # Once in place, nothing to do: a restarted agent adds no duplicate.
    done = F.plan_peers(want, {"10.1.79.0/24": "10.1.79.0"}, {"10.1.79.0": "02:00:00:00:00:02"},
                        {("02:00:00:00:00:02", "172.23.100.6")})
    assert done.empty()


def test_plan_fixes_a_changed_vtep_mac():
    want = F.peers({N("10.1.79.0/24"): lease("10.1.79.0/24", "172.23.100.6", "02:00:00:00:00:03")},
                   None, "172.23.100.5")
    plan = F.plan_peers(want, {"10.1.79.0/24": "10.1.79.0"}, {"10.1.79.0": "02:00:00:00:00:02"},
                        {("02:00:00:00:00:02", "172.23.100.6")})
    assert plan.add_neigh == [("10.1.79.0", "02:00:00:00:00:03")]
    assert plan.del_fdb == [("02:00:00:00:00:02", "172.23.100.6")]
    assert plan.add_route == [] and plan.del_route == []


# -- node add / delete validation ----------------------------------------------
@pytest.mark.parametrize("name,ip,role,msg", [
    ("kub-node-1", "172.23.100.9", "worker", "NAME: node 'kub-node-1' already exists"),
    ("Kub_1", "172.23.100.9", "worker", "NAME: 'Kub_1' is not a valid node name"),
    ("pod-x", "172.23.100.9", "worker", "NAME: 'pod-x' is not a valid node name"),
    ("kub-node-3", "172.23.100.5", "worker", "--ip: 172.23.100.5 is already used by node kub-node-1"),
    ("kub-node-3", "172.23.100.1", "worker", "--ip: 172.23.100.1 is the node network's gateway"),
    ("kub-node-3", "10.9.0.1", "worker", "--ip: 10.9.0.1 is not a host address"),
    ("kub-node-3", "172.23.100.255", "worker", "--ip: 172.23.100.255 is not a host address"),
    ("kub-node-3", "1.2.3", "worker", "--ip: '1.2.3' is not an IPv4 address"),
    ("kub-node-3", "172.23.100.9", "master", "--role: 'master' is not allowed"),
])
def test_add_rejects_bad_input(name, ip, role, msg):
    with pytest.raises(UsageError) as e:
        nodes.validate_add(default_lab(), name, ip, role)
    assert str(e.value).startswith(msg)
    assert e.value.exit_code == 2


def test_add_returns_the_lab_with_the_worker():
    lab = nodes.validate_add(default_lab(), "kub-node-3", "172.23.100.7", "worker")
    assert lab.node("kub-node-3").ip == "172.23.100.7" and lab.node("kub-node-3").role == "worker"
    assert "kub-node-3" in [n.name for n in lab.flannel_nodes()]


def test_delete_refuses_master_etcd_and_unknown():
    lab = default_lab()
    for name, msg in (("kub-node-0", "is the master"), ("nope", "is not part of lab")):
        with pytest.raises(UsageError, match=msg):
            nodes.validate_delete(lab, name)
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["etcd"]["node"] = "kub-node-2"
    with pytest.raises(UsageError, match="runs the lab's etcd"):
        nodes.validate_delete(labfile.parse_lab(yaml.safe_dump(doc)), "kub-node-2")
    assert nodes.validate_delete(lab, "kub-node-1").ip == "172.23.100.5"


def test_without_drops_the_nodes_reservation():
    lab = nodes._without(default_lab(), "kub-node-1")
    assert [n.name for n in lab.nodes] == ["kub-node-0", "kub-node-2"]
    assert lab.flannel.reservations == {"kub-node-2": "10.1.79.0/24"}


# -- get nodes --------------------------------------------------------------------
def node_obj(name="kub-node-1", role="worker"):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {f"node-role.kubernetes.io/{role}": ""},
                         "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 190))},
            "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "172.23.100.5"}],
                                   "nodeInfo": {"kubeletVersion": "netlab"}}}


def test_node_row_ready_and_not_ready():
    now = time.time()
    fresh = {"spec": {"renewTime": now - 1}}
    old = {"spec": {"renewTime": now - 30}}
    n = api_nodes.node_view(node_obj(), fresh, "10.1.1.0/24", now)
    assert output.node_row(n, wide=True) == ["kub-node-1", "Ready", "worker", "3m", "netlab",
                                       "172.23.100.5", "10.1.1.0/24"]
    assert n["spec"]["podCIDR"] == "10.1.1.0/24"
    assert output.node_row(api_nodes.node_view(node_obj(), old, None, now), wide=False)[1] == "NotReady"
    assert output.node_row(api_nodes.node_view(node_obj(), None, None, now), wide=False)[1] == "NotReady"


# -- up on a running lab -----------------------------------------------------------
def test_merge_keeps_runtime_nodes_and_brings_back_deleted_ones():
    file_lab = default_lab()
    running = nodes.validate_add(nodes._without(file_lab, "kub-node-2"), "kub-node-3", "172.23.100.7", "worker")
    merged = lifecycle.merge_running(running, file_lab)
    assert [n.name for n in merged.nodes] == ["kub-node-0", "kub-node-1", "kub-node-3", "kub-node-2"]
    assert merged.flannel.reservations["kub-node-2"] == "10.1.79.0/24"
    assert lifecycle.merge_running(file_lab, file_lab) is file_lab


def test_merge_refuses_a_different_lab():
    file_lab = default_lab()
    assert lifecycle.merge_running(file_lab, default_lab(nodeNetwork={
        "cidr": "172.23.100.0/24", "gateway": "172.23.100.1", "mtu": 1500})) is None
    doc = yaml.safe_load(labfile.default_lab_text())
    doc["workloads"] = []
    doc["nodes"][1]["ip"] = "172.23.100.50"
    assert lifecycle.merge_running(file_lab, labfile.parse_lab(yaml.safe_dump(doc))) is None

