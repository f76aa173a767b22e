"""nftables proxy sync on one node: netlab's nftables applier against raw `nft -f` loads.

Run inside a scratch network namespace (bench.nft enters one with nsenter). Phases (argv[1]):

  raw N      `nft -f` of the full table for N services x 2 endpoints, in both endpoint-
             choice forms (the vmap form only up to VMAP_MAX services) (kube-proxy's anonymous `numgen ... vmap` per service, and the
             rule form), from an empty namespace; then one service added, removed and one
             endpoint changed as `nft -f` delta files on the rule-form table (what a
             straightforward applier would do).
  netlab N   netlab.agent.nft_proxy.NftProxyRole's own sync path: one full sync, then one
             service added, removed, one endpoint changed (partial syncs), each timed.

Same services as bench/proxy_sync.py. Prints one JSON object.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from bench.proxy_sync import _Agent, _one, inputs, service

VMAP_MAX = 2000


def _nft(text: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
    return time.perf_counter() - t0


def raw(n: int) -> dict:
    from netlab.plan import nft_rules as nr

    base = inputs(n)
    out = {"n": n}
    # kube-proxy's vmap form takes minutes above a few thousand services (195 s at 10,000
    # in one run): measured only up to VMAP_MAX so that a bench run stays short.
    for form, vmap in (("vmap", True), ("rules", False)):
        if vmap and n > VMAP_MAX:
            out["load_vmap_s"] = None
            continue
        t0 = time.perf_counter()
        text = nr.full_text(nr.contribution(v, vmap=vmap) for v in base.values())
        out[f"generate_{form}_s"] = time.perf_counter() - t0
        out[f"load_{form}_s"] = _nft(text)
        out[f"bytes_{form}"] = len(text)
        if vmap:
            _nft("delete table ip kube-proxy\n")  # the rule form starts from an empty namespace too
    one = nr.contribution(_one(n), vmap=False)
    svc, eps = service(0)
    old0 = nr.contribution(base[("default", "svc0")], vmap=False)
    eps["subsets"][0]["addresses"][0]["ip"] = "10.1.250.250"
    from netlab.agent.proxy import service_ports

    new0 = nr.contribution(service_ports(svc, eps), vmap=False)
    out["nft_f_add_one_s"] = _nft(nr.delta_text([(None, one)]))
    out["nft_f_remove_one_s"] = _nft(nr.delta_text([(one, None)]))
    out["nft_f_endpoint_change_s"] = _nft(nr.delta_text([(old0, new0)]))
    return out


def netlab(n: int) -> dict:
    from netlab.agent.nft_proxy import NftProxyRole
    from netlab.agent.proxy import service_ports

    role = NftProxyRole(_Agent())
    base = inputs(n)
    t0 = time.perf_counter()
    role._full_sync(dict(base), 1)
    t_full = time.perf_counter() - t0
    extra = ("default", f"svc{n}")
    t0 = time.perf_counter()
    role._partial_sync({extra: _one(n)}, 2)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    role._partial_sync({extra: None}, 3)
    t_del = time.perf_counter() - t0
    svc, eps = service(0)
    eps["subsets"][0]["addresses"][0]["ip"] = "10.1.250.250"
    t0 = time.perf_counter()
    role._partial_sync({("default", "svc0"): service_ports(svc, eps)}, 4)
    t_ep = time.perf_counter() - t0
    listing = subprocess.run(["nft", "-j", "list", "table", "ip", "kube-proxy"], capture_output=True,
                             text=True, check=True).stdout
    ok = '"addr": "10.1.250.250", "port": 8080' in listing and f"/svc{n}/" not in listing
    return {"n": n, "full_sync_s": t_full, "form": "vmap" if role._vmap else "rules",
            "add_one_s": t_add, "remove_one_s": t_del, "endpoint_change_s": t_ep, "ok": ok}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    phase, n = sys.argv[1], int(sys.argv[2])
    print(json.dumps(raw(n) if phase == "raw" else netlab(n)))
