"""The nftables applier against the real kernel: deltas leave exactly what a full load writes.

Runs in a throw-away network namespace (`unshare --net`, gone with the process), so no lab
is needed: random service changes are applied as plan.nft_rules.delta_text transactions with
the real `nft -f`, and after each step the table read back with `nft -j` must equal the
table a full load of the same services gives (in a second throw-away namespace's view:
the same process flushes and reloads, then compares).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import json, random, sys
    from netlab.kernel import nft, nft_netlink
    from netlab.plan.nft_rules import contribution, delta_ops, delta_text, full_text
    from netlab.plan.proxy_rules import Endpoint, ServicePort
    rng = random.Random(int(sys.argv[1]))
    vmap = sys.argv[2] == "1"
    netlink = sys.argv[3] == "netlink"
    sock = nft_netlink.open_socket()
    def mk(i):
        extra = {}
        if not netlink and rng.random() < 0.4:  # LoadBalancer / traffic policies (nft -f only)
            extra = dict(lb_ip=f"172.23.100.{200 + i}", external_local=rng.random() < 0.5,
                         internal_local=rng.random() < 0.3, cluster_cidr="10.1.0.0/16",
                         source_ranges=("172.23.100.1/32",) if rng.random() < 0.5 else ())
        sp = ServicePort("default", f"s{i}", rng.choice(["", "http"]), rng.choice(["TCP", "UDP"]),
                         f"192.1.0.{i + 2}", 80, 30000 + i if rng.random() < 0.5 else None, **extra)
        eps = {Endpoint(f"10.1.{rng.randint(1, 2)}.{rng.randint(2, 20)}", 80, rng.random() < 0.5)
               for _ in range(rng.randint(0, 3))}
        return contribution([(sp, sorted(eps, key=lambda e: e.ip))], vmap=vmap)
    def state():
        out = {}
        for o in nft.nft_json(None, "list", "table", "ip", "kube-proxy"):
            (kind, v), = o.items()
            if kind == "rule":
                out.setdefault(("chain", v["chain"]), []).append(json.dumps(v["expr"], sort_keys=True))
            elif kind == "chain":
                out.setdefault(("chain", v["name"]), [])
            elif kind in ("map", "set"):
                out[(kind, v["name"])] = sorted(json.dumps(e, sort_keys=True) for e in v.get("elem", []))
        return out
    applied = {i: mk(i) for i in range(8)}
    nft.nft_apply(None, full_text(applied.values()))
    for step in range(25):
        changes = []
        for i in rng.sample(range(12), 3):
            new = mk(i) if rng.random() < 0.7 else None
            changes.append((applied.pop(i, None), new))
            if new:
                applied[i] = new
        if netlink:
            nft_netlink.apply_ops(sock, "kube-proxy", delta_ops(changes))
        else:
            nft.nft_apply(None, delta_text(changes))
        got = state()
        nft.nft_apply(None, full_text(applied.values()))
        assert got == state(), f"step {step}"
    print("ok")
""")


@pytest.mark.parametrize("vmap,path", [("1", "nft"), ("0", "nft"), ("0", "netlink")])
def test_deltas_match_a_full_load_in_the_kernel(vmap, path):
    """Through `nft -f` text and through the raw netlink batch (rule form only): what nft
    reads back is what nft itself writes for the same rules."""
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", CHECK, "7", vmap, path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_a_failing_netlink_batch_changes_nothing():
    script = textwrap.dedent("""
        from netlab.errors import KernelError
        from netlab.kernel import nft, nft_netlink
        from netlab.plan.nft_rules import contribution, delta_ops, full_text
        from netlab.plan.proxy_rules import Endpoint, ServicePort
        sp = ServicePort("default", "a", "", "TCP", "192.1.0.2", 80)
        c = contribution([(sp, [Endpoint("10.1.1.2", 80)])], vmap=False)
        nft.nft_apply(None, full_text([]))
        before = nft.nft_json(None, "list", "table", "ip", "kube-proxy")
        ops = delta_ops([(None, c)]) + [("add_rule", "no-such-chain", "goto services")]
        try:
            nft_netlink.apply_ops(nft_netlink.open_socket(), "kube-proxy", ops)
            raise SystemExit("no error")
        except KernelError as e:
            assert "nothing applied" in str(e) and "No such file or directory" in str(e), e
        assert nft.nft_json(None, "list", "table", "ip", "kube-proxy") == before
        print("ok")
    """)
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_a_failing_transaction_changes_nothing():
    script = textwrap.dedent("""
        from netlab.errors import KernelError
        from netlab.kernel import nft
        from netlab.plan.nft_rules import contribution, delta_text, full_text
        from netlab.plan.proxy_rules import Endpoint, ServicePort
        sp = ServicePort("default", "a", "", "TCP", "192.1.0.2", 80)
        c = contribution([(sp, [Endpoint("10.1.1.2", 80)])])
        nft.nft_apply(None, full_text([c]))
        before = nft.nft_json(None, "list", "table", "ip", "kube-proxy")
        # the element goes first, then the transaction fails on a chain that does not exist
        bad = delta_text([(c, None)]) + "flush chain ip kube-proxy no-such-chain\\n"
        try:
            nft.nft_apply(None, bad)
            raise SystemExit("no error")
        except KernelError as e:
            assert "nft -f failed" in str(e), e
        assert nft.nft_json(None, "list", "table", "ip", "kube-proxy") == before
        print("ok")
    """)
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
