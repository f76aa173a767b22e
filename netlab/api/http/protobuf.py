"""Request bodies in Kubernetes' protobuf encoding, as kubectl's typed clients send them.

`kubectl create namespace|deployment|service ...` post `application/vnd.kubernetes.protobuf`:
the magic `k8s\\0`, then a runtime.Unknown envelope (type meta + the object's bytes). This
decodes the objects netlab honours (Namespace, Pod, Deployment, Service) into the same
dicts a JSON body gives, from the field numbers of k8s.io/api's generated.proto. Go's
encoder writes every non-pointer field, so zero values ("", 0, false) are dropped as JSON's
omitempty would; a field outside this table that carries a value is refused naming its
path. Pure: bytes in, dict out.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    pass


# A field: (json name, kind, message schema for msg kinds). Kinds: str, int, pint (a
# pointer: zero is a value), bool, msg, rmsg (repeated message), rstr (repeated string),
# map (map<string,string>), ios (IntOrString), skip (server-owned: ignored).
TIME = {1: ("seconds", "int", None), 2: ("nanos", "int", None)}
OBJECT_META = {
    1: ("name", "str", None), 2: ("generateName", "str", None), 3: ("namespace", "str", None),
    4: ("selfLink", "skip", None), 5: ("uid", "skip", None), 6: ("resourceVersion", "str", None),
    7: ("generation", "skip", None), 8: ("creationTimestamp", "skip", None), 9: ("deletionTimestamp", "skip", None),
    10: ("deletionGracePeriodSeconds", "skip", None), 11: ("labels", "map", None),
    12: ("annotations", "map", None), 14: ("finalizers", "rstr", None), 17: ("managedFields", "skip", None),
}
INT_OR_STRING = "ios"
LABEL_SELECTOR = {1: ("matchLabels", "map", None),
                  2: ("matchExpressions", "rmsg", {1: ("key", "str", None), 2: ("operator", "str", None),
                                                   3: ("values", "rstr", None)})}
CONTAINER_PORT = {1: ("name", "str", None), 2: ("hostPort", "int", None), 3: ("containerPort", "int", None),
                  4: ("protocol", "str", None), 5: ("hostIP", "str", None)}
ENV_VAR = {1: ("name", "str", None), 2: ("value", "str", None)}
CONTAINER = {
    1: ("name", "str", None), 2: ("image", "str", None), 3: ("command", "rstr", None), 4: ("args", "rstr", None),
    5: ("workingDir", "str", None), 6: ("ports", "rmsg", CONTAINER_PORT), 7: ("env", "rmsg", ENV_VAR),
    8: ("resources", "msg", {}), 13: ("terminationMessagePath", "str", None), 14: ("imagePullPolicy", "str", None),
    16: ("stdin", "bool", None), 17: ("stdinOnce", "bool", None), 18: ("tty", "bool", None),
    20: ("terminationMessagePolicy", "str", None),
}
POD_SPEC = {
    2: ("containers", "rmsg", CONTAINER), 3: ("restartPolicy", "str", None),
    4: ("terminationGracePeriodSeconds", "pint", None), 5: ("activeDeadlineSeconds", "pint", None),
    6: ("dnsPolicy", "str", None), 7: ("nodeSelector", "map", None), 8: ("serviceAccountName", "str", None),
    9: ("serviceAccount", "str", None), 10: ("nodeName", "str", None), 11: ("hostNetwork", "bool", None),
    12: ("hostPID", "bool", None), 13: ("hostIPC", "bool", None), 14: ("securityContext", "msg", {}),
    16: ("hostname", "str", None), 17: ("subdomain", "str", None), 19: ("schedulerName", "str", None),
    20: ("initContainers", "rmsg", CONTAINER), 24: ("priorityClassName", "str", None),
}
POD_TEMPLATE = {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", POD_SPEC)}
ROLLING = {1: ("maxUnavailable", INT_OR_STRING, None), 2: ("maxSurge", INT_OR_STRING, None)}
DEPLOYMENT_SPEC = {
    1: ("replicas", "pint", None), 2: ("selector", "msg", LABEL_SELECTOR), 3: ("template", "msg", POD_TEMPLATE),
    4: ("strategy", "msg", {1: ("type", "str", None), 2: ("rollingUpdate", "msg", ROLLING)}),
    5: ("minReadySeconds", "int", None), 6: ("revisionHistoryLimit", "pint", None), 7: ("paused", "bool", None),
    9: ("progressDeadlineSeconds", "pint", None),
}
SERVICE_PORT = {1: ("name", "str", None), 2: ("protocol", "str", None), 3: ("port", "int", None),
                4: ("targetPort", INT_OR_STRING, None), 5: ("nodePort", "int", None), 6: ("appProtocol", "str", None)}
SERVICE_SPEC = {
    1: ("ports", "rmsg", SERVICE_PORT), 2: ("selector", "map", None), 3: ("clusterIP", "str", None),
    4: ("type", "str", None), 5: ("externalIPs", "rstr", None), 7: ("sessionAffinity", "str", None),
    8: ("loadBalancerIP", "str", None), 9: ("loadBalancerSourceRanges", "rstr", None),
    10: ("externalName", "str", None), 11: ("externalTrafficPolicy", "str", None),
    12: ("healthCheckNodePort", "int", None), 13: ("publishNotReadyAddresses", "bool", None),
    17: ("ipFamilyPolicy", "str", None), 18: ("clusterIPs", "rstr", None), 19: ("ipFamilies", "rstr", None),
    22: ("internalTrafficPolicy", "str", None),
}
KINDS = {
    "Namespace": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", {1: ("finalizers", "rstr", None)}),
                  3: ("status", "skip", None)},
    "Pod": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", POD_SPEC), 3: ("status", "skip", None)},
    "Deployment": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", DEPLOYMENT_SPEC),
                   3: ("status", "skip", None)},
    "Service": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", SERVICE_SPEC), 3: ("status", "skip", None)},
}
UNKNOWN = {1: ("typeMeta", "msg", {1: ("apiVersion", "str", None), 2: ("kind", "str", None)}),
           2: ("raw", "bytes", None), 3: ("contentEncoding", "str", None), 4: ("contentType", "str", None)}


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        if i >= len(b):
            raise ProtobufError("truncated varint")
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i
        if s > 63:
            raise ProtobufError("varint too long")


def _fields(b: bytes):
    """(field number, wire type, value) of one message; values are ints or bytes."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ProtobufError("truncated field")
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ProtobufError(f"wire type {wt} is not understood")
        yield num, wt, v


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, bytes):
        raise ProtobufError(f"{path}: expected a string")
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise ProtobufError(f"{path}: not UTF-8") from None


def _message(b: bytes, schema: dict, path: str) -> dict:
    out: dict[str, Any] = {}
    for num, wt, v in _fields(b):
        spec = schema.get(num)
        where = f"{path}.{spec[0]}" if spec else f"{path} (protobuf field {num})"
        if spec is None:
            if v in (0, b""):
                continue  # an unset field Go wrote anyway
            raise ProtobufError(f"{where.lstrip('.')}: not supported by netlab (send JSON to see the field's name)")
        name, kind, sub = spec
        if kind == "skip":
            continue
        if kind in ("int", "pint", "bool"):
            if wt != 0:
                raise ProtobufError(f"{where.lstrip('.')}: expected a number")
            if kind == "bool":
                if v:
                    out[name] = True
            elif v or kind == "pint":
                out[name] = _signed(v)
        elif kind == "str":
            s = _str(v, where)
            if s:
                out[name] = s
        elif kind == "bytes":
            out[name] = v
        elif kind == "rstr":
            out.setdefault(name, []).append(_str(v, where))
        elif kind == "map":
            entry = _message(v, {1: ("key", "str", None), 2: ("value", "str", None)}, where)
            out.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
        elif kind == INT_OR_STRING:
            e = _message(v, {1: ("type", "int", None), 2: ("intVal", "int", None), 3: ("strVal", "str", None)}, where)
            out[name] = e.get("strVal", "") if e.get("type") == 1 else e.get("intVal", 0)
        elif kind == "msg":
            out[name] = _message(v, sub, where)
        elif kind == "rmsg":
            out.setdefault(name, []).append(_message(v, sub, f"{where}[{len(out.get(name, []))}]"))
    return out


def decode(body: bytes) -> dict:
    """The object of a protobuf request body, shaped as its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    env = _message(body[len(MAGIC):], UNKNOWN, "")
    tm = env.get("typeMeta") or {}
    kind, api = tm.get("kind", ""), tm.get("apiVersion", "")
    if env.get("contentEncoding"):
        raise ProtobufError(f"content encoding {env['contentEncoding']!r} is not supported")
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(f"{api}/{kind} bodies in protobuf are not understood by netlab; send JSON")
    obj = _message(env.get("raw", b""), schema, "")
    return {"apiVersion": api, "kind": kind, **obj}
