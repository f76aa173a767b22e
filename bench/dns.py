"""Cluster DNS: how soon a Service change is visible in DNS (goal: p99 <= 100 ms).

    python -m bench.run --only dns      (or python -m bench.dns [--n 40] for the bare figures)

Brings up a throw-away lab `benchdns` (default lab, one coredns pod, no workloads), then
runs the client below inside kub-node-1's network namespace, where etcd
(172.23.100.4:2379) and the kube-dns service (192.1.0.10, through the node's proxy rules)
are both reachable. Per round: create a Service through netlab.api.services.create (the
API server's own write path), then ask `<name>.default.svc.cluster.local A` over UDP every
millisecond until the cluster IP comes back; delete it, ask until NXDOMAIN. Baseline in the
same run: a bare etcd watch in the client seeing the same writes (the floor any watch-fed
server sits on). Prints medians/p50/p99 and `uptime`; the lab is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

from bench.common import PY, ROOT, log

LAB = "benchdns"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def client(n: int) -> dict:
    from dnslib import QTYPE, RCODE, DNSRecord

    from netlab import labfile, store
    from netlab.api import services
    from netlab.store import Store

    lab = labfile.load_running(LAB)
    st = Store(lab.etcd_endpoint)
    seen: dict[str, float] = {}
    ev = threading.Condition()

    def on_event(resp):
        if isinstance(resp, Exception):
            return
        with ev:
            for e in resp.events:
                seen.setdefault(e.key.decode() + type(e).__name__, time.perf_counter())
            ev.notify_all()

    wid = st.add_watch_prefix_callback(store.SERVICES + "default/", on_event)

    def ask(name: str):
        q = DNSRecord.question(f"{name}.default.svc.cluster.local", "A")
        try:
            r = DNSRecord.parse(q.send("192.1.0.10", 53, timeout=0.05))
        except OSError:  # socket.timeout: try again
            return None, None
        return RCODE[r.header.rcode], [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A]

    add, rm, base_add, base_rm = [], [], [], []
    for i in range(n):
        name = f"bench{i}"
        doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": 80}]}}
        t0 = time.perf_counter()
        svc, _ = services.create(st, lab, doc)
        ip = svc["spec"]["clusterIP"]
        while ask(name)[1] != [ip]:
            time.sleep(0.001)
        add.append(time.perf_counter() - t0)
        k = services.key("default", name)
        with ev:
            ev.wait_for(lambda: k + "PutEvent" in seen, 5)
        base_add.append(seen[k + "PutEvent"] - t0)
        t0 = time.perf_counter()
        services.delete(st, "default", name)
        while ask(name)[0] != "NXDOMAIN":
            time.sleep(0.001)
        rm.append(time.perf_counter() - t0)
        with ev:
            ev.wait_for(lambda: k + "DeleteEvent" in seen, 5)
        base_rm.append(seen[k + "DeleteEvent"] - t0)
    st.cancel_watch(wid, on_event)

    def summary(xs):
        return {"p50_ms": round(statistics.median(xs) * 1000, 1), "p99_ms": round(pct(xs, 99) * 1000, 1),
                "max_ms": round(max(xs) * 1000, 1)}

    return {"n": n, "create": summary(add), "delete": summary(rm),
            "etcd_watch_create": summary(base_add), "etcd_watch_delete": summary(base_rm)}


def run(n: int = 40) -> dict:
    """The section's data (bench.run writes it to bench/results/dns.json)."""
    netlab = [PY, "-m", "netlab"]
    text = subprocess.run([*netlab, "default-lab"], capture_output=True, text=True, check=True).stdout
    text = text.replace("name: seed ", f"name: {LAB} ", 1)
    text = text[: text.index("workloads:")] + "workloads: []\n"
    path = f"/tmp/{LAB}.yaml"
    open(path, "w").write(text)
    load = open("/proc/loadavg").read().split()[:3]
    try:
        log("up")
        subprocess.run([*netlab, "up", "-f", path], check=True, capture_output=True, text=True)
        log(f"{n} rounds of create/delete, asking DNS from kub-node-1")
        out = subprocess.run(["nsenter", f"--net=/run/netns/{LAB}-kub-node-1", "--", PY, "-m", "bench.dns",
                              "--client", "--n", str(n)], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        res["loadavg_before"] = load
        res["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        return res
    finally:
        subprocess.run([*netlab, "down", "--lab", LAB, "--purge"], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--client", action="store_true")
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.n)))
        return
    print(json.dumps(run(args.n), indent=1))


if __name__ == "__main__":
    sys.exit(main())
