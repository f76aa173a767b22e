"""kube-proxy (iptables mode) as a pure function.

Owns the translation of one node's services + endpoints into iptables-restore text laid out
exactly like kube-proxy's syncProxyRules (chain names, rule order, comments), plus a tiny
evaluator (`trace`) to check where a packet would be DNATed without touching a kernel.
Applying the text (iptables-legacy-restore --noflush) and the built-in-chain jumps (`JUMPS`)
is the caller's job; nothing here runs a subprocess.

Services that kube-proxy routes through a KUBE-EXT-* chain (a LoadBalancer address, or
externalTrafficPolicy: Local) get the newer kube-proxy layout for their external traffic:
KUBE-EXT-* (masquerade + any endpoint for Cluster; pod/LOCAL traffic to the service, the
rest to KUBE-SVL-* local endpoints with the source kept, for Local), KUBE-FW-* for
loadBalancerSourceRanges, KUBE-SVL-* for internalTrafficPolicy: Local. ClusterIP and
Cluster-policy NodePort services keep the seed's (v1.17) chains byte for byte. Where kube-
proxy drops in its own filter chains (KUBE-PROXY-FIREWALL, no local endpoints), the drops
go into filter KUBE-SERVICES, which the seed's jumps already reach from INPUT, FORWARD and
OUTPUT for new connections: same effect, no new jump in a built-in chain.

Rule lines are written in the canonical order `iptables-save` prints them (-s/-d/-p first,
then matches in insertion order) so the output can be compared with `iptables -S` verbatim.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "ServicePort", "Endpoint", "RuleSet", "JUMPS", "OWNED_PREFIXES",
    "svc_chain", "sep_chain", "ext_chain", "fw_chain", "svl_chain", "generate", "parse_restore", "dangling_jumps", "trace",
]

MARK_MASQ = "KUBE-MARK-MASQ"
# Only these per-service chains are ours to garbage-collect; everything else is left alone.
OWNED_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-")
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}

# (table, built-in chain, rule args) that must exist exactly once. They are not in the restore
# text because with --noflush a "-A PREROUTING ..." would be appended again on every sync.
# Copied from kube-proxy's iptablesJumpChains (v1.17): args = extraArgs + comment + jump;
# kube-proxy inserts them at the head of the built-in chain (EnsureRule(Prepend, ...)).
_NEW = ["-m", "conntrack", "--ctstate", "NEW"]


def _jump(comment: str, target: str, extra: list[str] | None = None) -> list[str]:
    return [*(extra or []), "-m", "comment", "--comment", comment, "-j", target]


JUMPS: list[tuple[str, str, list[str]]] = [
    ("filter", "INPUT", _jump("kubernetes externally-visible service portals", "KUBE-EXTERNAL-SERVICES", _NEW)),
    ("filter", "FORWARD", _jump("kubernetes service portals", "KUBE-SERVICES", _NEW)),
    ("filter", "OUTPUT", _jump("kubernetes service portals", "KUBE-SERVICES", _NEW)),
    ("filter", "INPUT", _jump("kubernetes service portals", "KUBE-SERVICES", _NEW)),
    ("filter", "FORWARD", _jump("kubernetes forwarding rules", "KUBE-FORWARD")),
    ("nat", "OUTPUT", _jump("kubernetes service portals", "KUBE-SERVICES")),
    ("nat", "PREROUTING", _jump("kubernetes service portals", "KUBE-SERVICES")),
    ("nat", "POSTROUTING", _jump("kubernetes postrouting rules", "KUBE-POSTROUTING")),
]


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str  # '' when the port has no name
    protocol: str  # 'TCP' or 'UDP'
    cluster_ip: str
    port: int
    node_port: int | None = None
    lb_ip: str | None = None  # status.loadBalancer.ingress[0].ip
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges
    external_local: bool = False  # externalTrafficPolicy: Local
    internal_local: bool = False  # internalTrafficPolicy: Local
    cluster_cidr: str = ""  # pod network: its traffic to an external address is not "external"

    @property
    def uses_ext(self) -> bool:
        """Routed through KUBE-EXT-* (kube-proxy >= 1.24); the seed's NodePorts are not."""
        return bool(self.lb_ip) or self.external_local

    @property
    def service_port_name(self) -> str:
        # proxy.ServicePortName.String(): the colon stays even for an unnamed port.
        return f"{self.namespace}/{self.name}:{self.port_name}"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    # On this node (EndpointAddress.nodeName): what the *-Local policies pick. Not part of
    # the identity: an endpoint's address is tied to its node's pod subnet.
    local: bool = field(default=False, compare=False)


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32.StdEncoding alphabet
_B32_PAIRS = [x + y for x in _B32 for y in _B32]  # 10 bits -> 2 chars


def _hash16(s: str) -> str:
    # == base32(sha256(s))[:16]: those 16 chars encode exactly the first 80 bits. Done by
    # hand because base64.b32encode is pure Python and dominates generate() at 10k services.
    n = int.from_bytes(hashlib.sha256(s.encode()).digest()[:10], "big")
    t = _B32_PAIRS
    return (t[n >> 70] + t[n >> 60 & 1023] + t[n >> 50 & 1023] + t[n >> 40 & 1023]
            + t[n >> 30 & 1023] + t[n >> 20 & 1023] + t[n >> 10 & 1023] + t[n & 1023])


def svc_chain(spn: str, protocol: str) -> str:
    # servicePortChainName: sha256(spn + lowercase protocol), base32, 16 chars (chain names
    # are limited to 28 chars). Verified against real chain names in the seed listing.
    return "KUBE-SVC-" + _hash16(spn + protocol.lower())


def ext_chain(spn: str, protocol: str) -> str:
    return "KUBE-EXT-" + _hash16(spn + protocol.lower())


def fw_chain(spn: str, protocol: str) -> str:
    return "KUBE-FW-" + _hash16(spn + protocol.lower())


def svl_chain(spn: str, protocol: str) -> str:
    return "KUBE-SVL-" + _hash16(spn + protocol.lower())


def sep_chain(spn: str, protocol: str, ep: Endpoint) -> str:
    # servicePortEndpointChainName: same, with the endpoint's "ip:port" appended.
    return "KUBE-SEP-" + _hash16(spn + protocol.lower() + f"{ep.ip}:{ep.port}")


@lru_cache(maxsize=None)
def _probability(n: int) -> str:
    # What `iptables -S` shows for kube-proxy's 1/n: kube-proxy writes "%0.10f" (computeProbability,
    # v1.17; 1.8 used "%0.5f"), libxt_statistic stores lround(p * 2^31) and prints it back
    # with "%.11f". Hence the seed's 0.50000000000 and the familiar 0.33333333349 for 1/3.
    # Emitting the printed form keeps our text identical to an iptables-save listing.
    p = float("%0.10f" % (1 / n))
    return "%.11f" % (int(p * 0x80000000 + 0.5) / 0x80000000)


@dataclass
class RuleSet:
    nat: str  # "*nat\n" ... "COMMIT\n"
    filter: str  # "*filter\n" ... "COMMIT\n"

    def text(self) -> str:
        # Same order as kube-proxy's single restore: filter, then nat.
        return self.filter + self.nat


def _decl(chain: str) -> str:
    return f":{chain} - [0:0]"


def _stale(existing: set[str], desired: set[str]) -> list[str]:
    return sorted(c for c in existing if c.startswith(OWNED_PREFIXES) and c not in desired)


def generate(
    services: list[tuple[ServicePort, list[Endpoint]]],
    existing_chains: dict[str, set[str]] | None = None,
    masquerade_mark: str = "0x4000/0x4000",
) -> RuleSet:
    """Full nat and filter restore text for one node (no jumps from built-in chains)."""
    existing = existing_chains or {}
    # In --noflush mode declaring a chain flushes it, so every chain we own is declared and
    # refilled each time: the result does not depend on what the kernel held before.
    nat_chains = [_decl(c) for c in
                  ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", MARK_MASQ, "KUBE-PROXY-CANARY")]
    nat = [
        f'-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        f"-m mark --mark {masquerade_mark} -j MASQUERADE",
        f"-A {MARK_MASQ} -j MARK --set-xmark {masquerade_mark}",
    ]
    filt_chains = [_decl(c) for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD")]
    filt = [
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {masquerade_mark} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    active: set[str] = set()  # chains written this time; any other owned chain is stale
    seen: set[tuple[str, str]] = set()

    # Sorted so the same input always yields byte-identical text.
    for sp, eps in sorted(services, key=lambda s: (s[0].service_port_name, s[0].protocol)):
        if sp.protocol not in _PROTOCOLS:
            raise ValueError(f"{sp.service_port_name}: unsupported protocol {sp.protocol!r}")
        p = _PROTOCOLS[sp.protocol]
        spn = sp.service_port_name
        if (spn, p) in seen:
            raise ValueError(f"duplicate service port {spn} {sp.protocol}")
        seen.add((spn, p))
        svc = svc_chain(spn, sp.protocol)
        # iptables (not ip6tables): endpoints are IPv4; inet_pton rejects anything else.
        eps = sorted(set(eps), key=lambda e: (socket.inet_pton(socket.AF_INET, e.ip), e.port))

        if not eps:
            # No endpoints: reject in filter instead of letting the SYN go unanswered.
            filt.append(f'-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {p} -m comment --comment "{spn} has no endpoints" '
                        f"-m {p} --dport {sp.port} -j REJECT --reject-with icmp-port-unreachable")
            if sp.lb_ip:
                filt.append(f'-A KUBE-SERVICES -d {sp.lb_ip}/32 -p {p} -m comment --comment "{spn} has no endpoints" '
                            f"-m {p} --dport {sp.port} -j REJECT --reject-with icmp-port-unreachable")
            if sp.node_port:
                filt.append(f'-A KUBE-EXTERNAL-SERVICES -p {p} -m comment --comment "{spn} has no endpoints" '
                            f"-m addrtype --dst-type LOCAL -m {p} --dport {sp.node_port} "
                            "-j REJECT --reject-with icmp-port-unreachable")
            continue  # no KUBE-SVC chain: a leftover one from the kernel is stale

        local_eps = [e for e in eps if e.local]
        svl = svl_chain(spn, sp.protocol)
        want_svl = bool(local_eps) and (sp.internal_local or sp.external_local)
        active.add(svc)
        nat_chains.append(_decl(svc))
        if sp.internal_local and not local_eps:
            filt.append(f'-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {p} -m comment --comment '
                        f'"{spn} has no local endpoints" -m {p} --dport {sp.port} '
                        "-j REJECT --reject-with icmp-port-unreachable")
        else:
            nat.append(f'-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {p} -m comment --comment "{spn} cluster IP" '
                       f"-m {p} --dport {sp.port} -j {svl if sp.internal_local else svc}")
        if sp.uses_ext:
            ext = ext_chain(spn, sp.protocol)
            active.add(ext)
            nat_chains.append(_decl(ext))
            if sp.external_local:
                if sp.cluster_cidr:
                    nat.append(f'-A {ext} -s {sp.cluster_cidr} -m comment --comment '
                               f'"pod traffic for {spn} external destinations" -j {svc}')
                nat.append(f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {spn} external '
                           f'destinations" -m addrtype --src-type LOCAL -j {MARK_MASQ}')
                nat.append(f'-A {ext} -m comment --comment "route LOCAL traffic for {spn} external '
                           f'destinations" -m addrtype --src-type LOCAL -j {svc}')
                if local_eps:
                    nat.append(f"-A {ext} -j {svl}")
                else:
                    # What is left still has the external address as destination: dropped in filter.
                    if sp.lb_ip:
                        filt.append(f'-A KUBE-SERVICES -d {sp.lb_ip}/32 -p {p} -m comment --comment '
                                    f'"{spn} has no local endpoints" -m {p} --dport {sp.port} -j DROP')
                    if sp.node_port:
                        filt.append(f'-A KUBE-EXTERNAL-SERVICES -p {p} -m comment --comment '
                                    f'"{spn} has no local endpoints" -m addrtype --dst-type LOCAL '
                                    f"-m {p} --dport {sp.node_port} -j DROP")
            else:
                nat.append(f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" '
                           f"-j {MARK_MASQ}")
                nat.append(f"-A {ext} -j {svc}")
            if sp.lb_ip:
                target = ext
                if sp.source_ranges:
                    fw = target = fw_chain(spn, sp.protocol)
                    active.add(fw)
                    nat_chains.append(_decl(fw))
                    for cidr in sp.source_ranges:
                        nat.append(f'-A {fw} -s {cidr} -m comment --comment "{spn} loadbalancer IP" -j {ext}')
                    nat.append(f'-A {fw} -m comment --comment "other traffic to {spn} will be dropped by '
                               'KUBE-PROXY-FIREWALL"')
                    filt.append(f'-A KUBE-SERVICES -d {sp.lb_ip}/32 -p {p} -m comment --comment '
                                f'"{spn} traffic not accepted by {fw}" -m {p} --dport {sp.port} -j DROP')
                nat.append(f'-A KUBE-SERVICES -d {sp.lb_ip}/32 -p {p} -m comment --comment "{spn} loadbalancer IP" '
                           f"-m {p} --dport {sp.port} -j {target}")
            if sp.node_port:
                nat.append(f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{spn}" -m {p} '
                           f"--dport {sp.node_port} -j {ext}")
        elif sp.node_port:
            # Traffic arriving on a node port is masqueraded so replies come back via this node.
            np_rule = f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{spn}" -m {p} --dport {sp.node_port} -j '
            nat.append(np_rule + MARK_MASQ)
            nat.append(np_rule + svc)
        if want_svl:
            active.add(svl)
            nat_chains.append(_decl(svl))
            nl = len(local_eps)
            for i, ep in enumerate(local_eps):
                stat = f" -m statistic --mode random --probability {_probability(nl - i)}" if i < nl - 1 else ""
                nat.append(f'-A {svl} -m comment --comment "{spn}"{stat} -j {sep_chain(spn, sp.protocol, ep)}')

        n = len(eps)
        seps = [sep_chain(spn, sp.protocol, ep) for ep in eps]
        for i, sep in enumerate(seps):
            # Rule i matches with probability 1/(n-i) of what reaches it: uniform overall.
            stat = f" -m statistic --mode random --probability {_probability(n - i)}" if i < n - 1 else ""
            nat.append(f'-A {svc} -m comment --comment "{spn}"{stat} -j {sep}')
        for ep, sep in zip(eps, seps):
            active.add(sep)
            nat_chains.append(_decl(sep))
            # Hairpin: a pod reaching itself through the service must be SNATed, or the
            # reply would bypass conntrack's reverse DNAT.
            nat.append(f'-A {sep} -s {ep.ip}/32 -m comment --comment "{spn}" -j {MARK_MASQ}')
            nat.append(f'-A {sep} -p {p} -m comment --comment "{spn}" -m {p} '
                       f"-j DNAT --to-destination {ep.ip}:{ep.port}")

    nat.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
               'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')

    def section(table: str, chains: list[str], rules: list[str]) -> str:
        # Stale per-service chains: declare (flush, which drops their references too) then delete.
        stale = _stale(existing.get(table, set()), active)
        lines = [f"*{table}", *chains, *(_decl(c) for c in stale), *rules, *(f"-X {c}" for c in stale), "COMMIT"]
        return "\n".join(lines) + "\n"

    return RuleSet(nat=section("nat", nat_chains, nat), filter=section("filter", filt_chains, filt))


# ---------------------------------------------------------------------------------------------
# Reading restore text back (for tests and diagnostics).

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_BUILTIN_TARGETS = frozenset({
    "ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "MASQUERADE", "MARK", "CONNMARK",
    "LOG", "QUEUE", "NFQUEUE", "REDIRECT", "NOTRACK", "CT", "TCPMSS",
})


def _tokens(line: str) -> list[str]:
    return [m[1] if m[2] is None else m[2] for m in _TOKEN.finditer(line)]


def parse_restore(text: str) -> dict[str, dict[str, list[str]]]:
    """{table: {chain: ["-A ..." lines]}}, as the tables would look after the restore."""
    tables: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            cur[line[1:].split()[0]] = []  # declaration flushes
        elif line.startswith(("-N ", "-F ")):
            cur[line.split()[1]] = []
        elif line.startswith("-X "):
            cur.pop(line.split()[1], None)
        elif line.startswith("-A "):
            cur.setdefault(line.split()[1], []).append(line)
    return tables


def _target(tokens: list[str]) -> str | None:
    for i, t in enumerate(tokens[:-1]):
        if t in ("-j", "-g"):
            return tokens[i + 1]
    return None


def dangling_jumps(text: str) -> list[str]:
    """"table: rule" for every rule jumping to a chain that is neither declared nor a target."""
    out = []
    for table, chains in parse_restore(text).items():
        for rules in chains.values():
            for rule in rules:
                t = _target(_tokens(rule))
                if t and t not in chains and t not in _BUILTIN_TARGETS:
                    out.append(f"{table}: {rule}")
    return out


def _match(tokens: list[str], src: str, proto: str, dst: str, dport: int, local: set[str]) -> bool | None:
    """True/False, or None for "may match" (statistic)."""
    maybe, neg, i = False, False, 0
    while i < len(tokens):
        t = tokens[i]
        if t == "!":
            neg, i = True, i + 1
            continue
        # An option's value is consumed with it, so a value is never mistaken for an option.
        has_arg = i + 1 < len(tokens) and tokens[i + 1] != "!" and not tokens[i + 1].startswith("-")
        arg = tokens[i + 1] if has_arg else ""
        ok = True
        if t in ("-s", "--source", "-d", "--destination"):
            addr = src if t in ("-s", "--source") else dst
            ok = ipaddress.ip_address(addr) in ipaddress.ip_network(arg, strict=False)
        elif t in ("-p", "--protocol"):
            ok = arg.lower() == proto.lower()
        elif t == "--dport":
            lo, _, hi = arg.partition(":")
            ok = int(lo) <= dport <= int(hi or lo)
        elif t == "--dst-type":
            ok = arg != "LOCAL" or dst in local
        elif t == "--src-type":
            ok = arg != "LOCAL" or src in local
        elif t == "-m" and arg == "statistic":
            maybe = True
        elif t in ("-j", "-g"):
            break
        if ok == neg:
            return False
        neg, i = False, i + (2 if has_arg else 1)
    return None if maybe else True


def trace(ruleset_text: str, src: str, proto: str, dst: str, dport: int,
          local_addresses: set[str]) -> list[tuple[str, int, bool]]:
    """Every (endpoint ip, port, masquerade?) the nat table can DNAT this packet to.

    Starts at KUBE-SERVICES as PREROUTING would; statistic rules are explored both ways.
    """
    chains = parse_restore(ruleset_text).get("nat", {})
    parsed = {c: [_tokens(r) for r in rules] for c, rules in chains.items()}
    found: set[tuple[str, int, bool]] = set()

    # Yields ("return", masq) when the chain falls through, or ("final", masq, dnat-or-None).
    def walk(chain: str, start: int, masq: bool, depth: int):
        if depth > 32:
            raise ValueError(f"jump depth exceeded at {chain} (loop?)")
        rules = parsed.get(chain, [])
        for i in range(start, len(rules)):
            tok = rules[i]
            m = _match(tok[2:], src, proto, dst, dport, local_addresses)
            if m is False:
                continue
            if m is None:
                yield from walk(chain, i + 1, masq, depth)  # the branch where it did not match
            target = _target(tok)
            if target is None or target == "MARK":
                continue
            if target in parsed:
                for res in walk(target, 0, masq or target == MARK_MASQ, depth + 1):
                    if res[0] == "final":
                        yield res
                    else:
                        yield from walk(chain, i + 1, res[1], depth)
                return
            if target == "RETURN":
                yield ("return", masq)
            elif target == "DNAT":
                yield ("final", masq, tok[tok.index("--to-destination") + 1])
            else:
                yield ("final", masq, None)
            return
        yield ("return", masq)

    for res in walk("KUBE-SERVICES", 0, False, 0):
        if res[0] == "final" and res[2]:
            ip, _, port = res[2].rpartition(":")
            found.add((ip, int(port), res[1]))
    return sorted(found)
