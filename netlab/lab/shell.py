"""`netlab exec`: the argv that runs a command inside a node, a pod or the outside host.

Nodes are entered through their init (nsenter: net, UTS, mount and PID namespaces), whose
mount namespace has the node's own /proc, /sys and /run/flannel, so that `hostname`,
`ps -ef`, `cat /run/flannel/subnet.env` and `brctl show` answer for that node as they would
on the seed's machines. Without a running init (a lab being repaired), `ip netns exec` plus
a bind of the node's /run/flannel.
"""

from __future__ import annotations

import os

from netlab import names
from netlab.errors import NotFound, UsageError
from netlab.kernel import iptables, netns
from netlab.lab import pods, running


def node_argv(lab: str, node: str, cmd: list[str]) -> list[str]:
    ns = names.node_ns(lab, node)
    if not netns.netns_exists(ns):
        raise NotFound(f"node '{node}' of lab '{lab}' has no namespace {ns} (is the lab up?)")
    init = running.init_pid(lab, node)
    if running.pid_in_ns(init, ns) and running.our_pid(lab, init):
        # The node as its init holds it: its network, host name, mount namespace (its own
        # /proc, /sys and /run/flannel) and PID namespace, so hostname and ps -ef answer
        # for this node only.
        return ["nsenter", f"--target={init}", "--net", "--uts", "--mount", "--pid", "--", *cmd]
    fl = names.node_flannel_dir(lab, node)
    return ["ip", "netns", "exec", ns, "sh", "-c",
            f'mount --bind "{fl}" "{names.FLANNEL_RUN}" 2>/dev/null; exec "$@"', "sh", *cmd]


def exec_argv(lab: str, target: str, cmd: list[str], container: str | None = None) -> list[str]:
    if not cmd:
        raise UsageError("exec: give the command after --, e.g. netlab exec kub-node-1 -- ip addr")
    kind, _, name = target.partition("/")
    if not name:
        kind, name = ("external", "") if target == "external" else ("node", target)
    if kind in ("node", "nodes", "no"):
        return node_argv(lab, name, cmd)
    if kind == "external":
        ns = names.underlay_ns(lab)
        if not netns.netns_exists(ns):
            raise NotFound(f"lab '{lab}' has no underlay namespace {ns} (is the lab up?)")
        return ["ip", "netns", "exec", ns, *cmd]
    if kind in ("pod", "pods", "po"):
        return pods.exec_argv(lab, name, cmd, container=container)
    raise UsageError(f"exec: target '{target}' is not NODE, node/NAME, pod/NAME or external")


def exec_env(lab: str) -> dict[str, str]:
    """PATH with iptables -> iptables-legacy first, so the seed's commands work verbatim."""
    return {**os.environ, "PATH": f"{names.bin_dir(lab)}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            # the lock the lab's agents write the node's tables under (iptables.xtables_lock)
            "XTABLES_LOCKFILE": str(iptables.xtables_lock(lab))}
