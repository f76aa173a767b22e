"""Flannel role: this node's subnet lease in etcd and the VXLAN overlay, as flanneld does it.

Runs in the node's agent, inside the node's namespace (kernel calls need no namespace
switch) with the node's own /run/flannel. It owns:
  - the node's lease under /coreos.com/network/subnets/ (chosen in flannel's order, created
    with a compare-and-swap transaction, kept alive, re-acquired if it vanishes);
  - /run/flannel/subnet.env, flannel.<VNI> (vxlan, MAC = VtepMAC), docker0 (<subnet>.1);
  - per other lease: permanent neighbour <subnet>.0 -> VtepMAC, FDB VtepMAC -> PublicIP and
    the route <subnet> via <subnet>.0 onlink; kernel entries matching no lease are removed;
  - flannel's FLANNEL-POSTRTG (ip-masq) and FLANNEL-FWD iptables chains.
The pure parts (which rules, which entries) are functions at the top; subnet choice and
lease JSON come from netlab.plan.flannel_leases.
"""

from __future__ import annotations

import ipaddress
import os
import random
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Network

from netlab import names, store
from netlab.agent.base import Reconciler
from netlab.errors import KernelError
from netlab.kernel import iptables, netlink, netns
from netlab.plan import flannel_leases as fl
from netlab.store import Store

BRIDGE = "docker0"
VXLAN_OVERHEAD = 50  # outer Ethernet + IP + UDP + VXLAN headers: flannel's MTU - 50
MASQ_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"  # kube-proxy's masquerade mark: never NAT twice
ACQUIRE_ATTEMPTS = 20


def vxlan_dev(vni: int) -> str:
    """flannel names the device after the VNI: flannel.1."""
    return f"flannel.{vni}"


# --------------------------------------------------------------------------- pure: iptables
def masq_rules(network: IPv4Network, subnet: IPv4Network) -> list[str]:
    """FLANNEL-POSTRTG as flannel's trafficmngr/iptables masqRules builds it (iptables-save form)."""
    c = f'-m comment --comment "{MASQ_COMMENT}"'
    n, s = str(network), str(subnet)
    return [
        f"-A {MASQ_CHAIN} -m mark --mark {KUBE_PROXY_MARK} {c} -j RETURN",
        # pod <-> pod inside the overlay: never NAT
        f"-A {MASQ_CHAIN} -s {s} -d {n} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {n} -d {s} {c} -j RETURN",
        # outside traffic delivered to a local pod keeps its source
        f"-A {MASQ_CHAIN} ! -s {n} -d {s} {c} -j RETURN",
        # pods going out of the overlay (not multicast)
        f"-A {MASQ_CHAIN} -s {n} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        # the host going into the overlay
        f"-A {MASQ_CHAIN} ! -s {n} -d {n} {c} -j MASQUERADE --random-fully",
    ]


def forward_rules(network: IPv4Network) -> list[str]:
    c = f'-m comment --comment "{FWD_COMMENT}"'
    return [f"-A {FWD_CHAIN} -s {network} {c} -j ACCEPT",
            f"-A {FWD_CHAIN} -d {network} {c} -j ACCEPT"]


# table -> (built-in chain, the one jump flannel appends to it, as iptables arguments)
JUMPS = {
    "nat": ("POSTROUTING", ["-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN]),
    "filter": ("FORWARD", ["-m", "comment", "--comment", FWD_COMMENT, "-j", FWD_CHAIN]),
}


def save_form(chain: str, spec: list[str]) -> str:
    """A rule as iptables-save prints it (arguments with spaces in double quotes)."""
    return " ".join(["-A", chain] + [f'"{a}"' if " " in a else a for a in spec])


def desired_chains(network: IPv4Network, subnet: IPv4Network, ip_masq: bool) -> dict[str, tuple[str, list[str]]]:
    """table -> (flannel chain, its rules)."""
    out = {"filter": (FWD_CHAIN, forward_rules(network))}
    if ip_masq:
        out["nat"] = (MASQ_CHAIN, masq_rules(network, subnet))
    return out


def restore_text(chains: dict[str, tuple[str, list[str]]]) -> str:
    """iptables-restore --noflush input: declaring a chain flushes it, then it is refilled."""
    lines = []
    for table, (chain, rules) in chains.items():
        lines += [f"*{table}", f":{chain} - [0:0]", *rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def chain_rules(save_text: str, chain: str) -> list[str]:
    """The `-A <chain> ...` lines of one chain in iptables-save output."""
    return [l for l in save_text.splitlines() if l.startswith(f"-A {chain} ")]


# --------------------------------------------------------------------------- pure: peers
@dataclass(frozen=True)
class Peer:
    subnet: IPv4Network
    public_ip: str
    vtep_mac: str

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address)


def peers(leases: dict[IPv4Network, fl.Lease], own_subnet: IPv4Network | None, own_ip: str) -> dict[IPv4Network, Peer]:
    """Leases this node must program: every other vxlan lease that says where its VTEP is
    (a bare reservation `{"PublicIP": ...}` has no VtepMAC yet, flannel skips it too)."""
    out = {}
    for sn, l in leases.items():
        if sn == own_subnet or l.public_ip == own_ip:
            continue
        if l.backend_type != "vxlan" or not l.vtep_mac:
            continue
        out[sn] = Peer(sn, l.public_ip, l.vtep_mac)
    return out


@dataclass
class PeerPlan:
    add_neigh: list[tuple[str, str]]       # (ip, mac)
    add_fdb: list[tuple[str, str]]         # (mac, remote ip)
    add_route: list[tuple[str, str]]       # (dst, gateway)
    del_route: list[str]
    del_neigh: list[str]
    del_fdb: list[tuple[str, str]]

    def empty(self) -> bool:
        return not any(vars(self).values())


def plan_peers(want: dict[IPv4Network, Peer], routes: dict[str, str | None],
               neighs: dict[str, str | None], fdb: set[tuple[str, str | None]]) -> PeerPlan:
    """Desired vs actual entries on flannel.1 (routes: dst -> gateway; neighs: ip -> mac;
    fdb: (mac, dst)). Anything on the device that matches no lease is stale."""
    w_routes = {str(p.subnet): p.gateway for p in want.values()}
    w_neigh = {p.gateway: p.vtep_mac for p in want.values()}
    w_fdb = {(p.vtep_mac, p.public_ip) for p in want.values()}
    return PeerPlan(
        add_neigh=sorted((ip, mac) for ip, mac in w_neigh.items() if neighs.get(ip) != mac),
        add_fdb=sorted(e for e in w_fdb if e not in fdb),
        add_route=sorted((d, gw) for d, gw in w_routes.items() if routes.get(d) != gw),
        del_route=sorted(d for d in routes if d not in w_routes),
        del_neigh=sorted(ip for ip in neighs if ip not in w_neigh),
        del_fdb=sorted((m, d) for m, d in fdb if (m, d) not in w_fdb and m is not None and d is not None),
    )


# --------------------------------------------------------------------------- etcd: the lease
def read_leases(items: list[store.RawItem]) -> dict[IPv4Network, tuple[fl.Lease, store.RawItem]]:
    out = {}
    for it in items:
        try:
            lease = fl.parse_lease(it.key, it.value)
        except ValueError:
            continue  # not flannel's JSON: flannel ignores it too
        if lease is not None:
            out[lease.subnet] = (lease, it)
    return out


@dataclass
class Held:
    subnet: IPv4Network
    lease_id: int  # 0: a reservation (no TTL)
    value: str
    reason: str


def acquire(st: Store, config: fl.NetworkConfig, public_ip: str, value: str, ttl: int, *,
            previous: IPv4Network | None = None, reserved: dict[IPv4Network, str] | None = None,
            prefix: str = fl.DEFAULT_PREFIX, rng: random.Random | None = None,
            attempts: int = ACQUIRE_ATTEMPTS, log=None) -> Held:
    """flannel's tryAcquireLease, retried on a lost race (flannel gives up there).

    Order: a lease already held by this PublicIP (a reservation keeps no TTL), a lab-file
    reservation, the subnet of the previous subnet.env, a random one of the first 100 free.
    New leases are created with a create-only transaction; a loser picks again.
    """
    subnets = fl.subnets_prefix(prefix)
    for attempt in range(attempts):
        leases = read_leases(st.list_raw(subnets))
        table = {sn: l.public_ip for sn, (l, _) in leases.items()}
        for sn in fl.stale_leases(config, table, public_ip):
            st.delete(fl.lease_key(sn, prefix))  # flannel deletes its leases that no longer fit
            table.pop(sn)
            leases.pop(sn)
        sn, reason = fl.choose_subnet(config, table, public_ip, previous, reserved, rng)
        key = fl.lease_key(sn, prefix)
        if sn in leases:  # "existing": ours by PublicIP
            it = leases[sn][1]
            if it.lease_id == 0:  # a reservation stays without TTL; only its attributes change
                if it.value == value or st.update(key, value, it.mod_revision):
                    return Held(sn, 0, value, "reserved" if reason == "existing" else reason)
                continue
            if it.value == value and st.lease_ttl(it.lease_id) > 0:
                return Held(sn, it.lease_id, value, "existing")  # a restarted agent adopts it
            lease = st.lease(ttl)
            if st.update(key, value, it.mod_revision, lease=lease.id):
                st.revoke_lease(it.lease_id)  # the key moved to the new lease; drop the old one
                return Held(sn, lease.id, value, reason)
            st.revoke_lease(lease.id)
            continue
        lease_id = 0 if reason == "reserved" else st.lease(ttl).id
        if st.create(key, value, lease=lease_id or None):
            return Held(sn, lease_id, value, reason)
        if lease_id:
            st.revoke_lease(lease_id)
        if log:
            log.info("lost the race for %s (attempt %d), choosing again", sn, attempt + 1)
    raise fl.LeaseError(f"could not acquire a subnet lease after {attempts} attempts")


# --------------------------------------------------------------------------- the role
class FlannelRole(Reconciler):
    name = "flannel"
    prefixes = (store.FLANNEL_CONFIG,)
    # Every node's lease event reaches every node: read the leases from a cache, not a list.
    informed = informed_raw = (store.FLANNEL_SUBNETS,)

    def __init__(self, agent):
        super().__init__(agent)
        self.lab = agent.lab
        self.node = agent.node
        self.vtep_mac = fl.vtep_mac(f"{self.lab.name}/{self.node.name}")
        self.held: Held | None = None
        self.nl: netlink.Netlink | None = None
        self._local_key = None
        self._local_checked = 0.0
        self._t0 = 0.0  # when the running reconcile started (for the log's latency figure)
        self._lock = threading.Lock()
        self._keepalive = threading.Thread(target=self._keepalive_loop, name="flannel-lease", daemon=True)
        self.subnet_env = names.FLANNEL_RUN / "subnet.env"

    @property
    def store(self) -> Store:
        return self.agent.store

    def setup(self) -> None:
        if self.nl is None:
            self.nl = netlink.Netlink()
        if not self._keepalive.is_alive():
            self._keepalive.start()

    def shutdown(self) -> None:
        # Like flanneld: the lease and the kernel state stay; a restart adopts them.
        if self.nl:
            self.nl.close()

    # -- reconcile ----------------------------------------------------------------
    def reconcile(self) -> None:
        self._t0 = time.perf_counter()
        raw, _ = self.store.get_raw(store.FLANNEL_CONFIG)
        if raw is None:
            raise RuntimeError(f"no network config at {store.FLANNEL_CONFIG} yet")
        config = fl.NetworkConfig.from_json(raw)
        value = fl.lease_value(self.node.ip, self.vtep_mac, config.vni)
        leases = read_leases(self.cache(store.FLANNEL_SUBNETS).items())
        held = self.held
        if not self._still_held(held, leases, value):
            held = self._acquire(config, value)  # reads etcd itself: it writes by compare-and-swap
            leases = read_leases(self.store.list_raw(store.FLANNEL_SUBNETS))
        dev = vxlan_dev(config.vni)
        # This node's own devices, files and rules change only with its lease or the config;
        # check them then and on every resync, not on each other node's lease event (the
        # hot path: another node's lease reaching this kernel).
        local = (held.subnet, raw)
        if local != self._local_key or time.monotonic() - self._local_checked >= self.resync_seconds:
            mtu = self.nl.link_info(names.NODE_UPLINK)["mtu"] - VXLAN_OVERHEAD
            self._ensure_vxlan(dev, config, held.subnet, mtu)
            self._ensure_bridge(held.subnet, mtu)
            self._write_subnet_env(config, held.subnet, mtu)
            self._ensure_iptables(config.network, held.subnet)
            self._ensure_pod_cidr(held.subnet)
            self._local_key, self._local_checked = local, time.monotonic()
        self._program_peers(dev, peers({sn: l for sn, (l, _) in leases.items()}, held.subnet, self.node.ip))

    @staticmethod
    def _still_held(h: Held | None, leases, value: str) -> bool:
        if h is None or h.subnet not in leases or h.value != value:
            return False
        it = leases[h.subnet][1]
        return it.value == value and it.lease_id == h.lease_id

    def _acquire(self, config: fl.NetworkConfig, value: str) -> Held:
        try:
            previous = fl.previous_subnet(self.subnet_env.read_text())
        except OSError:
            previous = None
        ips = {n.name: n.ip for n in self.lab.nodes}
        reserved = {ipaddress.IPv4Network(sn): ips[node]
                    for node, sn in self.lab.flannel.reservations.items() if node in ips}
        held = acquire(self.store, config, self.node.ip, value, self.lab.flannel.lease_ttl,
                       previous=previous, reserved=reserved, log=self.log)
        with self._lock:
            old, self.held = self.held, held
        if old and old.lease_id and old.lease_id != held.lease_id:
            self.store.revoke_lease(old.lease_id)  # its key is gone or moved: do not leak it
        ttl = "no TTL (reservation)" if held.lease_id == 0 else f"TTL {self.lab.flannel.lease_ttl}s"
        self.log.info("lease %s (%s), %s, etcd lease %x", held.subnet, held.reason, ttl, held.lease_id)
        return held

    # -- keep-alive -----------------------------------------------------------------
    def _keepalive_loop(self) -> None:
        # Renew at a third of the TTL: two renewals can fail before the lease lapses.
        every = max(1.0, min(self.lab.flannel.lease_ttl / 3.0, 600.0))
        while not self.agent.stopping.wait(every):
            with self._lock:
                lease_id = self.held.lease_id if self.held else 0
            if not lease_id:
                continue
            try:
                if self.store.refresh_lease(lease_id) <= 0:
                    self.log.warning("etcd lease %x expired; acquiring again", lease_id)
                    with self._lock:
                        if self.held and self.held.lease_id == lease_id:
                            self.held = None
                    self.kick()
            except Exception as e:  # noqa: BLE001 - etcd restarting: try again next round
                self.log.warning("lease keep-alive failed: %s", e)

    # -- local devices -------------------------------------------------------------
    def _ensure_vxlan(self, dev: str, config: fl.NetworkConfig, subnet: IPv4Network, mtu: int) -> None:
        nl = self.nl
        uplink = nl.must_index(names.NODE_UPLINK)
        info = nl.vxlan_info(dev)
        want = {"kind": "vxlan", "vni": config.vni, "port": config.port, "local": self.node.ip,
                "learning": 0, "link": uplink}
        if info is not None and (info != want or nl.link_info(dev)["mac"] != self.vtep_mac):
            # As flanneld: an incompatible device is replaced, not patched (its entries are
            # programmed again below, from the leases).
            self.log.info("%s has %s, want %s and MAC %s: re-creating it", dev, info, want, self.vtep_mac)
            nl.delete_link(dev)
        if nl.ensure_vxlan(dev, vni=config.vni, port=config.port, local=self.node.ip,
                           dev=names.NODE_UPLINK, mtu=mtu, mac=self.vtep_mac):
            self.log.info("created %s (VNI %d, port %d, VtepMAC %s)", dev, config.vni, config.port, self.vtep_mac)
        li = nl.link_info(dev)
        if li["mtu"] != mtu or not li["up"]:
            nl.set_link(dev, mtu=mtu, state="up")
        self._ensure_only_addr(dev, str(subnet.network_address), 32)

    def _ensure_bridge(self, subnet: IPv4Network, mtu: int) -> None:
        nl = self.nl
        li = nl.link_info(BRIDGE)
        if li is None:
            nl.ensure_bridge(BRIDGE, mtu=mtu)
            self.log.info("created %s", BRIDGE)
        elif li["mtu"] != mtu or not li["up"]:
            nl.set_link(BRIDGE, mtu=mtu, state="up")
        self._ensure_only_addr(BRIDGE, str(subnet.network_address + 1), subnet.prefixlen)

    def _ensure_only_addr(self, dev: str, addr: str, plen: int) -> None:
        have = self.nl.addrs(dev)
        for a, p in have:
            if (a, p) != (addr, plen):
                self.nl.delete_addr(dev, a, p)
        if (addr, plen) not in have:
            self.nl.ensure_addr(dev, addr, plen)

    def _write_subnet_env(self, config: fl.NetworkConfig, subnet: IPv4Network, mtu: int) -> None:
        # /run/flannel must be this node's private bind mount: never write the host's.
        if not netns.is_mount_point(names.FLANNEL_RUN):
            raise KernelError(f"{names.FLANNEL_RUN} is not this node's private mount; "
                              "the agent must be started by `netlab up`")
        text = fl.subnet_env(config, subnet, mtu, self.lab.flannel.ip_masq)
        try:
            if self.subnet_env.read_text() == text:
                return
        except OSError:
            pass
        tmp = self.subnet_env.with_name(".subnet.env.tmp")  # readers never see half a file
        tmp.write_text(text)
        os.replace(tmp, self.subnet_env)
        self.log.info("wrote %s: %s", self.subnet_env, text.replace("\n", " ").strip())

    # -- other leases --------------------------------------------------------------
    def _program_peers(self, dev: str, want: dict[IPv4Network, Peer]) -> None:
        nl = self.nl
        idx = nl.must_index(dev)
        routes = {r["dst"]: r["gateway"] for r in nl.routes() if r["oif"] == idx}
        neighs = {ip: mac for ip, mac, _ in nl.neighbours(dev)}
        fdb = set(nl.fdb_entries(dev))
        plan = plan_peers(want, routes, neighs, fdb)
        if plan.empty():
            return
        # flannel's order: removals route first; additions neighbour, FDB, then route.
        for dst in plan.del_route:
            nl.delete_route(dst)
        for ip in plan.del_neigh:
            nl.neigh_delete(dev, ip)
        for mac, dst in plan.del_fdb:
            nl.fdb_delete(dev, mac, dst)
        for ip, mac in plan.add_neigh:
            nl.neigh_replace(dev, ip, mac)
        for mac, dst in plan.add_fdb:
            nl.fdb_replace(dev, mac, dst)
        for dst, gw in plan.add_route:
            nl.ensure_route(dst, gateway=gw, dev=dev, onlink=True)
        self.log.info("peers: +%s -%s (%.0f ms after the change was seen)", [d for d, _ in plan.add_route] or "",
                      plan.del_route or "", (time.perf_counter() - self._t0) * 1000)

    # -- iptables ------------------------------------------------------------------
    def _ensure_iptables(self, network: IPv4Network, subnet: IPv4Network) -> None:
        chains = desired_chains(network, subnet, self.lab.flannel.ip_masq)
        saved = {t: iptables.iptables_save(None, t) for t in chains}
        if any(chain_rules(saved[t], c) != rules for t, (c, rules) in chains.items()):
            iptables.iptables_restore(None, restore_text(chains))
            self.log.info("wrote %s", ", ".join(c for c, _ in chains.values()))
        for table in chains:
            self._ensure_jump_once(table, saved[table])

    def _ensure_jump_once(self, table: str, saved: str) -> None:
        chain, spec = JUMPS[table]
        rule = save_form(chain, spec)
        count = sum(1 for l in saved.splitlines() if l == rule)
        for _ in range(count - 1):
            iptables.iptables(None, "-t", table, "-D", chain, *spec)
        if count == 0 and iptables.iptables(None, "-t", table, "-C", chain, *spec).returncode != 0:
            r = iptables.iptables(None, "-t", table, "-A", chain, *spec)
            if r.returncode != 0:
                raise KernelError(f"iptables -t {table} -A {chain}: {r.stderr.strip()}")

    # -- node object -----------------------------------------------------------------
    def _ensure_pod_cidr(self, subnet: IPv4Network) -> None:
        key = store.NODES + self.node.name
        item = self.store.get(key)
        if item is None or (item.value.get("spec") or {}).get("podCIDR") == str(subnet):
            return
        obj = item.value
        obj.setdefault("spec", {})["podCIDR"] = str(subnet)
        obj["spec"]["podCIDRs"] = [str(subnet)]
        if not self.store.update(key, obj, item.mod_revision):
            self.kick()  # someone else wrote the node meanwhile: try again

