"""nftables changes as one raw nfnetlink batch (one kernel transaction), without `nft`.

Why: at 10,000 services every `nft -f` run first reads the table into nft's cache: one
`add rule` costs ~270 ms and one `add element` ~330 ms (bench/nft.py), while the kernel
applies the change itself in well under a millisecond. This module packs the messages
nft would send (NEWCHAIN, DELRULE for a flush, NEWRULE, NEW/DELSETELEM, DELCHAIN) into
one batch on a NETLINK_NETFILTER socket opened in the caller's namespace, and reads one
acknowledgement per message; any error aborts the whole batch, as with `nft -f`.

It encodes exactly the rule forms plan.nft_rules writes for services and endpoints
(`ip saddr A jump C`, `meta l4proto P dnat to A:N`, `jump|goto C`,
`numgen random mod K == 0 goto C`) and the element forms of its maps; anything else is
a ValueError and the caller uses `nft -f`. The expressions are the ones `nft
--debug=netlink` shows for the same rule text, so `nft list` prints them the same way.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct

from netlab.errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
MSG = {"newchain": 3, "delchain": 5, "newrule": 6, "delrule": 8, "newsetelem": 12, "delsetelem": 14}
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 1, 4, 0x200, 0x400, 0x800
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFPROTO_IPV4 = 2
NFT_JUMP, NFT_GOTO = -3, -4
_PROTO = {"tcp": 6, "udp": 17}


def _attr(t: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * (-n % 4)


def _nest(t: int, *children: bytes) -> bytes:
    return _attr(t | NLA_F_NESTED, b"".join(children))


def _str(t: int, s: str) -> bytes:
    return _attr(t, s.encode() + b"\0")


def _u32(t: int, v: int) -> bytes:
    return _attr(t, struct.pack("!i" if v < 0 else "!I", v))


def _value(v: bytes) -> bytes:  # NFTA_DATA_VALUE inside an nft_data nest
    return _attr(1, v)


def _verdict(code: int, chain: str) -> bytes:  # NFTA_DATA_VERDICT
    return _nest(2, _u32(1, code), _str(2, chain))


def _expr(name: str, *attrs: bytes) -> bytes:  # NFTA_LIST_ELEM { NAME, DATA }
    return _nest(1, _str(1, name), _nest(2, *attrs))


def _imm_verdict(kind: str, chain: str) -> bytes:
    return _expr("immediate", _u32(1, 0), _nest(2, _verdict(NFT_GOTO if kind == "goto" else NFT_JUMP, chain)))


def _imm(reg: int, data: bytes) -> bytes:
    return _expr("immediate", _u32(1, reg), _nest(2, _value(data)))


def _cmp_eq(reg: int, data: bytes) -> bytes:
    return _expr("cmp", _u32(1, reg), _u32(2, 0), _nest(3, _value(data)))


def _reg32(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


_R_SADDR = re.compile(r"ip saddr (\S+) (jump|goto) (\S+)$")
_R_DNAT = re.compile(r"meta l4proto (tcp|udp) dnat to ([\d.]+):(\d+)$")
_R_VERDICT = re.compile(r"(jump|goto) (\S+)$")
_R_NUMGEN = re.compile(r"numgen random mod (\d+) == 0 (jump|goto) (\S+)$")


def rule_exprs(rule: str) -> bytes:
    """The NFTA_RULE_EXPRESSIONS payload for one of plan.nft_rules' service rule forms."""
    if m := _R_SADDR.match(rule):
        return (_expr("payload", _u32(1, 1), _u32(2, 1), _u32(3, 12), _u32(4, 4))  # ip saddr -> reg 1
                + _cmp_eq(1, ipaddress.IPv4Address(m[1]).packed) + _imm_verdict(m[2], m[3]))
    if m := _R_DNAT.match(rule):
        return (_expr("meta", _u32(1, 1), _u32(2, 16))  # meta l4proto -> reg 1
                + _cmp_eq(1, bytes([_PROTO[m[1]]]))  # data as long as what the load put there
                + _imm(1, ipaddress.IPv4Address(m[2]).packed) + _imm(2, struct.pack("!H", int(m[3])))
                + _expr("nat", _u32(1, 1), _u32(2, NFPROTO_IPV4), _u32(3, 1), _u32(5, 2), _u32(7, 2)))
    if m := _R_NUMGEN.match(rule):
        return (_expr("numgen", _u32(1, 1), _u32(2, int(m[1])), _u32(3, 1), _u32(4, 0))
                + _cmp_eq(1, b"\0\0\0\0") + _imm_verdict(m[2], m[3]))
    if m := _R_VERDICT.match(rule):
        return _imm_verdict(m[1], m[2])
    raise ValueError(f"no netlink encoding for rule {rule!r}")


def elem_key(key: str) -> bytes:
    """'192.1.0.3 . tcp . 80', 'tcp . 31295' or '192.1.0.3' as the set key's bytes
    (each field of a concatenation in its own 32-bit register)."""
    out = b""
    for part in key.split(" . "):
        if part in _PROTO:
            out += _reg32(bytes([_PROTO[part]]))
        elif part.isdigit():
            out += _reg32(struct.pack("!H", int(part)))
        else:
            out += ipaddress.IPv4Address(part).packed
    return out


class Batch:
    """One transaction: add messages, then commit() sends them and checks every answer."""

    def __init__(self, table: str, family: int = NFPROTO_IPV4):
        self.table = table
        self.family = family
        self.msgs: list[tuple[int, int, bytes]] = []  # (type, flags, attributes)

    def _add(self, kind: str, flags: int, *attrs: bytes) -> None:
        self.msgs.append(((NFNL_SUBSYS_NFTABLES << 8) | MSG[kind], flags, b"".join(attrs)))

    def add_chain(self, name: str) -> None:
        self._add("newchain", NLM_F_CREATE, _str(1, self.table), _str(3, name))

    def flush_chain(self, name: str) -> None:
        self._add("delrule", 0, _str(1, self.table), _str(2, name))

    def delete_chain(self, name: str) -> None:
        self._add("delchain", 0, _str(1, self.table), _str(3, name))

    def add_rule(self, chain: str, rule: str) -> None:
        self._add("newrule", NLM_F_CREATE | NLM_F_APPEND, _str(1, self.table), _str(2, chain),
                  _nest(4, rule_exprs(rule)))

    def _elem(self, kind: str, flags: int, set_name: str, key: str, value: str) -> None:
        e = _nest(1, _value(elem_key(key)))  # NFTA_SET_ELEM_KEY
        if value:
            verdict, _, chain = value.partition(" ")
            e += _nest(2, _verdict(NFT_GOTO if verdict == "goto" else NFT_JUMP, chain))  # ..._DATA
        self._add(kind, flags, _str(1, self.table), _str(2, set_name), _nest(3, _nest(1, e)))

    def add_element(self, set_name: str, key: str, value: str = "") -> None:
        self._elem("newsetelem", NLM_F_CREATE, set_name, key, value)

    def delete_element(self, set_name: str, key: str) -> None:
        self._elem("delsetelem", 0, set_name, key, "")

    def commit(self, sock: socket.socket) -> None:
        if not self.msgs:
            return
        seq0 = int.from_bytes(os.urandom(3), "big") << 4
        data = bytearray()

        def msg(mtype: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> None:
            body = struct.pack("!BBH", family, 0, res_id) + attrs
            data.extend(struct.pack("=IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST, seq, 0) + body)

        msg(NFNL_MSG_BATCH_BEGIN, 0, seq0, 0, NFNL_SUBSYS_NFTABLES, b"")
        for i, (mtype, flags, attrs) in enumerate(self.msgs):
            msg(mtype, flags | NLM_F_ACK, seq0 + 1 + i, self.family, 0, attrs)
        msg(NFNL_MSG_BATCH_END, 0, seq0 + 1 + len(self.msgs), 0, NFNL_SUBSYS_NFTABLES, b"")
        sock.sendall(bytes(data))
        pending = set(range(seq0 + 1, seq0 + 1 + len(self.msgs)))
        errors: list[tuple[int, int]] = []
        sock.settimeout(5.0)
        try:
            while pending:
                buf = sock.recv(1 << 20)
                off = 0
                while off + 16 <= len(buf):
                    n, mtype, _, seq, _ = struct.unpack_from("=IHHII", buf, off)
                    if mtype == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", buf, off + 16)
                        pending.discard(seq)
                        if code:
                            errors.append((seq - seq0 - 1, -code))
                    off += (n + 3) & ~3
                if errors:
                    sock.settimeout(0.05)  # the kernel aborted the batch: collect the rest, if any
        except socket.timeout:
            if not errors:
                raise KernelError(f"nftables netlink batch: no answer for {len(pending)} of "
                                  f"{len(self.msgs)} messages") from None
        if errors:
            i, code = errors[0]
            raise KernelError(f"nftables netlink batch failed (nothing applied): message {i + 1} of "
                              f"{len(self.msgs)}: {os.strerror(code)}"
                              + (" (object missing)" if code == errno.ENOENT else ""))


def open_socket() -> socket.socket:
    """A NETLINK_NETFILTER socket in the caller's current network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    return s


def apply_ops(sock: socket.socket, table: str, ops) -> int:
    """plan.nft_rules.delta_ops() as one batch; returns how many messages it took."""
    b = Batch(table)
    for op, *args in ops:
        getattr(b, op)(*args)
    b.commit(sock)
    return len(b.msgs)
