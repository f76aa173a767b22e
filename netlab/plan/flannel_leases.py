"""Flannel's subnet registry logic, done the way flanneld does it.

This module owns the pure half of flannel's etcd ("local manager") subnet
handling: the network config JSON stored at ``<prefix>/config``, the lease
keys and values under ``<prefix>/subnets/``, the order in which a node picks
its subnet lease, and the ``/run/flannel/subnet.env`` file the CNI plugin
reads.  It does no I/O: callers read etcd / files and hand the data in.

References (flannel-io/flannel): pkg/subnet/config.go (CheckNetworkConfig),
pkg/subnet/etcd/local_manager.go (tryAcquireLease, allocateSubnet),
pkg/subnet/subnet.go (MakeSubnetKey, WriteSubnetFile), pkg/lease/lease.go
(LeaseAttrs), pkg/backend/vxlan (vxlanLeaseAttrs).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any, Mapping

from netlab.errors import NetlabError

DEFAULT_PREFIX = "/coreos.com/network"

# Linux's default VXLAN UDP port (the vxlan module's historical default);
# flannel's Port 0 means "let the kernel choose", which is this one.
KERNEL_VXLAN_PORT = 8472

# flannel's allocateSubnet collects at most this many free subnets, then
# picks one of them at random.
RANDOM_WINDOW = 100

_MAX_VNI = (1 << 24) - 1  # VXLAN VNIs are 24 bits

# Names of the JSON keys NetworkConfig tracks as "explicitly set".
_JSON_FIELDS = ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Type", "VNI", "Port")


class LeaseError(NetlabError):
    """No subnet can be leased (the network is full).  A NetlabError so the
    CLI reports it as one line; bad config is a plain ValueError."""


# --------------------------------------------------------------------------
# Network config
# --------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    # bool is an int subclass; JSON true must not pass as SubnetLen 1.
    return isinstance(v, int) and not isinstance(v, bool)


def _as_ipv4(value: Any, what: str) -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected an IPv4 address string, got {value!r}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an IPv4 address") from None


@dataclass(frozen=True)
class NetworkConfig:
    """flannel's network config (``<prefix>/config`` in etcd).

    ``None`` for subnet_len / subnet_min / subnet_max / vni / port means
    "not given": ``__post_init__`` fills in flannel's computed default, and
    remembers which fields were given so that ``to_json()`` writes back
    only those (plus Backend.Type), exactly like a hand-written config.
    """

    network: IPv4Network
    subnet_len: int | None = None
    subnet_min: IPv4Address | None = None
    subnet_max: IPv4Address | None = None
    backend_type: str = "vxlan"
    vni: int | None = None
    port: int | None = None
    # JSON key names that were explicitly set; None = derive from which
    # constructor arguments were not None.
    explicit: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)

        if self.explicit is None:
            given = {"Network", "Type"}
            for name, key in (("subnet_len", "SubnetLen"), ("subnet_min", "SubnetMin"),
                              ("subnet_max", "SubnetMax"), ("vni", "VNI"), ("port", "Port")):
                if getattr(self, name) is not None:
                    given.add(key)
            put("explicit", frozenset(given))
        else:
            put("explicit", frozenset(self.explicit))

        # Network: Go's net.ParseCIDR masks host bits, so flannel treats
        # 10.1.0.5/16 as 10.1.0.0/16; do the same.
        net = self.network
        if isinstance(net, str):
            try:
                net = ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"Network: {self.network!r} is not a CIDR") from None
        if not isinstance(net, IPv4Network):
            raise ValueError(f"Network: expected an IPv4 network, got {self.network!r}")
        if net.prefixlen == 0 and int(net.network_address) == 0:
            raise ValueError("Network: please define a correct Network (0.0.0.0/0 is empty)")
        put("network", net)

        # SubnetLen, as CheckNetworkConfig computes / checks it.
        plen = net.prefixlen
        if self.subnet_len is None:
            if plen > 28:
                raise ValueError(f"Network: {net} is too small; minimum useful prefix is /28")
            put("subnet_len", 24 if plen <= 22 else plen + 2)
        else:
            if not _is_int(self.subnet_len):
                raise ValueError(f"SubnetLen: expected an integer, got {self.subnet_len!r}")
            if self.subnet_len > 30:
                raise ValueError(f"SubnetLen: {self.subnet_len} must be less than /31")
            # The first subnet is never used, so the network must split into
            # at least four for there to be more than one usable subnet.
            if self.subnet_len < plen + 2:
                raise ValueError(f"SubnetLen: /{self.subnet_len} must be at least /{plen + 2} "
                                 f"so that Network {net} holds at least four subnets")
        size = 1 << (32 - self.subnet_len)

        # SubnetMin skips the first subnet: its .0 would be the network address.
        if self.subnet_min is None:
            put("subnet_min", net.network_address + size)
        else:
            put("subnet_min", _as_ipv4(self.subnet_min, "SubnetMin"))
            if self.subnet_min not in net:
                raise ValueError(f"SubnetMin: {self.subnet_min} is not in the range of Network {net}")
        if self.subnet_max is None:
            put("subnet_max", IPv4Address(int(net.broadcast_address) + 1 - size))
        else:
            put("subnet_max", _as_ipv4(self.subnet_max, "SubnetMax"))
            if self.subnet_max not in net:
                raise ValueError(f"SubnetMax: {self.subnet_max} is not in the range of Network {net}")
        if int(self.subnet_min) % size:
            raise ValueError(f"SubnetMin: {self.subnet_min} is not on a SubnetLen (/{self.subnet_len}) boundary")
        if int(self.subnet_max) % size:
            raise ValueError(f"SubnetMax: {self.subnet_max} is not on a SubnetLen (/{self.subnet_len}) boundary")
        # flannel does not check this (it would just report "out of subnets");
        # saying so up front is clearer.
        if self.subnet_min > self.subnet_max:
            raise ValueError(f"SubnetMin: {self.subnet_min} is above SubnetMax {self.subnet_max}")

        if not isinstance(self.backend_type, str) or not self.backend_type:
            raise ValueError(f"Backend.Type: expected a non-empty string, got {self.backend_type!r}")

        if self.vni is None:
            put("vni", 1)  # flannel's vxlan default
        elif not _is_int(self.vni) or not 0 <= self.vni <= _MAX_VNI:
            raise ValueError(f"Backend.VNI: {self.vni!r} is not a 24-bit VXLAN id")
        if self.port is None or (_is_int(self.port) and self.port == 0):
            put("port", KERNEL_VXLAN_PORT)  # flannel's 0 = kernel default
        elif not _is_int(self.port) or not 0 < self.port <= 65535:
            raise ValueError(f"Backend.Port: {self.port!r} is not a UDP port")

    # -- JSON ----------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> "NetworkConfig":
        """Parse flannel's config JSON (a dict, or its text)."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise ValueError(f"config: not JSON: {e}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"config: expected a JSON object, got {type(data).__name__}")
        # Dual stack is flannel's, not this lab's.
        if data.get("EnableIPv6"):
            raise ValueError("EnableIPv6: IPv6 networks are not supported here")
        if data.get("EnableIPv4", True) is False:
            raise ValueError("EnableIPv4: an IPv4 Network is required here")
        if "Network" not in data:
            raise ValueError("Network: missing; please define a correct Network parameter")
        if not isinstance(data["Network"], str):
            raise ValueError(f"Network: expected a CIDR string, got {data['Network']!r}")

        explicit = {"Network"}
        kw: dict[str, Any] = {"network": data["Network"]}
        for key, name in (("SubnetLen", "subnet_len"), ("SubnetMin", "subnet_min"),
                          ("SubnetMax", "subnet_max")):
            if data.get(key) is not None:
                kw[name] = data[key]
                explicit.add(key)

        backend = data.get("Backend")
        if backend is None:
            # parseBackendType: no Backend at all means flannel's "udp".
            kw["backend_type"] = "udp"
        else:
            if not isinstance(backend, Mapping):
                raise ValueError(f"Backend: expected an object, got {backend!r}")
            kw["backend_type"] = backend.get("Type", "")
            explicit.add("Type")
            for key, name in (("VNI", "vni"), ("Port", "port")):
                if backend.get(key) is not None:
                    kw[name] = backend[key]
                    explicit.add(key)
        return cls(explicit=frozenset(explicit), **kw)

    def to_json(self, minimal: bool = True) -> dict[str, Any]:
        """flannel's config JSON as a dict.

        minimal=True writes only the fields that were explicitly set (plus
        Backend.Type, without which flannel would fall back to "udp");
        minimal=False writes every value flannel would compute.
        """
        keys = set(self.explicit or ()) if minimal else set(_JSON_FIELDS)
        out: dict[str, Any] = {"Network": str(self.network)}
        if "SubnetLen" in keys:
            out["SubnetLen"] = self.subnet_len
        if "SubnetMin" in keys:
            out["SubnetMin"] = str(self.subnet_min)
        if "SubnetMax" in keys:
            out["SubnetMax"] = str(self.subnet_max)
        backend: dict[str, Any] = {"Type": self.backend_type}
        if self.backend_type == "vxlan":
            if "VNI" in keys:
                backend["VNI"] = self.vni
            if "Port" in keys:
                backend["Port"] = self.port
        out["Backend"] = backend
        return out

    def to_json_text(self, minimal: bool = True) -> str:
        """to_json() as compact text, ready to put into etcd."""
        return json.dumps(self.to_json(minimal), separators=(",", ":"))

    # -- helpers -------------------------------------------------------------

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def is_compatible(self, subnet: IPv4Network) -> bool:
        """flannel's isSubnetConfigCompat: in [SubnetMin, SubnetMax] with the
        configured length (and, since ours is an IPv4Network, aligned)."""
        return (subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.network_address <= self.subnet_max)


# --------------------------------------------------------------------------
# Lease keys and values
# --------------------------------------------------------------------------

# flannel's subnetRegex (the optional IPv6 half is accepted and ignored).
_KEY_RE = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


def subnets_prefix(prefix: str = DEFAULT_PREFIX) -> str:
    """The etcd directory holding leases, with a trailing slash (for watches)."""
    return prefix.rstrip("/") + "/subnets/"


def config_key(prefix: str = DEFAULT_PREFIX) -> str:
    return prefix.rstrip("/") + "/config"


def lease_key(subnet: IPv4Network, prefix: str = DEFAULT_PREFIX) -> str:
    """``/coreos.com/network/subnets/10.1.79.0-24`` (MakeSubnetKey)."""
    subnet = ip_network(subnet)
    return f"{subnets_prefix(prefix)}{subnet.network_address}-{subnet.prefixlen}"


def parse_lease_key(key: str | bytes) -> IPv4Network | None:
    """The subnet named by a lease key, or None if it is not one."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    m = _KEY_RE.search(key)
    if not m:
        return None
    try:
        net = IPv4Network(f"{m.group(1)}/{m.group(2)}")  # strict: must be aligned
    except ValueError:
        return None
    return net


@dataclass(frozen=True)
class Lease:
    """One node's lease: which subnet, and how to reach it."""

    subnet: IPv4Network | None
    public_ip: str
    vtep_mac: str | None
    vni: int | None
    backend_type: str


def _norm_mac(mac: str) -> str:
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        raise ValueError(f"VtepMAC: {mac!r} is not a MAC address")
    return ":".join(f"{int(p, 16):02x}" for p in parts)


def lease_value(public_ip: str, vtep_mac: str, vni: int) -> str:
    """A vxlan lease value, byte for byte as flanneld writes it.

    Key order follows Go's struct order (LeaseAttrs, then vxlanLeaseAttrs);
    PublicIPv6 is a nil pointer, hence null; Go's net.HardwareAddr prints
    lowercase colon-separated hex.
    """
    ip = _as_ipv4(public_ip, "PublicIP")
    if not _is_int(vni) or not 0 <= vni <= _MAX_VNI:
        raise ValueError(f"VNI: {vni!r} is not a 24-bit VXLAN id")
    value = {
        "PublicIP": str(ip),
        "PublicIPv6": None,
        "BackendType": "vxlan",
        "BackendData": {"VNI": vni, "VtepMAC": _norm_mac(vtep_mac)},
    }
    return json.dumps(value, separators=(",", ":"))


def parse_lease_value(value: str | bytes, subnet: IPv4Network | None = None) -> Lease:
    """Parse a lease value; the subnet lives in the key, so pass it if known."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise ValueError(f"lease value: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("lease value: expected a JSON object")
    public_ip = str(_as_ipv4(data.get("PublicIP"), "PublicIP"))
    backend_type = data.get("BackendType") or ""
    bd = data.get("BackendData")
    vtep_mac = vni = None
    if isinstance(bd, dict):
        if bd.get("VtepMAC") is not None:
            vtep_mac = _norm_mac(str(bd["VtepMAC"]))
        if bd.get("VNI") is not None:
            if not _is_int(bd["VNI"]):
                raise ValueError(f"VNI: {bd['VNI']!r} is not an integer")
            vni = bd["VNI"]
    return Lease(subnet=subnet, public_ip=public_ip, vtep_mac=vtep_mac, vni=vni,
                 backend_type=backend_type)


def parse_lease(key: str | bytes, value: str | bytes) -> Lease | None:
    """A lease from an etcd key/value pair, or None if the key is not a lease."""
    subnet = parse_lease_key(key)
    if subnet is None:
        return None
    return parse_lease_value(value, subnet)


# --------------------------------------------------------------------------
# Choosing a subnet
# --------------------------------------------------------------------------


def _norm_table(table: Mapping[Any, Any], what: str) -> dict[IPv4Network, IPv4Address]:
    out: dict[IPv4Network, IPv4Address] = {}
    for sn, ip in table.items():
        out[ip_network(sn)] = _as_ipv4(str(ip), f"{what}[{sn}]")
    return out


def _merged(nets: list[IPv4Network]) -> list[tuple[int, int]]:
    """Inclusive integer address intervals, sorted and merged."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _overlaps_any(sn: IPv4Network, nets: list[IPv4Network]) -> bool:
    return any(sn.overlaps(n) for n in nets)


def free_subnets(config: NetworkConfig, taken: list[IPv4Network], limit: int = RANDOM_WINDOW) -> list[IPv4Network]:
    """The first `limit` subnets from SubnetMin to SubnetMax that overlap
    nothing in `taken`, in address order (allocateSubnet's candidate list).

    Jumps over occupied spans instead of stepping one subnet at a time, so a
    nearly full /8 is as cheap as an empty one.
    """
    size = config.subnet_size
    cur, last = int(config.subnet_min), int(config.subnet_max)
    spans = _merged(taken)
    i = 0
    out: list[IPv4Network] = []
    while cur <= last and len(out) < limit:
        while i < len(spans) and spans[i][1] < cur:
            i += 1
        if i < len(spans) and spans[i][0] <= cur + size - 1:
            # Overlaps span i: resume at the first aligned subnet after it.
            cur = (spans[i][1] // size + 1) * size
            continue
        out.append(IPv4Network((cur, config.subnet_len)))
        cur += size
    return out


def choose_subnet(
    config: NetworkConfig,
    leases: Mapping[IPv4Network, str],
    public_ip: str,
    previous: IPv4Network | None = None,
    reserved: Mapping[IPv4Network, str] | None = None,
    rng: random.Random | None = None,
) -> tuple[IPv4Network, str]:
    """Pick this node's subnet the way flannel's tryAcquireLease does.

    leases / reserved map subnet -> PublicIP of the holder.  Returns
    (subnet, reason), reason one of 'existing', 'reserved', 'previous',
    'random'.  Raises LeaseError when no subnet is free.

    The caller must still create the lease with a create-only etcd
    transaction and call again if it lost a race (flannel's errTryAgain).
    """
    me = _as_ipv4(str(public_ip), "public_ip")
    held = _norm_table(leases, "leases")
    res = _norm_table(reserved or {}, "reserved")
    if rng is None:
        rng = random.Random()

    # (1) A lease already held by this PublicIP: flannel reuses it if it is
    # still compatible with the config (otherwise it deletes it; see
    # stale_leases).  Sorted, like etcd's key-ordered listing.
    for sn in sorted(held):
        if held[sn] == me and config.is_compatible(sn):
            return sn, "existing"

    # (2) A reservation for this PublicIP (in etcd, a lease without a TTL),
    # unless a different node currently holds something overlapping it.
    others = [sn for sn, ip in held.items() if ip != me]
    for sn in sorted(res):
        if res[sn] == me and config.is_compatible(sn) and not _overlaps_any(sn, others):
            return sn, "reserved"

    taken = list(held) + list(res)

    # (3) The subnet from the node's old subnet.env, if it still fits the
    # config and nobody holds or reserves it.
    if previous is not None:
        prev = ip_network(previous, strict=False)
        if (isinstance(prev, IPv4Network) and config.is_compatible(prev)
                and not _overlaps_any(prev, taken)):
            return prev, "previous"

    # (4) Random among the first RANDOM_WINDOW free subnets.
    candidates = free_subnets(config, taken)
    if not candidates:
        raise LeaseError(f"out of subnets: every /{config.subnet_len} in "
                         f"{config.subnet_min} .. {config.subnet_max} of {config.network} "
                         f"is leased or reserved")
    return candidates[rng.randrange(len(candidates))], "random"


def stale_leases(config: NetworkConfig, leases: Mapping[IPv4Network, str], public_ip: str) -> list[IPv4Network]:
    """Leases held by this PublicIP that no longer fit the config; flannel
    deletes these before allocating a new one."""
    me = _as_ipv4(str(public_ip), "public_ip")
    return sorted(sn for sn, ip in _norm_table(leases, "leases").items()
                  if ip == me and not config.is_compatible(sn))


# --------------------------------------------------------------------------
# subnet.env
# --------------------------------------------------------------------------


def subnet_env(config: NetworkConfig, subnet: IPv4Network, mtu: int, ipmasq: bool = True) -> str:
    """/run/flannel/subnet.env as WriteSubnetFile writes it: FLANNEL_SUBNET
    is the subnet's first usable address (the bridge's) with its prefix."""
    subnet = ip_network(subnet)
    if not _is_int(mtu) or mtu <= 0:
        raise ValueError(f"mtu: {mtu!r} is not a positive integer")
    return (f"FLANNEL_NETWORK={config.network}\n"
            f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}\n"
            f"FLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n")


def parse_subnet_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines, dotenv style (flannel reads it with godotenv):
    blank lines and # comments skipped, optional `export`, optional quotes."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def previous_subnet(text: str) -> IPv4Network | None:
    """The subnet recorded in an old subnet.env (FLANNEL_SUBNET, masked as
    Go's ParseCIDR does), or None if absent, ambiguous or unparsable."""
    value = parse_subnet_env(text).get("FLANNEL_SUBNET", "")
    cidrs = [c.strip() for c in value.split(",") if c.strip()]
    if len(cidrs) != 1:  # flannel ignores zero or several entries
        return None
    try:
        net = ip_network(cidrs[0], strict=False)
    except ValueError:
        return None
    return net if isinstance(net, IPv4Network) else None


# --------------------------------------------------------------------------
# VTEP MAC
# --------------------------------------------------------------------------


def vtep_mac(seed: str) -> str:
    """A stable MAC for a node's flannel.1, derived from `seed` (e.g. the
    node name), so the VtepMAC in its lease survives agent restarts.

    First octet: locally administered bit set, multicast bit clear.
    """
    b = bytearray(hashlib.sha256(seed.encode("utf-8")).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


__all__ = [
    "DEFAULT_PREFIX", "KERNEL_VXLAN_PORT", "RANDOM_WINDOW",
    "LeaseError", "NetworkConfig", "Lease",
    "subnets_prefix", "config_key", "lease_key", "parse_lease_key",
    "lease_value", "parse_lease_value", "parse_lease",
    "free_subnets", "choose_subnet", "stale_leases",
    "subnet_env", "parse_subnet_env", "previous_subnet", "vtep_mac",
]
