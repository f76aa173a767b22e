"""The benchmark report generator turns results JSON into the markdown of docs/performance.md."""

import json

from bench import report


def _results(tmp_path):
    docs = {
        "pods": {"section": "pods", "command": "python -m bench.run --quick", "commit": "abc1234",
                 "started": "2026-01-01T00:00:00Z", "machine": {"cpus": 2, "load_before": 0.5},
                 "data": {"sizes": [{
                     "n": 1000, "workers": 10,
                     "netlab": {"create_s": 4.0, "delete_s": 1.5, "create_per_pod_ms": 4.0, "rss_per_pod_kib": 900.0,
                                "peak_rss_agent_kib": 70000},
                     "floor": {"create_s": 2.5, "delete_s": 1.0},
                     "mininet": {"create_s": 40.0, "delete_s": 30.0}}, {
                     "n": 1000, "workers": 4,
                     "netlab": {"create_s": 9.0, "delete_s": 5.0},
                     "floor": {"create_s": 3.0, "delete_s": 1.0},
                     "mininet": {"create_s": 41.0, "delete_s": 30.0}}]}},
        "proxy": {"section": "proxy", "data": {"repeat": 1, "sizes": [{
            "services": 10000, "nat_rules": 70003, "bytes": 9_500_000, "raw_restore_s": 1.0,
            "netlab_full_sync_s": 3.0, "raw_add_one_s": 0.6, "netlab_add_one_s": 0.7,
            "netlab_remove_one_s": 0.8, "netlab_endpoint_change_s": 0.7, "generate_s": 0.8}]}},
    }
    for name, doc in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return report.load(tmp_path)


def test_render_goals_and_tables(tmp_path):
    md = report.render(_results(tmp_path), notes="The profile shows X.")
    lines = md.splitlines()
    assert lines[0] == "# Performance"
    # The goals read the 1,000-over-10-workers row, not the 4-worker continuity row.
    floor_goal = next(l for l in lines if l.startswith("| pods vs kernel floor, N = 1,000 over 10"))
    assert "1.60×" in floor_goal and "**met**" in floor_goal
    mn_goal = next(l for l in lines if l.startswith("| pods vs Mininet"))
    assert "10.00× faster" in mn_goal and "**met**" in mn_goal
    del_goal = next(l for l in lines if l.startswith("| deletion of those 1,000 pods"))
    assert "1.50 s" in del_goal and "**met**" in del_goal
    agent_goal = next(l for l in lines if l.startswith("| largest agent at 100 pods"))
    assert "**missed**" in agent_goal
    assert any(l.startswith("| 1,000 | netlab (4 workers) | 9.00 s") for l in lines)
    sync_goal = next(l for l in lines if l.startswith("| proxy full sync"))
    assert "3.00×" in sync_goal and "**missed**" in sync_goal
    change_goal = next(l for l in lines if l.startswith("| one service change"))
    assert "800 ms" in change_goal and "**missed**" in change_goal
    # Sections never measured say so instead of failing.
    assert "| programming latency p99, 10 workers | ≤ 100 ms | — |" in md
    assert md.count("Not measured yet.") == 4  # latency, dataplane, up, nft
    assert "`python -m bench.run --quick`" in md
    assert md.rstrip().endswith("The profile shows X.")


def test_write_creates_markdown(tmp_path):
    _results(tmp_path)
    out = report.write(tmp_path, tmp_path / "docs", plots=False)  # matplotlib is bench-only
    assert out.read_text().startswith("# Performance")


def test_nft_goals_rows():
    from bench import report

    row = {"services": 10000, "form": "rules", "raw_nft_load_rules_s": 2.0, "raw_nft_load_vmap_s": None,
           "nft_full_sync_s": 2.5, "nft_add_one_s": 0.03, "nft_remove_one_s": 0.001, "nft_endpoint_change_s": 0.01,
           "iptables_add_one_s": 0.7, "iptables_remove_one_s": 0.6, "iptables_endpoint_change_s": 0.6}
    lat = [{"mode": m, "workers": 10, "service_created": {"p99_ms": p}, "endpoints_changed": {"p99_ms": p}}
           for m, p in (("iptables", 200.0), ("nftables", 40.0))]
    md = report.goals({"nft": {"data": {"sync": [row], "latency": lat}}})
    full = next(ln for ln in md.splitlines() if ln.startswith("| nftables full sync"))
    assert "1.25×" in full and "**missed**" in full  # within 2x of raw, but over 1.5 s
    one = next(ln for ln in md.splitlines() if ln.startswith("| nftables: one change"))
    assert "30.0 ms" in one and "iptables mode 700 ms" in one and "**missed**" in one
    lat_row = next(ln for ln in md.splitlines() if ln.startswith("| nftables programming latency"))
    assert "40.0 ms" in lat_row and "**met**" in lat_row
