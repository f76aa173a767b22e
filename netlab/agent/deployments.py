"""The deployment controller (master): keeps each Deployment's pods at its replica count.

Runs in the master's agent. Level-triggered over /registry/deployments and /registry/pods:
a deleted or Failed pod is replaced by a new pod (a new name, usually a new IP), extra pods
are deleted, pods of an older template are replaced (rolling: old ready pods stay until the
new ones are ready), pods whose deployment is gone are garbage-collected (through their
ownerReferences), pods are created in slow-start batches (1, 2, 4, ..., at most 500 a sync)
re-reading the deployment between batches so that its deletion stops creation at once, and
the status
(replicas, updatedReplicas, readyReplicas, availableReplicas) is written back. Pod names and
the pod built from the template come from netlab/plan/deployments.py; pods are created and
deleted through netlab/api/pods.py, and bound to nodes by the scheduler.
"""

from __future__ import annotations

import copy

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api import pods
from netlab.api.meta import pod_gone, pod_ready
from netlab.plan import deployments as dl

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_order(pod_item, colocated: dict[str, int] | None = None) -> tuple:
    """Which pods go first when there are too many (ReplicaSet's ActivePodsWithRanks, simplified):
    unscheduled before scheduled, pending before running, not ready before ready, those on the
    node with most of the deployment's pods before others (keeps the spread), newest first."""
    p = pod_item.value
    node = p.get("spec", {}).get("nodeName")
    return (bool(node), _PHASE_RANK.get((p.get("status") or {}).get("phase"), 0),
            pod_ready(p), -(colocated or {}).get(node, 0), -pod_item.create_revision)


def plan(dep: dict, owned: list) -> tuple[int, list, dict]:
    """(pods to create, pod items to delete, new status) for one deployment. Pure.

    `owned` are store Items of the pods the deployment owns.
    """
    want = dep["spec"]["replicas"]
    thash = dl.template_hash(dep["spec"]["template"])
    finished = [i for i in owned if (i.value.get("status") or {}).get("phase") in ("Failed", "Succeeded")]
    alive = [i for i in owned if not pod_gone(i.value)]
    new = [i for i in alive if i.value["metadata"].get("labels", {}).get(dl.HASH_LABEL) == thash]
    old = [i for i in alive if i not in new]
    delete = list(finished)  # replaced below, like any missing pod
    create = max(0, want - len(new))
    if len(new) > want:
        per_node: dict[str, int] = {}
        for i in alive:
            n = i.value.get("spec", {}).get("nodeName")
            per_node[n] = per_node.get(n, 0) + 1
        delete += sorted(new, key=lambda i: deletion_order(i, per_node))[:len(new) - want]
    # Rolling update: keep just enough ready old pods to cover the new ones not yet ready.
    ready_new = sum(pod_ready(i.value) for i in new)
    keep_old = max(0, min(want, len(new)) - ready_new) if new else want
    old_sorted = sorted(old, key=deletion_order, reverse=True)  # best (ready, running) first
    kept = [i for i in old_sorted if pod_ready(i.value)][:keep_old]
    delete += [i for i in old if i not in kept]

    ready = sum(pod_ready(i.value) for i in alive)
    status = {
        "observedGeneration": dep["metadata"].get("generation", 1),
        "replicas": len(alive),
        "updatedReplicas": len(new),
        "readyReplicas": ready,
        "availableReplicas": ready,  # minReadySeconds is 0: ready means available
    }
    if want - ready > 0:
        status["unavailableReplicas"] = want - ready
    avail = ready >= want
    prev = {c.get("type"): c for c in (dep.get("status") or {}).get("conditions") or []}
    cond = {"type": "Available", "status": "True" if avail else "False",
            "reason": "MinimumReplicasAvailable" if avail else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability." if avail
            else "Deployment does not have minimum availability."}
    old_c = prev.get("Available")
    cond["lastTransitionTime"] = (old_c["lastTransitionTime"]
                                  if old_c and old_c.get("status") == cond["status"]
                                  and old_c.get("lastTransitionTime") else store.now_rfc3339())
    status["conditions"] = [cond]
    return create, delete, status


class DeploymentController(Reconciler):
    name = "deployments"
    prefixes = (store.DEPLOYMENTS, store.PODS)
    resync_seconds = 10.0

    def reconcile(self) -> None:
        st = self.agent.store
        # Pods first: a pod of a deployment created after this listing cannot exist yet
        # (only this controller makes them), so the garbage collection below is safe.
        pod_items = st.list(store.PODS)
        dep_items = st.list(store.DEPLOYMENTS)
        by_owner: dict[str, list] = {}
        for it in pod_items:
            uid = dl.owner_uid(it.value)
            if uid:
                by_owner.setdefault(uid, []).append(it)
        uids = set()
        for d in dep_items:
            uids.add(d.value["metadata"]["uid"])
            owned = [i for i in by_owner.get(d.value["metadata"]["uid"], [])
                     if i.value["metadata"].get("namespace") == d.value["metadata"]["namespace"]]
            self.sync(d, owned)
        for uid, items in by_owner.items():
            if uid not in uids:
                for it in items:
                    self.log.info("pod %s: its deployment is gone, deleting", it.value["metadata"]["name"])
                    self._delete(it.value)

    def sync(self, item, owned: list) -> None:
        dep = item.value
        create, delete, status = plan(dep, owned)
        for it in delete:
            self.log.info("deployment %s: deleting pod %s", dep["metadata"]["name"],
                          it.value["metadata"]["name"])
            self._delete(it.value)
        # Slow start, as the ReplicaSet controller: batches of 1, 2, 4, ... and at most
        # BURST_REPLICAS per sync (the rest on the next one, kicked below). Between batches
        # the deployment is read again, so deleting or scaling it down stops creation at once.
        burst = min(create, dl.BURST_REPLICAS)
        for i, size in enumerate(dl.slow_start_batches(burst)):
            if i and not self._still_wanted(item):
                self.log.info("deployment %s: deleted or changed, creation stopped", dep["metadata"]["name"])
                self.kick()
                return
            for _ in range(size):
                self._create(dep)
        if create > burst:
            self.kick()
        if (dep.get("status") or {}) != status:
            new = copy.deepcopy(dep)
            new["status"] = status
            # CAS: a concurrent scale/apply wins; its watch event brings us back here.
            if not self.agent.store.update(item.key, new, item.mod_revision):
                self.kick()

    def _still_wanted(self, item) -> bool:
        """Is the deployment still there, unchanged since this sync read it?"""
        cur = self.agent.store.get(item.key)
        return cur is not None and cur.value["metadata"]["uid"] == item.value["metadata"]["uid"] \
            and cur.value["spec"] == item.value["spec"]

    def _create(self, dep: dict) -> None:
        for _ in range(10):  # a name clash of the 5 random characters: draw again
            pod = dl.pod_from_template(dep, dl.random_suffix())
            try:
                pods.create_pod(self.agent.store, pod)
            except pods.PodExists:
                continue
            self.log.info("deployment %s: created pod %s", dep["metadata"]["name"], pod["metadata"]["name"])
            return
        raise RuntimeError(f"deployment {dep['metadata']['name']}: no free pod name after 10 tries")

    def _delete(self, pod: dict) -> None:
        pods.delete_pod(self.agent.store, pod["metadata"]["namespace"], pod["metadata"]["name"])
