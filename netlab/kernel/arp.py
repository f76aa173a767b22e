"""ARP on a node's interface: the L2 half of a LoadBalancer address (as MetalLB's speaker).

Owns one raw AF_PACKET socket bound to an interface (the node's ens3) for ARP frames. It
answers "who-has <ip>" for the addresses it is told to announce with that interface's MAC,
and sends gratuitous ARP when it takes an address over, so that the outside host's
neighbour entry moves at once instead of when it next expires. The addresses are not put
on the interface: the kernel never answers for them, only this socket does, and the
proxy's nat rules (matching the destination) do the rest.

An ARP frame is 28 bytes of fixed layout (RFC 826); struct packs it.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def arp_frame(src_mac: bytes, dst_mac: bytes, op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> bytes:
    """Ethernet header + ARP payload (pure)."""
    eth = dst_mac + src_mac + struct.pack("!H", ETH_P_ARP)
    return eth + _ARP.pack(1, 0x0800, 6, 4, op, sha, socket.inet_aton(spa), tha, socket.inet_aton(tpa))


def parse_request(frame: bytes) -> tuple[bytes, str, str] | None:
    """(sender MAC, sender IP, target IP) of an ARP request frame; None for anything else."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, 1):
        return None
    return sha, socket.inet_ntoa(spa), socket.inet_ntoa(tpa)


class Responder:
    """Answers ARP for a changing set of addresses on one interface, from its own thread."""

    def __init__(self, ifname: str, log):
        self.ifname = ifname
        self.log = log
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.bind((ifname, ETH_P_ARP))
        self.mac: bytes = self.sock.getsockname()[4]
        self.addresses: frozenset[str] = frozenset()  # replaced whole, read without a lock
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"arp-{ifname}", daemon=True)
        self.thread.start()

    def announce(self, addresses: set[str]) -> None:
        """Answer for exactly these; gratuitous ARP for each one newly taken."""
        new = set(addresses) - self.addresses
        self.addresses = frozenset(addresses)
        for ip in sorted(new):
            self.gratuitous(ip)

    def gratuitous(self, ip: str) -> None:
        # A broadcast ARP request for our own address (sender = target = ip), as arping -U
        # and MetalLB send it; Linux neighbours update an existing entry from it.
        for op in (1, 2):
            self.sock.send(arp_frame(self.mac, BROADCAST, op, self.mac, ip, b"\x00" * 6 if op == 1 else BROADCAST, ip))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if not select.select([self.sock], [], [], 0.5)[0]:
                    continue
                frame = self.sock.recv(128)
            except OSError as e:
                if not self._stop.is_set():
                    self.log.warning("arp on %s: %s", self.ifname, e)
                return
            req = parse_request(frame)
            if req is None or req[2] not in self.addresses:
                continue
            sha, spa, tpa = req
            try:
                self.sock.send(arp_frame(self.mac, sha, 2, self.mac, tpa, sha, spa))
            except OSError as e:
                self.log.warning("arp reply for %s to %s: %s", tpa, spa, e)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
