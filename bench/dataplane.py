"""Data plane: iperf3 TCP through hand-built pairs (the baselines) and through a lab's pods.

Baselines, between two scratch namespaces: a veth pair at MTU 1450 (the node network), and
the same pair carrying a flannel-like VXLAN device (VNI 1, UDP 8472, no learning, static
FDB and neighbour entries, MTU 1400); and a hand-built replica of netlab's cross-node pod
path (issue 16), hop for hop and without netlab or any rule: pod A's veth on node A's
bridge, node A routing into its VXLAN device, the underlay veth to node B, decapsulation,
node B's bridge, pod B's veth. netlab: an iperf3 server in a pod (host binaries run as the
pod's container), clients pod -> pod on one node, pod -> pod across nodes, and
pod -> ClusterIP.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from typing import Iterator

import yaml

from bench.common import in_ns, lab, log, median, netlab, scratch_ns, sh

LAB = "benchdp"


def iperf(server_ns_cmd: list[str] | None, client_ns_cmd: list[str], addr: str, seconds: int) -> float:
    """Gbit/s received, one TCP stream; a server (if asked for) is started here and gone afterwards."""
    srv = None if server_ns_cmd is None else subprocess.Popen(
        [*server_ns_cmd, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = subprocess.run([*client_ns_cmd, "iperf3", "-c", addr, "-t", str(seconds), "-O", "1", "-J"],
                               capture_output=True, text=True, timeout=seconds + 30)
            if p.returncode == 0:
                out = json.loads(p.stdout)
                if "error" not in out:
                    break
                out = None
            time.sleep(0.05)  # server not listening yet
        if out is None:
            raise RuntimeError(f"iperf3 to {addr} failed: {p.stdout[-500:]} {p.stderr[-500:]}")
        return out["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if srv:
            srv.kill()
            srv.wait()


@contextlib.contextmanager
def hand_built() -> Iterator[dict[str, tuple[list[str], list[str], str]]]:
    """The baseline pairs: {name: (server ns cmd, client ns cmd, server address)}."""
    with scratch_ns("dpa", "dpb") as (a, b):
        sh("ip", "-n", a, "link", "add", "u0", "mtu", "1450", "type", "veth", "peer", "name", "u0",
           "netns", b, "mtu", "1450")
        for ns, ip, peer, mac, peer_mac in ((a, "10.250.0.1", "10.250.0.2", "02:00:00:00:00:01", "02:00:00:00:00:02"),
                                            (b, "10.250.0.2", "10.250.0.1", "02:00:00:00:00:02", "02:00:00:00:00:01")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "u0")
            sh("ip", "-n", ns, "link", "set", "u0", "up")
            # flannel.1 as flannel builds it: no learning, the peer's VTEP MAC in FDB and ARP.
            sh("ip", "-n", ns, "link", "add", "vx1", "address", mac, "mtu", "1400", "type", "vxlan",
               "id", "1", "dstport", "8472", "local", ip, "dev", "u0", "nolearning")
            o, po = ip.replace("10.250", "10.251"), peer.replace("10.250", "10.251")
            sh("ip", "-n", ns, "addr", "add", f"{o}/24", "dev", "vx1")
            sh("ip", "-n", ns, "link", "set", "vx1", "up")
            sh("ip", "-n", ns, "neigh", "replace", po, "lladdr", peer_mac, "dev", "vx1", "nud", "permanent")
            sh("bridge", "-n", ns, "fdb", "replace", peer_mac, "dev", "vx1", "dst", peer, "self", "permanent")
        yield {"veth_gbps": (in_ns(b), in_ns(a), "10.250.0.2"), "vxlan_gbps": (in_ns(b), in_ns(a), "10.251.0.2")}


@contextlib.contextmanager
def replica() -> Iterator[dict[str, tuple[list[str], list[str], str]]]:
    """The cross-node pod path built by hand in four scratch namespaces: {name: (srv, cli, addr)}."""
    with scratch_ns("rpa", "rna", "rnb", "rpb") as (pa, na, nb, pb):
        sh("ip", "-n", na, "link", "add", "ens3", "mtu", "1450", "type", "veth", "peer", "name", "ens3",
           "netns", nb, "mtu", "1450")
        nodes = ((na, pa, "10.253.0.1", "10.253.0.2", 1, 2, "02:00:00:00:01:01", "02:00:00:00:01:02"),
                 (nb, pb, "10.253.0.2", "10.253.0.1", 2, 1, "02:00:00:00:01:02", "02:00:00:00:01:01"))
        for node, pod, ip, peer, sub, psub, mac, peer_mac in nodes:
            sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh("ip", "-n", node, "addr", "add", f"{ip}/24", "dev", "ens3")
            sh("ip", "-n", node, "link", "set", "ens3", "up")
            sh("ip", "-n", node, "link", "add", "vx1", "address", mac, "mtu", "1400", "type", "vxlan",
               "id", "1", "dstport", "8472", "local", ip, "dev", "ens3", "nolearning")
            sh("ip", "-n", node, "addr", "add", f"10.252.{sub}.0/32", "dev", "vx1")
            sh("ip", "-n", node, "link", "set", "vx1", "up")
            sh("ip", "-n", node, "neigh", "replace", f"10.252.{psub}.0", "lladdr", peer_mac, "dev", "vx1",
               "nud", "permanent")
            sh("bridge", "-n", node, "fdb", "replace", peer_mac, "dev", "vx1", "dst", peer, "self", "permanent")
            sh("ip", "-n", node, "route", "add", f"10.252.{psub}.0/24", "via", f"10.252.{psub}.0", "dev", "vx1",
               "onlink")
            sh("ip", "-n", node, "link", "add", "br0", "mtu", "1400", "type", "bridge")
            sh("ip", "-n", node, "addr", "add", f"10.252.{sub}.1/24", "dev", "br0")
            sh("ip", "-n", node, "link", "set", "br0", "up")
            sh("ip", "-n", node, "link", "add", "veth0", "mtu", "1400", "type", "veth", "peer", "name", "eth0",
               "netns", pod, "mtu", "1400")
            sh("ip", "-n", node, "link", "set", "veth0", "master", "br0", "up")
            sh("ip", "-n", pod, "addr", "add", f"10.252.{sub}.2/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", f"10.252.{sub}.1")
        yield {"replica_gbps": (in_ns(pb), in_ns(pa), "10.252.2.2")}


def _manifest() -> list[dict]:
    def pod(name: str, node: str, cmd: list[str], labels: dict | None = None, port: int | None = None) -> dict:
        c = {"name": name, "command": cmd}
        if port:
            c["ports"] = [{"containerPort": port}]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                                 "labels": labels or {}},
                "spec": {"nodeName": node, "containers": [c]}}

    return [
        pod("iperf-server", "kub-node-1", ["iperf3", "-s"], {"app": "iperf"}, 5201),
        pod("client-same", "kub-node-1", ["sleep", "86400"]),
        pod("client-cross", "kub-node-2", ["sleep", "86400"]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iperf", "namespace": "default"},
         "spec": {"selector": {"app": "iperf"}, "ports": [{"port": 5201, "targetPort": 5201, "protocol": "TCP"}]}},
    ]


@contextlib.contextmanager
def in_lab(name: str = LAB, proxy_mode: str | None = None) -> Iterator[dict[str, tuple[None, list[str], str]]]:
    """iperf3 server in a pod on kub-node-1; client pods on the same node and on kub-node-2."""
    from bench.common import store
    from netlab import names

    LAB = name  # noqa: N806 - the lab this block measures
    with lab(LAB, 2, proxy_mode=proxy_mode) as path:
        m = path.with_name("iperf.yaml")
        m.write_text(yaml.safe_dump_all(_manifest()))
        netlab("apply", "-f", str(m), "--timeout", "60", env={"NETLAB_LAB": LAB})
        st = store(LAB)
        server_ip = st.get("/registry/pods/default/iperf-server").value["status"]["podIP"]
        cluster_ip = st.get("/registry/services/specs/default/iperf").value["spec"]["clusterIP"]
        st.close()
        same = in_ns(names.pod_ns(LAB, "default", "client-same"))
        cross = in_ns(names.pod_ns(LAB, "default", "client-cross"))
        yield {"pod_same_node_gbps": (None, same, server_ip), "pod_cross_node_gbps": (None, cross, server_ip),
               "cluster_ip_gbps": (None, cross, cluster_ip)}


def run(seconds: int, repeat: int) -> dict:
    # Baselines and pods alternate, round by round, so that both see the same machine load.
    out: dict = {"seconds": seconds, "repeat": repeat}
    with hand_built() as base, replica() as rep, in_lab() as pods:
        paths = {**base, **rep, **pods}
        runs: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(repeat):
            for key, (srv, cli, addr) in paths.items():
                runs[key].append(iperf(srv, cli, addr, seconds))
    for key, v in runs.items():
        out[key] = median(v)
        out[key + "_runs"] = v
        log(f"dataplane {key}: {out[key]:.2f} Gbit/s")
    return out
