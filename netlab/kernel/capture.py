"""`netlab trace --live`: one real probe, captured on every device of the lab while it passes.

Owns the raw AF_PACKET sockets (one per device, each opened from a thread inside the
device's namespace and bound to it), the probe itself (a TCP connect or a UDP datagram
carrying a recognisable payload, from a socket created inside the source namespace), the
frame parser (Ethernet, IPv4, TCP/UDP/ICMP, VXLAN with its inner frame) and the reads
around it: iptables counters before and after (`iptables-legacy-save -c`, never reset) and
the probe's conntrack entries. Everything is closed before returning: no process, rule or
counter is left behind; the only state the probe leaves is its own conntrack entries.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import subprocess
import time
import uuid

from netlab.kernel import netns as kns
from netlab.kernel import snapshot as kernel_snapshot
from netlab.plan.trace import Snapshot, Trace

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


def _open_captures(points: list[tuple[str, str]]) -> list[tuple[str, str, socket.socket]]:
    out = []
    for netns, dev in points:
        try:
            with kns.in_netns(netns):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((dev, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setblocking(False)
            out.append((netns, dev, s))
        except OSError:
            continue  # a device that went away since the snapshot
    return out


def _parse_l3(b: bytes, vxlan_ports: set[int], depth: int = 0) -> dict | None:
    """IPv4 packet -> fields (with `inner` for VXLAN)."""
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 15) * 4
    proto = b[9]
    p = {"src": socket.inet_ntoa(b[12:16]), "dst": socket.inet_ntoa(b[16:20])}
    l4 = b[ihl:]
    if proto == 6 and len(l4) >= 8:  # an ICMP error may quote only 8 bytes: ports and seq
        sport, dport, seq = struct.unpack("!HHI", l4[:8])
        ack = struct.unpack("!I", l4[8:12])[0] if len(l4) >= 12 else None
        p.update(proto="tcp", sport=sport, dport=dport, seq=seq, ack=ack, flags=l4[13] if len(l4) >= 14 else None)
    elif proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        p.update(proto="udp", sport=sport, dport=dport, payload=l4[8:])
        if dport in vxlan_ports and len(l4) >= 16 and depth == 0:
            p["vni"] = int.from_bytes(l4[12:15], "big")
            p["inner"] = _parse_frame(l4[16:], vxlan_ports, 1)
    elif proto == 1 and len(l4) >= 8:
        p.update(proto="icmp", type=l4[0], code=l4[1])
        if l4[0] in (3, 11) and depth == 0:  # an error: it quotes the packet it is about
            p["quoted"] = _parse_l3(l4[8:], vxlan_ports, 1)
    else:
        return None
    return p


def _parse_frame(b: bytes, vxlan_ports: set[int], depth: int = 0) -> dict | None:
    if len(b) < 14:
        return None
    etype = struct.unpack("!H", b[12:14])[0]
    off = 14
    if etype == 0x8100:
        etype, off = struct.unpack("!H", b[16:18])[0], 18
    if etype != 0x0800:
        return None
    p = _parse_l3(b[off:], vxlan_ports, depth)
    if p is not None:
        p["dmac"] = ":".join(f"{x:02x}" for x in b[0:6])
    return p


def _drain(caps, vxlan_ports: set[int], frames: list) -> None:
    for netns, dev, s in caps:
        while True:
            try:
                data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                break
            ts = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    ts = sec + nsec / 1e9
            p = _parse_frame(data, vxlan_ports)
            if p is not None:
                p.update(netns=netns, dev=dev, out=addr[2] == PACKET_OUTGOING, ts=ts or time.time())
                frames.append(p)


def _conntrack(netns: str, proto: str, src: str, sport: int, dst: str, dport: int) -> list[str]:
    cmd = [*kns.ns_exec_prefix(netns), "conntrack", "-L", "-p", proto, "--orig-src", src,
           "--orig-dst", dst, "--sport", str(sport), "--dport", str(dport)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in p.stdout.splitlines() if line.strip()]


def _send(src_ns: str, dst: str, dport: int, proto: str, marker: bytes) -> dict:
    with kns.in_netns(src_ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", 0))
        sport = s.getsockname()[1]
        s.settimeout(1.5)
        t0 = time.time()
        try:
            if proto == "tcp":
                s.connect((dst, dport))
                result = "connected"
            else:
                s.connect((dst, dport))  # connected: an ICMP error comes back as ECONNREFUSED
                s.send(marker)
                try:
                    s.recv(2048)
                    result = "answered"
                except socket.timeout:
                    result = "sent (no answer within 1.5 s)"
        except ConnectionRefusedError:
            result = "refused"
        except socket.timeout:
            result = "no answer within 1.5 s"
        except OSError as e:
            result = e.strerror or str(e)
        src = s.getsockname()[0]
        return {"sport": sport, "src": None if src == "0.0.0.0" else src, "result": result,
                "seconds": round(time.time() - t0, 4)}
    finally:
        s.close()


def _is_probe(p: dict, probe: dict, proto: str) -> str | None:
    """'fwd', 'reply' or None: is this parsed packet the probe, its answer, or neither?"""
    if p.get("inner"):
        return _is_probe(p["inner"], probe, proto)
    if p.get("quoted") is not None:
        q = p["quoted"]
        if proto == "tcp" and q.get("proto") == "tcp":
            return "reply" if probe.get("isn") is not None and q["seq"] == probe["isn"] else None
        return "reply" if _is_probe(q, probe, proto) == "fwd" else None
    if proto == "tcp" and p.get("proto") == "tcp":
        isn = probe.get("isn")
        if isn is None:
            return None
        if p["flags"] is None:
            return None
        if p["seq"] == isn and p["flags"] & 0x02 and not p["flags"] & 0x10:
            return "fwd"
        if p["ack"] == (isn + 1) & 0xFFFFFFFF and ((p["flags"] & 0x12) == 0x12 or p["flags"] & 0x04):
            return "reply"  # the SYN-ACK, or a RST refusing the SYN
        return None
    if proto == "udp" and p.get("proto") == "udp" and probe["marker"] in (p.get("payload") or b""):
        return "reply" if p["dport"] == probe["sport"] and p.get("src") == probe.get("dst") else "fwd"
    return None


def probe(snap: Snapshot, src_ns: str, dst: str, dport: int, proto: str,
          points: list[tuple[str, str]]) -> dict:
    vxlan_ports = {l.vxlan.port for ns in snap.namespaces.values() for l in ns.links.values() if l.vxlan}
    nodes = [ns.name for ns in snap.namespaces.values() if ns.role in ("node", "underlay")]
    # The snapshot's own read (iptables-save -c) is the "before"; nothing is ever reset.
    before = {ns: next((r.counters() for r in snap.namespaces[ns].rules if hasattr(r, "counters")), {})
              for ns in nodes}
    marker = f"netlab-trace {uuid.uuid4().hex}".encode()
    caps = _open_captures(points)
    frames: list[dict] = []
    try:
        _drain(caps, vxlan_ports, [])  # what was queued before the probe is not the probe
        sent = _send(src_ns, dst, dport, proto, marker)
        deadline = time.time() + 0.25
        while time.time() < deadline:
            select.select([s for _, _, s in caps], [], [], 0.05)
            _drain(caps, vxlan_ports, frames)
    finally:
        for _, _, s in caps:
            s.close()
    after = kernel_snapshot.iptables_counters(nodes)
    info = {"marker": marker, "dst": dst, **sent}
    # The SYN leaving the source carries the initial sequence number every copy keeps. NAT in
    # the source's own namespace (flannel's MASQUERADE --random-fully) may have changed its
    # source port: conntrack's reply tuple says into what.
    leave = {(sent.get("src"), sent["sport"])}
    if proto == "tcp" and sent.get("src"):
        for line in _conntrack(src_ns, proto, sent["src"], sent["sport"], dst, dport):
            tup = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
            if len(tup) >= 8:
                reply = dict(tup[4:8])
                leave.add((reply["dst"], int(reply["dport"])))
    for p in frames:
        if p["netns"] == src_ns and p["out"] and p.get("proto") == "tcp" and (p["flags"] or 0) & 0x02 \
                and not (p["flags"] or 0) & 0x10 and ((p["src"], p["sport"]) in leave or p["sport"] == sent["sport"]):
            info["isn"] = p["seq"]
            break
    seen = []
    for p in sorted(frames, key=lambda f: f["ts"]):
        kind = _is_probe(p, info, proto)
        if kind:
            seen.append({**{k: v for k, v in p.items() if k != "payload"}, "kind": kind})
    for s in seen:
        if s.get("inner"):
            s["inner"] = {k: v for k, v in s["inner"].items() if k != "payload"}
    # Which endpoint got it: where the probe entered a pod.
    endpoint = None
    pod_ns = {ns.name for ns in snap.namespaces.values() if ns.role == "pod"}
    own = {ns.name: ns.local_addresses() for ns in snap.namespaces.values()}
    for s in seen:  # (the source pod too: a pod reaching itself through its service)
        if s["kind"] == "fwd" and s["netns"] in pod_ns and not s["out"] and s["dst"] in own[s["netns"]]:
            endpoint = s["dst"]
    answered = None
    replies = [s for s in seen if s["kind"] == "reply" and s["out"]]
    # Who answered: a namespace sending the reply from one of its own addresses (a pod's SYN-ACK,
    # a node's ICMP error), not a node passing it on.
    for s in replies:
        if s["src"] in own.get(s["netns"], set()) and (s["netns"] != src_ns or s["src"] == endpoint):
            answered = {"netns": s["netns"], "where": snap.namespaces[s["netns"]].label, "src": s["src"],
                        "sport": s.get("sport"), "what": _reply_word(s)}
            break
    ct = {}
    for netns in nodes:
        for s in seen:
            if s["netns"] == netns and s["kind"] == "fwd" and not s["out"] and not s.get("inner") and s.get("sport"):
                lines = _conntrack(netns, proto, s["src"], s["sport"], s["dst"], s["dport"])
                if lines:
                    ct[netns] = lines
                break
        if netns not in ct:  # the probe's own namespace (a node as SRC)
            if netns == src_ns and sent.get("src"):
                lines = _conntrack(netns, proto, sent["src"], sent["sport"], dst, dport)
                if lines:
                    ct[netns] = lines
    moved = {}
    for netns in nodes:
        b, a = before.get(netns, {}), after.get(netns, {})
        moved[netns] = {k: a[k][0] - b.get(k, (0, 0))[0] for k in a if a[k][0] - b.get(k, (0, 0))[0] > 0}
    info.pop("marker")
    return {**info, "frames": seen, "endpoint": endpoint, "answered": answered, "conntrack": ct,
            "counters": moved, "t0": seen[0]["ts"] if seen else None}


def _reply_word(s: dict) -> str:
    if s.get("proto") == "icmp":
        return f"ICMP type {s['type']} code {s['code']}"
    if s.get("proto") == "tcp":
        return "SYN-ACK" if (s["flags"] & 0x12) == 0x12 else ("RST" if s["flags"] & 0x04 else "TCP")
    return "UDP answer"


def _pkt(p: dict) -> str:
    if p.get("proto") == "icmp":
        return f"icmp {p['src']} > {p['dst']} type {p['type']}"
    return f"{p['proto']} {p['src']}:{p['sport']} > {p['dst']}:{p['dport']}"


_IN_EVENTS = {"receive", "decap", "deliver", "drop", "bridge"}


def compare(tr: Trace, pr: dict, snap_ports: dict[tuple[str, str], list[str]]) -> dict:
    """Match the prediction's hops with what the capture saw: per hop the packet as it really
    looked there, its time, the counters that moved for the rules it hit; `agree` says
    whether every predicted hop saw the probe as predicted and nothing went elsewhere."""
    fwd = [f for f in pr["frames"] if f["kind"] == "fwd"]
    t0 = pr.get("t0")
    per_hop: dict[str, list[str]] = {}
    mismatches: list[str] = []
    used: set[int] = set()
    for h in tr.hops:
        devs = {h.device, *snap_ports.get((h.namespace, h.device), [])}
        want = h.wire or h.packet
        cands = [i for i, f in enumerate(fwd) if f["netns"] == h.namespace and f["dev"] in devs
                 and (h.event == "bridge" or f["out"] == (h.event not in _IN_EVENTS))]
        lines = []
        match = None
        for i in cands:
            f = fwd[i]
            if (f["src"], f["dst"], f.get("dport")) == (want.src, want.dst, want.dport) or (
                    want.proto == "udp" and f.get("inner") and (f["src"], f["dst"]) == (want.src, want.dst)):
                match = i
                break
        if match is None and cands:
            f = fwd[cands[0]]
            mismatches.append(f"hop {h.n} ({h.where} {h.device}): predicted {want}, captured {_pkt(f)}")
            match = cands[0]
        if match is not None:
            f = fwd[match]
            used.update(i for i in cands)
            dt = f"+{(f['ts'] - t0) * 1e6:.0f} us" if t0 else ""
            line = f"captured {'out' if f['out'] else 'in'} {f['dev']} {dt}: {_pkt(f)}"
            if f.get("inner"):
                line += f" [VXLAN VNI {f['vni']}: {_pkt(f['inner'])}]"
            lines.append(line)
        elif h.device != "-":
            mismatches.append(f"hop {h.n} ({h.where} {h.device}): predicted but not captured")
        moved = pr["counters"].get(h.namespace, {})
        for d in h.netfilter:
            if d.rule is None:
                continue
            n = moved.get((d.table, d.chain, d.rule), 0)
            if n:
                lines.append(f"counter {d.table} {d.chain} #{d.rule} +{n}")
        if pr["conntrack"].get(h.namespace) and h.namespace not in {x.namespace for x in tr.hops[:h.n - 1]}:
            lines += [f"conntrack: {c}" for c in pr["conntrack"][h.namespace]]
        per_hop[str(h.n)] = lines
    hop_places = {(h.namespace, d) for h in tr.hops
                  for d in {h.device, *snap_ports.get((h.namespace, h.device), [])}}
    for i, f in enumerate(fwd):
        if i not in used and (f["netns"], f["dev"]) not in hop_places:
            mismatches.append(f"captured where not predicted: {f['netns']} {f['dev']}: {_pkt(f)}")
    summary = [f"probe from source port {pr['sport']}: {pr['result']} after {pr['seconds']} s"]
    if pr.get("answered"):
        a = pr["answered"]
        summary.append(f"answered by {a['src']} ({a['what']} from {a['where']})")
    if pr.get("endpoint"):
        summary.append(f"endpoint that got it: {pr['endpoint']}")
    summary.append("prediction and capture agree" if not mismatches else
                   "prediction and capture DISAGREE: " + "; ".join(mismatches))
    frames = [{k: v for k, v in f.items() if k not in ("quoted",)} for f in pr["frames"]]
    for f in frames:
        f["ts"] = round(f["ts"] - t0, 6) if t0 else None
    return {"agree": not mismatches, "mismatches": mismatches, "hops": per_hop, "summary": summary,
            "result": pr["result"], "sport": pr["sport"], "endpoint": pr.get("endpoint"),
            "answered": pr.get("answered"), "conntrack": pr["conntrack"],
            "counters": {ns: [f"{t} {c} #{n} +{v}" for (t, c, n), v in sorted(m.items())]
                         for ns, m in pr["counters"].items() if m},
            "frames": [_jsonable(f) for f in frames]}


def _jsonable(f: dict) -> dict:
    out = {}
    for k, v in f.items():
        if isinstance(v, bytes):
            continue
        out[k] = _jsonable(v) if isinstance(v, dict) else v
    return out


def bridge_ports(snap: Snapshot) -> dict[tuple[str, str], list[str]]:
    """(namespace, bridge) -> its ports: bridged frames show on the ports, not the bridge."""
    return {(ns.name, l.name): [p.name for p in ns.ports_of(l.name)]
            for ns in snap.namespaces.values() for l in ns.links.values() if l.kind == "bridge"}


