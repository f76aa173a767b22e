"""Processes: spawn (two ways, for two costs), find the lab's, read /proc, signal, watch exits.

`spawn` starts a long-lived daemon (etcd, an agent) through `ip netns exec`/`nsenter` with
its own mount namespace when it needs binds; `spawn_fast` posix_spawns a pod's processes
on the kubelet's hot path (vfork: no copy of a large Python process). Both mark the process
with NETLAB_LAB=<lab> (`lab_mark`), which is how `down` finds everything. `PidWatcher`
notices exits through pidfds instead of polling /proc. `start_node_init` starts a node's
init (netlab/native/nodeinit.c), which supervises the node's daemons in the node's own PID
namespace; `host_pid` maps a pid seen inside such a namespace to the host's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from netlab import names
from netlab.errors import KernelError
from netlab.kernel.common import fail
from netlab.kernel.netns import HOST_MNTNS_ENV, netns_inode, netns_list, ns_exec_prefix, pid_netns_inode


def all_pids() -> Iterable[int]:
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


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot: with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:  # noqa: PTH123
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def proc_alive(p: dict | None) -> bool:
    """A recorded process ({pid, starttime}) is still that same process (not a reused pid)."""
    return bool(p and p.get("pid") and proc_starttime(p["pid"]) == p.get("starttime"))


def is_lab_process(pid: int | None, lab: str) -> bool:
    """`pid` is alive and carries the lab's mark: a pid file never makes us signal a
    stranger that reused the pid. (The one test of "is this pid our agent / etcd".)"""
    return bool(pid) and pid_alive(pid) and pid_environ(pid).get(names.ENV_MARK) == lab


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
    for pid in all_pids():
        if pid in me or pid == 1:
            continue
        if pid_environ(pid).get(names.ENV_MARK) == lab or pid_netns_inode(pid) in inodes:
            if pid_alive(pid):
                found.append(pid)
    return found


def pids_in_netns(name: str) -> list[int]:
    """`ip netns pids NAME`: every process whose network namespace is that pin's."""
    ino = netns_inode(name)
    if ino is None:
        return []
    return [pid for pid in all_pids() if pid_netns_inode(pid) == ino]


def spawn(argv: Sequence[str], *, lab: str, netns: str | None = None, log: Path | None = None,
          cwd: Path | None = None, env: dict | None = None,
          bind: dict[Path, Path] | None = None, pass_fds: Sequence[int] = ()) -> int:
    """Start a detached process (own session), inside `netns`, marked as the lab's.

    `pass_fds` are inherited by the process (the API server's listening socket).

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
    own_fds: tuple = ()
    if bind:
        # It will live in a mount namespace of its own; hand it ours (see HOST_MNTNS_ENV).
        mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        own_fds = (mnt,)
        full_env[HOST_MNTNS_ENV] = str(mnt)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             cwd=cwd, env=full_env, start_new_session=True, close_fds=True,
                             pass_fds=(*own_fds, *pass_fds))
    except FileNotFoundError:
        raise KernelError(f"start {argv[0]}: command not found (try `netlab doctor`)") from None
    finally:
        if log:
            out.close()
        for fd in own_fds:
            os.close(fd)
    return p.pid


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
        raise fail(f"start {argv[0]}", e) from None


def start_node_init(argv: Sequence[str], *, lab: str, pidfile: Path, log: Path,
                    env: dict | None = None, pass_fds: Sequence[int] = (),
                    timeout: float = 20.0) -> int:
    """Run netlab-nodeinit (argv) marked as the lab's; it returns once the node's PID 1 has
    started the daemons. Returns PID 1's host pid (from `pidfile`, which the init writes)."""
    pidfile.unlink(missing_ok=True)
    with open(log, "ab") as out:  # noqa: PTH123
        try:
            p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, **(env or {}), **lab_mark(lab)},
                                 start_new_session=True, close_fds=True, pass_fds=tuple(pass_fds))
        except FileNotFoundError:
            raise KernelError(f"start {argv[0]}: not found (run scripts/setup.sh)") from None
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise KernelError(f"{argv[0]} did not start the node within {timeout:.0f}s; see {log}") from None
    pid = read_pid(pidfile)
    if rc != 0 or pid is None:
        raise KernelError(f"{argv[0]} failed (exit {rc}); see {log}")
    return pid


HOST_PROC_ENV = "NETLAB_HOST_PROC_FD"  # the host's /proc, handed down by the node init
_host_proc: list = []


def keep_host_proc() -> None:
    """Take over the host /proc descriptor the node init handed down (and keep it from our
    children); call early, before any process is spawned."""
    if not _host_proc:
        try:
            fd = int(os.environ.get(HOST_PROC_ENV, ""))
            os.set_inheritable(fd, False)
        except (ValueError, OSError):
            fd = None
        _host_proc.append(fd)


def host_pid_of_child(pid: int) -> int:
    """The host's pid of our process `pid` (seen in our PID namespace): a pidfd's fdinfo,
    read through the host's /proc, names it in the host's numbering. Outside a node: pid."""
    keep_host_proc()
    hp = _host_proc[0]
    if hp is None:
        return pid
    try:
        pfd = os.pidfd_open(pid)
    except OSError:
        return pid
    try:
        f = os.open(f"self/fdinfo/{pfd}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=hp)
        try:
            text = os.read(f, 4096).decode()
        finally:
            os.close(f)
    except OSError:
        return pid
    finally:
        os.close(pfd)
    for line in text.splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    return pid


def pidns_inode(pid: int | None) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino if pid else None
    except OSError:
        return None


def host_pid(ns_pid: int | None, in_pidns_of: int | None) -> int | None:
    """The host's pid of the process that is `ns_pid` in the PID namespace of process
    `in_pidns_of` (a node's init: the kubelet records its pods' pids as the node sees them),
    from the NSpid lines of /proc/*/status."""
    ino = pidns_inode(in_pidns_of)
    if not ns_pid or ino is None:
        return None
    want = str(ns_pid)
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/status") as f:  # noqa: PTH123
                nspid = next((l.split()[1:] for l in f if l.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspid) == 2 and nspid[1] == want and pidns_inode(pid) == ino:
            return pid
    return None


def set_process_title(title: str) -> None:
    """What `ps -ef` shows for this process (argv rewritten, as systemd's daemons appear)
    and its name (comm, for `ps -e`, pgrep, top)."""
    # SPT_NOENV: the title stays within the original argv area. Otherwise setproctitle moves
    # environ to make room, and /proc/PID/environ (the lab's mark: how `down` and
    # is_lab_process() recognise our processes) would be overwritten.
    os.environ["SPT_NOENV"] = "1"
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - installed by setup.sh
        return
    setproctitle.setproctitle(title)
    set_thread_name(title.split()[0])


def set_thread_name(name: str) -> None:
    """The calling thread's name (prctl PR_SET_NAME, 15 bytes): `ps -T`, `top -H` show it."""
    from netlab.kernel.common import libc

    libc.prctl(15, name.encode()[:15], 0, 0, 0)


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


def run_attached(argv: Sequence[str], env: dict[str, str], grace: float = 10.0) -> int:
    """Run a command in the foreground (our stdio, our process group) and return its exit
    status as a shell reports it: 128+N when signal N ended it.

    SIGINT, SIGTERM and SIGHUP that reach us meanwhile are passed on to it and we keep
    waiting, so the command decides (an interactive shell ignores Ctrl-C); after SIGTERM or
    SIGHUP it has `grace` seconds, then SIGKILL. Must be called from the main thread.
    """
    try:
        p = subprocess.Popen(list(argv), env=env)
    except FileNotFoundError:
        raise KernelError(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise KernelError(f"{argv[0]}: permission denied") from None
    got: list[int] = []

    def forward(sig: int, _frame) -> None:
        got.append(sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, forward) for s in forwarded}
    try:
        deadline = None
        while True:
            try:
                rc = p.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if deadline is None and any(s != signal.SIGINT for s in got):
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                p.kill()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc


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


# --------------------------------------------------------------------------- terminals
def open_pty() -> tuple[int, int]:
    """A pseudo-terminal (master, slave) for `kubectl exec -it`; the master is non-blocking."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    return master, slave


def set_pty_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
