"""`netlab doctor`: is this machine able to run a lab, and how to fix what is missing.

Kernel features are tested for real in a scratch namespace (created and removed here), not
guessed from module lists: a veth, a bridge, a VXLAN device, the br_netfilter sysctl, and an
iptables-legacy-restore of rules using every match and target kube-proxy's rules need, and an
`nft -f` of kube-proxy's nftables table for one service.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from netlab.kernel import iptables, netlink, netns, nft
from netlab.plan import nft_rules
from netlab.plan.proxy_rules import Endpoint, ServicePort

APT = "apt-get install -y"
BINARIES = {
    "ip": f"{APT} iproute2",
    "nsenter": f"{APT} util-linux",
    "unshare": f"{APT} util-linux",
    "sysctl": f"{APT} procps",
    "iptables-legacy": f"{APT} iptables",
    "iptables-legacy-restore": f"{APT} iptables",
    "etcd": f"{APT} etcd-server",
    "etcdctl": f"{APT} etcd-client",
    "conntrack": f"{APT} conntrack",
    "nft": f"{APT} nftables",
    "curl": f"{APT} curl",
}

PROBE_RULES = """*nat
:NETLAB-DOCTOR - [0:0]
-A NETLAB-DOCTOR -m comment --comment "doctor" -m statistic --mode random --probability 0.5 -j RETURN
-A NETLAB-DOCTOR -m addrtype --dst-type LOCAL -j RETURN
-A NETLAB-DOCTOR -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A NETLAB-DOCTOR -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80
-A NETLAB-DOCTOR -j MARK --set-xmark 0x4000/0x4000
COMMIT
*filter
:NETLAB-DOCTOR - [0:0]
-A NETLAB-DOCTOR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETLAB-DOCTOR -p tcp -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


def run_checks() -> list[Check]:
    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", root, "" if root else "not running as root",
                        "run netlab with sudo (it creates namespaces, links and iptables rules)"))
    for binary, fix in BINARIES.items():
        path = shutil.which(binary)
        checks.append(Check(f"binary {binary}", bool(path), path or "not found", fix))
    if not root:
        checks.append(Check("kernel features", False, "skipped: needs root", "run `sudo netlab doctor`"))
        return checks
    checks += _kernel_checks()
    return checks


def _kernel_checks() -> list[Check]:
    out: list[Check] = []
    ns = f"netlabdoctor{os.getpid()}-probe"
    try:
        netns.netns_create(ns)
        out.append(Check("network namespaces", True))
    except Exception as e:  # noqa: BLE001
        return [Check("network namespaces", False, str(e), "a kernel with CONFIG_NET_NS")]
    try:
        with netlink.Netlink(ns) as nl:
            nl.set_link("lo", state="up")
            for name, fix, fn in (
                ("veth", "CONFIG_VETH (modprobe veth)", lambda: nl.ensure_veth("dv0", "dv1")),
                ("bridge", "CONFIG_BRIDGE (modprobe bridge)", lambda: nl.ensure_bridge("dbr0")),
                ("vxlan", "CONFIG_VXLAN (modprobe vxlan)",
                 lambda: nl.ensure_vxlan("dvx0", vni=1, port=8472, local="127.0.0.1", dev="lo", mtu=1400)),
            ):
                try:
                    fn()
                    out.append(Check(name, True))
                except Exception as e:  # noqa: BLE001
                    out.append(Check(name, False, str(e), fix))
        try:
            netns.sysctl_get(ns, "net.bridge.bridge-nf-call-iptables")
            out.append(Check("br_netfilter", True))
        except Exception as e:  # noqa: BLE001
            out.append(Check("br_netfilter", False, str(e), "modprobe br_netfilter"))
        try:
            iptables.iptables_restore(ns, PROBE_RULES, noflush=True)
            out.append(Check("iptables nat, xt matches statistic/comment/addrtype/mark/conntrack", True))
        except Exception as e:  # noqa: BLE001
            out.append(Check("iptables nat, xt matches statistic/comment/addrtype/mark/conntrack", False,
                             str(e), "modprobe iptable_nat xt_statistic xt_comment xt_addrtype "
                             "xt_mark xt_conntrack nf_nat (and install iptables)"))
        try:
            # kube-proxy's nftables layout for one service (kubeProxy.mode nftables).
            sp = ServicePort("default", "doctor", "", "TCP", "10.0.0.2", 80, 30000)
            nft.nft_apply(ns, nft_rules.full_text([nft_rules.contribution([(sp, [Endpoint("10.0.0.1", 80)])])]))
            out.append(Check("nftables: kube-proxy's table (nat, fib, numgen, reject, masquerade)", True))
        except Exception as e:  # noqa: BLE001
            out.append(Check("nftables: kube-proxy's table (nat, fib, numgen, reject, masquerade)", False, str(e),
                             "install nftables; modprobe nf_tables nft_nat nft_fib_ipv4 nft_numgen "
                             "nft_reject_ipv4 nft_masq (only kubeProxy.mode nftables needs it)"))
    finally:
        netns.netns_delete(ns)
    return out
