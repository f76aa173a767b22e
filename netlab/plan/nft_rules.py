"""kube-proxy (nftables mode) as a pure function.

Owns the translation of one node's services + endpoints into kube-proxy's nftables layout
(pkg/proxy/nftables/proxier.go): table `ip kube-proxy`, the verdict maps `service-ips`
(ipv4_addr . inet_proto . inet_service) and `service-nodeports` (inet_proto . inet_service),
`no-endpoint-services` / `no-endpoint-nodeports` jumping to `reject-chain`, the set
`cluster-ips`, per-service chains `service-<hash>-<ns>/<name>/<proto>/<port>` choosing an
endpoint with `numgen random mod N vmap {...}`, `external-...` chains marking node-port
traffic for masquerade, per-endpoint chains `endpoint-<hash>-...__<ip>/<port>` (hairpin mark +
DNAT), and the mark-for-masquerade / masquerading chains. The seed runs kube-proxy without
--cluster-cidr, so (as in netlab's iptables mode) ClusterIP traffic is not masqueraded.

Three outputs, all text or data, no subprocess:
- `full_text()`: one `nft -f` file replacing the whole table in one transaction;
- `delta_text()`: one `nft -f` file turning some services' old state into their new one,
  touching only their map elements and chains;
- `trace()`: a tiny interpreter of the generated ruleset (like kube-proxy's
  helpers_test.go) answering where a packet would be DNATed, or whether it is rejected.

Each service's share is a `Contribution` (its chains and its map/set elements); the table
is the static base plus the union of the contributions, so a change is a difference of two
contributions.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field

from netlab.plan.proxy_rules import Endpoint, ServicePort

__all__ = [
    "TABLE", "Contribution", "svc_chain", "ext_chain", "ep_chain", "contribution",
    "full_text", "delta_ops", "delta_text", "Ruleset", "ruleset", "trace", "MAPS",
]

TABLE = "kube-proxy"
FAMILY = "ip"
MASQ_MARK = "0x00004000"
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}

# name -> (kind, type, comment): the containers whose elements services own.
MAPS = {
    "cluster-ips": ("set", "ipv4_addr", "Active ClusterIPs"),
    "service-ips": ("map", "ipv4_addr . inet_proto . inet_service : verdict",
                    "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    "service-nodeports": ("map", "inet_proto . inet_service : verdict", "NodePort traffic"),
    "no-endpoint-services": ("map", "ipv4_addr . inet_proto . inet_service : verdict",
                             "vmap to drop or reject packets to services with no endpoints"),
    "no-endpoint-nodeports": ("map", "inet_proto . inet_service : verdict",
                              "vmap to drop or reject packets to service nodeports with no endpoints"),
    "firewall-ips": ("map", "ipv4_addr . inet_proto . inet_service : verdict",
                     "destinations that are subject to LoadBalancerSourceRanges"),
}

# Base chains (name, type, hook, priority) as kube-proxy's nftablesBaseChains: filtering
# before DNAT (dstnat-10), NAT at dstnat/srcnat. Numbers, because nft 1.0.6 accepts the
# name "dstnat" only on the prerouting hook (dstnat = -100, srcnat = 100).
BASE_CHAINS = [
    ("filter-prerouting", "filter", "prerouting", "-110"),
    ("filter-input", "filter", "input", "-110"),
    ("filter-forward", "filter", "forward", "-110"),
    ("filter-output", "filter", "output", "-110"),
    ("filter-output-post-dnat", "filter", "output", "-90"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
]
_NO_LOCALHOST = "ip daddr != 127.0.0.0/8"
# Every chain that is not a service's own, with its rules (kube-proxy's setupNFTables).
BASE_RULES: dict[str, list[str]] = {
    "filter-prerouting": ["ct state new jump firewall-check"],
    "filter-input": ["ct state new jump nodeport-endpoints-check",
                     "ct state new jump service-endpoints-check"],
    "filter-forward": ["ct state new jump service-endpoints-check",
                       "ct state new jump cluster-ips-check"],
    "filter-output": ["ct state new jump service-endpoints-check",
                      "ct state new jump firewall-check"],
    "filter-output-post-dnat": ["ct state new jump cluster-ips-check"],
    "nat-prerouting": ["jump services"],
    "nat-output": ["jump services"],
    "nat-postrouting": ["jump masquerading"],
    "nodeport-endpoints-check": [f"{_NO_LOCALHOST} meta l4proto . th dport vmap @no-endpoint-nodeports"],
    "service-endpoints-check": ["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
    "firewall-check": ["ip daddr . meta l4proto . th dport vmap @firewall-ips"],
    "services": ["ip daddr . meta l4proto . th dport vmap @service-ips",
                 f"fib daddr type local {_NO_LOCALHOST} meta l4proto . th dport vmap @service-nodeports"],
    "cluster-ips-check": ['ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"'],
    "masquerading": [f"meta mark & {MASQ_MARK} == 0x00000000 return",
                     f"meta mark set meta mark ^ {MASQ_MARK}",
                     "masquerade fully-random"],
    "mark-for-masquerade": [f"meta mark set meta mark | {MASQ_MARK}"],
    "reject-chain": ["reject"],
}


def _hash8(name: str) -> str:
    # hashAndTruncate: base32(sha256(name))[:8] + "-" + name (names here never need truncating).
    # base32 encodes 5-byte groups on their own, so the first 8 characters are those of the
    # first 5 bytes: encoding only them keeps generation cheap at 10,000 services.
    return base64.b32encode(hashlib.sha256(name.encode()).digest()[:5]).decode() + "-" + name


def _base(sp: ServicePort) -> str:
    return f"{sp.namespace}/{sp.name}/{_PROTOCOLS[sp.protocol]}/{sp.port_name}"


def svc_chain(sp: ServicePort) -> str:
    return "service-" + _hash8(_base(sp))


def ext_chain(sp: ServicePort) -> str:
    return "external-" + _hash8(_base(sp))


def local_chain(sp: ServicePort) -> str:
    return "local-" + _hash8(_base(sp))


def fw_chain(sp: ServicePort) -> str:
    return "firewall-" + _hash8(_base(sp))


def ep_chain(sp: ServicePort, ep: Endpoint) -> str:
    return "endpoint-" + _hash8(f"{_base(sp)}__{ep.ip}/{ep.port}")


@dataclass(frozen=True)
class Contribution:
    """What one service adds to the table: its own chains and its map/set elements."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # chain -> rules, in order
    elements: dict[tuple[str, str], str] = field(default_factory=dict)  # (map, key) -> verdict ('' in a set)


def contribution(ports: list[tuple[ServicePort, list[Endpoint]]] | tuple, *, vmap: bool = True) -> Contribution:
    """One service's chains and elements (its ports with their endpoints).

    vmap=False writes the endpoint choice as one `numgen random mod K == 0 goto` rule per
    endpoint instead of kube-proxy's anonymous `numgen ... vmap` map: the same uniform
    choice (rule i wins 1/(N-i) of what reaches it), but no anonymous set per service,
    which makes loading 10,000 services an order of magnitude faster (docs/performance.md).
    """
    chains: dict[str, tuple[str, ...]] = {}
    elements: dict[tuple[str, str], str] = {}

    def choose(name: str, eps: list[Endpoint], sp: ServicePort) -> None:
        names = [ep_chain(sp, ep) for ep in eps]
        n = len(eps)
        if vmap:
            chains[name] = (f"numgen random mod {n} vmap {{ "
                            + ", ".join(f"{i} : goto {c}" for i, c in enumerate(names)) + " }",)
        else:
            chains[name] = tuple(f"numgen random mod {n - i} == 0 goto {c}" if i < n - 1 else f"goto {c}"
                                 for i, c in enumerate(names))

    for sp, eps in ports:
        if sp.protocol not in _PROTOCOLS:
            raise ValueError(f"{sp.service_port_name}: unsupported protocol {sp.protocol!r}")
        p = _PROTOCOLS[sp.protocol]
        eps = sorted(set(eps), key=lambda e: (socket.inet_aton(e.ip), e.port))
        local_eps = [e for e in eps if e.local]
        svc, loc, ext = svc_chain(sp), local_chain(sp), ext_chain(sp)
        external = bool(sp.node_port or sp.lb_ip)
        # kube-proxy's traffic policies: the chain each kind of traffic goes to, and whether
        # it has endpoints there. No endpoints at all: reject; none local under a Local
        # policy: drop (the service exists, but not here).
        none = "goto reject-chain" if not eps else "drop"
        internal_chain = loc if sp.internal_local else svc
        has_internal = bool(local_eps) if sp.internal_local else bool(eps)
        external_chain = loc if sp.external_local else svc
        has_external = bool(local_eps) if sp.external_local else bool(eps)

        elements[("cluster-ips", sp.cluster_ip)] = ""
        key = f"{sp.cluster_ip} . {p} . {sp.port}"
        if has_internal:
            elements[("service-ips", key)] = f"goto {internal_chain}"
        else:
            elements[("no-endpoint-services", key)] = none
        if eps and external:
            if sp.lb_ip:
                elements[("service-ips", f"{sp.lb_ip} . {p} . {sp.port}")] = f"goto {ext}"
            if sp.node_port:
                elements[("service-nodeports", f"{p} . {sp.node_port}")] = f"goto {ext}"
        if not has_external:
            if sp.lb_ip:
                elements[("no-endpoint-services", f"{sp.lb_ip} . {p} . {sp.port}")] = none
            if sp.node_port:
                elements[("no-endpoint-nodeports", f"{p} . {sp.node_port}")] = none
        if not eps:
            continue
        if external:
            if not sp.external_local:
                # Traffic from outside may leave for another node: masqueraded so replies return here.
                rules = ["jump mark-for-masquerade"]
            else:
                # Local: the client's address is kept; pods and the node itself still reach
                # every endpoint (kube-proxy's short-circuit rules).
                rules = [f"ip saddr {sp.cluster_cidr} goto {svc}"] if sp.cluster_cidr else []
                rules += ["fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {svc}"]
            if has_external:
                rules.append(f"goto {external_chain}")
            chains[ext] = tuple(rules)
            if sp.lb_ip and sp.source_ranges:
                elements[("firewall-ips", f"{sp.lb_ip} . {p} . {sp.port}")] = f"goto {fw_chain(sp)}"
                chains[fw_chain(sp)] = (f"ip saddr != {{ {', '.join(sp.source_ranges)} }} drop",)
        used: list[Endpoint] = []
        if not sp.internal_local or external:
            choose(svc, eps, sp)
            used = list(eps)
        if local_eps and (sp.internal_local or sp.external_local):
            choose(loc, local_eps, sp)
            used += [e for e in local_eps if e not in used]
        for ep in used:
            # Hairpin: a pod reaching itself through its service is SNATed, or the reply
            # would bypass conntrack's reverse DNAT.
            chains[ep_chain(sp, ep)] = (f"ip saddr {ep.ip} jump mark-for-masquerade",
                                        f"meta l4proto {p} dnat to {ep.ip}:{ep.port}")
    return Contribution(chains, elements)


def merge(contribs) -> Contribution:
    chains: dict[str, tuple[str, ...]] = {}
    elements: dict[tuple[str, str], str] = {}
    for c in contribs:
        for name in c.chains:
            if name in chains:
                raise ValueError(f"duplicate chain {name}")
        chains.update(c.chains)
        for k in c.elements:
            if k in elements and k[0] != "cluster-ips":  # services may share a cluster IP
                raise ValueError(f"duplicate element {k[1]} in {k[0]}")
        elements.update(c.elements)
    return Contribution(chains, elements)


def _elements_text(name: str, items: list[tuple[str, str]]) -> str:
    kind = MAPS[name][0]
    body = ", ".join(k if kind == "set" else f"{k} : {v}" for k, v in items)
    return f"{{ {body} }}"


def full_text(contribs) -> str:
    """`nft -f` text replacing the whole table atomically (one transaction).

    `add table` first so that `delete table` cannot fail on a node that has none yet.
    """
    allc = merge(contribs)
    out = [f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}",
           f"table {FAMILY} {TABLE} {{", '\tcomment "rules for kube-proxy"']
    for name, (kind, typ, comment) in MAPS.items():
        out.append(f'\t{kind} {name} {{ type {typ}; comment "{comment}"; }}')
    for name, typ, hook, prio in BASE_CHAINS:
        out.append(f"\tchain {name} {{ type {typ} hook {hook} priority {prio}; policy accept; }}")
    for name in BASE_RULES:
        if name not in {b[0] for b in BASE_CHAINS}:
            out.append(f"\tchain {name} {{ }}")
    # Service chains are declared before any rule or element refers to them.
    for name in sorted(allc.chains):
        out.append(f"\tchain {name} {{ }}")
    # Rules in a second block of the same table: every chain they name exists by then.
    out += ["}", f"table {FAMILY} {TABLE} {{"]
    for name, rules in [*BASE_RULES.items(), *sorted(allc.chains.items())]:
        out += [f"\tchain {name} {{", *(f"\t\t{r}" for r in rules), "\t}"]
    out.append("}")
    by_map: dict[str, list[tuple[str, str]]] = {}
    for (m, k), v in sorted(allc.elements.items()):
        by_map.setdefault(m, []).append((k, v))
    for m, items in by_map.items():
        out.append(f"add element {FAMILY} {TABLE} {m} {_elements_text(m, items)}")
    return "\n".join(out) + "\n"


def delta_ops(changes) -> list[tuple[str, ...]]:
    """The operations turning each (old, new) Contribution pair into the new one, in the
    order one transaction must hold them: new chains declared; changed and removed chains
    flushed (which drops their jumps to endpoint chains); stale elements deleted; rules
    written; new elements added; removed chains deleted last, when nothing refers to them.

    Each op is ("add_chain", c) | ("flush_chain", c) | ("delete_element", map, key) |
    ("add_rule", c, rule) | ("add_element", map, key, value) | ("delete_chain", c).
    """
    add_chain, flush, del_el, rules, add_el, del_chain = [], [], [], [], [], []
    for old, new in changes:
        old = old or Contribution()
        new = new or Contribution()
        for name, rs in new.chains.items():
            if name not in old.chains:
                add_chain.append(("add_chain", name))
            elif old.chains[name] != rs:
                flush.append(("flush_chain", name))
            else:
                continue
            rules += [("add_rule", name, r) for r in rs]
        for name in old.chains:
            if name not in new.chains:
                flush.append(("flush_chain", name))
                del_chain.append(("delete_chain", name))
        for (m, k), v in old.elements.items():
            if new.elements.get((m, k)) != v:
                del_el.append(("delete_element", m, k))
        for (m, k), v in new.elements.items():
            if old.elements.get((m, k)) != v:
                add_el.append(("add_element", m, k, v))
    return add_chain + flush + del_el + rules + add_el + del_chain


def delta_text(changes) -> str:
    """delta_ops() as one `nft -f` file (one transaction)."""
    t = f"{FAMILY} {TABLE}"
    out = []
    for op, *args in delta_ops(changes):
        if op == "add_element":
            m, k, v = args
            out.append(f"add element {t} {m} {_elements_text(m, [(k, v)])}")
        elif op == "delete_element":
            out.append(f"delete element {t} {args[0]} {{ {args[1]} }}")
        elif op == "add_rule":
            out.append(f"add rule {t} {args[0]} {args[1]}")
        else:
            out.append(f"{op.replace('_', ' ')} {t} {args[0]}")
    return "\n".join(out) + ("\n" if out else "")


# --------------------------------------------------------------------------- interpreter
@dataclass
class Ruleset:
    chains: dict[str, list[str]]
    elements: dict[tuple[str, str], str]


def ruleset(contribs) -> Ruleset:
    allc = merge(contribs)
    chains = {k: list(v) for k, v in BASE_RULES.items()}
    chains.update({k: list(v) for k, v in allc.chains.items()})
    return Ruleset(chains, dict(allc.elements))


_VMAP_LIT = re.compile(r"numgen random mod (\d+) vmap \{ (.*) \}$")
_NUMGEN_EQ = re.compile(r"numgen random mod (\d+) == 0 (goto|jump) (\S+)$")


@dataclass
class Packet:
    src: str
    proto: str  # 'tcp' | 'udp'
    dst: str
    dport: int
    local: frozenset = frozenset()  # the node's own addresses (fib daddr type local)


def _verdict(rs: Ruleset, chain: str, pkt: Packet, masq: bool, depth: int = 0):
    """Every possible outcome of running `chain`: ('dnat', ip, port, masq), ('reject',),
    ('return', masq) or ('accept', masq). numgen branches are explored all ways."""
    if depth > 32:
        raise ValueError(f"jump depth exceeded at {chain}")
    if chain not in rs.chains:
        raise ValueError(f"jump to missing chain {chain}")
    outs = []

    def run(i: int, masq: bool):
        rules = rs.chains[chain]
        while i < len(rules):
            r = rules[i]
            i += 1
            m = _VMAP_LIT.match(r)
            if m:
                for part in m.group(2).split(", "):
                    _, _, target = part.partition(" : goto ")
                    outs.extend(_verdict(rs, target, pkt, masq, depth + 1))
                return
            m = _NUMGEN_EQ.match(r)
            if m:
                # chosen: the goto; not chosen: the next rule
                outs.extend(_verdict(rs, m.group(3), pkt, masq, depth + 1))
                if int(m.group(1)) > 1:
                    run(i, masq)
                return
            cond, action = _split(r)
            if not _cond(rs, cond, pkt):
                continue
            if action.startswith("vmap @"):
                v = rs.elements.get((action[6:], _key(cond, action[6:], pkt)))
                if v is None:
                    continue
                action = v
            if action.startswith("goto ") or action.startswith("jump "):
                kind, target = action.split()
                for res in _verdict(rs, target, pkt, masq or target == "mark-for-masquerade", depth + 1):
                    if res[0] == "return" and kind == "jump":
                        run(i, res[1])
                    elif res[0] == "return":
                        outs.append(res)
                    else:
                        outs.append(res)
                return
            if action.startswith("dnat to "):
                ip, _, port = action[8:].partition(":")
                outs.append(("dnat", ip, int(port), masq))
                return
            if action.startswith("reject"):
                outs.append(("reject",))
                return
            if action == "drop":
                outs.append(("drop",))
                return
            if action == "return":
                outs.append(("return", masq))
                return
            # mark set ..., masquerade: no effect on where the packet goes
        outs.append(("return", masq))

    run(0, masq)
    return outs


def _split(rule: str) -> tuple[str, str]:
    rule = re.sub(r' comment "[^"]*"$', "", rule)
    for word in (" vmap @", " goto ", " jump ", " dnat to ", " reject", " return", " drop"):
        i = rule.find(word)
        if i >= 0:
            return rule[:i], rule[i + 1:]
    for word in ("goto ", "jump ", "reject", "return", "drop"):
        if rule.startswith(word):
            return "", rule
    return rule, ""


def _key(cond: str, m: str, pkt: Packet) -> str:
    if MAPS[m][1].startswith("ipv4_addr"):
        return f"{pkt.dst} . {pkt.proto} . {pkt.dport}"
    return f"{pkt.proto} . {pkt.dport}"


def _cond(rs: Ruleset, cond: str, pkt: Packet) -> bool:
    c = cond.strip()
    c = c.replace("ip daddr . meta l4proto . th dport", "").replace("meta l4proto . th dport", "")
    toks = c.split()
    i = 0
    while i < len(toks):
        if toks[i:i + 4] == ["fib", "daddr", "type", "local"]:
            if pkt.dst not in pkt.local:
                return False
            i += 4
        elif toks[i:i + 4] == ["fib", "saddr", "type", "local"]:
            if pkt.src not in pkt.local:
                return False
            i += 4
        elif toks[i:i + 4] == ["ip", "saddr", "!=", "{"]:
            end = toks.index("}", i)
            nets = [t.rstrip(",") for t in toks[i + 4:end] if t.rstrip(",")]
            if any(ipaddress.ip_address(pkt.src) in ipaddress.ip_network(n, strict=False) for n in nets):
                return False
            i = end + 1
        elif toks[i:i + 2] == ["ct", "state"]:
            i += 3  # every traced packet is the first of its connection
        elif toks[i:i + 3] == ["ip", "daddr", "!="]:
            if ipaddress.ip_address(pkt.dst) in ipaddress.ip_network(toks[i + 3]):
                return False
            i += 4
        elif toks[i:i + 2] == ["ip", "daddr"] and toks[i + 2].startswith("@"):
            if (toks[i + 2][1:], pkt.dst) not in rs.elements:
                return False
            i += 3
        elif toks[i:i + 2] in (["ip", "saddr"], ["ip", "daddr"]):
            addr = pkt.src if toks[i + 1] == "saddr" else pkt.dst
            if ipaddress.ip_address(addr) not in ipaddress.ip_network(toks[i + 2]):
                return False
            i += 3
        elif toks[i:i + 2] == ["meta", "l4proto"]:
            if toks[i + 2] != pkt.proto:
                return False
            i += 3
        elif toks[i:i + 2] in (["meta", "mark"],):
            return True  # mark set ... (an action, no condition)
        else:
            raise ValueError(f"interpreter: cannot read {cond!r}")
    return True


def trace(rs: Ruleset, pkt: Packet, hook: str = "prerouting") -> dict:
    """Where the first packet of a connection goes: {'rejected': bool, 'dropped': bool,
    'dnat': sorted [(ip, port, masq)]}. hook 'prerouting' (from outside or a pod) or 'output' (from the
    node itself). Filter chains run where their hooks and priorities put them: before
    DNAT (filter-prerouting, filter-output) or after it (filter-input, filter-forward,
    filter-output-post-dnat), which then see the endpoint as the destination."""
    from dataclasses import replace

    dropped = False

    def rejects(chain: str, p: Packet) -> bool:
        nonlocal dropped
        outs = _verdict(rs, chain, p, False)
        dropped = dropped or any(r[0] == "drop" for r in outs)
        return any(r[0] == "reject" for r in outs)

    pre, nat = ("filter-prerouting", "nat-prerouting") if hook == "prerouting" else ("filter-output", "nat-output")
    rejected = rejects(pre, pkt)
    outs = _verdict(rs, nat, pkt, False)
    dn = sorted({(r[1], r[2], r[3]) for r in outs if r[0] == "dnat"})
    for dst in {ip for ip, _, _ in dn} or {pkt.dst}:
        after = replace(pkt, dst=dst)
        if hook == "output":
            post = "filter-output-post-dnat"
        else:
            post = "filter-input" if dst in pkt.local else "filter-forward"
        rejected = rejected or rejects(post, after)
    return {"rejected": rejected, "dropped": dropped, "dnat": dn}
