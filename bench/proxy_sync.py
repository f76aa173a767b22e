"""Proxy sync on one node: netlab's kube-proxy applier against a raw iptables-legacy-restore.

Run inside a scratch network namespace (bench.run uses `nsenter --net=...`); every table
written here is that namespace's. Two phases, selected by argv[1]:

  raw N        iptables-legacy-restore of the full rule text for N services x 2 endpoints
               into this (empty) namespace: the baseline.
  netlab N     netlab.agent.proxy.ProxyRole's own sync path (the code the node agent runs):
               one full sync of N services, then one service added and removed (partial
               syncs), each timed. No etcd: the role's inputs are fed as its cache would.

Prints one JSON object.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time


def service(i: int) -> tuple[dict, dict]:
    """Service i and its Endpoints (2 pods), shaped as they are in etcd."""
    name = f"svc{i}"
    ip = f"192.1.{i // 250}.{i % 250 + 1}"
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "ClusterIP", "clusterIP": ip,
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "default"},
           "subsets": [{"addresses": [{"ip": f"10.1.{1 + (2 * i) // 250 % 250}.{(2 * i) % 250 + 2}"},
                                      {"ip": f"10.1.{1 + (2 * i + 1) // 250 % 250}.{(2 * i + 1) % 250 + 2}"}],
                        "ports": [{"port": 8080, "protocol": "TCP"}]}]}
    return svc, eps


def inputs(n: int) -> dict:
    from netlab.agent.proxy import service_ports

    return {("default", f"svc{i}"): service_ports(*service(i)) for i in range(n)}


def raw(n: int) -> dict:
    from netlab.agent.proxy import full_text

    t0 = time.perf_counter()
    text, _ = full_text(inputs(n).values(), {t: set() for t in ("filter", "nat")})
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["iptables-legacy-restore"], input=text, text=True, check=True)
    t_restore = time.perf_counter() - t0
    rules = subprocess.run(["iptables-legacy-save", "-t", "nat"], capture_output=True, text=True,
                           check=True).stdout.count("\n-A ")
    # One service added, then removed, as the same partial text netlab writes: with legacy
    # iptables every restore still reads and rewrites the whole table in the kernel.
    from netlab.agent.proxy import partial_text

    one = _one(n)
    t = {}
    for what, change in (("add_one_s", (None, one)), ("remove_one_s", (one, None))):
        part, _, _ = partial_text([change])
        t0 = time.perf_counter()
        subprocess.run(["iptables-legacy-restore", "--noflush"], input=part, text=True, check=True)
        t[what] = time.perf_counter() - t0
    return {"n": n, "restore_s": t_restore, "generate_s": t_gen, "bytes": len(text), "nat_rules": rules, **t}


class _Agent:
    """What ProxyRole reads from its agent when it syncs (no store: nothing is reported)."""

    class node:
        name = "bench"

    stopping = threading.Event()
    store = None


def netlab(n: int) -> dict:
    from netlab.agent.proxy import ProxyRole

    role = ProxyRole(_Agent())
    base = inputs(n)
    t0 = time.perf_counter()
    role._full_sync(dict(base), 1)
    t_full = time.perf_counter() - t0
    full_info = dict(role.last_sync)
    extra = ("default", f"svc{n}")
    add = {extra: _one(n)}
    t0 = time.perf_counter()
    role._partial_sync(add, 2)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    role._partial_sync({extra: None}, 3)
    t_del = time.perf_counter() - t0
    # An endpoint of one service changes (a pod replaced): also a partial sync.
    svc, eps = service(0)
    eps["subsets"][0]["addresses"][0]["ip"] = "10.1.250.250"
    from netlab.agent.proxy import service_ports

    t0 = time.perf_counter()
    role._partial_sync({("default", "svc0"): service_ports(svc, eps)}, 4)
    t_ep = time.perf_counter() - t0
    save = subprocess.run(["iptables-legacy-save", "-t", "nat"], capture_output=True, text=True,
                          check=True).stdout
    return {"n": n, "full_sync_s": t_full, "full_sync_info": full_info,
            "add_one_s": t_add, "remove_one_s": t_del, "endpoint_change_s": t_ep,
            "nat_rules": save.count("\n-A "), "ok": "10.1.250.250:8080" in save and f"svc{n} " not in save}


def _one(i: int):
    from netlab.agent.proxy import service_ports

    return service_ports(*service(i))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    phase, n = sys.argv[1], int(sys.argv[2])
    print(json.dumps(raw(n) if phase == "raw" else netlab(n)))
