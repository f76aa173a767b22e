"""The scheduler (master): binds each pod without spec.nodeName to a Ready worker.

Never the master. Spreads pods: the Ready worker with the fewest live pods wins, ties go
to the node name's order (so the default lab's two replicas land on kub-node-1 and
kub-node-2, as in the seed). Binding is a compare-and-swap on the pod, so a pod deleted or
changed meanwhile is never resurrected.
"""

from __future__ import annotations

import time
from collections import Counter

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api.meta import node_ready

ROLE_WORKER = "node-role.kubernetes.io/worker"


def choose(ready: list[str], load: Counter) -> str:
    """The Ready worker with the fewest pods; ties by name."""
    return min(ready, key=lambda n: (load[n], n))


class SchedulerController(Reconciler):
    name = "scheduler"
    prefixes = (store.PODS, store.NODES)
    resync_seconds = 10.0

    def reconcile(self) -> None:
        st = self.agent.store
        items = st.list(store.PODS)
        pending = [it for it in items if isinstance(it.value, dict)
                   and not (it.value.get("spec") or {}).get("nodeName")
                   and (it.value.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        if not pending:
            self.resync_seconds = 10.0
            return
        ready = self.ready_workers()
        if not ready:
            self.log.info("%d pods pending: no Ready worker", len(pending))
            self.resync_seconds = 0.5  # node heartbeats are not watched: look again soon
            return
        load = Counter(it.value["spec"]["nodeName"] for it in items if isinstance(it.value, dict)
                       and (it.value.get("spec") or {}).get("nodeName")
                       and (it.value.get("status") or {}).get("phase") not in ("Failed", "Succeeded"))
        retry = False
        pending.sort(key=lambda it: (it.value["metadata"].get("creationTimestamp", ""), it.key))
        for it in pending:
            node = choose(ready, load)
            pod = dict(it.value)
            pod["spec"] = {**pod["spec"], "nodeName": node}
            status = dict(pod.get("status") or {})
            status["conditions"] = [c for c in status.get("conditions") or []
                                    if c.get("type") != "PodScheduled"] + [
                {"type": "PodScheduled", "status": "True"}]
            pod["status"] = status
            if st.update(it.key, pod, it.mod_revision):
                load[node] += 1
                self.log.info("bound pod %s to %s", it.key.removeprefix(store.PODS), node)
            else:
                retry = True  # changed or deleted meanwhile: the watch brings the new version
        self.resync_seconds = 0.5 if retry else 10.0

    def ready_workers(self) -> list[str]:
        st = self.agent.store
        grace = float(self.agent.lab.node_monitor_grace_period)
        leases = {it.key.rsplit("/", 1)[1]: it.value for it in st.list(store.NODE_LEASES)}
        now = time.time()
        out = []
        for it in st.list(store.NODES):
            node = it.value
            if not isinstance(node, dict):
                continue
            meta = node.get("metadata") or {}
            if ROLE_WORKER not in (meta.get("labels") or {}) or (node.get("spec") or {}).get("unschedulable"):
                continue
            if node_ready(leases.get(meta.get("name")), now, grace):
                out.append(meta["name"])
        return sorted(out)
