"""The kernel floor: N namespaces with a veth and an address each, in one process, no netlab.

Run inside a scratch network namespace (bench.run does `nsenter --net=...`): the bridge and
the host ends of the veths land there, never in the host's root namespace. Prints one JSON
object with the timings. Deliberately minimal: per namespace one unshare + bind mount (what
`ip netns add` does), one netlink socket opened inside it, one veth pair, one address.
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


def main(n: int, prefix: str) -> dict:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # the scratch namespace
    ipr = IPRoute()
    ipr.link("add", ifname="br0", kind="bridge")
    br = ipr.link_lookup(ifname="br0")[0]
    ipr.link("set", index=br, state="up")
    socks = []
    t0 = time.perf_counter()
    for i in range(n):
        name = f"{prefix}{i}"
        path = f"{NETNS_DIR}/{name}"
        # `ip netns add`: a new namespace for this thread, pinned by a bind mount.
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        _check(libc.unshare(CLONE_NEWNET), "unshare")
        _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "mount")
        inner = IPRoute()  # a socket opened here stays in the new namespace
        _check(libc.setns(home, CLONE_NEWNET), "setns")
        host_if = f"vf{i}"
        ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": path})
        idx = ipr.link_lookup(ifname=host_if)[0]
        ipr.link("set", index=idx, master=br, state="up")
        eth0 = inner.link_lookup(ifname="eth0")[0]
        inner.addr("add", index=eth0, address=f"10.200.{i // 250}.{i % 250 + 2}", prefixlen=16)
        inner.link("set", index=eth0, state="up")
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
    ipr.link("del", index=br)
    ipr.close()
    return {"n": n, "create_s": t_create, "delete_calls_s": t_delete_calls, "delete_s": t_delete}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "nlbfloor")))
