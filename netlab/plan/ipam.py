"""CNI host-local IPAM semantics, file-backed.

This module owns pod address allocation on one node's flannel subnet.  It
follows containernetworking/plugins' host-local (allocator/range.go,
allocator/allocator.go, backend/disk/backend.go):

* one file per allocated address, ``<data_dir>/<ip>``, created with
  O_CREAT|O_EXCL and holding the owner id, so allocations survive an agent
  restart and two processes can never be handed the same address;
* ``<data_dir>/last_reserved_ip.0`` remembers the last address handed out;
  the next scan starts just after it and wraps (round robin), so a
  just-released address is not reused straight away;
* the gateway is never handed out, nor the network or broadcast address.

Differences from host-local, on purpose: allocate() is idempotent per owner
(host-local refuses a second allocation), and the default range_start is
the first usable address that is not the gateway (host-local starts at .1
and skips the gateway while scanning: the same addresses come out).

Pure Python, no root: it only touches files under data_dir.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Iterable, Iterator

from netlab.errors import NetlabError

LAST_RESERVED_FILE = "last_reserved_ip.0"  # host-local's name for range set 0


class IPAMExhausted(NetlabError):
    """Every address in the range is allocated (a NetlabError: one line at the CLI)."""


def _as_addr(value: IPv4Address | str | None, what: str) -> IPv4Address | None:
    if value is None or isinstance(value, IPv4Address):
        return value
    try:
        addr = ip_address(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an IP address") from None
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{what}: {value!r} is not an IPv4 address")
    return addr


def _owner_of(path: Path) -> str | None:
    """The owner id in an allocation file.  host-local itself writes
    "<id>\\r\\n<ifname>" (older versions just "<id>"): the first line is the id."""
    try:
        data = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None
    lines = data.strip().splitlines()
    return lines[0].strip() if lines else ""


def _check_owner(owner: str) -> str:
    if not isinstance(owner, str):
        raise ValueError(f"owner: expected a string, got {owner!r}")
    owner = owner.strip()  # host-local trims the id too
    if not owner or "\n" in owner or "\r" in owner:
        raise ValueError(f"owner: {owner!r} must be a non-empty single line")
    return owner


class HostLocal:
    """host-local allocation from one range of one subnet."""

    def __init__(
        self,
        data_dir: Path | str,
        subnet: IPv4Network | str,
        range_start: IPv4Address | str | None = None,
        range_end: IPv4Address | str | None = None,
        gateway: IPv4Address | str | None = None,
    ) -> None:
        if isinstance(subnet, str):
            # "10.1.1.1/24" as in FLANNEL_SUBNET means 10.1.1.0/24.
            try:
                subnet = ip_network(subnet, strict=False)
            except ValueError:
                raise ValueError(f"subnet: {subnet!r} is not a CIDR") from None
        if not isinstance(subnet, IPv4Network):
            raise ValueError(f"subnet: expected an IPv4 network, got {subnet!r}")
        # A /31 or /32 has no address left once network/broadcast are out.
        if subnet.prefixlen > 30:
            raise ValueError(f"subnet: {subnet} is too small to allocate from")
        self.subnet = subnet
        net, bcast = subnet.network_address, subnet.broadcast_address

        def usable(addr: IPv4Address, what: str) -> IPv4Address:
            if addr not in subnet:
                raise ValueError(f"{what}: {addr} is not in subnet {subnet}")
            if addr in (net, bcast):
                raise ValueError(f"{what}: {addr} is the network or broadcast address of {subnet}")
            return addr

        gw = _as_addr(gateway, "gateway")
        self.gateway = usable(gw, "gateway") if gw is not None else net + 1

        start = _as_addr(range_start, "range_start")
        if start is None:
            start = net + 1
            if start == self.gateway:
                start += 1
        self.range_start = usable(start, "range_start")

        end = _as_addr(range_end, "range_end")
        # host-local's lastIP: the broadcast address minus one.
        self.range_end = usable(end if end is not None else bcast - 1, "range_end")

        if self.range_start > self.range_end:
            raise ValueError(f"range_start: {self.range_start} is after range_end {self.range_end}")

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return (f"HostLocal({str(self.data_dir)!r}, {self.subnet}, range {self.range_start}"
                f"-{self.range_end}, gateway {self.gateway})")

    # -- locking -------------------------------------------------------------

    @contextmanager
    def _locked(self, exclusive: bool = True) -> Iterator[None]:
        """flock() on the data directory itself (host-local uses a separate
        "lock" file; locking the directory leaves nothing behind).  It makes
        lookup-then-create atomic so per-owner idempotency holds across
        processes; O_EXCL stays the guarantee against duplicate addresses,
        even against writers that do not take this lock."""
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- reading ---------------------------------------------------------------

    def _scan(self) -> dict[IPv4Address, str]:
        out: dict[IPv4Address, str] = {}
        try:
            entries = list(os.scandir(self.data_dir))
        except FileNotFoundError:
            return out
        for entry in entries:
            try:
                addr = IPv4Address(entry.name)
            except ValueError:
                continue  # last_reserved_ip.0, temp files, anything else
            if not entry.is_file(follow_symlinks=False):
                continue
            owner = _owner_of(Path(entry.path))
            if owner is not None:
                out[addr] = owner
        return out

    def allocations(self) -> dict[IPv4Address, str]:
        """Every address recorded in data_dir -> owner, including ones outside
        the current subnet left by an earlier config, so that release() and
        reconcile() can clean them up too."""
        with self._locked(exclusive=False):
            return dict(sorted(self._scan().items()))

    def _in_range(self, addr: IPv4Address) -> bool:
        return self.range_start <= addr <= self.range_end and addr != self.gateway

    def lookup(self, owner: str) -> IPv4Address | None:
        """The owner's address in this range, if it has one."""
        owner = _check_owner(owner)
        with self._locked(exclusive=False):
            return self._lookup(owner, self._scan())

    def _lookup(self, owner: str, table: dict[IPv4Address, str]) -> IPv4Address | None:
        mine = sorted(a for a, o in table.items() if o == owner and self._in_range(a))
        return mine[0] if mine else None

    def last_reserved(self) -> IPv4Address | None:
        try:
            text = (self.data_dir / LAST_RESERVED_FILE).read_text().strip()
            return IPv4Address(text)
        except (FileNotFoundError, ValueError):
            return None

    # -- allocating ------------------------------------------------------------

    def _candidates(self) -> Iterator[IPv4Address]:
        """host-local's RangeIter: from last_reserved+1 (if it is in the
        range) or range_start, through range_end, wrapping, each address
        once; the gateway is skipped."""
        start, end = int(self.range_start), int(self.range_end)
        n = end - start + 1
        last = self.last_reserved()
        # A stale last_reserved_ip (range changed) just loses round robin once.
        first = (int(last) - start + 1) % n if last is not None and start <= int(last) <= end else 0
        bad = {self.gateway, self.subnet.network_address, self.subnet.broadcast_address}
        for k in range(n):
            addr = IPv4Address(start + (first + k) % n)
            if addr not in bad:
                yield addr

    def _reserve(self, addr: IPv4Address, owner: str) -> bool:
        path = self.data_dir / str(addr)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, owner.encode("utf-8"))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return True

    def _write_last_reserved(self, addr: IPv4Address) -> None:
        # Write-then-rename so a crash never leaves a torn file.
        tmp = self.data_dir / f".{LAST_RESERVED_FILE}.{os.getpid()}.tmp"
        tmp.write_text(str(addr))
        os.replace(tmp, self.data_dir / LAST_RESERVED_FILE)

    def allocate(self, owner: str) -> IPv4Address:
        """An address for `owner` (the same one again if it already has one)."""
        owner = _check_owner(owner)
        with self._locked():
            table = self._scan()
            have = self._lookup(owner, table)
            if have is not None:
                return have
            for addr in self._candidates():
                if addr in table:
                    continue
                if self._reserve(addr, owner):
                    self._write_last_reserved(addr)
                    return addr
        raise IPAMExhausted(f"no IP addresses available in range "
                            f"{self.range_start}-{self.range_end} of {self.subnet}")

    def allocate_new(self, owner: str) -> IPv4Address:
        """An address for an owner that holds none yet (a new pod's uid).  Skips
        allocate()'s scan of every allocation (which makes it O(n) per pod): each
        candidate costs one O_EXCL create, and round robin makes the first one
        free almost always."""
        owner = _check_owner(owner)
        with self._locked():
            for addr in self._candidates():
                if self._reserve(addr, owner):
                    self._write_last_reserved(addr)
                    return addr
        raise IPAMExhausted(f"no IP addresses available in range "
                            f"{self.range_start}-{self.range_end} of {self.subnet}")

    # -- releasing -------------------------------------------------------------

    def _remove(self, addr: IPv4Address) -> bool:
        try:
            (self.data_dir / str(addr)).unlink()
            return True
        except FileNotFoundError:
            return False

    def release(self, owner: str) -> list[IPv4Address]:
        """Free every address held by `owner`; idempotent.  last_reserved_ip
        is left alone (as host-local does), so round robin carries on."""
        owner = _check_owner(owner)
        with self._locked():
            return [a for a, o in sorted(self._scan().items()) if o == owner and self._remove(a)]

    def release_ip(self, ip: IPv4Address | str) -> bool:
        """Free one address whoever holds it; True if it was allocated."""
        addr = _as_addr(ip, "ip")
        with self._locked():
            return self._remove(addr)

    def reconcile(self, live_owners: Iterable[str]) -> list[IPv4Address]:
        """Free addresses whose owners are not in `live_owners` (e.g. pods
        that vanished while the agent was down); returns what was freed."""
        live = {o.strip() for o in live_owners}
        with self._locked():
            return [a for a, o in sorted(self._scan().items()) if o not in live and self._remove(a)]


__all__ = ["HostLocal", "IPAMExhausted", "LAST_RESERVED_FILE"]
