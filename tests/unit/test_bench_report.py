"""The benchmark report generator turns results JSON into the markdown of docs/performance.md."""

import json

from bench import report


def _results(tmp_path):
    docs = {
        "pods": {"section": "pods", "command": "python -m bench.run --quick", "commit": "abc1234",
                 "started": "2026-01-01T00:00:00Z", "machine": {"cpus": 2, "load_before": 0.5},
                 "data": {"workers": 4, "sizes": [{
                     "n": 1000,
                     "netlab": {"create_s": 4.0, "delete_s": 1.5, "create_per_pod_ms": 4.0, "rss_per_pod_kib": 900.0},
                     "floor": {"create_s": 2.5, "delete_s": 1.0},
                     "mininet": {"create_s": 40.0, "delete_s": 30.0}}]}},
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
    pod_goal = next(l for l in lines if l.startswith("| pod creation, N = 1,000"))
    assert "4.00 ms" in pod_goal and "**met**" in pod_goal
    mn_goal = next(l for l in lines if l.startswith("| pods vs Mininet"))
    assert "10.00× faster" in mn_goal and "**met**" in mn_goal
    sync_goal = next(l for l in lines if l.startswith("| proxy full sync"))
    assert "3.00×" in sync_goal and "**missed**" in sync_goal
    change_goal = next(l for l in lines if l.startswith("| one service change"))
    assert "800 ms" in change_goal and "**missed**" in change_goal
    # Sections never measured say so instead of failing.
    assert "| programming latency p99, 10 workers | ≤ 100 ms | — |" in md
    assert md.count("Not measured yet.") == 3  # latency, dataplane, up
    assert "`python -m bench.run --quick`" in md
    assert md.rstrip().endswith("The profile shows X.")


def test_write_creates_markdown(tmp_path):
    _results(tmp_path)
    out = report.write(tmp_path, tmp_path / "docs", plots=False)  # matplotlib is bench-only
    assert out.read_text().startswith("# Performance")
