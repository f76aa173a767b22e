"""Kubernetes manifests: parse multi-document YAML, check the honoured fields, apply, delete.

Owns `netlab apply -f` and `netlab delete -f`. The subset of Kubernetes fields netlab honours
is the one table `HONOURED` below (docs/manifests.md prints it for people); any other field
is an error naming its path, never silently dropped. Every document of every file is
checked, against the running lab too, before the first write. Objects are then written by
the modules that own them (netlab/api/deployments.py, services.py, pods.py);
applying a file twice is a no-op because normalised specs are compared before writing.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable


from netlab import store, yamlin
from netlab.api import deployments, pods, services
from netlab.api.meta import check_name, matches, pod_gone, pod_ready
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.store import Store

# --------------------------------------------------------------------------- the honoured subset
# A field spec is one of the type names below, a dict of honoured sub-fields, a one-element
# list (a list of that spec), or ("map", spec) for free-form keys (labels, selectors).
STR, INT, INT_OR_STR = "string", "integer", "integer or string"


def _map(spec: Any) -> tuple:
    return ("map", spec)


METADATA = {"name": STR, "namespace": STR, "labels": _map(STR), "annotations": _map(STR)}
SVC_METADATA = {"name": STR, "namespace": STR, "labels": _map(STR), "annotations": _map(STR)}
CONTAINER = {
    "name": STR,
    "image": STR,  # netlab/hello (the built-in HTTP app) or anything with command:
    "command": [STR],
    "args": [STR],
    "env": [{"name": STR, "value": STR}],
    "ports": [{"name": STR, "containerPort": INT, "protocol": STR}],
}
POD_SPEC = {"containers": [CONTAINER], "nodeName": STR, "restartPolicy": STR,  # Always only
            "dnsPolicy": STR}  # ClusterFirst or Default
HONOURED: dict[tuple[str, str], dict] = {
    ("apps/v1", "Deployment"): {
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": {
            "replicas": INT,
            "selector": {"matchLabels": _map(STR)},
            "template": {"metadata": {"labels": _map(STR), "annotations": _map(STR)},
                         "spec": POD_SPEC},
        },
    },
    ("v1", "Service"): {"apiVersion": STR, "kind": STR, "metadata": SVC_METADATA,
                        "spec": services.SPEC},  # the one Service field table
    ("v1", "Pod"): {"apiVersion": STR, "kind": STR, "metadata": METADATA, "spec": POD_SPEC},
}
KIND_WORD = {"Deployment": "deployment", "Service": "service", "Pod": "pod"}
# What `kubectl apply` prints for each kind.
RESOURCE = {"Deployment": "deployment.apps", "Service": "service", "Pod": "pod"}
SUPPORTED = "Deployment apps/v1, Service v1, Pod v1"


def honoured_paths(spec: Any = None, prefix: str = "") -> list[tuple[str, str]]:
    """Every honoured field path with its type, for docs and tests."""
    out: list[tuple[str, str]] = []
    if spec is None:
        for (api, kind), s in HONOURED.items():
            out += [(f"{kind} ({api}): {p}", t) for p, t in honoured_paths(s)]
        return out
    for k, v in spec.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out += honoured_paths(v, path)
        elif isinstance(v, list):
            if isinstance(v[0], dict):
                out += honoured_paths(v[0], path + "[]")
            else:
                out.append((path + "[]", v[0]))
        elif isinstance(v, tuple):
            out.append((path + ".*", v[1]))
        else:
            out.append((path, v))
    return out


def _type_ok(value: Any, t: str) -> bool:
    if t == STR:
        return isinstance(value, str)
    if t == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if t == INT_OR_STR:
        return isinstance(value, (str, int)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    raise AssertionError(t)


def check_fields(value: Any, spec: Any, path: str = "") -> None:
    """Raise UsageError(path: ...) for the first field outside the honoured subset."""
    here = path or "(top level)"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise UsageError(f"{here}: expected a mapping")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in spec:
                raise UsageError(f"{sub}: not supported by netlab "
                                 f"(supported here: {', '.join(spec)})")
            if v is not None:  # YAML `key:` with nothing after it means "not set"
                check_fields(v, spec[k], sub)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise UsageError(f"{here}: expected a list")
        for i, item in enumerate(value):
            check_fields(item, spec[0], f"{path}[{i}]")
    elif isinstance(spec, tuple):
        if not isinstance(value, dict):
            raise UsageError(f"{here}: expected a mapping")
        for k, v in value.items():
            # Label values that YAML reads as numbers or booleans must be quoted, as in Kubernetes.
            if not _type_ok(v, spec[1]):
                raise UsageError(f"{path}.{k}: expected a {spec[1]} (quote {v!r})")
    elif not _type_ok(value, spec):
        raise UsageError(f"{here}: expected {'an' if spec[0] in 'aeiou' else 'a'} {spec}, got {value!r}")


# --------------------------------------------------------------------------- parsing
@dataclass
class Doc:
    """One object of a manifest: where it came from, what it is, and its normalised form."""

    source: str  # "file.yaml: document 2"
    api: str
    kind: str
    name: str
    namespace: str
    raw: dict
    obj: dict | None = None  # normalised by the owning module (apply only)

    @property
    def label(self) -> str:
        return f"{KIND_WORD[self.kind]} {self.name}"

    @property
    def ref(self) -> str:
        return f"{RESOURCE[self.kind]}/{self.name}"

    def err(self, msg: str) -> UsageError:
        return UsageError(f"{self.source}: {self.label}: {msg}")


def read_text(path: str) -> str:
    return yamlin.read_file(path)  # bounded, UTF-8 only


def parse(text: str, source: str, namespace: str | None = None) -> list[Doc]:
    """Split a multi-document YAML text into Docs; checks kind, name, namespace and fields."""
    raw_docs = yamlin.load_all(text, source)
    docs = []
    for i, raw in enumerate(raw_docs, 1):
        if raw is None:  # an empty document between two `---`
            continue
        docs.append(parse_doc(raw, f"{source}: document {i}", namespace))
    return docs


def parse_doc(raw: Any, source: str, namespace: str | None = None, check: bool = True) -> Doc:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping (a Kubernetes object)")
    api, kind = raw.get("apiVersion"), raw.get("kind")
    if not api or not kind:
        raise UsageError(f"{source}: apiVersion and kind are required ({SUPPORTED})")
    if not isinstance(api, str) or not isinstance(kind, str) or (api, kind) not in HONOURED:
        raise UsageError(f"{source}: apiVersion/kind {yamlin.short(api)}/{yamlin.short(kind)} "
                         f"is not supported ({SUPPORTED})")
    meta = raw.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise UsageError(f"{source}: {KIND_WORD[kind]}: metadata.name: required")
    name = meta["name"]
    if check:  # before the lab is opened: a bad name is bad input wherever it goes
        try:
            check_name(name, "metadata.name")
        except UsageError as e:
            raise UsageError(f"{source}: {KIND_WORD[kind]}: {e}") from None
    name = str(name)
    doc_ns = meta.get("namespace")
    if namespace and doc_ns and doc_ns != namespace:
        raise UsageError(f"{source}: {KIND_WORD[kind]} {name}: metadata.namespace: '{doc_ns}' "
                         f"does not match -n {namespace}")
    ns = str(doc_ns or namespace or "default")
    doc = Doc(source, api, kind, name, ns, raw)
    if check:
        try:
            check_fields(raw, HONOURED[(api, kind)])
        except UsageError as e:
            raise doc.err(str(e)) from None
    return doc


def load(files: list[str], namespace: str | None = None, check: bool = True) -> list[Doc]:
    if not files:
        raise UsageError("-f: at least one manifest file is required")
    docs: list[Doc] = []
    for f in files:
        source = "<stdin>" if f == "-" else f
        text = read_text(f)
        if check:
            docs += parse(text, source, namespace)
        else:
            docs += _parse_lenient(text, source, namespace)
    seen: dict[tuple, str] = {}
    for d in docs:
        k = (d.kind, d.namespace, d.name)
        if k in seen:
            raise UsageError(f"{d.source}: {d.label} is also defined in {seen[k]}")
        seen[k] = d.source
    if not docs:
        raise UsageError(f"-f {', '.join(files)}: no objects found")
    return docs


def _parse_lenient(text: str, source: str, namespace: str | None) -> list[Doc]:
    """For delete -f: only kind and name matter (as kubectl delete -f)."""
    raw_docs = yamlin.load_all(text, source)
    return [parse_doc(r, f"{source}: document {i}", namespace, check=False)
            for i, r in enumerate(raw_docs, 1) if r is not None]


def docs_from_objects(objects: list[dict], source: str) -> list[Doc]:
    """The lab file's `workloads:` list, as documents."""
    docs = [parse_doc(o, f"{source}[{i}]") for i, o in enumerate(objects)]
    seen = set()
    for d in docs:
        k = (d.kind, d.namespace, d.name)
        if k in seen:
            raise UsageError(f"{d.source}: {d.label} is defined twice")
        seen.add(k)
    return docs


# --------------------------------------------------------------------------- per kind
@dataclass
class Kind:
    """How one kind is validated, compared, written and deleted (by the module owning it)."""

    normalise: Callable[[Doc, Any], dict]  # (doc, lab) -> normalised object; UsageError
    current: Callable[[Store, Doc], dict | None]
    same: Callable[[dict, dict], bool]  # (current, desired)
    check_against: Callable[[Store, Any, Doc, dict | None], None]  # refusals before any write
    write: Callable[[Store, Any, Doc, dict | None], str]  # -> created|configured|unchanged
    delete: Callable[[Store, Any, Doc], list[str] | None]  # pods to wait for; None: not found


def _with_ns(doc: Doc) -> dict:
    raw = copy.deepcopy(doc.raw)
    raw.setdefault("metadata", {})["namespace"] = doc.namespace
    return raw


# Deployment ---------------------------------------------------------------------------
def _dep_normalise(doc: Doc, lab) -> dict:
    return deployments.normalise(_with_ns(doc))


def _dep_current(st: Store, doc: Doc) -> dict | None:
    item = deployments.get(st, doc.namespace, doc.name)
    return item.value if item else None


def _dep_check(st: Store, lab, doc: Doc, cur: dict | None) -> None:
    if cur and cur["spec"]["selector"] != doc.obj["spec"]["selector"]:
        raise doc.err(f"spec.selector is immutable (is {deployments.selector_string(cur)}); "
                      "delete the deployment first")
    _check_node(lab, doc, doc.obj["spec"]["template"]["spec"].get("nodeName"), "spec.template.spec.nodeName")
    try:
        deployments.check_replicas(lab, doc.obj["spec"]["replicas"])
    except UsageError as e:
        raise doc.err(str(e)) from None


def _check_node(lab, doc: Doc, node: str | None, path: str) -> None:
    try:
        pods.check_node(lab, node, path)
    except UsageError as e:
        raise doc.err(str(e)) from None


def _dep_write(st: Store, lab, doc: Doc, cur: dict | None) -> str:
    outcome, _ = deployments.apply(st, doc.obj)
    return outcome


def _dep_delete(st: Store, lab, doc: Doc) -> list[str] | None:
    return deployments.delete(st, doc.namespace, doc.name)


# Service ------------------------------------------------------------------------------
def _svc_normalise(doc: Doc, lab) -> dict:
    return services.normalise(_with_ns(doc), lab)


def _svc_current(st: Store, doc: Doc) -> dict | None:
    item = st.get(services.key(doc.namespace, doc.name))
    return item.value if item else None


def _svc_fill(desired: dict, cur: dict) -> dict:
    """The desired spec with what was allocated filled in where the manifest is silent."""
    spec = copy.deepcopy(desired["spec"])
    cspec = cur["spec"]
    if not spec.get("clusterIP"):
        spec["clusterIP"] = cspec.get("clusterIP")
    if spec.get("type") == "LoadBalancer" and cspec.get("type") == "LoadBalancer":
        ip = services.lb_ip(cur)
        if ip and not spec.get("loadBalancerIP"):
            spec["loadBalancerIP"] = ip  # keep the address the service already has
        if cspec.get("healthCheckNodePort") and spec.get("externalTrafficPolicy") == "Local" \
                and not spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = cspec["healthCheckNodePort"]
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        cports = {(p.get("port"), p.get("protocol")): p for p in cspec.get("ports", [])}
        for p in spec.get("ports", []):
            c = cports.get((p.get("port"), p.get("protocol")))
            if c and not p.get("nodePort") and c.get("nodePort"):
                p["nodePort"] = c["nodePort"]
    return spec


_SVC_COMPARED = ("type", "clusterIP", "selector", "ports", "sessionAffinity", "externalTrafficPolicy",
                 "internalTrafficPolicy", "loadBalancerSourceRanges", "healthCheckNodePort")


def _svc_same(cur: dict, desired: dict) -> bool:
    want = _svc_fill(desired, cur)
    return ({k: cur["spec"].get(k) for k in _SVC_COMPARED} == {k: want.get(k) for k in _SVC_COMPARED}
            and (cur["metadata"].get("labels") or {}) == (desired["metadata"].get("labels") or {}))


def _svc_check(st: Store, lab, doc: Doc, cur: dict | None) -> None:
    """A fixed clusterIP or nodePort held by another service is refused before any write."""
    if cur is not None and _svc_same(cur, doc.obj):
        return
    mine = f"{doc.namespace}/{doc.name}"
    spec = doc.obj["spec"]
    wanted = []
    if spec.get("clusterIP"):
        wanted.append(("spec.clusterIP", services.ip_key(spec["clusterIP"]), spec["clusterIP"]))
    for i, p in enumerate(spec["ports"]):
        if p.get("nodePort"):
            wanted.append((f"spec.ports[{i}].nodePort", services.port_key(p["nodePort"]), p["nodePort"]))
    if spec.get("loadBalancerIP") and not (cur and services.lb_ip(cur) == spec["loadBalancerIP"]):
        wanted.append(("spec.loadBalancerIP", services.lb_key(spec["loadBalancerIP"]), spec["loadBalancerIP"]))
    for fld, k, val in wanted:
        item = st.get(k)
        holder = item.value.get("service") if item and isinstance(item.value, dict) else None
        if item is not None and holder != mine:
            raise doc.err(f"{fld}: {val} is already allocated to {holder or 'another service'}")


def _svc_write(st: Store, lab, doc: Doc, cur: dict | None) -> str:
    if cur is not None:
        # netlab's services cannot change in place: replace, keeping the allocated IP and ports.
        want = copy.deepcopy(doc.obj)
        want["spec"] = _svc_fill(doc.obj, cur)
        services.delete(st, doc.namespace, doc.name)
        services.create(st, lab, want)
        return "configured"
    services.create(st, lab, doc.obj)
    return "created"


def _svc_delete(st: Store, lab, doc: Doc) -> list[str] | None:
    try:
        services.delete(st, doc.namespace, doc.name)
        return []
    except NotFound:
        return None


# Pod ----------------------------------------------------------------------------------
def _pod_normalise(doc: Doc, lab) -> dict:
    try:
        return pods.validate_pod(_with_ns(doc))
    except UsageError as e:
        raise doc.err(str(e)) from None


def _pod_current(st: Store, doc: Doc) -> dict | None:
    return pods.get_pod(st, doc.namespace, doc.name)


def _pod_same(cur: dict, desired: dict) -> bool:
    spec = copy.deepcopy(desired["spec"])
    if not spec.get("nodeName"):  # the scheduler bound it
        spec["nodeName"] = cur["spec"].get("nodeName")
    cspec = {k: cur["spec"].get(k) for k in spec}
    return cspec == spec and (cur["metadata"].get("labels") or {}) == (desired["metadata"].get("labels") or {})


def _pod_check(st: Store, lab, doc: Doc, cur: dict | None) -> None:
    if cur is not None and not _pod_same(cur, doc.obj):
        raise doc.err("exists with a different spec; a pod's spec cannot change "
                      "(delete it first, or use a Deployment)")
    _check_node(lab, doc, doc.obj["spec"].get("nodeName"), "spec.nodeName")


def _pod_write(st: Store, lab, doc: Doc, cur: dict | None) -> str:
    if cur is not None:
        return "unchanged"
    pods.create_pod(st, doc.obj)
    return "created"


def _pod_delete(st: Store, lab, doc: Doc) -> list[str] | None:
    return [doc.name] if pods.delete_pod(st, doc.namespace, doc.name) is not None else None


KINDS: dict[str, Kind] = {
    "Deployment": Kind(_dep_normalise, _dep_current, deployments.same_desired, _dep_check,
                       _dep_write, _dep_delete),
    "Service": Kind(_svc_normalise, _svc_current, _svc_same, _svc_check, _svc_write, _svc_delete),
    "Pod": Kind(_pod_normalise, _pod_current, _pod_same, _pod_check, _pod_write, _pod_delete),
}


def validate(docs: list[Doc], lab) -> None:
    """Normalise every document (pure: no store needed)."""
    for d in docs:
        try:
            d.obj = KINDS[d.kind].normalise(d, lab)
        except UsageError as e:
            msg = str(e)
            raise (UsageError(msg) if msg.startswith(d.source) else d.err(msg)) from None


# --------------------------------------------------------------------------- apply / delete
@dataclass
class Applied:
    doc: Doc
    outcome: str  # created | configured | unchanged

    @property
    def line(self) -> str:
        return f"{self.doc.ref} {self.outcome}"


@dataclass
class ApplyResult:
    applied: list[Applied] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(a.outcome != "unchanged" for a in self.applied)


def apply(st: Store, lab, docs: list[Doc], report: Callable[[str], None] | None = None) -> ApplyResult:
    """Validate everything, check it against the store, then write; idempotent."""
    validate(docs, lab)
    current = {id(d): KINDS[d.kind].current(st, d) for d in docs}
    for d in docs:
        KINDS[d.kind].check_against(st, lab, d, current[id(d)])
    res = ApplyResult()
    for d in docs:
        cur = current[id(d)]
        k = KINDS[d.kind]
        outcome = "unchanged" if cur is not None and k.same(cur, d.obj) else k.write(st, lab, d, cur)
        a = Applied(d, outcome)
        res.applied.append(a)
        if report:
            report(a.line)
    return res


@dataclass
class Deleted:
    doc: Doc
    pods: list[str] | None  # the pods that go with it; None: there was no such object

    @property
    def found(self) -> bool:
        return self.pods is not None

    @property
    def line(self) -> str:
        # kubectl's words: `deployment.apps "my-nginx8" deleted`, `services "x" not found`
        if self.found:
            return f'{RESOURCE[self.doc.kind]} "{self.doc.name}" deleted'
        return f'{RESOURCE[self.doc.kind]} "{self.doc.name}" not found'


def delete(st: Store, lab, docs: list[Doc], report: Callable[[str], None] | None = None) -> list[Deleted]:
    """Delete what the documents name (services first, so no traffic goes to dying pods)."""
    order = {"Service": 0, "Deployment": 1, "Pod": 2}
    out = []
    for d in sorted(docs, key=lambda d: order[d.kind]):
        r = Deleted(d, KINDS[d.kind].delete(st, lab, d))
        out.append(r)
        if report and r.found:
            report(r.line)
    return out


def wait_deleted(st: Store, lab, deleted: list[Deleted], timeout: float = 60.0) -> None:
    """Until the pods that went with the deleted objects are gone from the store and every
    proxy has dropped the deleted services' rules."""
    by_ns: dict[str, list[str]] = {}
    for r in deleted:
        if r.pods:
            by_ns.setdefault(r.doc.namespace, []).extend(r.pods)
    deadline = time.monotonic() + timeout
    for ns, names_ in by_ns.items():
        deployments.wait_pods_gone(st, ns, names_, max(0.1, deadline - time.monotonic()))
    if any(r.found and r.doc.kind == "Service" for r in deleted):
        services.wait_proxies(st, lab, st.revision(), max(0.1, deadline - time.monotonic()))


# --------------------------------------------------------------------------- waiting
def wait_ready(st: Store, lab, docs: list[Doc], timeout: float = 60.0) -> None:
    """Until deployments are rolled out, pods run, the endpoints of the services concerned
    (applied ones, and those selecting the applied pods) list exactly the ready pods, and
    every worker's proxy has written rules at least that recent (what `netlab up` promises)."""
    deadline = time.monotonic() + timeout
    left = lambda: max(0.1, deadline - time.monotonic())  # noqa: E731
    labels: dict[str, list[dict]] = {}
    for d in docs:
        if d.kind == "Deployment":
            dep = deployments.wait_rolled_out(st, d.namespace, d.name, left())
            labels.setdefault(d.namespace, []).append(dep["spec"]["template"]["metadata"].get("labels") or {})
        elif d.kind == "Pod":
            pod = pods.wait_running(st, d.namespace, d.name, left())
            labels.setdefault(d.namespace, []).append(pod["metadata"].get("labels") or {})
    svcs = {(d.namespace, d.name) for d in docs if d.kind == "Service"}
    svcs |= services_selecting(st, labels)
    wait_services(st, lab, svcs, left())


def wait_deployment(st: Store, lab, namespace: str, name: str, timeout: float = 60.0) -> None:
    """After a scale: the pods, then the endpoints and proxies of the services selecting them."""
    deadline = time.monotonic() + timeout
    dep = deployments.wait_rolled_out(st, namespace, name, timeout)
    tl = dep["spec"]["template"]["metadata"].get("labels") or {}
    wait_services(st, lab, services_selecting(st, {namespace: [tl]}),
                  max(0.1, deadline - time.monotonic()))


def services_selecting(st: Store, labels: dict[str, list[dict]]) -> set[tuple[str, str]]:
    out = set()
    for ns, label_sets in labels.items():
        for item in st.list(f"{store.SERVICES}{ns}/"):
            sel = (item.value.get("spec") or {}).get("selector") or {}
            if sel and any(matches(sel, lb) for lb in label_sets):
                out.add((ns, item.value["metadata"]["name"]))
    return out


def wait_services(st: Store, lab, svcs: set[tuple[str, str]], timeout: float) -> None:
    if not svcs:
        return
    deadline = time.monotonic() + timeout
    for ns, name in sorted(svcs):
        wait_endpoints(st, ns, name, max(0.1, deadline - time.monotonic()))
    services.wait_proxies(st, lab, st.revision(), max(0.1, deadline - time.monotonic()))


def wait_endpoints(st: Store, namespace: str, name: str, timeout: float) -> None:
    """The service's Endpoints list exactly its ready, selected pods."""
    svc = st.get(f"{store.SERVICES}{namespace}/{name}")
    if svc is None:
        return
    selector = svc.value["spec"].get("selector") or {}
    if not selector:
        return  # endpoints without a selector are the user's
    deadline = time.monotonic() + timeout
    while True:
        want = {p["status"]["podIP"] for p in pods.list_pods(st, namespace)
                if matches(selector, p["metadata"].get("labels") or {})
                and pod_ready(p) and not pod_gone(p)}
        ep = st.get(f"{store.ENDPOINTS}{namespace}/{name}")
        have = {a["ip"] for s in ((ep.value.get("subsets") or []) if ep else [])
                for a in s.get("addresses") or []}
        if have == want and ep is not None:
            return
        if time.monotonic() >= deadline:
            raise NetlabError(f"service {name}: endpoints {sorted(have)} do not yet list the ready "
                              f"pods {sorted(want)} after {timeout:.0f}s")
        time.sleep(0.05)


def workload_docs(lab) -> list[Doc]:
    """The lab file's `workloads:`, parsed and validated (no store needed): UsageError on bad input."""
    if not lab.workloads:
        return []
    docs = docs_from_objects(lab.workloads, "workloads")
    validate(docs, lab)
    for d in docs:  # the checks that need no store: a pod on the master, absurd replicas
        if d.kind in ("Pod", "Deployment"):
            KINDS[d.kind].check_against(None, lab, d, None)
    return docs
