"""The aiohttp application: routing, authentication, content negotiation, watch streams.

Requests are parsed into (resource, namespace, name, subresource) the way kube-apiserver
lays out its URLs; the work is done by `objects.Api` in worker threads (the etcd client
is synchronous), answers are JSON objects, Lists, Tables (when the client asks for
`as=Table`) or `Status` errors. Watches are etcd watches from the requested
resourceVersion, streamed as one JSON event per line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import traceback
from typing import Any, Callable

from aiohttp import web

from netlab import errors, yamlin
from netlab.errors import UsageError

from netlab.api.http import patch as P
from netlab.api.http import protobuf
from netlab.api.http import resources as R
from netlab.api.http import selectors, tables
from netlab.api.http import status as S
from netlab.api.http.auth import Tokens
from netlab.api.http.objects import Api

log = logging.getLogger("netlab.apiserver")
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit for a request body
ANONYMOUS_OK = ("/healthz", "/readyz", "/livez", "/version")
JSON_CT = "application/json"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"the request body: duplicate key {yamlin.short(k)} in one object")
        out[k] = v
    return out


def respond(obj: Any, code: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=code, content_type=JSON_CT)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


class Server:
    def __init__(self, api: Api, tokens: Tokens, *, advertise: str, kubelet: Callable | None = None):
        self.api = api
        self.tokens = tokens
        self.advertise = advertise  # host:port of the master address, for /api
        self.kubelet = kubelet  # (request, pod, subresource) -> response, for logs/exec
        self.started = time.time()

    # ----------------------------------------------------------------------- app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self.errors, self.authenticate])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except S.ApiError as e:
            return respond(e.body, e.code)
        except web.HTTPRequestEntityTooLarge:
            return respond(S.status(413, f"the request body is larger than the server's limit of "
                                         f"{MAX_BODY} bytes", "RequestEntityTooLarge"), 413)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except web.HTTPException as e:
            return respond(S.status(e.status, e.reason), e.status)
        except Exception as e:  # noqa: BLE001 - answer with a Status, keep serving
            log.error("%s %s failed: %s", request.method, request.path, traceback.format_exc())
            return respond(S.status(500, f"internal error: {type(e).__name__}: {e}", "InternalError"), 500)

    @web.middleware
    async def authenticate(self, request: web.Request, handler):
        h = request.headers.get("Authorization", "")
        user = self.tokens.user(h[7:].strip()) if h[:7].lower() == "bearer " else None
        if user is None and not any(request.path == p or request.path.startswith(p + "/") for p in ANONYMOUS_OK):
            return respond(S.status(401, "Unauthorized", "Unauthorized"), 401)
        request["user"] = user
        return await handler(request)

    async def run(self, fn, *a, **kw):
        return await asyncio.to_thread(fn, *a, **kw)

    # ----------------------------------------------------------------------- routing
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        m = request.method
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            ok = await self.run(self.api.st.healthy)
            return web.Response(text="ok" if ok else "etcd failed", status=200 if ok else 500)
        if path == "/version":
            return respond(R.VERSION)
        if path == "/api":
            return respond(R.api_versions(self.advertise))
        if path == "/apis":
            return respond(R.api_groups())
        if path == "/api/v1":
            return respond(R.resource_list("v1"))
        if path.startswith("/apis/") and path.count("/") == 2:
            group = R.api_group(path.split("/")[2])
            if group is None:
                raise S.ApiError(404, "the server could not find the requested resource", "NotFound")
            return respond(group)
        if path.startswith("/apis/") and path.count("/") == 3 and path[len("/apis/"):] in R.GROUP_VERSIONS:
            return respond(R.resource_list(path[len("/apis/"):]))
        if path == "/openapi/v3":
            return respond(R.openapi_v3_root())
        if path == "/openapi/v3/api/v1":
            return respond(R.openapi_v3("v1"))
        if path.startswith("/openapi/v3/apis/") and path[len("/openapi/v3/apis/"):] in R.GROUP_VERSIONS:
            return respond(R.openapi_v3(path[len("/openapi/v3/apis/"):]))
        if path.startswith("/openapi/"):
            raise S.ApiError(404, f"the server could not find the requested resource ({path}); "
                                  "netlab serves OpenAPI v3 only (/openapi/v3)")
        gv = next((g for g in R.GROUP_VERSIONS if path.startswith(("/api/v1/" if g == "v1" else f"/apis/{g}/"))), None)
        if gv is not None:
            rest = path[len("/api/v1/" if gv == "v1" else f"/apis/{gv}/"):]
        elif path == "/" and m == "GET":
            return respond({"paths": ["/api", "/api/v1", "/apis", *(f"/apis/{g}" for g in R.GROUPS),
                                      *(f"/apis/{g}" for g in R.GROUP_VERSIONS if g != "v1"), "/healthz",
                                      "/livez", "/openapi/v3", "/readyz", "/version"]})
        else:
            raise S.ApiError(404, "the server could not find the requested resource", "NotFound")
        return await self.resource_request(request, gv, rest.split("/"))

    def _parse(self, gv: str, parts: list[str]) -> tuple[R.Resource, str | None, str | None, str | None]:
        ns = None
        if len(parts) >= 3 and parts[0] == "namespaces" and (gv, parts[2]) in R.BY_PATH:
            ns, parts = parts[1], parts[2:]
        r = R.BY_PATH.get((gv, parts[0]))
        if r is None or len(parts) > 3:
            raise S.ApiError(404, "the server could not find the requested resource", "NotFound")
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if r.namespaced and name is not None and ns is None:
            raise S.ApiError(404, "the server could not find the requested resource", "NotFound")
        if sub and sub not in r.subresources:
            raise S.ApiError(404, f"the server could not find the requested resource ({r.name}/{sub})", "NotFound")
        if not name:
            raise_if_bad_name(ns)
        else:
            raise_if_bad_name(name)
            raise_if_bad_name(ns)
        return r, ns, name, sub

    async def resource_request(self, request: web.Request, gv: str, parts: list[str]) -> web.StreamResponse:
        r, ns, name, sub = self._parse(gv, parts)
        m = request.method
        q = request.query
        if _truthy(q.get("dryRun")) or q.get("dryRun") == "All":
            raise S.ApiError(400, "dry run (dryRun=All) is not supported by netlab's API server")
        if sub == "portforward":
            raise S.ApiError(501, "port-forward is not supported by netlab's API server: reach the pod "
                                  "from the host with `netlab exec pod/NAME -- ...` or through a NodePort "
                                  "service", "NotImplemented")
        if sub == "log" or sub == "exec":
            if self.kubelet is None:
                raise S.ApiError(501, f"pods/{sub} is not available", "NotImplemented")
            pod = await self.run(self.api.get, r, ns, name)
            return await self.kubelet(request, pod, sub)
        if sub == "scale":
            if m == "GET":
                return respond(await self.run(self.api.get_scale, ns, name))
            if m in ("PUT", "PATCH"):
                body = await self.body(request)
                if m == "PATCH":
                    cur = await self.run(self.api.get_scale, ns, name)
                    body = self.patched(request, cur, body)
                return respond(await self.run(self.api.set_scale, ns, name, body))
            raise self.not_allowed()
        if sub == "status":
            if m != "GET":
                raise self.not_allowed()
            sub = None
        if name is None:
            if m == "GET":
                if _truthy(q.get("watch")):
                    return await self.watch(request, r, ns)
                return await self.list(request, r, ns)
            if m == "POST":
                self.need(r, "create")
                body = await self.body(request)
                obj = await self.run(self.api.create, r, ns, body)
                return respond(obj, 201)
            raise self.not_allowed()
        if m == "GET":
            if _truthy(q.get("watch")):
                return await self.watch(request, r, ns, name)
            obj = await self.run(self.api.get, r, ns, name)
            return self.one(request, r, obj)
        if m == "PUT":
            self.need(r, "update")
            body = await self.body(request)
            return respond(await self.run(self.api.update, r, ns, name, body))
        if m == "PATCH":
            self.need(r, "patch")
            return respond(await self.patch(request, r, ns, name))
        if m == "DELETE":
            self.need(r, "delete")
            obj = await self.run(self.api.delete, r, ns, name)
            return respond(obj)
        raise self.not_allowed()

    def need(self, r: R.Resource, verb: str) -> None:
        if verb not in r.verbs:
            raise S.ApiError(405, f"the server does not allow this method on the requested resource "
                                  f"({r.name} are maintained by netlab itself)", "MethodNotAllowed")

    def not_allowed(self) -> S.ApiError:
        return S.ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    # ----------------------------------------------------------------------- bodies
    async def body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            raise S.ApiError(400, "the request body is empty")
        ct = request.headers.get("Content-Type", JSON_CT).split(";")[0].strip()
        try:
            if "yaml" in ct:
                return yamlin.load_one(yamlin.decode(raw, "the request body"), "the request body")
            if "protobuf" in ct:
                return protobuf.decode(raw)
            return json.loads(yamlin.decode(raw, "the request body"), object_pairs_hook=_no_duplicates)
        except protobuf.ProtobufError as e:
            raise S.ApiError(415 if "not understood" in str(e) else 400, f"protobuf body: {e}",
                             "UnsupportedMediaType" if "not understood" in str(e) else "BadRequest") from None
        except (_DuplicateKey, UsageError) as e:
            # A repeated key is a field error (kube's strict decoding names it), the rest a bad body.
            if "duplicate key" in str(e):
                raise S.ApiError(422, errors.one_line(str(e)), "Invalid",
                                 causes=[{"reason": "FieldValueDuplicate", "message": str(e)}]) from None
            raise S.ApiError(400, str(e)) from None
        except ValueError as e:
            raise S.ApiError(400, f"the request body is not valid {'YAML' if 'yaml' in ct else 'JSON'}: "
                                  f"{errors.one_line((str(e).splitlines() or [''])[0])}") from None
        except RecursionError:
            raise S.ApiError(400, "the request body is nested too deeply") from None

    def patched(self, request: web.Request, current: dict, body: Any) -> dict:
        ct = request.headers.get("Content-Type", "")
        try:
            return P.apply(ct, current, body)
        except P.PatchError as e:
            code = 415 if "not supported" in str(e) else 422
            raise S.ApiError(code, str(e), "UnsupportedMediaType" if code == 415 else "Invalid") from None

    async def patch(self, request: web.Request, r: R.Resource, ns: str | None, name: str) -> dict:
        body = await self.body(request)
        ct = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ct == P.APPLY:  # server-side apply, simply: create, or merge the applied fields in
            try:
                cur = await self.run(self.api.get, r, ns, name)
            except S.ApiError as e:
                if e.code != 404:
                    raise
                if isinstance(body, dict):
                    body.setdefault("metadata", {}).setdefault("name", name)
                return await self.run(self.api.create, r, ns, body)
            new = P.merge_patch(cur, body)
        else:
            cur = await self.run(self.api.get, r, ns, name)
            new = self.patched(request, cur, body)
        new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return await self.run(self.api.update, r, ns, name, new)

    # ----------------------------------------------------------------------- reading
    def matcher(self, request: web.Request, r: R.Resource, name: str | None = None):
        q = request.query
        fs = q.get("fieldSelector")
        if name:
            fs = ",".join(x for x in (fs, f"metadata.name={name}") if x)
        try:
            return selectors.matcher(q.get("labelSelector"), fs, r.fields)
        except ValueError as e:
            raise S.ApiError(400, f"unable to parse requirement: {e}") from None

    def one(self, request: web.Request, r: R.Resource, obj: dict) -> web.Response:
        if wants_table(request):
            return respond(tables.table(r.name, [obj], obj["metadata"].get("resourceVersion", ""),
                                        request.query.get("includeObject", "Metadata")))
        return respond(obj)

    async def list(self, request: web.Request, r: R.Resource, ns: str | None) -> web.Response:
        match = self.matcher(request, r)
        items, rev = await self.run(self.api.list, r, ns)
        items = [o for o in items if match(o)]
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        q = request.query
        offset = 0
        if q.get("continue"):
            try:
                rev_s, off_s = base64.urlsafe_b64decode(q["continue"].encode()).decode().split(":")
                offset = int(off_s)
            except (ValueError, UnicodeDecodeError):
                raise S.ApiError(400, "continue: not a continue token this server gave") from None
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise S.ApiError(400, f"limit: {q.get('limit')!r} is not a number") from None
        items = items[offset:]
        if limit > 0 and len(items) > limit:
            meta["continue"] = base64.urlsafe_b64encode(f"{rev}:{offset + limit}".encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if wants_table(request):
            t = tables.table(r.name, items, str(rev), q.get("includeObject", "Metadata"))
            t["metadata"] = meta
            return respond(t)
        return respond({"kind": f"{r.kind}List", "apiVersion": r.group_version, "metadata": meta, "items": items})

    async def watch(self, request: web.Request, r: R.Resource, ns: str | None, name: str | None = None) -> web.StreamResponse:
        match = self.matcher(request, r, name)
        q = request.query
        as_table = wants_table(request)
        include = q.get("includeObject", "Metadata")
        try:
            timeout = float(q.get("timeoutSeconds") or 0) or None
        except ValueError:
            raise S.ApiError(400, "timeoutSeconds: not a number") from None
        rv = q.get("resourceVersion")
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        api = self.api
        prefix = api.prefix(r, ns)

        def shape(obj: dict) -> dict:
            if as_table:
                return tables.table(r.name, [obj], obj["metadata"].get("resourceVersion", ""), include)
            return obj

        initial: list[dict] = []
        if rv in (None, "", "0"):
            items, rev = await self.run(api.list, r, ns)
            initial = [o for o in items if match(o)]
            start = rev + 1
        else:
            try:
                start = int(rv) + 1
            except ValueError:
                raise S.ApiError(400, f"resourceVersion: {rv!r} is not a resource version") from None

        def on_events(resp) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, resp)

        try:
            watch_id = await self.run(api.st.client.add_watch_prefix_callback, prefix, on_events,
                                      start_revision=start, prev_kv=True)
        except Exception as e:  # noqa: BLE001 - compacted, etcd gone
            raise S.ApiError(410, f"too old resource version: {rv} ({type(e).__name__})", "Expired") from None
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON_CT})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(typ: str, obj: dict) -> None:
            await resp.write(_dumps({"type": typ, "object": shape(obj)}) + b"\n")

        deadline = time.monotonic() + timeout if timeout else None
        extra = None
        try:
            for o in initial:
                await send("ADDED", o)
            while True:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    break
                if isinstance(ev, Exception):
                    break
                if r.name == "nodes":
                    extra = await self.run(api._node_extras)
                for e in ev.events:
                    key = e.key.decode()
                    if r.name in ("services", "endpoints") and not key.startswith(prefix):
                        continue
                    if type(e).__name__ == "DeleteEvent":
                        try:
                            old = json.loads(e.prev_value) if e.prev_value else None
                        except ValueError:
                            old = None
                        obj = api.view(r, old, e.mod_revision, extra) if old else None
                        if obj is not None and match(obj):
                            await send("DELETED", obj)
                        continue
                    try:
                        new = json.loads(e.value)
                    except ValueError:
                        continue
                    obj = api.view(r, new, e.mod_revision, extra)
                    if obj is None:
                        continue
                    if match(obj):
                        await send("ADDED" if e.version == 1 else "MODIFIED", obj)
                    elif e.prev_value:
                        try:
                            old = api.view(r, json.loads(e.prev_value), e.mod_revision, extra)
                        except ValueError:
                            old = None
                        if old is not None and match(old):  # no longer selected: gone for this watch
                            await send("DELETED", obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            api.st.cancel_watch(watch_id, on_events)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp


def raise_if_bad_name(name: str | None) -> None:
    """Names in URLs are DNS names: refuse anything else before it reaches a store key."""
    if name is None:
        return
    if not name or len(name) > 253 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-." for c in name) \
            or name in (".", ".."):
        raise S.ApiError(400, f"invalid name in the request path: {name!r}")
