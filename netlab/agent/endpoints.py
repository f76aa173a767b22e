"""Endpoints controller (master): keeps /registry/services/endpoints/<ns>/<name> in step.

For every Service with a selector it writes a Kubernetes v1 Endpoints object built from the
pods that match: Running and Ready pods under `addresses`, the others that have an IP under
`notReadyAddresses`, each with nodeName and a targetRef to the pod. A targetPort given by
name is resolved per pod (pods may number the same named port differently), so pods that
resolve to different ports land in different subsets, as in Kubernetes. Endpoints whose
Service is gone are deleted; services without a selector are left alone (their Endpoints
are the user's). Writes are compare-and-swap and happen only when something changed.
"""

from __future__ import annotations

from typing import Any

from netlab import store
from netlab.agent.base import Reconciler
from netlab.api.meta import matches, pod_gone, pod_ready


def _usable(pod: dict) -> bool:
    return bool((pod.get("status") or {}).get("podIP")) and not pod_gone(pod)


def resolve_port(pod: dict, target: Any, protocol: str) -> int | None:
    """A service port's targetPort for one pod: the number, or the named container port's."""
    if isinstance(target, int):
        return target
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return p.get("containerPort")
    return None


def build_subsets(svc: dict, pods: list[dict]) -> list[dict]:
    """The Endpoints `subsets` of one service (pure)."""
    meta, spec = svc["metadata"], svc["spec"]
    selector = spec.get("selector") or {}
    groups: dict[tuple, dict[str, list]] = {}
    for pod in pods:
        pm = pod.get("metadata") or {}
        if pm.get("namespace", "default") != meta["namespace"] or not _usable(pod):
            continue
        labels = pm.get("labels") or {}
        if not matches(selector, labels):
            continue
        ports = []
        for sp in spec.get("ports") or []:
            num = resolve_port(pod, sp.get("targetPort", sp["port"]), sp.get("protocol", "TCP"))
            if num is None:
                continue  # this pod has no container port of that name: not an endpoint for it
            ep = {"port": num, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                ep = {"name": sp["name"], **ep}
            ports.append(ep)
        if not ports:
            continue
        addr = {"ip": pod["status"]["podIP"], "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": pm.get("namespace", "default"),
                              "name": pm.get("name"), "uid": pm.get("uid")}}
        g = groups.setdefault(tuple(tuple(sorted(p.items())) for p in ports),
                              {"ports": ports, "addresses": [], "notReadyAddresses": []})
        g["addresses" if pod_ready(pod) else "notReadyAddresses"].append(addr)
    subsets = []
    for _, g in sorted(groups.items()):
        s: dict[str, Any] = {}
        for k in ("addresses", "notReadyAddresses"):
            if g[k]:
                s[k] = sorted(g[k], key=lambda a: tuple(int(x) for x in a["ip"].split(".")))
        s["ports"] = g["ports"]
        subsets.append(s)
    return subsets


def build_endpoints(svc: dict, pods: list[dict], created: str | None = None) -> dict:
    m = svc["metadata"]
    meta: dict[str, Any] = {"name": m["name"], "namespace": m["namespace"],
                            "creationTimestamp": created or store.now_rfc3339()}
    if m.get("labels"):
        meta["labels"] = dict(m["labels"])
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": build_subsets(svc, pods)}


class EndpointsController(Reconciler):
    name = "endpoints"
    # Our own endpoint writes come back through the cache too; a write computed from a cache
    # that had not seen them yet loses its compare-and-swap and is redone on that event.
    informed = (store.PODS, store.SERVICES, store.ENDPOINTS)
    resync_seconds = 10.0

    def reconcile(self) -> None:
        st = self.agent.store
        pods = [v for v in self.cache(store.PODS).values() if isinstance(v, dict)]
        services = {i.key.removeprefix(store.SERVICES): i.value for i in self.cache(store.SERVICES).items()
                    if isinstance(i.value, dict)}
        existing = {i.key.removeprefix(store.ENDPOINTS): i for i in self.cache(store.ENDPOINTS).items()}
        by_ns: dict[str, list[dict]] = {}
        for p in pods:
            by_ns.setdefault((p.get("metadata") or {}).get("namespace", "default"), []).append(p)
        for path, svc in services.items():
            if not (svc.get("spec") or {}).get("selector"):
                continue
            try:
                cur = existing.get(path)
                created = (cur.value.get("metadata") or {}).get("creationTimestamp") \
                    if cur is not None and isinstance(cur.value, dict) else None
                want = build_endpoints(svc, by_ns.get(svc["metadata"]["namespace"], []), created)
                if cur is None:
                    if st.create(store.ENDPOINTS + path, want):
                        self.log.info("endpoints %s: %s", path, _summary(want))
                elif cur.value != want:
                    if st.update(store.ENDPOINTS + path, want, cur.mod_revision):
                        self.log.info("endpoints %s: %s", path, _summary(want))
                # A lost compare-and-swap means someone else wrote meanwhile: the watch
                # event that write caused brings us back here.
            except (KeyError, TypeError, AttributeError) as e:
                self.log.warning("service %s is malformed, skipped: %r", path, e)
        for path, item in existing.items():
            if path not in services:
                st.delete_all_if(item.key, item.mod_revision)


def _summary(ep: dict) -> str:
    pairs = [f"{a['ip']}:{p['port']}" for s in ep["subsets"] for a in s.get("addresses", [])
             for p in s["ports"]]
    return ", ".join(pairs) or "<none>"
