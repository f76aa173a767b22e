"""The kernel floor: N pod-shaped namespaces spread over B bridges, in one process, no netlab.

Run inside a scratch network namespace (bench.run does `nsenter --net=...`): the bridges and
the host ends of the veths land there, never in the host's root namespace. Prints one JSON
object with the timings. Per pod it does the kernel work netlab's kubelet does for a pod
(issue 16), nothing more: a namespace pinned by a bind mount (what `ip netns add` does) with
IPv6 off before any link comes up, a veth pair whose pod end has docker's MAC from the IP
(02:42 + the address bytes), the host end a hairpin port of the node's bridge, the address,
the link up and a default route via the bridge. One bridge per worker, pods round-robin, as
the scheduler spreads them.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NETNS_DIR = "/run/netns"

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _ipv6_off() -> None:
    # /proc/sys/net is the namespace of the opening thread: this writes the new namespace's.
    for conf in ("all", "default"):
        with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
            f.write("1")


def _mac(ip: str) -> str:
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def main(n: int, bridges: int, prefix: str) -> dict:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # the scratch namespace
    _ipv6_off()  # the scratch namespace stands for the nodes, which show no IPv6 either
    ipr = IPRoute()
    brs = []
    for b in range(bridges):
        ipr.link("add", ifname=f"br{b}", kind="bridge")
        idx = ipr.link_lookup(ifname=f"br{b}")[0]
        ipr.addr("add", index=idx, address=f"10.{200 + b}.0.1", prefixlen=16)
        ipr.link("set", index=idx, state="up")
        brs.append(idx)
    t0 = time.perf_counter()
    for i in range(n):
        b, k = i % bridges, i // bridges
        name = f"{prefix}{i}"
        path = f"{NETNS_DIR}/{name}"
        ip = f"10.{200 + b}.{k // 250}.{k % 250 + 2}"
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        _check(libc.unshare(CLONE_NEWNET), "unshare")
        _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "mount")
        _ipv6_off()
        inner = IPRoute()  # a socket opened here stays in the new namespace
        _check(libc.setns(home, CLONE_NEWNET), "setns")
        host_if = f"vf{i}"
        ipr.link("add", ifname=host_if, kind="veth",
                 peer={"ifname": "eth0", "address": _mac(ip), "net_ns_fd": path})
        idx = ipr.link_lookup(ifname=host_if)[0]
        ipr.link("set", index=idx, master=brs[b], state="up")
        ipr.brport("set", index=idx, hairpin=1)
        eth0 = inner.link_lookup(ifname="eth0")[0]
        inner.addr("add", index=eth0, address=ip, prefixlen=16)
        inner.link("set", index=eth0, state="up")
        inner.route("add", dst="0.0.0.0/0", gateway=f"10.{200 + b}.0.1")
        inner.close()
    t_create = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(n):
        path = f"{NETNS_DIR}/{prefix}{i}"
        _check(libc.umount2(path.encode(), MNT_DETACH), "umount")
        os.unlink(path)
    t_delete_calls = time.perf_counter() - t0
    # The kernel tears a namespace down asynchronously; done when the host ends are gone.
    while any(l.get_attr("IFLA_IFNAME").startswith("vf") for l in ipr.get_links()):
        time.sleep(0.005)
    t_delete = time.perf_counter() - t0
    for idx in brs:
        ipr.link("del", index=idx)
    ipr.close()
    return {"n": n, "bridges": bridges, "create_s": t_create, "delete_calls_s": t_delete_calls,
            "delete_s": t_delete}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "nlbfloor")))
