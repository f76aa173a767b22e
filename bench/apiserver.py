"""The API server: listing 1,000 pods with kubectl and with netlab, and watch-event latency.

In a bench lab (default shape, no workloads):
  - 1,000 Pod objects are written to namespace `bench` (bound to a node name no kubelet
    owns, so they stay objects: what is measured is the API path, not pod creation);
  - `kubectl get pods -n bench` (server-side Table, two chunks of 500) and
    `netlab get pods -n bench` (the CLI reading etcd itself) are timed, each `repeat` times;
  - watch latency: one watch stream on /api/v1/namespaces/bench/pods (the HTTPS chunked
    stream kubectl and client-go read) and, as the floor, one etcd watch on the same prefix
    in this process; each of `changes` label writes to etcd is timed from just before the
    write until the event line arrives on each.
Medians side by side; the load average is recorded by bench.run.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import ssl
import threading
import time

import yaml

from bench.common import PY, close_store, lab, log, median, netlab, pct, sh, store

NS = "bench"
NOBODY = "kub-node-99"  # a node name no kubelet of the lab owns: the pods stay objects


def _kubeconfig(name: str) -> tuple[str, dict]:
    cfg = yaml.safe_load(netlab("kubeconfig", "--lab", name).stdout)
    path = f"/tmp/netlabbench-{name}.kubeconfig"
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    os.chmod(path, 0o600)
    return path, cfg


def _timed(cmd: list[str], env: dict, repeat: int) -> tuple[float, int]:
    times, lines = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = sh(*cmd, env=env)
        times.append(time.perf_counter() - t0)
        lines = len(p.stdout.splitlines())
    return median(times), lines


def _pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i:04d}", "namespace": NS, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "netlab/hello"}], "nodeName": NOBODY}}


class StreamWatch:
    """One API watch stream read line by line in a thread; arrival times per pod name."""

    def __init__(self, server: str, token: str, ca: str, rv: int):
        host, port = server.removeprefix("https://").split(":")
        ctx = ssl.create_default_context(cafile=ca)
        self.conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
        self.conn.request("GET", f"/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={rv}",
                          headers={"Authorization": f"Bearer {token}"})
        self.resp = self.conn.getresponse()
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.resp:
                ev = json.loads(line)
                self.q.put((time.perf_counter(), ev["object"]["metadata"]["name"],
                            ev["object"]["metadata"].get("labels", {}).get("gen")))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    def wait(self, name: str, gen: str, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while True:
            t, n, g = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            if n == name and g == gen:
                return t


def run(n: int = 1000, repeat: int = 5, changes: int = 100) -> dict:
    name = "benchapi"
    out: dict = {"pods": n, "repeat": repeat, "changes": changes}
    with lab(name, None):
        kc, cfg = _kubeconfig(name)
        st = store(name)
        try:
            from netlab.api import pods

            t0 = time.perf_counter()
            for i in range(n):
                pods.create_pod(st, _pod(i))
            out["write_s"] = round(time.perf_counter() - t0, 2)
            env = {"KUBECONFIG": kc, "KUBECACHEDIR": f"/tmp/netlabbench-{name}-cache"}
            kubectl = shutil.which("kubectl")
            sh(kubectl, "get", "ns", env=env)  # discovery once (kubectl caches it, as a user's would)
            k_s, k_lines = _timed([kubectl, "get", "pods", "-n", NS], env, repeat)
            kw_s, _ = _timed([kubectl, "get", "pods", "-n", NS, "-o", "wide"], env, repeat)
            kj_s, _ = _timed([kubectl, "get", "pods", "-n", NS, "-o", "json"], env, repeat)
            n_s, n_lines = _timed([PY, "-m", "netlab", "get", "pods", "-n", NS], {"NETLAB_LAB": name}, repeat)
            out["list"] = {"kubectl_table_s": round(k_s, 3), "kubectl_wide_s": round(kw_s, 3),
                           "kubectl_json_s": round(kj_s, 3), "netlab_s": round(n_s, 3),
                           "kubectl_lines": k_lines, "netlab_lines": n_lines}
            log(f"list {n} pods: kubectl {k_s:.2f} s, netlab {n_s:.2f} s")

            # watch latency: API stream vs a raw etcd watch in this process
            ca = f"/var/lib/netlab/{name}/pki/ca.crt"
            token = cfg["users"][0]["user"]["token"]
            rv = st.revision()
            api = StreamWatch(cfg["clusters"][0]["cluster"]["server"], token, ca, rv)
            etcd_q: queue.Queue = queue.Queue()

            def on_etcd(resp) -> None:
                now = time.perf_counter()
                if isinstance(resp, Exception):
                    return
                for ev in resp.events:
                    try:
                        v = json.loads(ev.value)
                        etcd_q.put((now, v["metadata"]["name"], v["metadata"]["labels"].get("gen")))
                    except (ValueError, KeyError, TypeError):
                        continue
            wid = st.add_watch_prefix_callback(f"/registry/pods/{NS}/", on_etcd, start_revision=rv + 1)
            api_ms, etcd_ms = [], []
            time.sleep(0.5)
            for i in range(changes):
                pname = f"bench-{i % n:04d}"
                key = f"/registry/pods/{NS}/{pname}"
                item = st.get(key)
                obj = item.value
                obj["metadata"]["labels"]["gen"] = str(i)
                t0 = time.perf_counter()
                st.put(key, obj)
                t_api = api.wait(pname, str(i))
                while True:
                    t_e, nm, g = etcd_q.get(timeout=10)
                    if nm == pname and g == str(i):
                        break
                api_ms.append((t_api - t0) * 1000)
                etcd_ms.append((t_e - t0) * 1000)
            st.cancel_watch(wid, on_etcd)
            out["watch"] = {"api_p50_ms": round(median(api_ms), 2), "api_p99_ms": round(pct(api_ms, 99), 2),
                            "etcd_p50_ms": round(median(etcd_ms), 2), "etcd_p99_ms": round(pct(etcd_ms, 99), 2)}
            log(f"watch: API p50 {median(api_ms):.1f} ms, etcd p50 {median(etcd_ms):.1f} ms")
        finally:
            close_store(st)
            os.unlink(kc)
            shutil.rmtree(f"/tmp/netlabbench-{name}-cache", ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
