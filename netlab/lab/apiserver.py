"""The host side of the lab's API server: credentials, the loopback socket, the process,
and the user's kubeconfig.

`up` makes the lab's CA, serving certificate and tokens (netlab.api.http.pki) once, opens a
listening socket on 127.0.0.1:<port> in the root namespace (6443 for the default lab when
free, else a free port; recorded in the lab's state directory so a kubeconfig stays valid)
and hands it to `python -m netlab.api.http`, started in the master node's namespace and
marked as the lab's like the agents (so `down` finds it by name, even after a crash). It
then merges the lab's context into the invoking user's kubeconfig and makes it current, as
kind does; `down --purge` takes it out again. Nothing else of the root namespace changes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

from netlab import names
from netlab.kernel import proc as kernel
from netlab.api.http import kubeconfig, pki
from netlab.errors import NetlabError
from netlab.labfile import Lab

Report = Callable[[str, str], None]
DEFAULT_PORT = 6443
PID = "apiserver"


def pki_dir(lab: str) -> Path:
    return names.state_dir(lab) / "pki"


def port_file(lab: str) -> Path:
    return names.state_dir(lab) / "apiserver.port"


def recorded_port(lab: str) -> int | None:
    try:
        return int(port_file(lab).read_text().strip())
    except (OSError, ValueError):
        return None


def server_url(lab: str) -> str:
    port = recorded_port(lab)
    if port is None:
        raise NetlabError(f"lab '{lab}' has no API server port recorded ({port_file(lab)}); is it up?")
    return f"https://127.0.0.1:{port}"


def reserved_ip(lab: Lab) -> str:
    import ipaddress

    return str(ipaddress.IPv4Network(lab.services.cluster_ip_range).network_address + 1)


def pid(lab: str) -> int | None:
    return kernel.read_pid(names.pid_file(lab, PID))


def _listen(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen(512)
    return s


def open_socket(lab: str) -> socket.socket:
    """The loopback listening socket: the recorded port, else 6443 (default lab), else any."""
    wanted = [p for p in (recorded_port(lab), DEFAULT_PORT if lab == names.DEFAULT_LAB else None) if p]
    for port in (*wanted, 0):
        s = _listen(port)
        if s is not None:
            break
    else:  # pragma: no cover - port 0 always binds
        raise NetlabError("no free loopback port for the API server")
    port_file(lab).parent.mkdir(parents=True, exist_ok=True)
    port_file(lab).write_text(f"{s.getsockname()[1]}\n")
    return s


def ssl_context(lab: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.Pki(pki_dir(lab)).ca_crt))
    return ctx


def ready(lab: str, timeout: float = 2.0) -> bool:
    """The API server answers /readyz on its loopback port."""
    try:
        with urllib.request.urlopen(f"{server_url(lab)}/readyz", timeout=timeout,  # noqa: S310
                                    context=ssl_context(lab)) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, NetlabError, ssl.SSLError):
        return False


def prepare(lab: Lab, did: Callable[[str, str], None]) -> tuple[list[str], socket.socket]:
    """Credentials, the loopback listening socket and the argv of the API server process,
    which the node init of the etcd node starts (and restarts) with that socket inherited.
    The caller closes the socket once the init holds it."""
    master = lab.etcd_node.ip
    keys, made = pki.ensure(pki_dir(lab.name), lab.name, ["127.0.0.1", master, reserved_ip(lab)])
    if made:
        did("apiserver", f"made {', '.join(made)} in {keys.dir}")
    sock = open_socket(lab.name)
    argv = [sys.executable, "-m", "netlab.api.http", "--lab", lab.name, "--listen-fd", str(sock.fileno())]
    return argv, sock


def ensure(lab: Lab, master_ns: str, report: Report, did: Callable[[str, str], None],
           running_in_ns: Callable[[int | None, str], bool], started: bool) -> None:
    """`up`'s step: wait until the API server (started by the node init) answers, then the
    user's kubeconfig. `started`: its init was started by this `up`."""
    p = pid(lab.name)
    deadline = time.monotonic() + 30
    while not ready(lab.name):
        if time.monotonic() > deadline:
            raise NetlabError(f"the API server did not become ready; see {names.log_file(lab.name, PID)}")
        time.sleep(0.1)
        p = pid(lab.name)
    if started:
        did("apiserver", f"started in {master_ns} at https://{lab.etcd_node.ip}:6443 and "
                         f"{server_url(lab.name)} (pid {p})")
    else:
        report("apiserver", f"running (pid {p}) at {server_url(lab.name)}")
    path = merge_user_kubeconfig(lab.name)
    if path is not None:
        report("kubeconfig", f"context {kubeconfig.context_name(lab.name)} in {path} (current)")


# --------------------------------------------------------------------------- kubeconfig
def lab_kubeconfig(lab: str) -> dict:
    keys = pki.Pki(pki_dir(lab))
    try:
        return kubeconfig.build(lab, server_url(lab), keys.ca_crt.read_bytes(), keys.read_admin_token())
    except OSError as e:
        raise NetlabError(f"lab '{lab}' has no API server credentials ({e.filename}); run `netlab up`") from None


def user_kubeconfig_path() -> tuple[Path, tuple[int, int] | None]:
    """Where `up` writes: $KUBECONFIG's first file, else ~/.kube/config of the invoking user
    (SUDO_USER's under sudo, then owned by them)."""
    env = os.environ.get("KUBECONFIG")
    owner = None
    sudo_user = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo_user and sudo_user != "root":
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(sudo_user)
            owner = (pw.pw_uid, pw.pw_gid)
    if env:
        return Path(env.split(os.pathsep)[0]), owner
    home = Path(pwd.getpwuid(owner[0]).pw_dir) if owner else Path.home()
    return home / ".kube" / "config", owner


def _read(path: Path) -> dict | None:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as e:
        raise NetlabError(f"{path}: cannot read this kubeconfig ({e}); fix or move it") from None
    return doc if isinstance(doc, dict) else None


def _write(path: Path, doc: dict, owner: tuple[int, int] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".netlab.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(doc, sort_keys=False))
    if owner:
        os.chown(tmp, *owner)
        with contextlib.suppress(OSError):
            if path.parent.stat().st_uid == 0 and path.parent.name == ".kube":
                os.chown(path.parent, *owner)
    tmp.replace(path)


def merge_user_kubeconfig(lab: str) -> Path | None:
    if os.environ.get("NETLAB_KUBECONFIG") == "off":
        return None
    path, owner = user_kubeconfig_path()
    _write(path, kubeconfig.merge(_read(path), lab_kubeconfig(lab)), owner)
    return path


def remove_user_kubeconfig(lab: str) -> Path | None:
    if os.environ.get("NETLAB_KUBECONFIG") == "off":
        return None
    path, owner = user_kubeconfig_path()
    doc = kubeconfig.remove(_read(path), lab)
    if doc is None:
        return None
    _write(path, doc, owner)
    return path


def kubeconfig_text(lab: str) -> str:
    return yaml.safe_dump(lab_kubeconfig(lab), sort_keys=False)

