"""Mininet baseline: build and stop N hosts spread over S Linux bridges, no controller.

Runs under the system python3 (Debian's `mininet` package) and ONLY inside a scratch network
namespace that bench.run made (`ip netns exec netlabbench-mn ...`): Mininet puts its switch
and the host ends of its links in the namespace it runs in. Mininet.init() is skipped
because its fixLimits() raises host-wide sysctls (fs.file-max, kernel.pty.max, ...), and
Mininet's cleanup (`mn -c`) is never called. Prints one JSON object with the timings.

IPv6 is handled as netlab and the floor handle it: each host turns it off in its namespace
(one sysctl through the host's shell) as soon as the host exists, before Mininet adds its
links, so no host pays the router-solicitation/MLD/DAD flood. Hosts go round-robin over the
S switches, as netlab's scheduler spreads pods over its workers.
"""

import json
import os
import resource
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main(n, switches, scratch):
    # Refuse to run anywhere but in the scratch namespace: the switch would land there.
    if os.stat("/proc/self/ns/net").st_ino != os.stat(f"/run/netns/{scratch}").st_ino:
        sys.exit(f"mininet_hosts.py: run me inside {scratch} (ip netns exec {scratch} ...)")
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import Host
    from mininet.nodelib import LinuxBridge
    from mininet.topo import Topo

    setLogLevel("error")
    Mininet.inited = True  # skip fixLimits(): it writes host-wide sysctls
    # Process-local limits only (what fixLimits would raise): one pty and a few fds per host.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 65536), hard), hard))

    class NoV6Host(Host):
        def startShell(self, *args, **kw):
            super().startShell(*args, **kw)
            self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")

    class Stars(Topo):
        def build(self, n, s):
            sws = [self.addSwitch(f"s{j + 1}") for j in range(s)]
            for i in range(n):
                self.addLink(self.addHost(f"h{i + 1}"), sws[i % s])

    t0 = time.perf_counter()
    net = Mininet(topo=Stars(n, switches), switch=LinuxBridge, host=NoV6Host, controller=None, autoSetMacs=True,
                  build=False, waitConnected=False)
    net.build()
    net.start()
    t_create = time.perf_counter() - t0
    host_pids = [h.pid for h in net.hosts]
    rss = rss_kib(host_pids)
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # One check that the hosts really are connected: the first host pings the last one on
    # its switch.
    peer = net.hosts[((n - 1) // switches) * switches]
    ok = n == 1 or "1 received" in net.hosts[0].cmd(f"ping -c1 -W2 {peer.IP()}")
    t0 = time.perf_counter()
    net.stop()
    t_stop = time.perf_counter() - t0
    return {"n": n, "switches": switches, "create_s": t_create, "delete_s": t_stop, "ping_ok": ok,
            "rss_per_host_kib": rss / n, "peak_rss_mininet_kib": own_rss}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
