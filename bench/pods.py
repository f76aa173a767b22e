"""Pods section: N pods over W workers against the kernel floor and Mininet, same run.

Shapes (issue 16): N = 100 over 3 workers and N = 1,000 over 10 workers (100 per node, under
kubelet's default maxPods of 110), plus N = 1,000 over 4 workers for continuity with older
runs. The floor and Mininet spread the same N over the same number of bridges.

netlab: a Deployment of N replicas (container netlab/hello, the seed's app) applied with
`netlab apply -f --wait` (returns when every pod runs and is ready), then `netlab delete
deployment` and a wait until every pod's namespace and process is gone. Memory: RSS of
each pod's processes (pause + container, found by their network namespace), VmHWM of the
agents, max RSS of the CLI. Baselines: bench/floor_netns.py (scratch namespace) and
bench/mininet_hosts.py (Debian's python3, inside a scratch namespace).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from bench.common import PY, SYS_PY, in_ns, json_out, lab, log, scratch_ns, sh, status_kib

LAB = "benchpods"
SHAPES_QUICK = [(100, 3)]
SHAPES = [(100, 3), (1000, 10), (1000, 4)]


def floor(n: int, workers: int) -> dict:
    with scratch_ns("floor") as (ns,):
        return json_out(*in_ns(ns, PY, str(Path(__file__).with_name("floor_netns.py")), str(n), str(workers),
                               "nlbfloor"), timeout=1800)


def mininet(n: int, workers: int) -> dict:
    with scratch_ns("mn") as (ns,):
        # `ip netns exec` as a person would run it; the script refuses any other namespace.
        r = json_out("ip", "netns", "exec", ns, SYS_PY, str(Path(__file__).with_name("mininet_hosts.py")),
                     str(n), str(workers), ns, timeout=3600)
    r["rss_per_pod_kib"] = r.pop("rss_per_host_kib", None)
    return r


def _peak_cli(*args: str, timeout: float) -> tuple[float, int]:
    """Run the netlab CLI; (seconds, its max RSS in KiB) measured by a tiny wrapper process."""
    wrapper = ("import resource,subprocess,sys,time;t=time.perf_counter();"
               "rc=subprocess.run(sys.argv[1:]).returncode;dt=time.perf_counter()-t;"
               "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(rc)")
    out = sh(PY, "-c", wrapper, PY, "-m", "netlab", *args, timeout=timeout).stdout.split()
    return float(out[-2]), int(out[-1])


def _netns_inode_map() -> dict[int, list[int]]:
    by_ino: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                by_ino.setdefault(os.stat(f"/proc/{e}/ns/net").st_ino, []).append(int(e))
            except OSError:
                pass
    return by_ino


def _pod_namespaces() -> list[str]:
    return [n for n in os.listdir("/run/netns") if n.startswith(f"{LAB}-pod-")]


def netlab_pods(n: int, workers: int, prof: bool = False) -> dict:
    from netlab.kernel import proc
    from netlab.lab import running

    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench", "namespace": "default"},
           "spec": {"replicas": n, "selector": {"matchLabels": {"app": "bench"}},
                    "template": {"metadata": {"labels": {"app": "bench"}},
                                 "spec": {"containers": [{"name": "hello", "image": "netlab/hello",
                                                          "ports": [{"containerPort": 80}]}]}}}}
    with lab(LAB, workers) as path:
        manifest = path.with_name("bench-deploy.yaml")
        manifest.write_text(yaml.safe_dump(doc))
        env = {"NETLAB_LAB": LAB}
        os.environ.update(env)
        if prof:
            from bench import profile

            pids = [running.agent_pid(LAB, node.name) for node in running.load_running_lab(LAB).nodes]
            h = profile.start_pids([p for p in pids if p])
            cli = profile.record_cmd([PY, "-m", "netlab", "apply", "-f", str(manifest), "--timeout", str(max(120, n))])
            agents = h.stop()
            cli["what"] = f"`netlab apply` of {n} pods: the CLI process, idle (waiting) stacks included"
            agents["what"] = f"the same {n} pods: all agents (CPU only)"
            return {"cli": cli, "agents": agents}
        t_create, cli_rss = _peak_cli("apply", "-f", str(manifest), "--timeout", str(max(120, n)),
                                      timeout=max(300, 3 * n))
        nss = _pod_namespaces()
        if len(nss) != n:
            raise RuntimeError(f"{len(nss)} pod namespaces after apply, expected {n}")
        by_ino = _netns_inode_map()
        pod_pids = [p for ns in nss for p in by_ino.get(os.stat(f"/run/netns/{ns}").st_ino, [])]
        rss = sum(status_kib(p) for p in pod_pids)
        agents = {node.name: running.agent_pid(LAB, node.name) for node in running.load_running_lab(LAB).nodes}
        t0 = time.perf_counter()
        sh(PY, "-m", "netlab", "delete", "deployment", "bench", timeout=max(300, 3 * n), check=False)
        deadline = time.monotonic() + max(120, n / 2)
        # Gone = namespace unpinned and every pod process exited (a zombie waiting for its
        # parent to reap it counts as exited).
        while _pod_namespaces() or any(proc.pid_alive(p) for p in pod_pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(_pod_namespaces())} pods still there after delete")
            time.sleep(0.02)
        t_delete = time.perf_counter() - t0
        hwm_after = {k: status_kib(p, "VmHWM") for k, p in agents.items() if p}
    return {"n": n, "create_s": t_create, "delete_s": t_delete, "create_per_pod_ms": t_create / n * 1000,
            "delete_per_pod_ms": t_delete / n * 1000, "processes_per_pod": len(pod_pids) / n,
            "rss_per_pod_kib": rss / n, "peak_rss_agent_kib": max(hwm_after.values()),
            "peak_rss_agents_total_kib": sum(hwm_after.values()), "peak_rss_agents_kib": hwm_after,
            "peak_rss_cli_kib": cli_rss}


def run(quick: bool) -> dict:
    out = {"sizes": []}
    for n, workers in SHAPES_QUICK if quick else SHAPES:
        row = {"n": n, "workers": workers}
        for who, fn in (("floor", floor), ("netlab", netlab_pods), ("mininet", mininet)):
            row[who] = fn(n, workers)
            log(f"pods N={n}/{workers} workers {who}: create {row[who]['create_s']:.2f}s, "
                f"delete {row[who]['delete_s']:.2f}s")
        out["sizes"].append(row)
    from bench import profile

    if profile.available():
        out["profile"] = netlab_pods(100, 3, prof=True)
    return out
