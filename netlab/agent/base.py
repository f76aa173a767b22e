"""Reconciler: the list-watch-reconcile loop every agent role is built on.

A role names the etcd prefixes it cares about; any change under them (or the periodic
resync, or a lost watch) marks it dirty and `reconcile()` recomputes desired vs actual
state from scratch. Level-triggered, so a restarted agent adopts what exists.

Prefixes in `informed` are kept in an informer cache (`self.cache(prefix)`: one list, then
the watch's events), so `reconcile()` reads them without going to etcd; a lost watch makes
the cache list again once. Plain `prefixes` only wake the role.
"""

from __future__ import annotations

import logging
import threading
import traceback

from netlab.kernel import proc
from netlab.store import Informer

# Thread names as `ps -T` / `top -H` inside a node show them: the daemons a learner knows.
THREAD_NAMES = {"flannel": "flanneld", "proxy": "kube-proxy", "scheduler": "kube-scheduler"}


class Reconciler:
    name = "role"
    prefixes: tuple[str, ...] = ()
    informed: tuple[str, ...] = ()
    informed_raw: tuple[str, ...] = ()  # of `informed`: cached as stored text (`RawItem`s)
    resync_seconds = 10.0
    retry_seconds = 1.0

    def __init__(self, agent):  # netlab.agent.node.Agent (not imported: it imports the roles)
        self.agent = agent
        self.log = logging.getLogger(f"netlab.{self.name}")
        self._dirty = threading.Event()
        self._watch_ids: list[int] = []
        self._watch_broken = True
        self._caches: dict[str, Informer] = {}
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    # subclasses ------------------------------------------------------------
    def setup(self) -> None:
        """One-time start-up work (runs before the first reconcile, retried on failure)."""

    def reconcile(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Called when the agent stops. Kernel state stays (as when a real daemon stops)."""

    # machinery -------------------------------------------------------------
    def cache(self, prefix: str) -> Informer:
        """The informer cache of one of `informed` (in sync from the first reconcile on)."""
        return self._caches[prefix]

    def kick(self) -> None:
        self._dirty.set()

    def start(self) -> None:
        self.thread.start()

    def _on_event(self, response) -> None:
        if isinstance(response, Exception):
            self._watch_broken = True
        self._dirty.set()

    def _ensure_watches(self) -> None:
        for prefix in self.informed:
            inf = self._caches.get(prefix)
            if inf is None:
                inf = self._caches[prefix] = Informer(self.agent.store, prefix, on_change=self._dirty.set,
                                                      raw=prefix in self.informed_raw)
            inf.sync()  # lists again only after a lost watch
        if not self._watch_broken:
            return
        for wid in self._watch_ids:
            self.agent.store.cancel_watch(wid, self._on_event)  # never another role's reused id
        self._watch_ids = [self.agent.store.add_watch_prefix_callback(p, self._on_event)
                           for p in self.prefixes]
        self._watch_broken = False

    def _loop(self) -> None:
        proc.set_thread_name(THREAD_NAMES.get(self.name, self.name))
        stop = self.agent.stopping
        set_up = False
        while not stop.is_set():
            try:
                if not set_up:
                    self.setup()
                    set_up = True
                self._ensure_watches()
                self._dirty.clear()
                self.reconcile()
                self._dirty.wait(self.resync_seconds)
            except Exception:  # noqa: BLE001 - a role must survive etcd restarts and races
                self.log.error("%s failed, retrying:\n%s", self.name, traceback.format_exc())
                self._watch_broken = True
                for inf in self._caches.values():
                    inf.stale = True
                stop.wait(self.retry_seconds)
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001
            self.log.error("shutdown: %s", traceback.format_exc())
