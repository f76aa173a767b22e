"""Proxy sync section: netlab's kube-proxy applier vs iptables-legacy-restore, per N.

Each measurement runs bench/proxy_sync.py in a fresh scratch namespace (empty tables), so
the baseline and netlab start from the same state; medians over `repeat` runs.
"""

from __future__ import annotations

from bench.common import PY, in_ns, json_out, log, median, scratch_ns


def once(phase: str, n: int) -> dict:
    with scratch_ns("px") as (ns,):
        return json_out(*in_ns(ns, PY, "-m", "bench.proxy_sync", phase, str(n)), timeout=900)


def run(sizes: list[int], quick: bool) -> dict:
    repeat = 1 if quick else 3
    out = {"repeat": repeat, "sizes": []}
    for n in sizes:
        raws = [once("raw", n) for _ in range(repeat)]
        nets = [once("netlab", n) for _ in range(repeat)]
        if not all(r["ok"] for r in nets):
            raise RuntimeError(f"netlab's proxy left wrong rules at N={n}")
        row = {
            "services": n, "endpoints_per_service": 2, "nat_rules": raws[0]["nat_rules"],
            "bytes": raws[0]["bytes"],
            "raw_restore_s": median([r["restore_s"] for r in raws]),
            "generate_s": median([r["generate_s"] for r in raws]),
            "raw_add_one_s": median([r["add_one_s"] for r in raws]),
            "raw_remove_one_s": median([r["remove_one_s"] for r in raws]),
            "netlab_full_sync_s": median([r["full_sync_s"] for r in nets]),
            "netlab_add_one_s": median([r["add_one_s"] for r in nets]),
            "netlab_remove_one_s": median([r["remove_one_s"] for r in nets]),
            "netlab_endpoint_change_s": median([r["endpoint_change_s"] for r in nets]),
            "runs": {"raw": raws, "netlab": nets},
        }
        row["full_sync_ratio"] = row["netlab_full_sync_s"] / row["raw_restore_s"]
        out["sizes"].append(row)
        log(f"proxy N={n}: raw restore {row['raw_restore_s']:.2f}s, netlab full sync "
            f"{row['netlab_full_sync_s']:.2f}s ({row['full_sync_ratio']:.1f}x), add one "
            f"{row['netlab_add_one_s'] * 1000:.0f} ms (raw {row['raw_add_one_s'] * 1000:.0f} ms)")
    from bench import profile

    if profile.available():
        with scratch_ns("px") as (ns,):
            out["profile"] = profile.record_cmd([PY, "-m", "bench.proxy_sync", "netlab", str(sizes[-1])],
                                                prefix=in_ns(ns))
        out["profile"]["what"] = f"bench.proxy_sync netlab {sizes[-1]} (full sync, add, remove; idle included)"
    return out
