"""The scheduler (master): binds each pod without spec.nodeName to a Ready worker with room.

Never the master. A worker has room while it holds fewer live pods than its capacity
(status.capacity.pods: the lab's maxPods, default 110, bounded by its IPAM range). Spreads
pods: the Ready worker with room and the fewest live pods wins, ties go to the node name's
order (so the default lab's two replicas land on kub-node-1 and kub-node-2, as in the seed).
A pod no node can take stays Pending with condition PodScheduled False, reason
Unschedulable and kube-scheduler's message ("0/3 nodes are available: 1 node(s) had
untolerated taint {node-role.kubernetes.io/master: }, 2 Too many pods."), and a
FailedScheduling event that `kubectl describe pod` shows. Binding is a compare-and-swap on
the pod, so a pod deleted or changed meanwhile is never resurrected.
"""

from __future__ import annotations

import time
from collections import Counter

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api.meta import node_ready
from netlab.labfile import DEFAULT_MAX_PODS

ROLE_WORKER = "node-role.kubernetes.io/worker"
EVENTS = "/registry/events/"
EVENT_TTL = 3600  # kube-apiserver's --event-ttl


def choose(ready: list[str], load: Counter, capacity: dict[str, int] | None = None) -> str | None:
    """The Ready worker with room and the fewest pods; ties by name. None: no room anywhere."""
    room = [n for n in ready if capacity is None or load[n] < capacity.get(n, DEFAULT_MAX_PODS)]
    return min(room, key=lambda n: (load[n], n)) if room else None


def unschedulable_message(total: int, reasons: Counter) -> str:
    """kube-scheduler's FitError text: `0/3 nodes are available: 1 node(s) ..., 2 Too many pods.`"""
    parts = sorted(f"{count} {why}" for why, count in reasons.items())
    return f"0/{total} nodes are available: {', '.join(parts)}." if parts else \
        f"0/{total} nodes are available."


def _unschedulable_condition(message: str) -> dict:
    return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": None, "lastTransitionTime": store.now_rfc3339()}


class SchedulerController(Reconciler):
    name = "scheduler"
    prefixes = (store.PODS, store.NODES)
    resync_seconds = 10.0

    def __init__(self, agent):
        super().__init__(agent)
        self._event_lease = None
        self._event_lease_at = 0.0

    def reconcile(self) -> None:
        st = self.agent.store
        items = st.list(store.PODS)
        pending = [it for it in items if isinstance(it.value, dict)
                   and not (it.value.get("spec") or {}).get("nodeName")
                   and (it.value.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        if not pending:
            self.resync_seconds = 10.0
            return
        ready, capacity, reasons, total = self.nodes()
        load = Counter(it.value["spec"]["nodeName"] for it in items if isinstance(it.value, dict)
                       and (it.value.get("spec") or {}).get("nodeName")
                       and (it.value.get("status") or {}).get("phase") not in ("Failed", "Succeeded"))
        retry = False
        pending.sort(key=lambda it: (it.value["metadata"].get("creationTimestamp", ""), it.key))
        for it in pending:
            node = choose(ready, load, capacity)
            if node is None:
                full = Counter(reasons)
                full["Too many pods"] += len(ready)
                retry |= self.mark_unschedulable(it, unschedulable_message(total, full))
                continue
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
        # Node heartbeats are not watched: while pods wait for a node to become Ready, look
        # again soon; pods waiting for room are woken by the pod deletions that free it.
        self.resync_seconds = 0.5 if retry or not ready else 10.0

    def mark_unschedulable(self, it, message: str) -> bool:
        """Condition PodScheduled False (reason Unschedulable) and a FailedScheduling event,
        written once per new message. True when the pod changed meanwhile (retry)."""
        pod = it.value
        status = dict(pod.get("status") or {})
        conds = status.get("conditions") or []
        cur = next((c for c in conds if c.get("type") == "PodScheduled"), {})
        if cur.get("reason") == "Unschedulable" and cur.get("message") == message:
            return False
        status["conditions"] = [c for c in conds if c.get("type") != "PodScheduled"] + [
            _unschedulable_condition(message)]
        new = {**pod, "status": status}
        if not self.agent.store.update(it.key, new, it.mod_revision):
            return True
        self.log.info("pod %s unschedulable: %s", it.key.removeprefix(store.PODS), message)
        self.event(pod, message)
        return False

    def event(self, pod: dict, message: str) -> None:
        """A Warning FailedScheduling event (what `kubectl describe pod` prints under Events),
        kept EVENT_TTL seconds as kube-apiserver keeps events."""
        meta = pod["metadata"]
        now = store.now_rfc3339()
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta['name']}.failedscheduling", "namespace": meta["namespace"],
                           "creationTimestamp": now},
              "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"],
                                 "name": meta["name"], "uid": meta.get("uid")},
              "reason": "FailedScheduling", "message": message, "type": "Warning",
              "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler",
              "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        try:
            if self._event_lease is None or time.monotonic() - self._event_lease_at > EVENT_TTL / 2:
                self._event_lease = self.agent.store.lease(EVENT_TTL)
                self._event_lease_at = time.monotonic()
            self.agent.store.put(f"{EVENTS}{meta['namespace']}/{ev['metadata']['name']}", ev,
                                 lease=self._event_lease)
        except Exception as e:  # noqa: BLE001 - an event is a courtesy; the condition says it too
            self.log.warning("event for pod %s not written: %s", meta["name"], e)

    def nodes(self) -> tuple[list[str], dict[str, int], Counter, int]:
        """(Ready schedulable workers, their pod capacity, why the other nodes cannot take a
        pod as kube-scheduler words it, the number of nodes)."""
        st = self.agent.store
        grace = float(self.agent.lab.node_monitor_grace_period)
        leases = {it.key.rsplit("/", 1)[1]: it.value for it in st.list(store.NODE_LEASES)}
        now = time.time()
        ready, capacity, reasons, total = [], {}, Counter(), 0
        for it in st.list(store.NODES):
            node = it.value
            if not isinstance(node, dict):
                continue
            total += 1
            meta = node.get("metadata") or {}
            if ROLE_WORKER not in (meta.get("labels") or {}):
                reasons["node(s) had untolerated taint {node-role.kubernetes.io/master: }"] += 1
            elif (node.get("spec") or {}).get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
            elif not node_ready(leases.get(meta.get("name")), now, grace):
                reasons["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"] += 1
            else:
                ready.append(meta["name"])
                try:
                    capacity[meta["name"]] = int(((node.get("status") or {}).get("capacity") or {})["pods"])
                except (KeyError, TypeError, ValueError):
                    capacity[meta["name"]] = DEFAULT_MAX_PODS
        return sorted(ready), capacity, reasons, total

    def ready_workers(self) -> list[str]:
        return self.nodes()[0]
