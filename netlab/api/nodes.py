"""Nodes (v1): the Node objects as kubectl sees them, and waiting for agents to report.

A node's status is computed from etcd: Ready while its agent renews the node Lease (the
lab's nodeMonitorGracePeriod, netlab.api.meta.node_ready), its pod subnet from flannel's
lease for its PublicIP. Also owns eviction (a pod of a NotReady node deleted at once) and
the one wait for agents' heartbeats (the lease names the agent's pid).
"""

from __future__ import annotations

import time

from netlab import store
from netlab.api.meta import node_ready
from netlab.errors import NotFound
from netlab.plan import flannel_leases as fl
from netlab.store import Store


def flannel_subnets(st: Store) -> dict[str, str]:
    """PublicIP -> pod subnet, from flannel's leases (the authority on who has which)."""
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
              grace: float = 10.0) -> dict:
    """The stored Node with what kubectl would show computed in: Ready condition, podCIDR."""
    node = {k: v for k, v in obj.items()}
    spec = dict(node.get("spec") or {})
    if subnet:
        spec["podCIDR"] = subnet
        spec["podCIDRs"] = [subnet]
    node["spec"] = spec
    status = dict(node.get("status") or {})
    ready = node_ready(lease, now, grace)
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


def list_nodes(st: Store, grace: float, name: str | None = None) -> list[dict]:
    """The nodes (or the one named) as `get nodes` shows them; NotFound for an unknown name."""
    objs = {i.key[len(store.NODES):]: i.value for i in st.list(store.NODES)}
    leases = {i.key[len(store.NODE_LEASES):]: i.value for i in st.list(store.NODE_LEASES)}
    subnets = flannel_subnets(st)
    if name is not None:
        if name not in objs:
            raise NotFound(f'nodes "{name}" not found')
        objs = {name: objs[name]}
    now = time.time()
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
    """The Ready condition of a node as node_view() computed it."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def roles(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    rs = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(rs) or "<none>"


def evict(st: Store, item: store.Item) -> bool:
    """Delete a pod of a NotReady node at once (no kubelet will confirm), unless it changed."""
    return st.delete_if(item.key, item.mod_revision)


def agent_reported(st: Store, node: str, pid: int | None) -> bool:
    """The node's Lease was last renewed by the agent with this pid."""
    item = st.get(store.NODE_LEASES + node)
    return bool(item and pid and (item.value.get("spec") or {}).get("agentPid") == pid)


def wait_reported(st: Store, agents: dict[str, int | None], timeout: float) -> set[str]:
    """Wait (on the leases' watch) until each node's Lease names its agent's pid; returns
    the nodes that did not report within `timeout` (empty: all did)."""
    pending = dict(agents)

    def done() -> bool:
        for node, pid in list(pending.items()):
            if agent_reported(st, node, pid):
                del pending[node]
        return not pending

    st.wait(store.NODE_LEASES, done, timeout)
    return set(pending)
