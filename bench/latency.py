"""Network programming latency: from an etcd write until the kernel state is on every node.

In a bench lab with W workers, three kinds of change, each repeated `changes` times:
  - service created (netlab.api.services.create, the API server's own write) until every
    worker's kube-proxy reports rules at that revision or later;
  - endpoints changed (one address replaced, a plain etcd put) until the same;
  - flannel lease added (a lease key as flanneld writes it) until the route to its subnet
    is in every flannel node's routing table, and removed again until it is gone.
The proxy reports /registry/netlab/proxy/<node> after its iptables-restore returned, so the
latency measured is an upper bound (it includes the report write and the watch delivery).
Every tenth service change is also checked in the kernel (iptables-legacy-save per node).
Routes are watched with `ip monitor route` in each node: the kernel's own notification.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import subprocess
import threading
import time

from bench.common import close_store, in_ns, lab, log, median, pct, sh


class ProxyWatch:
    """Latest revision reported by each worker's proxy, with the time it arrived."""

    def __init__(self, st, prefix: str):
        self.cond = threading.Condition()
        self.rev: dict[str, tuple[int, float]] = {}
        for item in st.list(prefix):
            self.rev[item.value["node"]] = (int(item.value["revision"]), time.perf_counter())
        self.wid = st.add_watch_prefix_callback(prefix, self._event)

    def _event(self, resp) -> None:
        now = time.perf_counter()
        if isinstance(resp, Exception):
            return
        with self.cond:
            for ev in resp.events:
                try:
                    v = json.loads(ev.value)
                    self.rev[v["node"]] = (int(v["revision"]), now)
                except (ValueError, KeyError, TypeError):
                    continue
            self.cond.notify_all()

    def wait(self, nodes: list[str], revision: int, timeout: float = 30) -> float:
        """perf_counter() at which the last of `nodes` reported `revision` or later."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [self.rev.get(n) for n in nodes]
                if all(g and g[0] >= revision for g in got):
                    return max(g[1] for g in got)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"proxies did not reach revision {revision}: {self.rev}")
                self.cond.wait(left)


class RouteWatch:
    """`ip monitor route` in each node: (time, node, deleted?, destination) events."""

    def __init__(self, namespaces: dict[str, str]):
        self.q: queue.Queue = queue.Queue()
        self.procs = []
        for node, ns in namespaces.items():
            p = subprocess.Popen(in_ns(ns, "ip", "monitor", "route"), stdout=subprocess.PIPE, text=True, bufsize=1)
            self.procs.append(p)
            threading.Thread(target=self._read, args=(node, p), daemon=True).start()
        time.sleep(0.2)  # let every monitor subscribe before the first change

    def _read(self, node: str, p) -> None:
        for line in p.stdout:
            now = time.perf_counter()
            words = line.split()
            if not words:
                continue
            deleted = words[0] == "Deleted"
            self.q.put((now, node, deleted, words[1] if deleted else words[0]))

    def wait(self, nodes: set[str], dst: str, deleted: bool, timeout: float = 30) -> float:
        pending, last = set(nodes), 0.0
        deadline = time.monotonic() + timeout
        while pending:
            t, node, d, what = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            if what == dst and d == deleted and node in pending:
                pending.discard(node)
                last = t
        return last

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def _summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": median(ms), "p99_ms": pct(ms, 99), "max_ms": max(ms), "all_ms": ms}


def _profile_leases(name, labo, st, key, node_ns, changes: int = 20) -> dict | None:
    """py-spy on every agent while 20 more leases come and go (not timed)."""
    from bench import profile
    from netlab.lab.running import agent_pid
    from netlab.plan import flannel_leases as fl

    if not profile.available():
        return None
    h = profile.start_pids([p for p in (agent_pid(name, n.name) for n in labo.nodes) if p])
    rw = RouteWatch(node_ns)
    try:
        for i in range(changes):
            st.put_raw(key, fl.lease_value("172.23.100.250", f"02:42:ac:de:01:{i:02x}", 1))
            rw.wait(set(node_ns), "10.1.224.0/22", False)
            st.delete(key)
            rw.wait(set(node_ns), "10.1.224.0/22", True)
    finally:
        rw.close()
        prof = h.stop()
    prof["what"] = f"all {len(node_ns)} agents while {changes} leases were added and removed (CPU only)"
    return prof


def run(workers: int, changes: int) -> dict:
    from netlab import names, store
    from netlab.api import services
    from netlab.lab.running import load_running_lab
    from netlab.plan import flannel_leases as fl
    from netlab.store import Store

    name = f"benchlat{workers}"
    with lab(name, workers):
        labo = load_running_lab(name)
        st = Store.for_lab(name)
        wk = [n.name for n in labo.workers]
        node_ns = {n.name: names.node_ns(name, n.name) for n in labo.nodes}
        pw = ProxyWatch(st, store.PROXY_STATUS)
        # The lab is ready for this when every proxy has reported and every node has flannel.1.
        deadline = time.monotonic() + 60
        while not (all(n in pw.rev for n in wk)
                   and all("flannel.1" in sh(*in_ns(ns, "ip", "-o", "link")).stdout for ns in node_ns.values())):
            if time.monotonic() > deadline:
                raise RuntimeError("bench lab did not become ready (proxies/flannel)")
            time.sleep(0.2)
        res: dict = {"workers": workers, "changes": changes}

        def check_kernel(ip: str, want: bool) -> None:
            for n in wk:
                has = ip in sh(*in_ns(node_ns[n], "iptables-legacy-save", "-t", "filter")).stdout + \
                    sh(*in_ns(node_ns[n], "iptables-legacy-save", "-t", "nat")).stdout
                if has != want:
                    raise RuntimeError(f"{n}: rules for {ip} {'missing' if want else 'still there'} "
                                       "after the proxy reported them in place")

        # 1. services created (no selector: their Endpoints are ours to write below).
        lat, svcs = [], []
        for i in range(changes):
            doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"lat{i}", "namespace": "default"},
                   "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
            t0 = time.perf_counter()
            svc, rev = services.create(st, labo, doc)
            lat.append((pw.wait(wk, rev) - t0) * 1000)
            svcs.append(svc)
            if i % 10 == 9:
                check_kernel(svc["spec"]["clusterIP"], True)
        res["service_created"] = _summary(lat)
        log(f"latency {workers} workers: service created p50 {res['service_created']['p50_ms']:.1f} ms "
            f"p99 {res['service_created']['p99_ms']:.1f} ms")

        # 2. endpoints changed: each put gives a service a new pair of endpoint addresses.
        lat = []
        for i in range(changes):
            svc = svcs[i % len(svcs)]
            m = svc["metadata"]
            eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": m["name"], "namespace": m["namespace"]},
                   "subsets": [{"addresses": [{"ip": f"10.1.{1 + i % 200}.{2 + i % 250}"}, {"ip": f"10.1.{1 + i % 200}.3"}],
                                "ports": [{"port": 8080, "protocol": "TCP"}]}]}
            t0 = time.perf_counter()
            resp = st.client.put(services.endpoints_key(m["namespace"], m["name"]), json.dumps(eps))
            lat.append((pw.wait(wk, resp.header.revision) - t0) * 1000)
            if i % 10 == 9:
                check_kernel(f"10.1.{1 + i % 200}.{2 + i % 250}:8080", True)
        res["endpoints_changed"] = _summary(lat)
        log(f"latency {workers} workers: endpoints changed p50 {res['endpoints_changed']['p50_ms']:.1f} ms "
            f"p99 {res['endpoints_changed']['p99_ms']:.1f} ms")
        st.cancel_watch(pw.wid)

        # 3. flannel leases: added until routed on every node, removed until unrouted.
        rw = RouteWatch(node_ns)
        try:
            add, rem = [], []
            sn = "10.1.224.0/22"
            key = fl.lease_key(ipaddress.IPv4Network(sn))
            for i in range(changes):
                value = fl.lease_value("172.23.100.250", f"02:42:ac:de:00:{i % 256:02x}", 1)
                t0 = time.perf_counter()
                st.put_raw(key, value)
                add.append((rw.wait(set(node_ns), sn, False) - t0) * 1000)
                t0 = time.perf_counter()
                st.delete(key)
                rem.append((rw.wait(set(node_ns), sn, True) - t0) * 1000)
        finally:
            rw.close()
        res["lease_added"] = _summary(add)
        res["profile"] = _profile_leases(name, labo, st, key, node_ns)
        res["lease_removed"] = _summary(rem)
        log(f"latency {workers} workers: lease added p50 {res['lease_added']['p50_ms']:.1f} ms "
            f"p99 {res['lease_added']['p99_ms']:.1f} ms")
        close_store(st)
    return res
