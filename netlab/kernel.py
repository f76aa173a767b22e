"""The kernel layer: every netlink, namespace, sysctl, iptables and process call of netlab.

Callers above this module never see a raw NetlinkError or OSError: operations raise
KernelError/NotFound/AlreadyExists with a sentence naming the object, and the `ensure_*`
helpers tolerate EEXIST and the `delete_*` helpers ENOENT so that every step is idempotent
(re-running `up`, restarting an agent). Netlink goes through pyroute2 with one socket per
namespace; iptables is written with `iptables-legacy-restore` and never through a second
write path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from netlab import names
from netlab.errors import AlreadyExists, KernelError, NotFound

_NOT_FOUND = (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL)


# pyroute2 takes over half a second to import: loaded on first use, so that CLI commands
# which never touch netlink (get, logs, ...) start quickly.
class NetlinkError(Exception):
    """Stands for pyroute2's NetlinkError until _pyroute2() replaces it."""


IPRoute = _netns = None


def _pyroute2() -> None:
    global IPRoute, _netns, NetlinkError
    if IPRoute is None:
        from pyroute2 import IPRoute as ipr, netns as ns
        from pyroute2.netlink.exceptions import NetlinkError as err

        IPRoute, _netns, NetlinkError = ipr, ns, err


def _fail(what: str, e: Exception) -> KernelError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = f"{what}: {os.strerror(code) if isinstance(code, int) and code > 0 else e}"
    if code == errno.EEXIST:
        return AlreadyExists(msg)
    if code in _NOT_FOUND:
        return NotFound(msg)
    return KernelError(msg)


# --------------------------------------------------------------------------- namespaces
def broadcast(address: str, prefixlen: int) -> str:
    """The subnet's broadcast address, as `ip addr add A/N brd +` (and dockerd) set it."""
    import ipaddress

    return str(ipaddress.ip_interface(f"{address}/{prefixlen}").network.broadcast_address)


def netns_path(name: str) -> Path:
    return names.NETNS_DIR / name


def netns_exists(name: str) -> bool:
    # A pin is a bind mount of an nsfs inode; a plain leftover file is not a namespace.
    try:
        return os.stat(netns_path(name)).st_ino != 0 and _is_nsfs(netns_path(name))
    except FileNotFoundError:
        return False


def _is_nsfs(p: Path) -> bool:
    # A live pin is a bind mount of nsfs: same device as our own /proc/self/ns/net.
    try:
        return os.stat(p).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino if _is_nsfs(netns_path(name)) else None
    except FileNotFoundError:
        return None


def netns_create(name: str) -> bool:
    """Create and pin a namespace; False if it already existed."""
    if netns_exists(name):
        return False
    p = netns_path(name)
    if p.exists():  # a half-made pin left by a crash: remove it and start over
        netns_delete(name)
    _pyroute2()
    try:
        if threading.current_thread() is threading.main_thread():
            # pyroute2's create() forks (unsafe beside gRPC threads): unshare this thread
            # instead, pin /proc/self/ns/net (the main thread's), and come back.
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _netns._create(name)
            finally:
                _libc_ok(_libc.setns(home, _CLONE_NEWNET), "return to our own network namespace")
                os.close(home)
        else:
            _netns.create(name)
    except KernelError:
        raise
    except Exception as e:  # noqa: BLE001 - pyroute2 raises OSError or its own errors
        raise _fail(f"create network namespace {name}", e) from None
    return True


def netns_attach(name: str, pid: int) -> None:
    """Pin the network namespace of `pid` as /run/netns/<name> (what `ip netns attach` does)."""
    _pyroute2()
    try:
        _netns.attach(name, pid)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"pin network namespace of pid {pid} as {name}", e) from None


def netns_delete(name: str) -> bool:
    p = netns_path(name)
    if not p.exists():
        return False
    _pyroute2()
    try:
        _netns.remove(name)
    except FileNotFoundError:
        return False
    except Exception as e:  # noqa: BLE001
        raise _fail(f"delete network namespace {name}", e) from None
    return True


def netns_list(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(names.NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def is_mount_point(path: Path) -> bool:
    """True if `path` is a mount point in this process's mount namespace (bind mounts too,
    which os.path.ismount misses when source and target share a file system)."""
    target = str(path)
    with open("/proc/self/mountinfo") as f:  # noqa: PTH123
        return any(line.split()[4] == target for line in f)


def pid_netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pids_in_netns(name: str) -> list[int]:
    """`ip netns pids NAME`: every process whose network namespace is that pin's."""
    ino = netns_inode(name)
    if ino is None:
        return []
    return [pid for pid in _all_pids() if pid_netns_inode(pid) == ino]


@contextlib.contextmanager
def in_netns(name: str):
    """Run the body with this thread inside network namespace `name`, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"network namespace {name} not found") from None
        try:
            _libc_ok(_libc.setns(fd, _CLONE_NEWNET), f"enter network namespace {name}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _libc_ok(_libc.setns(home, _CLONE_NEWNET), "return to our own network namespace")
    finally:
        os.close(home)


def ns_exec_prefix(netns: str | None) -> list[str]:
    return [] if netns is None else ["nsenter", f"--net={netns_path(netns)}", "--"]


# --------------------------------------------------------------------------- netlink
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
            raise _fail(f"open netlink socket in {where}", e) from None

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
            raise _fail(f"create {what}{self._where()}", e) from None

    def set_link(self, ifname: str, **kw) -> None:
        try:
            self.ipr.link("set", index=self.must_index(ifname), **kw)
        except NetlinkError as e:
            raise _fail(f"set {kw} on {ifname}{self._where()}", e) from None

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
            if e.code in _NOT_FOUND:
                return False
            raise _fail(f"delete link {ifname}{self._where()}", e) from None

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
            if e.code in _NOT_FOUND:
                return False
            raise _fail(f"delete address {address}/{prefixlen} from {ifname}{self._where()}", e) from None

    def ensure_addr(self, ifname: str, address: str, prefixlen: int) -> bool:
        try:
            self.ipr.addr("add", index=self.must_index(ifname), address=address, prefixlen=prefixlen,
                          **({"broadcast": broadcast(address, prefixlen)} if prefixlen <= 30 else {}))
            return True
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                return False
            raise _fail(f"add address {address}/{prefixlen} to {ifname}{self._where()}", e) from None

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
            raise _fail(f"route {dst} via {gateway or dev}{self._where()}", e) from None

    def delete_route(self, dst: str) -> bool:
        try:
            self.ipr.route("del", dst=dst)
            return True
        except NetlinkError as e:
            if e.code in _NOT_FOUND:
                return False
            raise _fail(f"delete route {dst}{self._where()}", e) from None

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
            raise _fail(f"neighbour {ip} -> {mac} on {ifname}{self._where()}", e) from None

    def neigh_delete(self, ifname: str, ip: str) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.neigh("del", ifindex=idx, dst=ip)
            return True
        except NetlinkError as e:
            if e.code in _NOT_FOUND:
                return False
            raise _fail(f"delete neighbour {ip} on {ifname}{self._where()}", e) from None

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
            raise _fail(f"fdb {mac} -> {dst} on {ifname}{self._where()}", e) from None

    def fdb_delete(self, ifname: str, mac: str, dst: str) -> bool:
        idx = self.index(ifname)
        if idx is None:
            return False
        try:
            self.ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
            return True
        except NetlinkError as e:
            if e.code in _NOT_FOUND:
                return False
            raise _fail(f"delete fdb {mac} on {ifname}{self._where()}", e) from None


# --------------------------------------------------------------------------- sysctl, iptables
def sysctl_set(netns: str | None, values: dict[str, str]) -> None:
    """Set sysctls inside a namespace (net.* sysctls are per namespace)."""
    args = [f"{k}={v}" for k, v in values.items()]
    run([*ns_exec_prefix(netns), "sysctl", "-q", "-w", *args], what=f"sysctl in {netns}")


def sysctl_get(netns: str | None, key: str) -> str:
    return run([*ns_exec_prefix(netns), "sysctl", "-n", key], what=f"sysctl in {netns}").strip()


def xtables_lock(lab: str) -> Path:
    """The lab's own iptables lock file (XTABLES_LOCKFILE).

    Tables are per namespace, so one lab never has to wait for another's writes (or for a
    10,000-service restore of a benchmark) on the host-wide /run/xtables.lock.
    """
    return names.run_dir(lab) / "xtables.lock"


def _xtables_env(netns: str | None) -> dict | None:
    lab = netns.partition("-")[0] if netns else os.environ.get(names.ENV_MARK)
    if not lab or not names.run_dir(lab).is_dir():
        return None  # not a lab's namespace: the host-wide lock, as any iptables
    return {**os.environ, "XTABLES_LOCKFILE": str(xtables_lock(lab))}


def iptables_restore(netns: str | None, text: str, *, noflush: bool = True) -> None:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-restore", "-w", "5"]
    if noflush:
        cmd.append("--noflush")
    run(cmd, input=text, what=f"iptables-legacy-restore{' in ' + netns if netns else ''}",
        env=_xtables_env(netns))


def iptables(netns: str | None, *args: str) -> subprocess.CompletedProcess:
    """One iptables-legacy call; returns the result (exit 1 is an answer for -C)."""
    cmd = [*ns_exec_prefix(netns), "iptables-legacy", "-w", "5", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=_xtables_env(netns))


def iptables_save(netns: str | None, table: str | None = None) -> str:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-save"]
    if table:
        cmd += ["-t", table]
    return run(cmd, what="iptables-legacy-save")


def conntrack_delete(netns: str | None, *filters: str) -> int:
    """`conntrack -D FILTERS`: drop matching flows (stale UDP service flows); how many went."""
    cmd = [*ns_exec_prefix(netns), "conntrack", "-D", *filters]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelError("conntrack: command not found (apt-get install conntrack)") from None
    # Exit 1 with "0 flow entries have been deleted" just means there was nothing to drop.
    for line in p.stderr.splitlines():
        if "flow entries have been deleted" in line:
            return int(line.split(":")[-1].split()[0])
    if p.returncode not in (0, 1):
        raise KernelError(f"conntrack -D {' '.join(filters)} failed: {p.stderr.strip()}")
    return 0


def run(cmd: Sequence[str], *, input: str | None = None, what: str | None = None,
        env: dict | None = None) -> str:
    return _completed(cmd, input=input, what=what, env=env).stdout


def _completed(cmd: Sequence[str], *, input: str | None = None, what: str | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise KernelError(f"{what or cmd[0]}: command {cmd[0]} not found (try `netlab doctor`)") from None
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise KernelError(f"{what or cmd[0]} failed: {err[-1] if err else 'exit ' + str(p.returncode)}")
    return p


# --------------------------------------------------------------------------- processes
def _all_pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # noqa: PTH123
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def pid_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def pid_cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def lab_mark(lab: str) -> dict[str, str]:
    """The environment mark that makes a process findable as the lab's."""
    return {names.ENV_MARK: lab}


def lab_pids(lab: str) -> list[int]:
    """Every live process of the lab: marked in its environment, or inside one of its namespaces."""
    me = {os.getpid(), os.getppid()}
    inodes = {netns_inode(n) for n in netns_list(names.ns_prefix(lab))} - {None}
    found = []
    for pid in _all_pids():
        if pid in me or pid == 1:
            continue
        if pid_environ(pid).get(names.ENV_MARK) == lab or pid_netns_inode(pid) in inodes:
            if pid_alive(pid):
                found.append(pid)
    return found


def spawn(argv: Sequence[str], *, lab: str, netns: str | None = None, log: Path | None = None,
          cwd: Path | None = None, env: dict | None = None,
          bind: dict[Path, Path] | None = None) -> int:
    """Start a detached process (own session), inside `netns`, marked as the lab's.

    `bind` maps source directories onto mount points in a private mount namespace of the
    process, which is how each node gets its own /run/flannel.
    """
    cmd: list[str] = list(argv)
    if bind:
        # `ip netns exec` gives the process its own mount namespace (and the node's /sys);
        # the binds happen inside it and never show on the host.
        script = " && ".join(f'mount --bind "{s}" "{t}"' for s, t in bind.items()) + ' && exec "$@"'
        cmd = ["sh", "-c", script, "sh", *cmd]
        cmd = (["ip", "netns", "exec", netns] if netns else ["unshare", "--mount", "--"]) + cmd
    else:
        cmd = [*ns_exec_prefix(netns), *cmd]
    full_env = {**os.environ, **(env or {}), **lab_mark(lab)}
    pass_fds: tuple = ()
    if bind:
        # It will live in a mount namespace of its own; hand it ours (see HOST_MNTNS_ENV).
        mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        pass_fds = (mnt,)
        full_env[HOST_MNTNS_ENV] = str(mnt)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=full_env, start_new_session=True, close_fds=True,
                             pass_fds=pass_fds)
    except FileNotFoundError:
        raise KernelError(f"start {argv[0]}: command not found (try `netlab doctor`)") from None
    finally:
        if log:
            out.close()
        for fd in pass_fds:
            os.close(fd)
    return p.pid


def reap_nowait() -> None:
    """Collect exited children so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_pids(pids: Iterable[int], timeout: float = 3.0, sig: int = signal.SIGTERM) -> list[int]:
    """SIGTERM (or `sig`: SIGKILL plays a crash), then SIGKILL what is still alive after
    `timeout`. Only pids the caller found."""
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_nowait()
        if not any(pid_alive(p) for p in pids):
            return pids
        time.sleep(0.02)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        reap_nowait()
        time.sleep(0.02)
    return pids


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- pods' hot path
# Creating a pod is the hot path of every larger lab. pyroute2's IPRoute costs about 1 ms per
# request here (its asyncio core; IPRoute(netns=...) forks) and its IPRSocket 1.5 ms to open,
# so pods are wired through Rtnl: pyroute2's message classes on a plain rtnetlink socket, one
# per namespace, opened by a thread that setns()ed there. Processes start with posix_spawn
# (vfork: no copy of a large Python process), and exits are noticed through pidfds instead
# of polling /proc.
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_FS, _CLONE_NEWNS, _CLONE_NEWNET = 0x200, 0x20000, 0x40000000
_MS_BIND, _MNT_DETACH = 4096, 2
# The agent runs in a mount namespace of its own (its /run/flannel): pins made there would
# be invisible to `ip netns` and `netlab down`, so spawn() hands it the starter's namespace.
HOST_MNTNS_ENV = "NETLAB_HOST_MNTNS_FD"


def _libc_ok(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise _fail(what, OSError(e, os.strerror(e)))


def host_mount_ns_fd() -> int | None:
    """The mount namespace this process was started from (see HOST_MNTNS_ENV), if known."""
    try:
        fd = int(os.environ.get(HOST_MNTNS_ENV, ""))
        if not os.readlink(f"/proc/self/fd/{fd}").startswith("mnt:"):
            return None
    except (ValueError, OSError):
        return None
    os.set_inheritable(fd, False)  # our own children need not hold it
    return fd


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot: with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:  # noqa: PTH123
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def spawn_fast(argv: Sequence[str], *, lab: str, env: dict[str, str], log: Path | None = None,
               stdout_fd: int | None = None) -> int:
    """posix_spawn a detached process (own session, stdin /dev/null) marked as the lab's.

    stdout and stderr go to `log` (appended) or stdout_fd (stderr then to /dev/null).
    argv[0] must be an absolute path.
    """
    fa: list = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    if log is not None:
        fa += [(os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    elif stdout_fd is not None:
        fa += [(os.POSIX_SPAWN_DUP2, stdout_fd, 1),
               (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)]
    else:
        fa += [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, 1, 2)]
    try:
        return os.posix_spawn(argv[0], list(argv), {**env, **lab_mark(lab)}, file_actions=fa,
                              setsid=True)
    except OSError as e:
        raise _fail(f"start {argv[0]}", e) from None


class PidWatcher:
    """Calls on_exit(key) from its own thread as soon as a watched process exits (pidfd)."""

    def __init__(self, on_exit):
        self._on_exit = on_exit
        self._ep = select.epoll()
        self._fds: dict[int, object] = {}
        self._keys: dict[object, int] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="pidwatch", daemon=True).start()

    def watch(self, pid: int, key, starttime: int | None = None) -> bool:
        """False if the process is already gone (or the pid now belongs to another one)."""
        self.unwatch(key)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        if starttime is not None and proc_starttime(pid) != starttime:
            os.close(fd)
            return False
        with self._lock:
            self._fds[fd], self._keys[key] = key, fd
            self._ep.register(fd, select.EPOLLIN)
        return True

    def unwatch(self, key) -> None:
        with self._lock:
            fd = self._keys.pop(key, None)
            if fd is not None:
                self._fds.pop(fd, None)
                self._ep.unregister(fd)
                os.close(fd)

    def _loop(self) -> None:
        while True:
            for fd, _ in self._ep.poll():
                with self._lock:
                    key = self._fds.pop(fd, None)
                    if key is None:
                        continue
                    self._keys.pop(key, None)
                    self._ep.unregister(fd)
                    os.close(fd)
                self._on_exit(key)


_rt = None  # pyroute2's rtnetlink message classes and constants, loaded by _rtnl_codec()


def _rtnl_codec():
    global _rt
    if _rt is None:
        _pyroute2()
        from types import SimpleNamespace

        from pyroute2.netlink import (NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
                                      NLM_F_REQUEST, NLMSG_ERROR, nlmsg)
        from pyroute2.netlink import rtnl
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
                        raise _fail(what + self.where, h["error"])
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

    def add_veth(self, ifname: str, peer: str, peer_netns_fd: int, mtu: int, master: int) -> None:
        """`ip link add IFNAME mtu M master BR up type veth peer PEER netns FD mtu M`.

        The peer cannot be brought up in the same message (veth: ENOTCONN): see link_up().
        """
        peer_info = {"attrs": [("IFLA_IFNAME", peer), ("IFLA_MTU", mtu),
                               ("IFLA_NET_NS_FD", peer_netns_fd)]}
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
            _libc_ok(_libc.unshare(_CLONE_FS), "unshare the thread's fs attributes")
            _libc_ok(_libc.setns(mnt_ns_fd, _CLONE_NEWNS), "enter the host mount namespace")
        self.node = Rtnl()

    def in_netns(self, netns_fd: int, fn, where: str = ""):
        """Run fn(rtnl) inside the network namespace `netns_fd`."""
        assert threading.get_ident() == self.thread, "PodWiring is bound to its thread"
        _libc_ok(_libc.setns(netns_fd, _CLONE_NEWNET), f"enter network namespace{where}")
        rt = Rtnl(where)
        try:
            return fn(rt)
        finally:
            rt.close()
            _libc_ok(_libc.setns(self._home, _CLONE_NEWNET), "return to the node's namespace")


def pin_netns(name: str, pid: int) -> None:
    """`ip netns attach NAME PID` with one mount(2); from the mount namespace to pin in."""
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        if pid_netns_inode(pid) is not None and netns_inode(name) == pid_netns_inode(pid):
            return  # already pinned (an adopted pod)
        if netns_inode(name) is not None:
            raise AlreadyExists(f"pin network namespace of pid {pid} as {name}: "
                                f"{path} holds another namespace") from None
    _libc_ok(_libc.mount(f"/proc/{pid}/ns/net".encode(), str(path).encode(), None, _MS_BIND, None),
             f"pin network namespace of pid {pid} as {name}")


def unpin_netns(name: str) -> bool:
    path = netns_path(name)
    _libc.umount2(str(path).encode(), _MNT_DETACH)  # EINVAL: not mounted (a half-made pin)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
