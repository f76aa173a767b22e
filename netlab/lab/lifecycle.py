"""Lab lifecycle: `up` (create or repair), `down` (remove everything), `status`.

`up` is a pipeline of small idempotent steps (underlay, nodes, etcd, agents); each step
reports what it did, so a second `up` on a running lab reports the repairs it made. `down`
works from names alone (namespaces `<lab>-*`, processes marked NETLAB_LAB=<lab>, the run
and state directories), so it cleans up after a crash with etcd dead and no state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from netlab import names, store
from netlab.api import manifests
from netlab.api import nodes as api_nodes
from netlab.api.meta import node_ready
from netlab.errors import NetlabError, UsageError
from netlab.kernel import netlink, netns, proc
from netlab.lab import apiserver
from netlab.lab.lock import lab_lock
from netlab.lab.running import (
    agent_pid,
    etcd_pid,
    init_pid,
    native,
    lab_exists,
    load_running_lab,
    our_pid,
    pid_in_ns,
    running_labs,
    write_lab_copy,
)
from netlab.labfile import Lab, Node
from netlab.plan import flannel_leases
from netlab.store import Store

Report = Callable[[str, str], None]  # (step, outcome) for progress output

LEGACY_TOOLS = {
    "iptables": "iptables-legacy",
    "iptables-save": "iptables-legacy-save",
    "iptables-restore": "iptables-legacy-restore",
}


# Run as a script (-P: without its directory on sys.path), so that the netlab.cli package
# (Typer and every verb, ~1 s to import) is not loaded for each `docker ps`.
DOCKER_CLI = Path(__file__).resolve().parent.parent / "cli" / "docker.py"


def _noop(step: str, outcome: str) -> None:
    pass


# --------------------------------------------------------------------------- up
@dataclass
class UpResult:
    lab: Lab
    created: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    was_up: bool = False


class Up:
    """The steps of `netlab up`, in order; each one idempotent."""

    def __init__(self, lab: Lab, report: Report = _noop, agent_cmd: list[str] | None = None):
        self.lab = lab
        self.name = lab.name
        self.report = report
        self.result = UpResult(lab)
        self.agent_cmd = agent_cmd or [sys.executable, "-m", "netlab.agent"]
        self.inits_started: set[str] = set()

    def _did(self, step: str, what: str) -> None:
        (self.result.repaired if self.result.was_up else self.result.created).append(f"{step}: {what}")
        self.report(step, ("repaired: " if self.result.was_up else "") + what)

    def run(self) -> UpResult:
        # The lab file's Kubernetes manifests are checked before anything is touched.
        docs = manifests.workload_docs(self.lab)
        with lab_lock(self.name):
            self.result.was_up = names.lab_copy(self.name).exists()
            if self.result.was_up:
                old = load_running_lab(self.name)
                if old.kube_proxy.mode != self.lab.kube_proxy.mode:
                    # Each mode owns different kernel objects on every worker: a switch in
                    # place would leave the other mode's rules behind, so it is refused.
                    raise UsageError(
                        f"kubeProxy.mode: lab '{self.name}' runs kube-proxy in {old.kube_proxy.mode} mode, "
                        f"not {self.lab.kube_proxy.mode}; run `netlab down --lab {self.name}` first")
                merged = merge_running(old, self.lab)
                if merged is None:
                    raise UsageError(f"lab '{self.name}' is already up with a different lab file; "
                                     f"run `netlab down --lab {self.name}` first")
                if merged.model_dump() != old.model_dump():
                    write_lab_copy(merged)  # nodes deleted at runtime come back: the file has them
                self.lab = merged  # runtime node additions live in the running copy
                self.result.lab = merged
            self.dirs()
            netns.share_netns_dir()  # pod pins made inside the nodes must show here
            self.underlay()
            for node in self.lab.nodes:
                self.node(node)
            self.etcd()
            self.flannel_config()
            self.apiserver()
            for node in self.lab.nodes:
                self.agent(node)
            self.wait_agents()
            self.workloads(docs)  # first: the seed's pods get the seed's addresses (10.1.1.4, 10.1.79.11)
            self.cluster_dns()
        return self.result

    def dirs(self) -> None:
        rd = names.run_dir(self.name)
        for d in (rd, rd / "pids", rd / "logs", names.bin_dir(self.name), names.state_dir(self.name)):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(rd, 0o700)
        names.FLANNEL_RUN.mkdir(parents=True, exist_ok=True)
        names.SA_MOUNT.mkdir(parents=True, exist_ok=True)  # an empty mount point, as /run/flannel
        for tool, legacy in LEGACY_TOOLS.items():
            link = names.bin_dir(self.name) / tool
            target = shutil.which(legacy) or f"/usr/sbin/{legacy}"
            if not link.is_symlink():
                link.symlink_to(target)
        # `docker ps` / `docker inspect` inside a node (netlab.cli.docker), as on the seed.
        shim = names.bin_dir(self.name) / "docker"
        text = (f"#!/bin/sh\n# netlab: this node's pod containers as dockerd would list them\n"
                f"exec {sys.executable} -P {DOCKER_CLI} --lab {self.name} "
                f"--node \"$(hostname)\" -- \"$@\"\n")
        if not shim.exists() or shim.read_text() != text:
            shim.write_text(text)
            shim.chmod(0o755)
        for node in self.lab.nodes:
            names.node_flannel_dir(self.name, node.name).mkdir(parents=True, exist_ok=True)
        if not names.lab_copy(self.name).exists():
            write_lab_copy(self.lab)
        self.report("run directory", str(rd))

    def underlay(self) -> None:
        ns = names.underlay_ns(self.name)
        nn = self.lab.node_network
        if netns.netns_create(ns):
            netns.sysctl_set(ns, netns.NO_IPV6)  # before br0 and its ports exist
            self._did("underlay", f"namespace {ns}")
        with netlink.Netlink(ns) as nl:
            nl.set_link("lo", state="up")
            if nl.ensure_bridge(names.UNDERLAY_BRIDGE, mtu=nn.mtu):
                self._did("underlay", f"bridge {names.UNDERLAY_BRIDGE}")
            nl.ensure_addr(names.UNDERLAY_BRIDGE, nn.gateway, self.lab.prefixlen)
        self.report("underlay", f"{ns}: {names.UNDERLAY_BRIDGE} {nn.gateway}/{self.lab.prefixlen}")

    def node(self, node: Node) -> None:
        ns = names.node_ns(self.name, node.name)
        under = names.underlay_ns(self.name)
        nn = self.lab.node_network
        created = netns.netns_create(ns)
        if created:
            # Before ens3 moves in and flannel makes docker0 and flannel.1: none gets IPv6.
            netns.sysctl_set(ns, {
                **netns.NO_IPV6,
                "net.ipv4.ip_forward": "1",
                "net.bridge.bridge-nf-call-iptables": "1",
                # conntrack must see bridged pod-to-pod traffic for hairpin service traffic
                "net.ipv4.conf.all.rp_filter": "0",
            })
            self._did(node.name, f"namespace {ns}")
        veth = names.underlay_veth(node.name)
        with netlink.Netlink(ns) as nl:
            uplink_missing = nl.index(names.NODE_UPLINK) is None
        if uplink_missing:
            # The namespace was deleted under running processes: they keep the old one (and
            # its ens3) alive. Stop them and drop the stale underlay end before rewiring.
            stale = [init_pid(self.name, node.name), agent_pid(self.name, node.name)]
            if node.name == self.lab.etcd_node.name:
                stale += [etcd_pid(self.name), apiserver.pid(self.name)]
            proc.kill_pids([p for p in stale if our_pid(self.name, p) and not pid_in_ns(p, ns)])
            with netlink.Netlink(under) as nl:
                nl.delete_link(veth)
        with netlink.Netlink(under) as nl:
            if nl.ensure_veth(veth, names.NODE_UPLINK, peer_netns=ns, mtu=nn.mtu, alias=node.name,
                              peer_mac=names.node_mac(self.name, node.name)):
                self._did(node.name, f"link {names.NODE_UPLINK} <-> {under}/{veth}")
            nl.set_link(veth, master=nl.must_index(names.UNDERLAY_BRIDGE), state="up")
        with netlink.Netlink(ns) as nl:
            nl.set_link("lo", state="up")
            nl.set_link(names.NODE_UPLINK, state="up", mtu=nn.mtu)
            nl.ensure_addr(names.NODE_UPLINK, node.ip, self.lab.prefixlen)
            # Without a default route, connect() to a ClusterIP fails before OUTPUT NAT runs.
            nl.ensure_route("0.0.0.0/0", gateway=nn.gateway)
        self.report(node.name, f"{ns}: {names.NODE_UPLINK} {node.ip}/{self.lab.prefixlen}")

    def etcd(self) -> None:
        """The etcd node's init: etcd, the API server and the node's agent under it."""
        node = self.lab.etcd_node
        ns = names.node_ns(self.name, node.name)
        st = Store.for_lab(self.name, timeout=2.0)
        try:
            if pid_in_ns(init_pid(self.name, node.name), ns) and st.wait_healthy(5):
                self.report("etcd", f"running (pid {etcd_pid(self.name)})")
                return
            self._start_init(node)
            if not st.wait_healthy(20):
                raise NetlabError(f"etcd did not become healthy; see {names.log_file(self.name, 'etcd')}")
            self._did("etcd", f"started in {ns} at {self.lab.etcd_endpoint} (pid {etcd_pid(self.name)})")
        finally:
            st.close()

    def etcd_argv(self) -> list[str]:
        node = self.lab.etcd_node
        data = names.etcd_data_dir(self.name)
        data.parent.mkdir(parents=True, exist_ok=True)
        cp, pp = self.lab.etcd.client_port, self.lab.etcd.peer_port
        # etcd resolves the unix:// listen address relative to its working directory. A
        # killed etcd leaves its socket file, on which the next one's bind() fails: the shell
        # removes it, then becomes etcd (so ps shows etcd, and the init supervises it).
        return [
            "/bin/sh", "-c", 'rm -f "$0"; exec "$@"', str(names.etcd_socket(self.name)),
            shutil.which("etcd") or "/usr/bin/etcd",
            "--name", node.name,
            "--data-dir", str(data),
            "--listen-client-urls", f"http://{node.ip}:{cp},http://127.0.0.1:{cp},unix://etcd.sock:{cp}",
            "--advertise-client-urls", f"http://{node.ip}:{cp}",
            "--listen-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-cluster", f"{node.name}=http://127.0.0.1:{pp}",
            "--log-level", "warn",
        ]

    def _start_init(self, node: Node) -> int:
        """Start the node's init (netlab/native/nodeinit.c): PID 1 of the node's own PID,
        mount and UTS namespaces (host name = node name), supervising the node's daemons."""
        ns = names.node_ns(self.name, node.name)
        old = init_pid(self.name, node.name)
        if our_pid(self.name, old):  # alive in a namespace that was deleted: replace it
            proc.kill_pids([old])
        name = self.name
        pids = names.run_dir(name) / "pids"
        daemons: list[tuple[str, str, str, str, list[str]]] = []  # name, pid file, log, cwd, argv
        fds: tuple[int, ...] = ()
        sock = None
        if node.name == self.lab.etcd_node.name:
            sockp = names.etcd_socket(name)
            if sockp.exists():
                sockp.unlink()
            api_argv, sock = apiserver.prepare(self.lab, self._did)
            fds = (sock.fileno(),)
            daemons += [("etcd", "etcd", "etcd", str(names.run_dir(name)), self.etcd_argv()),
                        ("kube-apiserver", apiserver.PID, apiserver.PID, "-", api_argv)]
        agent = "kubelet" if node.role == "worker" else "kube-controller-manager"
        daemons.append((agent, f"agent-{node.name}", f"agent-{node.name}", "-",
                        [*self.agent_cmd, "--lab", name, "--node", node.name]))
        argv = [native("netlab-nodeinit"), node.name, str(netns.netns_path(ns)),
                str(names.pid_file(name, f"node-{node.name}")),
                "--bind", str(names.node_flannel_dir(name, node.name)), str(names.FLANNEL_RUN)]
        for dname, pidf, log, cwd, dargv in daemons:
            argv += [f"@{dname}", str(pids / f"{pidf}.pid"), str(names.log_file(name, log)), cwd, *dargv]
        try:
            pid = proc.start_node_init(argv, lab=name, pidfile=names.pid_file(name, f"node-{node.name}"),
                                       log=names.log_file(name, f"node-{node.name}"), pass_fds=fds,
                                       env={"PYTHONUNBUFFERED": "1", names.ENV_NODE: node.name})
        finally:
            if sock is not None:
                sock.close()
        self.inits_started.add(node.name)
        return pid

    def flannel_config(self) -> None:
        st = Store.for_lab(self.name)
        try:
            if st.create(store.FLANNEL_CONFIG, json.dumps(self.lab.flannel.config_json(),
                                                           separators=(",", ":"))):
                self._did("flannel", f"config written to {store.FLANNEL_CONFIG}")
            # flannel's reservations: a lease with only the PublicIP and no TTL; the node's
            # flannel fills in its VtepMAC and keeps it without TTL.
            ips = {n.name: n.ip for n in self.lab.nodes}
            for node, subnet in self.lab.flannel.reservations.items():
                if node in ips and st.create(flannel_leases.lease_key(subnet),
                                             json.dumps({"PublicIP": ips[node]})):
                    self._did("flannel", f"reservation {subnet} for {node}")
        finally:
            st.close()

    def apiserver(self) -> None:
        apiserver.ensure(self.lab, names.node_ns(self.name, self.lab.etcd_node.name), self.report,
                         self._did, pid_in_ns, started=self.lab.etcd_node.name in self.inits_started)

    def agent(self, node: Node) -> None:
        """The node's init and, under it, its agent (the etcd node's was started with etcd)."""
        ns = names.node_ns(self.name, node.name)
        if pid_in_ns(init_pid(self.name, node.name), ns):
            return
        pid = self._start_init(node)
        self._did(node.name, f"agent started (pid {agent_pid(self.name, node.name)}) "
                             f"under its node init (pid {pid})")

    def wait_agents(self, timeout: float = 30.0) -> None:
        st = Store.for_lab(self.name)
        try:
            agents = {n.name: agent_pid(self.name, n.name) for n in self.lab.nodes}
            pending = api_nodes.wait_reported(st, agents, timeout)
            if pending:
                raise NetlabError(f"agents of {', '.join(sorted(pending))} did not report; "
                                  f"see {names.run_dir(self.name) / 'logs'}")
            self.report("agents", f"{len(self.lab.nodes)} reporting")
        finally:
            st.close()

    def cluster_dns(self, timeout: float = 60.0) -> None:
        """The cluster DNS add-on (as kubeadm installs CoreDNS): Deployment kube-system/coredns
        behind Service kube-system/kube-dns, through the same apply as the workloads."""
        if not self.lab.dns.replicas:
            return
        from netlab.plan import dns

        docs = manifests.docs_from_objects(dns.addon_manifests(
            self.lab.dns_ip, self.lab.dns.domain, self.lab.dns.replicas,
            [sys.executable, "-m", "netlab.agent.dns"]), "cluster DNS")
        st = Store.for_lab(self.name)
        try:
            for a in manifests.apply(st, self.lab, docs).applied:
                if a.outcome != "unchanged":
                    self._did("dns", a.line)
            manifests.wait_ready(st, self.lab, docs, timeout)
            self.report("dns", f"kube-system/kube-dns {self.lab.dns_ip} ({self.lab.dns.domain}), "
                               f"{self.lab.dns.replicas} coredns pod(s) ready")
        finally:
            st.close()

    def workloads(self, docs: list, timeout: float = 120.0) -> None:
        """Apply the lab file's workloads; wait until deployments are available and proxies report."""
        if not docs:
            return
        st = Store.for_lab(self.name)
        try:
            res = manifests.apply(st, self.lab, docs)
            for a in res.applied:
                if a.outcome != "unchanged":
                    self._did("workloads", a.line)
            manifests.wait_ready(st, self.lab, docs, timeout)
            self.report("workloads", f"{len(docs)} objects in place; every proxy has their rules")
        finally:
            st.close()


def merge_running(old: Lab, new: Lab) -> Lab | None:
    """The lab `up -f FILE` converges to when the lab is already up: the running copy (with
    nodes added at runtime) plus the file's nodes that were deleted at runtime. None if the
    file differs in anything else, or names a node differently from the running lab."""
    def rest(lab: Lab) -> dict:
        d = lab.model_dump(exclude={"nodes"})
        d["flannel"] = {k: v for k, v in d["flannel"].items() if k not in ("nodes", "reservations")}
        return d

    if rest(old) != rest(new):
        return None
    running = {n.name: n for n in old.nodes}
    if any(n.name in running and running[n.name] != n for n in new.nodes):
        return None
    both = set(running) & {n.name for n in new.nodes}
    if any(old.flannel.reservations.get(k) != new.flannel.reservations.get(k) for k in both):
        return None
    back = [n for n in new.nodes if n.name not in running]
    if not back:
        return old
    data = old.model_dump(by_alias=True, exclude_none=True)
    data["nodes"] += [n.model_dump(by_alias=True, exclude_none=True) for n in back]
    fo, fn = old.flannel, new.flannel
    res = dict(fo.reservations)
    res.update({k: v for k, v in fn.reservations.items() if k in {n.name for n in back}})
    data["flannel"]["reservations"] = res
    if fo.nodes is not None:
        data["flannel"]["nodes"] = fo.nodes + [n.name for n in back
                                               if fn.nodes is None or n.name in fn.nodes]
    try:
        return Lab.model_validate(data)
    except ValueError:
        return None


def up(lab: Lab, report: Report = _noop) -> UpResult:
    return Up(lab, report).run()


# --------------------------------------------------------------------------- down
@dataclass
class DownResult:
    lab: str
    was_up: bool
    processes: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    purged: bool = False


def down(lab: str, purge: bool = False, report: Report = _noop) -> DownResult:
    res = DownResult(lab, was_up=lab_exists(lab))
    with lab_lock(lab):
        # Node inits first (they would restart their daemons; when one exits the kernel
        # kills everything left in its node's PID namespace), then the agents (so they do not
        # recreate what we remove), then everything else, found by its mark.
        piddir = names.run_dir(lab) / "pids"
        for pattern in ("node-*.pid", "agent-*.pid"):
            found = [p for p in (proc.read_pid(f) for f in piddir.glob(pattern)) if p] \
                if piddir.exists() else []
            res.processes += proc.kill_pids([p for p in found if our_pid(lab, p)])
        for _ in range(3):  # processes can fork while we kill: repeat until none is left
            pids = proc.lab_pids(lab)
            if not pids:
                break
            res.processes += proc.kill_pids(pids)
        if res.processes:
            report("processes", f"stopped {len(set(res.processes))}")
        # Pods first, the underlay last: deleting a namespace deletes its links.
        nss = netns.netns_list(names.ns_prefix(lab))
        nss.sort(key=lambda n: (n == names.underlay_ns(lab), not n.startswith(f"{lab}-pod-"), n))
        for ns in nss:
            if netns.netns_delete(ns):
                res.namespaces.append(ns)
        if res.namespaces:
            report("namespaces", f"removed {len(res.namespaces)}")
        shutil.rmtree(names.run_dir(lab), ignore_errors=True)
        if purge:
            kc = apiserver.remove_user_kubeconfig(lab)
            if kc is not None:
                report("kubeconfig", f"removed context netlab-{lab} from {kc}")
        if purge and names.state_dir(lab).exists():
            shutil.rmtree(names.state_dir(lab), ignore_errors=True)
            res.purged = True
            report("etcd data", f"removed {names.state_dir(lab)}")
    # The lock file stays (in names.LOCK_DIR): another command may already have it open and
    # be waiting on it; unlinking it would let the next command lock a fresh file beside it.
    _remove_if_empty(names.RUN_ROOT)
    if purge:
        _remove_if_empty(names.STATE_ROOT)
    if not running_labs():
        _remove_if_empty(names.FLANNEL_RUN)
        for d in (names.SA_MOUNT, *list(names.SA_MOUNT.parents)[:2]):  # .../serviceaccount, kubernetes.io, secrets
            _remove_if_empty(d)
    return res


def _remove_if_empty(d: Path) -> None:
    with contextlib.suppress(OSError):
        d.rmdir()


# --------------------------------------------------------------------------- status
def status(lab_name: str) -> dict:
    """A Kubernetes-shaped summary of the lab: nodes with namespace, agent and heartbeat."""
    lab = load_running_lab(lab_name)
    st = Store.for_lab(lab_name, timeout=2.0)
    etcd_ok = st.healthy()
    leases = {}
    if etcd_ok:
        leases = {i.key.rsplit("/", 1)[1]: i.value for i in st.list(store.NODE_LEASES)}
    st.close()
    now = time.time()
    nodes = []
    for n in lab.nodes:
        ns = names.node_ns(lab_name, n.name)
        pid = agent_pid(lab_name, n.name)
        lease = leases.get(n.name)
        age = now - lease["spec"]["renewTime"] if lease else None
        running = pid_in_ns(pid, ns)
        nodes.append({
            "name": n.name, "role": n.role, "ip": n.ip, "namespace": ns,
            "namespaceExists": netns.netns_exists(ns),
            "agentPid": pid, "agentRunning": running,
            "heartbeatAgeSeconds": None if age is None else round(age, 1),
            "ready": running and node_ready(lease, now, lab.node_monitor_grace_period),
        })
    epid = etcd_pid(lab_name)
    apid = apiserver.pid(lab_name)
    try:
        url = apiserver.server_url(lab_name)
    except NetlabError:
        url = None
    api = {"url": url, "pid": apid, "running": pid_in_ns(apid, names.node_ns(lab_name, lab.etcd_node.name)),
           "ready": url is not None and apiserver.ready(lab_name)}
    return {
        "apiVersion": "netlab/v1", "kind": "LabStatus",
        "metadata": {"name": lab_name},
        "status": {
            "underlay": {"namespace": names.underlay_ns(lab_name),
                         "exists": netns.netns_exists(names.underlay_ns(lab_name)),
                         "gateway": lab.node_network.gateway},
            "etcd": {"endpoint": lab.etcd_endpoint, "socket": names.etcd_socket_url(lab_name),
                     "pid": epid, "healthy": etcd_ok},
            "apiserver": api,
            "nodes": nodes,
        },
    }
