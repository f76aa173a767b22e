"""Network namespaces: create, pin, enter, list and delete them; their sysctls; mounts.

One way to create a namespace (`netns_create`: unshare this thread and pin it, never a fork
beside gRPC threads), one way to pin an existing process's (`pin_netns`, one mount(2)), one
`in_netns` (setns this thread and come back). Deleting tolerates ENOENT so that every step
stays idempotent.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from netlab import names
from netlab.errors import AlreadyExists, KernelError, NotFound
from netlab.kernel.common import CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, MS_SHARED, fail, libc, libc_ok, run

# The agent runs in a mount namespace of its own (its /run/flannel): pins made there would
# be invisible to `ip netns` and `netlab down`, so proc.spawn() hands it the starter's namespace.
HOST_MNTNS_ENV = "NETLAB_HOST_MNTNS_FD"


def _pyroute2_netns():
    # pyroute2 takes over half a second to import: loaded on first use, so that CLI commands
    # which never create or delete a namespace start quickly.
    from pyroute2 import netns

    return netns


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
    _netns = _pyroute2_netns()
    try:
        if threading.current_thread() is threading.main_thread():
            # pyroute2's create() forks (unsafe beside gRPC threads): unshare this thread
            # instead, pin /proc/self/ns/net (the main thread's), and come back.
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _netns._create(name)
            finally:
                libc_ok(libc.setns(home, CLONE_NEWNET), "return to our own network namespace")
                os.close(home)
        else:
            _netns.create(name)
    except KernelError:
        raise
    except Exception as e:  # noqa: BLE001 - pyroute2 raises OSError or its own errors
        raise fail(f"create network namespace {name}", e) from None
    return True


def share_netns_dir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does, so that pins made inside a
    node's mount namespace (its kubelet's pod pins) show on the host and vice versa."""
    d = str(names.NETNS_DIR)
    names.NETNS_DIR.mkdir(parents=True, exist_ok=True)
    with open("/proc/self/mountinfo") as f:  # noqa: PTH123
        rows = [line.split() for line in f]
    mine = [r for r in rows if r[4] == d]
    if mine and any(o.startswith("shared:") for o in mine[-1][6:mine[-1].index("-")]):
        return
    if not mine:
        libc_ok(libc.mount(d.encode(), d.encode(), None, MS_BIND | MS_REC, None), f"bind {d} on itself")
    libc_ok(libc.mount(b"none", d.encode(), None, MS_SHARED | MS_REC, None), f"make {d} a shared mount")


def netns_delete(name: str) -> bool:
    p = netns_path(name)
    if not p.exists():
        return False
    _netns = _pyroute2_netns()
    try:
        _netns.remove(name)
    except FileNotFoundError:
        return False
    except Exception as e:  # noqa: BLE001
        raise fail(f"delete network namespace {name}", e) from None
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
            libc_ok(libc.setns(fd, CLONE_NEWNET), f"enter network namespace {name}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            libc_ok(libc.setns(home, CLONE_NEWNET), "return to our own network namespace")
    finally:
        os.close(home)


def ns_exec_prefix(netns: str | None) -> list[str]:
    return [] if netns is None else ["nsenter", f"--net={netns_path(netns)}", "--"]


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
    libc_ok(libc.mount(f"/proc/{pid}/ns/net".encode(), str(path).encode(), None, MS_BIND, None),
             f"pin network namespace of pid {pid} as {name}")


def unpin_netns(name: str) -> bool:
    path = netns_path(name)
    libc.umount2(str(path).encode(), MNT_DETACH)  # EINVAL: not mounted (a half-made pin)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def is_mount_point(path: Path) -> bool:
    """True if `path` is a mount point in this process's mount namespace (bind mounts too,
    which os.path.ismount misses when source and target share a file system)."""
    target = str(path)
    with open("/proc/self/mountinfo") as f:  # noqa: PTH123
        return any(line.split()[4] == target for line in f)


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


def sysctl_set(netns: str | None, values: dict[str, str]) -> None:
    """Set sysctls inside a namespace (net.* sysctls are per namespace: /proc/sys/net shows
    the opener's, so this thread enters `netns` and writes them there; no process spawned)."""
    def write() -> None:
        for k, v in values.items():
            path = "/proc/sys/" + k.replace(".", "/")
            try:
                with open(path, "w") as f:  # noqa: PTH123
                    f.write(v)
            except OSError as e:
                raise fail(f"sysctl {k}={v} in {netns}", e) from None

    if netns is None:
        raise KernelError("sysctl_set: refusing to change the root namespace's sysctls")
    with in_netns(netns):
        write()


# IPv6 off before any link comes up in a new namespace, as docker has it in containers and
# the seed shows (no inet6 line): link-local addresses on many bridge ports flood router
# solicitations, MLD and DAD to every port (docs/performance.md). Links moved in later
# inherit `default`.
NO_IPV6 = {"net.ipv6.conf.default.disable_ipv6": "1", "net.ipv6.conf.all.disable_ipv6": "1"}


def sysctl_get(netns: str | None, key: str) -> str:
    return run([*ns_exec_prefix(netns), "sysctl", "-n", key], what=f"sysctl in {netns}").strip()
