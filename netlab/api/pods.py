"""Pods (v1): the API server's side of a Pod object.

Owns validation and defaults, create (compare-and-swap) / delete / list / wait under
/registry/pods/<ns>/<name>, what a container runs (`container_argv`), and kubectl's STATUS
word for a pod. Where a pod runs on its node (its run directory) is netlab.plan.podrecord;
the kubelet role (netlab/agent/kubelet) does the kernel work.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from netlab import names, store
from netlab.api.meta import ENV_NAME, check_labels, check_name, is_port_name, pod_ready
from netlab.errors import NetlabError, UsageError
from netlab.plan import images
from netlab.store import Store

HELLO_IMAGE = "netlab/hello"  # the built-in HTTP app (netlab/native/hello.c)
CONTAINER_FIELDS = ("name", "image", "command", "args", "env", "ports")
SPEC_FIELDS = ("containers", "nodeName", "restartPolicy", "dnsPolicy")
DNS_POLICIES = ("ClusterFirst", "Default")  # the kubelet's resolv.conf: cluster DNS, or the node's
META_FIELDS = ("name", "namespace", "labels", "annotations", "uid", "creationTimestamp",
               "ownerReferences")


class PodExists(NetlabError):
    pass


def key(namespace: str, name: str) -> str:
    return f"{store.PODS}{namespace}/{name}"


# --------------------------------------------------------------------------- validation
def _str_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: must be a list of strings")
    return list(value)


def _container(c: Any, path: str) -> dict:
    if not isinstance(c, dict):
        raise UsageError(f"{path}: must be a mapping")
    for k in c:
        if k not in CONTAINER_FIELDS:
            raise UsageError(f"{path}.{k}: not supported by netlab (supported: {', '.join(CONTAINER_FIELDS)})")
    out: dict[str, Any] = {"name": check_name(c.get("name"), f"{path}.name")}
    image = c.get("image") or None
    if image is not None and images.kind(image) is None:
        raise UsageError(f"{path}.image: '{image}' is not available in netlab: use one of "
                         f"{images.known()} (README: images) or leave image out and give command")
    if image:
        out["image"] = image
    for f in ("command", "args"):
        if c.get(f) is not None:
            out[f] = _str_list(c[f], f"{path}.{f}")
    if image is None and not out.get("command"):
        raise UsageError(f"{path}.command: required when no image is given")
    if out.get("command") == [] or (out.get("command") and not out["command"][0]):
        raise UsageError(f"{path}.command: must name a program")
    if c.get("env") is not None:
        if not isinstance(c["env"], list):
            raise UsageError(f"{path}.env: must be a list of {{name, value}}")
        env = []
        for j, e in enumerate(c["env"]):
            p = f"{path}.env[{j}]"
            if not isinstance(e, dict) or set(e) - {"name", "value"}:
                raise UsageError(f"{p}: only name and value are supported")
            if not isinstance(e.get("name"), str) or not ENV_NAME.match(e["name"]):
                raise UsageError(f"{p}.name: {e.get('name')!r} is not a valid variable name")
            v = e.get("value", "")
            if not isinstance(v, str):
                raise UsageError(f"{p}.value: must be a string (quote {v!r})")
            env.append({"name": e["name"], "value": v})
        out["env"] = env
    if c.get("ports") is not None:
        if not isinstance(c["ports"], list):
            raise UsageError(f"{path}.ports: must be a list")
        ports = []
        for j, pt in enumerate(c["ports"]):
            p = f"{path}.ports[{j}]"
            if not isinstance(pt, dict) or set(pt) - {"name", "containerPort", "protocol"}:
                raise UsageError(f"{p}: only name, containerPort and protocol are supported")
            cp = pt.get("containerPort")
            if isinstance(cp, bool) or not isinstance(cp, int) or not 1 <= cp <= 65535:
                raise UsageError(f"{p}.containerPort: {cp!r} is not a port number (1-65535)")
            proto = pt.get("protocol", "TCP")
            if proto not in ("TCP", "UDP"):
                raise UsageError(f"{p}.protocol: {proto!r} is not TCP or UDP")
            port = {"containerPort": cp, "protocol": proto}
            if pt.get("name") is not None:
                n = pt["name"]
                if not is_port_name(n):
                    raise UsageError(f"{p}.name: {n!r} is not a port name (at most 15 lower-case letters, digits, '-')")
                port = {"name": n, **port}
            ports.append(port)
        out["ports"] = ports
    return out


def validate_pod(obj: Any) -> dict:
    """Check a v1 Pod and return it normalised (defaults filled in, status dropped).

    Errors are UsageErrors naming the field from the pod's root (`spec.containers[0].image`).
    """
    if not isinstance(obj, dict):
        raise UsageError("pod: must be a mapping")
    if obj.get("apiVersion", "v1") != "v1" or obj.get("kind", "Pod") != "Pod":
        raise UsageError(f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')} is not v1/Pod")
    meta = obj.get("metadata") or {}
    for k in meta:
        if k not in META_FIELDS:
            raise UsageError(f"metadata.{k}: not supported by netlab")
    out_meta: dict[str, Any] = {"name": check_name(meta.get("name"), "metadata.name"),
                                "namespace": check_name(meta.get("namespace") or "default", "metadata.namespace")}
    for k in ("uid", "creationTimestamp"):
        if meta.get(k):
            out_meta[k] = str(meta[k])
    out_meta["labels"] = check_labels(meta.get("labels"), "metadata.labels")
    if meta.get("annotations"):
        if not isinstance(meta["annotations"], dict):
            raise UsageError("metadata.annotations: must be a mapping of strings")
        out_meta["annotations"] = {str(k): str(v) for k, v in meta["annotations"].items()}
    if meta.get("ownerReferences"):
        refs = meta["ownerReferences"]
        if not isinstance(refs, list) or not all(isinstance(r, dict) and r.get("uid") for r in refs):
            raise UsageError("metadata.ownerReferences: must be a list of references with a uid")
        out_meta["ownerReferences"] = refs
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise UsageError("spec: required")
    for k in spec:
        if k not in SPEC_FIELDS:
            raise UsageError(f"spec.{k}: not supported by netlab (supported: {', '.join(SPEC_FIELDS)})")
    cs = spec.get("containers")
    if not isinstance(cs, list) or not cs:
        raise UsageError("spec.containers: at least one container is required")
    containers = [_container(c, f"spec.containers[{i}]") for i, c in enumerate(cs)]
    seen: set[str] = set()
    for i, c in enumerate(containers):
        if c["name"] in seen:
            raise UsageError(f"spec.containers[{i}].name: '{c['name']}' is used twice")
        seen.add(c["name"])
    if spec.get("restartPolicy", "Always") != "Always":
        raise UsageError(f"spec.restartPolicy: {spec['restartPolicy']!r}: netlab restarts containers "
                         "that exit (Always)")
    dns_policy = spec.get("dnsPolicy") or "ClusterFirst"
    if dns_policy not in DNS_POLICIES:
        raise UsageError(f"spec.dnsPolicy: {dns_policy!r} is not supported (ClusterFirst or Default)")
    out_spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Always"}
    if spec.get("dnsPolicy"):  # kept as given; absent means ClusterFirst
        out_spec["dnsPolicy"] = dns_policy
    if spec.get("nodeName"):
        if not isinstance(spec["nodeName"], str) or not names.NODE_NAME_RE.match(spec["nodeName"]):
            raise UsageError(f"spec.nodeName: {spec['nodeName']!r} is not a node name")
        out_spec["nodeName"] = spec["nodeName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out_meta, "spec": out_spec}


def check_node(lab, node: str | None, path: str) -> None:
    """spec.nodeName must name a worker of the running lab: the master runs no kubelet, so a
    pod bound to it (or to no node at all) would stay Pending forever."""
    if not node:
        return
    workers = [n.name for n in lab.nodes if n.role == "worker"]
    if node in workers:
        return
    if any(n.name == node for n in lab.nodes):
        raise UsageError(f"{path}: '{node}' is the master of lab {lab.name}, which runs no pods "
                         f"(workers: {', '.join(workers) or 'none'})")
    raise UsageError(f"{path}: '{node}' is not a node of lab {lab.name} "
                     f"(workers: {', '.join(workers) or 'none'})")


def new_pod(name: str, namespace: str = "default", *, command: list[str] | None = None,
            image: str | None = None, port: int | None = None, labels: dict | None = None,
            env: dict | None = None, node: str | None = None) -> dict:
    """The pod `netlab run` makes (one container named like the pod, as kubectl run does)."""
    if not command and not image:
        image = HELLO_IMAGE
    c: dict[str, Any] = {"name": name}
    if image:
        c["image"] = image
    if command:
        c["command"] = list(command)
    if port is None and image == HELLO_IMAGE and not command:
        port = 80
    if port is not None:
        c["ports"] = [{"containerPort": port, "protocol": "TCP"}]
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"containers": [c]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"run": name}},
            "spec": spec}


def container_argv(c: dict, hello_bin: str = "netlab-hello") -> list[str]:
    """What a (validated) container runs. Kubernetes' rule: command replaces the image's
    entrypoint, args its arguments; netlab/hello is `netlab-hello --port <first TCP
    containerPort, else 80>`, nginx `nginx -g 'daemon off;'` (netlab.plan.images)."""
    port = next((p["containerPort"] for p in c.get("ports") or [] if p["protocol"] == "TCP"), 80)
    kind = images.kind(c.get("image"))
    entry, default_args = ([hello_bin], ["--port", str(port)]) if kind == "hello" else \
        ([], list(images.NGINX_ARGV)) if kind == images.NGINX else ([], [])
    if c.get("command"):
        argv = list(c["command"]) + list(c.get("args") or [])
    else:
        argv = entry + (list(c["args"]) if c.get("args") is not None else default_args)
    if argv and argv[0] == "netlab-hello":
        argv[0] = hello_bin
    return argv


# --------------------------------------------------------------------------- the store
def create_pod(st: Store, obj: dict) -> dict:
    """Validate, default (uid, creationTimestamp, status Pending) and create with CAS.

    Raises PodExists if a pod of that name exists.
    """
    pod = validate_pod(obj)
    meta = pod["metadata"]
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", store.now_rfc3339())
    bound = bool(pod["spec"].get("nodeName"))
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True" if bound else "False"}]}
    if not st.create(key(meta["namespace"], meta["name"]), pod):
        raise PodExists(f'pods "{meta["name"]}" already exists in namespace {meta["namespace"]}')
    return pod


def get_pod(st: Store, namespace: str, name: str) -> dict | None:
    item = st.get(key(namespace, name))
    return item.value if item else None


def list_pods(st: Store, namespace: str | None = None) -> list[dict]:
    prefix = store.PODS + (f"{namespace}/" if namespace else "")
    return [i.value for i in st.list(prefix) if isinstance(i.value, dict)]


def delete_pod(st: Store, namespace: str, name: str) -> dict | None:
    """Remove the pod object; its node's kubelet then tears the pod down. Returns what was deleted."""
    item = st.get(key(namespace, name))
    if item is None:
        return None
    st.delete(key(namespace, name))
    return item.value


def settled(pod: dict) -> bool:
    """Ready, or running with a container that keeps exiting (waiting longer changes nothing)."""
    s = pod.get("status") or {}
    if pod_ready(pod):
        return True
    return s.get("phase") == "Running" and any(
        c.get("restartCount", 0) > 0 or "terminated" in (c.get("lastState") or {})
        for c in s.get("containerStatuses") or [])


def wait_running(st: Store, namespace: str, name: str, timeout: float = 60.0) -> dict:
    """Block until the pod runs (see settled()); NetlabError if it fails, vanishes or times out."""
    deadline = time.monotonic() + timeout
    pod = None
    while True:
        pod = get_pod(st, namespace, name)
        if pod is None:
            raise NetlabError(f"pod {name} was deleted while waiting for it to run")
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed":
            raise NetlabError(f"pod {name} failed: {(pod.get('status') or {}).get('message', 'see the agent log')}")
        if settled(pod):
            return pod
        if time.monotonic() >= deadline:
            why = "not scheduled (no Ready worker?)" if not pod["spec"].get("nodeName") else \
                f"on {pod['spec']['nodeName']}: {status_text(pod)}"
            raise NetlabError(f"pod {name} is not running after {timeout:.0f}s ({why})")
        time.sleep(0.05)


# --------------------------------------------------------------------------- kubectl's listing


def status_text(pod: dict) -> str:
    """kubectl's STATUS column: a container's waiting/terminated reason, else the phase."""
    s = pod.get("status") or {}
    reason = s.get("reason") or s.get("phase") or "Pending"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    if s.get("phase") in ("Failed", "Succeeded"):
        return reason
    for c in s.get("containerStatuses") or []:
        st = c.get("state") or {}
        if "waiting" in st and st["waiting"].get("reason") not in (None, "", "ContainerCreating"):
            return st["waiting"]["reason"]
        if "terminated" in st:
            return st["terminated"].get("reason") or "Error"
    if s.get("phase") == "Pending" and pod["spec"].get("nodeName"):
        return "ContainerCreating"
    return reason
