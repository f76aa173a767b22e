"""Packet-path prediction: follow one packet hop by hop through a snapshot of kernel state.

Owns the trace model (Snapshot of namespaces -> Trace of hops and a verdict) and the walk:
routing (longest prefix from the namespace's real main table), netfilter in hook order
(OUTPUT for locally generated, PREROUTING/FORWARD/POSTROUTING for forwarded, INPUT for
local delivery, bridged frames through br_netfilter when the namespace enables it), bridge
forwarding by FDB, VXLAN encapsulation from the VXLAN device's neighbour and FDB entries,
decapsulation, and socket lookup at the end. Pure: the caller (netlab/kernel/snapshot.py)
reads the kernel; nothing here does I/O.

Netfilter rules come through the `RuleSource` interface: `IptablesRules` parses
`iptables-save` text; plan.nft_trace.NftRules reads kube-proxy's nftables table from
`nft -j` JSON; both offer the same two methods (base chains per hook with their
priorities, and evaluating one chain).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Protocol

__all__ = [
    "Link", "Vxlan", "Route", "Neighbour", "FdbEntry", "Socket", "Namespace", "Snapshot",
    "Packet", "Decision", "Choice", "Hop", "Verdict", "Trace",
    "RuleSource", "IptablesRules", "parse_route", "parse_iptables_save", "trace",
]

# --------------------------------------------------------------------------- snapshot model


@dataclass
class Vxlan:
    vni: int
    port: int
    local: str | None
    dev: str | None = None  # lower device (ens3)
    learning: bool = False


@dataclass
class Link:
    name: str
    kind: str = ""  # "veth", "bridge", "vxlan", "loopback", "" (other)
    mac: str = ""
    addresses: list[tuple[str, int]] = field(default_factory=list)  # (ip, prefixlen)
    master: str | None = None  # bridge this link is a port of
    peer: tuple[str, str] | None = None  # veth: (peer namespace, peer ifname)
    vxlan: Vxlan | None = None
    up: bool = True
    mtu: int = 1500
    hairpin: bool = False  # as a bridge port
    alias: str | None = None


@dataclass
class Route:
    dst: str  # "default" or "a.b.c.d/n"
    dev: str | None = None
    gateway: str | None = None
    src: str | None = None
    type: str = "unicast"  # unicast, blackhole, unreachable, prohibit
    scope: str | None = None
    proto: str | None = None
    onlink: bool = False
    metric: int = 0
    linkdown: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network("0.0.0.0/0" if self.dst == "default" else self.dst, strict=False)

    def __str__(self) -> str:
        # As `ip route` prints it.
        parts = [] if self.type == "unicast" else [self.type]
        net = self.network
        parts.append("default" if self.dst == "default" else
                     (str(net.network_address) if net.prefixlen == 32 else str(net)))
        if self.gateway:
            parts += ["via", self.gateway]
        if self.dev:
            parts += ["dev", self.dev]
        if self.proto:
            parts += ["proto", self.proto]
        if self.scope:
            parts += ["scope", self.scope]
        if self.src:
            parts += ["src", self.src]
        if self.metric:
            parts += ["metric", str(self.metric)]
        if self.onlink:
            parts.append("onlink")
        if self.linkdown:
            parts.append("linkdown")
        return " ".join(parts)


_ROUTE_TYPES = ("unicast", "blackhole", "unreachable", "prohibit", "local", "broadcast", "throw")


def parse_route(line: str) -> Route:
    """One line of `ip route` output."""
    tok = line.split()
    r = Route(dst="default")
    if tok and tok[0] in _ROUTE_TYPES:
        r.type = tok.pop(0)
    if not tok:
        raise ValueError(f"route: empty line {line!r}")
    r.dst = tok.pop(0)
    if r.dst != "default" and "/" not in r.dst:
        r.dst += "/32"
    i = 0
    while i < len(tok):
        k = tok[i]
        v = tok[i + 1] if i + 1 < len(tok) else None
        if k in ("via", "dev", "src", "proto", "scope", "metric"):
            attr = {"via": "gateway"}.get(k, k)
            setattr(r, attr, int(v) if k == "metric" else v)
            i += 2
            continue
        if k == "onlink":
            r.onlink = True
        elif k == "linkdown":
            r.linkdown = True
        i += 1
    return r


@dataclass
class Neighbour:
    ip: str
    dev: str
    mac: str | None
    state: str = "PERMANENT"  # as `ip neigh` prints it

    def __str__(self) -> str:
        return f"{self.ip} dev {self.dev}" + (f" lladdr {self.mac}" if self.mac else "") + f" {self.state}"


@dataclass
class FdbEntry:
    mac: str
    dev: str  # the port (bridge) or the VXLAN device
    master: str | None = None  # bridge, for entries of bridge ports
    dst: str | None = None  # VXLAN remote
    permanent: bool = False

    def __str__(self) -> str:
        s = f"{self.mac} dev {self.dev}"
        if self.dst:
            s += f" dst {self.dst}"
        s += f" master {self.master}" if self.master else " self"
        return s + (" permanent" if self.permanent else "")


@dataclass
class Socket:
    proto: str  # "tcp" (listening) or "udp" (bound)
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.proto} {self.ip}:{self.port}" + (" LISTEN" if self.proto == "tcp" else "")


@dataclass
class Namespace:
    name: str  # the netns name (e.g. seed-kub-node-1)
    role: str  # "node", "pod", "underlay"
    node: str | None = None  # node name (for pods: the node it runs on)
    pod: str | None = None  # "namespace/name" for pods
    links: dict[str, Link] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    fdb: list[FdbEntry] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)
    rules: list["RuleSource"] = field(default_factory=list)
    ip_forward: bool = False
    bridge_nf_call_iptables: bool = False
    notes: list[str] = field(default_factory=list)  # caveats, shown on the first hop here

    @property
    def label(self) -> str:
        if self.role == "pod":
            return f"pod/{(self.pod or self.name).split('/')[-1]}"
        if self.role == "underlay":
            return "external"
        return self.node or self.name

    def local_addresses(self) -> set[str]:
        return {ip for link in self.links.values() for ip, _ in link.addresses}

    def is_local(self, ip: str) -> bool:
        return ip in self.local_addresses() or ipaddress.ip_address(ip) in _LOOPBACK_NET

    def ports_of(self, bridge: str) -> list[Link]:
        return [l for l in self.links.values() if l.master == bridge]


@dataclass
class Snapshot:
    namespaces: dict[str, Namespace]
    service_cidr: str | None = None  # to explain a ClusterIP nobody translated

    def add(self, ns: Namespace) -> Namespace:
        self.namespaces[ns.name] = ns
        return ns

    def pod_by_ip(self, ip: str) -> Namespace | None:
        for ns in self.namespaces.values():
            if ns.role == "pod" and ip in ns.local_addresses():
                return ns
        return None


_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")

# --------------------------------------------------------------------------- packets and results


@dataclass(frozen=True)
class Packet:
    proto: str  # "tcp", "udp", "icmp"
    src: str | None
    dst: str
    sport: int | None = None  # None: an ephemeral port the kernel picks
    dport: int | None = None
    mark: int = 0

    def __str__(self) -> str:
        def ep(ip, port):
            if self.proto == "icmp":
                return ip or "?"
            return f"{ip or '?'}:{port if port is not None else '*'}"
        return f"{self.proto} {ep(self.src, self.sport)} > {ep(self.dst, self.dport)}"

    def to_dict(self) -> dict:
        d = {"proto": self.proto, "src": self.src, "dst": self.dst}
        if self.proto != "icmp":
            d["sport"] = self.sport
            d["dport"] = self.dport
        if self.mark:
            d["mark"] = hex(self.mark)
        return d


@dataclass
class Choice:
    rule: int
    target: str
    endpoint: str | None  # "ip:port" the target DNATs to, if it does
    probability: float
    chosen: bool = False

    def to_dict(self) -> dict:
        return {"rule": self.rule, "target": self.target, "endpoint": self.endpoint,
                "probability": round(self.probability, 6), "chosen": self.chosen}


@dataclass
class Decision:
    """One netfilter decision: a rule that matched (or a chain's policy)."""
    table: str
    chain: str
    rule: int | None  # 1-based position in the chain (`iptables -L --line-numbers`); None = policy
    text: str  # the rule as `iptables -S` prints it, or "-P CHAIN POLICY"
    action: str  # what it did, in words
    source: str = "iptables"
    choices: list[Choice] | None = None

    def __str__(self) -> str:
        where = f"{self.table} {self.chain} " + (f"#{self.rule}" if self.rule else "policy")
        return f"{where}: {self.text}  => {self.action}"

    def to_dict(self) -> dict:
        d = {"source": self.source, "table": self.table, "chain": self.chain, "rule": self.rule,
             "text": self.text, "action": self.action}
        if self.choices is not None:
            d["choices"] = [c.to_dict() for c in self.choices]
        return d


@dataclass
class Hop:
    n: int
    namespace: str
    node: str | None
    where: str  # pod/NAME, node name, external
    device: str
    event: str  # send, receive, forward, bridge, encap, decap, deliver, drop
    what: str
    packet: Packet
    outer: dict | None = None  # VXLAN outer header
    route: str | None = None
    netfilter: list[Decision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pod: str | None = None
    # The packet as a capture on `device` shows it: on arrival for receive/bridge/decap/deliver
    # hops, as sent (after POSTROUTING) for send/forward/encap hops.
    wire: Packet | None = None

    def why(self) -> list[str]:
        out = []
        if self.route:
            out.append(f"route: {self.route}")
        out += [str(d) for d in self.netfilter]
        for d in self.netfilter:
            for c in d.choices or []:
                mark = "*" if c.chosen else " "
                out.append(f"  {mark} {c.target} -> {c.endpoint or '?'}  p={c.probability:.2f}")
        return out + self.notes

    def to_dict(self) -> dict:
        return {"hop": self.n, "node": self.node, "namespace": self.namespace, "where": self.where,
                "pod": self.pod, "device": self.device, "event": self.event, "what": self.what,
                "packet": self.packet.to_dict(), "outer": self.outer, "route": self.route,
                "netfilter": [d.to_dict() for d in self.netfilter], "notes": list(self.notes),
                "wire": self.wire.to_dict() if self.wire else None}


@dataclass
class Verdict:
    delivered: bool
    reason: str  # delivered, no-route, rejected, dropped, no-listener, not-forwarded, ...
    message: str
    hop: int | None = None
    namespace: str | None = None
    device: str | None = None
    pod: str | None = None
    endpoint: str | None = None  # ip:port it reached

    def __str__(self) -> str:
        if self.delivered and self.message.startswith("delivered"):
            return self.message
        return ("delivered: " if self.delivered else "stopped: ") + self.message

    def to_dict(self) -> dict:
        return {"result": "delivered" if self.delivered else "stopped", "reason": self.reason,
                "message": self.message, "hop": self.hop, "namespace": self.namespace,
                "device": self.device, "pod": self.pod, "endpoint": self.endpoint}


@dataclass
class Trace:
    hops: list[Hop]
    verdict: Verdict

    def to_dict(self) -> dict:
        return {"hops": [h.to_dict() for h in self.hops], "verdict": self.verdict.to_dict()}

    def devices(self) -> list[tuple[str, str]]:
        return [(h.namespace, h.device) for h in self.hops]


# --------------------------------------------------------------------------- netfilter interface

# Hook priorities (include/uapi/linux/netfilter_ipv4.h): the order tables run in on a hook.
_PRIO = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_IPT_HOOKS = {
    "PREROUTING": [("raw", "raw"), ("mangle", "mangle"), ("nat", "dstnat")],
    "INPUT": [("mangle", "mangle"), ("filter", "filter"), ("security", "security"), ("nat", "srcnat")],
    "FORWARD": [("mangle", "mangle"), ("filter", "filter"), ("security", "security")],
    "OUTPUT": [("raw", "raw"), ("mangle", "mangle"), ("nat", "dstnat"), ("filter", "filter"),
               ("security", "security")],
    "POSTROUTING": [("mangle", "mangle"), ("nat", "srcnat")],
}


@dataclass
class HookEnv:
    """What a rule may look at besides the packet."""
    hook: str
    in_dev: str | None
    out_dev: str | None
    local: set[str]  # the namespace's local addresses (addrtype LOCAL)
    masq_source: "callable"  # out_dev -> the address MASQUERADE picks
    prefer: str | None = None  # endpoint ip, ip:port or chain name to take at a random choice
    bridged: bool = False


@dataclass
class ChainResult:
    verdict: str  # ACCEPT, DROP, REJECT
    packet: Packet
    decisions: list[Decision]
    reject_with: str | None = None


class RuleSource(Protocol):
    """A ruleset in one namespace: iptables' tables or an nftables table."""
    kind: str

    def base_chains(self, hook: str) -> list[tuple[int, str, str]]:
        """(priority, table, chain) of every base chain this source attaches to the hook."""

    def run(self, table: str, chain: str, pkt: Packet, env: HookEnv) -> ChainResult:
        """Evaluate one base chain for a new connection's first packet."""


# --------------------------------------------------------------------------- iptables

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _tokens(line: str) -> list[str]:
    return [m[2] if m[1] is None else m[1].replace('\\"', '"') for m in _TOKEN.finditer(line)]


@dataclass
class _Rule:
    num: int
    text: str  # "-A CHAIN ..." as iptables -S prints it
    tokens: list[str]
    counters: tuple[int, int] | None = None


@dataclass
class _Chain:
    name: str
    policy: str | None  # None for user chains
    rules: list[_Rule] = field(default_factory=list)
    counters: tuple[int, int] | None = None


_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s+")


def parse_iptables_save(text: str) -> dict[str, dict[str, _Chain]]:
    """`iptables-save [-c]` text -> {table: {chain: _Chain}} with rule numbers."""
    tables: dict[str, dict[str, _Chain]] = {}
    cur: dict[str, _Chain] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
            continue
        if cur is None:
            raise ValueError(f"iptables-save: rule outside a table: {line!r}")
        if line.startswith(":"):
            name, policy, *rest = line[1:].split()
            cnt = re.match(r"\[(\d+):(\d+)\]", rest[0]) if rest else None
            cur[name] = _Chain(name, None if policy == "-" else policy,
                               counters=(int(cnt[1]), int(cnt[2])) if cnt else None)
            continue
        counters = None
        m = _COUNTERS.match(line)
        if m:
            counters = (int(m[1]), int(m[2]))
            line = line[m.end():]
        if line.startswith("-A "):
            tok = _tokens(line)
            chain = cur.setdefault(tok[1], _Chain(tok[1], None))
            chain.rules.append(_Rule(len(chain.rules) + 1, line, tok, counters))
    return tables


def _in_net(ip: str | None, spec: str) -> bool:
    if ip is None:
        return False
    return ipaddress.ip_address(ip) in ipaddress.ip_network(spec, strict=False)


def _ports(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        out.append((int(lo or 0), int(hi or lo or 65535)))
    return out


def _in_ports(port: int | None, spec: str) -> bool:
    return port is not None and any(lo <= port <= hi for lo, hi in _ports(spec))


def _ifmatch(dev: str | None, spec: str) -> bool:
    if dev is None:
        return False
    return dev.startswith(spec[:-1]) if spec.endswith("+") else dev == spec


def _addrtype(ip: str | None, types: str, env: HookEnv) -> bool:
    if ip is None:
        return False
    a = ipaddress.ip_address(ip)
    kinds = set()
    if ip in env.local or a in _LOOPBACK_NET:
        kinds.add("LOCAL")
    if a.is_multicast:
        kinds.add("MULTICAST")
    elif ip == "255.255.255.255":
        kinds.add("BROADCAST")
    elif "LOCAL" not in kinds:
        kinds.add("UNICAST")
    return bool(kinds & set(types.split(",")))


def _mark_mask(spec: str) -> tuple[int, int]:
    v, _, m = spec.partition("/")
    return int(v, 0), int(m, 0) if m else 0xFFFFFFFF


_TCP_FLAGS = {"SYN": 2, "ACK": 16, "FIN": 1, "RST": 4, "PSH": 8, "URG": 32, "ALL": 63, "NONE": 0}


def _flags(spec: str) -> int:
    return sum(_TCP_FLAGS.get(f, 0) for f in spec.split(","))


@dataclass
class _Parsed:
    matches: list[tuple[bool, str, list[str]]]  # (negated, option, args)
    target: str | None
    goto: bool
    targs: dict[str, str]
    statistic: float | None  # probability, when the rule has -m statistic


_NOARG = {"--syn", "--random-fully", "--random", "--persistent", "--physdev-is-bridged",
          "--physdev-is-in", "--physdev-is-out", "--limit-iface-in", "--limit-iface-out"}
_TWOARG = {"--tcp-flags"}


def _parse_rule(tokens: list[str]) -> _Parsed:
    matches: list[tuple[bool, str, list[str]]] = []
    target, goto, targs, stat = None, False, {}, None
    i, neg = 2, False  # skip "-A CHAIN"
    mode, prob, every = None, None, None
    while i < len(tokens):
        t = tokens[i]
        if t == "!":
            neg, i = True, i + 1
            continue
        if t in ("-j", "-g"):
            target, goto = tokens[i + 1], t == "-g"
            rest = tokens[i + 2:]
            k = 0
            while k < len(rest):
                if k + 1 < len(rest) and not rest[k + 1].startswith("--"):
                    targs[rest[k]] = rest[k + 1]
                    k += 2
                else:
                    targs[rest[k]] = ""
                    k += 1
            break
        if t in _NOARG:
            matches.append((neg, t, []))
            i += 1
        elif t in _TWOARG:
            matches.append((neg, t, tokens[i + 1:i + 3]))
            i += 3
        else:
            arg = tokens[i + 1] if i + 1 < len(tokens) else ""
            if t == "--mode":
                mode = arg
            elif t == "--probability":
                prob = float(arg)
            elif t == "--every":
                every = int(arg)
            matches.append((neg, t, [arg]))
            i += 2
        neg = False
    if mode == "random":
        stat = prob if prob is not None else 0.5
    elif mode == "nth":
        stat = 1.0 / (every or 1)
    return _Parsed(matches, target, goto, targs, stat)


_IGNORED = {"-m", "--comment", "--mode", "--probability", "--every", "--packet"}
_TERMINAL_NAT = {"DNAT", "SNAT", "MASQUERADE", "REDIRECT"}
_CONTINUE_TARGETS = {"LOG", "NFLOG", "CONNMARK", "CT", "NOTRACK", "TCPMSS", "CHECKSUM", "TRACE"}


def _match(p: _Parsed, pkt: Packet, env: HookEnv) -> tuple[bool, list[str]]:
    """Does the rule (apart from -m statistic) match? Also: options we could not judge."""
    unknown: list[str] = []
    for neg, opt, args in p.matches:
        a = args[0] if args else ""
        if opt in _IGNORED:
            continue
        if opt in ("-s", "--source"):
            ok = _in_net(pkt.src, a)
        elif opt in ("-d", "--destination"):
            ok = _in_net(pkt.dst, a)
        elif opt in ("-p", "--protocol"):
            ok = a.lower() in (pkt.proto, "all", "0")
        elif opt in ("-i", "--in-interface"):
            ok = _ifmatch(env.in_dev, a)
        elif opt in ("-o", "--out-interface"):
            ok = _ifmatch(env.out_dev, a)
        elif opt in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            ok = _in_ports(pkt.dport, a)
        elif opt in ("--sport", "--source-port", "--sports", "--source-ports"):
            ok = _in_ports(pkt.sport, a)
        elif opt == "--ports":
            ok = _in_ports(pkt.dport, a) or _in_ports(pkt.sport, a)
        elif opt == "--dst-type":
            ok = _addrtype(pkt.dst, a, env)
        elif opt == "--src-type":
            ok = _addrtype(pkt.src, a, env)
        elif opt in ("--limit-iface-in", "--limit-iface-out"):
            ok = True
        elif opt == "--mark":
            v, m = _mark_mask(a)
            ok = (pkt.mark & m) == v
        elif opt in ("--ctstate", "--state"):
            ok = "NEW" in a.split(",")  # we follow a connection's first packet
        elif opt == "--syn":
            ok = pkt.proto == "tcp"
        elif opt == "--tcp-flags":
            ok = pkt.proto == "tcp" and (_flags(args[0]) & 2) == _flags(args[1])  # a SYN
        elif opt == "--icmp-type":
            ok = pkt.proto == "icmp" and a in ("8", "echo-request", "any")
        elif opt in ("--physdev-is-bridged", "--physdev-in", "--physdev-out"):
            ok = env.bridged
        else:
            unknown.append(opt)
            ok = True
        if ok == neg:
            return False, []
    return True, unknown


def _apply_mark(mark: int, targs: dict[str, str]) -> int:
    if "--set-xmark" in targs:
        v, m = _mark_mask(targs["--set-xmark"])
        return (mark & ~m) ^ v
    if "--set-mark" in targs:
        v, m = _mark_mask(targs["--set-mark"])
        return (mark & ~m) | v
    if "--or-mark" in targs:
        return mark | int(targs["--or-mark"], 0)
    if "--and-mark" in targs:
        return mark & int(targs["--and-mark"], 0)
    if "--xor-mark" in targs:
        return mark ^ int(targs["--xor-mark"], 0)
    return mark


def _split_hostport(spec: str) -> tuple[str, int | None]:
    ip, _, port = spec.partition(":")
    ip = ip.split("-")[0]
    return ip, int(port.split("-")[0]) if port else None


class _Stop(Exception):
    def __init__(self, verdict: str, reject_with: str | None = None):
        self.verdict, self.reject_with = verdict, reject_with


class IptablesRules:
    """The iptables (legacy or nft-compat) tables of one namespace, from iptables-save text."""

    kind = "iptables"

    def __init__(self, save_text: str):
        self.tables = parse_iptables_save(save_text)
        self._parsed: dict[tuple[str, str, int], _Parsed] = {}

    def base_chains(self, hook: str) -> list[tuple[int, str, str]]:
        out = []
        for table, prio in _IPT_HOOKS.get(hook, []):
            chain = self.tables.get(table, {}).get(hook)
            if chain is not None:
                out.append((_PRIO[prio], table, hook))
        return out

    def rule_texts(self) -> dict[tuple[str, str, int], str]:
        return {(t, c, r.num): r.text for t, chains in self.tables.items()
                for c, ch in chains.items() for r in ch.rules}

    def counters(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        return {(t, c, r.num): r.counters for t, chains in self.tables.items()
                for c, ch in chains.items() for r in ch.rules if r.counters is not None}

    def _p(self, table: str, chain: str, rule: _Rule) -> _Parsed:
        key = (table, chain, rule.num)
        if key not in self._parsed:
            self._parsed[key] = _parse_rule(rule.tokens)
        return self._parsed[key]

    def run(self, table: str, chain: str, pkt: Packet, env: HookEnv) -> ChainResult:
        decisions: list[Decision] = []
        state = {"pkt": pkt}
        chains = self.tables.get(table, {})
        base = chains[chain]
        if not base.rules:
            return ChainResult(base.policy or "ACCEPT", pkt, [])
        try:
            self._walk(table, chain, state, env, decisions, 0, record=True)
        except _Stop as s:
            return ChainResult(s.verdict, state["pkt"], decisions, s.reject_with)
        pol = base.policy or "ACCEPT"
        decisions.append(Decision(table, chain, None, f"-P {chain} {pol}",
                                  f"end of chain: policy {pol}"))
        if pol == "DROP":
            return ChainResult("DROP", state["pkt"], decisions)
        return ChainResult("ACCEPT", state["pkt"], decisions)

    def _dry_dnat(self, table: str, target: str, pkt: Packet, env: HookEnv) -> str | None:
        """Where a candidate chain would DNAT this packet (for listing a random choice)."""
        state = {"pkt": pkt}
        try:
            self._walk(table, target, state, env, [], 1, record=False)
        except _Stop:
            pass
        p = state["pkt"]
        if (p.dst, p.dport) != (pkt.dst, pkt.dport):
            return f"{p.dst}:{p.dport}" if p.dport is not None else p.dst
        return None

    def _walk(self, table: str, chain: str, state: dict, env: HookEnv, out: list[Decision],
              depth: int, record: bool) -> bool:
        """Evaluate a chain; returns True if a goto'd chain returned (the caller returns too).
        Raises _Stop for a terminal verdict."""
        if depth > 40:
            raise ValueError(f"iptables: jump depth exceeded in {table} {chain} (loop?)")
        ch = self.tables.get(table, {}).get(chain)
        if ch is None:
            return False
        forced: dict[int, bool] = {}
        choices: dict[int, list[Choice]] = {}  # chosen rule -> the candidates of its choice
        for rule in ch.rules:
            p = self._p(table, chain, rule)
            pkt = state["pkt"]
            ok, unknown = _match(p, pkt, env)
            if not ok:
                continue
            if p.statistic is not None:
                if rule.num not in forced:
                    self._choose(table, ch, rule.num, state, env, forced, choices)
                if not forced.get(rule.num):
                    continue
            note = f" (assumed to match: {', '.join(unknown)} not evaluated)" if unknown else ""
            cands = choices.pop(rule.num, None)
            if cands:
                pick = next(c for c in cands if c.chosen)
                note = (f" (random choice among {len(cands)}, p={pick.probability:.2f})" + note)
            t = p.target
            if t is None:
                if record:
                    out.append(Decision(table, chain, rule.num, rule.text, "matched, no target" + note))
                continue
            if t in self.tables.get(table, {}):
                if record:
                    out.append(Decision(table, chain, rule.num, rule.text,
                                        f"{'goto' if p.goto else 'jump'} {t}" + note, choices=cands))
                returned = self._walk(table, t, state, env, out, depth + 1, record)
                if p.goto or returned:
                    return p.goto  # a goto'd chain's end returns from this chain too
                continue
            act, stop = self._target(t, p, state, env)
            if record:
                out.append(Decision(table, chain, rule.num, rule.text, act + note, choices=cands))
            if t == "RETURN":
                return False
            if stop:
                raise _Stop(*stop)
        return False

    def _choose(self, table: str, ch: _Chain, num: int, state: dict, env: HookEnv,
                forced: dict[int, bool], choices: dict[int, list[Choice]]) -> None:
        """A run of -m statistic rules: list every candidate with its overall probability,
        take the preferred one (or the first), and force the others not to match."""
        remaining, cands = 1.0, []
        for rule in ch.rules[num - 1:]:
            p = self._p(table, ch.name, rule)
            ok, _ = _match(p, state["pkt"], env)
            if not ok:
                continue
            prob = remaining * (p.statistic if p.statistic is not None else 1.0)
            remaining -= prob
            target = p.target or ""
            ep = self._dry_dnat(table, target, state["pkt"], env) if target in self.tables.get(table, {}) else None
            cands.append(Choice(rule.num, target, ep, prob))
            if p.statistic is None or remaining <= 1e-12:
                break
        if not cands:
            return
        pick = cands[0]
        if env.prefer:
            for c in cands:
                if env.prefer in (c.target, c.endpoint) or (c.endpoint or "").split(":")[0] == env.prefer:
                    pick = c
                    break
        for c in cands:
            forced[c.rule] = c is pick
            c.chosen = c is pick
        choices[pick.rule] = cands

    def _target(self, t: str, p: _Parsed, state: dict, env: HookEnv) -> tuple[str, tuple | None]:
        pkt: Packet = state["pkt"]
        a = p.targs
        if t == "ACCEPT":
            return "ACCEPT", ("ACCEPT",)
        if t == "DROP":
            return "DROP", ("DROP",)
        if t == "REJECT":
            w = a.get("--reject-with", "icmp-port-unreachable")
            return f"REJECT ({w})", ("REJECT", w)
        if t == "RETURN":
            return "RETURN", None
        if t == "MARK":
            new = _apply_mark(pkt.mark, a)
            state["pkt"] = replace(pkt, mark=new)
            return f"MARK {hex(pkt.mark)} -> {hex(new)}", None
        if t == "DNAT":
            ip, port = _split_hostport(a.get("--to-destination", ""))
            state["pkt"] = replace(pkt, dst=ip, dport=port if port is not None else pkt.dport)
            return f"DNAT {pkt.dst}:{pkt.dport} -> {ip}:{state['pkt'].dport}", ("ACCEPT",)
        if t == "REDIRECT":
            port = a.get("--to-ports")
            ip = "127.0.0.1" if env.hook == "OUTPUT" else (env.masq_source(env.in_dev) or pkt.dst)
            state["pkt"] = replace(pkt, dst=ip, dport=int(port) if port else pkt.dport)
            return f"REDIRECT -> {ip}:{state['pkt'].dport}", ("ACCEPT",)
        if t == "SNAT":
            ip, port = _split_hostport(a.get("--to-source", ""))
            state["pkt"] = replace(pkt, src=ip, sport=port if port is not None else pkt.sport)
            return f"SNAT source {pkt.src} -> {ip}", ("ACCEPT",)
        if t == "MASQUERADE":
            ip = env.masq_source(env.out_dev)
            state["pkt"] = replace(pkt, src=ip)
            same = " (unchanged)" if ip == pkt.src else ""
            return f"MASQUERADE source {pkt.src} -> {ip} (address of {env.out_dev}){same}", ("ACCEPT",)
        if t in _CONTINUE_TARGETS:
            return f"{t} (continues)", None
        return f"{t} (not evaluated; continues)", None


# --------------------------------------------------------------------------- the walk


class _Done(Exception):
    pass


_MAX_HOPS = 60


class _Walker:
    def __init__(self, snap: Snapshot, prefer: str | None):
        self.snap = snap
        self.prefer = prefer
        self.hops: list[Hop] = []
        self.verdict: Verdict | None = None
        # Inner packets travelling inside an outer one, keyed by the encapsulating hop.
        self._vx_inner: dict[int, tuple[Packet, str]] = {}
        self.exit_ns: list[Namespace] = []
        self.exits: list[str] = []  # "left kub-node-0 by the default route ..." notes

    # helpers ---------------------------------------------------------------
    def hop(self, ns: Namespace, dev: str, event: str, what: str, pkt: Packet, **kw) -> Hop:
        if len(self.hops) >= _MAX_HOPS:
            self.stop(False, "loop", f"more than {_MAX_HOPS} hops (a forwarding loop?)", None)
        h = Hop(len(self.hops) + 1, ns.name, ns.node, ns.label, dev, event, what, pkt,
                pod=ns.pod, wire=pkt, **kw)
        if ns.notes and all(x.namespace != ns.name for x in self.hops):
            h.notes += ns.notes
        self.hops.append(h)
        return h

    def stop(self, delivered: bool, reason: str, message: str, hop: Hop | None,
             endpoint: str | None = None) -> None:
        ns = self.snap.namespaces.get(hop.namespace) if hop else None
        self.verdict = Verdict(delivered, reason, message, hop.n if hop else None,
                               hop.namespace if hop else None, hop.device if hop else None,
                               ns.pod if ns else None, endpoint)
        raise _Done

    def route(self, ns: Namespace, dst: str) -> Route | None:
        a = ipaddress.ip_address(dst)
        best = None
        for r in ns.routes:
            if a in r.network:
                key = (r.network.prefixlen, -r.metric)
                if best is None or key > best[0]:
                    best = (key, r)
        return best[1] if best else None

    def source_for(self, ns: Namespace, dev: str | None, gateway: str | None) -> str | None:
        link = ns.links.get(dev or "")
        if not link or not link.addresses:
            return next(iter(sorted(ns.local_addresses())), None)
        if gateway:
            for ip, plen in link.addresses:
                if _in_net(gateway, f"{ip}/{plen}"):
                    return ip
        return link.addresses[0][0]

    def env(self, ns: Namespace, hook: str, in_dev: str | None, out_dev: str | None,
            bridged: bool = False) -> HookEnv:
        return HookEnv(hook, in_dev, out_dev, ns.local_addresses(),
                       lambda dev: self.source_for(ns, dev, None), self.prefer, bridged)

    def netfilter(self, ns: Namespace, hook: str, pkt: Packet, hop: Hop, in_dev: str | None,
                  out_dev: str | None, bridged: bool = False) -> Packet:
        """Run every base chain of every rule source on this hook, in priority order."""
        env = self.env(ns, hook, in_dev, out_dev, bridged)
        before = pkt
        chains = sorted((prio, i, src, table, chain) for i, src in enumerate(ns.rules)
                        for prio, table, chain in src.base_chains(hook))
        for _prio, _i, src, table, chain in chains:
            res = src.run(table, chain, pkt, env)
            for d in res.decisions:
                d.source = src.kind
            hop.netfilter += res.decisions
            pkt = res.packet
            if res.verdict in ("DROP", "REJECT"):
                last = res.decisions[-1] if res.decisions else None
                rule = (f"{last.table} {last.chain} rule {last.rule}: {last.text}" if last and last.rule
                        else f"{table} {chain} policy {res.verdict}")
                if res.verdict == "REJECT":
                    why = self._reject_why(last)
                    self.stop(False, "rejected", f"rejected in {ns.label} by {rule} ({res.reject_with}){why}", hop)
                self.stop(False, "dropped", f"dropped in {ns.label} by {rule}", hop)
        if (pkt.dst, pkt.dport) != (before.dst, before.dport):
            hop.what = "; ".join(x for x in (hop.what, f"DNAT to {pkt.dst}" + (
                f":{pkt.dport}" if pkt.dport is not None else "")) if x)
        if pkt.src != before.src and before.src is not None:
            hop.what = "; ".join(x for x in (hop.what, f"source NAT {before.src} -> {pkt.src}") if x)
        return pkt

    @staticmethod
    def _reject_why(d: Decision | None) -> str:
        if d and "has no endpoints" in d.text:
            m = re.search(r'--comment "?([^"]*?):? has no endpoints', d.text)
            return f": service {m[1] if m else '?'} has no endpoints"
        return ""

    # L2 helpers ------------------------------------------------------------
    def peer(self, ns: Namespace, link: Link) -> tuple[Namespace, Link] | None:
        if not link.peer:
            return None
        pns = self.snap.namespaces.get(link.peer[0])
        if not pns or link.peer[1] not in pns.links:
            return None
        return pns, pns.links[link.peer[1]]

    def segment(self, ns: Namespace, dev: Link) -> list[tuple[Namespace, Link]]:
        """Every device reachable at layer 2 from `dev` (ARP's reach), not dev itself."""
        out: list[tuple[Namespace, Link]] = []

        def bridge_members(bns: Namespace, br: Link, skip: str | None):
            out.append((bns, br))
            for port in bns.ports_of(br.name):
                if port.name == skip:
                    continue
                pr = self.peer(bns, port)
                if pr:
                    out.append(pr)

        if dev.kind == "bridge":
            bridge_members(ns, dev, None)
            out.pop(0)
        else:
            pr = self.peer(ns, dev)
            if pr:
                pns, plink = pr
                if plink.master and plink.master in pns.links:
                    bridge_members(pns, pns.links[plink.master], plink.name)
                else:
                    out.append(pr)
        return out

    def resolve(self, ns: Namespace, dev: Link, ip: str, hop: Hop) -> str:
        """The MAC a frame to next hop `ip` goes to: the neighbour entry, or what ARP finds."""
        for n in ns.neighbours:
            if n.ip == ip and n.dev == dev.name and n.mac and n.state not in ("FAILED", "INCOMPLETE"):
                hop.notes.append(f"neighbour: {n}")
                return n.mac
        if dev.kind == "vxlan":
            self.stop(False, "no-neighbour",
                      f"no neighbour entry for {ip} on {dev.name} in {ns.label}; a VXLAN device "
                      "without learning cannot resolve it (flanneld programs one per lease)", hop)
        for sns, slink in self.segment(ns, dev):
            if any(a == ip for a, _ in slink.addresses):
                hop.notes.append(f"neighbour: no entry yet; ARP for {ip} is answered by "
                                 f"{slink.name} in {sns.label} ({slink.mac})")
                return slink.mac
        self.stop(False, "no-neighbour", f"nobody answers ARP for {ip} on {dev.name} in {ns.label}", hop)
        raise AssertionError

    def fdb_port(self, ns: Namespace, bridge: Link, mac: str, hop: Hop) -> Link | None:
        """The bridge port a frame to `mac` leaves by; None when the MAC is the bridge's own."""
        if mac == bridge.mac:
            return None
        for e in ns.fdb:
            if e.mac == mac and e.master == bridge.name and e.dev in ns.links:
                if e.permanent and e.dev == bridge.name:
                    return None
                if e.permanent:  # a port's own address: local to the bridge
                    return None
                hop.notes.append(f"fdb: {e}")
                return ns.links[e.dev]
        for port in ns.ports_of(bridge.name):
            pr = self.peer(ns, port)
            if pr and pr[1].mac == mac:
                hop.notes.append(f"fdb: {mac} not learned yet; flooded, reaches {port.name}")
                return port
        self.stop(False, "no-fdb", f"{mac} is behind no port of {bridge.name} in {ns.label}", hop)
        raise AssertionError

    # the path ----------------------------------------------------------------
    def local_out(self, ns: Namespace, pkt: Packet) -> None:
        """A packet generated by a socket in `ns` (connect/sendto)."""
        r = self.route(ns, pkt.dst)
        local = ns.is_local(pkt.dst)
        if local:
            r = Route(dst=f"{pkt.dst}/32", dev="lo", type="local", scope="host")
        dev = r.dev if r else None
        h = self.hop(ns, dev or "-", "send", "sent by a socket", pkt, route=str(r) if r else None)
        if r is None:
            self.stop(False, "no-route", f"no route to {pkt.dst} in {ns.label} (connect fails: "
                      "Network is unreachable)", h)
        if r.type in ("blackhole", "unreachable", "prohibit"):
            self.stop(False, "no-route", f"route '{r}' in {ns.label} discards it", h)
        if pkt.src is None:
            pkt = replace(pkt, src=r.src or (pkt.dst if local else self.source_for(ns, dev, r.gateway)))
            h.packet = pkt
        before = pkt
        pkt = self.netfilter(ns, "OUTPUT", pkt, h, None, dev)
        if (pkt.dst, pkt.dport) != (before.dst, before.dport):
            r2 = self.route(ns, pkt.dst) if not ns.is_local(pkt.dst) else Route(
                dst=f"{pkt.dst}/32", dev="lo", type="local", scope="host")
            if r2 is None:
                self.stop(False, "no-route", f"no route to {pkt.dst} in {ns.label} after DNAT", h)
            h.notes.append(f"rerouted after DNAT: {r2}")
            r, dev = r2, r2.dev
            h.device = dev
        h.packet = pkt
        if r.type == "local" or ns.is_local(pkt.dst):
            h.what = "sent to a local address (loopback)"
            pkt = self.netfilter(ns, "POSTROUTING", pkt, h, None, "lo")
            pkt = self.netfilter(ns, "INPUT", replace(pkt, mark=pkt.mark), h, "lo", None)
            self.deliver_local(ns, "lo", pkt, h)
        self.post_and_xmit(ns, r, pkt, h, generated=True)

    def post_and_xmit(self, ns: Namespace, r: Route, pkt: Packet, h: Hop, generated: bool) -> None:
        pkt = self.netfilter(ns, "POSTROUTING", pkt, h, None, r.dev)
        h.packet = h.wire = pkt
        link = ns.links.get(r.dev or "")
        if link is None:
            self.stop(False, "no-device", f"route '{r}' names a device {r.dev} that does not exist", h)
        if not link.up:
            self.stop(False, "link-down", f"{link.name} in {ns.label} is down", h)
        self.note_exit(ns, r, pkt)
        nexthop = r.gateway or pkt.dst
        self.xmit(ns, link, nexthop, pkt, h)

    def note_exit(self, ns: Namespace, r: Route, pkt: Packet) -> None:
        if ns.role == "node" and r.dst == "default":
            self.exits.append(f"{pkt.dst} left {ns.label} by the default route ({r})")
            self.exit_ns.append(ns)

    def xmit(self, ns: Namespace, link: Link, nexthop: str, pkt: Packet, h: Hop) -> None:
        if link.kind == "vxlan":
            return self.vxlan_encap(ns, link, nexthop, pkt, h)
        mac = self.resolve(ns, link, nexthop, h)
        if link.kind == "bridge":
            port = self.fdb_port(ns, link, mac, h)
            if port is None:
                self.stop(False, "dropped", f"frame to {mac} stays on {link.name} in {ns.label}", h)
            h.what = "; ".join(x for x in (h.what, f"bridged out {port.name}") if x)
            return self.out_port(ns, port, pkt, mac, h)
        return self.out_port(ns, link, pkt, mac, h)

    def out_port(self, ns: Namespace, link: Link, pkt: Packet, mac: str, h: Hop) -> None:
        pr = self.peer(ns, link)
        if pr is None:
            self.stop(False, "no-peer", f"{link.name} in {ns.label} leads nowhere this trace knows", h)
        pns, plink = pr
        # Crossing a veth into another namespace scrubs the skb: mark and conntrack reset.
        self.receive(pns, plink, replace(pkt, mark=0), mac)

    def receive(self, ns: Namespace, link: Link, pkt: Packet, mac: str) -> None:
        if link.master and link.master in ns.links:
            br = ns.links[link.master]
            h = self.hop(ns, br.name, "bridge", f"in {link.name}", pkt)
            port = self.fdb_port(ns, br, mac, h)
            if port is None:
                h.event, h.what = "receive", f"received from {link.name} (port of {br.name})"
                self.ip_input(ns, br, pkt, h)
            if port.name == link.name and not link.hairpin:
                self.stop(False, "dropped", f"{br.name} in {ns.label} will not send a frame back out "
                          f"{link.name} (hairpin off)", h)
            h.what = f"bridged: in {link.name}, out {port.name}"
            if ns.bridge_nf_call_iptables:
                h.notes.append("br_netfilter: bridged IPv4 goes through iptables (bridge-nf-call-iptables=1)")
                before = pkt
                pkt = self.netfilter(ns, "PREROUTING", pkt, h, br.name, None, bridged=True)
                if pkt.dst != before.dst:
                    h.notes.append("DNAT changed the destination of a bridged frame: it is routed instead")
                    h.event = "receive"
                    self.route_input(ns, br, pkt, h)
                pkt = self.netfilter(ns, "FORWARD", pkt, h, br.name, br.name, bridged=True)
                pkt = self.netfilter(ns, "POSTROUTING", pkt, h, None, br.name, bridged=True)
            h.packet = pkt
            self.out_port(ns, port, pkt, mac, h)
        if link.mac and mac != link.mac:
            h = self.hop(ns, link.name, "drop", "received a frame for another MAC", pkt)
            self.stop(False, "dropped", f"{link.name} in {ns.label} ({link.mac}) drops a frame sent to {mac} "
                      "(a stale neighbour entry?)", h)
        h = self.hop(ns, link.name, "receive", "received", pkt)
        self.ip_input(ns, link, pkt, h)

    def ip_input(self, ns: Namespace, link: Link, pkt: Packet, h: Hop) -> None:
        pkt = self.netfilter(ns, "PREROUTING", pkt, h, link.name, None)
        h.packet = pkt
        self.route_input(ns, link, pkt, h)

    def route_input(self, ns: Namespace, link: Link, pkt: Packet, h: Hop) -> None:
        if ns.is_local(pkt.dst):
            h.route = f"local {pkt.dst} (an address of {ns.label})"
            pkt = self.netfilter(ns, "INPUT", pkt, h, link.name, None)
            h.packet = pkt
            self.deliver_local(ns, link.name, pkt, h)
        if not ns.ip_forward:
            self.stop(False, "not-forwarded", f"{pkt.dst} is not an address of {ns.label}, and "
                      f"{ns.label} does not forward (ip_forward=0)", h)
        r = self.route(ns, pkt.dst)
        if r is None:
            self.stop(False, "no-route", f"no route to {pkt.dst} in {ns.label}", h)
        h.route = str(r)
        if r.type in ("blackhole", "unreachable", "prohibit"):
            self.stop(False, "no-route", f"route '{r}' in {ns.label} discards it", h)
        h.what = f"{h.what}; routed to {r.dev}" if h.event != "bridge" else h.what
        pkt = self.netfilter(ns, "FORWARD", pkt, h, link.name, r.dev)
        out = self.hop(ns, r.dev or "-", "forward", "", pkt)
        self.post_and_xmit(ns, r, pkt, out, generated=False)

    def vxlan_encap(self, ns: Namespace, link: Link, nexthop: str, pkt: Packet, h: Hop) -> None:
        vx = link.vxlan
        h.event = "encap" if h.event != "send" else "send"
        inner_mac = self.resolve(ns, link, nexthop, h)
        remote = None
        for e in ns.fdb:
            if e.dev == link.name and e.mac == inner_mac and e.dst:
                remote = e
                break
        if remote is None:
            self.stop(False, "no-fdb", f"no FDB entry on {link.name} in {ns.label} for {inner_mac}: "
                      "VXLAN does not know which node has it", h)
        h.notes.append(f"fdb: {remote}")
        r = self.route(ns, remote.dst)
        src = vx.local or (r.src if r else None) or self.source_for(ns, r.dev if r else None, None)
        outer = Packet("udp", src, remote.dst, None, vx.port)
        h.outer = {"src": src, "dst": remote.dst, "proto": "udp", "dport": vx.port, "vni": vx.vni,
                   "inner_dst_mac": inner_mac}
        h.what = "; ".join(x for x in (h.what, f"VXLAN encapsulation: VNI {vx.vni}, outer udp {src} > "
                                                  f"{remote.dst}:{vx.port}") if x)
        # The outer packet is a new, locally generated UDP packet of this namespace.
        o = self.hop(ns, (r.dev if r else None) or vx.dev or "-", "send",
                     f"outer packet of {link.name} (VXLAN, inner {pkt})", outer, route=str(r) if r else None)
        o.outer = dict(h.outer, inner=pkt.to_dict())
        if r is None:
            self.stop(False, "no-route", f"no route to VXLAN remote {remote.dst} in {ns.label}", o)
        # skb mark survives encapsulation inside one namespace.
        outer = replace(outer, mark=pkt.mark)
        outer = self.netfilter(ns, "OUTPUT", outer, o, None, r.dev)
        o.packet = outer
        self._vx_inner[id(o)] = (pkt, inner_mac)
        self.post_and_xmit(ns, r, outer, o, generated=True)

    def deliver_local(self, ns: Namespace, dev: str, pkt: Packet, h: Hop) -> None:
        if pkt.proto == "udp":
            for link in ns.links.values():
                if link.vxlan and link.vxlan.port == pkt.dport and (
                        link.vxlan.local in (None, pkt.dst)):
                    self.vxlan_decap(ns, link, pkt, h)
        if pkt.proto == "icmp":
            h.event, h.what = "deliver", "echo request reaches the kernel"
            self.stop(True, "echo-reply", f"{pkt.dst} in {ns.label} answers the echo request", h, pkt.dst)
        want = pkt.proto
        for s in ns.sockets:
            if s.proto == want and s.port == pkt.dport and s.ip in ("0.0.0.0", "*", pkt.dst):
                h.event, h.what = "deliver", f"delivered to a socket ({s})"
                where = f"pod {ns.pod}" if ns.role == "pod" else ns.label
                self.stop(True, "delivered", f"delivered to {where} ({pkt.dst}:{pkt.dport}, {s})", h,
                          f"{pkt.dst}:{pkt.dport}")
        h.event, h.what = "deliver", "no socket"
        answer = "TCP RST" if want == "tcp" else "ICMP port unreachable"
        self.stop(False, "no-listener", f"nothing listens on {want} {pkt.dst}:{pkt.dport} in "
                  f"{('pod ' + ns.pod) if ns.role == 'pod' else ns.label} (the kernel answers {answer})", h)

    def vxlan_decap(self, ns: Namespace, link: Link, outer: Packet, h: Hop) -> None:
        inner, inner_mac = self._vx_inner_for(outer)
        inner = replace(inner, mark=outer.mark)  # the received skb's mark, not the sender's
        h.what = f"UDP {link.vxlan.port} to the VXLAN socket of {link.name}"
        d = self.hop(ns, link.name, "decap", f"VXLAN decapsulation (VNI {link.vxlan.vni})", inner)
        d.outer = {"src": outer.src, "dst": outer.dst, "proto": "udp", "dport": outer.dport,
                   "vni": link.vxlan.vni}
        if inner_mac != link.mac:
            self.stop(False, "dropped", f"inner frame for {inner_mac} is not {link.name}'s MAC "
                      f"{link.mac} in {ns.label} (a stale VtepMAC?)", d)
        self.ip_input(ns, link, inner, d)

    def _vx_inner_for(self, outer: Packet) -> tuple[Packet, str]:
        for h in reversed(self.hops):
            if id(h) in self._vx_inner:
                return self._vx_inner[id(h)]
        raise AssertionError("decapsulation without encapsulation")


def trace(snap: Snapshot, src_ns: str, dst: str, dport: int | None = None, proto: str = "tcp",
          *, src: str | None = None, sport: int | None = None, prefer: str | None = None) -> Trace:
    """Follow the first packet of a new connection from a socket in `src_ns` to dst:dport.

    `prefer` picks the branch at a random (-m statistic) choice: an endpoint IP, ip:port or
    a chain name; otherwise the first candidate is followed (all are listed with their
    probabilities).
    """
    if src_ns not in snap.namespaces:
        raise ValueError(f"source: no namespace {src_ns!r} in the snapshot")
    if proto not in ("tcp", "udp", "icmp"):
        raise ValueError(f"proto: {proto!r} is not tcp, udp or icmp")
    w = _Walker(snap, prefer)
    pkt = Packet(proto, src, dst, sport, None if proto == "icmp" else dport)
    try:
        w.local_out(snap.namespaces[src_ns], pkt)
    except _Done:
        pass
    v = w.verdict
    if v and not v.delivered and w.exits:
        extra = "; ".join(w.exits)
        svc = ""
        if snap.service_cidr and _in_net(w.hops[0].packet.dst, snap.service_cidr) and \
                w.hops[-1].packet.dst == w.hops[0].packet.dst:
            first = w.exit_ns[0]
            has_proxy = any((isinstance(r, IptablesRules) and r.tables.get("nat", {}).get("KUBE-SERVICES")
                             and r.tables["nat"]["KUBE-SERVICES"].rules)
                            or getattr(r, "has_services", lambda: False)() for r in first.rules)
            why = ("a Service translates only its ip:port, not ICMP" if proto == "icmp" else
                   f"no rule for it on {first.label}" if has_proxy else
                   f"{first.label} has no kube-proxy rules")
            svc = f"{w.hops[0].packet.dst} is a ClusterIP, but nothing translated it ({why}); "
        v.message = f"{svc}{extra}; then {v.message}"
    return Trace(w.hops, v)


def iter_rules(sources: Iterable[RuleSource]) -> Iterable[tuple[str, str, int, str]]:
    """(table, chain, number, text) of every iptables rule, for counters and listings."""
    for s in sources:
        if isinstance(s, IptablesRules):
            for (t, c, n), text in s.rule_texts().items():
                yield t, c, n, text
