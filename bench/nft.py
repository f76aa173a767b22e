"""kube-proxy's nftables mode against raw `nft -f` and against the iptables mode, one run.

    python -m bench.nft [--quick] [--sizes 1000,10000] [--latency-workers 10] [--changes 50]

1. Sync on one node, per N services x 2 endpoints, each phase in a fresh scratch namespace:
   raw `nft -f` full loads (kube-proxy's vmap form and the rule form), one change as an
   `nft -f` delta, netlab's NftProxyRole (full sync, one service added / removed, one
   endpoint changed) and, beside it, the iptables mode's bench.proxy_sync (raw
   iptables-legacy-restore and netlab's ProxyRole) for the same N.
2. Programming latency (etcd write -> every worker's proxy reports the rules) with W
   workers, in an iptables lab and then an nftables lab: service created, endpoints changed.
3. Data path: iperf3 through a ClusterIP across nodes in an iptables and an nftables lab.
Prints one JSON document (stdout) and a summary (stderr), with `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from bench.common import PY, close_store, in_ns, json_out, lab, log, median, pct, scratch_ns


def once(module: str, phase: str, n: int) -> dict:
    with scratch_ns("nf") as (ns,):
        return json_out(*in_ns(ns, PY, "-m", module, phase, str(n)), timeout=900)


def sync(n: int, repeat: int) -> dict:
    nraw = [once("bench.nft_sync", "raw", n) for _ in range(repeat)]
    nnet = [once("bench.nft_sync", "netlab", n) for _ in range(repeat)]
    iraw = [once("bench.proxy_sync", "raw", n) for _ in range(repeat)]
    inet = [once("bench.proxy_sync", "netlab", n) for _ in range(repeat)]
    if not all(r["ok"] for r in nnet + inet):
        raise RuntimeError(f"a proxy left wrong rules at N={n}")

    def m(rows, k):
        return median([r[k] for r in rows])

    row = {
        "services": n, "form": nnet[0]["form"],
        "raw_nft_load_vmap_s": m(nraw, "load_vmap_s"), "raw_nft_load_rules_s": m(nraw, "load_rules_s"),
        "raw_nft_f_add_one_s": m(nraw, "nft_f_add_one_s"), "raw_nft_f_remove_one_s": m(nraw, "nft_f_remove_one_s"),
        "raw_nft_f_endpoint_change_s": m(nraw, "nft_f_endpoint_change_s"),
        "nft_full_sync_s": m(nnet, "full_sync_s"), "nft_add_one_s": m(nnet, "add_one_s"),
        "nft_remove_one_s": m(nnet, "remove_one_s"), "nft_endpoint_change_s": m(nnet, "endpoint_change_s"),
        "iptables_raw_restore_s": m(iraw, "restore_s"), "iptables_raw_add_one_s": m(iraw, "add_one_s"),
        "iptables_full_sync_s": m(inet, "full_sync_s"), "iptables_add_one_s": m(inet, "add_one_s"),
        "iptables_remove_one_s": m(inet, "remove_one_s"),
        "iptables_endpoint_change_s": m(inet, "endpoint_change_s"),
        "runs": {"nft_raw": nraw, "nft_netlab": nnet, "iptables_raw": iraw, "iptables_netlab": inet},
    }
    base = row["raw_nft_load_rules_s"] if row["form"] == "rules" else row["raw_nft_load_vmap_s"]
    vm = row["raw_nft_load_vmap_s"]
    row["nft_full_sync_ratio"] = row["nft_full_sync_s"] / base
    log(f"N={n}: nft full sync {row['nft_full_sync_s']:.2f}s ({row['nft_full_sync_ratio']:.2f}x raw "
        f"{base:.2f}s; vmap form raw {'-' if vm is None else f'{vm:.2f}s'}); add/remove/endpoint "
        f"{row['nft_add_one_s'] * 1000:.1f}/{row['nft_remove_one_s'] * 1000:.1f}/"
        f"{row['nft_endpoint_change_s'] * 1000:.1f} ms (nft -f {row['raw_nft_f_add_one_s'] * 1000:.0f} ms, "
        f"iptables {row['iptables_add_one_s'] * 1000:.0f} ms)")
    return row


def latency(workers: int, changes: int, mode: str) -> dict:
    from bench.latency import ProxyWatch
    from netlab import store
    from netlab.api import services
    from netlab.lab.running import load_running_lab
    from netlab.store import Store

    name = f"benchnf{mode[:3]}"
    with lab(name, workers, proxy_mode=mode):
        labo = load_running_lab(name)
        st = Store.for_lab(name)
        wk = [n.name for n in labo.workers]
        pw = ProxyWatch(st, store.PROXY_STATUS)
        deadline = time.monotonic() + 60
        while not all(n in pw.rev for n in wk):
            if time.monotonic() > deadline:
                raise RuntimeError("bench lab's proxies did not report")
            time.sleep(0.2)
        created, changed, svcs = [], [], []
        for i in range(changes):
            doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"lat{i}", "namespace": "default"},
                   "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
            t0 = time.perf_counter()
            svc, rev = services.create(st, labo, doc)
            created.append((pw.wait(wk, rev) - t0) * 1000)
            svcs.append(svc)
        for i in range(changes):
            m = svcs[i]["metadata"]
            eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": m["name"], "namespace": "default"},
                   "subsets": [{"addresses": [{"ip": f"10.1.{1 + i % 200}.{2 + i % 250}"}, {"ip": f"10.1.{1 + i % 200}.3"}],
                                "ports": [{"port": 8080, "protocol": "TCP"}]}]}
            t0 = time.perf_counter()
            resp = st.client.put(services.endpoints_key("default", m["name"]), json.dumps(eps))
            changed.append((pw.wait(wk, resp.header.revision) - t0) * 1000)
        st.cancel_watch(pw.wid)
        close_store(st)

    def summ(ms):
        return {"n": len(ms), "p50_ms": median(ms), "p99_ms": pct(ms, 99), "max_ms": max(ms)}

    res = {"mode": mode, "workers": workers, "service_created": summ(created), "endpoints_changed": summ(changed)}
    log(f"latency {mode} {workers} workers: created p50 {res['service_created']['p50_ms']:.0f} p99 "
        f"{res['service_created']['p99_ms']:.0f} ms; endpoints p50 {res['endpoints_changed']['p50_ms']:.0f} "
        f"p99 {res['endpoints_changed']['p99_ms']:.0f} ms")
    return res


def dataplane(seconds: int, repeat: int) -> dict:
    """iperf3 through a ClusterIP (pod on kub-node-2 -> service -> pod on kub-node-1) in an
    iptables lab and an nftables lab, both up at once, rounds alternating."""
    from bench.dataplane import in_lab, iperf

    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with in_lab("benchdpipt", "iptables") as ipt, in_lab("benchdpnft", "nftables") as nf:
        runs = {"iptables": [], "nftables": []}
        for _ in range(repeat):
            for mode, paths in (("iptables", ipt), ("nftables", nf)):
                srv, cli, addr = paths["cluster_ip_gbps"]
                runs[mode].append(iperf(srv, cli, addr, seconds))
    out = {"seconds": seconds, "repeat": repeat, "runs": runs, "uptime_before": up0,
           "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "iptables_cluster_ip_gbps": median(runs["iptables"]), "nftables_cluster_ip_gbps": median(runs["nftables"])}
    log(f"ClusterIP iperf3: iptables {out['iptables_cluster_ip_gbps']:.2f}, nftables "
        f"{out['nftables_cluster_ip_gbps']:.2f} Gbit/s")
    return out


def run(sizes: list[int], workers: int, changes: int, with_latency: bool = True) -> dict:
    out = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    out["sync"] = [sync(n, 1) for n in sizes]
    if with_latency:
        out["latency"] = [latency(workers, changes, m) for m in ("iptables", "nftables")]
        out["dataplane"] = dataplane(5, 3)
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    log(f"load: {out['uptime_before']} -> {out['uptime_after']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N=1000 once, 3 workers, 10 changes")
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--latency-workers", type=int, default=None)
    ap.add_argument("--changes", type=int, default=None)
    ap.add_argument("--no-latency", action="store_true")
    a = ap.parse_args()
    sizes = [int(x) for x in (a.sizes or ("1000" if a.quick else "1000,10000")).split(",")]
    out = run(sizes, a.latency_workers or (3 if a.quick else 10), a.changes or (10 if a.quick else 50),
              not a.no_latency)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
