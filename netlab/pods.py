"""Pods (v1): the Pod object, and the record each node keeps of the pods it runs.

Owns the API side of pods: validation and defaults, create (compare-and-swap) / delete /
list / wait under /registry/pods/<ns>/<name>, and kubectl's pod listing. Owns also the
layout of a pod's run directory, /run/netlab/<lab>/pods/<ns>_<name>_<uid>/ (record.json:
pause and container pids; hosts; <container>_<restart>.log), which the kubelet role
(netlab/agent/kubelet.py, the kernel work) writes and `netlab ps`, `logs` and `exec` read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from netlab import kernel, names, output, store
from netlab.errors import NetlabError, NotFound, UsageError
from netlab.store import Store

HELLO_IMAGE = "netlab/hello"  # the built-in HTTP app (netlab/native/hello.c)
PAUSE_IMAGE = "netlab/pause"  # what `ps` shows for the sandbox (netlab/native/pause.c)
RECORD = "record.json"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONTAINER_FIELDS = ("name", "image", "command", "args", "env", "ports")
SPEC_FIELDS = ("containers", "nodeName", "restartPolicy")
META_FIELDS = ("name", "namespace", "labels", "annotations", "uid", "creationTimestamp",
               "ownerReferences")


class PodExists(NetlabError):
    pass


def key(namespace: str, name: str) -> str:
    return f"{store.PODS}{namespace}/{name}"


# --------------------------------------------------------------------------- validation
def check_name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{path}: required (a DNS label: lower-case letters, digits, '-')")
    # A pod's name is its host name: at most 63 characters.
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise UsageError(f"{path}: '{value}' is not a DNS label (lower-case letters, digits, '-', at most 63)")
    return value


def _str_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: must be a list of strings")
    return list(value)


def _labels(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: must be a mapping of strings")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", k):
            raise UsageError(f"{path}: '{k}' is not a valid label key")
        if isinstance(v, bool) or v is None or not isinstance(v, (str, int, float)):
            raise UsageError(f"{path}.{k}: label values are strings (quote {v!r})")
        v = str(v)
        if len(v) > 63 or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", v):
            raise UsageError(f"{path}.{k}: '{v}' is not a valid label value")
        out[k] = v
    return out


def _container(c: Any, path: str) -> dict:
    if not isinstance(c, dict):
        raise UsageError(f"{path}: must be a mapping")
    for k in c:
        if k not in CONTAINER_FIELDS:
            raise UsageError(f"{path}.{k}: not supported by netlab (supported: {', '.join(CONTAINER_FIELDS)})")
    out: dict[str, Any] = {"name": check_name(c.get("name"), f"{path}.name")}
    image = c.get("image") or None
    if image is not None and image != HELLO_IMAGE:
        raise UsageError(f"{path}.image: '{image}' is not available in netlab: use {HELLO_IMAGE} "
                         "(the built-in HTTP app) or leave image out and give command")
    if image:
        out["image"] = image
    for f in ("command", "args"):
        if c.get(f) is not None:
            out[f] = _str_list(c[f], f"{path}.{f}")
    if image is None and not out.get("command"):
        raise UsageError(f"{path}.command: required when image is not {HELLO_IMAGE}")
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
                if not isinstance(n, str) or len(n) > 15 or not PORT_NAME.match(n) or not re.search("[a-z]", n):
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
    out_meta["labels"] = _labels(meta.get("labels"), "metadata.labels")
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
    out_spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Always"}
    if spec.get("nodeName"):
        if not isinstance(spec["nodeName"], str) or not names.NODE_NAME_RE.match(spec["nodeName"]):
            raise UsageError(f"spec.nodeName: {spec['nodeName']!r} is not a node name")
        out_spec["nodeName"] = spec["nodeName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out_meta, "spec": out_spec}


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
    containerPort, else 80>`."""
    port = next((p["containerPort"] for p in c.get("ports") or [] if p["protocol"] == "TCP"), 80)
    entry, default_args = ([hello_bin], ["--port", str(port)]) if c.get("image") == HELLO_IMAGE else ([], [])
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


def is_ready(pod: dict) -> bool:
    s = pod.get("status") or {}
    return s.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in s.get("conditions") or [])


def settled(pod: dict) -> bool:
    """Ready, or running with a container that keeps exiting (waiting longer changes nothing)."""
    s = pod.get("status") or {}
    if is_ready(pod):
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


def wait_gone(lab: str, namespace: str, name: str, uid: str | None, timeout: float = 30.0) -> bool:
    """Until the node has torn the pod down (its netns pin and run directory are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = [d for d, _ in records(lab) if d.name.startswith(f"{namespace}_{name}_")
                and (uid is None or d.name.endswith(f"_{uid}"))]
        if not dirs and not kernel.netns_path(names.pod_ns(lab, namespace, name)).exists():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- kubectl's listing
HEADERS = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
WIDE_HEADERS = HEADERS + ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]


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


def row(pod: dict, wide: bool = False, with_namespace: bool = False) -> list:
    s = pod.get("status") or {}
    cs = s.get("containerStatuses") or []
    n = len(pod["spec"]["containers"])
    r = [pod["metadata"]["name"], f"{sum(1 for c in cs if c.get('ready'))}/{n}", status_text(pod),
         sum(c.get("restartCount", 0) for c in cs), output.age(pod["metadata"].get("creationTimestamp"))]
    if wide:
        r += [s.get("podIP"), pod["spec"].get("nodeName"), None, None]
    if with_namespace:
        r = [pod["metadata"]["namespace"], *r]
    return r


# --------------------------------------------------------------------------- run directories
def pods_root(lab: str) -> Path:
    return names.run_dir(lab) / "pods"


def pod_dir(lab: str, namespace: str, name: str, uid: str) -> Path:
    return pods_root(lab) / f"{namespace}_{name}_{uid}"


def host_veth(uid: str) -> str:
    """The pod's veth on docker0: `veth` + 8 hex characters, derived from the pod's uid."""
    return "veth" + hashlib.sha1(uid.encode()).hexdigest()[:8]


def container_id(uid: str, container: str, restart: int) -> str:
    return hashlib.sha256(f"{uid}/{container}/{restart}".encode()).hexdigest()


def container_log(pdir: Path, container: str, restart: int) -> Path:
    # kubelet keeps /var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log; one directory
    # level less saves a mkdir per container on the hot path.
    return pdir / f"{container}_{restart}.log"


def hosts_text(pod_ip: str, pod_name: str) -> str:
    """The kubelet's managed /etc/hosts of a pod."""
    return ("# Kubernetes-managed hosts file (netlab).\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n"
            "fe00::2\tip6-allrouters\n"
            f"{pod_ip}\t{pod_name}\n")


def load_record(pdir: Path) -> dict | None:
    try:
        return json.loads((pdir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def save_record(pdir: Path, rec: dict) -> None:
    tmp = pdir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(rec, separators=(",", ":")))
    os.replace(tmp, pdir / RECORD)


def records(lab: str, node: str | None = None) -> list[tuple[Path, dict]]:
    out = []
    try:
        dirs = sorted(pods_root(lab).iterdir())
    except FileNotFoundError:
        return []
    for d in dirs:
        rec = load_record(d)
        if rec is not None and (node is None or rec.get("node") == node):
            out.append((d, rec))
    return out


def proc_alive(p: dict | None) -> bool:
    """A recorded process (pid + start time) is still that same process."""
    return bool(p and p.get("pid") and kernel.proc_starttime(p["pid"]) == p.get("starttime"))


def find_record(lab: str, namespace: str, name: str) -> tuple[Path, dict]:
    found = [(d, r) for d, r in records(lab) if r["namespace"] == namespace and r["name"] == name]
    if not found:
        raise NotFound(f"pod {name} (namespace {namespace}) runs on no node of lab {lab} "
                       "(see `netlab get pods`)")
    # While a pod of the same name is replaced, prefer the one whose sandbox lives.
    found.sort(key=lambda dr: (not proc_alive(dr[1].get("pause")), -dr[1].get("created", 0)))
    return found[0]


def _split(name: str) -> tuple[str, str]:
    ns, _, pod = name.rpartition("/")
    return ns or "default", pod


def _pick(rec: dict, container: str | None, name: str) -> tuple[str, dict]:
    cs = rec.get("containers") or {}
    if container is None:
        if not rec.get("order"):
            raise NotFound(f"pod {name} has no containers yet")
        container = rec["order"][0]
    if container not in cs:
        raise UsageError(f"-c: container {container} is not valid for pod {name} "
                         f"(choose one of: {', '.join(rec.get('order') or cs)})")
    return container, cs[container]


def exec_argv(lab: str, name: str, cmd: list[str], container: str | None = None) -> list[str]:
    """`netlab exec pod/[NS/]NAME [-c C] -- CMD`: CMD in that container's namespaces
    (net, UTS, IPC and its own mount namespace, where /etc/hosts is the pod's)."""
    ns, pod = _split(name)
    _, rec = find_record(lab, ns, pod)
    cname, c = _pick(rec, container, pod)
    if not proc_alive(c):
        raise NetlabError(f"container {cname} of pod {pod} is not running (see `netlab get pods`)")
    # The container's environment too (POD_IP, ...), as kubectl exec gives it; PATH stays ours.
    env = [f"{k}={v}" for k, v in kernel.pid_environ(c["pid"]).items() if k != "PATH"]
    return ["nsenter", "-t", str(c["pid"]), "-n", "-u", "-i", "-m", "--", "env", *env, *cmd]


def log_path(lab: str, namespace: str, name: str, container: str | None = None,
             previous: bool = False) -> Path:
    d, rec = find_record(lab, namespace, name)
    if container is None and len(rec.get("order") or []) > 1:
        raise UsageError(f"a container name must be specified for pod {name}, choose one of: "
                         f"[{' '.join(rec['order'])}] (-c)")
    cname, c = _pick(rec, container, name)
    n = c.get("restartCount", 0) - (1 if previous else 0)
    if n < 0:
        raise NotFound(f"previous terminated container {cname} in pod {name} not found")
    return container_log(d, cname, n)


def log_ended(lab: str, namespace: str, name: str, path: Path):
    """For `logs -f`: a test that is true once that container instance is over (it exited,
    was restarted, or the pod was deleted)."""
    cname, n = path.stem.rsplit("_", 1)
    n = int(n)

    def stop() -> bool:
        try:
            _, rec = find_record(lab, namespace, name)
        except NotFound:
            return True
        c = (rec.get("containers") or {}).get(cname)
        return c is None or c.get("restartCount") != n or not proc_alive(c)
    return stop


def follow(path: Path, stop, poll: float = 0.2) -> Iterator[bytes]:
    """The file's content, then what is appended to it until stop() is true."""
    with open(path, "rb") as f:  # noqa: PTH123
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if stop():
                yield f.read()
                return
            time.sleep(poll)


# --------------------------------------------------------------------------- docker ps
PS_HEADERS = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES", "NODE", "PID"]


def _human(seconds: float) -> str:
    """docker's HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if s < 3600:
        return "About a minute" if s < 120 else f"{s // 60} minutes"
    if s < 48 * 3600:
        return "About an hour" if s < 7200 else f"{s // 3600} hours"
    return f"{s // 86400} days"


def _command(argv: list[str]) -> str:
    text = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else ""
    return '"' + (text if len(text) <= 20 else text[:19] + "…") + '"'


def ps_rows(lab: str, node: str | None = None) -> list[list]:
    """`docker ps` of the lab's nodes: per pod the pause (k8s_POD_...) and its app containers."""
    now = time.time()
    rows = []
    for _, rec in records(lab, node):
        if rec.get("terminated"):
            continue
        suffix = f"{rec['name']}_{rec['namespace']}_{rec['uid']}"
        p = rec.get("pause") or {}
        if proc_alive(p):
            rows.append((p["started"], [container_id(rec["uid"], "POD", 0)[:12], PAUSE_IMAGE,
                                        _command(["netlab-pause", rec["name"]]),
                                        _human(now - p["started"]) + " ago",
                                        "Up " + _human(now - p["started"]), f"k8s_POD_{suffix}_0",
                                        rec["node"], p["pid"]]))
        for cname in rec.get("order") or []:
            c = rec["containers"][cname]
            if not proc_alive(c):
                continue
            n = c.get("restartCount", 0)
            rows.append((c["started"], [container_id(rec["uid"], cname, n)[:12], c.get("image") or "<none>",
                                        _command(c.get("argv") or []), _human(now - c["started"]) + " ago",
                                        "Up " + _human(now - c["started"]), f"k8s_{cname}_{suffix}_{n}",
                                        rec["node"], c["pid"]]))
    rows.sort(key=lambda r: -r[0])  # newest first, as docker lists them
    return [r for _, r in rows]
