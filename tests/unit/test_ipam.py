"""Tests for netlab.ipam: host-local semantics (range defaults, round robin,
one O_EXCL file per address) and survival across instances and processes."""

import contextlib
import multiprocessing
import os
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from netlab.plan import ipam
from netlab.plan.ipam import LAST_RESERVED_FILE, HostLocal, IPAMExhausted

A = IPv4Address
N = IPv4Network


def files(d):
    return sorted(os.listdir(d))


# -- ranges -----------------------------------------------------------------------


def test_defaults_like_host_local(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    assert (h.gateway, h.range_start, h.range_end) == (A("10.1.1.1"), A("10.1.1.2"), A("10.1.1.254"))
    assert h.allocate("pod-a") == A("10.1.1.2")


def test_gateway_elsewhere_moves_default_start_back_to_dot_one(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), gateway=A("10.1.1.254"))
    assert (h.range_start, h.range_end) == (A("10.1.1.1"), A("10.1.1.254"))
    assert h.allocate("a") == A("10.1.1.1")


def test_seed_values_first_pod(tmp_path):
    h1 = HostLocal(tmp_path / "n1", N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    assert h1.allocate("pod-1") == A("10.1.1.4")
    h2 = HostLocal(tmp_path / "n2", N("10.1.79.0/24"), range_start=A("10.1.79.11"))
    assert h2.allocate("pod-1") == A("10.1.79.11")


def test_accepts_strings(tmp_path):
    h = HostLocal(str(tmp_path), "10.1.79.1/24", range_start="10.1.79.11", range_end="10.1.79.20")
    assert h.subnet == N("10.1.79.0/24")
    assert h.allocate("x") == A("10.1.79.11")


@pytest.mark.parametrize("kw, field", [
    (dict(range_start=A("10.1.2.5")), "range_start"),
    (dict(range_start=A("10.1.1.0")), "range_start"),     # network address
    (dict(range_start="bogus"), "range_start"),
    (dict(range_end=A("10.1.2.5")), "range_end"),
    (dict(range_end=A("10.1.1.255")), "range_end"),       # broadcast
    (dict(gateway=A("10.1.2.1")), "gateway"),
    (dict(gateway=A("10.1.1.255")), "gateway"),
    (dict(range_start=A("10.1.1.50"), range_end=A("10.1.1.40")), "range_start"),
])
def test_validation_names_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        HostLocal(tmp_path, N("10.1.1.0/24"), **kw)


def test_tiny_or_wrong_subnets_rejected(tmp_path):
    with pytest.raises(ValueError, match="subnet"):
        HostLocal(tmp_path, N("10.1.1.0/31"))
    with pytest.raises(ValueError, match="subnet"):
        HostLocal(tmp_path, "fc00::/64")
    with pytest.raises(ValueError, match="subnet"):
        HostLocal(tmp_path, "garbage")


def test_owner_validation(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    for bad in ("", "   ", "a\nb", None):
        with pytest.raises(ValueError, match="owner"):
            h.allocate(bad)


# -- allocation -----------------------------------------------------------------------


def test_file_per_address_with_owner_and_last_reserved(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    h.allocate("pod-a")
    h.allocate("pod-b")
    assert files(tmp_path) == ["10.1.1.4", "10.1.1.5", LAST_RESERVED_FILE]
    assert (tmp_path / "10.1.1.4").read_text() == "pod-a"
    assert (tmp_path / LAST_RESERVED_FILE).read_text() == "10.1.1.5"
    assert h.allocations() == {A("10.1.1.4"): "pod-a", A("10.1.1.5"): "pod-b"}
    assert h.last_reserved() == A("10.1.1.5")


def test_idempotent_per_owner(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    a = h.allocate("pod-a")
    assert h.allocate("pod-a") == a
    assert h.allocate("  pod-a ") == a
    assert HostLocal(tmp_path, N("10.1.1.0/24")).allocate("pod-a") == a
    assert h.lookup("pod-a") == a and h.lookup("pod-zz") is None
    assert len(h.allocations()) == 1


def test_round_robin_does_not_reuse_just_released(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    a, b = h.allocate("a"), h.allocate("b")
    assert h.release("a") == [a]
    c = h.allocate("c")
    assert c not in (a, b) and c == A("10.1.1.6")
    # Released via release_ip too.
    assert h.release_ip(b) is True and h.release_ip(b) is False
    assert h.allocate("d") == A("10.1.1.7")


def test_wraps_around_to_range_start(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.250"))
    got = [h.allocate(f"p{i}") for i in range(5)]
    assert got == [A(f"10.1.1.{i}") for i in range(250, 255)]
    h.release("p1")  # frees .251
    assert h.allocate("q") == A("10.1.1.251")  # after .254 wraps to start, .250 taken


def test_gateway_inside_range_is_skipped(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.9"), range_end=A("10.1.1.12"),
                  gateway=A("10.1.1.10"))
    got = [h.allocate(f"p{i}") for i in range(3)]
    assert got == [A("10.1.1.9"), A("10.1.1.11"), A("10.1.1.12")]
    with pytest.raises(IPAMExhausted):
        h.allocate("p3")


def test_never_hands_out_gateway_network_broadcast(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/28"))
    got = set()
    with pytest.raises(IPAMExhausted):
        for i in range(100):
            got.add(h.allocate(f"p{i}"))
    assert got == {A(f"10.1.1.{i}") for i in range(2, 15)}


def test_exhaustion_and_recovery(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.20"), range_end=A("10.1.1.22"))
    got = [h.allocate(f"p{i}") for i in range(3)]
    with pytest.raises(IPAMExhausted, match="10.1.1.20-10.1.1.22"):
        h.allocate("p3")
    h.release("p0")
    assert h.allocate("p3") == got[0]


def test_persists_across_instances(tmp_path):
    h = HostLocal(tmp_path, N("10.1.79.0/24"), range_start=A("10.1.79.11"))
    a = h.allocate("pod-a")
    b = h.allocate("pod-b")
    h2 = HostLocal(tmp_path, N("10.1.79.0/24"), range_start=A("10.1.79.11"))  # "agent restart"
    assert h2.allocations() == {a: "pod-a", b: "pod-b"}
    assert h2.allocate("pod-c") == A("10.1.79.13")  # round robin resumes from the file
    h2.release("pod-a")
    assert HostLocal(tmp_path, N("10.1.79.0/24")).allocations() == {b: "pod-b", A("10.1.79.13"): "pod-c"}


def test_stale_last_reserved_falls_back_to_range_start(tmp_path):
    (tmp_path / LAST_RESERVED_FILE).write_text("192.168.9.9")
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    assert h.allocate("a") == A("10.1.1.4")
    (tmp_path / LAST_RESERVED_FILE).write_text("garbage")
    assert h.allocate("b") == A("10.1.1.5")


def test_reads_files_written_by_real_host_local(tmp_path):
    # host-local writes "<container id>\r\n<ifname>".
    (tmp_path / "10.1.1.7").write_text("abc123\r\neth0")
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    assert h.allocations() == {A("10.1.1.7"): "abc123"}
    assert h.allocate("abc123") == A("10.1.1.7")
    assert h.release("abc123") == [A("10.1.1.7")]


def test_o_excl_is_the_guard_not_the_listing(tmp_path, monkeypatch):
    # Pretend the scan missed an address someone else just created: the
    # O_EXCL create must still refuse it and move on.
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    (tmp_path / "10.1.1.4").write_text("intruder")
    monkeypatch.setattr(HostLocal, "_scan", lambda self: {})
    assert h.allocate("me") == A("10.1.1.5")
    assert (tmp_path / "10.1.1.4").read_text() == "intruder"


# -- release / reconcile --------------------------------------------------------------


def test_release_is_idempotent_and_only_touches_owner(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    a = h.allocate("a")
    b = h.allocate("b")
    assert h.release("a") == [a]
    assert h.release("a") == []
    assert h.release("nobody") == []
    assert h.allocations() == {b: "b"}


def test_release_removes_all_of_owners_addresses(tmp_path):
    (tmp_path / "10.1.1.9").write_text("a")
    (tmp_path / "10.1.2.9").write_text("a")  # left from an older subnet
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    assert h.allocate("a") == A("10.1.1.9")
    assert h.release("a") == [A("10.1.1.9"), A("10.1.2.9")]


def test_reconcile_releases_dead_owners(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    ips = {o: h.allocate(o) for o in ("a", "b", "c", "d")}
    (tmp_path / "10.9.9.9").write_text("ghost")  # outside the subnet: cleaned too
    freed = h.reconcile({"b", "d", "not-allocated"})
    assert freed == sorted([ips["a"], ips["c"], A("10.9.9.9")])
    assert h.allocations() == {ips["b"]: "b", ips["d"]: "d"}
    assert h.reconcile({"b", "d"}) == []
    assert h.reconcile(set()) == [ips["b"], ips["d"]]
    assert files(tmp_path) == [LAST_RESERVED_FILE]


def test_ignores_foreign_files(tmp_path):
    (tmp_path / "lock").write_text("")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "10.1.1.300").write_text("x")
    (tmp_path / "10.1.1.8").mkdir()
    h = HostLocal(tmp_path, N("10.1.1.0/24"))
    assert h.allocations() == {}
    assert h.reconcile(set()) == []


def test_200_allocate_release_cycles_leave_only_last_reserved(tmp_path):
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    rng = random.Random(5)
    live = {}
    seen = []
    for i in range(200):
        owner = f"pod-{i}"
        ip = h.allocate(owner)
        assert ip not in live.values()
        live[owner] = ip
        seen.append(ip)
        if len(live) > 5 or rng.random() < 0.5:
            victim = rng.choice(sorted(live))
            assert h.release(victim) == [live.pop(victim)]
        assert h.allocations() == {v: k for k, v in live.items()}
    for owner in list(live):
        h.release(owner)
    assert files(tmp_path) == [LAST_RESERVED_FILE]
    # Round robin walked the range rather than hammering the first addresses.
    assert len(set(seen)) > 190


# -- concurrency ----------------------------------------------------------------------


def _worker(data_dir, tag, count, q, locked=True):
    if not locked:
        # Only O_CREAT|O_EXCL stands between the processes now.
        HostLocal._locked = lambda self, exclusive=True: contextlib.nullcontext()
    h = HostLocal(data_dir, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    got = []
    for i in range(count):
        got.append(str(h.allocate(f"{tag}-{i}")))
        # Allocate the same owner again now and then: must stay idempotent.
        if i % 10 == 0:
            assert str(h.allocate(f"{tag}-{i}")) == got[-1]
    q.put((tag, got))


@pytest.mark.parametrize("locked", [True, False], ids=["flock", "o_excl-only"])
def test_four_processes_never_duplicate(tmp_path, locked):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), f"p{i}", 50, q, locked)) for i in range(4)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    every = [ip for ips in results.values() for ip in ips]
    assert len(every) == 200 and len(set(every)) == 200
    h = HostLocal(tmp_path, N("10.1.1.0/24"), range_start=A("10.1.1.4"))
    table = h.allocations()
    assert len(table) == 200
    for tag, ips in results.items():
        for i, ip in enumerate(ips):
            assert table[A(ip)] == f"{tag}-{i}"
    assert all(A("10.1.1.4") <= a <= A("10.1.1.254") for a in table)


def test_module_exports():
    from netlab.errors import NetlabError
    assert set(ipam.__all__) == {"HostLocal", "IPAMExhausted", "LAST_RESERVED_FILE"}
    assert issubclass(IPAMExhausted, NetlabError)
