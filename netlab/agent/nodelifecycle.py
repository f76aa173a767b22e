"""The node lifecycle controller (master): notices nodes that stopped renewing their lease.

As kube-controller-manager's node lifecycle controller does, it trusts its own clock: a
node is NotReady once it has not seen that node's lease renewed for the lab's
nodeMonitorGracePeriod (so a master that just (re)started never evicts at once). Pods bound
to a NotReady node are then evicted: deleted from the store at once, as a forced delete
would, since no kubelet is there to confirm. Deployments replace them on the other workers,
the endpoints controller drops them, and the node's kubelet removes their leftovers when it
comes back. (`netlab get nodes` applies the same grace period to the lease's renewTime.)
"""

from __future__ import annotations

import time

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api.meta import fresh
from netlab.api.nodes import evict


class NodeLifecycleController(Reconciler):
    name = "nodelifecycle"
    # Readiness is a matter of time passing, so the role also runs every second; the leases
    # and pods it reads come from informer caches, not from a list per run.
    informed = (store.NODE_LEASES, store.PODS)
    resync_seconds = 1.0

    def setup(self) -> None:
        self.grace = float(self.agent.lab.node_monitor_grace_period)
        self.seen: dict[str, tuple[float, float]] = {}  # node -> (renewTime, when we saw it change)
        self.not_ready: set[str] = set()

    def reconcile(self) -> None:
        st = self.agent.store
        now = time.monotonic()
        for it in self.cache(store.NODE_LEASES).items():
            node = it.key.rsplit("/", 1)[1]
            renew = float((it.value.get("spec") or {}).get("renewTime") or 0)
            if node not in self.seen or self.seen[node][0] != renew:
                self.seen[node] = (renew, now)
        stale = {n for n, (_, seen_at) in self.seen.items() if not fresh(seen_at, now, self.grace)}
        for n in stale - self.not_ready:
            self.log.warning("node %s: no heartbeat for %.0fs: NotReady, evicting its pods", n, self.grace)
        for n in self.not_ready - stale:
            self.log.info("node %s: heartbeats again: Ready", n)
        self.not_ready = stale
        if not stale:
            return
        workers = set(self.seen) - {self.agent.node.name}  # (nodes added at runtime too)
        if len(workers) > 1 and workers <= stale:
            # Kubernetes' "full disruption": when every node looks dead at once the trouble
            # is more likely here (etcd, this master) than there; evicting would not help.
            self.log.warning("every worker is NotReady: not evicting (full disruption)")
            return
        for it in self.cache(store.PODS).items():
            pod = it.value
            if pod.get("spec", {}).get("nodeName") in stale:
                # Only if unchanged since we read it: never evict a pod rebound meanwhile.
                if evict(st, it):
                    self.log.info("evicted pod %s/%s from NotReady node %s", pod["metadata"]["namespace"],
                                  pod["metadata"]["name"], pod["spec"]["nodeName"])
