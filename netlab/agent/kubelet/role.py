"""The kubelet role of a worker's agent: runs the pods bound to its node.

For each pod it does what kubelet, containerd and the CNI bridge plugin do on the seed's
nodes: a pause process holds the pod's net, UTS and IPC namespaces (pinned under
/run/netns); a veth from docker0 (hairpin on, MTU = FLANNEL_MTU) becomes the pod's eth0,
with an address from host-local IPAM and a default route via <subnet>.1; the containers
start in those namespaces with a mount namespace of their own (/etc/hosts), are restarted
with back-off when they exit, and the pod's status goes back to etcd. What runs is recorded
in each pod's run directory (netlab.plan.podrecord), so a restarted agent adopts its pods, and pods
outlive a killed agent (detached processes, as under containerd's shims).
"""

from __future__ import annotations

import ipaddress
import os
import select
import shutil
import signal
import sys
import time
from pathlib import Path

from netlab import names, store
from netlab.agent.base import Reconciler
from netlab.agent.kubelet.server import KubeletServer
from netlab.api import pods as api_pods
from netlab.api.http import auth
from netlab.errors import NetlabError
from netlab.kernel import iptables, netlink, netns, proc
from netlab.plan import dns, etcd_guard, flannel_leases, images, podrecord
from netlab.plan.ipam import HostLocal

BRIDGE = "docker0"
# Kubernetes waits 10 s doubling to 5 min; a lab wants to see restarts quickly.
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 0.5, 30.0, 60.0
GRACE = 2.0  # SIGTERM to SIGKILL (terminationGracePeriodSeconds, shortened)
BATCH = 32  # pause processes started ahead, so that their unshare() overlaps our wiring
CREATE_RETRY = 2.0
RESYNC = 5.0  # a full look at every pod even when nothing happened
READY_POLL = 0.05  # how soon to look again at a starting container's ports
STATUS_BATCH = 64  # pod statuses per etcd transaction (etcd allows 128 operations)


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _native(name: str) -> str:
    """The lab's small static programs live next to the Python that runs us (setup.sh)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else (shutil.which(name) or str(p))


def _listening(pid: int, ports: list[int]) -> bool:
    """Every port has a TCP listener in the pod's netns (kubelet's tcpSocket readiness)."""
    want = {f"{p:04X}" for p in ports}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:  # noqa: PTH123
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[3] == "0A":  # TCP_LISTEN
                        want.discard(parts[1].rsplit(":", 1)[1])
        except (OSError, StopIteration):
            return False
        if not want:
            return True
    return not want


class KubeletRole(Reconciler):
    name = "kubelet"
    prefixes = (store.PODS,)
    resync_seconds = RESYNC

    def __init__(self, agent):
        super().__init__(agent)
        self.lab = agent.lab.name
        self.node = agent.node.name
        self.host_ip = agent.node.ip
        self.pods: dict[str, tuple[Path, dict]] = {}  # uid -> (run dir, record)
        self.due: dict[tuple[str, str], float] = {}  # (uid, container) -> restart not before
        self.failed: dict[str, str] = {}  # uid -> why its sandbox died (until etcd says Failed)
        self.errors: dict[str, tuple[str, float]] = {}  # uid -> (why creation failed, retry at)
        self.watcher = proc.PidWatcher(lambda key: self.kick())
        self.wire: netlink.PodWiring | None = None
        self.pause_bin = _native("netlab-pause")
        self.hello_bin = _native("netlab-hello")
        self.stats = {"created": 0, "create_s": 0.0, "deleted": 0, "delete_s": 0.0}
        self.prof: dict[str, float] = {}  # seconds per step of pod creation (for the log)
        self.server: KubeletServer | None = None
        self.pki = names.state_dir(self.lab) / "pki"
        self.sa_key: str | None = None
        self.ca_pem = b""
        api_ip = str(ipaddress.IPv4Network(agent.lab.services.cluster_ip_range).network_address + 1)
        # What kubelet gives every container for the `kubernetes` service (in-cluster clients).
        self.dns_ip, self.dns_domain = agent.lab.dns_ip, agent.lab.dns.domain  # kubelet's --cluster-dns/-domain
        self.in_cluster_env = {
            "KUBERNETES_SERVICE_HOST": api_ip, "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{api_ip}:443",
            "KUBERNETES_PORT_443_TCP": f"tcp://{api_ip}:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": api_ip}

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        if self.wire is None:  # once: after it, this thread sees the host's /run/flannel
            self._read_flannel()
            # Under the node init the node's mount namespace shares /run/netns with the
            # host: pins made here show there. (An agent started some other way may hand
            # over the host's mount namespace instead.)
            mnt = netns.host_mount_ns_fd()
            self.wire = netlink.PodWiring(mnt)  # this (the reconcile) thread now wires pods
        podrecord.pods_root(self.lab).mkdir(parents=True, exist_ok=True)
        if self.server is None:  # logs and exec for the API server (port 10250)
            self.server = KubeletServer(self.lab, self.node, self.host_ip)
            self.server.start()
        self._guard_etcd()
        self._adopt()
        self.log.info("kubelet ready: subnet %s, gateway %s, MTU %d, IPAM %s-%s, %d pods adopted",
                      self.subnet, self.gateway, self.mtu, self.ipam.range_start,
                      self.ipam.range_end, len(self.pods))

    def _guard_etcd(self) -> None:
        """Reject pod traffic to etcd's ports (netlab/plan/etcd_guard.py says why)."""
        lab = self.agent.lab
        missing = [h for h in etcd_guard.HOOKS
                   if iptables.iptables(None, "-C", h, "-j", etcd_guard.CHAIN).returncode != 0]
        iptables.iptables_restore(None, etcd_guard.restore_text(
            lab.flannel.network, lab.etcd_node.ip, (lab.etcd.client_port, lab.etcd.peer_port), missing))

    def _read_flannel(self) -> None:
        """Wait for flannel's subnet.env and docker0 (as dockerd does), then set up IPAM."""
        env_file = names.FLANNEL_RUN / "subnet.env"
        waited = False
        while not self.agent.stopping.is_set():
            if env_file.exists() and self._bridge_index() is not None:
                break
            if not waited:
                self.log.info("waiting for flannel: %s and %s", env_file, BRIDGE)
                waited = True
            self.agent.stopping.wait(0.1)
        env = flannel_leases.parse_subnet_env(env_file.read_text())
        gw_cidr = ipaddress.ip_interface(env["FLANNEL_SUBNET"])
        self.subnet = gw_cidr.network
        self.gateway = str(gw_cidr.ip)
        self.mtu = int(env["FLANNEL_MTU"])
        pr = self.agent.node.pod_range
        data = names.node_dir(self.lab, self.node) / "ipam"
        try:
            self.ipam = HostLocal(data, self.subnet, pr.range_start, pr.range_end, self.gateway)
        except ValueError as e:  # the lab's podRange is not inside the subnet flannel gave us
            self.log.warning("podRange ignored (%s): allocating from all of %s", e, self.subnet)
            self.ipam = HostLocal(data, self.subnet, gateway=self.gateway)

    def _took(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.prof[step] = self.prof.get(step, 0.0) + now - since
        return now

    def _bridge_index(self) -> int | None:
        if self.wire is not None:
            return self.wire.node.link_index(BRIDGE)
        rt = netlink.Rtnl()
        try:
            return rt.link_index(BRIDGE)
        finally:
            rt.close()

    def _adopt(self) -> None:
        """Take over the pods a previous agent started (level-triggered: no duplicates)."""
        self._reclaim_interrupted()
        broken = []
        for d, rec in podrecord.records(self.lab, self.node, in_node=True):
            uid = rec["uid"]
            if rec.get("terminated"):
                self.pods[uid] = (d, rec)
            elif proc.proc_alive(rec.get("pause")):
                self.pods[uid] = (d, rec)
                self._watch(uid, rec)
            elif rec.get("pause"):
                self.pods[uid] = (d, rec)
                self.failed[uid] = f"sandbox (pause, pid {rec['pause']['pid']}) exited while the agent was down"
                broken.append(uid)
            else:  # interrupted while being created: nothing of it ever ran
                self._teardown([(d, rec)], keep=False)
        if broken:
            self._teardown([self.pods[u] for u in broken], keep=True)
        live = {u for u, (_, r) in self.pods.items() if not r.get("terminated")}
        freed = self.ipam.reconcile(live)
        if freed:
            self.log.info("IPAM: released %s (no pod holds them)", ", ".join(map(str, freed)))

    def _reclaim_interrupted(self) -> None:
        """Pods whose creation a dying agent left half done hold an address but have no
        record: stop their pause (and anything in its netns), unpin, free the address."""
        recorded = {r["uid"] for _, r in podrecord.records(self.lab, self.node, in_node=True)}
        orphans = {}
        for ip, owner in self.ipam.allocations().items():
            if owner in recorded:
                continue
            d = next(iter(podrecord.pods_root(self.lab).glob(f"*_{owner}")), None)
            ns, name = d.name.split("_")[:2] if d else (None, None)
            orphans[owner] = (d, {"namespace": ns, "name": name, "uid": owner, "podIP": str(ip),
                                  "netns": names.pod_ns(self.lab, ns, name) if d else None,
                                  "veth": podrecord.host_veth(owner), "containers": {}})
        if not orphans:
            return
        by_name = {r["name"]: r for _, r in orphans.values() if r["name"]}
        for pid in proc.all_pids():  # their pause processes: ours, by mark and argv
            env = proc.pid_environ(pid)
            argv = proc.pid_cmdline(pid)
            if (env.get(names.ENV_MARK) == self.lab and env.get(names.ENV_NODE) == self.node
                    and len(argv) == 2 and argv[0].endswith("netlab-pause") and argv[1] in by_name):
                r = by_name[argv[1]]
                r["pause"] = {"pid": pid, "starttime": proc.proc_starttime(pid)}
                r["netnsInode"] = netns.pid_netns_inode(pid)
        for d, r in orphans.values():
            self.log.info("reclaiming pod %s/%s (uid %s): its creation was interrupted",
                          r["namespace"], r["name"], r["uid"])
            if d is None or not r.get("pause"):
                self.ipam.release_ip(r["podIP"])
                if d is not None:
                    shutil.rmtree(d, ignore_errors=True)
                continue
            self._teardown([(d, r)], keep=False)

    def _watch(self, uid: str, rec: dict) -> None:
        p = rec.get("pause") or {}
        if p.get("pid"):
            self.watcher.watch(p["pid"], (uid, ""), p.get("starttime"))
        for cname, c in (rec.get("containers") or {}).items():
            if c.get("pid"):
                self.watcher.watch(c["pid"], (uid, cname), c.get("starttime"))

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> None:
        st = self.agent.store
        wanted: dict[str, store.Item] = {}
        for it in st.list(store.PODS):
            p = it.value
            if isinstance(p, dict) and (p.get("spec") or {}).get("nodeName") == self.node:
                wanted[p["metadata"]["uid"]] = it
        for uid in list(self.failed):
            if uid not in wanted:
                del self.failed[uid]
        for uid in list(self.errors):
            if uid not in wanted:
                del self.errors[uid]

        # 1. pods deleted (or finished) in etcd: tear down, and forget deleted ones entirely
        gone = [u for u in self.pods if u not in wanted]
        done = [u for u in self.pods if u in wanted and self._phase(wanted[u]) in ("Failed", "Succeeded")
                and not self.pods[u][1].get("terminated")]
        if gone or done:
            t = time.perf_counter()
            self._teardown([self.pods[u] for u in gone], keep=False)
            self._teardown([self.pods[u] for u in done], keep=True)
            for u in gone:
                del self.pods[u]
            self.stats["deleted"] += len(gone)
            self.stats["delete_s"] += time.perf_counter() - t
            self.log.info("removed %d pods in %.1f ms", len(gone) + len(done),
                          (time.perf_counter() - t) * 1000)

        # 2. sandboxes that died: the pod is Failed and its resources reclaimed
        died = [u for u, (_, r) in self.pods.items()
                if not r.get("terminated") and r.get("pause") and not proc.proc_alive(r["pause"])]
        for u in died:
            self.failed[u] = f"sandbox (pause, pid {self.pods[u][1]['pause']['pid']}) exited"
            self.log.warning("pod %s/%s: %s", self.pods[u][1]["namespace"], self.pods[u][1]["name"],
                             self.failed[u])
        if died:
            self._teardown([self.pods[u] for u in died], keep=True)

        # 3. new pods
        now = time.monotonic()
        new = [it for u, it in wanted.items() if u not in self.pods and u not in self.failed
               and self._phase(it) not in ("Failed", "Succeeded")
               and (u not in self.errors or self.errors[u][1] <= now)]
        if new:
            t = time.perf_counter()
            self.prof = {}
            made = self._create(new)
            dt = time.perf_counter() - t
            self.stats["created"] += made
            self.stats["create_s"] += dt
            self.log.info("created %d pods in %.1f ms (%.2f ms per pod; per pod, ms: %s)", made,
                          dt * 1000, dt * 1000 / max(made, 1),
                          ", ".join(f"{k} {v * 1000 / max(made, 1):.2f}" for k, v in self.prof.items()))

        # 4. containers: restart the ones that exited, check readiness
        wake = RESYNC
        for u, (d, rec) in self.pods.items():
            if rec.get("terminated") or u not in wanted:
                continue
            w = self._tend(u, d, rec, wanted[u].value)
            if w is not None:
                wake = min(wake, w)
        for u, (_, t_retry) in self.errors.items():
            wake = min(wake, max(0.05, t_retry - time.monotonic()))

        # 5. status back to etcd, only where it changed; many at once in few transactions
        writes = []
        for u, it in wanted.items():
            status = self._status(u, it.value)
            if status is not None and status != it.value.get("status"):
                writes.append((it.key, {**it.value, "status": status}, it.mod_revision))
        for i in range(0, len(writes), STATUS_BATCH):
            chunk = writes[i:i + STATUS_BATCH]
            if len(chunk) > 1 and st.update_all(chunk):
                continue
            for key, obj, rev in chunk:  # one of them changed meanwhile: each on its own
                if not st.update(key, obj, rev):
                    wake = min(wake, 0.05)  # recompute from the new version
        self.resync_seconds = max(0.02, wake)

    @staticmethod
    def _phase(it: store.Item) -> str | None:
        return (it.value.get("status") or {}).get("phase")

    # ------------------------------------------------------------------ create
    def _create(self, items: list[store.Item]) -> int:
        made = 0
        for i in range(0, len(items), BATCH):
            made += self._create_batch(items[i:i + BATCH])
        return made

    def _create_batch(self, items: list[store.Item]) -> int:
        started = []
        for it in items:
            pod = it.value
            m = pod["metadata"]
            uid = m["uid"]
            d = podrecord.pod_dir(self.lab, m["namespace"], m["name"], uid)
            rec = {"namespace": m["namespace"], "name": m["name"], "uid": uid, "node": self.node,
                   "hostIP": self.host_ip, "netns": names.pod_ns(self.lab, m["namespace"], m["name"]),
                   "veth": podrecord.host_veth(uid), "created": time.time(), "pause": None,
                   "order": [c["name"] for c in pod["spec"]["containers"]], "containers": {}}
            try:
                t = time.perf_counter()
                d.mkdir(parents=True, exist_ok=True)
                rec["podIP"] = str(self.ipam.allocate_new(uid))
                rec["prefixLen"] = self.subnet.prefixlen
                rec["gateway"] = self.gateway
                t = self._took("ipam", t)
                r, w = os.pipe()
                try:
                    pid = proc.spawn_fast([self.pause_bin, m["name"]], lab=self.lab,
                                            env=self._base_env(), stdout_fd=w)
                finally:
                    os.close(w)
                self._took("pause", t)
                # The record is written once the pod runs; until then its IPAM allocation
                # (owner = uid) is what a restarted agent finds of it (see _adopt).
                rec["pause"] = {"pid": pid, "hostPid": proc.host_pid_of_child(pid),
                                "started": time.time(), "starttime": None}
                started.append((it, d, rec, r))
            except Exception as e:  # noqa: BLE001 - one pod's failure must not stop the others
                self._create_failed(uid, d, rec, e)
        made = 0
        for it, d, rec, r in started:
            try:
                self._finish(it.value, d, rec, r)
                self.pods[rec["uid"]] = (d, rec)
                self.errors.pop(rec["uid"], None)
                made += 1
            except Exception as e:  # noqa: BLE001
                self._create_failed(rec["uid"], d, rec, e)
            finally:
                os.close(r)
        return made

    def _finish(self, pod: dict, d: Path, rec: dict, ready_fd: int) -> None:
        pid = rec["pause"]["pid"]
        t = time.perf_counter()
        if not select.select([ready_fd], [], [], 5.0)[0] or os.read(ready_fd, 16) != b"ready\n":
            raise NetlabError(f"pause (pid {pid}) did not come up")
        rec["pause"]["starttime"] = proc.proc_starttime(pid)
        t = self._took("pause-ready", t)
        bridge = self._wire(rec, pid)
        if bridge is None:
            raise NetlabError(f"{BRIDGE} is gone")
        t = self._took("wire", t)
        (d / "hosts").write_text(podrecord.hosts_text(rec["podIP"], rec["name"]))
        if (pod["spec"].get("dnsPolicy") or "ClusterFirst") == "ClusterFirst":
            (d / "resolv.conf").write_text(dns.resolv_conf(self.dns_ip, rec["namespace"], self.dns_domain))
        self._service_account(d, rec["namespace"])
        for c in pod["spec"]["containers"]:
            self._start_container(pod, d, rec, c, restart=0)
        t = self._took("containers", t)
        podrecord.save_record(d, rec)
        self._watch(rec["uid"], rec)
        self._took("record", t)

    def _wire(self, rec: dict, pid: int) -> int | None:
        """Pin the netns, veth on docker0 (hairpin), eth0 with the pod IP and default route."""
        w = self.wire
        bridge = w.node.link_index(BRIDGE)
        if bridge is None:
            return None
        t = time.perf_counter()
        netns.pin_netns(rec["netns"], pid)
        t = self._took("wire:pin", t)
        nfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            rec["netnsInode"] = os.fstat(nfd).st_ino
            w.node.add_veth(rec["veth"], "eth0", nfd, self.mtu, bridge,
                            peer_mac=names.container_mac(rec["podIP"]))
            t = self._took("wire:veth", t)
            w.node.set_hairpin(w.node.link_index(rec["veth"]))
            t = self._took("wire:hairpin", t)

            def inside(rt: netlink.Rtnl) -> None:
                eth0 = rt.link_index("eth0")
                rt.link_up(eth0)
                rt.add_addr(eth0, rec["podIP"], rec["prefixLen"])
                rt.add_default_route(rec["gateway"], eth0)

            w.in_netns(nfd, inside, f" of pod {rec['namespace']}/{rec['name']}")
        finally:
            os.close(nfd)
        return bridge

    def _create_failed(self, uid: str, d: Path, rec: dict, e: Exception) -> None:
        msg = str(e) or type(e).__name__
        self.log.error("pod %s/%s: could not create it: %s (retrying)", rec["namespace"], rec["name"], msg)
        try:
            self._teardown([(d, rec)], keep=False)
        except Exception as e2:  # noqa: BLE001
            self.log.error("cleaning up after the failed pod: %s", e2)
        self.pods.pop(uid, None)
        self.errors[uid] = (msg, time.monotonic() + CREATE_RETRY)

    def _service_account(self, d: Path, namespace: str) -> None:
        """The pod's service-account token, the lab CA and its namespace, which pause binds
        over /var/run/secrets/kubernetes.io/serviceaccount (no API server: none)."""
        if self.sa_key is None:
            try:
                self.sa_key = (self.pki / "sa.key").read_text().strip()
                self.ca_pem = (self.pki / "ca.crt").read_bytes()
            except OSError:
                return
        sa = d / "serviceaccount"
        sa.mkdir(exist_ok=True)
        (sa / "token").write_text(auth.sa_token(self.sa_key, namespace))
        (sa / "ca.crt").write_bytes(self.ca_pem)
        (sa / "namespace").write_text(namespace)

    def _base_env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                names.ENV_NODE: self.node}

    def _start_container(self, pod: dict, d: Path, rec: dict, c: dict, restart: int) -> None:
        name = c["name"]
        argv = api_pods.container_argv(c, self.hello_bin)
        env = {**self._base_env(), "HOME": "/root", "HOSTNAME": rec["name"],
               "POD_NAME": rec["name"], "POD_NAMESPACE": rec["namespace"], "POD_IP": rec["podIP"],
               "NODE_NAME": self.node, "HOST_IP": self.host_ip}
        if (d / "serviceaccount").is_dir():
            env.update(self.in_cluster_env, NETLAB_SA_DIR=str(d / "serviceaccount"))
        if (d / "resolv.conf").exists():
            env["NETLAB_RESOLV"] = str(d / "resolv.conf")
        env.update({e["name"]: e["value"] for e in c.get("env") or []})
        if images.kind(c.get("image")) == images.NGINX and not c.get("command"):
            env["NETLAB_BINDS"] = self._nginx_files(d, name, c)
        log = podrecord.container_log(d, name, restart)
        pid = proc.spawn_fast([self.pause_bin, "--enter", str(rec["pause"]["pid"]), str(d / "hosts"),
                                 *argv], lab=self.lab, env=env, log=log)
        prev = rec["containers"].get(name) or {}
        rec["containers"][name] = {
            "pid": pid, "hostPid": proc.host_pid_of_child(pid), "starttime": proc.proc_starttime(pid), "started": time.time(),
            "restartCount": restart, "argv": argv, "image": c.get("image"),
            "ports": [p["containerPort"] for p in c.get("ports") or [] if p["protocol"] == "TCP"],
            "ready": False, "backoff": prev.get("backoff", 0), "last": prev.get("last")}

    @staticmethod
    def _nginx_files(d: Path, name: str, c: dict) -> str:
        """The container's own nginx config, pid and temp paths (netlab.plan.images), and
        the binds pause --enter makes for them in the container's mount namespace."""
        port = next((p["containerPort"] for p in c.get("ports") or [] if p["protocol"] == "TCP"), 80)
        run = d / f"nginx-{name}"
        for sub in ("lib", "log"):
            (run / sub).mkdir(parents=True, exist_ok=True)
        (run / "nginx.conf").write_text(images.nginx_conf(port, "/var/lib/nginx"))
        return ";".join(f"{src}:{dst}" for src, dst in ((run / "nginx.conf", "/etc/nginx/nginx.conf"),
                                                        (run / "lib", "/var/lib/nginx"),
                                                        (run / "log", "/var/log/nginx")))

    # ------------------------------------------------------------------ running pods
    def _tend(self, uid: str, d: Path, rec: dict, pod: dict) -> float | None:
        """Restart exited containers (after their back-off) and check readiness.
        Returns how soon this pod wants another look, if sooner than the resync."""
        wake = None
        changed = False
        now = time.time()
        for c in pod["spec"]["containers"]:
            name = c["name"]
            r = rec["containers"].get(name)
            if r is None:
                continue
            if r.get("pid") and not proc.proc_alive(r):
                code = self._reap(r["pid"])
                ran = now - r["started"]
                r["last"] = {"terminated": {
                    "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                    "startedAt": _rfc3339(r["started"]), "finishedAt": _rfc3339(now),
                    "containerID": "netlab://" + podrecord.container_id(uid, name, r["restartCount"])}}
                r["backoff"] = 0 if ran >= BACKOFF_RESET else r.get("backoff", 0) + 1
                delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (r["backoff"] - 1)) if r["backoff"] else 0
                self.due[(uid, name)] = time.monotonic() + delay
                r["pid"] = None
                r["ready"] = False
                changed = True
                self.log.info("pod %s/%s: container %s exited (code %s) after %.1fs; restart in %.1fs",
                              rec["namespace"], rec["name"], name, code, ran, delay)
            if not r.get("pid"):
                due = self.due.get((uid, name), 0)
                left = due - time.monotonic()
                if left > 0:
                    wake = left if wake is None else min(wake, left)
                    continue
                self._start_container(pod, d, rec, c, r["restartCount"] + 1)
                self.due.pop((uid, name), None)
                self.watcher.watch(rec["containers"][name]["pid"], (uid, name),
                                   rec["containers"][name]["starttime"])
                r = rec["containers"][name]
                changed = True
            if not r["ready"]:
                if not r["ports"] or _listening(r["pid"], r["ports"]):
                    r["ready"] = True  # not worth a record write: re-checked after adoption
                else:  # look often while it starts, then as a readiness probe's period would
                    again = READY_POLL if now - r["started"] < 2.0 else 1.0
                    wake = again if wake is None else min(wake, again)
        if changed:
            podrecord.save_record(d, rec)
        return wake

    @staticmethod
    def _reap(pid: int) -> int | None:
        """The exit code of our own child (None for a process a previous agent started)."""
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == 0:
            return None
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    # ------------------------------------------------------------------ teardown
    def _teardown(self, entries: list[tuple[Path, dict]], keep: bool) -> None:
        """Stop the pods' processes (TERM, then KILL after GRACE), unpin their netns (the
        kernel then removes eth0 and its veth with it), release their addresses. keep: the
        run directory stays (a Failed pod's logs) and the record says it terminated."""
        if not entries:
            return
        leaders = []
        inodes = set()
        for d, rec in entries:
            uid = rec["uid"]
            self.watcher.unwatch((uid, ""))
            for cname, c in (rec.get("containers") or {}).items():
                self.watcher.unwatch((uid, cname))
                self.due.pop((uid, cname), None)
                if proc.proc_alive(c):
                    leaders.append(c["pid"])
                    try:
                        os.killpg(c["pid"], signal.SIGTERM)  # the container's whole session
                    except ProcessLookupError:
                        pass
            p = rec.get("pause")
            if p and p.get("pid") and (proc.proc_alive(p) or p.get("starttime") is None):
                if p.get("starttime") is None and not self._our_pause(p["pid"], rec):
                    p = None
                if p:
                    leaders.append(p["pid"])
                    inodes.add(netns.pid_netns_inode(p["pid"]))
                    try:
                        os.kill(p["pid"], signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            if rec.get("netnsInode") and not rec.get("terminated"):
                inodes.add(rec["netnsInode"])
            ino = netns.netns_inode(rec["netns"])
            if ino is not None and (ino in inodes or not rec.get("netnsInode")):
                inodes.add(ino)
        inodes.discard(None)
        self._unwire(entries)
        for _, rec in entries:
            if rec.get("podIP"):
                self.ipam.release_ip(rec["podIP"])
        deadline = time.monotonic() + GRACE
        while True:
            for pid in leaders:
                self._reap(pid)
            leaders = [p for p in leaders if proc.pid_alive(p)]
            if not leaders or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        # Whatever still lives in those namespaces (a container that ignored SIGTERM, or a
        # process that left its session) is killed, or it would keep the netns and veth.
        if inodes:
            for pid in proc.all_pids():
                if netns.pid_netns_inode(pid) in inodes:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self._reap(pid)
        now = time.time()
        for d, rec in entries:
            if keep:
                rec["terminated"] = {"at": now}
                for c in (rec.get("containers") or {}).values():
                    if c.get("pid"):
                        c["last"] = {"terminated": {"exitCode": 137, "reason": "Error",
                                                    "startedAt": _rfc3339(c["started"]),
                                                    "finishedAt": _rfc3339(now)}}
                    c["pid"] = None
                    c["ready"] = False
                try:
                    podrecord.save_record(d, rec)
                except OSError:
                    pass
            else:
                shutil.rmtree(d, ignore_errors=True)

    def _our_pause(self, pid: int, rec: dict) -> bool:
        env = proc.pid_environ(pid)
        return env.get(names.ENV_MARK) == self.lab and proc.pid_cmdline(pid)[1:] == [rec["name"]]

    def _unwire(self, entries: list[tuple[Path, dict]]) -> None:
        """Remove the pins (the kernel then deletes each netns with its eth0 and veth); a
        veth whose pod never got its netns pinned (an interrupted creation) is deleted."""
        for _, rec in entries:
            pinned = netns.netns_path(rec["netns"])
            ino = netns.netns_inode(rec["netns"])
            if ino is not None and rec.get("netnsInode") and ino != rec["netnsInode"]:
                continue  # a newer pod of the same name holds the pin now
            netns.unpin_netns(rec["netns"])
            if ino is None and not pinned.exists():
                try:
                    self.wire.node.delete_link(rec["veth"])
                except NetlabError as e:
                    self.log.warning("delete %s: %s", rec["veth"], e)

    # ------------------------------------------------------------------ status
    def _status(self, uid: str, pod: dict) -> dict | None:
        spec_cs = pod["spec"]["containers"]
        old = pod.get("status") or {}
        if uid in self.failed or (uid in self.pods and self.pods[uid][1].get("terminated")):
            if old.get("phase") in ("Failed", "Succeeded"):
                return None
            rec = self.pods[uid][1] if uid in self.pods else {}
            msg = self.failed.get(uid, "the pod's sandbox is gone")
            return {
                "phase": "Failed", "reason": "SandboxDied", "message": msg,
                "hostIP": self.host_ip, "podIP": rec.get("podIP"),
                "conditions": [{"type": "Ready", "status": "False", "reason": "PodFailed"},
                               {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [self._cstatus(uid, c, rec, terminated=True) for c in spec_cs],
            }
        if uid in self.errors:
            return {"phase": "Pending", "hostIP": self.host_ip, "message": self.errors[uid][0],
                    "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                                   {"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "ready": False,
                                           "restartCount": 0, "started": False,
                                           "state": {"waiting": {"reason": "ContainerCreating",
                                                                 "message": self.errors[uid][0]}}}
                                          for c in spec_cs]}
        if uid not in self.pods:
            return None
        rec = self.pods[uid][1]
        cs = [self._cstatus(uid, c, rec) for c in spec_cs]
        ready = all(c["ready"] for c in cs)
        started = all(c["name"] in rec["containers"] for c in spec_cs)
        t = "True" if ready else "False"
        return {
            "phase": "Running" if started else "Pending",
            "conditions": [{"type": "Initialized", "status": "True"},
                           {"type": "Ready", "status": t},
                           {"type": "ContainersReady", "status": t},
                           {"type": "PodScheduled", "status": "True"}],
            "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
            "podIP": rec["podIP"], "podIPs": [{"ip": rec["podIP"]}],
            "startTime": _rfc3339(rec["created"]), "qosClass": "BestEffort",
            "containerStatuses": cs,
        }

    def _cstatus(self, uid: str, c: dict, rec: dict, terminated: bool = False) -> dict:
        r = (rec.get("containers") or {}).get(c["name"])
        out = {"name": c["name"], "image": c.get("image") or "", "imageID": "",
               "ready": bool(r and r.get("ready") and not terminated),
               "restartCount": r["restartCount"] if r else 0,
               "started": bool(r and r.get("pid") and not terminated)}
        if r is None:
            out["state"] = {"waiting": {"reason": "ContainerCreating"}}
            return out
        out["containerID"] = "netlab://" + podrecord.container_id(uid, c["name"], r["restartCount"])
        if r.get("pid") and not terminated:
            out["state"] = {"running": {"startedAt": _rfc3339(r["started"])}}
        elif terminated:
            out["state"] = (r.get("last") or {"terminated": {"exitCode": 137, "reason": "Error"}})
        else:
            out["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                        "message": f"back-off restarting failed container {c['name']}"}}
        if r.get("last") and not terminated:
            out["lastState"] = r["last"]
        return out

    def shutdown(self) -> None:
        # Pods keep running (as under containerd's shims); the next agent adopts them.
        if self.stats["created"] or self.stats["deleted"]:
            self.log.info("kubelet stats: %s", self.stats)

