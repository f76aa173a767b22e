"""The HTTP API's one door into the API modules: list, get, create, update, delete, scale.

Every write goes through the functions `netlab apply/run/expose/scale/delete` use
(netlab.pods, netlab.services, netlab.deployments, netlab.manifests' honoured-field
table), so kubectl and the netlab CLI get identical objects and identical errors; this
module only translates their results and errors into the API's (resourceVersion = etcd
mod revision, `Status` errors) and strips what kubectl sends that means nothing here
(`status`, `creationTimestamp: null`, `resources: {}`, Kubernetes' default values).
It is the one module of netlab/api/http that imports those API modules.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from typing import Any

from netlab import labfile, names, store
from netlab.api import deployments, manifests, meta, nodes, pods, services
from netlab.api.http import status as S
from netlab.api.http.resources import Resource
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.store import Item, Store

NAMESPACES = "/registry/namespaces/"
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
PREFIX = {"pods": store.PODS, "services": store.SERVICES, "endpoints": store.ENDPOINTS,
          "deployments": store.DEPLOYMENTS, "nodes": store.NODES, "namespaces": NAMESPACES,
          "events": "/registry/events/", "endpointslices": store.ENDPOINTS}
API_VERSION = {"pods": "v1", "services": "v1", "endpoints": "v1", "nodes": "v1", "namespaces": "v1",
               "events": "v1", "deployments": "apps/v1", "endpointslices": "discovery.k8s.io/v1"}
KIND = {"pods": "Pod", "services": "Service", "endpoints": "Endpoints", "nodes": "Node",
        "namespaces": "Namespace", "events": "Event", "deployments": "Deployment",
        "endpointslices": "EndpointSlice"}
HONOURED = {"pods": ("v1", "Pod"), "services": ("v1", "Service"), "deployments": ("apps/v1", "Deployment")}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Fields Kubernetes fills in with a default: kubectl and client libraries send them back.
# With their default value they mean what netlab does anyway and are dropped; any other
# value stays and is refused by the honoured-field check, naming the field.
_DEFAULTS_POD_SPEC = {"dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                      "terminationGracePeriodSeconds": 30, "enableServiceLinks": True,
                      "serviceAccountName": "default", "serviceAccount": "default", "priority": 0,
                      "preemptionPolicy": "PreemptLowerPriority"}
_DEFAULTS_CONTAINER = {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
_ANY_CONTAINER = ("imagePullPolicy",)  # no images to pull: every value means the same
_DEFAULTS_DEP_SPEC = {"revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}
_DEFAULT_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
_DEFAULTS_SVC_SPEC = {"internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack",
                      "ipFamilies": ["IPv4"]}
_SERVER_META = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")


def pod_status_text(pod: dict) -> str:
    return pods.status_text(pod)


def _empty(v: Any) -> bool:
    return v is None or v == {} or v == []


def _drop_empty(v: Any) -> Any:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            x = _drop_empty(x)
            if not _empty(x):
                out[k] = x
        return out
    if isinstance(v, list):
        return [_drop_empty(x) for x in v]
    return v


def _drop_defaults(d: dict, defaults: dict) -> None:
    for k, v in defaults.items():
        if k in d and d[k] == v:
            del d[k]


def _prune_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    _drop_defaults(spec, _DEFAULTS_POD_SPEC)
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            _drop_defaults(c, _DEFAULTS_CONTAINER)
            for k in _ANY_CONTAINER:
                c.pop(k, None)


def incoming(resource: str, body: Any) -> dict:
    """What a client sent, without what the server owns or defaults (see the module doc)."""
    if not isinstance(body, dict):
        raise S.ApiError(400, "the request body must be a JSON or YAML object")
    obj = copy.deepcopy(body)
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for k in _SERVER_META:
            meta.pop(k, None)
    spec = obj.get("spec")
    if resource == "pods":
        _prune_pod_spec(spec)
    elif resource == "deployments" and isinstance(spec, dict):
        _drop_defaults(spec, _DEFAULTS_DEP_SPEC)
        if spec.get("strategy") in ({}, _DEFAULT_STRATEGY, {"type": "RollingUpdate"}):
            spec.pop("strategy", None)
        tmpl = spec.get("template")
        if isinstance(tmpl, dict):
            _prune_pod_spec(tmpl.get("spec"))
            if isinstance(tmpl.get("metadata"), dict):
                tmpl["metadata"].pop("creationTimestamp", None)
    elif resource == "services" and isinstance(spec, dict):
        _drop_defaults(spec, _DEFAULTS_SVC_SPEC)
        if spec.get("sessionAffinity") == "None":
            spec.pop("sessionAffinity")
        if spec.get("externalTrafficPolicy") == "Cluster":
            spec.pop("externalTrafficPolicy")
    return _drop_empty(obj)


def _resource_version(body: Any) -> int | None:
    rv = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
    if rv in (None, ""):
        return None
    try:
        return int(rv)
    except (TypeError, ValueError):
        raise S.ApiError(400, f"metadata.resourceVersion: {rv!r} is not a resource version") from None


class Api:
    """The objects of one lab's store, as the REST API serves them."""

    def __init__(self, st: Store, lab_name: str):
        self.st = st
        self.lab_name = lab_name
        self._lab: labfile.Lab | None = None
        self._lab_mtime = 0.0

    @property
    def lab(self) -> labfile.Lab:
        p = names.lab_copy(self.lab_name)
        try:
            m = p.stat().st_mtime
        except OSError:
            m = self._lab_mtime
        if self._lab is None or m != self._lab_mtime:
            self._lab = labfile.parse_lab(p.read_text(), str(p))
            self._lab_mtime = m
        return self._lab

    # ----------------------------------------------------------------------- reading
    def key(self, r: Resource, namespace: str | None, name: str) -> str:
        return f"{PREFIX[r.name]}{name}" if not r.namespaced else f"{PREFIX[r.name]}{namespace}/{name}"

    def prefix(self, r: Resource, namespace: str | None) -> str:
        return PREFIX[r.name] + (f"{namespace}/" if r.namespaced and namespace else "")

    def view(self, r: Resource, value: Any, mod_revision: int, extra: dict | None = None) -> dict | None:
        """A stored value as the API shows it (kind, apiVersion, resourceVersion; nodes with
        their Ready condition from the node lease)."""
        if not isinstance(value, dict):
            return None
        obj = copy.deepcopy(value)
        if r.name == "endpointslices":
            obj = endpoint_slice(obj)
        if r.name == "nodes":
            leases, subnets, grace = extra if extra else self._node_extras()
            obj = nodes.node_view(obj, leases.get(obj["metadata"]["name"]),
                                  subnets.get(nodes.internal_ip(obj) or "") or (obj.get("spec") or {}).get("podCIDR"),
                                  time.time(), grace)
            info = obj.setdefault("status", {}).setdefault("nodeInfo", {})
            for k, v in node_info(self.lab_name, obj["metadata"]["name"]).items():
                info.setdefault(k, v)
            obj["status"].setdefault("capacity", dict(_CAPACITY))
            obj["status"].setdefault("allocatable", dict(_CAPACITY))
        obj["apiVersion"] = API_VERSION[r.name]
        obj["kind"] = KIND[r.name]
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(mod_revision)
        if r.namespaced:
            meta.setdefault("namespace", "default")
        if r.name == "deployments":
            meta.setdefault("generation", 1)
        return obj

    def _node_extras(self):
        leases = {i.key[len(store.NODE_LEASES):]: i.value for i in self.st.list(store.NODE_LEASES)}
        try:
            grace = self.lab.node_monitor_grace_period
        except (OSError, UsageError):
            grace = 10.0
        return leases, nodes.flannel_subnets(self.st), grace

    def list(self, r: Resource, namespace: str | None) -> tuple[list[dict], int]:
        items, rev = self.st.list_with_revision(self.prefix(r, namespace))
        extra = self._node_extras() if r.name == "nodes" else None
        out = []
        for i in items:
            o = self.view(r, i.value, i.mod_revision, extra)
            if o is not None:
                out.append(o)
        return out, rev

    def item(self, r: Resource, namespace: str | None, name: str) -> Item:
        it = self.st.get(self.key(r, namespace, name))
        if it is None or not isinstance(it.value, dict):
            raise S.not_found(r.name, name, r.group)
        return it

    def get(self, r: Resource, namespace: str | None, name: str) -> dict:
        it = self.item(r, namespace, name)
        return self.view(r, it.value, it.mod_revision)

    def _current(self, r: Resource, namespace: str | None, name: str) -> dict:
        it = self.st.get(self.key(r, namespace, name))
        return self.view(r, it.value, it.mod_revision) if it else None

    # ----------------------------------------------------------------------- writing
    def _check(self, r: Resource, obj: dict, namespace: str | None, name_hint: str | None = None) -> tuple[str, dict]:
        """The honoured-field check and namespace/name consistency; returns (name, obj)."""
        if r.name not in HONOURED and r.name != "namespaces":
            raise S.ApiError(405, f"the server does not allow this method on the requested resource "
                                  f"({r.name} are maintained by netlab itself)", "MethodNotAllowed")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise S.invalid(r.kind, name_hint or "", "metadata.name: required", r.group)
        name = meta.get("name") or ""
        if meta.get("generateName") and not name:
            raise S.invalid(r.kind, "", "metadata.generateName: not supported by netlab (give metadata.name)", r.group)
        if name_hint is not None and name and name != name_hint:
            raise S.ApiError(400, f"the name of the object ({name}) does not match the name on the URL ({name_hint})")
        if r.namespaced:
            ns = meta.get("namespace")
            if ns and ns != namespace:
                raise S.ApiError(400, f"the namespace of the provided object does not match the namespace "
                                      f"sent on the request")
            meta["namespace"] = namespace
        api, kind = HONOURED.get(r.name, ("v1", "Namespace"))
        if obj.get("apiVersion", api) != api or obj.get("kind", kind) != kind:
            raise S.ApiError(400, f"the object is {obj.get('apiVersion')}/{obj.get('kind')}, not {api}/{kind}")
        obj["apiVersion"], obj["kind"] = api, kind
        if r.name in HONOURED:
            try:
                manifests.check_fields(obj, manifests.HONOURED[(api, kind)])
            except UsageError as e:
                raise S.invalid(kind, name, str(e), r.group) from None
        return name, obj

    def _check_node(self, kind: str, name: str, node: str | None, path: str, group: str = "") -> None:
        try:
            pods.check_node(self.lab, node, path)
        except UsageError as e:
            raise S.invalid(kind, name, str(e), group) from None

    def create(self, r: Resource, namespace: str | None, body: Any) -> dict:
        obj = incoming(r.name, body)
        name, obj = self._check(r, obj, namespace)
        try:
            if r.name == "pods":
                pod = pods.validate_pod(obj)
                self._check_node("Pod", name, pod["spec"].get("nodeName"), "spec.nodeName")
                try:
                    pods.create_pod(self.st, obj)
                except pods.PodExists:
                    raise S.already_exists("pods", name) from None
            elif r.name == "services":
                if self.st.get(services.key(namespace, name)) is not None:
                    raise S.already_exists("services", name)
                try:
                    services.create(self.st, self.lab, obj)
                except services.FieldError as e:
                    if e.field == "metadata.name" and "already exists" in e.msg:
                        raise S.already_exists("services", name) from None
                    raise
            elif r.name == "deployments":
                dep = deployments.normalise(obj)
                self._check_node("Deployment", name, dep["spec"]["template"]["spec"].get("nodeName"),
                                 "spec.template.spec.nodeName", "apps")
                deployments.check_replicas(self.lab, dep["spec"]["replicas"])
                if not self.st.create(deployments.key(namespace, name), new_deployment(dep)):
                    raise S.already_exists("deployments", name, "apps")
            elif r.name == "namespaces":
                self._create_namespace(name)
        except UsageError as e:
            raise S.invalid(r.kind, name, str(e), r.group) from None
        except NotFound as e:
            raise S.ApiError(404, str(e)) from None
        except NetlabError as e:
            raise S.ApiError(500, str(e)) from None
        return self.get(r, namespace, name)

    def update(self, r: Resource, namespace: str | None, name: str, body: Any) -> dict:
        """PUT: the whole object; a stale metadata.resourceVersion is a 409 Conflict."""
        want_rv = _resource_version(body)
        it = self.item(r, namespace, name)
        if want_rv is not None and want_rv != it.mod_revision:
            raise S.conflict(r.name, name, r.group)
        obj = incoming(r.name, body)
        meta = obj.get("metadata")
        if isinstance(meta, dict) and meta.get("ownerReferences") == it.value.get("metadata", {}).get("ownerReferences"):
            meta.pop("ownerReferences", None)  # set by the deployment controller: kept as it is
        name, obj = self._check(r, obj, namespace, name)
        try:
            if r.name == "pods":
                self._update_pod(it, obj)
            elif r.name == "services":
                self._update_service(it, obj)
            elif r.name == "deployments":
                self._update_deployment(it, obj)
            elif r.name == "namespaces":
                pass  # nothing of a namespace can change here
        except UsageError as e:
            raise S.invalid(r.kind, name, str(e), r.group) from None
        except NetlabError as e:
            raise S.ApiError(500, str(e)) from None
        return self.get(r, namespace, name)

    def _update_pod(self, it: Item, obj: dict) -> None:
        cur = it.value
        want = pods.validate_pod(obj)
        spec = copy.deepcopy(want["spec"])
        if not spec.get("nodeName"):
            spec["nodeName"] = cur["spec"].get("nodeName")
        if {k: v for k, v in spec.items() if v is not None} != {k: v for k, v in cur["spec"].items() if v is not None}:
            raise UsageError("spec: Forbidden: pod updates may not change fields other than metadata.labels "
                             "and metadata.annotations (netlab: delete the pod and create it again)")
        new = copy.deepcopy(cur)
        for f in ("labels", "annotations"):
            new["metadata"].pop(f, None)
            if want["metadata"].get(f):
                new["metadata"][f] = want["metadata"][f]
        if new != cur and not self.st.update(it.key, new, it.mod_revision):
            raise S.conflict("pods", cur["metadata"]["name"])

    def _update_service(self, it: Item, obj: dict) -> None:
        cur = it.value
        ns, name = cur["metadata"]["namespace"], cur["metadata"]["name"]
        desired = services.normalise(obj, self.lab)
        same = manifests._svc_same(cur, desired) and \
            (cur["metadata"].get("annotations") or {}) == (desired["metadata"].get("annotations") or {})
        if same:
            return
        want = copy.deepcopy(desired)
        want["spec"] = manifests._svc_fill(desired, cur)
        fixed = want["spec"].get("clusterIP")
        if fixed and fixed != cur["spec"].get("clusterIP"):
            raise UsageError(f"spec.clusterIP: field is immutable (is {cur['spec'].get('clusterIP')})")
        if services.reserved_ip(self.lab) == cur["spec"].get("clusterIP"):
            raise UsageError("metadata.name: the kubernetes service is maintained by the API server")
        # Services change by replacement (as `netlab apply` does), keeping IP and node ports.
        # The allocations go with it (the create below takes the same ones again).
        ok, _ = self.st.delete_all_if(it.key, it.mod_revision, services.allocation_keys(cur))
        if not ok:
            raise S.conflict("services", name)
        want["spec"].pop("clusterIPs", None)
        try:
            services.create(self.st, self.lab, want)
        except UsageError:
            services.create(self.st, self.lab, _as_created(cur))  # put the old one back
            raise

    def _update_deployment(self, it: Item, obj: dict) -> None:
        cur = it.value
        desired = deployments.normalise(obj)
        self._check_node("Deployment", cur["metadata"]["name"],
                         desired["spec"]["template"]["spec"].get("nodeName"), "spec.template.spec.nodeName", "apps")
        deployments.check_replicas(self.lab, desired["spec"]["replicas"])
        if deployments.same_desired(cur, desired):
            return
        spec = deployments._spec_for(desired, cur)
        if spec["selector"] != cur["spec"]["selector"]:
            raise UsageError(f"spec.selector: Invalid value: field is immutable "
                             f"(is {deployments.selector_string(cur)})")
        new = copy.deepcopy(cur)
        new["spec"] = spec
        for f in ("labels", "annotations"):
            new["metadata"].pop(f, None)
            if desired["metadata"].get(f):
                new["metadata"][f] = desired["metadata"][f]
        if new["spec"] != cur["spec"]:
            new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        if not self.st.update(it.key, new, it.mod_revision):
            raise S.conflict("deployments", cur["metadata"]["name"], "apps")

    def delete(self, r: Resource, namespace: str | None, name: str) -> dict:
        it = self.item(r, namespace, name)
        obj = self.view(r, it.value, it.mod_revision)
        if r.name == "pods":
            pods.delete_pod(self.st, namespace, name)
        elif r.name == "services":
            if it.value.get("spec", {}).get("clusterIP") == services.reserved_ip(self.lab):
                raise S.ApiError(405, "the kubernetes service is maintained by the API server", "MethodNotAllowed")
            try:
                services.delete(self.st, namespace, name)
            except NotFound:
                raise S.not_found("services", name) from None
        elif r.name == "deployments":
            deployments.delete(self.st, namespace, name)
        elif r.name == "namespaces":
            if name in SYSTEM_NAMESPACES:
                raise S.ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                                 "Forbidden", name=name, kind="namespaces")
            for kind in ("deployments", "services", "pods"):
                for o in self.st.list(f"{PREFIX[kind]}{name}/"):
                    if kind == "services":
                        services.delete(self.st, name, o.value["metadata"]["name"])
                    elif kind == "deployments":
                        deployments.delete(self.st, name, o.value["metadata"]["name"])
                    else:
                        pods.delete_pod(self.st, name, o.value["metadata"]["name"])
            self.st.delete(it.key)
        else:
            raise S.ApiError(405, f"the server does not allow this method on the requested resource "
                                  f"({r.name} are maintained by netlab itself)", "MethodNotAllowed")
        return obj

    # ----------------------------------------------------------------------- scale
    def get_scale(self, namespace: str, name: str) -> dict:
        it = self.item(_DEP, namespace, name)
        return _scale(it.value, it.mod_revision)

    def set_scale(self, namespace: str, name: str, body: Any) -> dict:
        it = self.item(_DEP, namespace, name)
        want_rv = _resource_version(body)
        if want_rv is not None and want_rv != it.mod_revision:
            raise S.conflict("deployments", name, "apps")
        replicas = ((body or {}).get("spec") or {}).get("replicas") if isinstance(body, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise S.ApiError(422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                  f'{replicas!r}: must be greater than or equal to 0', "Invalid",
                             name=name, kind="Scale", group="autoscaling",
                             causes=[{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                      "message": "must be greater than or equal to 0"}])
        try:
            deployments.check_replicas(self.lab, replicas)
        except UsageError as e:
            raise S.invalid("Scale", name, str(e), "autoscaling") from None
        try:
            deployments.scale(self.st, namespace, name, replicas)
        except NotFound:
            raise S.not_found("deployments", name, "apps") from None
        return self.get_scale(namespace, name)

    # ----------------------------------------------------------------------- namespaces
    def _create_namespace(self, name: str) -> None:
        try:
            meta.check_name(name, "metadata.name")
        except UsageError as e:
            raise S.invalid("Namespace", name, str(e)) from None
        if not self.st.create(NAMESPACES + name, namespace_object(name)):
            raise S.already_exists("namespaces", name)

    def bootstrap(self, master_ip: str, port: int) -> None:
        """What kube-apiserver keeps in place: the system namespaces and the `kubernetes`
        service in `default` (the service range's first address, port 443 named https,
        its endpoints the API server itself)."""
        for ns in SYSTEM_NAMESPACES:
            self.st.create(NAMESPACES + ns, namespace_object(ns))
        lab = self.lab
        ip = services.reserved_ip(lab)
        svc = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"},
                            "uid": _uid("kubernetes-service", lab.name), "creationTimestamp": store.now_rfc3339()},
               "spec": {"type": "ClusterIP", "ports": [{"name": "https", "protocol": "TCP", "port": 443,
                                                        "targetPort": port}],
                        "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None"},
               "status": {"loadBalancer": {}}}
        owner = {"service": "default/kubernetes", "uid": svc["metadata"]["uid"]}
        ep = {"apiVersion": "v1", "kind": "Endpoints",
              "metadata": {"name": "kubernetes", "namespace": "default",
                           "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                           "creationTimestamp": store.now_rfc3339()},
              "subsets": [{"addresses": [{"ip": master_ip}],
                           "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
        skey = services.key("default", "kubernetes")
        if self.st.get(skey) is None:
            self.st.create_all({skey: svc, services.ip_key(ip): owner, services.endpoints_key("default", "kubernetes"): ep})
        cur = self.st.get(services.endpoints_key("default", "kubernetes"))
        if cur is None:
            self.st.create(services.endpoints_key("default", "kubernetes"), ep)
        elif cur.value.get("subsets") != ep["subsets"]:
            new = dict(cur.value, subsets=ep["subsets"])
            self.st.update(cur.key, new, cur.mod_revision)


_DEP = Resource("deployments", "deployment", "Deployment", group="apps")


def _uid(*parts: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "netlab:" + "/".join(parts)))


def node_info(lab: str, node: str) -> dict:
    """NodeSystemInfo as a kubelet reports it (client libraries require every field)."""
    u = platform.uname()
    return {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine),
            "bootID": _uid("boot", lab, node), "containerRuntimeVersion": "netlab://0.1",
            "kernelVersion": u.release, "kubeProxyVersion": "netlab", "kubeletVersion": "netlab",
            "machineID": _uid("machine", lab, node).replace("-", ""), "operatingSystem": "linux",
            "osImage": _OS_IMAGE, "systemUUID": _uid("system", lab, node)}


def _os_image() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
    except OSError:
        return "Linux"


_OS_IMAGE = _os_image()
# Every node shares the host's CPUs and memory.
_CAPACITY = {"cpu": str(os.cpu_count() or 1),
             "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 1024}Ki", "pods": "110"}


def endpoint_slice(ep: dict) -> dict:
    """The EndpointSlice the endpoint-slice mirroring controller would make of an Endpoints
    (one per service; `kubectl describe svc` reads these)."""
    m = ep.get("metadata") or {}
    eps, ports = [], []
    for s in ep.get("subsets") or []:
        for a in s.get("addresses") or []:
            e = {"addresses": [a["ip"]], "conditions": {"ready": True, "serving": True, "terminating": False}}
            if a.get("nodeName"):
                e["nodeName"] = a["nodeName"]
            if a.get("targetRef"):
                e["targetRef"] = a["targetRef"]
            eps.append(e)
        for p in s.get("ports") or []:
            if p not in ports:
                ports.append(p)
    return {"metadata": {"name": m.get("name"), "namespace": m.get("namespace", "default"),
                         "creationTimestamp": m.get("creationTimestamp"),
                         "uid": _uid("endpointslice", m.get("namespace", "default"), m.get("name", "")),
                         "labels": {"kubernetes.io/service-name": m.get("name"),
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{k: v for k, v in (("name", p.get("name", "")), ("port", p.get("port")),
                                         ("protocol", p.get("protocol", "TCP")))} for p in ports]}


def namespace_object(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": _uid("namespace", name), "creationTimestamp": store.now_rfc3339(),
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def new_deployment(dep: dict) -> dict:
    """The stored form of a created Deployment (as netlab.deployments.apply writes it)."""
    import uuid

    return {"apiVersion": deployments.API_VERSION, "kind": deployments.KIND,
            "metadata": {**dep["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": store.now_rfc3339(),
                         "generation": 1},
            "spec": deployments._spec_for(dep, None),
            "status": {"observedGeneration": 0, "replicas": 0, "updatedReplicas": 0, "readyReplicas": 0,
                       "availableReplicas": 0}}


def _scale(dep: dict, rev: int) -> dict:
    m = dep["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m.get("uid"),
                         "resourceVersion": str(rev), "creationTimestamp": m.get("creationTimestamp")},
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": (dep.get("status") or {}).get("replicas", 0),
                       "selector": deployments.selector_string(dep)}}


def _as_created(cur: dict) -> dict:
    old = copy.deepcopy(cur)
    old["spec"].pop("clusterIPs", None)
    if services.lb_ip(cur) and old["spec"].get("type") == "LoadBalancer":
        old["spec"]["loadBalancerIP"] = services.lb_ip(cur)
    for f in ("uid", "creationTimestamp", "resourceVersion"):
        old["metadata"].pop(f, None)
    return old
