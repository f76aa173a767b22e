"""Nodes: the Node objects `netlab get nodes` shows, and adding / deleting nodes at runtime.

A node's status comes from etcd as kubectl would see it: Ready while its agent renews the
node Lease, its pod subnet from flannel's lease for its PublicIP. `add` validates the new
node against the running lab (exit 2 and nothing changed on bad input), then builds it
with the same steps as `netlab up`; `delete` stops its agent, revokes its flannel lease and
removes its namespace, and both wait until every other node's flannel programmed the change.
"""

from __future__ import annotations

import ipaddress
import shutil
import time
from typing import TYPE_CHECKING, Callable

from netlab import flannel_leases as fl
from netlab import labfile, names
from netlab.errors import LabNotUp, NetlabError, NotFound, UsageError
from netlab.labfile import Lab

if TYPE_CHECKING:
    from netlab.store import Store

# netlab.kernel (pyroute2) and netlab.store (etcd3, grpc) take a second to import: they are
# imported where needed, so that bad input is refused at once.

READY_SECONDS = 10.0  # a node whose Lease is older than this is NotReady
Report = Callable[[str, str], None]


def _noop(step: str, outcome: str) -> None:
    pass


# --------------------------------------------------------------------------- reading
def lease_ready(lease: dict | None, now: float | None = None, grace: float = READY_SECONDS) -> bool:
    # grace: the lab's nodeMonitorGracePeriod, which the node lifecycle controller uses too.
    if not lease:
        return False
    renew = (lease.get("spec") or {}).get("renewTime")
    return renew is not None and (now or time.time()) - float(renew) < grace


def flannel_subnets(st: "Store") -> dict[str, str]:
    """PublicIP -> pod subnet, from flannel's leases (the authority on who has which)."""
    from netlab import store

    out = {}
    for it in st.list_raw(store.FLANNEL_SUBNETS):
        try:
            lease = fl.parse_lease(it.key, it.value)
        except ValueError:
            continue
        if lease is not None:
            out.setdefault(lease.public_ip, str(lease.subnet))
    return out


def node_view(obj: dict, lease: dict | None, subnet: str | None, now: float,
              grace: float = READY_SECONDS) -> dict:
    """The stored Node with what kubectl would show computed in: Ready condition, podCIDR."""
    node = {k: v for k, v in obj.items()}
    spec = dict(node.get("spec") or {})
    if subnet:
        spec["podCIDR"] = subnet
        spec["podCIDRs"] = [subnet]
    node["spec"] = spec
    status = dict(node.get("status") or {})
    ready = lease_ready(lease, now, grace)
    renew = (lease or {}).get("spec", {}).get("renewTime")
    hb = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(renew))) if renew else None
    status["conditions"] = [{
        "type": "Ready",
        "status": "True" if ready else "Unknown",
        "reason": "KubeletReady" if ready else "NodeStatusUnknown",
        "message": "netlab agent is posting ready status" if ready else
                   "netlab agent stopped posting node status",
        "lastHeartbeatTime": hb,
    }]
    node["status"] = status
    return node


def list_nodes(lab_name: str, name: str | None = None) -> list[dict]:
    from netlab import store
    from netlab.store import Store

    st = Store.for_lab(lab_name, timeout=3.0)
    try:
        objs = {i.key[len(store.NODES):]: i.value for i in st.list(store.NODES)}
        leases = {i.key[len(store.NODE_LEASES):]: i.value for i in st.list(store.NODE_LEASES)}
        subnets = flannel_subnets(st)
    finally:
        st.close()
    if name is not None:
        if name not in objs:
            raise NotFound(f'nodes "{name}" not found')
        objs = {name: objs[name]}
    now = time.time()
    grace = running_lab(lab_name).node_monitor_grace_period
    out = []
    for n in sorted(objs):
        obj = objs[n]
        subnet = subnets.get(internal_ip(obj) or "") or (obj.get("spec") or {}).get("podCIDR")
        out.append(node_view(obj, leases.get(n), subnet, now, grace))
    return out


def internal_ip(node: dict) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return a.get("address")
    return None


def is_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def roles(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    rs = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(rs) or "<none>"


def row(node: dict, wide: bool) -> list:
    """kubectl's columns: NAME STATUS ROLES AGE VERSION (+ INTERNAL-IP POD-CIDR with -o wide)."""
    from netlab import output

    md = node.get("metadata") or {}
    r = [md.get("name"), "Ready" if is_ready(node) else "NotReady", roles(node),
         output.age(md.get("creationTimestamp")),
         ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")]
    if wide:
        r += [internal_ip(node), (node.get("spec") or {}).get("podCIDR")]
    return r


# --------------------------------------------------------------------------- add
def running_lab(lab_name: str) -> Lab:
    """The running lab's copy (what lifecycle.load_running_lab reads, without its imports)."""
    p = names.lab_copy(lab_name)
    if not p.exists():
        raise LabNotUp(f"lab '{lab_name}' is not up (no {p}); start it with `netlab up`")
    return labfile.parse_lab(p.read_text(), str(p))


def validate_add(lab: Lab, name: str, ip: str, role: str) -> Lab:
    """The running lab with the new node, or UsageError naming the bad argument."""
    if role != "worker":
        raise UsageError(f"--role: '{role}' is not allowed; a lab has exactly one master "
                         f"({lab.master.name}), nodes added at runtime are workers")
    if not names.NODE_NAME_RE.match(name) or name.startswith("pod-") or name == "net":
        raise UsageError(f"NAME: '{name}' is not a valid node name (lower-case letters, digits, "
                         "'-', at most 32; not 'net' or 'pod-...')")
    if any(n.name == name for n in lab.nodes):
        raise UsageError(f"NAME: node '{name}' already exists in lab '{lab.name}'")
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise UsageError(f"--ip: '{ip}' is not an IPv4 address") from None
    net = ipaddress.IPv4Network(lab.node_network.cidr)
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise UsageError(f"--ip: {ip} is not a host address of the node network {net}")
    if str(addr) == lab.node_network.gateway:
        raise UsageError(f"--ip: {ip} is the node network's gateway (the router / outside host)")
    for n in lab.nodes:
        if n.ip == str(addr):
            raise UsageError(f"--ip: {ip} is already used by node {n.name}")
    data = lab.model_dump(by_alias=True, exclude_none=True)
    data["nodes"].append({"name": name, "ip": str(addr), "role": role})
    if lab.flannel.nodes is not None:  # a worker needs the overlay to reach other pods
        data["flannel"]["nodes"] = [*lab.flannel.nodes, name]
    return labfile.parse_lab(labfile.yaml.safe_dump(data), "node add")


def add(lab_name: str, name: str, ip: str, role: str = "worker", report: Report = _noop,
        timeout: float = 20.0) -> dict:
    """Add a node to a running lab; returns {name, ip, subnet, programmedSeconds}."""
    validate_add(running_lab(lab_name), name, ip, role)  # before the lock and the imports: fast
    from netlab import lifecycle

    with lifecycle.lab_lock(lab_name):
        new = validate_add(lifecycle.load_running_lab(lab_name), name, ip, role)
        node = new.node(name)
        lifecycle.write_lab_copy(new)
        up = lifecycle.Up(new, report)
        up.result.was_up = False  # report as creation, not repair
        up.dirs()
        up.node(node)
        up.agent(node)
        subnet, programmed = _wait_added(new, node, report, timeout)
        return {"name": name, "ip": node.ip, "subnet": subnet, "programmedSeconds": programmed}


def _wait_added(lab: Lab, node: labfile.Node, report: Report,
                timeout: float) -> tuple[str | None, float | None]:
    """Wait for the agent, its lease, and the routes on the other nodes; returns the subnet
    and the seconds from seeing the lease until every other node routed it."""
    from netlab import lifecycle, store
    from netlab.store import Store

    deadline = time.monotonic() + timeout
    st = Store.for_lab(lab.name)
    try:
        pid = lifecycle.agent_pid(lab.name, node.name)
        while True:
            item = st.get(store.NODE_LEASES + node.name)
            if item and item.value["spec"].get("agentPid") == pid:
                break
            _tick(deadline, f"the agent of {node.name} to report (see {names.log_file(lab.name, 'agent-' + node.name)})")
        report(node.name, f"agent reporting (pid {pid})")
        if node.name not in {n.name for n in lab.flannel_nodes()}:
            return None, None
        while (subnet := flannel_subnets(st).get(node.ip)) is None:
            _tick(deadline, f"a flannel lease for {node.name}")
        t0 = time.monotonic()
        report(node.name, f"flannel lease {subnet}")
    finally:
        st.close()
    others = [n for n in lab.flannel_nodes() if n.name != node.name]
    while (missing := [n.name for n in others if not _has_route(lab.name, n.name, subnet)]):
        _tick(deadline, f"{', '.join(missing)} to route {subnet}")
    report("flannel", f"{len(others)} other nodes route {subnet} over flannel.1")
    return subnet, round(time.monotonic() - t0, 3)


def _tick(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise NetlabError(f"timed out waiting for {what}")
    time.sleep(0.05)


def _has_route(lab: str, node: str, subnet: str) -> bool:
    from netlab import kernel

    ns = names.node_ns(lab, node)
    if not kernel.netns_exists(ns):
        return False
    with kernel.Netlink(ns) as nl:
        return any(r["dst"] == subnet for r in nl.routes())


# --------------------------------------------------------------------------- delete
def validate_delete(lab: Lab, name: str) -> labfile.Node:
    if not any(n.name == name for n in lab.nodes):
        raise UsageError(f"NAME: node '{name}' is not part of lab '{lab.name}' "
                         f"(nodes: {', '.join(n.name for n in lab.nodes)})")
    node = lab.node(name)
    if node.role == "master":
        raise UsageError(f"NAME: '{name}' is the master (controllers); it cannot be deleted, "
                         f"use `netlab down` to remove the lab")
    if name == lab.etcd_node.name:
        raise UsageError(f"NAME: '{name}' runs the lab's etcd; it cannot be deleted")
    return node


def _without(lab: Lab, name: str) -> Lab:
    data = lab.model_dump(by_alias=True, exclude_none=True)
    data["nodes"] = [n for n in data["nodes"] if n["name"] != name]
    data["flannel"]["reservations"] = {k: v for k, v in lab.flannel.reservations.items() if k != name}
    if lab.flannel.nodes is not None:
        data["flannel"]["nodes"] = [n for n in lab.flannel.nodes if n != name]
    return labfile.parse_lab(labfile.yaml.safe_dump(data), "node delete")


def delete(lab_name: str, name: str, report: Report = _noop, timeout: float = 20.0) -> dict:
    validate_delete(running_lab(lab_name), name)
    from netlab import kernel, lifecycle, store
    from netlab.store import Store

    with lifecycle.lab_lock(lab_name):
        lab = lifecycle.load_running_lab(lab_name)
        node = validate_delete(lab, name)
        ns = names.node_ns(lab_name, name)
        # 1. The agent first, or it would take its lease again.
        pid = lifecycle.agent_pid(lab_name, name)
        if pid and kernel.pid_environ(pid).get(names.ENV_MARK) == lab_name:
            kernel.kill_pids([pid])
            report(name, f"agent stopped (pid {pid})")
        st = Store.for_lab(lab_name)
        try:
            # 2. Revoke its flannel lease(s): etcd deletes the key, every node's watch fires.
            gone = []
            for it in st.list_raw(store.FLANNEL_SUBNETS):
                try:
                    lease = fl.parse_lease(it.key, it.value)
                except ValueError:
                    continue
                if lease is not None and lease.public_ip == node.ip:
                    if it.lease_id:
                        st.revoke_lease(it.lease_id)
                    st.delete(it.key)
                    gone.append(str(lease.subnet))
            if gone:
                report(name, f"flannel lease {', '.join(gone)} revoked")
            # 3. Its pods: no kubelet is left to run them. Their processes (recorded by the
            # kubelet, marked with the node, or inside their namespaces), pins and objects go;
            # their deployments recreate them on the other workers.
            from netlab import nodecontrol, pods

            kernel.kill_pids(nodecontrol.pod_pids(lab, name, st))
            bound = [i for i in st.list(store.PODS)
                     if isinstance(i.value, dict) and (i.value.get("spec") or {}).get("nodeName") == name]
            for it in bound:
                md = it.value.get("metadata") or {}
                kernel.netns_delete(names.pod_ns(lab_name, md.get("namespace", "default"), md.get("name", "")))
                st.delete(it.key)
            for pdir, _ in pods.records(lab_name, name):
                shutil.rmtree(pdir, ignore_errors=True)
            if bound:
                report(name, f"{len(bound)} pods deleted")
            st.delete(store.NODES + name)
            st.delete(store.NODE_LEASES + name)
        finally:
            st.close()
        # 4. The namespace (and with it ens3, flannel.1, docker0) and the underlay end.
        kernel.kill_pids(kernel.pids_in_netns(ns))
        kernel.netns_delete(ns)
        with kernel.Netlink(names.underlay_ns(lab_name)) as nl:
            nl.delete_link(names.underlay_veth(name))
        report(name, f"namespace {ns} removed")
        lifecycle.write_lab_copy(_without(lab, name))
        names.pid_file(lab_name, f"agent-{name}").unlink(missing_ok=True)
        shutil.rmtree(names.node_dir(lab_name, name), ignore_errors=True)
        # 5. Every other flannel node drops the routes, neighbours and FDB entries.
        t0 = time.monotonic()
        deadline = t0 + timeout
        others = [n.name for n in lab.flannel_nodes() if n.name != name]
        for subnet in gone:
            while (left := [n for n in others if _has_route(lab_name, n, subnet)]):
                _tick(deadline, f"{', '.join(left)} to drop the route to {subnet}")
        if gone:
            report("flannel", f"{len(others)} other nodes dropped {', '.join(gone)}")
        return {"name": name, "ip": node.ip, "subnets": gone,
                "unprogrammedSeconds": round(time.monotonic() - t0, 3)}

