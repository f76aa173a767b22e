"""Renders bench/results/*.json into docs/performance.md (tables) and PNG plots.

Pure: reads JSON, writes markdown; matplotlib is imported only to draw the plots and is
optional (bench/requirements.txt), so rendering works (and is unit-tested) without it.
Missing sections or figures are shown as "—" rather than failing. The hand-written
analysis (what the profiles show) lives in bench/notes.md and is included verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOTES = Path(__file__).resolve().parent / "notes.md"
DASH = "—"


def load(results: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(results).glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except ValueError:
            continue
        out[doc.get("section", p.stem)] = doc
    return out


def _get(d: Any, *path, default=None):
    for k in path:
        if isinstance(d, dict) and k in d:
            d = d[k]
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return default
    return d


def fmt(v: Any, unit: str = "", digits: int | None = None) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if digits is None:
            digits = 0 if isinstance(v, int) or abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3
        s = f"{v:,.{digits}f}"
    else:
        s = str(v)
    return f"{s} {unit}".strip() if unit else s


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return DASH
    return f"{a / b:.2f}×"


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def met(ok: bool | None) -> str:
    return DASH if ok is None else ("**met**" if ok else "**missed**")


# --------------------------------------------------------------------------- sections
def _pods_row(res: dict, n: int, workers: int) -> dict | None:
    # Runs before issue 16 put every size on 4 workers and kept the count once, in "data".
    legacy = _get(res, "pods", "data", "workers")
    return next((r for r in _get(res, "pods", "data", "sizes", default=[])
                 if r.get("n") == n and r.get("workers", legacy) == workers), None)


def goals(res: dict) -> str:
    rows = []
    p1000 = _pods_row(res, 1000, 10) or {}
    mn = _get(p1000, "mininet", "create_s")
    fl = _get(p1000, "floor", "create_s")
    nl = _get(p1000, "netlab", "create_s")
    rows.append(["pods vs kernel floor, N = 1,000 over 10 workers", "≤ 2× floor", fmt(nl, "s"), f"floor {fmt(fl, 's')}",
                 ratio(nl, fl), met(None if not (nl and fl) else nl / fl <= 2)])
    rows.append(["pods vs Mininet, N = 1,000 over 10 workers", "≥ 3× faster", fmt(nl, "s"), f"Mininet {fmt(mn, 's')}",
                 ratio(mn, nl) + " faster" if nl and mn else DASH, met(None if not (nl and mn) else mn / nl >= 3)])
    td = _get(p1000, "netlab", "delete_s")
    rows.append(["deletion of those 1,000 pods", "≤ 2 s", fmt(td, "s"), f"floor {fmt(_get(p1000, 'floor', 'delete_s'), 's')}",
                 ratio(td, _get(p1000, "floor", "delete_s")), met(None if td is None else td <= 2)])
    rss = _get(p1000, "netlab", "rss_per_pod_kib")
    rows.append(["RSS of pause + container per pod", "≤ 1 MiB", fmt(rss, "KiB"), DASH, DASH,
                 met(None if rss is None else rss <= 1024)])
    p100 = _pods_row(res, 1000, 10) or {}  # 100 pods on each node
    agent = _get(p100, "netlab", "peak_rss_agent_kib")
    rows.append(["largest agent at 100 pods on its node", "≤ 60 MiB", fmt(agent, "KiB"), DASH, DASH,
                 met(None if agent is None else agent <= 60 * 1024)])
    px = next((r for r in _get(res, "proxy", "data", "sizes", default=[]) if r.get("services") == 10000), {})
    fs, rr = px.get("netlab_full_sync_s"), px.get("raw_restore_s")
    rows.append(["proxy full sync, 10,000 services", "≤ 2× raw restore", fmt(fs, "s"), f"restore {fmt(rr, 's')}",
                 ratio(fs, rr), met(None if not (fs and rr) else fs / rr <= 2)])
    one = max([v for v in (px.get("netlab_add_one_s"), px.get("netlab_remove_one_s")) if v is not None], default=None)
    raw1 = max([v for v in (px.get("raw_add_one_s"), px.get("raw_remove_one_s")) if v is not None], default=None)
    rows.append(["one service change at 10,000", "≤ 100 ms", fmt(one and one * 1000, "ms"),
                 f"restore {fmt(raw1 and raw1 * 1000, 'ms')}", ratio(one, raw1), met(None if one is None else one <= 0.1)])
    lat10 = next((r for r in _get(res, "latency", "data", "runs", default=[]) if r.get("workers") == 10), None)
    if lat10:
        worst = max(_get(lat10, k, "p99_ms", default=0) for k in ("service_created", "endpoints_changed", "lease_added"))
        rows.append(["programming latency p99, 10 workers", "≤ 100 ms", fmt(worst, "ms"), DASH, DASH, met(worst <= 100)])
    else:
        rows.append(["programming latency p99, 10 workers", "≤ 100 ms", DASH, DASH, DASH, DASH])
    nf = next((r for r in _get(res, "nft", "data", "sync", default=[]) if r.get("services") == 10000), {})
    if nf:
        fs = nf.get("nft_full_sync_s")
        raw = nf.get("raw_nft_load_rules_s") if nf.get("form") == "rules" else nf.get("raw_nft_load_vmap_s")
        rows.append(["nftables full sync, 10,000 services", "≤ 2× raw `nft -f`, ≤ 1.5 s", fmt(fs, "s"),
                     f"`nft -f` {fmt(raw, 's')}", ratio(fs, raw), met(None if not (fs and raw) else fs / raw <= 2 and fs <= 1.5)])
        one = max(nf.get(k) for k in ("nft_add_one_s", "nft_remove_one_s", "nft_endpoint_change_s"))
        ipt = max(nf.get(k) for k in ("iptables_add_one_s", "iptables_remove_one_s", "iptables_endpoint_change_s"))
        rows.append(["nftables: one change at 10,000 (worst of add, remove, endpoint)", "≤ 20 ms", fmt(_ms(one), "ms"),
                     f"iptables mode {fmt(_ms(ipt), 'ms')}", ratio(one, ipt), met(one <= 0.02)])
    nl = next((r for r in _get(res, "nft", "data", "latency", default=[]) if r.get("mode") == "nftables"), None)
    if nl:
        il = next((r for r in _get(res, "nft", "data", "latency", default=[]) if r.get("mode") == "iptables"), {})
        worst = max(_get(nl, k, "p99_ms", default=0) for k in ("service_created", "endpoints_changed"))
        iw = max([_get(il, k, "p99_ms", default=0) for k in ("service_created", "endpoints_changed")], default=None)
        rows.append([f"nftables programming latency p99, {nl.get('workers')} workers", "≤ 50 ms", fmt(worst, "ms"),
                     f"iptables mode {fmt(iw, 'ms')}", ratio(worst, iw), met(worst <= 50)])
    ndp = _get(res, "nft", "data", "dataplane", default={}) or {}
    if ndp:
        a, b = ndp.get("nftables_cluster_ip_gbps"), ndp.get("iptables_cluster_ip_gbps")
        rows.append(["nftables ClusterIP throughput (iperf3, across nodes)", "≥ iptables mode", fmt(a, "Gbit/s"),
                     f"iptables mode {fmt(b, 'Gbit/s')}", ratio(a, b), met(None if not (a and b) else a >= b)])
    dp = _get(res, "dataplane", "data", default={})
    cross = dp.get("pod_cross_node_gbps")
    # Issue 16: against a hand-built replica of the same path (veth, bridge, VXLAN, underlay);
    # older runs only had the one-hop veth+VXLAN pair.
    base, base_name = (dp.get("replica_gbps"), "replica") if dp.get("replica_gbps") else (dp.get("vxlan_gbps"), "pair")
    rows.append(["cross-node TCP", "≥ 90 % of a hand-built replica", fmt(cross, "Gbit/s"),
                 f"{base_name} {fmt(base, 'Gbit/s')}", ratio(cross, base),
                 met(None if not (cross and base) else cross / base >= 0.9)])
    d = _get(res, "dns", "data", default={})
    worst = max([v for v in (_get(d, "create", "p99_ms"), _get(d, "delete", "p99_ms")) if v is not None], default=None)
    base = max([v for v in (_get(d, "etcd_watch_create", "p99_ms"), _get(d, "etcd_watch_delete", "p99_ms"))
                if v is not None], default=None)
    rows.append(["service change visible in DNS, p99", "≤ 100 ms", fmt(worst, "ms"), f"etcd watch {fmt(base, 'ms')}",
                 ratio(worst, base), met(None if worst is None else worst <= 100)])
    up = _get(res, "up", "data", "up_s")
    rows.append(["`netlab up` of the default lab", "≤ 3 s", fmt(up, "s"), DASH, DASH, met(None if up is None else up <= 3)])
    return table(["what", "goal", "netlab", "baseline (same run)", "ratio", "result"], rows)


def pods_section(res: dict, plots: dict[str, str]) -> str:
    d = _get(res, "pods", "data")
    if not d:
        return "Not measured yet.\n"
    rows = []
    for r in d.get("sizes", []):
        n, w = r["n"], r.get("workers", d.get("workers", 4))
        for who, label in (("netlab", f"netlab ({w} workers)"), ("floor", f"kernel floor (pyroute2, 1 process, {w} bridges)"),
                           ("mininet", f"Mininet (LinuxBridge ×{w}, no controller)")):
            x = r.get(who) or {}
            c, dl = x.get("create_s"), x.get("delete_s")
            rows.append([fmt(n), label, fmt(c, "s"), fmt(c and c / n * 1000, "ms"), fmt(dl, "s"),
                         fmt(dl and dl / n * 1000, "ms"), ratio(c, _get(r, "floor", "create_s")),
                         fmt(x.get("rss_per_pod_kib"), "KiB")])
    out = table(["N", "who", "create", "per pod", "delete", "per pod", "create vs floor", "RSS per pod"], rows)
    peaks = [[f"{fmt(r['n'])} / {r.get('workers', d.get('workers', 4))} workers", fmt(_get(r, "netlab", "peak_rss_agent_kib"), "KiB"),
              fmt(_get(r, "netlab", "peak_rss_agents_total_kib"), "KiB"),
              fmt(_get(r, "netlab", "peak_rss_cli_kib"), "KiB"), fmt(_get(r, "mininet", "peak_rss_mininet_kib"), "KiB")]
             for r in d.get("sizes", [])]
    out += "\nPeak memory of netlab's own processes (VmHWM):\n\n"
    out += table(["N / workers", "largest agent", "all agents", "CLI (`apply --wait`)", "Mininet's python"], peaks)
    if "pods" in plots:
        out += f"\n![per-pod creation time vs N]({plots['pods']})\n"
    return out


def proxy_section(res: dict) -> str:
    d = _get(res, "proxy", "data")
    if not d:
        return "Not measured yet.\n"
    rows = []
    for r in d.get("sizes", []):
        rows.append([fmt(r["services"]), fmt(r.get("nat_rules")), fmt(r.get("bytes", 0) / 1e6, "MB"),
                     fmt(r.get("raw_restore_s"), "s"), fmt(r.get("netlab_full_sync_s"), "s"),
                     ratio(r.get("netlab_full_sync_s"), r.get("raw_restore_s")),
                     fmt(_ms(r.get("raw_add_one_s")), "ms"), fmt(_ms(r.get("netlab_add_one_s")), "ms"),
                     fmt(_ms(r.get("netlab_remove_one_s")), "ms"), fmt(_ms(r.get("netlab_endpoint_change_s")), "ms")])
    return table(["services (×2 endpoints)", "nat rules", "rule text", "raw restore", "netlab full sync", "ratio",
                  "raw: restore of one added service", "netlab: add one", "remove one", "endpoint change"], rows) + \
        f"\nMedians of {d.get('repeat', 1)} run(s), each in a fresh empty namespace; rule text generation alone " + \
        "(pure Python) takes " + ", ".join(f"{fmt(r.get('generate_s'), 's')} at {fmt(r['services'])}" for r in d.get("sizes", [])) + ".\n"


def nft_section(res: dict) -> str:
    d = _get(res, "nft", "data")
    if not d:
        return "Not measured yet.\n"
    rows = []
    for r in d.get("sync", []):
        rows.append([fmt(r["services"]), r.get("form"), fmt(r.get("raw_nft_load_vmap_s"), "s"),
                     fmt(r.get("raw_nft_load_rules_s"), "s"), fmt(r.get("nft_full_sync_s"), "s"),
                     fmt(r.get("iptables_full_sync_s"), "s"),
                     fmt(_ms(r.get("raw_nft_f_add_one_s")), "ms"),
                     " / ".join(fmt(_ms(r.get(k)), "ms") for k in ("nft_add_one_s", "nft_remove_one_s", "nft_endpoint_change_s")),
                     " / ".join(fmt(_ms(r.get(k)), "ms") for k in ("iptables_add_one_s", "iptables_remove_one_s",
                                                                  "iptables_endpoint_change_s"))])
    out = table(["services (×2 endpoints)", "form", "raw `nft -f`, vmap form", "raw `nft -f`, rule form",
                 "netlab nftables full sync", "netlab iptables full sync", "`nft -f` of one added service",
                 "nftables: add / remove / endpoint", "iptables: add / remove / endpoint"], rows)
    lat = d.get("latency") or []
    if lat:
        out += "\n" + table(["mode", "workers", "change", "n", "p50", "p99", "max"], [
            [r["mode"], r["workers"], k.replace("_", " "), _get(r, k, "n"), fmt(_get(r, k, "p50_ms"), "ms"),
             fmt(_get(r, k, "p99_ms"), "ms"), fmt(_get(r, k, "max_ms"), "ms")]
            for r in lat for k in ("service_created", "endpoints_changed")])
    dp = d.get("dataplane") or {}
    if dp:
        out += "\n" + table(["ClusterIP iperf3, pod on kub-node-2 -> pod on kub-node-1", "median", "runs"], [
            [m, fmt(dp.get(f"{m}_cluster_ip_gbps"), "Gbit/s"), ", ".join(fmt(x, digits=2) for x in dp["runs"][m])]
            for m in ("iptables", "nftables")])
        out += (f"\nThroughput: {dp.get('repeat')} alternating rounds of {dp.get('seconds')} s in two labs up at once, "
                f"load average {dp.get('uptime_before', '').split('load average:')[-1].strip()} before; "
                "the spread between rounds is the machine's, not the mode's.\n")
    out += (f"\nOne run (`python -m bench.nft`), each sync phase in a fresh empty namespace; load average "
            f"{d.get('uptime_before', '?').split('load average:')[-1].strip()} before and "
            f"{d.get('uptime_after', '?').split('load average:')[-1].strip()} after. The vmap form is "
            "loaded raw only up to 2,000 services (bench/nft_sync.py's VMAP_MAX).\n")
    return out


def _ms(v):
    return None if v is None else v * 1000


def latency_section(res: dict, plots: dict[str, str]) -> str:
    d = _get(res, "latency", "data")
    if not d:
        return "Not measured yet.\n"
    rows = []
    for r in d.get("runs", []):
        for k, label in (("service_created", "service created → rules on every worker"),
                         ("endpoints_changed", "endpoints changed → rules on every worker"),
                         ("lease_added", "flannel lease added → route on every node"),
                         ("lease_removed", "flannel lease removed → route gone on every node")):
            s = r.get(k) or {}
            rows.append([r.get("workers"), label, s.get("n"), fmt(s.get("p50_ms"), "ms"), fmt(s.get("p99_ms"), "ms"),
                         fmt(s.get("max_ms"), "ms")])
    out = table(["workers", "change", "changes", "p50", "p99", "max"], rows)
    if "latency" in plots:
        out += f"\n![latency distribution]({plots['latency']})\n"
    return out


def dataplane_section(res: dict) -> str:
    d = _get(res, "dataplane", "data")
    if not d:
        return "Not measured yet.\n"
    rows = [["hand-built veth pair, MTU 1450 (baseline)", fmt(d.get("veth_gbps"), "Gbit/s"), DASH],
            ["hand-built veth + VXLAN pair, MTU 1400 (baseline)", fmt(d.get("vxlan_gbps"), "Gbit/s"),
             ratio(d.get("vxlan_gbps"), d.get("veth_gbps")) + " of veth"],
            ["hand-built replica of the cross-node pod path (veth, bridge, VXLAN, underlay; no rules)",
             fmt(d.get("replica_gbps"), "Gbit/s"), ratio(d.get("replica_gbps"), d.get("vxlan_gbps")) + " of VXLAN pair"],
            ["netlab pod → pod, same node (docker0)", fmt(d.get("pod_same_node_gbps"), "Gbit/s"),
             ratio(d.get("pod_same_node_gbps"), d.get("veth_gbps")) + " of veth"],
            ["netlab pod → pod, across nodes (flannel.1)", fmt(d.get("pod_cross_node_gbps"), "Gbit/s"),
             ratio(d.get("pod_cross_node_gbps"), d.get("replica_gbps")) + " of replica"],
            ["netlab pod → ClusterIP → pod on another node", fmt(d.get("cluster_ip_gbps"), "Gbit/s"),
             ratio(d.get("cluster_ip_gbps"), d.get("replica_gbps")) + " of replica"]]
    return table(["path (iperf3, 1 TCP stream)", "throughput", "vs baseline"], rows) + \
        f"\nMedian of {d.get('repeat', 1)} run(s) of {d.get('seconds', '?')} s each (first second omitted).\n"


def up_section(res: dict) -> str:
    d = _get(res, "up", "data")
    if not d:
        return "Not measured yet.\n"
    rows = [["`netlab up -f` (command returns)", fmt(d.get("up_cmd_s"), "s")],
            ["`netlab up` until every seed curl answers", fmt(d.get("up_s"), "s")],
            ["`netlab down --purge`", fmt(d.get("down_s"), "s")]]
    out = table(["step", "wall time (median)"], rows)
    if d.get("curls"):
        out += "\nThe curls waited for: " + ", ".join(f"`{c}`" for c in d["curls"]) + ".\n"
    return out


def _profiles(res: dict) -> list[tuple[str, dict]]:
    out = []
    for key in ("cli", "agents"):
        p = _get(res, "pods", "data", "profile", key)
        if p:
            out.append(("pods", p))
    if _get(res, "proxy", "data", "profile"):
        out.append(("proxy", res["proxy"]["data"]["profile"]))
    for r in _get(res, "latency", "data", "runs", default=[]):
        if r.get("profile"):
            out.append((f"latency, {r.get('workers')} workers", r["profile"]))
    if _get(res, "up", "data", "profile"):
        out.append(("up", res["up"]["data"]["profile"]))
    return out


def profiles_section(res: dict, top: int = 6) -> str:
    profs = _profiles(res)
    if not profs:
        return "No profiles recorded (py-spy not installed).\n"
    rows = []
    for section, p in profs:
        own = "; ".join(f"`{f}` {v}%" for f, v in (p.get("netlab_inclusive") or [])[:top]) or DASH
        leaf = "; ".join(f"`{f}` {v}%" for f, v in (p.get("self") or [])[:top]) or DASH
        rows.append([section, p.get("what", DASH), fmt(p.get("samples")), own, leaf])
    return table(["section", "what was sampled", "samples", "netlab functions on the stack (share of samples)",
                  "where the samples were (top of stack)"], rows)


# --------------------------------------------------------------------------- plots
def plot(res: dict, docs: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made = {}
    sizes = _get(res, "pods", "data", "sizes", default=[])
    if sizes:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for who, label in (("netlab", "netlab pods"), ("floor", "kernel floor"), ("mininet", "Mininet hosts")):
            pts = [(r["n"], r[who]["create_s"] / r["n"] * 1000) for r in sizes if _get(r, who, "create_s")]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.axhline(5, color="grey", ls="--", lw=0.8, label="goal: 5 ms")
        ax.set_xscale("log")
        ax.set_xlabel("N (pods / namespaces / hosts)")
        ax.set_ylabel("creation time per item (ms)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(docs / "performance-pods.png")
        plt.close(fig)
        made["pods"] = "performance-pods.png"
    runs = _get(res, "latency", "data", "runs", default=[])
    if runs:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for r in runs:
            for k, label in (("service_created", "service"), ("endpoints_changed", "endpoints"), ("lease_added", "lease")):
                v = sorted(_get(r, k, "all_ms", default=[]))
                if v:
                    ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=f"{label}, {r['workers']} workers")
        ax.axvline(100, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("etcd write → in place on every node (ms)")
        ax.set_ylabel("fraction of changes")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(docs / "performance-latency.png")
        plt.close(fig)
        made["latency"] = "performance-latency.png"
    return made


def apiserver_section(res: dict) -> str:
    d = _get(res, "apiserver", "data")
    if not d:
        return f"{DASH}\n"
    lst, w = d.get("list") or {}, d.get("watch") or {}
    n = d.get("pods")
    out = table(["listing of " + fmt(n) + " pods", "median wall time", "vs `netlab get pods`"], [
        ["`kubectl get pods` (server-side Table, 2 chunks of 500)", fmt(lst.get("kubectl_table_s"), "s"),
         ratio(lst.get("kubectl_table_s"), lst.get("netlab_s"))],
        ["`kubectl get pods -o wide`", fmt(lst.get("kubectl_wide_s"), "s"), ratio(lst.get("kubectl_wide_s"), lst.get("netlab_s"))],
        ["`kubectl get pods -o json`", fmt(lst.get("kubectl_json_s"), "s"), ratio(lst.get("kubectl_json_s"), lst.get("netlab_s"))],
        ["`netlab get pods` (the CLI reads etcd itself)", fmt(lst.get("netlab_s"), "s"), "1.00×"],
    ])
    out += "\n" + table(["watch event after an etcd write", "p50", "p99"], [
        ["API server watch stream (HTTPS, what kubectl/client-go read)", fmt(w.get("api_p50_ms"), "ms"), fmt(w.get("api_p99_ms"), "ms")],
        ["raw etcd watch in the writing process (floor)", fmt(w.get("etcd_p50_ms"), "ms"), fmt(w.get("etcd_p99_ms"), "ms")],
    ])
    m = _get(res, "apiserver", "machine") or {}
    out += (f"\nMeasured on {m.get('cpus', '?')} CPUs ({m.get('cpu', '?')}), Linux {m.get('kernel', '?')}, "
            f"load average {fmt(m.get('load_before'), digits=2)} before. ")
    out += (f"Medians of {d.get('repeat')} runs per listing and of {d.get('changes')} label changes; the pods are "
            "objects bound to a node no kubelet owns (the API path is measured, not pod creation).\n")
    return out


def dns_section(res: dict) -> str:
    d = _get(res, "dns", "data")
    if not d:
        return f"{DASH}\n"
    rows = [[label, fmt(_get(d, k, "p50_ms"), "ms"), fmt(_get(d, k, "p99_ms"), "ms"), fmt(_get(d, k, "max_ms"), "ms")]
            for label, k in (("Service created → A record answered (through kube-dns 192.1.0.10)", "create"),
                             ("Service deleted → NXDOMAIN", "delete"),
                             ("raw etcd watch sees the create (floor)", "etcd_watch_create"),
                             ("raw etcd watch sees the delete (floor)", "etcd_watch_delete"))]
    out = table(["from the start of the API server's write (services.create/delete)", "p50", "p99", "max"], rows)
    m = _get(res, "dns", "machine") or {}
    out += (f"\n{d.get('n')} rounds; the client runs in kub-node-1's namespace and asks every millisecond over "
            f"UDP; load average {fmt(m.get('load_before'), digits=2)} before. The server is one coredns pod "
            "(netlab/agent/dns.py) fed by API-server watches.\n")
    return out


# --------------------------------------------------------------------------- document
def render(res: dict, plots: dict[str, str] | None = None, notes: str | None = None) -> str:
    plots = plots or {}
    metas = [m for m in res.values() if isinstance(m, dict)]
    cmds = sorted({m.get("command", "") for m in metas if m.get("command")})
    machines = [m.get("machine") for m in metas if m.get("machine")]
    cpus = [mm.get("cpu") for mm in machines]
    # the machine most sections ran on (a section measured elsewhere says so itself)
    mach = max(machines, key=lambda mm: cpus.count(mm.get("cpu")), default={}) or {}
    parts = [
        "# Performance\n",
        "Generated by `bench/report.py` from `bench/results/*.json` — do not edit by hand; the "
        "analysis comes from `bench/notes.md`. Reproduce with `sudo scripts/bench.sh` "
        "(or `python -m bench.run [--quick] [--only SECTIONS]`).\n",
        table(["section", "measured", "command", "commit", "load avg before"],
              [[name, m.get("started", DASH), f"`{m.get('command', DASH)}`", m.get("commit", DASH),
                fmt(_get(m, "machine", "load_before"), digits=2)] for name, m in sorted(res.items())]),
        f"\nMachine: {mach.get('cpus', '?')} CPUs ({mach.get('cpu', '?')}), {fmt(mach.get('mem_mib'), 'MiB')}, "
        f"Linux {mach.get('kernel', '?')}, Python {mach.get('python', '?')}, {mach.get('iptables', '')}. "
        "Every figure is quoted next to its baseline measured in the same run.\n" if mach else "",
        "## Goals\n", goals(res),
        "\n## 1. Pods: create and delete N pods\n", pods_section(res, plots),
        "\n## 2. Proxy sync on one node\n", proxy_section(res),
        "\n## 3. Network programming latency\n", latency_section(res, plots),
        "\n## 4. Data plane\n", dataplane_section(res),
        "\n## 5. `netlab up` / `netlab down` of the default lab\n", up_section(res),
        "\n## 6. API server: kubectl against the lab\n", apiserver_section(res),
        "\n## 7. Cluster DNS: a Service change visible in DNS\n", dns_section(res),
        "\n## 8. kube-proxy's nftables mode\n", nft_section(res),
        "\n## Profiles (py-spy, 200 Hz)\n", profiles_section(res),
    ]
    if cmds:
        parts.append("\nCommands that produced these results: " + ", ".join(f"`{c}`" for c in cmds) + ".\n")
    if notes:
        parts += ["\n## Analysis: where the time goes\n", notes.strip() + "\n"]
    return "\n".join(p for p in parts if p)


def write(results: Path, docs: Path, plots: bool = True) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    res = load(results)
    plots = plot(res, docs) if plots else {}
    for key, name in (("pods", "performance-pods.png"), ("latency", "performance-latency.png")):
        if key not in plots and (docs / name).exists():  # drawn by an earlier run (matplotlib absent now)
            plots[key] = name
    notes = NOTES.read_text() if NOTES.exists() else None
    out = docs / "performance.md"
    out.write_text(render(res, plots, notes))
    return out


if __name__ == "__main__":
    import sys

    root = Path(__file__).resolve().parent.parent
    print(write(root / "bench" / "results", root / "docs"))
