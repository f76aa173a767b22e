"""The `netlab` Typer app: the lab verbs (up, down, status, exec, etcdctl, doctor,
default-lab), the `get` and `delete` dispatchers the verb modules register kinds with, and
what they share (--lab, -o, root check, progress lines, opening the running lab + store).

No logic lives here. Domain errors become one line on stderr and their exit code (2 for
usage and validation errors); everything a command shows goes through netlab.cli.output.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
from typing import List, Optional

import typer

from netlab import labfile, names
from netlab.cli import output
from netlab.errors import NetlabError, NotRoot, UsageError
from netlab.lab import doctor as doc
from netlab.lab import ci, lifecycle, lock, running, shell
from netlab.labfile import Lab
from netlab.store import Store

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A Kubernetes-style cluster network (flannel VXLAN + kube-proxy) built "
                       "from real Linux namespaces, links, iptables and etcd.")

LabOpt = typer.Option(None, "--lab", envvar="NETLAB_LAB",
                      help="Lab name (default: the only running lab, else 'seed').")
OutOpt = typer.Option("table", "-o", "--output", help="table, wide, json or yaml.")


# Shell completion (`netlab --install-completion`): names from the running lab.
def complete_target(ctx: typer.Context, incomplete: str) -> list[str]:
    from netlab.lab import completion

    return completion.exec_targets(ctx.params.get("lab"), incomplete)


def complete_name(ctx: typer.Context, incomplete: str) -> list[str]:
    from netlab.lab import completion

    return completion.kind_names(ctx.params.get("lab"), ctx.params.get("kind"), incomplete,
                                 ctx.params.get("namespace") or "default")


def complete_kind(kind: str):
    def fn(ctx: typer.Context, incomplete: str) -> list[str]:
        from netlab.lab import completion

        return completion.kind_names(ctx.params.get("lab"), kind, incomplete, ctx.params.get("namespace") or "default")
    return fn


def need_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("must run as root (it creates namespaces, links, iptables rules and etcd)")


def lab_name(lab: Optional[str]) -> str:
    if lab:
        if not names.LAB_NAME_RE.match(lab):
            raise UsageError(f"--lab: '{lab}' is not a valid lab name")
        return lab
    need_root()  # the run directory is root's: say so before looking into it
    up_ = running.running_labs()
    return up_[0] if len(up_) == 1 else names.DEFAULT_LAB


def open_lab(lab: str) -> tuple[Lab, Store]:
    """The running lab and its store, for a command (the caller closes the store)."""
    return running.open_lab(lab)


def open_lab_writing(lab: str, stack: contextlib.ExitStack) -> tuple[Lab, Store]:
    """Like open_lab, for a command that writes objects: holds the lab lock shared until
    `stack` closes, so a concurrent `down` either waits for the writes or refuses them."""
    lab_obj = stack.enter_context(lock.writing(lab))
    return lab_obj, running.open_lab(lab)[1]


@contextlib.contextmanager
def writing_lab(lab: str):
    """(lab, store) for the writes of one command, under the shared lab lock; the store is
    closed and the lock released when the block ends (waits belong after it)."""
    with contextlib.ExitStack() as stack:
        lab_obj, st = open_lab_writing(lab, stack)
        stack.callback(st.close)
        yield lab_obj, st


def _fmt(fmt: str) -> str:
    if fmt not in output.FORMATS:
        raise UsageError(f"-o: '{fmt}' is not one of {', '.join(output.FORMATS)}")
    return fmt


def progress(step: str, outcome: str) -> None:
    output.err.print(f"  [green]✓[/green] {step:<12} {outcome}")


# --------------------------------------------------------------------------- lifecycle
@app.command()
def up(lab_file: Optional[str] = typer.Option(None, "-f", "--file", help="Lab file (YAML); default: the seed's lab."),
       cmd: Optional[List[str]] = typer.Argument(
           None, metavar="CMD",
           help="After --: run CMD on the host once the lab is up (NETLAB_LAB and, with an API server, "
                "KUBECONFIG set), then remove the lab (down --purge); exit with CMD's code.")):
    """Create the lab, or repair a running one (idempotent); with `-- CMD`, a lab around CMD."""
    lab = labfile.load_lab(lab_file)  # validated before anything is touched
    if cmd and "--" not in sys.argv[1:]:
        raise UsageError(f"up: '{cmd[0]}': a command to run goes after `--` (netlab up [-f FILE] -- CMD...)")
    need_root()
    output.err.print(f"Bringing up lab [bold]{lab.name}[/bold]")
    if not cmd:
        _up_summary(lifecycle.up(lab, report=progress))
        return

    def on_up(res) -> None:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the command's alone
            _up_summary(res)
        output.err.print(f"Running {shlex.join(cmd)} (NETLAB_LAB={lab.name})", markup=False)

    res = ci.run(lab, cmd, report=progress, on_up=on_up)
    if res.error:
        output.err.print(f"netlab: {res.error}", markup=False)
    if res.signal is not None:
        output.err.print(f"netlab: stopped by {signal.Signals(res.signal).name} before the command ran")
    if res.was_up:
        output.err.print(f"lab {lab.name} was up before; left up")
    elif res.down is not None:
        output.err.print(f"lab {lab.name} removed (etcd data purged); exit {res.exit_code}")
    raise typer.Exit(res.exit_code)


def _up_summary(res) -> None:
    lab = res.lab
    if res.was_up:
        if res.repaired:
            output.err.print(f"Lab {lab.name} was up; repaired {len(res.repaired)}: "
                             + "; ".join(res.repaired))
        else:
            output.err.print(f"Lab {lab.name} was up; nothing to repair.")
    output.table(["NODE", "ROLE", "IP", "NAMESPACE"],
                 [(n.name, n.role, n.ip, names.node_ns(lab.name, n.name)) for n in lab.nodes])
    print(f"\netcd: {lab.etcd_endpoint} (from the CLI: {names.etcd_socket_url(lab.name)})")
    from netlab.lab import apiserver

    print(f"API server: https://{lab.etcd_node.ip}:6443, for kubectl on this host {apiserver.server_url(lab.name)} "
          f"(context netlab-{lab.name}; `netlab kubeconfig`)")
    print(f"router / outside host: {lab.node_network.gateway} (`netlab exec external -- ...`)")
    w = lab.workers[0].name if lab.workers else lab.master.name
    print("Try: netlab status   |   netlab exec " + w + " -- route -n   |   netlab etcdctl get --prefix /coreos.com")


@app.command()
def down(lab: Optional[str] = LabOpt,
         lab_file: Optional[str] = typer.Option(None, "-f", "--file", help="Take the lab name from this lab file."),
         purge: bool = typer.Option(False, "--purge", help="Also delete the lab's etcd data.")):
    """Remove every namespace, link, process and run file of the lab."""
    name = labfile.load_lab(lab_file).name if lab_file else lab_name(lab)
    need_root()
    res = lifecycle.down(name, purge=purge, report=progress)
    if not res.was_up:
        print(f"lab {name} is not up; nothing to remove" + (" (etcd data purged)" if res.purged else ""))
    else:
        print(f"lab {name} removed: {len(set(res.processes))} processes, {len(res.namespaces)} namespaces"
              + (", etcd data purged" if res.purged else ""))


@app.command()
def status(lab: Optional[str] = LabOpt, fmt: str = OutOpt):
    """Show the lab's underlay, etcd and nodes (agents, heartbeats)."""
    _fmt(fmt)
    need_root()
    st = lifecycle.status(lab_name(lab))
    if fmt in ("json", "yaml"):
        output.dump(st, fmt)
        return
    s = st["status"]
    print(f"lab {st['metadata']['name']}: underlay {s['underlay']['namespace']} "
          f"({'ok' if s['underlay']['exists'] else 'MISSING'}), etcd {s['etcd']['endpoint']} "
          f"({'healthy' if s['etcd']['healthy'] else 'NOT ANSWERING'}, pid {s['etcd']['pid']})")
    a = s["apiserver"]
    print(f"API server {a['url'] or '-'} ({'ready' if a['ready'] else 'NOT ANSWERING'}, "
          f"pid {a['pid'] if a['running'] else 'NOT RUNNING'})")
    output.table(["NODE", "ROLE", "IP", "NAMESPACE", "AGENT", "HEARTBEAT", "READY"],
                 [(n["name"], n["role"], n["ip"], n["namespace"] if n["namespaceExists"] else "MISSING",
                   f"pid {n['agentPid']}" if n["agentRunning"] else "NOT RUNNING",
                   "-" if n["heartbeatAgeSeconds"] is None else f"{n['heartbeatAgeSeconds']}s ago",
                   "Ready" if n["ready"] else "NotReady") for n in s["nodes"]])


@app.command("exec", context_settings={"ignore_unknown_options": True})
def exec_(target: str = typer.Argument(..., help="NODE, node/NAME, pod/NAME or external.",
                                       autocompletion=complete_target),
          cmd: List[str] = typer.Argument(..., help="The command, after --."),
          container: Optional[str] = typer.Option(None, "-c", "--container", help="Container of a pod."),
          lab: Optional[str] = LabOpt):
    """Run a command inside a node, a pod or the outside host; its exit code is passed through."""
    need_root()
    argv = shell.exec_argv(lab_name(lab), target, list(cmd), container=container)
    os.execvpe(argv[0], argv, shell.exec_env(lab_name(lab)))


@app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def etcdctl(ctx: typer.Context, lab: Optional[str] = LabOpt):
    """Run the real etcdctl (API v3) against the lab's etcd."""
    need_root()
    name = lab_name(lab)
    exe = shutil.which("etcdctl")
    if not exe:
        raise NetlabError("etcdctl not found: apt-get install -y etcd-client")
    env = {**os.environ, "ETCDCTL_API": "3"}
    os.execvpe(exe, [exe, "--endpoints", names.etcd_socket_url(name), *ctx.args], env)


@app.command()
def doctor():
    """Check root, binaries and kernel features; say how to fix what is missing."""
    checks = doc.run_checks()
    for c in checks:
        mark = "[green]ok[/green]  " if c.ok else "[red]FAIL[/red]"
        line = f"{mark} {c.name}" + (f"  ({c.detail})" if c.detail and c.ok else "")
        if not c.ok:
            line += f": {c.detail}\n       fix: {c.fix}"
        output.out.print(line)
    bad = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(bad)} of {len(checks)} checks passed")
    if bad:
        raise typer.Exit(1)


@app.command()
def kubeconfig(lab: Optional[str] = LabOpt):
    """Print a kubeconfig for the lab's API server (server, CA, admin token, context netlab-LAB)."""
    need_root()
    from netlab.lab import apiserver

    print(apiserver.kubeconfig_text(lab_name(lab)), end="")


@app.command("default-lab")
def default_lab():
    """Print the default lab file (the seed's cluster) to copy and edit."""
    print(labfile.default_lab_text(), end="")


# --------------------------------------------------------------------------- get
class GetArgs:
    """What every `netlab get KIND` handler receives."""

    def __init__(self, lab: str, name: Optional[str], namespace: str, all_namespaces: bool, fmt: str):
        self.lab, self.name, self.namespace = lab, name, namespace
        self.all_namespaces, self.fmt = all_namespaces, fmt


# kind alias -> handler(GetArgs); filled by the cli_* modules' register().
GET_KINDS: dict = {}


def register_get(*aliases: str):
    def deco(fn):
        for a in aliases:
            GET_KINDS[a] = fn
        return fn
    return deco


@app.command()
def get(kind: str = typer.Argument(..., help="nodes, pods, svc, endpoints, deploy"),
        name: Optional[str] = typer.Argument(None, autocompletion=complete_name),
        namespace: str = typer.Option("default", "-n", "--namespace"),
        all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces"),
        fmt: str = OutOpt, lab: Optional[str] = LabOpt):
    """List objects in kubectl's manner."""
    _fmt(fmt)
    handler = GET_KINDS.get(kind.lower())
    if handler is None:
        raise UsageError(f"get: unknown kind '{kind}' (known: {', '.join(sorted(GET_KINDS))})")
    need_root()
    handler(GetArgs(lab_name(lab), name, namespace, all_namespaces, fmt))


class DeleteArgs:
    """What every `netlab delete KIND NAME` handler receives (`-f` handlers get files too)."""

    def __init__(self, lab: str, name: Optional[str], namespace: str, files: list[str],
                 ignore_not_found: bool):
        self.lab, self.name, self.namespace = lab, name, namespace
        self.files, self.ignore_not_found = files, ignore_not_found


# kind alias -> handler(DeleteArgs); "-f" is the manifest handler. Filled like GET_KINDS.
DELETE_KINDS: dict = {}


def register_delete(*aliases: str):
    def deco(fn):
        for a in aliases:
            DELETE_KINDS[a] = fn
        return fn
    return deco


@app.command()
def delete(kind: Optional[str] = typer.Argument(None, help="pod, svc, deployment (or use -f)"),
           name: Optional[str] = typer.Argument(None, autocompletion=complete_name),
           files: Optional[List[str]] = typer.Option(None, "-f", "--filename",
                                                     help="Manifest file ('-' = stdin); repeatable."),
           namespace: str = typer.Option("default", "-n", "--namespace"),
           ignore_not_found: bool = typer.Option(False, "--ignore-not-found"),
           lab: Optional[str] = LabOpt):
    """Delete objects by KIND NAME, or everything a manifest names (-f)."""
    if files:
        if kind or name:
            raise UsageError("delete: give either KIND NAME or -f FILE, not both")
        kind = "-f"
    elif not kind or not name:
        raise UsageError("delete: KIND and NAME are required (or -f FILE)")
    handler = DELETE_KINDS.get(kind.lower())
    if handler is None:
        raise UsageError(f"delete: unknown kind '{kind}' "
                         f"(known: {', '.join(sorted(k for k in DELETE_KINDS if k != '-f'))})")
    need_root()
    handler(DeleteArgs(lab_name(lab), name, namespace, list(files or []), ignore_not_found))


def main() -> None:
    try:
        app()  # standalone: usage errors print and exit 2
    except NotRoot as e:
        output.err.print(f"netlab: {e}: sudo netlab {shlex.join(sys.argv[1:])}", markup=False)
        sys.exit(e.exit_code)
    except NetlabError as e:
        output.err.print(f"error: {e}", markup=False)
        sys.exit(e.exit_code)
