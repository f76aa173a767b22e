"""Server-side Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).

The columns are kube-apiserver's own (pkg/printers/internalversion/printers.go), so
kubectl prints against the lab exactly what it prints against a real cluster; priority 1
columns are the ones `-o wide` adds. Pure: objects in, Table rows out.
"""

from __future__ import annotations

import calendar
import time
from typing import Any, Callable

from netlab.api.http import objects


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def age(ts: str | None, now: float | None = None) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((now or time.time()) - t)


def _col(name: str, typ: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> dict:
    return {"name": name, "type": typ, "format": fmt, "description": desc or name, "priority": priority}


NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")


def _none(v: Any) -> Any:
    return "<none>" if v is None or v == "" else v


# --------------------------------------------------------------------------- per kind
POD_COLUMNS = [NAME, _col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
               _col("Status", desc="The aggregate status of the containers in this pod."),
               _col("Restarts", desc="The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
               AGE, _col("IP", priority=1, desc="IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
               _col("Node", priority=1, desc="NodeName is a request to schedule this pod onto a specific node."),
               _col("Nominated Node", priority=1, desc="nominatedNodeName is set only when this pod preempts other pods on the node."),
               _col("Readiness Gates", priority=1, desc="If specified, all readiness gates will be evaluated for pod readiness.")]


def pod_row(pod: dict, now: float) -> list:
    s = pod.get("status") or {}
    cs = s.get("containerStatuses") or []
    n = len((pod.get("spec") or {}).get("containers") or [])
    restarts = sum(c.get("restartCount", 0) for c in cs)
    last = max((parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")) or 0
                for c in cs), default=0)
    rtext = f"{restarts} ({human_duration(now - last)} ago)" if restarts and last else str(restarts)
    return [pod["metadata"]["name"], f"{sum(1 for c in cs if c.get('ready'))}/{n}",
            objects.pod_status_text(pod), rtext, age(pod["metadata"].get("creationTimestamp"), now),
            _none(s.get("podIP")), _none((pod.get("spec") or {}).get("nodeName")), "<none>", "<none>"]


SERVICE_COLUMNS = [NAME, _col("Type", desc="type determines how the Service is exposed."),
                   _col("Cluster-IP", desc="clusterIP is the IP address of the service."),
                   _col("External-IP", desc="externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
                   _col("Port(s)", desc="The list of ports that are exposed by this service."), AGE,
                   _col("Selector", priority=1, desc="Route service traffic to pods with label keys and values matching this selector.")]


def service_row(svc: dict, now: float) -> list:
    spec = svc.get("spec") or {}
    ports = ",".join(f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
                     for p in spec.get("ports") or [])
    sel = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    # kubectl's printer: the ingress addresses of a LoadBalancer, then externalIPs.
    ing = [i.get("ip") or i.get("hostname") for i in
           ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    ext = ",".join([*(i for i in ing if i), *(spec.get("externalIPs") or [])]) \
        or ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>")
    return [svc["metadata"]["name"], spec.get("type", "ClusterIP"), _none(spec.get("clusterIP")), ext,
            _none(ports), age(svc["metadata"].get("creationTimestamp"), now), _none(sel)]


ENDPOINTS_COLUMNS = [NAME, _col("Endpoints", desc="The set of all endpoints is the union of all subsets."), AGE]


def endpoints_row(ep: dict, now: float) -> list:
    pairs = [f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
             for a in s.get("addresses") or [] for p in s.get("ports") or []]
    text = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "") if pairs else "<none>"
    return [ep["metadata"]["name"], text, age(ep["metadata"].get("creationTimestamp"), now)]


NODE_COLUMNS = [NAME, _col("Status", desc="The status of the node"), _col("Roles", desc="The roles of the node"), AGE,
                _col("Version", desc="Kubelet Version reported by the node."),
                _col("Internal-IP", priority=1, desc="List of addresses reachable to the node."),
                _col("External-IP", priority=1, desc="List of addresses reachable to the node."),
                _col("OS-Image", priority=1, desc="OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
                _col("Kernel-Version", priority=1, desc="Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
                _col("Container-Runtime", priority=1, desc="ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).")]


def node_row(node: dict, now: float) -> list:
    st = node.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    status = "Ready" if ready else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addr = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    info = st.get("nodeInfo") or {}
    return [node["metadata"]["name"], status, ",".join(roles) or "<none>",
            age(node["metadata"].get("creationTimestamp"), now), _none(info.get("kubeletVersion")),
            _none(addr.get("InternalIP")), _none(addr.get("ExternalIP")), _none(info.get("osImage")),
            _none(info.get("kernelVersion")), _none(info.get("containerRuntimeVersion"))]


DEPLOYMENT_COLUMNS = [NAME, _col("Ready", desc="Number of the pod with ready state"),
                      _col("Up-to-date", desc="Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                      _col("Available", desc="Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                      AGE, _col("Containers", priority=1, desc="Names of each container in the template."),
                      _col("Images", priority=1, desc="Images referenced by each container in the template."),
                      _col("Selector", priority=1, desc="Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")]


def deployment_row(dep: dict, now: float) -> list:
    st = dep.get("status") or {}
    spec = dep.get("spec") or {}
    cs = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    sel = ",".join(f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()))
    return [dep["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            age(dep["metadata"].get("creationTimestamp"), now), ",".join(c.get("name", "") for c in cs),
            ",".join(c.get("image") or "<none>" for c in cs), _none(sel)]


NAMESPACE_COLUMNS = [NAME, _col("Status", desc="The status of the namespace"), AGE]


def namespace_row(ns: dict, now: float) -> list:
    return [ns["metadata"]["name"], (ns.get("status") or {}).get("phase", "Active"),
            age(ns["metadata"].get("creationTimestamp"), now)]


ENDPOINTSLICE_COLUMNS = [NAME, _col("AddressType", desc="Type of address carried by this EndpointSlice."),
                         _col("Ports", desc="Ports in this EndpointSlice."),
                         _col("Endpoints", desc="Endpoints in this EndpointSlice."), AGE]


def endpointslice_row(es: dict, now: float) -> list:
    ports = ",".join(str(p.get("port")) for p in es.get("ports") or []) or "<unset>"
    addrs = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "") if addrs else "<unset>"
    return [es["metadata"]["name"], es.get("addressType", "IPv4"), ports, text,
            age(es["metadata"].get("creationTimestamp"), now)]


EVENT_COLUMNS = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message"),
                 _col("Subobject", priority=1), _col("Source", priority=1), _col("First Seen", priority=1),
                 _col("Count", priority=1), _col("Name", priority=1)]


def event_row(ev: dict, now: float) -> list:
    io = ev.get("involvedObject") or {}
    return [age(ev.get("lastTimestamp"), now), ev.get("type", ""), ev.get("reason", ""),
            f"{(io.get('kind') or '').lower()}/{io.get('name', '')}", ev.get("message", ""),
            io.get("fieldPath", ""), (ev.get("source") or {}).get("component", ""),
            age(ev.get("firstTimestamp"), now), ev.get("count", 1), ev["metadata"]["name"]]


TABLES: dict[str, tuple[list[dict], Callable[[dict, float], list]]] = {
    "pods": (POD_COLUMNS, pod_row), "services": (SERVICE_COLUMNS, service_row),
    "endpoints": (ENDPOINTS_COLUMNS, endpoints_row), "nodes": (NODE_COLUMNS, node_row),
    "deployments": (DEPLOYMENT_COLUMNS, deployment_row), "namespaces": (NAMESPACE_COLUMNS, namespace_row),
    "events": (EVENT_COLUMNS, event_row), "endpointslices": (ENDPOINTSLICE_COLUMNS, endpointslice_row),
}


def partial_metadata(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def table(resource: str, items: list[dict], resource_version: str = "", include_object: str = "Metadata",
          now: float | None = None, with_columns: bool = True) -> dict:
    cols, row = TABLES[resource]
    now = now or time.time()
    rows = []
    for o in items:
        r: dict[str, Any] = {"cells": row(o, now)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = partial_metadata(o)
        rows.append(r)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"resourceVersion": resource_version}, "rows": rows}
    out["columnDefinitions"] = cols if with_columns else []
    return out
