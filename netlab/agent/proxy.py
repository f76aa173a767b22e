"""kube-proxy (iptables mode) on a worker: Services + Endpoints in etcd -> this node's rules.

Owns the node's KUBE-* chains in the nat and filter tables. The rule text comes from the
pure netlab.proxy_rules.generate(); this module keeps a cache of /registry/services/ fed by
an etcd watch and writes rules with `iptables-legacy-restore --noflush` (the agent already
runs inside the node's namespace):

- a full sync (every chain declared and refilled, stale KUBE-SVC/SEP chains deleted) at
  start, every FULL_SYNC_SECONDS, after a lost watch, and when the canary chain
  KUBE-PROXY-CANARY (nat and filter) has vanished, read back with python-iptables as
  kube-proxy reads it back with iptables;
- in between, each change as soon as etcd reports it, as a partial restore touching only
  the changed services' chains and their own rules in the shared chains (-D/-A/-I), so the
  text and the Python work of one change stay tiny at 10,000 services (legacy iptables
  still reads and replaces the whole table); if the kernel disagrees (a restore fails), a
  full sync follows;
- the jumps from the built-in chains (proxy_rules.JUMPS) are ensured exactly once per full
  sync: the table read that precedes it finds the missing ones, which go into the same
  restore as `-I CHAIN 1` lines (one table replace instead of one per jump);
- conntrack entries of removed UDP endpoints are flushed (a UDP "flow" never ends on its
  own, so without it clients keep talking to a pod that is gone).

After each sync the node records /registry/netlab/proxy/<node> = {"revision": R, ...}: its
rules reflect every service write up to etcd revision R; the CLI waits on that.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Iterable

from netlab import store
from netlab.agent.base import Reconciler
from netlab.errors import KernelError
from netlab.kernel import iptables
from netlab.plan.proxy_rules import JUMPS, Endpoint, ServicePort, generate, parse_restore

PREFIX = "/registry/services/"  # specs/ and endpoints/: one watch, one consistent list
CANARY = "KUBE-PROXY-CANARY"
TABLES = ("filter", "nat")  # restore order, as kube-proxy writes them
# Chains every service adds rules to; all other KUBE-* chains a service produces are its own.
SHARED = {("nat", "KUBE-SERVICES"), ("nat", "KUBE-NODEPORTS"),
          ("filter", "KUBE-SERVICES"), ("filter", "KUBE-EXTERNAL-SERVICES")}
FULL_SYNC_SECONDS = 30.0
CANARY_SECONDS = 1.0

SvcKey = tuple[str, str]  # (namespace, name)
Input = tuple[tuple[ServicePort, tuple[Endpoint, ...]], ...]  # one service's proxy input


# --------------------------------------------------------------------------- pure parts
def service_ports(svc: dict, ep: dict | None, node: str = "", cluster_cidr: str = "") -> Input:
    """One Service (+ its Endpoints) as proxy input: a ServicePort and its endpoints per port.

    Headless services (clusterIP: None) have none: DNS alone answers for them."""
    meta, spec = svc["metadata"], svc["spec"]
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        return ()
    lb = None
    if spec.get("type") == "LoadBalancer":
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            lb = lb or ing.get("ip")
    ext_local = spec.get("type") in ("NodePort", "LoadBalancer") and spec.get("externalTrafficPolicy") == "Local"
    extra = dict(lb_ip=lb, source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()) if lb else (),
                 external_local=ext_local, internal_local=spec.get("internalTrafficPolicy") == "Local",
                 cluster_cidr=cluster_cidr if ext_local else "")
    out = []
    for p in spec.get("ports") or []:
        pname, proto = p.get("name") or "", p.get("protocol") or "TCP"
        eps = set()
        for subset in (ep or {}).get("subsets") or []:
            # kube-proxy pairs a service port with the endpoint port of the same name.
            for epp in subset.get("ports") or []:
                if (epp.get("name") or "") == pname and (epp.get("protocol") or "TCP") == proto:
                    eps.update(Endpoint(a["ip"], int(epp["port"]), bool(node) and a.get("nodeName") == node)
                               for a in subset.get("addresses") or [])
        sp = ServicePort(meta.get("namespace", "default"), meta["name"], pname, proto, ip, int(p["port"]),
                         int(p["nodePort"]) if p.get("nodePort") else None, **extra)
        out.append((sp, tuple(sorted(eps, key=lambda e: (e.ip, e.port)))))
    return tuple(out)


_BASE: dict[tuple[str, str], list[str]] | None = None


def _base() -> dict[tuple[str, str], list[str]]:
    """The rules generate() writes with no service at all (the chains every sync owns)."""
    global _BASE
    if _BASE is None:
        parsed = parse_restore(generate([]).text())
        _BASE = {(t, c): rules for t, chains in parsed.items() for c, rules in chains.items()}
    return _BASE


def contribution(inp: Input) -> dict[tuple[str, str], list[str]]:
    """What one service adds: its lines in the shared chains and its own chains' rules."""
    if not inp:
        return {}
    base = _base()
    out = {}
    for t, chains in parse_restore(generate(list(inp)).text()).items():
        for c, rules in chains.items():
            if (t, c) in SHARED:
                mine = [r for r in rules if r not in base[(t, c)]]
                if mine:
                    out[(t, c)] = mine
            elif (t, c) not in base:
                out[(t, c)] = rules
    return out


def partial_text(changes: Iterable[tuple[Input | None, Input | None]]) -> tuple[str, dict[str, set], dict[str, set]]:
    """Restore text turning the old inputs of some services into their new ones.

    Returns (text, chains created per table, chains deleted per table). Only the changed
    services' own chains are declared (declaring flushes) and refilled; their lines in the
    shared chains are removed with -D and added with -A, or -I 1 in nat KUBE-SERVICES whose
    last rule (the jump to KUBE-NODEPORTS) must stay last.
    """
    decl: dict[str, list[str]] = {t: [] for t in TABLES}
    own: dict[str, list[str]] = {t: [] for t in TABLES}
    dels: dict[str, list[str]] = {t: [] for t in TABLES}
    adds: dict[str, list[str]] = {t: [] for t in TABLES}
    gone: dict[str, set] = {t: set() for t in TABLES}
    made: dict[str, set] = {t: set() for t in TABLES}
    for old, new in changes:
        oc, nc = contribution(old or ()), contribution(new or ())
        for (t, c), lines in nc.items():
            if (t, c) in SHARED:
                before = set(oc.get((t, c), ()))
                added = [ln for ln in lines if ln not in before]
                if (t, c) == ("nat", "KUBE-SERVICES"):
                    adds[t].extend(f"-I {c} 1 {ln[len(c) + 4:]}" for ln in reversed(added))
                else:
                    adds[t].extend(added)
            elif oc.get((t, c)) != lines:
                decl[t].append(c)
                own[t].extend(lines)
                if (t, c) not in oc:
                    made[t].add(c)
        for (t, c), lines in oc.items():
            if (t, c) in SHARED:
                after = set(nc.get((t, c), ()))
                dels[t].extend("-D" + ln[2:] for ln in lines if ln not in after)
            elif (t, c) not in nc:
                decl[t].append(c)
                gone[t].add(c)
    parts = []
    for t in TABLES:
        if not (decl[t] or dels[t] or adds[t]):
            continue
        # Declared before use, references dropped (-D, flushes) before the chains go (-X).
        lines = [f"*{t}", *(f":{c} - [0:0]" for c in decl[t]), *dels[t], *own[t], *adds[t],
                 *(f"-X {c}" for c in sorted(gone[t])), "COMMIT"]
        parts.append("\n".join(lines) + "\n")
    return "".join(parts), made, gone


def full_text(inputs: Iterable[Input], existing: dict[str, set]) -> tuple[str, dict[str, set]]:
    """Restore text for every service (stale owned chains deleted) and the chains it leaves."""
    flat = [pair for inp in inputs for pair in inp]
    rs = generate(flat, existing_chains=existing)
    # kube-proxy keeps a canary chain in each table it owns; generate() declares nat's.
    filt = rs.filter.replace("*filter\n", f"*filter\n:{CANARY} - [0:0]\n", 1)
    text = filt + rs.nat
    chains: dict[str, set] = {}
    for section in (filt, rs.nat):
        lines = section.splitlines()
        declared = {ln[1:].split()[0] for ln in lines if ln.startswith(":")}
        declared -= {ln.split()[1] for ln in lines if ln.startswith("-X ")}
        chains[lines[0][1:]] = declared
    return text, chains


def stale_udp_flows(old: Input | None, new: Input | None) -> list[list[str]]:
    """conntrack -D filters for UDP flows that the change left pointing nowhere (kube-proxy's)."""
    def by_port(inp):
        return {(sp.namespace, sp.name, sp.port_name, sp.protocol): (sp, set(eps)) for sp, eps in inp or ()}
    o, n = by_port(old), by_port(new)
    out = []
    for k, (sp, eps) in o.items():
        if sp.protocol != "UDP":
            continue
        now = n.get(k, (None, set()))[1]
        for ep in sorted(eps - now, key=lambda e: e.ip):
            out.append(["-p", "udp", "--orig-dst", sp.cluster_ip, "--reply-src", ep.ip])
            if sp.node_port:
                out.append(["-p", "udp", "--orig-port-dst", str(sp.node_port), "--reply-src", ep.ip])
    for k, (sp, eps) in n.items():
        # From no endpoints to some: flows created meanwhile (answered by nothing) must go.
        if sp.protocol == "UDP" and eps and not o.get(k, (None, set()))[1]:
            out.append(["-p", "udp", "--orig-dst", sp.cluster_ip])
    return out


# --------------------------------------------------------------------------- kernel reads
def _jump_key(chain: str, args: list[str]) -> tuple[str, str, str]:
    return chain, args[args.index("-j") + 1], args[args.index("--comment") + 1]


def with_jumps(text: str, jumps: list[tuple[str, str, list[str]]]) -> str:
    """Restore text that also puts the given JUMPS at the head of their built-in chains.

    Only the jumps a read of the kernel found missing: with --noflush each line adds a rule.
    """
    for table in TABLES:
        lines = [f"-I {chain} 1 " + " ".join(f'"{a}"' if " " in a else a for a in args)
                 for t, chain, args in jumps if t == table]
        if lines:
            head, sep, tail = text.partition(f"*{table}\n")
            body, commit, rest = tail.partition("COMMIT\n")
            text = head + sep + body + "\n".join(lines) + "\n" + commit + rest
    return text


class TableView:
    """What one read of a table tells the proxy."""

    def __init__(self, chains: set[str], jumps: set[tuple[str, str, str]]):
        self.chains = chains  # every chain name
        self.jumps = jumps  # (built-in chain, target, comment) of the rules in built-in chains


class Tables:
    """Reads the node's legacy tables with python-iptables (falls back to iptables-legacy).

    python-iptables drives libip4tc, the legacy backend that iptables-legacy-restore writes;
    the role's first canary check after its first sync verifies that (sees_legacy_canaries).
    """

    BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT", "POSTROUTING")}

    def __init__(self, log):
        self.log = log
        self._tables: dict = {}
        self.use_iptc = True
        try:
            import iptc  # noqa: F401
        except Exception as e:  # noqa: BLE001
            log.warning("python-iptables unusable (%s); reading tables with iptables-legacy", e)
            self.use_iptc = False

    def _snapshot(self, name: str):
        import iptc

        t = self._tables.get(name)
        if t is None:
            # Kept: python-iptables reads the table again each time it makes a Table object.
            t = self._tables[name] = iptc.Table(name)
        else:
            t.refresh()  # a fresh copy of the kernel's table (one read of the whole table)
        return t

    def has_chain(self, table: str, chain: str) -> bool:
        if self.use_iptc:
            return self._snapshot(table).is_chain(chain)
        return iptables.iptables(None, "-t", table, "-S", chain).returncode == 0

    def read(self, table: str, with_chains: bool = True) -> TableView:
        """The jumps in the built-in chains (and the chain names), from one read of the table.

        Listing 30,000 chain names through python-iptables takes most of a second, so only
        when asked."""
        jumps = set()
        if self.use_iptc:
            import iptc

            snap = self._snapshot(table)
            chains = {c.name for c in snap.chains} if with_chains else set()
            for chain in self.BUILTIN[table]:
                for r in iptc.Chain(snap, chain).rules:
                    for m in r.matches:
                        if m.name == "comment":
                            jumps.add((chain, r.target.name, m.comment))
            return TableView(chains, jumps)
        text = iptables.iptables_save(None, table)
        chains = {ln[1:].split()[0] for ln in text.splitlines() if ln.startswith(":")}
        for ln in text.splitlines():
            m = re.match(r'-A (\S+) .*--comment (?:"([^"]*)"|(\S+)).* -j (\S+)', ln)
            if m and m.group(1) in self.BUILTIN[table]:
                jumps.add((m.group(1), m.group(4), m.group(2) or m.group(3)))
        return TableView(chains, jumps)

    def sees_legacy_canaries(self) -> bool:
        """python-iptables is blind to what iptables-legacy-restore wrote (it would read
        another backend): the canaries it misses are there for iptables-legacy."""
        return self.use_iptc and all(
            iptables.iptables(None, "-t", t, "-S", CANARY).returncode == 0 for t in TABLES)


# --------------------------------------------------------------------------- the role
class ProxyRole(Reconciler):
    name = "proxy"
    prefixes = (PREFIX,)
    resync_seconds = CANARY_SECONDS  # wake-ups for the canary; full syncs are timed apart

    def __init__(self, agent):
        super().__init__(agent)
        self.node = agent.node.name
        self.cluster_cidr = agent.lab.flannel.network
        self.health = HealthChecks(self.log)
        self.health.count = self._local_count
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, Any]] = {}  # key -> (mod_revision, object)
        self._list_rev = 0  # revision of the last full read; older events are in it
        self._cache_rev = 0  # every change up to this revision is in the cache
        self._changed: set[SvcKey] = set()
        self._need_relist = True
        self._need_full = True
        self._read_kernel = True  # learn existing chains from the kernel (start, canary gone)
        self._applied: dict[SvcKey, Input] = {}  # what the kernel holds, per service
        self._chains: dict[str, set] = {t: set() for t in TABLES}
        self._last_full = 0.0
        self._last_canary = 0.0
        self._canary_cost = 0.0
        self._backend_checked = False
        self._reported: tuple | None = None
        self.tables = Tables(self.log)
        self.last_sync: dict = {}

    # -- etcd side -------------------------------------------------------------------
    def _ensure_watches(self) -> None:
        if self._watch_broken:
            self._need_relist = True  # events were lost while the watch was down
        super()._ensure_watches()

    def _on_event(self, response) -> None:
        if isinstance(response, Exception):
            self._watch_broken = True
        else:
            with self._lock:
                for ev in response.events:
                    if ev.mod_revision <= self._list_rev:
                        continue  # the list we read already holds it
                    k = ev.key.decode()
                    if type(ev).__name__ == "DeleteEvent":
                        self._cache.pop(k, None)
                    else:
                        try:
                            self._cache[k] = (ev.mod_revision, _json(ev.value))
                        except ValueError:
                            self.log.warning("%s is not JSON, ignored", k)
                    self._cache_rev = max(self._cache_rev, ev.mod_revision)
                    sk = _svc_key(k)
                    if sk:
                        self._changed.add(sk)
        self._dirty.set()

    def _relist(self) -> None:
        # Under the lock, so no event can slip in between the read and the swap.
        with self._lock:
            items, rev = self.agent.store.list_with_revision(PREFIX)
            self._cache = {i.key: (i.mod_revision, i.value) for i in items}
            self._cache_rev = self._list_rev = rev
            self._changed.clear()
            self._need_relist = False
            self._need_full = True

    def _inputs(self, keys: Iterable[SvcKey] | None) -> dict[SvcKey, Input | None]:
        """Proxy input of the given services (all when None) from the cache; None = gone."""
        if keys is None:
            keys = {sk for k in self._cache if k.startswith(store.SERVICES) for sk in [_svc_key(k)] if sk}
        out: dict[SvcKey, Input | None] = {}
        for ns, name in keys:
            svc = self._cache.get(f"{store.SERVICES}{ns}/{name}")
            ep = self._cache.get(f"{store.ENDPOINTS}{ns}/{name}")
            if svc is None or not isinstance(svc[1], dict):
                out[(ns, name)] = None
                continue
            try:
                out[(ns, name)] = service_ports(svc[1], ep[1] if ep and isinstance(ep[1], dict) else None,
                                                self.node, self.cluster_cidr)
            except (KeyError, TypeError, ValueError) as e:
                self.log.warning("service %s/%s is malformed, skipped: %r", ns, name, e)
                out[(ns, name)] = None
        return out

    # -- kernel side -------------------------------------------------------------------
    def reconcile(self) -> None:
        if self._need_relist:
            self._relist()
        self._check_canary()
        with self._lock:
            full = self._need_full or time.monotonic() - self._last_full >= self._full_sync_every()
            keys = None if full else set(self._changed)
            self._changed.clear()
            rev = self._cache_rev
            inputs = self._inputs(keys)
        if full:
            self._full_sync(inputs, rev)
        elif inputs:
            try:
                self._partial_sync(inputs, rev)
            except KernelError as e:
                self.log.warning("partial sync failed (%s); doing a full sync", e)
                self._read_kernel = True
                with self._lock:
                    inputs = self._inputs(None)
                    rev = self._cache_rev
                self._full_sync(inputs, rev)
        with self._lock:
            self.health.sync(health_checks(self._cache))
        self._report(rev)

    def _local_count(self, ns: str, name: str) -> int:
        with self._lock:
            ep = self._cache.get(f"{store.ENDPOINTS}{ns}/{name}")
        return local_endpoints(ep[1] if ep and isinstance(ep[1], dict) else None, self.node)

    def shutdown(self) -> None:
        self.health.sync({})

    def _full_sync_every(self) -> float:
        return FULL_SYNC_SECONDS

    def _full_sync(self, inputs: dict[SvcKey, Input | None], rev: int) -> None:
        t0 = time.perf_counter()
        live = {k: v for k, v in inputs.items() if v}
        # One read per table: existing chains (to delete stale ones) and missing jumps.
        views = {t: self.tables.read(t, with_chains=self._read_kernel) for t in TABLES}
        if self._read_kernel:
            self._chains = {t: v.chains for t, v in views.items()}
        text, chains = full_text(live.values(), self._chains)
        # The jumps from the built-in chains go in the same restore, only when missing.
        missing = [(t, c, a) for t, c, a in JUMPS if _jump_key(c, a) not in views[t].jumps]
        iptables.iptables_restore(None, with_jumps(text, missing))
        self._chains = chains
        if self._last_full:
            # Not on the first sync after a start: we do not know what flows the rules
            # before us served, and flushing every UDP service would break live flows.
            self._flush_udp(self._applied, live)
        self._applied = live
        self._need_full = self._read_kernel = False
        self._last_full = time.monotonic()
        self._done("full", t0, rev, len(text))

    def _partial_sync(self, inputs: dict[SvcKey, Input | None], rev: int) -> None:
        t0 = time.perf_counter()
        changes = [(self._applied.get(k), v or None) for k, v in inputs.items()
                   if (self._applied.get(k) or None) != (v or None)]
        if changes:
            text, made, gone = partial_text(changes)
            if text:
                iptables.iptables_restore(None, text)
            for t in TABLES:
                self._chains[t] = (self._chains[t] | made[t]) - gone[t]
            old = {k: self._applied.get(k) for k in inputs}
            for k, v in inputs.items():
                if v:
                    self._applied[k] = v
                else:
                    self._applied.pop(k, None)
            self._flush_udp(old, {k: v for k, v in inputs.items() if v})
            self._done("partial", t0, rev, len(text))

    def _flush_udp(self, old: dict[SvcKey, Input], new: dict[SvcKey, Input]) -> None:
        for k in set(old) | set(new):
            if old.get(k) == new.get(k):
                continue
            for filt in stale_udp_flows(old.get(k), new.get(k)):
                try:
                    n = iptables.conntrack_delete(None, *filt)
                    if n:
                        self.log.info("conntrack: dropped %d stale flows (%s)", n, " ".join(filt))
                except KernelError as e:
                    self.log.warning("%s", e)

    def _check_canary(self) -> None:
        # Checking costs a read of the whole table; at 10,000 services keep it a small share.
        now = time.monotonic()
        if self._need_full or now - self._last_canary < max(CANARY_SECONDS, 20 * self._canary_cost):
            return
        t0 = time.perf_counter()
        missing = [t for t in TABLES if not self.tables.has_chain(t, CANARY)]
        self._canary_cost = time.perf_counter() - t0
        self._last_canary = time.monotonic()
        if missing and not self._backend_checked and self.tables.sees_legacy_canaries():
            # The first check after our first sync doubles as the check that python-iptables
            # reads the legacy tables we write.
            self.log.warning("python-iptables does not see the legacy tables; "
                             "reading them with iptables-legacy instead")
            self.tables.use_iptc = False
            missing = []
        self._backend_checked = True
        if missing:
            self.log.warning("canary chain %s gone from %s: someone flushed the rules; full resync",
                             CANARY, ", ".join(missing))
            self._need_full = self._read_kernel = True

    def _done(self, mode: str, t0: float, rev: int, nbytes: int) -> None:
        dt = time.perf_counter() - t0
        self.last_sync = {"mode": mode, "seconds": round(dt, 4), "revision": rev, "bytes": nbytes}
        self.log.info("%s sync: %d services, %d bytes, %.3fs (revision %d)",
                      mode, len(self._applied), nbytes, dt, rev)

    def _report(self, rev: int) -> None:
        state = (rev, len(self._applied), self.last_sync.get("seconds"))
        if state == self._reported:
            return
        self.agent.store.put(store.PROXY_STATUS + self.node, {
            "node": self.node, "revision": rev, "services": len(self._applied),
            "syncedAt": store.now_rfc3339(), "lastSync": self.last_sync,
        })
        self._reported = state


# --------------------------------------------------------------------------- health checks
def health_checks(cache: dict[str, tuple[int, Any]], node: str | None = None) -> dict[int, tuple[str, str]]:
    """healthCheckNodePort -> (namespace, name) of the Local LoadBalancer services (pure)."""
    out = {}
    for k, (_, svc) in cache.items():
        if k.startswith(store.SERVICES) and isinstance(svc, dict):
            spec = svc.get("spec") or {}
            if spec.get("healthCheckNodePort") and spec.get("externalTrafficPolicy") == "Local":
                out[int(spec["healthCheckNodePort"])] = (svc["metadata"]["namespace"], svc["metadata"]["name"])
    return out


def local_endpoints(ep: dict | None, node: str) -> int:
    """Ready endpoint addresses of a service on this node (kube-proxy counts them per service)."""
    return len({a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get("addresses") or []
                if a.get("nodeName") == node})


def health_body(namespace: str, name: str, local: int) -> tuple[int, dict]:
    """kube-proxy's healthcheck answer: 200 with local endpoints, 503 without."""
    return (200 if local else 503), {"service": {"namespace": namespace, "name": name},
                                     "localEndpoints": local, "serviceProxyHealthy": True}


class HealthChecks:
    """One HTTP listener per healthCheckNodePort on this node (kube-proxy's service health
    server), answering from the proxy's cache for the cloud's (here: anyone's) checks."""

    def __init__(self, log):
        self.log = log
        self.servers: dict[int, Any] = {}
        self.count = lambda ns, name: 0  # set by the role: local endpoints from its cache

    def sync(self, want: dict[int, tuple[str, str]]) -> None:
        import http.server
        import json as _json

        for port in set(self.servers) - set(want):
            srv = self.servers.pop(port)
            srv.shutdown()
            srv.server_close()
        for port, (ns, name) in want.items():
            srv = self.servers.get(port)
            if srv is not None:
                srv.target = (ns, name)
                continue
            outer = self

            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self):  # noqa: N802 - http.server's name
                    code, body = health_body(*self.server.target, outer.count(*self.server.target))
                    data = _json.dumps(body).encode() + b"\n"
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("X-Content-Type-Options", "nosniff")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

                def log_message(self, *a):
                    pass

            try:
                srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
            except OSError as e:
                self.log.warning("healthCheckNodePort %d for %s/%s: %s", port, ns, name, e)
                continue
            srv.daemon_threads = True
            srv.target = (ns, name)
            threading.Thread(target=srv.serve_forever, name=f"health-{port}", daemon=True).start()
            self.servers[port] = srv
            self.log.info("healthCheckNodePort %d serves %s/%s", port, ns, name)


def _svc_key(k: str) -> SvcKey | None:
    for prefix in (store.SERVICES, store.ENDPOINTS):
        if k.startswith(prefix):
            ns, _, name = k[len(prefix):].partition("/")
            return (ns, name) if name else None
    return None


def _json(raw: bytes):
    import json

    return json.loads(raw)
