"""The agent process of one node: registers the node, heartbeats, and runs its roles.

Roles by node: flannel on the lab's flannel nodes; kubelet, proxy and the LoadBalancer
speaker on workers;
controllers on the master. The node's Lease object (renewed every HEARTBEAT seconds) is
what `netlab get nodes` reads as Ready/NotReady.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from netlab import labfile, store
from netlab.agent.controllers import ControllersRole
from netlab.agent.flannel import FlannelRole
from netlab.agent.kubelet import KubeletRole
from netlab.agent.lb import LoadBalancerRole
from netlab.agent.nft_proxy import NftProxyRole
from netlab.agent.proxy import ProxyRole
from netlab.kernel import proc
from netlab.labfile import Lab
from netlab.store import Store

HEARTBEAT = 2.0


def host_pid() -> int:
    """Our pid as the host sees it (its pid files name it): the node init tells us, since in
    the node's PID namespace getpid() is the node's own numbering."""
    try:
        return int(os.environ["NETLAB_HOST_PID"])
    except (KeyError, ValueError):
        return os.getpid()


def process_title(node: str, role: str, roles: list[str]) -> str:
    """`ps -ef` inside a node: the daemon a learner looks for, and what else runs in it."""
    # (Short: the title must fit where `python -m netlab.agent --lab L --node N` was.)
    main = "kubelet" if role == "worker" else "kube-controller-manager"
    names_ = {"flannel": "flanneld", "proxy": "kube-proxy", "controllers": "kube-scheduler"}
    rest = [names_.get(r, r) for r in roles if r not in ("kubelet",)]
    extra = f" +{' +'.join(rest)}" if rest else ""
    return f"{main} {node}{extra}"
log = logging.getLogger("netlab.agent")


class Agent:
    def __init__(self, lab: Lab, node_name: str):
        self.lab = lab
        self.node = lab.node(node_name)
        self.stopping = threading.Event()
        self.store = Store(lab.etcd_endpoint, timeout=5.0)
        self.roles = []

    # registration --------------------------------------------------------
    def node_object(self) -> dict:
        n = self.node
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n.name,
                "labels": {
                    "kubernetes.io/hostname": n.name,
                    "node-role.kubernetes.io/" + ("master" if n.role == "master" else "worker"): "",
                },
                "creationTimestamp": store.now_rfc3339(),
            },
            "spec": {},
            "status": {
                "addresses": [{"type": "InternalIP", "address": n.ip},
                              {"type": "Hostname", "address": n.name}],
                "nodeInfo": {"kubeletVersion": "netlab", "operatingSystem": "linux"},
                # What the scheduler may bind here (maxPods, bounded by the IPAM range).
                "capacity": {"pods": str(self.lab.pod_capacity(n.name))},
                "allocatable": {"pods": str(self.lab.pod_capacity(n.name))},
            },
        }

    def register(self) -> None:
        key = store.NODES + self.node.name
        item = self.store.get(key)
        if item is None:
            self.store.create(key, self.node_object())

    def heartbeat(self) -> None:
        self.store.put(store.NODE_LEASES + self.node.name, {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node.name, "leaseDurationSeconds": 40,
                     "renewTime": time.time(), "agentPid": host_pid()},
        })

    # roles -----------------------------------------------------------------
    def build_roles(self) -> list:
        roles: list = []
        if self.node.name in [n.name for n in self.lab.flannel_nodes()]:
            roles.append(FlannelRole(self))
        if self.node.role == "worker":
            proxy = NftProxyRole if self.lab.kube_proxy.mode == "nftables" else ProxyRole
            roles += [KubeletRole(self), proxy(self), LoadBalancerRole(self)]
        else:
            roles.append(ControllersRole(self))
        return roles

    def _heartbeats(self) -> None:
        # At least 4 renewals per grace period, so one slow etcd write is never a missed node.
        interval = min(HEARTBEAT, self.lab.node_monitor_grace_period / 4)
        while not self.stopping.wait(interval):
            try:
                self.heartbeat()
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat failed: %s", e)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        # etcd may still be starting (or restarting): keep trying until it answers.
        while not self.stopping.is_set():
            try:
                self.register()
                self.heartbeat()
                break
            except Exception as e:  # noqa: BLE001
                log.warning("waiting for etcd at %s: %s", self.lab.etcd_endpoint, e)
                self.stopping.wait(0.5)
        log.info("agent for %s (%s) up, pid %d", self.node.name, self.node.role, os.getpid())
        # Heartbeats from their own thread: building and running the roles (imports, waiting
        # for flannel) must never make a live node look dead to the node lifecycle controller.
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        self.roles = self.build_roles()
        proc.set_process_title(process_title(self.node.name, self.node.role, [r.name for r in self.roles]))
        for r in self.roles:
            r.start()
        while beat.is_alive():  # (a timed join keeps SIGTERM's handler running promptly)
            beat.join(0.5)
        # Wake every reconciler waiting for its resync so that it sees `stopping` now.
        for r in self.roles:
            for c in getattr(r, "controllers", [r]):
                getattr(c, "kick", lambda: None)()
        for r in self.roles:
            r.thread.join(timeout=5)
        log.info("agent for %s stopped", self.node.name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="netlab-agent")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--node", required=True)
    args = ap.parse_args(argv)
    proc.keep_host_proc()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    lab = labfile.load_running(args.lab)
    Agent(lab, args.node).run()
