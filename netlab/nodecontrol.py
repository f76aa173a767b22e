"""Nodes going away and coming back: `netlab node stop|start NAME`, and node readiness.

`stop` plays a host crash: the node's agent and every process of its pods are killed with
SIGKILL (no clean shutdown, nothing written to etcd), by pid: the agent's pid file, the
processes that carry the node's mark (NETLAB_NODE=<node>, inherited from its agent), and
the processes inside the namespaces of the pods bound to it. The node's namespace, links
and iptables stay, as a powered-off host's configuration would. The node then stops
renewing its lease; after the lab's nodeMonitorGracePeriod it is NotReady and the node
lifecycle controller evicts its pods. `start` starts the agent again (as `netlab up`
would) and waits for its first heartbeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from netlab import kernel, lifecycle, names, store
from netlab.errors import NetlabError, UsageError
from netlab.labfile import Lab
from netlab.store import Store


def lease_ready(lease: dict | None, now: float, grace: float) -> bool:
    """Ready while the lease was renewed within the grace period (netlab.nodes decides)."""
    from netlab.nodes import lease_ready as ready

    return ready(lease, now, grace)


def evict(st: Store, item: store.Item) -> bool:
    """Delete a pod of a NotReady node at once (no kubelet will confirm), unless it changed."""
    return st.delete_if(item.key, item.mod_revision)


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
    from netlab import pods

    me = {names.ENV_MARK: lab.name, names.ENV_NODE: node}
    pids = {pid for pid in kernel.lab_pids(lab.name)
            if all(kernel.pid_environ(pid).get(k) == v for k, v in me.items())}
    for _, rec in pods.records(lab.name, node):
        for proc in [rec.get("pause"), *(rec.get("containers") or {}).values()]:
            if pods.proc_alive(proc):
                pids.add(proc["pid"])
    if st is not None:
        for it in st.list(store.PODS):
            pod = it.value
            if (pod.get("spec") or {}).get("nodeName") == node:
                ns = names.pod_ns(lab.name, pod["metadata"]["namespace"], pod["metadata"]["name"])
                pids.update(kernel.pids_in_netns(ns))
    return sorted(pids)


def stop(lab_name: str, node_name: str) -> StopResult:
    lab = lifecycle.load_running_lab(lab_name)
    node = _node(lab, node_name)
    res = StopResult(node.name, None, grace=lab.node_monitor_grace_period)
    with lifecycle.lab_lock(lab.name):
        pid = lifecycle.agent_pid(lab.name, node.name)
        # Only our own agent: the pid file could name a recycled pid.
        if pid and kernel.pid_environ(pid).get(names.ENV_MARK) == lab.name and kernel.pid_alive(pid):
            kernel.kill_pids([pid], timeout=0, sig=9)
            res.agent_pid = pid
        st = Store.for_lab(lab.name, timeout=3.0)
        try:
            pids = pod_pids(lab, node.name, st if st.healthy() else None)
        finally:
            st.close()
        res.pod_pids = kernel.kill_pids([p for p in pids if p != pid], timeout=0, sig=9)
    return res


def start(lab_name: str, node_name: str, timeout: float = 30.0) -> int:
    """Start the node's agent again; returns its pid once it has renewed its lease."""
    lab = lifecycle.load_running_lab(lab_name)
    node = lab.node(node_name)
    with lifecycle.lab_lock(lab.name):
        lifecycle.Up(lab).agent(node)
    pid = lifecycle.agent_pid(lab.name, node.name)
    st = Store.for_lab(lab.name)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = st.get(store.NODE_LEASES + node.name)
            if item and (item.value.get("spec") or {}).get("agentPid") == pid:
                return pid
            time.sleep(0.1)
    finally:
        st.close()
    raise NetlabError(f"the agent of {node.name} (pid {pid}) did not report within {timeout:.0f}s; "
                      f"see {names.log_file(lab.name, 'agent-' + node.name)}")


def node_state(lab_name: str, node_name: str) -> str:
    """Ready or NotReady, from the node's lease and the lab's grace period."""
    lab = lifecycle.load_running_lab(lab_name)
    lab.node(node_name)
    st = Store.for_lab(lab.name)
    try:
        item = st.get(store.NODE_LEASES + node_name)
    finally:
        st.close()
    return "Ready" if lease_ready(item.value if item else None, time.time(),
                                 lab.node_monitor_grace_period) else "NotReady"
