"""`netlab up` of the default lab (renamed benchup): wall time until every seed curl answers.

The curls are the seed's: the ClusterIP and both pod IPs from each worker, the NodePort on
each worker's IP from the router / outside client (the underlay namespace). Each round
starts from nothing (`down --purge` before), and `netlab down --purge` is timed too.
"""

from __future__ import annotations

import subprocess
import time

from bench.common import PY, in_ns, lab_file, log, median, netlab

LAB = "benchup"


def curls(pod_ips: list[str]) -> list[tuple[str, str]]:
    """(namespace, URL) pairs, as the seed walkthrough runs them. The pod IPs are whatever the
    scheduler and IPAM gave this time (the seed's 10.1.1.4 / 10.1.79.11 only if one pod
    landed on each worker)."""
    from netlab import names

    n1, n2, net = (names.node_ns(LAB, "kub-node-1"), names.node_ns(LAB, "kub-node-2"), names.underlay_ns(LAB))
    out = []
    for ns in (n1, n2):
        out += [(ns, "http://192.1.47.211/"), (ns, "http://192.1.88.35/")]
        out += [(ns, f"http://{ip}/") for ip in pod_ips]
    out += [(net, "http://172.23.100.5:31295/"), (net, "http://172.23.100.6:31295/")]
    return out


def _pod_ips() -> list[str]:
    from bench.common import store

    st = store(LAB)
    try:
        return sorted(i.value["status"]["podIP"] for i in st.list("/registry/pods/default/")
                      if isinstance(i.value, dict) and (i.value.get("status") or {}).get("podIP"))
    finally:
        st.close()


def once() -> dict:
    path = lab_file(LAB)
    netlab("down", "--lab", LAB, "--purge", check=False)
    try:
        t0 = time.perf_counter()
        netlab("up", "-f", str(path), timeout=300)
        t_cmd = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        ips = _pod_ips()
        while len(ips) < 2:  # the deployment's two pods have their addresses
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods of my-nginx8 have no IPs 120 s after up: {ips}")
            time.sleep(0.02)
            ips = _pod_ips()
        pending = all_curls = curls(ips)
        while pending:
            procs = [(c, subprocess.Popen(in_ns(c[0], "curl", "-s", "-o", "/dev/null", "-m", "1", c[1])))
                     for c in pending]
            pending = [c for c, p in procs if p.wait() != 0]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"seed curls still failing 120 s after up: {pending}")
        t_ready = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        netlab("down", "--lab", LAB, "--purge", check=False)
        t_down = time.perf_counter() - t0
    return {"up_cmd_s": t_cmd, "up_s": t_ready, "down_s": t_down,
            "curls": [f"{ns.split('-', 1)[1]}: curl {url}" for ns, url in all_curls]}


def run(repeat: int) -> dict:
    runs = [once() for _ in range(repeat)]
    out = {k: median([r[k] for r in runs]) for k in ("up_cmd_s", "up_s", "down_s")}
    out["runs"] = runs
    out["curls"] = runs[-1]["curls"]
    from bench import profile

    if profile.available():
        netlab("down", "--lab", LAB, "--purge", check=False)
        try:
            out["profile"] = profile.record_cmd([PY, "-m", "netlab", "up", "-f", str(lab_file(LAB))])
            out["profile"]["what"] = "the `netlab up` CLI process, idle (waiting) stacks included"
        finally:
            netlab("down", "--lab", LAB, "--purge", check=False)
    log(f"up: command {out['up_cmd_s']:.2f}s, curls answer after {out['up_s']:.2f}s, down {out['down_s']:.2f}s")
    return out
