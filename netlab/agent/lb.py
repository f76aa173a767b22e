"""LoadBalancer speaker (worker): announces LoadBalancer addresses on the node network, L2.

Owns this node's part in electing, per LoadBalancer address, the one node that answers ARP
for it (MetalLB's layer-2 mode, with etcd as the memberlist): the node that creates
/registry/netlab/lb/<ip> (compare-and-swap on create) under its own short etcd lease owns
the address, answers ARP for it from ens3 (netlab.kernel.arp) and sends gratuitous ARP on
take-over. A node that stops (`netlab node stop`, a crash) stops renewing its lease; etcd
deletes its keys after LEASE_TTL seconds, the others see the delete on their watch and the
first create wins. A node is a candidate for an address when its agent runs and, for
externalTrafficPolicy: Local, when it holds a ready endpoint of the service (as MetalLB).

Services, endpoints and leader keys come from the Reconciler's informer caches (one list,
then a watch per prefix); reconcile works from them only.
"""

from __future__ import annotations

import threading
from typing import Any

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api.services import lb_ip

LEASE_TTL = 2  # seconds: the failover time is about this plus one watch event
RENEW_SECONDS = 0.5
PREFIXES = (store.SERVICES, store.ENDPOINTS, store.LB_LEADERS)


def wanted(cache: dict[str, Any], node: str) -> dict[str, str]:
    """LB address -> "ns/name" of the services this node may announce (pure)."""
    out = {}
    for k, svc in cache.items():
        if not k.startswith(store.SERVICES) or not isinstance(svc, dict):
            continue
        spec = svc.get("spec") or {}
        ip = lb_ip(svc) if spec.get("type") == "LoadBalancer" else None
        if not ip:
            continue
        path = k.removeprefix(store.SERVICES)
        if spec.get("externalTrafficPolicy") == "Local":
            ep = cache.get(store.ENDPOINTS + path) or {}
            if not any(a.get("nodeName") == node for s in ep.get("subsets") or []
                       for a in s.get("addresses") or []):
                continue
        out[ip] = path
    return out


class LoadBalancerRole(Reconciler):
    name = "lb"
    informed = PREFIXES  # the base's informer caches: reconcile never lists etcd
    resync_seconds = 5.0

    def __init__(self, agent, ifname: str = "ens3"):
        super().__init__(agent)
        self.node = agent.node.name
        self.ifname = ifname
        self._lease = None
        self.responder = None
        self.owned: set[str] = set()

    def setup(self) -> None:
        from netlab.kernel.arp import Responder

        self.responder = Responder(self.ifname, self.log)
        threading.Thread(target=self._renew, name="lb-lease", daemon=True).start()

    # -- lease ------------------------------------------------------------------------
    def _renew(self) -> None:
        while not self.agent.stopping.wait(RENEW_SECONDS):
            lease = self._lease
            if lease is None:
                continue
            try:
                if self.agent.store.refresh_lease(lease.id) <= 0:
                    self.log.warning("lease %x expired: giving up every address", lease.id)
                    self._lease = None
                    self.kick()
            except Exception as e:  # noqa: BLE001 - etcd away: the lease will run out
                self.log.warning("lease renewal: %s", e)

    def _my_lease(self):
        if self._lease is None:
            self._lease = self.agent.store.lease(LEASE_TTL)
        return self._lease

    # -- reconcile --------------------------------------------------------------------
    def reconcile(self) -> None:
        st = self.agent.store
        cache = {i.key: i.value for p in PREFIXES for i in self.cache(p).items()}
        want = wanted(cache, self.node)
        leaders = {k.removeprefix(store.LB_LEADERS): v for k, v in cache.items() if k.startswith(store.LB_LEADERS)}
        lease = self._my_lease()
        mine = set()
        for ip, path in sorted(want.items()):
            holder = (leaders.get(ip) or {}).get("node") if isinstance(leaders.get(ip), dict) else None
            held = leaders.get(ip) if isinstance(leaders.get(ip), dict) else {}
            # Ours when we hold the key under our own lease, also when a concurrent reconcile
            # saw its create fail before the watch delivered it (then `owned` lost it, and the
            # address would never be answered for again).
            if holder == self.node and (ip in self.owned or held.get("lease") == f"{lease.id:x}"):
                mine.add(ip)
            elif holder is None:
                if st.create(store.LB_LEADERS + ip, {"node": self.node, "service": path,
                                                     "lease": f"{lease.id:x}"}, lease=lease.id):
                    self.log.info("took over %s (%s)", ip, path)
                    mine.add(ip)
        for ip, v in leaders.items():
            # Held by us but no longer ours to hold (service gone, Local without endpoints).
            if isinstance(v, dict) and v.get("node") == self.node and ip not in want:
                item = st.get(store.LB_LEADERS + ip)
                if item is not None and item.value.get("node") == self.node:
                    st.delete_if(item.key, item.mod_revision)
                    self.log.info("released %s", ip)
        lost = self.owned - mine
        if lost:
            self.log.info("no longer announcing %s", ", ".join(sorted(lost)))
        self.owned = mine
        self.responder.announce(mine)

    def shutdown(self) -> None:
        if self._lease is not None:
            try:
                self.agent.store.revoke_lease(self._lease.id)  # hand over at once
            except Exception:  # noqa: BLE001
                pass
        if self.responder is not None:
            self.responder.close()
