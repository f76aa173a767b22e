"""The benchmark suite's one entry point: run sections, write JSON, regenerate the report.

    python -m bench.run [--quick] [--only pods,proxy,latency,dataplane,up] [--no-report]

Sections (each side by side with its baseline, measured in the same run):
  pods       create/delete N pods (100 over 3 workers, 1,000 over 10 and over 4); baselines: the kernel floor
             (bench/floor_netns.py) and Mininet (bench/mininet_hosts.py)
  proxy      full proxy sync at 1,000 and 10,000 services x 2 endpoints, one service
             added/removed at 10,000; baseline: iptables-legacy-restore of the same text
  latency    etcd write -> rules/routes on every node, p50/p99, 3 and 10 workers
  dataplane  iperf3 pod->pod (one node, across nodes), pod->ClusterIP; baselines: a hand-built
             veth pair and veth+VXLAN pair
  up         `netlab up` of the default lab until every seed curl answers; `netlab down`
  apiserver  `kubectl get pods` vs `netlab get pods` with 1,000 pods; watch-event latency
             (etcd write -> event on the API's watch stream; baseline: a raw etcd watch)
  dns        Service created/deleted -> answer/NXDOMAIN from the cluster DNS, p50/p99
             (baseline: a raw etcd watch seeing the same writes)
  nft        kube-proxy's nftables mode (bench/nft.py): full sync and one change at 1,000 and
             10,000 services against raw `nft -f` and the iptables mode in the same run;
             programming latency with 10 workers in an iptables and an nftables lab
Results go to bench/results/<section>.json; docs/performance.md is rebuilt from all of them.
--quick: N = 100 only, fewer repetitions, 3 workers only. Needs root (see scripts/bench.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.common import ROOT, log

RESULTS = ROOT / "bench" / "results"
SECTIONS = ("pods", "proxy", "latency", "dataplane", "up", "apiserver", "dns", "nft")


def machine() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return ""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(), "mem_mib": mem,
            "python": platform.python_version(), "iptables": first(["iptables-legacy", "--version"]),
            "iperf3": first(["iperf3", "--version"]), "load_before": os.getloadavg()[0]}


def commit() -> str:
    p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "netlab"], capture_output=True, text=True)
    return p.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_section(name: str, quick: bool) -> dict:
    if name == "pods":
        from bench import pods
        return pods.run(quick)
    if name == "proxy":
        from bench import proxy
        return proxy.run([1000, 10000], quick)
    if name == "latency":
        from bench import latency
        runs = [(3, 100)] if quick else [(3, 100), (10, 100)]
        return {"runs": [latency.run(w, c) for w, c in runs]}
    if name == "dataplane":
        from bench import dataplane
        return dataplane.run(seconds=3 if quick else 5, repeat=1 if quick else 3)
    if name == "up":
        from bench import up
        return up.run(repeat=1 if quick else 3)
    if name == "apiserver":
        from bench import apiserver
        return apiserver.run(n=100 if quick else 1000, repeat=3 if quick else 5, changes=30 if quick else 100)
    if name == "dns":
        from bench import dns
        return dns.run(n=20 if quick else 40)
    if name == "nft":
        from bench import nft
        return nft.run([1000] if quick else [1000, 10000], 3 if quick else 10, 10 if quick else 50)
    raise SystemExit(f"bench: unknown section {name!r} (choose from {', '.join(SECTIONS)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 100 only, fewer repetitions")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--no-report", action="store_true", help="do not rebuild docs/performance.md")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        print(f"bench: --only: unknown section {bad[0]!r} (choose from {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench: must run as root (it builds namespaces, labs and iptables rules)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python -m bench.run" + (" --quick" if args.quick else "") + \
        ("" if only == list(SECTIONS) else f" --only {','.join(only)}")
    failed = []
    for name in only:
        log(f"section {name} ...")
        t0 = time.monotonic()
        meta = {"section": name, "quick": args.quick, "command": cmd, "commit": commit(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
        try:
            data = run_section(name, args.quick)
        except Exception:  # noqa: BLE001 - one failed section must not lose the others
            log(f"section {name} FAILED:\n{traceback.format_exc()}")
            failed.append(name)
            continue
        meta["seconds"] = round(time.monotonic() - t0, 1)
        meta["machine"]["load_after"] = os.getloadavg()[0]
        meta["data"] = data
        (RESULTS / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        log(f"section {name} done in {meta['seconds']} s -> {RESULTS / (name + '.json')}")
    if not args.no_report:
        from bench import report
        out = report.write(RESULTS, ROOT / "docs")
        log(f"report: {out}")
    if failed:
        log(f"failed sections: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
