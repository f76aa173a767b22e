"""Netlink (rtnetlink through pyroute2): links, addresses, routes, neighbours, FDB entries.

`Netlink` is the general stack: one pyroute2 IPRoute per namespace, opened from inside it
(setns, never the fork of IPRoute(netns=...)), with idempotent helpers: `ensure_*` tolerate
EEXIST, `delete_*` ENOENT. `Rtnl` is the pods' hot path: the same pyroute2 message classes
on a plain rtnetlink socket that opens in microseconds (IPRoute costs ~1 ms per request);
`PodWiring` pins a thread to the host's mount namespace to wire pods from.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading

from netlab.errors import KernelError, NotFound
from netlab.kernel.common import CLONE_FS, CLONE_NEWNET, CLONE_NEWNS, NOT_FOUND, fail, libc, libc_ok
from netlab.kernel.netns import in_netns, netns_path


# pyroute2 takes over half a second to import: loaded on first use, so that CLI commands
# which never touch netlink (get, logs, ...) start quickly.
class NetlinkError(Exception):
    """Stands for pyroute2's NetlinkError until _pyroute2() replaces it."""


IPRoute = None


def _pyroute2() -> None:
    global IPRoute, NetlinkError
    if IPRoute is None:
        from pyroute2 import IPRoute as ipr
        from pyroute2.netlink.exceptions import NetlinkError as err

        IPRoute, NetlinkError = ipr, err


def broadcast(address: str, prefixlen: int) -> str:
    """The subnet's broadcast address, as `ip addr add A/N brd +` (and dockerd) set it."""
    return str(ipaddress.ip_interface(f"{address}/{prefixlen}").network.broadcast_address)


class Netlink:
    """One rtnetlink socket in one namespace (None = the caller's own), idempotent helpers."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        where = f"namespace {netns}" if netns else "this namespace"
        _pyroute2()
        try:
            if netns:
                # IPRoute(netns=...) forks a helper; a fork in a process with gRPC threads (the
                # etcd client) can deadlock. Open the socket from inside the namespace instead:
                # setns() moves only this thread, and the socket stays bound there.
                with in_netns(netns):
                    self.ipr = IPRoute()
            else:
                self.ipr = IPRoute()
        except KernelError:
            raise
        except Exception as e:  # noqa: BLE001
            raise fail(f"open netlink socket in {where}", e) from None

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self) -> str:
        return f" in {self.netns}" if self.netns else ""

    # links ---------------------------------------------------------------
    def index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def must_index(self, ifname: str) -> int:
        idx = self.index(ifname)
        if idx is None:
            raise NotFound(f"link {ifname} not found{self._where()}")
        return idx

    def link_info(self, ifname: str) -> dict | None:
        idx = self.index(ifname)
        if idx is None:
            return None
        msg = self.ipr.get_links(idx)[0]
        return {
            "index": idx,
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"),
            "up": bool(msg["flags"] & 1),
            "master": msg.get_attr("IFLA_MASTER"),
            "stats": msg.get_attr("IFLA_STATS64"),
        }

    def links(self) -> list[str]:
        return [m.get_attr("IFLA_IFNAME") for m in self.ipr.get_links()]

    def _add(self, what: str, **kw) -> bool:
        try:
            self.ipr.link("add", **kw)
            return True
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                return False
            raise fail(f"create {what}{self._where()}", e) from None

    def set_link(self, ifname: str, **kw) -> None:
        try:
            self.ipr.link("set", index=self.must_index(ifname), **kw)
        except NetlinkError as e:
            raise fail(f"set {kw} on {ifname}{self._where()}", e) from None

    def ensure_bridge(self, ifname: str, mtu: int | None = None) -> bool:
        # Pin the MAC: a bridge otherwise takes its lowest port's, which changes when that
        # port goes (a pod deleted), and every neighbour's ARP entry for it goes stale:
        # replies to the old MAC are dropped until the cache expires (measured: curls to
        # a ClusterIP time out for ~30 s after a scale-down). Given at creation, as dockerd
        # does (02:42:...), so the bridge id follows it too: set afterwards to the same
        # value, `brctl show` reports bridge id 8000.000000000000.
        mac = ":".join(f"{b:02x}" for b in (0x02, 0x42, *os.urandom(4)))
        created = self._add(f"bridge {ifname}", ifname=ifname, kind="bridge", address=mac)
        kw = {"state": "up"}
        if mtu:
            kw["mtu"] = mtu
        self.set_link(ifname, **kw)
        return created

    def ensure_veth(self, ifname: str, peer: str, peer_netns: str | None = None,
                    mtu: int | None = None, alias: str | None = None,
                    peer_mac: str | None = None) -> bool:
        if self.index(ifname) is not None:
            return False
        peer_spec: dict = {"ifname": peer}
        if peer_mac:
            peer_spec["address"] = peer_mac
        if peer_netns:
            peer_spec["net_ns_fd"] = str(netns_path(peer_netns))
        kw: dict = {"ifname": ifname, "kind": "veth", "peer": peer_spec}
        if mtu:
            kw["mtu"] = mtu
            peer_spec["mtu"] = mtu
        created = self._add(f"veth {ifname}/{peer}", **kw)
        if alias:
            self.set_link(ifname, ifalias=alias)
        return created

    def ensure_vxlan(self, ifname: str, *, vni: int, port: int, local: str, dev: str,
                     mtu: int, mac: str | None = None) -> bool:
        """flannel.1: no learning (neighbours and FDB are programmed from etcd leases)."""
        info = self.link_info(ifname)
        if info is not None:
            return False
        kw = dict(ifname=ifname, kind="vxlan", vxlan_id=vni, vxlan_port=port,
                  vxlan_learning=0, vxlan_local=local, vxlan_link=self.must_index(dev), mtu=mtu)
        if mac:
            kw["address"] = mac
        return self._add(f"vxlan {ifname}", **kw)

    def vxlan_info(self, ifname: str) -> dict | None:
        """A vxlan link's id, dstport, local address, learning flag and lower device index."""
        idx = self.index(ifname)
        if idx is None:
            return None
        info = self.ipr.get_links(idx)[0].get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return {"kind": info.get_attr("IFLA_INFO_KIND") if info else None}
        d = info.get_attr("IFLA_INFO_DATA")
        return {"kind": "vxlan", "vni": d.get_attr("IFLA_VXLAN_ID"),
                "port": d.get_attr("IFLA_VXLAN_PORT"), "local": d.get_attr("IFLA_VXLAN_LOCAL"),
                "learning": d.get_attr("IFLA_VXLAN_LEARNING"), "link": d.get_attr("IFLA_VXLAN_LINK")}

    def delete_link(self, ifname: str) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.link("del", index=idx)
            return True
        except NetlinkError as e:
            if e.code in NOT_FOUND:
                return False
            raise fail(f"delete link {ifname}{self._where()}", e) from None

    # addresses -----------------------------------------------------------
    def addrs(self, ifname: str) -> list[tuple[str, int]]:
        idx = self.index(ifname)
        if idx is None:
            return []
        return [(m.get_attr("IFA_ADDRESS"), m["prefixlen"])
                for m in self.ipr.get_addr(index=idx, family=2)]

    def delete_addr(self, ifname: str, address: str, prefixlen: int) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)
            return True
        except NetlinkError as e:
            if e.code in NOT_FOUND:
                return False
            raise fail(f"delete address {address}/{prefixlen} from {ifname}{self._where()}", e) from None

    def ensure_addr(self, ifname: str, address: str, prefixlen: int) -> bool:
        try:
            self.ipr.addr("add", index=self.must_index(ifname), address=address, prefixlen=prefixlen,
                          **({"broadcast": broadcast(address, prefixlen)} if prefixlen <= 30 else {}))
            return True
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                return False
            raise fail(f"add address {address}/{prefixlen} to {ifname}{self._where()}", e) from None

    # routes --------------------------------------------------------------
    def ensure_route(self, dst: str, *, gateway: str | None = None, dev: str | None = None,
                     onlink: bool = False) -> None:
        kw: dict = {"dst": dst}
        if gateway:
            kw["gateway"] = gateway
        if dev:
            kw["oif"] = self.must_index(dev)
        if onlink:
            kw["flags"] = 4  # RTNH_F_ONLINK: the gateway (<subnet>.0) is not on any local subnet
        try:
            self.ipr.route("replace", **kw)
        except NetlinkError as e:
            raise fail(f"route {dst} via {gateway or dev}{self._where()}", e) from None

    def delete_route(self, dst: str) -> bool:
        try:
            self.ipr.route("del", dst=dst)
            return True
        except NetlinkError as e:
            if e.code in NOT_FOUND:
                return False
            raise fail(f"delete route {dst}{self._where()}", e) from None

    def routes(self) -> list[dict]:
        out = []
        for m in self.ipr.get_routes(family=2, table=254):
            dst = m.get_attr("RTA_DST")
            out.append({
                "dst": f"{dst}/{m['dst_len']}" if dst else "default",
                "gateway": m.get_attr("RTA_GATEWAY"),
                "oif": m.get_attr("RTA_OIF"),
            })
        return out

    # neighbours and FDB (flannel's per-lease entries) ------------------------
    def neigh_replace(self, ifname: str, ip: str, mac: str) -> None:
        try:
            self.ipr.neigh("replace", ifindex=self.must_index(ifname), dst=ip, lladdr=mac,
                           state=0x80)  # NUD_PERMANENT
        except NetlinkError as e:
            raise fail(f"neighbour {ip} -> {mac} on {ifname}{self._where()}", e) from None

    def neigh_delete(self, ifname: str, ip: str) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.neigh("del", ifindex=idx, dst=ip)
            return True
        except NetlinkError as e:
            if e.code in NOT_FOUND:
                return False
            raise fail(f"delete neighbour {ip} on {ifname}{self._where()}", e) from None

    def neighbours(self, ifname: str) -> list[tuple[str, str | None, int]]:
        """IPv4 neighbour entries of a link: (ip, mac, NUD state)."""
        idx = self.index(ifname)
        if idx is None:
            return []
        return [(m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR"), m["state"])
                for m in self.ipr.get_neighbours(family=2, ifindex=idx) if m["ifindex"] == idx]

    def fdb_entries(self, ifname: str) -> list[tuple[str, str | None]]:
        """Forwarding entries of a (vxlan) link: (mac, remote IP), as `bridge fdb show dev`."""
        idx = self.index(ifname)
        if idx is None:
            return []
        return [(m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST"))
                for m in self.ipr.fdb("dump", ifindex=idx) if m["ifindex"] == idx]

    def fdb_replace(self, ifname: str, mac: str, dst: str) -> None:
        try:
            # NTF_SELF: the entry belongs to the vxlan device itself (what `bridge fdb
            # replace ... self permanent` sends); without it the kernel says EOPNOTSUPP.
            self.ipr.fdb("replace", ifindex=self.must_index(ifname), lladdr=mac, dst=dst,
                         state=0x80, flags=0x02)
        except NetlinkError as e:
            raise fail(f"fdb {mac} -> {dst} on {ifname}{self._where()}", e) from None

    def fdb_delete(self, ifname: str, mac: str, dst: str) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
            return True
        except NetlinkError as e:
            if e.code in NOT_FOUND:
                return False
            raise fail(f"delete fdb {mac} on {ifname}{self._where()}", e) from None


_rt = None  # pyroute2's rtnetlink message classes and constants, loaded by _rtnl_codec()


def _rtnl_codec():
    global _rt
    if _rt is None:
        _pyroute2()
        from types import SimpleNamespace

        from pyroute2.netlink import (
            NLA_F_NESTED,
            NLM_F_ACK,
            NLM_F_CREATE,
            NLM_F_EXCL,
            NLM_F_REQUEST,
            NLMSG_ERROR,
            nlmsg,
            rtnl,
        )
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        class ifinfhead(nlmsg):
            """A link reply decoded up to its fixed part (ifinfmsg's fields): all a look-up
            needs, at 1/20 of the cost of decoding its ~50 attributes (20 us vs 0.45 ms)."""
            fields = ifinfmsg.fields

        class MarshalLinkHead(MarshalRtnl):
            msg_map = {**MarshalRtnl.msg_map, rtnl.RTM_NEWLINK: ifinfhead}

        _rt = SimpleNamespace(
            ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg, IFF_UP=IFF_UP,
            marshal=MarshalRtnl(), head_marshal=MarshalLinkHead(), NLMSG_ERROR=NLMSG_ERROR,
            NESTED=NLA_F_NESTED,
            REQ_ACK=NLM_F_REQUEST | NLM_F_ACK, CREATE_EXCL=NLM_F_CREATE | NLM_F_EXCL,
            NEWLINK=rtnl.RTM_NEWLINK, DELLINK=rtnl.RTM_DELLINK, GETLINK=rtnl.RTM_GETLINK,
            SETLINK=rtnl.RTM_SETLINK, NEWADDR=rtnl.RTM_NEWADDR, NEWROUTE=rtnl.RTM_NEWROUTE,
            AF_BRIDGE=socket.AF_BRIDGE, RT_TABLE_MAIN=254, RTPROT_BOOT=3, RTN_UNICAST=1)
    return _rt


class Rtnl:
    """An rtnetlink socket in the network namespace of the thread that opens it.

    Messages are pyroute2's (encoded by ifinfmsg/ifaddrmsg/rtmsg, replies and errors decoded
    by its marshal); only the socket is a plain one, which opens in microseconds.
    """

    def __init__(self, where: str = ""):
        self.where = where
        self.rt = _rtnl_codec()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msg, mtype: int, what: str, flags: int = 0, marshal=None) -> list:
        """Send the pyroute2 message `msg` as `mtype`; its decoded replies once acknowledged.
        A netlink error becomes KernelError/NotFound/AlreadyExists naming `what`."""
        rt = self.rt
        self.seq += 1
        hdr = msg["header"]
        hdr["type"], hdr["flags"], hdr["sequence_number"] = mtype, flags | rt.REQ_ACK, self.seq
        msg.encode()
        self.sock.send(msg.data)
        replies = []
        while True:
            for m in (marshal or rt.marshal).parse(self.sock.recv(65536)):
                h = m["header"]
                if h["sequence_number"] != self.seq:
                    continue
                if h["type"] == rt.NLMSG_ERROR:  # the ACK, or the request's error
                    if h["error"] is not None:
                        raise fail(what + self.where, h["error"])
                    return replies
                replies.append(m)

    def _link(self, index: int = 0, family: int = 0, up: bool = False, **attrs):
        msg = self.rt.ifinfmsg()
        msg["family"], msg["index"] = family, index
        if up:
            msg["flags"] = msg["change"] = self.rt.IFF_UP
        msg["attrs"] = list(attrs.items())
        return msg

    def link_index(self, ifname: str) -> int | None:
        try:
            r = self.request(self._link(IFLA_IFNAME=ifname), self.rt.GETLINK,
                             f"look up link {ifname}", marshal=self.rt.head_marshal)
        except NotFound:
            return None
        return r[0]["index"] if r else None

    def add_veth(self, ifname: str, peer: str, peer_netns_fd: int, mtu: int, master: int,
                 peer_mac: str | None = None) -> None:
        """`ip link add IFNAME mtu M master BR up type veth peer PEER netns FD mtu M [address MAC]`.

        The peer cannot be brought up in the same message (veth: ENOTCONN): see link_up().
        """
        peer_info = {"attrs": [("IFLA_IFNAME", peer), ("IFLA_MTU", mtu),
                               ("IFLA_NET_NS_FD", peer_netns_fd)]}
        if peer_mac:
            peer_info["attrs"].append(("IFLA_ADDRESS", peer_mac))
        linkinfo = {"attrs": [("IFLA_INFO_KIND", "veth"),  # KIND first: it selects DATA's type
                              ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_info)]})]}
        msg = self._link(up=True, IFLA_IFNAME=ifname, IFLA_MTU=mtu, IFLA_MASTER=master,
                         IFLA_LINKINFO=linkinfo)
        self.request(msg, self.rt.NEWLINK, f"create veth {ifname}/{peer}", self.rt.CREATE_EXCL)

    def link_up(self, index: int) -> None:
        self.request(self._link(index, up=True), self.rt.NEWLINK, f"bring link {index} up")

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """`bridge link set dev X hairpin on`: IFLA_PROTINFO/IFLA_BRPORT_MODE, AF_BRIDGE.

        IFLA_PROTINFO must carry NLA_F_NESTED: without it the bridge reads its first byte
        as a port state (the old RSTP format)."""
        msg = self._link(index, self.rt.AF_BRIDGE)
        msg["attrs"] = [("IFLA_PROTINFO", {"attrs": [("IFLA_BRPORT_MODE", 1 if on else 0)]},
                         self.rt.NESTED)]
        self.request(msg, self.rt.SETLINK, f"set hairpin on link {index}")

    def delete_link(self, ifname: str) -> bool:
        try:
            self.request(self._link(IFLA_IFNAME=ifname), self.rt.DELLINK, f"delete link {ifname}")
            return True
        except NotFound:
            return False

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        msg = self.rt.ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefixlen, index
        msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if prefixlen <= 30:
            msg["attrs"].append(("IFA_BROADCAST", broadcast(address, prefixlen)))
        self.request(msg, self.rt.NEWADDR, f"add address {address}/{prefixlen}",
                     self.rt.CREATE_EXCL)

    def add_default_route(self, gateway: str, index: int) -> None:
        rt = self.rt
        msg = rt.rtmsg()
        msg["family"], msg["table"], msg["proto"], msg["type"] = \
            socket.AF_INET, rt.RT_TABLE_MAIN, rt.RTPROT_BOOT, rt.RTN_UNICAST
        msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", index)]
        self.request(msg, rt.NEWROUTE, f"add default route via {gateway}", rt.CREATE_EXCL)


class PodWiring:
    """Makes the calling thread the place pods are wired from (setns is per thread).

    The thread joins `mnt_ns_fd` (the host's mount namespace, where pins must be made so
    that `ip netns` and `netlab down` see them; unshare(CLONE_FS) first, as setns to a
    mount namespace needs fs attributes of its own), keeps an rtnetlink socket in its own
    network namespace (`node`), and in_netns() runs a job inside a pod's network namespace
    with a fresh socket there and comes back. Use it from that one thread only: no thread
    hand-off (and no GIL switch interval) on the hot path. Processes that thread starts
    begin in the host's mount namespace too.
    """

    def __init__(self, mnt_ns_fd: int | None = None):
        self.thread = threading.get_ident()
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if mnt_ns_fd is not None:
            libc_ok(libc.unshare(CLONE_FS), "unshare the thread's fs attributes")
            libc_ok(libc.setns(mnt_ns_fd, CLONE_NEWNS), "enter the host mount namespace")
        self.node = Rtnl()

    def in_netns(self, netns_fd: int, fn, where: str = ""):
        """Run fn(rtnl) inside the network namespace `netns_fd`."""
        assert threading.get_ident() == self.thread, "PodWiring is bound to its thread"
        libc_ok(libc.setns(netns_fd, CLONE_NEWNET), f"enter network namespace{where}")
        rt = Rtnl(where)
        try:
            return fn(rt)
        finally:
            rt.close()
            libc_ok(libc.setns(self._home, CLONE_NEWNET), "return to the node's namespace")
