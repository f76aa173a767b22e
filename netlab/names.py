"""Naming scheme: every object a lab creates is derived from the lab's name.

This is what lets `netlab down` remove everything after a crash with no state file and
etcd dead: namespaces are `/run/netns/<lab>-*`, processes carry NETLAB_LAB=<lab> in their
environment, files live under /run/netlab/<lab> and /var/lib/netlab/<lab>. Lab names have
no '-' so that the prefix `<lab>-` of one lab never matches another lab's objects.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
# Node names are DNS labels; "pod-" and "net" are reserved for the lab's own namespaces.
NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

NETNS_DIR = Path("/run/netns")
RUN_ROOT = Path("/run/netlab")
STATE_ROOT = Path("/var/lib/netlab")
FLANNEL_RUN = Path("/run/flannel")  # mount point for each node's private /run/flannel
# Mount point of each container's service-account directory (bound in its own mount namespace).
SA_MOUNT = Path("/run/secrets/kubernetes.io/serviceaccount")
ENV_MARK = "NETLAB_LAB"  # every process the lab starts carries NETLAB_LAB=<lab>
ENV_NODE = "NETLAB_NODE"  # ...and what a node's agent starts (pods) NETLAB_NODE=<node>

DEFAULT_LAB = "seed"


def ns_prefix(lab: str) -> str:
    return f"{lab}-"


def underlay_ns(lab: str) -> str:
    return f"{lab}-net"


def node_ns(lab: str, node: str) -> str:
    return f"{lab}-{node}"


def pod_ns(lab: str, namespace: str, pod: str) -> str:
    # '_' cannot appear in Kubernetes names, so namespace and pod name stay separable.
    return f"{lab}-pod-{namespace}_{pod}"


def underlay_veth(node: str) -> str:
    # Interface names are at most 15 bytes; the node name goes into the link's alias.
    return "ve-" + hashlib.sha1(node.encode()).hexdigest()[:8]


def node_mac(lab: str, node: str) -> str:
    """ens3's MAC, stable across re-creation so that neighbours' ARP caches stay right."""
    h = hashlib.sha1(f"{lab}/{node}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *h[:5]))


def container_mac(ip: str) -> str:
    """docker's MAC for a container address: 02:42 and the four bytes of the IPv4 address
    (10.1.79.11 -> 02:42:0a:01:4f:0b, as the seed's pod shows)."""
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *map(int, ip.split("."))))


UNDERLAY_BRIDGE = "br0"
NODE_UPLINK = "ens3"


def run_dir(lab: str) -> Path:
    return RUN_ROOT / lab


LOCK_DIR = RUN_ROOT / ".locks"  # outlives every lab: lock files are never unlinked


def lock_file(lab: str) -> Path:
    return LOCK_DIR / f"{lab}.lock"


def state_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def etcd_data_dir(lab: str) -> Path:
    return state_dir(lab) / "etcd"


def etcd_socket(lab: str) -> Path:
    # etcd names the socket after the whole listen URL, so it ends in ":2379".
    return run_dir(lab) / "etcd.sock:2379"


def etcd_socket_url(lab: str) -> str:
    return f"unix://{run_dir(lab)}/etcd.sock:2379"


def pid_file(lab: str, what: str) -> Path:
    return run_dir(lab) / "pids" / f"{what}.pid"


def log_file(lab: str, what: str) -> Path:
    return run_dir(lab) / "logs" / f"{what}.log"


def node_dir(lab: str, node: str) -> Path:
    return run_dir(lab) / "nodes" / node


def node_flannel_dir(lab: str, node: str) -> Path:
    return node_dir(lab, node) / "flannel"


def bin_dir(lab: str) -> Path:
    """Directory put first on PATH by `netlab exec` (iptables -> iptables-legacy)."""
    return run_dir(lab) / "bin"


def lab_copy(lab: str) -> Path:
    return run_dir(lab) / "lab.yaml"
