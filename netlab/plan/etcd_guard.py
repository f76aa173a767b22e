"""The etcd guard, pure: the filter rules that keep pods away from etcd's ports.

Pods reach the control plane only through the API server (6443) with their token; etcd
speaks plain HTTP without authentication, so a pod that could connect could read or
rewrite every object. Each worker's kubelet installs, in the node's filter table, chain
NETLAB-ETCD (jumped to first from FORWARD and INPUT) rejecting TCP from the pod network to
the etcd node's client and peer ports. The nodes themselves (their own address, not the
pod network) keep plain-HTTP etcd access. `iptables -S NETLAB-ETCD` inside a node shows it;
the chain lives in the node's namespace, so `down` removes it with the namespace.
"""

from __future__ import annotations

CHAIN = "NETLAB-ETCD"
HOOKS = ("FORWARD", "INPUT")  # pods on other nodes (routed) and on the etcd node itself
COMMENT = "netlab: pods may not reach etcd; use the API server"


def rules(pod_network: str, etcd_ip: str, ports: tuple[int, ...]) -> list[str]:
    dports = ",".join(str(p) for p in ports)
    return [f"-A {CHAIN} -s {pod_network} -d {etcd_ip}/32 -p tcp -m multiport --dports {dports} "
            f'-m comment --comment "{COMMENT}" -j REJECT --reject-with tcp-reset']


def restore_text(pod_network: str, etcd_ip: str, ports: tuple[int, ...], missing_hooks: list[str]) -> str:
    """iptables-restore --noflush input: (re)declare and refill the chain, jump to it first
    from the hooks that lack the jump."""
    lines = ["*filter", f":{CHAIN} - [0:0]", *rules(pod_network, etcd_ip, ports)]
    lines += [f"-I {h} 1 -j {CHAIN}" for h in missing_hooks]
    return "\n".join([*lines, "COMMIT"]) + "\n"
