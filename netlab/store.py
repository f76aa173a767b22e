"""The lab's etcd as the API server's store: key layout, JSON objects, compare-and-swap.

Flannel's keys are exactly flannel's (`/coreos.com/network/...`); everything else lives
under `/registry/...` as Kubernetes-shaped JSON objects. Writes that allocate something
(cluster IPs, node ports, subnets) are transactions, never read-then-write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import etcd3
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
PROXY_STATUS = "/registry/netlab/proxy/"  # per node: revision the node's rules reflect


class StoreError(NetlabError):
    pass


@dataclass
class Item:
    key: str
    value: Any
    mod_revision: int
    create_revision: int


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

    def update(self, key: str, obj: Any, mod_revision: int) -> bool:
        """Write only if nobody changed the key since `mod_revision`."""
        t = self.client.transactions
        ok, _ = self._call(self.client.transaction,
                           compare=[t.mod(key) == mod_revision],
                           success=[t.put(key, _dump(obj))], failure=[])
        return ok

    def delete(self, key: str) -> bool:
        return bool(self._call(self.client.delete, key))

    def delete_prefix(self, prefix: str) -> None:
        self._call(self.client.delete_prefix, prefix)

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

    def cancel_watch(self, watch_id: int) -> None:
        try:
            self.client.cancel_watch(watch_id)
        except Exception:  # noqa: BLE001 - the watch may already be gone with the connection
            pass

    def lease(self, ttl: int):
        return self._call(self.client.lease, ttl)


def _dump(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), sort_keys=False)
