"""Node operations on a running lab: add, delete, stop and start a node.

`add` validates the new node against the running lab (exit 2 and nothing changed on bad
input), then builds it with `up`'s own steps (netlab.lab.lifecycle.Up); `delete` stops its
agent, revokes its flannel lease and removes its namespace; both wait until every other
node's flannel programmed the change. `stop` plays a host crash: the node's agent and every
process of its pods are killed with SIGKILL by pid (the agent's pid file, the processes
carrying the node's mark NETLAB_NODE=<node>, those inside its pods' namespaces); its
namespace, links and iptables stay, as a powered-off host's would. After the lab's
nodeMonitorGracePeriod it is NotReady and the node lifecycle controller evicts its pods.
`start` starts the agent again (as `up` would) and waits for its first heartbeat.
"""

from __future__ import annotations

import ipaddress
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

from netlab import labfile, names, store
from netlab.api import nodes as api_nodes
from netlab.errors import NetlabError, UsageError
from netlab.kernel import netlink, netns, proc
from netlab.lab import lifecycle
from netlab.lab.lock import lab_lock
from netlab.lab.running import agent_pid, init_pid, load_running_lab, our_pid, write_lab_copy
from netlab.labfile import Lab
from netlab.plan import flannel_leases as fl
from netlab.plan import podrecord
from netlab.store import Store

Report = Callable[[str, str], None]


def _noop(step: str, outcome: str) -> None:
    pass


# --------------------------------------------------------------------------- add
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
    validate_add(load_running_lab(lab_name), name, ip, role)  # before the lock: fast
    with lab_lock(lab_name):
        new = validate_add(load_running_lab(lab_name), name, ip, role)
        node = new.node(name)
        write_lab_copy(new)
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
    deadline = time.monotonic() + timeout
    st = Store.for_lab(lab.name)
    try:
        pid = agent_pid(lab.name, node.name)
        if api_nodes.wait_reported(st, {node.name: pid}, timeout):
            raise NetlabError(f"timed out waiting for the agent of {node.name} to report "
                              f"(see {names.log_file(lab.name, 'agent-' + node.name)})")
        report(node.name, f"agent reporting (pid {pid})")
        if node.name not in {n.name for n in lab.flannel_nodes()}:
            return None, None
        while (subnet := api_nodes.flannel_subnets(st).get(node.ip)) is None:
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
    ns = names.node_ns(lab, node)
    if not netns.netns_exists(ns):
        return False
    with netlink.Netlink(ns) as nl:
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
    validate_delete(load_running_lab(lab_name), name)
    with lab_lock(lab_name):
        lab = load_running_lab(lab_name)
        node = validate_delete(lab, name)
        ns = names.node_ns(lab_name, name)
        # 1. The node's init and with it the agent first, or it would take its lease again
        # (the init stops its daemons; the kernel kills the rest of its PID namespace).
        init = our_pid(lab_name, init_pid(lab_name, name))
        pid = our_pid(lab_name, agent_pid(lab_name, name))
        if init or pid:
            proc.kill_pids([p for p in (init, pid) if p])
            report(name, f"agent stopped (pid {pid})" if pid else f"node init stopped (pid {init})")
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
            proc.kill_pids(pod_pids(lab, name, st))
            bound = [i for i in st.list(store.PODS)
                     if isinstance(i.value, dict) and (i.value.get("spec") or {}).get("nodeName") == name]
            for it in bound:
                md = it.value.get("metadata") or {}
                netns.netns_delete(names.pod_ns(lab_name, md.get("namespace", "default"), md.get("name", "")))
                st.delete(it.key)
            for pdir, _ in podrecord.records(lab_name, name):
                shutil.rmtree(pdir, ignore_errors=True)
            if bound:
                report(name, f"{len(bound)} pods deleted")
            st.delete(store.NODES + name)
            st.delete(store.NODE_LEASES + name)
        finally:
            st.close()
        # 4. The namespace (and with it ens3, flannel.1, docker0) and the underlay end.
        proc.kill_pids(proc.pids_in_netns(ns))
        netns.netns_delete(ns)
        with netlink.Netlink(names.underlay_ns(lab_name)) as nl:
            nl.delete_link(names.underlay_veth(name))
        report(name, f"namespace {ns} removed")
        write_lab_copy(_without(lab, name))
        names.pid_file(lab_name, f"agent-{name}").unlink(missing_ok=True)
        names.pid_file(lab_name, f"node-{name}").unlink(missing_ok=True)
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


# --------------------------------------------------------------------------- stop / start
@dataclass
class StopResult:
    node: str
    agent_pid: int | None
    pod_pids: list[int] = field(default_factory=list)
    grace: int = 0


def _node(lab: Lab, name: str):
    node = lab.node(name)  # UsageError naming the lab's nodes
    if node.role == "master" or node.name == lab.etcd_node.name:
        raise UsageError(f"node stop: {name} is the master (etcd and the controllers run there); "
                         "only workers can be stopped")
    return node


def pod_pids(lab: Lab, node: str, st: Store | None) -> list[int]:
    """Processes of the node's pods: those its kubelet recorded, those marked with the node,
    and those inside the namespaces of the pods bound to it."""
    me = {names.ENV_MARK: lab.name, names.ENV_NODE: node}
    pids = {pid for pid in proc.lab_pids(lab.name)
            if all(proc.pid_environ(pid).get(k) == v for k, v in me.items())}
    for _, rec in podrecord.records(lab.name, node):
        for p in [rec.get("pause"), *(rec.get("containers") or {}).values()]:
            if proc.proc_alive(p):
                pids.add(p["pid"])
    if st is not None:
        for it in st.list(store.PODS):
            pod = it.value
            if (pod.get("spec") or {}).get("nodeName") == node:
                ns = names.pod_ns(lab.name, pod["metadata"]["namespace"], pod["metadata"]["name"])
                pids.update(proc.pids_in_netns(ns))
    return sorted(pids)


def stop(lab_name: str, node_name: str) -> StopResult:
    lab = load_running_lab(lab_name)
    node = _node(lab, node_name)
    res = StopResult(node.name, None, grace=lab.node_monitor_grace_period)
    with lab_lock(lab.name):
        # Only our own agent: the pid file could name a recycled pid.
        # The node's init with SIGKILL: the kernel then kills everything in the node's PID
        # namespace (agent and pods) at once, as a power cut would.
        init = our_pid(lab.name, init_pid(lab.name, node.name))
        pid = our_pid(lab.name, agent_pid(lab.name, node.name))
        st = Store.for_lab(lab.name, timeout=3.0)
        try:
            pids = pod_pids(lab, node.name, st if st.healthy() else None)
        finally:
            st.close()
        if init:
            proc.kill_pids([init], timeout=0, sig=9)
        if pid:
            proc.kill_pids([pid], timeout=0, sig=9)
            res.agent_pid = pid
        res.pod_pids = proc.kill_pids([p for p in pids if p not in (pid, init)], timeout=0, sig=9)
    return res


def start(lab_name: str, node_name: str, timeout: float = 30.0) -> int:
    """Start the node's agent again; returns its pid once it has renewed its lease."""
    lab = load_running_lab(lab_name)
    node = lab.node(node_name)
    with lab_lock(lab.name):
        lifecycle.Up(lab).agent(node)
    pid = agent_pid(lab.name, node.name)
    st = Store.for_lab(lab.name)
    try:
        if not api_nodes.wait_reported(st, {node.name: pid}, timeout):
            return pid
    finally:
        st.close()
    raise NetlabError(f"the agent of {node.name} (pid {pid}) did not report within {timeout:.0f}s; "
                      f"see {names.log_file(lab.name, 'agent-' + node.name)}")
