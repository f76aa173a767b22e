"""Services (v1): the API server's side of a Service object.

Owns validation and defaulting of Kubernetes v1 Service objects (types ClusterIP, NodePort
and LoadBalancer; headless ClusterIP services with clusterIP: None), allocation of cluster
IPs (from `services.clusterIPRange`, first address reserved as Kubernetes reserves it for
the `kubernetes` service), node ports (from `services.nodePortRange`, including a Local
LoadBalancer's healthCheckNodePort) and LoadBalancer addresses (from
`services.loadBalancerPool`, shown in status.loadBalancer.ingress) with etcd transactions, create/delete under
/registry/services/specs/<ns>/<name>, `expose` (a Service built from a pod's or a
deployment's labels), waiting until every worker's proxy reports a revision at least that
of the write, and and reading Services and Endpoints back with their resourceVersion. `SPEC` is the one table of
the Service fields netlab honours (netlab.api.manifests checks manifests against it).

Allocation never reads then writes: one transaction creates the Service key, the cluster
IP's key under /registry/ranges/serviceips/ and each node port's key under
/registry/ranges/servicenodeports/ (and the LB address's under
/registry/ranges/loadbalancerips/) only if none of them exists. A random candidate that
lost a race is simply replaced by another one; a value the user asked for that is taken is
a UsageError naming the field, and nothing is written.
"""

from __future__ import annotations

import ipaddress
import random
import time
import uuid
from typing import Any

from netlab import store
from netlab.api.meta import FieldError, check_labels, check_name, is_port_name, node_ready
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.labfile import Lab
from netlab.store import Store

TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
POLICIES = ("Cluster", "Local")
PROTOCOLS = ("TCP", "UDP")
# The Service spec fields netlab honours, with their types (netlab.api.manifests' notation:
# a type name, a one-element list for a list, ("map", type) for free-form keys). The one
# table: manifests check against it, normalise() refuses any other field.
SPEC: dict[str, object] = {
    "type": "string",  # ClusterIP, NodePort or LoadBalancer
    "clusterIP": "string",  # or None: headless
    "clusterIPs": ["string"],  # at most one, the clusterIP
    "sessionAffinity": "string",  # None only
    "externalTrafficPolicy": "string",  # Cluster or Local (NodePort, LoadBalancer)
    "internalTrafficPolicy": "string",  # Cluster or Local
    "loadBalancerIP": "string",
    "loadBalancerSourceRanges": ["string"],
    "healthCheckNodePort": "integer",
    "allocateLoadBalancerNodePorts": "boolean",  # true only
    "selector": ("map", "string"),
    "ports": [{"name": "string", "protocol": "string", "port": "integer",
               "targetPort": "integer or string", "nodePort": "integer"}],
}
SPEC_FIELDS = set(SPEC)
PORT_FIELDS = set(SPEC["ports"][0])
ALLOC_TRIES = 64
PROXY_INPUT = "/registry/services/"  # what a proxy's rules are made of: specs/ and endpoints/
WAIT_TIMEOUT = 30.0


def key(namespace: str, name: str) -> str:
    return f"{store.SERVICES}{namespace}/{name}"


def endpoints_key(namespace: str, name: str) -> str:
    return f"{store.ENDPOINTS}{namespace}/{name}"


def ip_key(ip: str) -> str:
    return f"{store.ALLOC_CLUSTER_IP}{ip}"


def port_key(port: int) -> str:
    return f"{store.ALLOC_NODE_PORT}{port}"


def lb_key(ip: str) -> str:
    return f"{store.ALLOC_LB_IP}{ip}"


# --------------------------------------------------------------------------- ranges
def cluster_ip_pool(lab: Lab) -> tuple[int, int]:
    """First and last allocatable address (as ints): network, first host and broadcast excluded."""
    net = ipaddress.IPv4Network(lab.services.cluster_ip_range)
    return int(net.network_address) + 2, int(net.broadcast_address) - 1


def lb_pool(lab: Lab) -> tuple[int, int]:
    return lab.services.lb_pool


def check_lb_ip(value: Any, lab: Lab, field: str = "spec.loadBalancerIP") -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise FieldError(field, f"'{value}' is not an IPv4 address") from None
    lo, hi = lb_pool(lab)
    if not lo <= int(ip) <= hi:
        raise FieldError(field, f"{ip} is not inside services.loadBalancerPool "
                                f"{lab.services.load_balancer_pool}")
    return str(ip)


def reserved_ip(lab: Lab) -> str:
    """The range's first address, which Kubernetes gives to the `kubernetes` service."""
    return str(ipaddress.IPv4Network(lab.services.cluster_ip_range).network_address + 1)


# --------------------------------------------------------------------------- validation
def _int(value: Any, field: str, lo: int, hi: int, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FieldError(field, f"{value!r} is not {what} ({lo}-{hi})")
    return value


def check_port_name(value: Any, field: str) -> str:
    """A container port's name as a targetPort refers to it (IANA_SVC_NAME)."""
    if not is_port_name(value):
        raise FieldError(field, f"{value!r} is not a port number (1-65535) or a container port's name "
                                "(IANA service name: at most 15 lower-case letters, digits, '-')")
    return value


def check_cluster_ip(value: str, lab: Lab, field: str = "spec.clusterIP") -> str:
    if value == "None":
        return "None"
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise FieldError(field, f"'{value}' is not an IPv4 address") from None
    net = ipaddress.IPv4Network(lab.services.cluster_ip_range)
    if ip not in net:
        raise FieldError(field, f"{ip} is not inside the service range {net}")
    lo, hi = cluster_ip_pool(lab)
    if str(ip) == reserved_ip(lab):
        raise FieldError(field, f"{ip} is reserved (the range's first address belongs to the "
                                "`kubernetes` service)")
    if not lo <= int(ip) <= hi:
        raise FieldError(field, f"{ip} is the network or broadcast address of {net}")
    return str(ip)


def check_node_port(value: Any, lab: Lab, field: str) -> int:
    lo, hi = lab.services.node_ports
    return _int(value, field, lo, hi, "a port in the node-port range")


def normalise(doc: Any, lab: Lab) -> dict:
    """Validate a v1 Service and fill in Kubernetes' defaults (not the allocations).

    Raises FieldError naming the field (`spec.ports[1].targetPort: ...`).
    """
    if not isinstance(doc, dict):
        raise UsageError("a Service must be a mapping")
    if doc.get("apiVersion", "v1") != "v1":
        raise FieldError("apiVersion", f"{doc.get('apiVersion')!r} is not v1")
    if doc.get("kind", "Service") != "Service":
        raise FieldError("kind", f"{doc.get('kind')!r} is not Service")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise FieldError("metadata", "required (with a name)")
    name = check_name(meta.get("name"), "metadata.name", dns1035=True)
    ns = check_name(meta.get("namespace") or "default", "metadata.namespace")
    labels = check_labels(meta.get("labels"), "metadata.labels")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise FieldError("spec", "required (with ports)")
    for k in spec:
        if k not in SPEC_FIELDS:
            raise FieldError(f"spec.{k}", "unknown or unsupported field")
    typ = spec.get("type") or "ClusterIP"
    if typ not in TYPES:
        raise FieldError("spec.type", f"{typ!r} is not supported (ClusterIP, NodePort or LoadBalancer)")
    if spec.get("sessionAffinity", "None") != "None":
        raise FieldError("spec.sessionAffinity", "only None is supported")
    external = typ in ("NodePort", "LoadBalancer")
    etp = spec.get("externalTrafficPolicy") or "Cluster"
    if etp not in POLICIES:
        raise FieldError("spec.externalTrafficPolicy", f"{etp!r} is not Cluster or Local")
    if etp != "Cluster" and not external:
        raise FieldError("spec.externalTrafficPolicy", "may only be set for type NodePort or LoadBalancer")
    itp = spec.get("internalTrafficPolicy") or "Cluster"
    if itp not in POLICIES:
        raise FieldError("spec.internalTrafficPolicy", f"{itp!r} is not Cluster or Local")
    if spec.get("allocateLoadBalancerNodePorts", True) is not True:
        raise FieldError("spec.allocateLoadBalancerNodePorts", "only true is supported")
    lb_ip = spec.get("loadBalancerIP") or None
    ranges = spec.get("loadBalancerSourceRanges") or []
    hc = spec.get("healthCheckNodePort") or None
    if typ != "LoadBalancer":
        for f, v in (("loadBalancerIP", lb_ip), ("loadBalancerSourceRanges", ranges)):
            if v:
                raise FieldError(f"spec.{f}", "may only be set when spec.type is LoadBalancer")
    if lb_ip is not None:
        lb_ip = check_lb_ip(lb_ip, lab)
    if not isinstance(ranges, list):
        raise FieldError("spec.loadBalancerSourceRanges", "must be a list of CIDRs")
    cidrs = []
    for i, r in enumerate(ranges):
        try:
            cidrs.append(str(ipaddress.IPv4Network(str(r).strip(), strict=False)))
        except ValueError:
            raise FieldError(f"spec.loadBalancerSourceRanges[{i}]", f"'{r}' is not an IPv4 CIDR") from None
    if hc is not None:
        if typ != "LoadBalancer" or etp != "Local":
            raise FieldError("spec.healthCheckNodePort", "may only be set for type LoadBalancer with "
                                                         "externalTrafficPolicy Local")
        hc = check_node_port(hc, lab, "spec.healthCheckNodePort")
    selector = check_labels(spec.get("selector"), "spec.selector")

    cluster_ip = spec.get("clusterIP") or None
    if cluster_ip is not None:
        cluster_ip = check_cluster_ip(str(cluster_ip), lab)
    if cluster_ip == "None" and typ != "ClusterIP":
        raise FieldError("spec.clusterIP", "None (headless) is only allowed for type ClusterIP")
    ips = spec.get("clusterIPs")
    if ips is not None and (not isinstance(ips, list) or (ips and ips[:1] != [cluster_ip] or len(ips) > 1)):
        raise FieldError("spec.clusterIPs", "must be empty or hold exactly spec.clusterIP")

    raw_ports = spec.get("ports")
    if not isinstance(raw_ports, list) or not raw_ports:
        raise FieldError("spec.ports", "required: at least one port")
    ports: list[dict] = []
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    seen_node_ports: set[int] = set()
    for i, p in enumerate(raw_ports):
        f = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            raise FieldError(f, "must be a mapping (port, targetPort, protocol, ...)")
        for k in p:
            if k not in PORT_FIELDS:
                raise FieldError(f"{f}.{k}", "unknown field")
        out: dict[str, Any] = {}
        pname = p.get("name") or ""
        if pname:
            check_name(pname, f"{f}.name")
            if pname in seen_names:
                raise FieldError(f"{f}.name", f"'{pname}' is used by another port")
            seen_names.add(pname)
            out["name"] = pname
        elif len(raw_ports) > 1:
            raise FieldError(f"{f}.name", "required when a service has more than one port")
        proto = p.get("protocol") or "TCP"
        if proto not in PROTOCOLS:
            raise FieldError(f"{f}.protocol", f"{proto!r} is not supported (TCP or UDP)")
        out["protocol"] = proto
        if p.get("port") is None:
            raise FieldError(f"{f}.port", "required")
        port = _int(p.get("port"), f"{f}.port", 1, 65535, "a port")
        if (port, proto) in seen_ports:
            raise FieldError(f"{f}.port", f"{port}/{proto} is used by another port of this service")
        seen_ports.add((port, proto))
        out["port"] = port
        tp = p.get("targetPort")
        if tp is None or tp == "":
            tp = port
        elif isinstance(tp, str) and not tp.isdigit():
            tp = check_port_name(tp, f"{f}.targetPort")
        else:
            tp = _int(tp, f"{f}.targetPort", 1, 65535, "a port number or a container port's name")
        out["targetPort"] = tp
        np_ = p.get("nodePort")
        if np_ not in (None, 0):
            if not external:
                raise FieldError(f"{f}.nodePort", "may only be set when spec.type is NodePort or LoadBalancer")
            np_ = check_node_port(np_, lab, f"{f}.nodePort")
            if np_ in seen_node_ports:
                raise FieldError(f"{f}.nodePort", f"{np_} is used by another port of this service")
            seen_node_ports.add(np_)
            out["nodePort"] = np_
        ports.append(out)
    if hc is not None and hc in seen_node_ports:
        raise FieldError("spec.healthCheckNodePort", f"{hc} is a node port of this service")

    meta_out: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta_out["labels"] = labels
    annotations = meta.get("annotations")
    if annotations:  # kubectl apply keeps its last-applied-configuration here
        if not isinstance(annotations, dict):
            raise FieldError("metadata.annotations", "must be a mapping of strings")
        meta_out["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    spec_out: dict[str, Any] = {"type": typ, "ports": ports}
    if selector:
        spec_out["selector"] = selector
    spec_out.update(clusterIP=cluster_ip, sessionAffinity="None")
    if external:
        spec_out["externalTrafficPolicy"] = etp
    spec_out["internalTrafficPolicy"] = itp
    if typ == "LoadBalancer":
        spec_out["allocateLoadBalancerNodePorts"] = True
        if lb_ip:
            spec_out["loadBalancerIP"] = lb_ip
        if cidrs:
            spec_out["loadBalancerSourceRanges"] = cidrs
        if hc:
            spec_out["healthCheckNodePort"] = hc
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta_out, "spec": spec_out,
            "status": {"loadBalancer": {}}}


# --------------------------------------------------------------------------- allocation
def _taken(st: Store, prefix: str) -> set[str]:
    """Allocated values, as a hint for picking candidates (the transaction decides)."""
    return {k.removeprefix(prefix) for k in st.list_keys(prefix)}


def _pick_ip(lab: Lab, taken: set[str], rng: random.Random) -> str:
    lo, hi = cluster_ip_pool(lab)
    size = hi - lo + 1
    if len(taken) >= size:
        raise NetlabError(f"no free cluster IP left in {lab.services.cluster_ip_range}")
    if len(taken) > size // 2:  # nearly full: random probing would spin, so scan from a random start
        start = rng.randrange(size)
        for i in range(size):
            ip = str(ipaddress.IPv4Address(lo + (start + i) % size))
            if ip not in taken:
                return ip
        raise NetlabError(f"no free cluster IP left in {lab.services.cluster_ip_range}")
    while True:
        ip = str(ipaddress.IPv4Address(rng.randint(lo, hi)))
        if ip not in taken:
            return ip


def _pick_lb(lab: Lab, taken: set[str]) -> str:
    # The lowest free address, as MetalLB hands them out: predictable for a person reading
    # `get svc` (the pool is small; the transaction still decides).
    lo, hi = lb_pool(lab)
    for i in range(lo, hi + 1):
        ip = str(ipaddress.IPv4Address(i))
        if ip not in taken:
            return ip
    raise NetlabError(f"no free LoadBalancer address left in services.loadBalancerPool "
                      f"{lab.services.load_balancer_pool}")


def _pick_port(lab: Lab, taken: set[str], rng: random.Random) -> int:
    lo, hi = lab.services.node_ports
    free = [p for p in range(lo, hi + 1) if str(p) not in taken]
    if not free:
        raise NetlabError(f"no free node port left in {lab.services.node_port_range}")
    return rng.choice(free)


def _owner(svc: dict) -> dict:
    m = svc["metadata"]
    return {"service": f"{m['namespace']}/{m['name']}", "uid": m["uid"]}


def create(st: Store, lab: Lab, doc: Any, rng: random.Random | None = None) -> tuple[dict, int]:
    """Validate, allocate and write a Service; returns (the stored object, the write's revision)."""
    rng = rng or random.Random()
    svc = normalise(doc, lab)
    meta, spec = svc["metadata"], svc["spec"]
    ns, name = meta["namespace"], meta["name"]
    skey = key(ns, name)
    if st.get(skey) is not None:  # the transaction checks again; this only gives the early answer
        raise FieldError("metadata.name", f'services "{name}" already exists in namespace {ns}')
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = store.now_rfc3339()
    fixed_ip = spec["clusterIP"]
    headless = fixed_ip == "None"
    is_lb = spec["type"] == "LoadBalancer"
    want_np = [i for i, p in enumerate(spec["ports"])
               if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in p]
    fixed_lb = spec.get("loadBalancerIP")
    want_hc = is_lb and spec.get("externalTrafficPolicy") == "Local" and not spec.get("healthCheckNodePort")
    taken_ips: set[str] | None = None
    taken_ports: set[str] | None = None
    taken_lbs: set[str] | None = None
    for _ in range(ALLOC_TRIES):
        if fixed_ip is None:
            taken_ips = taken_ips if taken_ips is not None else _taken(st, store.ALLOC_CLUSTER_IP)
            spec["clusterIP"] = _pick_ip(lab, taken_ips, rng)
        chosen: set[str] = set()
        if want_np or want_hc:
            taken_ports = taken_ports if taken_ports is not None else _taken(st, store.ALLOC_NODE_PORT)
            for i in want_np:
                p = _pick_port(lab, taken_ports | chosen, rng)
                spec["ports"][i]["nodePort"] = p
                chosen.add(str(p))
        if want_hc:
            spec["healthCheckNodePort"] = _pick_port(lab, taken_ports | chosen, rng)
        lb_ip = None
        if is_lb:
            if fixed_lb:
                lb_ip = fixed_lb
            else:
                taken_lbs = taken_lbs if taken_lbs is not None else _taken(st, store.ALLOC_LB_IP)
                lb_ip = _pick_lb(lab, taken_lbs)
            svc["status"] = {"loadBalancer": {"ingress": [{"ip": lb_ip, "ipMode": "VIP"}]}}
        spec["clusterIPs"] = [spec["clusterIP"]]
        owner = _owner(svc)
        keys = {skey: svc}
        if not headless:
            keys[ip_key(spec["clusterIP"])] = owner
        for p in spec["ports"]:
            if "nodePort" in p:
                keys[port_key(p["nodePort"])] = owner
        if spec.get("healthCheckNodePort"):
            keys[port_key(spec["healthCheckNodePort"])] = owner
        if lb_ip:
            keys[lb_key(lb_ip)] = owner
        # The endpoints key is deleted too: a leftover must not pass for this service's.
        ok, rev, existing = st.create_all(keys, delete=[endpoints_key(ns, name)])
        if ok:
            return svc, rev
        if skey in existing:
            raise FieldError("metadata.name", f'services "{name}" already exists in namespace {ns}')
        ikey = ip_key(spec["clusterIP"])
        if lb_ip and lb_key(lb_ip) in existing:
            if fixed_lb:
                raise FieldError("spec.loadBalancerIP", f"{fixed_lb} is already allocated to "
                                                        f"{_holder(existing[lb_key(lb_ip)])}")
            taken_lbs = (taken_lbs or set()) | {lb_ip}
        hk = port_key(spec.get("healthCheckNodePort") or 0)
        if hk in existing:
            if not want_hc:
                raise FieldError("spec.healthCheckNodePort", f"{spec['healthCheckNodePort']} is already "
                                                             f"allocated to {_holder(existing[hk])}")
            taken_ports = (taken_ports or set()) | {str(spec["healthCheckNodePort"])}
        if ikey in existing:
            if fixed_ip is not None:
                raise FieldError("spec.clusterIP", f"{fixed_ip} is already allocated to "
                                                   f"{_holder(existing[ikey])}")
            taken_ips = (taken_ips or set()) | {spec["clusterIP"]}
        for i, p in enumerate(spec["ports"]):
            pk = port_key(p.get("nodePort", 0))
            if pk in existing:
                if i not in want_np:
                    raise FieldError(f"spec.ports[{i}].nodePort", f"{p['nodePort']} is already allocated "
                                                                  f"to {_holder(existing[pk])}")
                taken_ports = (taken_ports or set()) | {str(p["nodePort"])}
    raise NetlabError(f"could not allocate a cluster IP / node port / LB address for {ns}/{name} after "
                      f"{ALLOC_TRIES} tries (the ranges are nearly full or heavily contended)")


def _holder(value: Any) -> str:
    return value.get("service", "another service") if isinstance(value, dict) else "another service"


def lb_ip(svc: dict) -> str | None:
    """The LoadBalancer address of a Service (status.loadBalancer.ingress), if any."""
    for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        if ing.get("ip"):
            return ing["ip"]
    return None


def allocation_keys(svc: dict) -> list[str]:
    spec = svc["spec"]
    keys = [] if spec.get("clusterIP") in (None, "None") else [ip_key(spec["clusterIP"])]
    keys += [port_key(p["nodePort"]) for p in spec["ports"] if p.get("nodePort")]
    if spec.get("healthCheckNodePort"):
        keys.append(port_key(spec["healthCheckNodePort"]))
    if lb_ip(svc):
        keys.append(lb_key(lb_ip(svc)))
    return keys


def delete(st: Store, namespace: str, name: str) -> tuple[dict, int]:
    """Delete a Service with its allocations and Endpoints; returns (the object, the revision)."""
    for _ in range(10):
        item = st.get(key(namespace, name))
        if item is None:
            raise NotFound(f'services "{name}" not found in namespace {namespace}')
        svc = item.value
        keys = allocation_keys(svc)
        ok, rev = st.delete_all_if(key(namespace, name), item.mod_revision,
                                   [*keys, endpoints_key(namespace, name)])
        if ok:
            return svc, rev
    raise NetlabError(f"service {namespace}/{name} kept changing while being deleted; try again")


# --------------------------------------------------------------------------- expose
EXPOSE_FLAGS = {  # field of the built Service -> the flag the user typed
    "metadata.name": "--name", "spec.type": "--type", "spec.ports[0].port": "--port",
    "spec.ports[0].targetPort": "--target-port", "spec.ports[0].nodePort": "--node-port",
    "spec.ports[0].protocol": "--protocol",
}


def expose_doc(st: Store, kind: str, name: str, namespace: str = "default", *, port: int | None = None,
               target_port: str | None = None, type_: str = "ClusterIP", svc_name: str | None = None,
               node_port: int | None = None, protocol: str | None = None) -> dict:
    """The Service `kubectl expose KIND NAME` would create (selector: the object's labels)."""
    kinds = {"pod": "pod", "pods": "pod", "po": "pod",
             "deployment": "deployment", "deployments": "deployment", "deploy": "deployment"}
    k = kinds.get(kind.lower())
    if k is None:
        raise UsageError(f"expose: KIND '{kind}' is not pod or deployment")
    if k == "pod":
        item = st.get(f"{store.PODS}{namespace}/{name}")
        if item is None:
            raise NotFound(f'pods "{name}" not found in namespace {namespace}')
        selector = (item.value.get("metadata") or {}).get("labels") or {}
        pod_spec = item.value.get("spec") or {}
    else:
        item = st.get(f"{store.DEPLOYMENTS}{namespace}/{name}")
        if item is None:
            raise NotFound(f'deployments "{name}" not found in namespace {namespace}')
        dspec = item.value.get("spec") or {}
        selector = (dspec.get("selector") or {}).get("matchLabels") or {}
        pod_spec = (dspec.get("template") or {}).get("spec") or {}
    if not selector:
        raise UsageError(f"expose: {k} {name} has no labels to select its pods by")
    if port is None:
        # As kubectl: without --port, the first container port of the pod (template).
        cports = [cp for c in pod_spec.get("containers") or [] for cp in c.get("ports") or []]
        if not cports:
            raise UsageError(f"--port: required ({k} {name} declares no container port)")
        port = cports[0].get("containerPort")
        protocol = protocol or cports[0].get("protocol")
    sp: dict[str, Any] = {"port": port, "protocol": protocol or "TCP"}
    if target_port not in (None, ""):
        sp["targetPort"] = target_port
    if node_port is not None:
        if type_ != "NodePort":
            raise UsageError("--node-port: only with --type NodePort")
        sp["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc_name or name, "namespace": namespace},
            "spec": {"type": type_, "selector": dict(selector), "ports": [sp]}}


def expose(st: Store, lab: Lab, kind: str, name: str, namespace: str = "default", **kw) -> tuple[dict, int]:
    doc = expose_doc(st, kind, name, namespace, **kw)
    try:
        return create(st, lab, doc)
    except FieldError as e:
        flag = EXPOSE_FLAGS.get(e.field)
        if flag is None:
            raise
        raise UsageError(f"{flag}: {e.msg}") from None


# --------------------------------------------------------------------------- waiting
def proxy_nodes(lab: Lab) -> list[str]:
    return [n.name for n in lab.workers]


def wait_endpoints(st: Store, svc: dict, after: int, timeout: float = WAIT_TIMEOUT) -> int:
    """Wait until the endpoints controller wrote this service's Endpoints; their revision."""
    m = svc["metadata"]
    ek = endpoints_key(m["namespace"], m["name"])
    deadline = time.monotonic() + timeout
    while True:
        item = st.get(ek)
        if item is not None and item.mod_revision > after:
            return item.mod_revision
        if time.monotonic() > deadline:
            raise NetlabError(f"the endpoints controller did not write endpoints for "
                              f"{m['namespace']}/{m['name']} within {timeout:.0f}s (is the master's agent running?)")
        time.sleep(0.01)


def wait_proxies(st: Store, lab: Lab, revision: int, timeout: float = WAIT_TIMEOUT) -> dict[str, int]:
    """Wait until every worker's proxy has rules for what etcd held at `revision`.

    A proxy reporting an older revision R still counts when nothing under
    /registry/services/ differs between R and `revision` (so callers may pass the store's
    current revision, which other writers such as heartbeats move on all the time).
    """
    deadline = time.monotonic() + timeout
    pending = set(proxy_nodes(lab))
    seen: dict[str, int] = {}
    checked = 0.0
    while pending:
        if time.monotonic() - checked > 0.5:
            # A NotReady node (`netlab node stop`, a crash) reports nothing until it is back.
            pending -= _not_ready(st, lab, pending)
            checked = time.monotonic()
        for node in sorted(pending):
            item = st.get(store.PROXY_STATUS + node)
            r = int(item.value.get("revision", 0)) if item and isinstance(item.value, dict) else 0
            if r and r != seen.get(node) and (r >= revision or not st.changed_between(PROXY_INPUT, r, revision)):
                pending.discard(node)
            seen[node] = r
        if not pending:
            break
        if time.monotonic() > deadline:
            raise NetlabError(f"the proxy on {', '.join(sorted(pending))} did not apply revision {revision} "
                              f"within {timeout:.0f}s (last reported: "
                              f"{', '.join(f'{n} {seen.get(n, 0)}' for n in sorted(pending))})")
        time.sleep(0.01)
    return seen


def _not_ready(st: Store, lab: Lab, nodes_: set[str]) -> set[str]:
    now = time.time()
    out = set()
    for n in nodes_:
        item = st.get(store.NODE_LEASES + n)
        if not node_ready(item.value if item else None, now, lab.node_monitor_grace_period):
            out.add(n)
    return out


def wait_in_place(st: Store, lab: Lab, svc: dict, revision: int, timeout: float = WAIT_TIMEOUT) -> None:
    """After a create: Endpoints written (if the service selects pods) and every proxy caught up."""
    deadline = time.monotonic() + timeout
    if svc["spec"].get("selector"):
        revision = max(revision, wait_endpoints(st, svc, revision, timeout))
    wait_proxies(st, lab, revision, max(0.1, deadline - time.monotonic()))


# --------------------------------------------------------------------------- reading
def with_version(item: store.Item) -> dict:
    obj = item.value
    obj.setdefault("metadata", {})["resourceVersion"] = str(item.mod_revision)
    return obj


def get(st: Store, namespace: str, name: str) -> dict:
    item = st.get(key(namespace, name))
    if item is None:
        raise NotFound(f'services "{name}" not found in namespace {namespace}')
    return with_version(item)


def list_services(st: Store, namespace: str | None = None) -> list[dict]:
    prefix = store.SERVICES + (f"{namespace}/" if namespace else "")
    return [with_version(i) for i in st.list(prefix) if isinstance(i.value, dict)]


def get_endpoints(st: Store, namespace: str, name: str) -> dict:
    item = st.get(endpoints_key(namespace, name))
    if item is None:
        raise NotFound(f'endpoints "{name}" not found in namespace {namespace}')
    return with_version(item)


def list_endpoints(st: Store, namespace: str | None = None) -> list[dict]:
    prefix = store.ENDPOINTS + (f"{namespace}/" if namespace else "")
    return [with_version(i) for i in st.list(prefix) if isinstance(i.value, dict)]
