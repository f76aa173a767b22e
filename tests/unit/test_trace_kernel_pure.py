"""The trace's kernel-side parsers that need no root: /proc/net sockets, namespace roles,
captured frames (Ethernet, IPv4, TCP, VXLAN with its inner frame, ICMP errors), probe matching."""

from __future__ import annotations

import socket
import struct

from netlab.kernel.capture import _is_probe, _parse_frame
from netlab.kernel.snapshot import _proc_sockets, _role


def ip4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def eth(payload: bytes, dmac: bytes = b"\x02\x42\x0a\x01\x4f\x0b") -> bytes:
    return dmac + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + payload


def tcp(sport: int, dport: int, seq: int, ack: int = 0, flags: int = 0x02) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_proc_net_tcp_listeners_and_udp_sockets():
    tcp_text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
                "   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0\n"
                "   1: 0401010A:9C40 0B4F010A:0050 01 00000000:00000000 00:00000000 00000000 0\n")
    assert [str(s) for s in _proc_sockets(tcp_text, "tcp")] == ["tcp 0.0.0.0:80 LISTEN"]  # not ESTABLISHED
    udp_text = "  sl  local_address rem_address   st\n   0: 00000000:2118 00000000:0000 07 0\n"
    assert [str(s) for s in _proc_sockets(udp_text, "udp")] == ["udp 0.0.0.0:8472"]


def test_namespace_roles_from_the_naming_scheme():
    assert _role("seed", "seed-net") == ("underlay", None, None)
    assert _role("seed", "seed-kub-node-1") == ("node", "kub-node-1", None)
    assert _role("seed", "seed-pod-default_my-nginx8-654b79496c-9qsk2") == (
        "pod", None, "default/my-nginx8-654b79496c-9qsk2")


def test_a_vxlan_frame_parses_with_its_inner_packet_and_matches_the_probe_by_its_isn():
    inner = eth(ip4("10.1.1.4", "10.1.79.11", 6, tcp(40000, 80, 123456)))
    vx = b"\x08\x00\x00\x00" + (1).to_bytes(3, "big") + b"\x00"
    outer = eth(ip4("172.23.100.5", "172.23.100.6", 17, udp(55555, 8472, vx + inner)))
    p = _parse_frame(outer, {8472})
    assert (p["src"], p["dst"], p["dport"], p["vni"]) == ("172.23.100.5", "172.23.100.6", 8472, 1)
    assert (p["inner"]["src"], p["inner"]["dst"], p["inner"]["seq"]) == ("10.1.1.4", "10.1.79.11", 123456)
    probe = {"isn": 123456, "sport": 40000, "marker": b"x"}
    assert _is_probe(p, probe, "tcp") == "fwd"
    # After DNAT and masquerading the addresses and ports change, the sequence number does not.
    natted = _parse_frame(eth(ip4("10.1.1.0", "10.1.79.11", 6, tcp(61000, 80, 123456))), {8472})
    assert _is_probe(natted, probe, "tcp") == "fwd"
    synack = _parse_frame(eth(ip4("10.1.79.11", "10.1.1.4", 6, tcp(80, 40000, 999, 123457, 0x12))), {8472})
    assert _is_probe(synack, probe, "tcp") == "reply"
    other = _parse_frame(eth(ip4("10.1.1.4", "10.1.79.11", 6, tcp(40001, 80, 5))), {8472})
    assert _is_probe(other, probe, "tcp") is None


def test_an_icmp_error_is_the_answer_to_the_packet_it_quotes():
    quoted = ip4("10.1.1.5", "192.1.9.9", 6, tcp(40000, 80, 777))[:28]
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    p = _parse_frame(eth(ip4("10.1.1.1", "10.1.1.5", 1, icmp)), set())
    assert (p["proto"], p["type"], p["code"]) == ("icmp", 3, 3)
    assert _is_probe(p, {"isn": 777, "sport": 40000, "marker": b"x"}, "tcp") == "reply"


def test_udp_probe_is_recognised_by_its_payload():
    probe = {"sport": 40000, "dst": "10.1.79.11", "marker": b"netlab-trace abc"}
    p = _parse_frame(eth(ip4("10.1.1.0", "10.1.79.11", 17, udp(61000, 5353, b"netlab-trace abc"))), {8472})
    assert _is_probe(p, probe, "udp") == "fwd"
