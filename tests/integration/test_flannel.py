"""Flannel (issue 3, seed S4-S9): the etcd subnet registry and the VXLAN overlay, checked on
the real kernel with the commands a person would type (etcdctl, route -n, ip -d link,
bridge fdb, ip neigh, ping, tcpdump), plus lease races, restarts and nodes at runtime.

One default-shaped lab for the module; tests that change it put it back. A second lab, with
no reservations, room for three subnets and a 6 s lease TTL, shows agents racing at `up`,
leases kept alive beyond their TTL, and a stopped node's lease expiring.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import uuid
from ipaddress import IPv4Network

import pytest

from netlab import names
from netlab.agent import flannel as F
from netlab.kernel import netlink, netns, proc
from netlab.plan import flannel_leases as fl
from tests.labkit import PY, Lab, lab_doc, leftovers, new_lab_name, wait_for

TTL = 6  # the racing lab's leaseTTL
IPS = {"kub-node-0": "172.23.100.4", "kub-node-1": "172.23.100.5", "kub-node-2": "172.23.100.6"}
NODES = list(IPS)


@pytest.fixture(scope="module")
def flab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("flannel"), lab_doc(new_lab_name()))
    lab.up()
    yield lab
    # keep the agents' logs for a post-mortem (pytest keeps the last three tmp trees)
    shutil.copytree(names.run_dir(lab.name) / "logs", lab.file.parent / "logs", dirs_exist_ok=True)
    lab.down("--purge", check=False)
    assert not any(leftovers(lab.name).values()), leftovers(lab.name)


# --------------------------------------------------------------------------- helpers
def leases(lab) -> dict[str, tuple[str, str, int]]:
    """PublicIP -> (subnet, value text, etcd lease id), read from the lab's etcd."""
    st = lab.store()
    try:
        out = {}
        for it in st.list_raw("/coreos.com/network/subnets/"):
            out[json.loads(it.value)["PublicIP"]] = (str(fl.parse_lease_key(it.key)), it.value, it.lease_id)
        return out
    finally:
        st.close()


def subnet_of(lab, node: str) -> IPv4Network:
    return IPv4Network(leases(lab)[IPS[node]][0])


def vtep_mac_of(lab, node: str) -> str:
    out = lab.exec(node, "ip", "-d", "link", "show", "flannel.1").stdout
    return re.search(r"link/ether (\S+)", out).group(1)


def flannel_entries(lab, node: str) -> dict:
    """What flannel.1 carries on a node: routes, neighbours, fdb entries (read by netlink)."""
    with netlink.Netlink(names.node_ns(lab.name, node)) as nl:
        idx = nl.index("flannel.1")
        return {
            "routes": sorted((r["dst"], r["gateway"]) for r in nl.routes() if r["oif"] == idx),
            "neigh": sorted((ip, mac) for ip, mac, _ in nl.neighbours("flannel.1")),
            "fdb": sorted(nl.fdb_entries("flannel.1")),
        }


def agent_pid(lab, node: str) -> int:
    return proc.read_pid(names.pid_file(lab.name, f"agent-{node}"))


def stop(pid: int, sig=signal.SIGTERM) -> None:
    """Stop one process the lab started, by pid, and wait until it is gone."""
    import os

    os.kill(pid, sig)
    wait_for(lambda: not proc.pid_alive(pid), timeout=10, interval=0.05, what=f"pid {pid} to exit")


def put_fake_lease(lab, subnet: str, ip: str, mac: str) -> None:
    st = lab.store()
    try:
        st.put_raw(fl.lease_key(subnet), fl.lease_value(ip, mac, 1))
    finally:
        st.close()


def delete_lease(lab, subnet: str) -> None:
    st = lab.store()
    try:
        st.delete(fl.lease_key(subnet))
    finally:
        st.close()


def programmed(lab, node: str, subnet: str, ip: str, mac: str) -> bool:
    e = flannel_entries(lab, node)
    gw = subnet.split("/")[0]
    return ((subnet, gw) in e["routes"] and (gw, mac) in e["neigh"] and (mac, ip) in e["fdb"])


def absent(lab, node: str, subnet: str, ip: str, mac: str) -> bool:
    e = flannel_entries(lab, node)
    gw = subnet.split("/")[0]
    return (all(d != subnet for d, _ in e["routes"]) and all(i != gw for i, _ in e["neigh"])
            and all(m != mac for m, _ in e["fdb"]))


# --------------------------------------------------------------------------- etcd (S5)
def test_etcd_has_config_and_one_lease_per_node_as_flannel_writes_them(flab):
    cfg = flab.etcdctl("get", "/coreos.com/network/config", "--print-value-only").strip()
    assert cfg == '{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'
    lines = flab.etcdctl("get", "--prefix", "/coreos.com/network/subnets/").split()
    kv = dict(zip(lines[::2], lines[1::2]))
    assert len(kv) == 3, kv
    by_ip = {json.loads(v)["PublicIP"]: (k, v) for k, v in kv.items()}
    assert by_ip["172.23.100.5"][0] == "/coreos.com/network/subnets/10.1.1.0-24"  # reserved
    assert by_ip["172.23.100.6"][0] == "/coreos.com/network/subnets/10.1.79.0-24"  # reserved
    master_key = by_ip["172.23.100.4"][0]
    master_sn = fl.parse_lease_key(master_key)
    assert master_sn.subnet_of(IPv4Network("10.1.0.0/16")) and master_sn.prefixlen == 24
    assert master_sn not in (IPv4Network("10.1.0.0/24"), IPv4Network("10.1.1.0/24"), IPv4Network("10.1.79.0/24"))
    for node, ip in IPS.items():
        mac = vtep_mac_of(flab, node)
        # byte for byte what flanneld writes, and VtepMAC is that node's flannel.1 MAC
        assert by_ip[ip][1] == ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan",'
                                '"BackendData":{"VNI":1,"VtepMAC":"%s"}}' % (ip, mac))
    # reservations carry no etcd lease; the master's lease has the lab's TTL
    js = json.loads(flab.etcdctl("get", "--prefix", "/coreos.com/network/subnets/", "-w", "json"))
    lease_of = {base64.b64decode(k["key"]).decode(): k.get("lease", 0) for k in js["kvs"]}
    assert lease_of[by_ip["172.23.100.5"][0]] == 0 and lease_of[by_ip["172.23.100.6"][0]] == 0
    assert lease_of[master_key] != 0
    ttl = flab.etcdctl("lease", "timetolive", f"{lease_of[master_key]:x}")
    assert "granted with TTL(86400s)" in ttl, ttl  # flannel's 24 h


# --------------------------------------------------------------------------- kernel (S4, S6, S7)
def test_each_node_kernel_matches_the_leases(flab):
    ls = leases(flab)
    macs = {json.loads(v)["PublicIP"]: json.loads(v)["BackendData"]["VtepMAC"] for _, v, _ in ls.values()}
    for node, ip in IPS.items():
        sn = IPv4Network(ls[ip][0])
        net = sn.network_address
        out = flab.sh(node, "cat /run/flannel/subnet.env; echo ==; ip -d link show flannel.1; echo ==;"
                            "ip -o -4 addr show; echo ==; ip link show docker0; echo ==; route -n; echo ==;"
                            "bridge fdb show dev flannel.1; echo ==; ip neigh show dev flannel.1")
        env, link, addrs, br, route, fdb, neigh = out.split("==\n")
        assert env == (f"FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET={net + 1}/24\n"
                       f"FLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
        assert "mtu 1400" in link and f"link/ether {macs[ip]}" in link
        assert re.search(rf"vxlan id 1 local {re.escape(ip)} dev ens3 .*dstport 8472 nolearning", link), link
        assert re.search(rf"flannel\.1\s+inet {re.escape(str(net))}/32", addrs), addrs
        assert re.search(rf"docker0\s+inet {re.escape(str(net + 1))}/24", addrs), addrs
        assert "mtu 1400" in br and ",UP" in br.split(">")[0], br
        rows = [l.split() for l in route.splitlines()[2:]]
        flannel_rows = sorted((r[0], r[1], r[2], r[3]) for r in rows if r[-1] == "flannel.1")
        others = {o: IPv4Network(ls[o][0]) for o in IPS.values() if o != ip}
        assert flannel_rows == sorted((str(s.network_address), str(s.network_address), "255.255.255.0", "UG")
                                      for s in others.values())
        assert [str(net), "0.0.0.0", "255.255.255.0", "U"] in [r[:4] for r in rows if r[-1] == "docker0"]
        assert ["0.0.0.0", "172.23.100.1"] in [r[:2] for r in rows if r[-1] == "ens3"]
        assert sorted(fdb.split("\n")[:-1]) == sorted(f"{macs[o]} dst {o} self permanent" for o in others)
        assert sorted(l.strip() for l in neigh.splitlines()) == sorted(
            f"{s.network_address} lladdr {macs[o]} PERMANENT" for o, s in others.items())


def test_ip_masq_and_forward_rules_as_flannel_installs_them(flab):
    out = flab.sh("kub-node-1", "iptables-save -t nat; iptables-save -t filter")
    c = '-m comment --comment "flanneld masq"'
    assert F.chain_rules(out, "FLANNEL-POSTRTG") == [
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.1.0/24 -d 10.1.0.0/16 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.0.0/16 -d 10.1.1.0/24 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.1.0/24 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.1.0.0/16 ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.0.0/16 {c} -j MASQUERADE --random-fully",
    ]
    f = '-m comment --comment "flanneld forward"'
    assert F.chain_rules(out, "FLANNEL-FWD") == [f"-A FLANNEL-FWD -s 10.1.0.0/16 {f} -j ACCEPT",
                                                 f"-A FLANNEL-FWD -d 10.1.0.0/16 {f} -j ACCEPT"]
    assert out.count(f"-A POSTROUTING {c} -j FLANNEL-POSTRTG") == 1
    assert out.count(f"-A FORWARD {f} -j FLANNEL-FWD") == 1


# --------------------------------------------------------------------------- data path (S8)
def test_docker0_reaches_docker0_over_vxlan_with_inner_addresses_on_the_wire(flab):
    cap = subprocess.Popen([PY, "-m", "netlab", "exec", "--lab", flab.name, "external", "--",
                            "tcpdump", "-lni", "br0", "-c", "2", "udp", "port", "8472"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # tcpdump says "listening on br0" on stderr once the capture is armed
        line = cap.stderr.readline()
        while line and "listening on" not in line:
            line = cap.stderr.readline()
        p = flab.exec("kub-node-1", "ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", "10.1.1.1", "10.1.79.1",
                      check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        out, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    # outer: node IPs on UDP 8472 (tcpdump decodes 8472 as OTV); inner: the docker0 addresses
    assert re.search(r"IP 172\.23\.100\.5\.\d+ > 172\.23\.100\.6\.8472: ", out), out
    assert "IP 10.1.1.1 > 10.1.79.1: ICMP echo request" in out, out


def test_df_ping_of_flannel_mtu_minus_28_crosses_one_more_byte_does_not(flab):
    ok = flab.exec("kub-node-1", "ping", "-c1", "-W2", "-M", "do", "-s", "1372", "-I", "10.1.1.1", "10.1.79.1",
                   check=False)
    assert ok.returncode == 0 and "1380 bytes from 10.1.79.1" in ok.stdout, ok.stdout + ok.stderr
    big = flab.exec("kub-node-1", "ping", "-c1", "-W2", "-M", "do", "-s", "1373", "-I", "10.1.1.1", "10.1.79.1",
                    check=False)
    assert big.returncode != 0 and "mtu=1400" in big.stdout + big.stderr


# --------------------------------------------------------------------------- get nodes
def test_get_nodes_table_wide_and_json(flab):
    rows = [l.split() for l in flab.cli("get", "nodes").stdout.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("kub-node-0", "Ready", "master"), ("kub-node-1", "Ready", "worker"), ("kub-node-2", "Ready", "worker")]
    ls = leases(flab)
    wide = [l.split() for l in flab.cli("get", "no", "-o", "wide").stdout.splitlines()]
    assert wide[0][-2:] == ["INTERNAL-IP", "POD-CIDR"]
    assert {r[0]: (r[-2], r[-1]) for r in wide[1:]} == {n: (ip, ls[ip][0]) for n, ip in IPS.items()}
    doc = flab.get_json("nodes")
    assert doc["kind"] == "List" and [i["kind"] for i in doc["items"]] == ["Node"] * 3
    assert doc["items"][1]["spec"]["podCIDR"] == "10.1.1.0/24"
    one = flab.get_json("node", "kub-node-2")
    assert one["metadata"]["name"] == "kub-node-2" and one["status"]["conditions"][0]["status"] == "True"
    missing = flab.cli("get", "nodes", "nope", check=False)
    assert missing.returncode == 1 and 'nodes "nope" not found' in missing.stderr


# --------------------------------------------------------------------------- watch latency
def test_a_lease_change_reaches_every_node_well_under_a_second(flab, record_property):
    nls = {n: netlink.Netlink(names.node_ns(flab.name, n)) for n in NODES}
    st = flab.store()
    add, rem = [], []
    try:
        for i in range(5):
            sn, ip, mac = f"10.1.{240 + i}.0/24", f"172.23.100.{240 + i}", fl.vtep_mac(f"fake{i}")
            t0 = time.perf_counter()
            st.put_raw(fl.lease_key(sn), fl.lease_value(ip, mac, 1))
            pending = set(NODES)
            while pending and time.perf_counter() - t0 < 2:
                pending = {n for n in pending if not any(r["dst"] == sn for r in nls[n].routes())}
                time.sleep(0.002)
            add.append(time.perf_counter() - t0)
            assert not pending, f"{pending} did not route {sn} within 2 s"
            assert all(programmed(flab, n, sn, ip, mac) for n in NODES)
            t0 = time.perf_counter()
            st.delete(fl.lease_key(sn))
            pending = set(NODES)
            while pending and time.perf_counter() - t0 < 2:
                pending = {n for n in pending if any(r["dst"] == sn for r in nls[n].routes())}
                time.sleep(0.002)
            rem.append(time.perf_counter() - t0)
            assert not pending, f"{pending} kept {sn} for 2 s"
            wait_for(lambda: all(absent(flab, n, sn, ip, mac) for n in NODES), timeout=2)
    finally:
        st.close()
        for nl in nls.values():
            nl.close()
    record_property("lease_to_route_ms", [round(x * 1000) for x in add])
    print(f"\nlease write -> route on all 3 nodes: median {statistics.median(add) * 1000:.0f} ms, "
          f"max {max(add) * 1000:.0f} ms; delete -> gone: median {statistics.median(rem) * 1000:.0f} ms")
    assert max(add) < 1.0 and max(rem) < 1.0


def test_stale_entries_in_the_kernel_are_removed(flab):
    # (each command must succeed; the agent may remove them again at any moment after)
    flab.sh("kub-node-1", "ip route add 10.1.251.0/24 via 10.1.251.0 dev flannel.1 onlink &&"
                          "ip neigh replace 10.1.251.0 lladdr 02:00:00:00:02:51 dev flannel.1 nud permanent &&"
                          "bridge fdb append 02:00:00:00:02:51 dst 172.23.100.251 dev flannel.1")
    # No lease names them: the next reconcile removes all three. Any lease event starts one
    # (the periodic resync would too, within 10 s): here another node's lease coming and going.
    mac = fl.vtep_mac("stale-probe")
    put_fake_lease(flab, "10.1.250.0/24", "172.23.100.250", mac)
    wait_for(lambda: absent(flab, "kub-node-1", "10.1.251.0/24", "172.23.100.251", "02:00:00:00:02:51"),
             timeout=5, what="stale entries to be removed")
    assert programmed(flab, "kub-node-1", "10.1.250.0/24", "172.23.100.250", mac)
    delete_lease(flab, "10.1.250.0/24")
    wait_for(lambda: len(flannel_entries(flab, "kub-node-1")["routes"]) == 2, timeout=3)


# --------------------------------------------------------------------------- lease life
def test_agent_restart_keeps_its_subnet_and_adds_no_duplicate(flab):
    before_etcd = leases(flab)
    before = {n: flannel_entries(flab, n) for n in NODES}
    before_ipt = flab.sh("kub-node-1", "iptables-save | grep -v '^[#:]'")
    for node in ("kub-node-0", "kub-node-1"):
        stop(agent_pid(flab, node))
    flab.up()
    assert proc.pid_alive(agent_pid(flab, "kub-node-0")) and proc.pid_alive(agent_pid(flab, "kub-node-1"))
    # the restarted agents are reconciling: a new lease reaches them
    mac = fl.vtep_mac("restart-probe")
    put_fake_lease(flab, "10.1.252.0/24", "172.23.100.252", mac)
    wait_for(lambda: all(programmed(flab, n, "10.1.252.0/24", "172.23.100.252", mac) for n in NODES), timeout=10)
    delete_lease(flab, "10.1.252.0/24")
    wait_for(lambda: all(absent(flab, n, "10.1.252.0/24", "172.23.100.252", mac) for n in NODES), timeout=5)
    # same subnets, same etcd lease (adopted, not re-created), not even rewritten
    st = flab.store()
    try:
        assert leases(flab) == before_etcd
        revs = {it.key: it.mod_revision for it in st.list_raw("/coreos.com/network/subnets/")}
    finally:
        st.close()
    assert {n: flannel_entries(flab, n) for n in NODES} == before
    assert flab.sh("kub-node-1", "iptables-save | grep -v '^[#:]'") == before_ipt
    time.sleep(0.5)
    st = flab.store()
    try:
        assert {it.key: it.mod_revision for it in st.list_raw("/coreos.com/network/subnets/")} == revs
    finally:
        st.close()


def test_etcd_restart_is_survived(flab):
    before = leases(flab)
    epid = proc.read_pid(names.pid_file(flab.name, "etcd"))
    stop(epid, signal.SIGKILL)
    # the master's node init starts etcd again by itself, as systemd would; `up` finds it up
    wait_for(lambda: proc.is_lab_process(proc.read_pid(names.pid_file(flab.name, "etcd")), flab.name)
             and proc.read_pid(names.pid_file(flab.name, "etcd")) != epid, timeout=5, what="etcd restarted")
    p = flab.up()
    assert "etcd" in p.stderr and "nothing to repair" in p.stderr
    assert leases(flab) == before
    # watches come back (not just the 10 s resync): leases come and go within seconds
    mac = fl.vtep_mac("etcd-restart-probe")
    for sn in ("10.1.253.0/24", "10.1.254.0/24"):
        put_fake_lease(flab, sn, "172.23.100.253", mac)
        wait_for(lambda: all(programmed(flab, n, sn, "172.23.100.253", mac) for n in NODES), timeout=5)
        delete_lease(flab, sn)
        wait_for(lambda: all(absent(flab, n, sn, "172.23.100.253", mac) for n in NODES), timeout=3)
    # the master's etcd lease (24 h TTL) lived through the restart
    st = flab.store()
    try:
        assert st.lease_ttl(before[IPS["kub-node-0"]][2]) > 0
    finally:
        st.close()


# --------------------------------------------------------------------------- nodes at runtime
def test_node_add_and_delete_at_runtime(flab):
    p = flab.cli("node", "add", "kub-node-3", "--ip", "172.23.100.7")
    assert "node/kub-node-3 added" in p.stdout
    sn, value, lease_id = leases(flab)["172.23.100.7"]
    sn = IPv4Network(sn)
    mac = vtep_mac_of(flab, "kub-node-3")
    assert json.loads(value)["BackendData"]["VtepMAC"] == mac and lease_id != 0
    for n in NODES:  # the CLI returned once every other node routed the new subnet
        assert programmed(flab, n, str(sn), "172.23.100.7", mac)
    e = flannel_entries(flab, "kub-node-3")
    assert sorted(d for d, _ in e["routes"]) == sorted(s for s, _, _ in leases(flab).values() if s != str(sn))
    ping = flab.exec("kub-node-1", "ping", "-c1", "-W2", "-I", "10.1.1.1", str(sn.network_address + 1), check=False)
    assert ping.returncode == 0, ping.stdout
    assert flab.exec("kub-node-3", "cat", "/run/flannel/subnet.env").stdout.splitlines()[1] == \
        f"FLANNEL_SUBNET={sn.network_address + 1}/24"
    rows = {r.split()[0]: r.split()[1] for r in flab.cli("get", "nodes").stdout.splitlines()[1:]}
    assert rows["kub-node-3"] == "Ready"

    p = flab.cli("node", "delete", "kub-node-3")
    assert "node/kub-node-3 deleted" in p.stdout
    assert "172.23.100.7" not in leases(flab)
    for n in NODES:
        assert absent(flab, n, str(sn), "172.23.100.7", mac)
    assert not netns.netns_exists(names.node_ns(flab.name, "kub-node-3"))
    with netlink.Netlink(names.underlay_ns(flab.name)) as nl:
        assert nl.index(names.underlay_veth("kub-node-3")) is None
    assert "kub-node-3" not in flab.cli("get", "nodes").stdout
    assert "kub-node-3" not in names.lab_copy(flab.name).read_text()


def test_bad_node_commands_exit_2_and_change_nothing(flab):
    def snapshot():
        return (netns.netns_list(names.ns_prefix(flab.name)), names.lab_copy(flab.name).read_text(),
                sorted(leases(flab)))

    before = snapshot()
    # (every rule is unit-tested in tests/unit/test_nodes.py; here, one per argument, for real)
    for args, field in [
        (("add", "kub-node-1", "--ip", "172.23.100.9"), "NAME"),
        (("add", "kub-node-9", "--ip", "172.23.100.5"), "--ip"),
        (("add", "kub-node-9", "--ip", "172.23.100.9", "--role", "master"), "--role"),
        (("delete", "kub-node-0"), "NAME"),
    ]:
        p = flab.cli("node", *args, check=False)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}:"), (args, err)
    assert snapshot() == before


# --------------------------------------------------------------------------- races
class _First(random.Random):
    """Always the first free subnet: both contenders go for the same one."""

    def randrange(self, *a, **kw):
        return 0


def test_twenty_simultaneous_acquisitions_never_share_a_subnet(flab):
    """Two agents starting at the same instant, 20 times, against the lab's real etcd:
    acquire() is the very function the flannel role runs; each contender has its own etcd
    connection, a barrier releases both at once, and both aim at the same subnet first, so
    every run is a real compare-and-swap race (a scratch prefix keeps the lab's leases out)."""
    config = fl.NetworkConfig(network=IPv4Network("10.1.0.0/16"), subnet_min="10.1.1.0", subnet_max="10.1.2.0")
    lost = []

    class Log:
        def info(self, msg, *a):
            lost.append(msg % a)

    stores = [flab.store(), flab.store()]
    try:
        for run in range(20):
            prefix = f"/netlab-test/{uuid.uuid4().hex[:8]}/coreos.com/network"
            barrier = threading.Barrier(2)
            got: dict[str, F.Held] = {}

            def contend(i):
                ip = f"172.23.100.{50 + i}"
                barrier.wait()
                got[ip] = F.acquire(stores[i], config, ip, fl.lease_value(ip, fl.vtep_mac(ip), 1), 60,
                                    prefix=prefix, rng=_First(), log=Log())

            ts = [threading.Thread(target=contend, args=(i,)) for i in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(10)
            assert len(got) == 2 and got["172.23.100.50"].subnet != got["172.23.100.51"].subnet, (run, got)
            held = F.read_leases(stores[0].list_raw(fl.subnets_prefix(prefix)))
            assert {sn: l.public_ip for sn, (l, _) in held.items()} == {h.subnet: ip for ip, h in got.items()}
            for h in got.values():
                stores[0].revoke_lease(h.lease_id)
            stores[0].delete_prefix(prefix)
    finally:
        for s in stores:
            s.close()
    print(f"\n20 runs: {len(lost)} lost compare-and-swap races, each resolved by choosing again")
    assert len(lost) >= 1  # the races were real


def test_racing_agents_leases_kept_alive_and_expiring(make_lab):
    """No reservations and room for exactly three subnets: the three agents start together
    and must end with three different leases, each matching its node's subnet.env. The
    leases (TTL 6 s) outlive their TTL while agents renew them; a stopped node's lease
    expires, every other node drops its entries, and `up` gives it its subnet back."""
    doc = lab_doc("x")
    flannel = dict(doc["flannel"], SubnetMin="10.1.1.0", SubnetMax="10.1.3.0", reservations={},
                   leaseTTL=f"{TTL}s")
    nodes = [{k: v for k, v in n.items() if k != "podRange"} for n in doc["nodes"]]
    lab = make_lab(flannel=flannel, nodes=nodes, nodeMonitorGracePeriod="3s")
    lab.up()
    started = time.monotonic()
    wait_for(lambda: len(leases(lab)) == 3, timeout=15)
    first = leases(lab)
    assert sorted(s for s, _, _ in first.values()) == ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]
    for node, ip in IPS.items():
        sn = IPv4Network(first[ip][0])
        env = names.node_flannel_dir(lab.name, node) / "subnet.env"
        wait_for(lambda: env.exists() and f"FLANNEL_SUBNET={sn.network_address + 1}/24" in env.read_text(),
                 timeout=5, what=f"{node}'s subnet.env")
        assert first[ip][2] != 0  # a TTL lease, not a reservation

    # keep-alive: past the TTL, the very same etcd leases still hold the subnets
    wait_for(lambda: time.monotonic() - started > TTL + 2, timeout=TTL + 5, interval=0.5)
    assert leases(lab) == first

    # a stopped node's lease expires: nobody renews it (flannel does not revoke it on exit)
    ip2 = IPS["kub-node-2"]
    sn2, _, old_lease = first[ip2]
    mac2 = vtep_mac_of(lab, "kub-node-2")
    t0 = time.monotonic()
    # the node goes down: its init stops its daemons (it would restart a lone killed agent)
    stop(proc.read_pid(names.pid_file(lab.name, "node-kub-node-2")))
    wait_for(lambda: ip2 not in leases(lab), timeout=max(1.0, TTL + 2 - (time.monotonic() - t0)), interval=0.1,
             what="the lease to expire")
    for n in ("kub-node-0", "kub-node-1"):
        wait_for(lambda: absent(lab, n, sn2, ip2, mac2), timeout=2, what=f"{n} to drop {sn2}")
    wait_for(lambda: "NotReady" in lab.cli("get", "nodes", "kub-node-2").stdout, timeout=10, interval=0.5)
    # back: no lease of its own any more, so flannel's next choice is its subnet.env's subnet
    lab.up()
    wait_for(lambda: ip2 in leases(lab), timeout=10)
    new_sn, _, new_lease = leases(lab)[ip2]
    assert new_sn == sn2 and new_lease != old_lease
    for n in ("kub-node-0", "kub-node-1"):
        wait_for(lambda: programmed(lab, n, sn2, ip2, mac2), timeout=5)
