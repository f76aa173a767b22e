"""The kernel layer: every netlink, namespace, sysctl, iptables and process call of netlab.

Callers above this module never see a raw NetlinkError or OSError: operations raise
KernelError/NotFound/AlreadyExists with a sentence naming the object, and the `ensure_*`
helpers tolerate EEXIST and the `delete_*` helpers ENOENT so that every step is idempotent
(re-running `up`, restarting an agent). Netlink goes through pyroute2 with one socket per
namespace; iptables is written with `iptables-legacy-restore` and never through a second
write path.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Sequence

from pyroute2 import IPRoute, netns as _netns
from pyroute2.netlink.exceptions import NetlinkError

from netlab import names
from netlab.errors import AlreadyExists, KernelError, NotFound

_NOT_FOUND = (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL)


def _fail(what: str, e: Exception) -> KernelError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = f"{what}: {os.strerror(code) if isinstance(code, int) and code > 0 else e}"
    if code == errno.EEXIST:
        return AlreadyExists(msg)
    if code in _NOT_FOUND:
        return NotFound(msg)
    return KernelError(msg)


# --------------------------------------------------------------------------- namespaces
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
    try:
        _netns.create(name)
    except Exception as e:  # noqa: BLE001 - pyroute2 raises OSError or its own errors
        raise _fail(f"create network namespace {name}", e) from None
    return True


def netns_attach(name: str, pid: int) -> None:
    """Pin the network namespace of `pid` as /run/netns/<name> (what `ip netns attach` does)."""
    try:
        _netns.attach(name, pid)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"pin network namespace of pid {pid} as {name}", e) from None


def netns_delete(name: str) -> bool:
    p = netns_path(name)
    if not p.exists():
        return False
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


def ns_exec_prefix(netns: str | None) -> list[str]:
    return [] if netns is None else ["nsenter", f"--net={netns_path(netns)}", "--"]


# --------------------------------------------------------------------------- netlink
class Netlink:
    """One rtnetlink socket in one namespace (None = the caller's own), idempotent helpers."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        where = f"namespace {netns}" if netns else "this namespace"
        try:
            self.ipr = IPRoute(netns=netns) if netns else IPRoute()
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
        created = self._add(f"bridge {ifname}", ifname=ifname, kind="bridge")
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

    def ensure_addr(self, ifname: str, address: str, prefixlen: int) -> bool:
        try:
            self.ipr.addr("add", index=self.must_index(ifname), address=address, prefixlen=prefixlen)
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

    def fdb_replace(self, ifname: str, mac: str, dst: str) -> None:
        try:
            self.ipr.fdb("replace", ifindex=self.must_index(ifname), lladdr=mac, dst=dst,
                         state=0x80)
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


def iptables_restore(netns: str | None, text: str, *, noflush: bool = True) -> None:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-restore", "-w", "5"]
    if noflush:
        cmd.append("--noflush")
    run(cmd, input=text, what=f"iptables-legacy-restore{' in ' + netns if netns else ''}")


def iptables(netns: str | None, *args: str) -> subprocess.CompletedProcess:
    """One iptables-legacy call; returns the result (exit 1 is an answer for -C)."""
    cmd = [*ns_exec_prefix(netns), "iptables-legacy", "-w", "5", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def iptables_save(netns: str | None, table: str | None = None) -> str:
    cmd = [*ns_exec_prefix(netns), "iptables-legacy-save"]
    if table:
        cmd += ["-t", table]
    return run(cmd, what="iptables-legacy-save")


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
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=full_env, start_new_session=True, close_fds=True)
    except FileNotFoundError:
        raise KernelError(f"start {argv[0]}: command not found (try `netlab doctor`)") from None
    finally:
        if log:
            out.close()
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


def kill_pids(pids: Iterable[int], timeout: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive after `timeout`. Only pids the caller found."""
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
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
