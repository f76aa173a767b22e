"""The nftables table `ip kube-proxy`, as `nft -j` lists it, as a trace RuleSource.

Owns evaluating kube-proxy's nftables rules for `netlab trace` (plan.trace calls the two
methods of its RuleSource interface: the base chains of a hook, and running one). It reads
the JSON that `nft -j list table ip kube-proxy` prints and understands the expressions
kube-proxy's layout uses: ct state, ip saddr/daddr (address, prefix, @set), meta l4proto,
fib daddr type local, mark arithmetic, `... vmap @map` lookups, numgen choices (anonymous
vmap or `numgen random mod K == 0` rules), jump/goto/return, dnat, masquerade, reject.
Anything else is assumed to match and said so. Pure: the caller reads the kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netlab.plan.trace import ChainResult, Choice, Decision, HookEnv, Packet

__all__ = ["NftRules"]

_HOOKS = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
          "POSTROUTING": "postrouting"}


class _Stop(Exception):
    def __init__(self, verdict: str, reject_with: str | None = None):
        self.verdict, self.reject_with = verdict, reject_with


def _render(e) -> str:
    """A short nft-like text of an expression (for the trace listing)."""
    if isinstance(e, list):
        return " ".join(_render(x) for x in e)
    if not isinstance(e, dict):
        return str(e)
    (k, v), = e.items()
    if k == "match":
        op = {"==": "", "in": ""}.get(v["op"], v["op"] + " ")
        return f"{_render(v['left'])} {op}{_render(v['right'])}"
    if k == "payload":
        return f"{v['protocol']} {v['field']}"
    if k == "meta":
        return f"meta {v['key']}"
    if k == "ct":
        return f"ct {v['key']}"
    if k == "fib":
        return f"fib {' . '.join(v.get('flags', []))} {v['result']}"
    if k == "concat":
        return " . ".join(_render(x) for x in v)
    if k == "prefix":
        return f"{v['addr']}/{v['len']}"
    if k == "set":
        return "{ " + ", ".join(_render(x) for x in v) + " }"
    if k == "numgen":
        return f"numgen {v['mode']} mod {v['mod']}"
    if k == "vmap":
        data = v["data"]
        if isinstance(data, dict):
            data = "{ " + ", ".join(f"{_render(a)} : {_render(b)}" for a, b in data["set"]) + " }"
        return f"{_render(v['key'])} vmap {data}"
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k == "mangle":
        return f"{_render(v['key'])} set {_render(v['value'])}"
    if k in ("|", "^", "&"):
        return f"{_render(v[0])} {k} {hex(v[1]) if isinstance(v[1], int) else _render(v[1])}"
    if k == "dnat":
        return f"dnat to {v['addr']}" + (f":{v['port']}" if "port" in v else "")
    if k == "masquerade":
        return "masquerade" + (f" {v['flags']}" if v and v.get("flags") else "")
    if k == "reject":
        return "reject"
    if v is None:
        return k
    return f"{k} {v}"


def _key_str(k) -> str:
    if isinstance(k, dict) and "concat" in k:
        return " . ".join(str(x) for x in k["concat"])
    return str(k)


class NftRules:
    """One nftables table of a namespace, from `nft -j list table FAMILY NAME` objects."""

    kind = "nftables"

    def __init__(self, objects: list[dict]):
        self.table = "kube-proxy"
        self.chains: dict[str, dict] = {}
        self.rules: dict[str, list[list]] = {}
        self.maps: dict[str, dict[str, object]] = {}  # name -> {key text: verdict or True}
        for o in objects:
            if "table" in o:
                self.table = o["table"]["name"]
            elif "chain" in o:
                self.chains[o["chain"]["name"]] = o["chain"]
                self.rules.setdefault(o["chain"]["name"], [])
            elif "rule" in o:
                self.rules.setdefault(o["rule"]["chain"], []).append(o["rule"]["expr"])
            elif "map" in o or "set" in o:
                m = o.get("map") or o.get("set")
                elems = {}
                for e in m.get("elem", []):
                    if isinstance(e, list):
                        elems[_key_str(e[0])] = e[1]
                    else:
                        elems[_key_str(e)] = True
                self.maps[m["name"]] = elems

    def has_services(self) -> bool:
        return bool(self.maps.get("service-ips"))

    def base_chains(self, hook: str) -> list[tuple[int, str, str]]:
        h = _HOOKS.get(hook)
        return [(int(c.get("prio", 0)), self.table, name) for name, c in self.chains.items()
                if c.get("hook") == h]

    # -- evaluation ------------------------------------------------------------------
    def run(self, table: str, chain: str, pkt: Packet, env: HookEnv) -> ChainResult:
        decisions: list[Decision] = []
        state = {"pkt": pkt}
        try:
            self._walk(chain, state, env, decisions, 0, True)
        except _Stop as s:
            return ChainResult(s.verdict, state["pkt"], decisions, s.reject_with)
        return ChainResult(self.chains.get(chain, {}).get("policy", "accept").upper(), state["pkt"], decisions)

    def _value(self, e, pkt: Packet, env: HookEnv):
        if isinstance(e, dict):
            (k, v), = e.items()
            if k == "payload":
                if v["field"] == "saddr":
                    return pkt.src
                if v["field"] == "daddr":
                    return pkt.dst
                if v["field"] == "dport":
                    return pkt.dport
                if v["field"] == "sport":
                    return pkt.sport
            if k == "meta" and v["key"] == "l4proto":
                return pkt.proto
            if k == "meta" and v["key"] == "mark":
                return pkt.mark
            if k == "ct" and v["key"] == "state":
                return "new"  # a trace follows a connection's first packet
            if k == "fib" and v.get("result") == "type":
                addr = pkt.src if "saddr" in v.get("flags", []) else pkt.dst
                return "local" if addr in env.local else "unicast"
            if k == "concat":
                return " . ".join(str(self._value(x, pkt, env)) for x in v)
            if k in ("&", "|", "^"):
                a, b = self._value(v[0], pkt, env), v[1]
                return a & b if k == "&" else a | b if k == "|" else a ^ b
        raise LookupError(_render(e))

    def _match(self, m: dict, pkt: Packet, env: HookEnv) -> bool:
        left = self._value(m["left"], pkt, env)
        right = m["right"]
        if isinstance(right, str) and right.startswith("@"):
            ok = str(left) in self.maps.get(right[1:], {})
        elif isinstance(right, dict) and ("prefix" in right or "set" in right):
            items = right["set"] if "set" in right else [right]
            ok = left is not None and any(
                ipaddress.ip_address(left) in ipaddress.ip_network(
                    f"{i['prefix']['addr']}/{i['prefix']['len']}" if isinstance(i, dict) else str(i), strict=False)
                for i in items)
        elif isinstance(right, list):
            ok = left in right
        else:
            ok = left == right
        return (not ok) if m["op"] == "!=" else ok

    def _dry_dnat(self, chain: str, pkt: Packet, env: HookEnv) -> str | None:
        state = {"pkt": pkt}
        try:
            self._walk(chain, state, env, [], 1, False)
        except _Stop:
            pass
        p = state["pkt"]
        return f"{p.dst}:{p.dport}" if (p.dst, p.dport) != (pkt.dst, pkt.dport) else None

    def _pick(self, cands: list[Choice], env: HookEnv) -> Choice:
        pick = cands[0]
        if env.prefer:
            for c in cands:
                if env.prefer in (c.target, c.endpoint) or (c.endpoint or "").split(":")[0] == env.prefer:
                    pick = c
                    break
        for c in cands:
            c.chosen = c is pick
        return pick

    def _walk(self, chain: str, state: dict, env: HookEnv, out: list[Decision], depth: int,
              record: bool) -> bool:
        """Evaluate a chain; True if a goto'd chain ended (the caller's chain ends too)."""
        if depth > 40:
            raise ValueError(f"nftables: jump depth exceeded in {chain} (loop?)")
        rules = self.rules.get(chain, [])
        skip_numgen_until = -1
        for num, exprs in enumerate(rules, 1):
            if num <= skip_numgen_until:
                continue
            pkt = state["pkt"]
            text = _render(exprs)
            unknown: list[str] = []
            verdict = None
            matched = True
            choices = None
            for e in exprs:
                (k, v), = e.items()
                if k == "match" and "numgen" in v["left"]:
                    # a run of `numgen random mod K == 0 goto X` rules: one random choice
                    cands, remaining = [], 1.0
                    for n2, ex2 in enumerate(rules[num - 1:], num):
                        m2 = ex2[0].get("match") if len(ex2) == 2 else None
                        target = next(iter(ex2[-1].values()))
                        target = target.get("target") if isinstance(target, dict) else None
                        if m2 and "numgen" in m2["left"]:
                            prob = remaining / m2["left"]["numgen"]["mod"]
                        elif len(ex2) == 1 and target:
                            prob = remaining
                        else:
                            break
                        remaining -= prob
                        cands.append(Choice(n2, target, self._dry_dnat(target, pkt, env), prob))
                        if remaining <= 1e-12:
                            break
                    pick = self._pick(cands, env)
                    skip_numgen_until = cands[-1].rule
                    verdict, choices = {"goto": {"target": pick.target}}, cands
                    text = _render(rules[pick.rule - 1])
                    num = pick.rule
                    break
                if k == "match":
                    try:
                        if not self._match(v, pkt, env):
                            matched = False
                            break
                    except (LookupError, ValueError):
                        unknown.append(_render(e))
                elif k == "vmap":
                    data = v["data"]
                    if isinstance(v["key"], dict) and "numgen" in v["key"]:
                        entries = data["set"]
                        cands = [Choice(num, vd["goto"]["target"] if "goto" in vd else vd["jump"]["target"],
                                        None, 1 / len(entries)) for _, vd in entries]
                        for c in cands:
                            c.endpoint = self._dry_dnat(c.target, pkt, env)
                        pick = self._pick(cands, env)
                        verdict, choices = next(vd for _, vd in entries
                                                if (vd.get("goto") or vd.get("jump"))["target"] == pick.target), cands
                        break
                    try:
                        key = str(self._value(v["key"], pkt, env))
                    except LookupError:
                        unknown.append(_render(e))
                        continue
                    found = self.maps.get(data[1:], {}).get(key) if isinstance(data, str) else None
                    if found is None:
                        matched = False
                        break
                    verdict = found
                    text += f" ({key} : {_render(found)})"
                    break
                else:
                    verdict = e
                    if k not in ("mangle",):
                        break
                    new = self._value(v["value"], pkt, env)
                    state["pkt"] = pkt = replace(pkt, mark=new)
                    verdict = None
                    if record:
                        out.append(Decision(self.table, chain, num, text, f"mark {hex(new)}", "nftables"))
            if not matched:
                continue
            if verdict is None:
                continue
            note = f" (assumed to match: {', '.join(unknown)} not evaluated)" if unknown else ""
            if choices:
                pick = next(c for c in choices if c.chosen)
                note = f" (random choice among {len(choices)}, p={pick.probability:.2f})" + note
            (k, v), = verdict.items()
            if k in ("jump", "goto"):
                if record:
                    out.append(Decision(self.table, chain, num, text, f"{k} {v['target']}" + note,
                                        "nftables", choices))
                ended = self._walk(v["target"], state, env, out, depth + 1, record)
                if k == "goto" or ended:
                    return k == "goto"
                continue
            if k == "return":
                if record:
                    out.append(Decision(self.table, chain, num, text, "return" + note, "nftables"))
                return False
            if k == "dnat":
                p = state["pkt"]
                state["pkt"] = replace(p, dst=v["addr"], dport=v.get("port", p.dport))
                if record:
                    out.append(Decision(self.table, chain, num, text,
                                        f"DNAT {p.dst}:{p.dport} -> {v['addr']}:{state['pkt'].dport}" + note, "nftables"))
                raise _Stop("ACCEPT")
            if k == "masquerade":
                p = state["pkt"]
                ip = env.masq_source(env.out_dev)
                state["pkt"] = replace(p, src=ip)
                if record:
                    out.append(Decision(self.table, chain, num, text,
                                        f"MASQUERADE source {p.src} -> {ip} (address of {env.out_dev})" + note,
                                        "nftables"))
                raise _Stop("ACCEPT")
            if k == "reject":
                if record:
                    out.append(Decision(self.table, chain, num, text, "REJECT (icmp port-unreachable)" + note,
                                        "nftables"))
                raise _Stop("REJECT", "icmp-port-unreachable")
            if k in ("accept", "drop"):
                if record:
                    out.append(Decision(self.table, chain, num, text, k.upper() + note, "nftables"))
                raise _Stop(k.upper())
        return False
