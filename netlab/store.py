"""The lab's etcd as the API server's store: key layout, JSON objects, compare-and-swap.

Flannel's keys are exactly flannel's (`/coreos.com/network/...`); everything else lives
under `/registry/...` as Kubernetes-shaped JSON objects. Writes that allocate something
(cluster IPs, node ports, subnets) are transactions, never read-then-write.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import etcd3
import etcd3.events
import etcd3.exceptions
import grpc

from netlab import names
from netlab.errors import NetlabError

FLANNEL_PREFIX = "/coreos.com/network"
FLANNEL_CONFIG = f"{FLANNEL_PREFIX}/config"
FLANNEL_SUBNETS = f"{FLANNEL_PREFIX}/subnets/"
# Kubernetes itself keeps nodes under /registry/minions.
NODES = "/registry/minions/"
NODE_LEASES = "/registry/leases/kube-node-lease/"
PODS = "/registry/pods/"
SERVICES = "/registry/services/specs/"
ENDPOINTS = "/registry/services/endpoints/"
DEPLOYMENTS = "/registry/deployments/"
ALLOC_CLUSTER_IP = "/registry/ranges/serviceips/"
ALLOC_NODE_PORT = "/registry/ranges/servicenodeports/"
ALLOC_LB_IP = "/registry/ranges/loadbalancerips/"  # netlab's: one key per allocated LB address
LB_LEADERS = "/registry/netlab/lb/"  # per LB address: the announcing node, under a short lease
PROXY_STATUS = "/registry/netlab/proxy/"  # per node: revision the node's rules reflect


class StoreError(NetlabError):
    pass


@dataclass
class Item:
    key: str
    value: Any
    mod_revision: int
    create_revision: int


@dataclass
class RawItem:
    key: str
    value: str
    mod_revision: int
    lease_id: int  # 0: the key is attached to no etcd lease (never expires)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# gRPC backs off up to 2 minutes between reconnects; an etcd restart in a lab takes a
# second, so keep retrying quickly.
GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _client(endpoint: str, timeout: float | None) -> etcd3.Etcd3Client:
    if endpoint.startswith("unix://"):
        # etcd3 joins host and port as "<host>:<port>"; etcd named the socket "<path>:2379".
        host, _, port = endpoint.rpartition(":")
    else:
        host, _, port = endpoint.removeprefix("http://").rpartition(":")
    return etcd3.client(host=host, port=int(port), timeout=timeout, grpc_options=GRPC_OPTIONS)


class Store:
    def __init__(self, endpoint: str, timeout: float | None = 5.0):
        self.endpoint = endpoint
        self.client = _client(endpoint, timeout)

    @classmethod
    def for_lab(cls, lab: str, timeout: float | None = 5.0) -> "Store":
        return cls(names.etcd_socket_url(lab), timeout)

    def close(self) -> None:
        w = getattr(self.client, "watcher", None)
        if w is not None and getattr(w, "_callback_thread", None) is not None:
            # etcd3's watch thread re-opens its stream forever and dies with a traceback
            # ("Channel closed!") once the channel is gone; give it a stub that ends it quietly.
            class _Closed:
                def Watch(self, *a, **kw):  # noqa: N802 - the gRPC stub's method name
                    raise SystemExit

            w._watch_stub = _Closed()
            w._request_queue.put(None)
        self.client.close()

    def healthy(self) -> bool:
        try:
            self.client.get("/netlab-health")
            return True
        except (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError):
            return False

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(0.1)
        return False

    def _call(self, fn: Callable, *a, **kw):
        try:
            return fn(*a, **kw)
        except (etcd3.exceptions.Etcd3Exception, grpc.RpcError) as e:
            raise StoreError(f"etcd at {self.endpoint} did not answer ({type(e).__name__}); "
                             "is the lab up? (`netlab status`)") from None

    # -- raw -----------------------------------------------------------------
    def get_raw(self, key: str) -> tuple[str | None, int]:
        value, meta = self._call(self.client.get, key)
        if value is None:
            return None, 0
        return value.decode(), meta.mod_revision

    def put_raw(self, key: str, value: str, lease=None) -> None:
        self._call(self.client.put, key, value, lease=lease)

    # -- JSON objects ----------------------------------------------------------
    def get(self, key: str) -> Item | None:
        value, meta = self._call(self.client.get, key)
        if value is None:
            return None
        return Item(key, json.loads(value), meta.mod_revision, meta.create_revision)

    def list(self, prefix: str) -> list[Item]:
        out = []
        for value, meta in self._call(self.client.get_prefix, prefix, sort_order="ascend",
                                      sort_target="key"):
            try:
                obj = json.loads(value)
            except ValueError:
                obj = value.decode()
            out.append(Item(meta.key.decode(), obj, meta.mod_revision, meta.create_revision))
        return out

    def put(self, key: str, obj: Any, lease=None) -> None:
        self._call(self.client.put, key, _dump(obj), lease=lease)

    def create(self, key: str, obj: Any, lease=None) -> bool:
        """Write only if the key does not exist (compare-and-swap on create_revision)."""
        t = self.client.transactions
        ok, _ = self._call(self.client.transaction,
                           compare=[t.create(key) == 0],
                           success=[t.put(key, _dump(obj), lease)], failure=[])
        return ok

    def update(self, key: str, obj: Any, mod_revision: int, lease=None) -> bool:
        """Write only if nobody changed the key since `mod_revision`."""
        t = self.client.transactions
        ok, _ = self._call(self.client.transaction,
                           compare=[t.mod(key) == mod_revision],
                           success=[t.put(key, _dump(obj), lease)], failure=[])
        return ok

    def list_raw(self, prefix: str) -> list["RawItem"]:
        """Values as stored (flannel's exact JSON text) with the etcd lease each key hangs on."""
        return [RawItem(meta.key.decode(), value.decode(), meta.mod_revision, meta.lease_id)
                for value, meta in self._call(self.client.get_prefix, prefix,
                                              sort_order="ascend", sort_target="key")]

    def list_raw_with_revision(self, prefix: str) -> tuple[list["RawItem"], int]:
        """`list_raw` in one consistent read, with the store revision it reflects."""
        resp = self._call(self.client.get_prefix_response, prefix, sort_order="ascend", sort_target="key")
        return ([RawItem(kv.key.decode(), kv.value.decode(), kv.mod_revision, kv.lease) for kv in resp.kvs],
                resp.header.revision)

    def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on an etcd lease; -1 if it expired or was revoked."""
        return self._call(self.client.get_lease_info, lease_id).TTL

    def refresh_lease(self, lease_id: int) -> int:
        """One keep-alive; returns the renewed TTL (0 or less: the lease is gone)."""
        resp = self._call(lambda: list(self.client.refresh_lease(lease_id)))
        return resp[0].TTL if resp else 0

    def revoke_lease(self, lease_id: int) -> bool:
        """Revoke an etcd lease, deleting every key attached to it; False if it was gone."""
        try:
            self.client.revoke_lease(lease_id)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise StoreError(f"etcd at {self.endpoint} did not answer ({type(e).__name__})") from None
        except etcd3.exceptions.Etcd3Exception as e:
            raise StoreError(f"etcd at {self.endpoint} did not answer ({type(e).__name__})") from None

    def delete(self, key: str) -> bool:
        return bool(self._call(self.client.delete, key))

    def update_all(self, writes: list[tuple[str, Any, int]]) -> bool:
        """Several update()s in one transaction (one fsync): all or none.

        For many small writes at once (the kubelet's pod statuses); keep it under etcd's
        --max-txn-ops (128)."""
        t = self.client.transactions
        ok, _ = self._call(self.client.transaction,
                           compare=[t.mod(k) == rev for k, _, rev in writes],
                           success=[t.put(k, _dump(obj)) for k, obj, _ in writes], failure=[])
        return ok

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete only if nobody changed the key since `mod_revision` (compare-and-delete)."""
        t = self.client.transactions
        ok, _ = self._call(self.client.transaction, compare=[t.mod(key) == mod_revision],
                           success=[t.delete(key)], failure=[])
        return ok

    def delete_prefix(self, prefix: str) -> None:
        self._call(self.client.delete_prefix, prefix)

    # -- multi-key transactions (services: a Service and its allocations together) ----
    def list_keys(self, prefix: str) -> list[str]:
        return [meta.key.decode() for _, meta in
                self._call(self.client.get_prefix, prefix, keys_only=True)]

    def list_with_revision(self, prefix: str) -> tuple[list[Item], int]:
        """One consistent read of a prefix and the store revision it reflects."""
        resp = self._call(self.client.get_prefix_response, prefix)
        out = []
        for kv in resp.kvs:
            try:
                obj = json.loads(kv.value)
            except ValueError:
                obj = kv.value.decode()
            out.append(Item(kv.key.decode(), obj, kv.mod_revision, kv.create_revision))
        return out, resp.header.revision

    def create_all(self, objs: dict[str, Any], delete: list[str] = ()) -> tuple[bool, int, dict[str, Any]]:
        """Create every key of `objs` (and delete `delete`) only if none of them exists.

        Returns (succeeded, revision of the write, {key: current value} of the keys that
        already existed when it failed).
        """
        t = self.client.transactions
        ok, resp = self._call(self.client.transaction,
                              compare=[t.create(k) == 0 for k in objs],
                              success=[*(t.put(k, _dump(v)) for k, v in objs.items()),
                                       *(t.delete(k) for k in delete)],
                              failure=[t.get(k) for k in objs])
        if ok:
            return True, resp[0].response_put.header.revision, {}
        existing = {}
        for k, r in zip(objs, resp):
            if r:
                value, _ = r[0]
                try:
                    existing[k] = json.loads(value)
                except ValueError:
                    existing[k] = value.decode()
        return False, 0, existing

    def changed_between(self, prefix: str, after: int, upto: int) -> bool:
        """Does `prefix` hold other contents at revision `upto` than at `after`?

        No key written in (after, upto] that is still there, and the same number of keys at
        both ends, means the same keys with the same values. (etcd3 0.12 drops
        count_only/revision/min_mod_revision from its requests, hence raw ones.)
        """
        from etcd3 import etcdrpc, utils

        def rng(revision: int, **kw):
            rq = etcdrpc.RangeRequest(key=prefix.encode(), range_end=utils.increment_last_byte(prefix.encode()),
                                      revision=revision, **kw)
            c = self.client
            return c.kvstub.Range(rq, c.timeout, credentials=c.call_credentials, metadata=c.metadata)

        if after >= upto:
            return False
        try:
            # etcd counts before filtering by revision: ask for one filtered key instead.
            if self._call(rng, upto, keys_only=True, limit=1, min_mod_revision=after + 1).kvs:
                return True
            return self._call(rng, upto, count_only=True).count != self._call(rng, after, count_only=True).count
        except StoreError:
            return True  # e.g. compacted: assume it changed

    def delete_all_if(self, key: str, mod_revision: int, also: list[str] = ()) -> tuple[bool, int]:
        """Delete `key` and `also` only if nobody changed `key` since `mod_revision`."""
        t = self.client.transactions
        ok, resp = self._call(self.client.transaction,
                              compare=[t.mod(key) == mod_revision],
                              success=[t.delete(k) for k in (key, *also)], failure=[])
        return ok, (resp[0].response_delete_range.header.revision if ok else 0)

    def revision(self) -> int:
        """The store's current revision (from a read's response header)."""
        return self._call(self.client.get_response, "/netlab-revision-probe").header.revision

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> tuple[Iterator, Callable]:
        kw = {}
        if start_revision:
            kw["start_revision"] = start_revision
        return self._call(self.client.watch_prefix, prefix, **kw)

    def add_watch_prefix_callback(self, prefix: str, callback: Callable, start_revision: int | None = None) -> int:
        kw = {}
        if start_revision:
            kw["start_revision"] = start_revision
        return self._call(self.client.add_watch_prefix_callback, prefix, callback, **kw)

    def cancel_watch(self, watch_id: int, callback: Callable | None = None) -> None:
        """Cancel a watch; with `callback`, only if that id still belongs to it.

        After a lost connection etcd3 opens a new watch stream whose ids start at 0 again,
        so a stale id may by now name another role's fresh watch: cancelling it blindly
        would silence that role until its next error (measured: after an etcd restart,
        events then arrived only with the 10 s resync).
        """
        w = self.client.watcher
        try:
            if callback is None:
                w.cancel(watch_id)
                return
            with w._lock:  # etcd3 0.12 has no public compare-and-cancel
                if w._callbacks.get(watch_id) == callback:
                    del w._callbacks[watch_id]
                    w._cancel_no_lock(watch_id)
        except Exception:  # noqa: BLE001 - the watch may already be gone with the connection
            pass

    def wait(self, prefix: str | tuple[str, ...], done: Callable[[], bool], timeout: float,
             recheck: float = 1.0) -> bool:
        """Until done() is true; False if `timeout` passed first.

        done() is evaluated again whenever etcd reports a change under `prefix` (a watch,
        opened before the first check so no change slips between them), and at the latest
        every `recheck` seconds for conditions that also depend on time (a lease expiring).
        """
        changed = threading.Event()

        def on_event(_response) -> None:
            changed.set()

        prefixes = (prefix,) if isinstance(prefix, str) else prefix
        ids = [self.add_watch_prefix_callback(p, on_event) for p in prefixes]
        try:
            deadline = time.monotonic() + timeout
            while True:
                changed.clear()
                if done():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                changed.wait(min(left, recheck))
        finally:
            for wid in ids:
                self.cancel_watch(wid, on_event)

    def lease(self, ttl: int):
        return self._call(self.client.lease, ttl)


def _dump(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), sort_keys=False)


class Informer:
    """A local cache of one etcd prefix: one list, then the watch's events applied in order.

    What client-go's informers give a controller: readers (`items()`, `get()`) never go to
    etcd, and an event costs a dict update, not a re-list. The watch starts at the list's
    revision + 1, so nothing between the two is lost. A broken watch (etcd restarted,
    revision compacted) marks the cache stale; `sync()` then lists again. With `raw=True`
    the cache holds `RawItem`s (the stored text and its etcd lease), as `list_raw` returns.
    """

    def __init__(self, st: Store, prefix: str, on_change: Callable[[], None] | None = None,
                 raw: bool = False):
        self.st, self.prefix, self.on_change, self.raw = st, prefix, on_change, raw
        self._lock = threading.Lock()
        self._items: dict[str, Item] = {}
        self.revision = 0
        self.stale = True
        self._watch_id: int | None = None

    def sync(self) -> None:
        """(Re)list and (re)watch if the cache is stale; a no-op otherwise."""
        if not self.stale:
            return
        self.stop()
        items, rev = (self.st.list_raw_with_revision if self.raw else self.st.list_with_revision)(self.prefix)
        with self._lock:
            self._items = {i.key: i for i in items}
            self.revision = rev
            self.stale = False
        self._watch_id = self.st.add_watch_prefix_callback(self.prefix, self._on_event, start_revision=rev + 1)

    def stop(self) -> None:
        if self._watch_id is not None:
            self.st.cancel_watch(self._watch_id, self._on_event)
            self._watch_id = None

    def _on_event(self, response) -> None:
        if isinstance(response, Exception):
            self.stale = True
        else:
            self.apply(response.events)
        if self.on_change:
            self.on_change()

    def apply(self, events) -> None:
        """Apply etcd watch events (PutEvent / DeleteEvent) to the cache, in order."""
        with self._lock:
            for ev in events:
                key = ev.key.decode()
                if isinstance(ev, etcd3.events.DeleteEvent):
                    self._items.pop(key, None)
                elif self.raw:
                    self._items[key] = RawItem(key, ev.value.decode(), ev.mod_revision, ev.lease)
                else:
                    try:
                        obj = json.loads(ev.value)
                    except ValueError:
                        obj = ev.value.decode()
                    self._items[key] = Item(key, obj, ev.mod_revision, ev.create_revision)
                self.revision = max(self.revision, ev.mod_revision)

    def items(self) -> list[Any]:
        """Every cached item, in key order (as `Store.list` returns them)."""
        with self._lock:
            return [self._items[k] for k in sorted(self._items)]

    def values(self) -> list[Any]:
        return [i.value for i in self.items()]

    def get(self, key: str) -> Any:
        with self._lock:
            return self._items.get(key)

