"""The resources the lab's API serves, and the discovery and OpenAPI documents about them.

One `Resource` per REST resource (its group/version, kind, short names, verbs, whether it
is namespaced, the field selectors it supports); discovery (`/api`, `/apis`, `/api/v1`,
`/apis/apps/v1`) and the OpenAPI v3 documents kubectl reads are derived from that table.
Pure data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-netlab", "gitCommit": "netlab",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
           "compiler": "gc", "platform": "linux/amd64"}

ALL_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
READ_VERBS = ["get", "list", "watch"]
META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    name: str  # plural, as in the URL
    singular: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(ALL_VERBS)
    fields: tuple[str, ...] = META_FIELDS
    categories: tuple[str, ...] = ()
    subresources: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # name -> (kind, verbs)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.name}.{self.group}" if self.group else self.name


RESOURCES: list[Resource] = [
    Resource("namespaces", "namespace", "Namespace", namespaced=False, short_names=("ns",),
             verbs=("create", "delete", "get", "list", "watch"), fields=("metadata.name", "status.phase")),
    Resource("nodes", "node", "Node", namespaced=False, short_names=("no",), verbs=tuple(READ_VERBS),
             fields=("metadata.name", "spec.unschedulable")),
    Resource("pods", "pod", "Pod", short_names=("po",), categories=("all",),
             fields=(*META_FIELDS, "spec.nodeName", "status.phase", "status.podIP", "spec.restartPolicy"),
             subresources={"log": ("Pod", ("get",)), "exec": ("PodExecOptions", ("create", "get")),
                           "portforward": ("PodPortForwardOptions", ("create", "get")),
                           "status": ("Pod", ("get",))}),
    Resource("services", "service", "Service", short_names=("svc",), categories=("all",),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("endpoints", "endpoints", "Endpoints", short_names=("ep",), verbs=tuple(READ_VERBS)),
    Resource("events", "event", "Event", short_names=("ev",), verbs=tuple(READ_VERBS),
             fields=(*META_FIELDS, "involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
                     "involvedObject.uid", "reason", "type")),
    Resource("endpointslices", "endpointslice", "EndpointSlice", group="discovery.k8s.io",
             verbs=tuple(READ_VERBS)),
    Resource("deployments", "deployment", "Deployment", group="apps", short_names=("deploy",),
             categories=("all",),
             subresources={"scale": ("Scale", ("get", "patch", "update")), "status": ("Deployment", ("get",))}),
]
BY_PATH: dict[tuple[str, str], Resource] = {(r.group_version, r.name): r for r in RESOURCES}
GROUP_VERSIONS = ["v1", "apps/v1", "discovery.k8s.io/v1"]
GROUPS = ["apps", "discovery.k8s.io"]


def resource_list(group_version: str) -> dict:
    out = []
    for r in RESOURCES:
        if r.group_version != group_version:
            continue
        d = {"name": r.name, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": list(r.verbs)}
        if r.short_names:
            d["shortNames"] = list(r.short_names)
        if r.categories:
            d["categories"] = list(r.categories)
        out.append(d)
        for sub, (kind, verbs) in r.subresources.items():
            sd = {"name": f"{r.name}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": kind,
                  "verbs": list(verbs)}
            if sub == "scale":
                sd.update(group="autoscaling", version="v1")
            out.append(sd)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str) -> dict:
    gv = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def api_groups() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUPS]}


def api_group(name: str) -> dict | None:
    if name not in GROUPS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


# --------------------------------------------------------------------------- OpenAPI v3
def _gvk(r: Resource) -> dict:
    return {"group": r.group, "version": r.version, "kind": r.kind}


def _op(r: Resource, action: str, params: list[dict]) -> dict:
    return {"operationId": f"{action}{r.kind}", "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": _gvk(r), "parameters": params,
            "responses": {"200": {"description": "OK"}}}


QUERY = lambda name, typ="string": {"name": name, "in": "query", "schema": {"type": typ}}  # noqa: E731


def openapi_v3(group_version: str) -> dict:
    """A small but valid OpenAPI 3.0 document for one group version: the paths with their
    operations and parameters (`fieldValidation` on PATCH, which is how kubectl decides the
    server validates fields itself), and an open schema per kind. The schemas carry no
    x-kubernetes-group-version-kind on purpose: kubectl then computes apply's strategic
    merge patch from its built-in types, which know the merge keys."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    write = [QUERY("dryRun"), QUERY("fieldManager"), QUERY("fieldValidation"), QUERY("pretty")]
    for r in RESOURCES:
        if r.group_version != group_version:
            continue
        base = f"{prefix}/namespaces/{{namespace}}/{r.name}" if r.namespaced else f"{prefix}/{r.name}"
        path_params = ([{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}]
                       if r.namespaced else [])
        name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        coll: dict = {"parameters": path_params,
                      "get": _op(r, "list", [QUERY("labelSelector"), QUERY("fieldSelector"),
                                             QUERY("watch", "boolean"), QUERY("resourceVersion")])}
        one: dict = {"parameters": [*path_params, name_param], "get": _op(r, "get", [])}
        if "create" in r.verbs:
            coll["post"] = _op(r, "post", write)
        if "update" in r.verbs:
            one["put"] = _op(r, "put", write)
        if "patch" in r.verbs:
            one["patch"] = _op(r, "patch", [*write, QUERY("force", "boolean")])
        if "delete" in r.verbs:
            one["delete"] = _op(r, "delete", [QUERY("gracePeriodSeconds", "integer"), QUERY("propagationPolicy")])
        paths[base] = coll
        paths[f"{base}/{{name}}"] = one
        ref = f"io.k8s.api.{'core' if not r.group else r.group}.{r.version}.{r.kind}"
        schemas[ref] = {"type": "object", "description": f"{r.kind} (netlab honours a subset of its fields)",
                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                       "metadata": {"type": "object"}, "spec": {"type": "object"},
                                       "status": {"type": "object"}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (netlab)", "version": VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v3_root() -> dict:
    out = {}
    for gv in GROUP_VERSIONS:
        h = hashlib.sha512(json.dumps(openapi_v3(gv), sort_keys=True).encode()).hexdigest()[:64].upper()
        key = "api/v1" if gv == "v1" else f"apis/{gv}"
        out[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={h}"}
    return {"paths": out}
