"""Tests for netlab.flannel_leases: formats byte for byte as flanneld writes
them, and the lease choice order (existing > reserved > previous > random)."""

import json
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from netlab.plan.flannel_leases import (
    RANDOM_WINDOW,
    Lease,
    LeaseError,
    NetworkConfig,
    choose_subnet,
    config_key,
    free_subnets,
    lease_key,
    lease_value,
    parse_lease,
    parse_lease_key,
    parse_lease_value,
    parse_subnet_env,
    previous_subnet,
    stale_leases,
    subnet_env,
    subnets_prefix,
    vtep_mac,
)

N = IPv4Network
A = IPv4Address
LAB = {"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}


def compact(d):
    return json.dumps(d, separators=(",", ":"))


# -- config ---------------------------------------------------------------------


def test_default_lab_config_serialises_exactly():
    cfg = NetworkConfig.from_json(LAB)
    assert compact(cfg.to_json()) == '{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'
    assert cfg.to_json_text() == '{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'
    # Built directly, with only the network given: same text.
    assert NetworkConfig(N("10.1.0.0/16")).to_json_text() == cfg.to_json_text()


def test_default_lab_config_computed_values():
    cfg = NetworkConfig.from_json(LAB)
    assert cfg.network == N("10.1.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.subnet_min == A("10.1.1.0")  # first subnet skipped
    assert cfg.subnet_max == A("10.1.255.0")
    assert (cfg.backend_type, cfg.vni, cfg.port) == ("vxlan", 1, 8472)
    assert cfg.to_json(minimal=False) == {
        "Network": "10.1.0.0/16", "SubnetLen": 24, "SubnetMin": "10.1.1.0",
        "SubnetMax": "10.1.255.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}


def test_from_json_accepts_text_and_round_trips_explicit_fields():
    text = ('{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.1.0",'
            '"SubnetMax":"10.5.9.0","Backend":{"Type":"vxlan","VNI":42,"Port":4789}}')
    cfg = NetworkConfig.from_json(text)
    assert (cfg.subnet_len, cfg.vni, cfg.port) == (26, 42, 4789)
    assert cfg.to_json_text() == text
    assert NetworkConfig.from_json(cfg.to_json()) == cfg


def test_explicit_value_equal_to_default_is_still_written():
    cfg = NetworkConfig.from_json({"Network": "10.1.0.0/16", "SubnetLen": 24,
                                   "Backend": {"Type": "vxlan", "VNI": 1}})
    assert cfg.to_json() == {"Network": "10.1.0.0/16", "SubnetLen": 24,
                             "Backend": {"Type": "vxlan", "VNI": 1}}


def test_missing_backend_is_udp_as_in_flannel():
    cfg = NetworkConfig.from_json({"Network": "10.1.0.0/16"})
    assert cfg.backend_type == "udp"
    assert cfg.to_json() == {"Network": "10.1.0.0/16", "Backend": {"Type": "udp"}}


def test_port_zero_means_kernel_default():
    cfg = NetworkConfig.from_json({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "Port": 0}})
    assert cfg.port == 8472


@pytest.mark.parametrize("network, subnet_len", [
    ("10.0.0.0/8", 24), ("10.1.0.0/16", 24), ("10.1.0.0/22", 24),
    ("10.1.0.0/23", 25), ("10.1.0.0/24", 26), ("10.1.0.0/28", 30),
])
def test_default_subnet_len_as_flannel_computes_it(network, subnet_len):
    cfg = NetworkConfig.from_json({"Network": network, "Backend": {"Type": "vxlan"}})
    assert cfg.subnet_len == subnet_len
    size = 1 << (32 - subnet_len)
    net = N(network)
    assert cfg.subnet_min == net.network_address + size
    assert int(cfg.subnet_max) == int(net.broadcast_address) + 1 - size


def test_network_host_bits_are_masked_like_go():
    assert NetworkConfig.from_json({"Network": "10.1.2.3/16"}).network == N("10.1.0.0/16")


@pytest.mark.parametrize("data, field", [
    ({}, "Network"),
    ({"Network": "nonsense"}, "Network"),
    ({"Network": 5}, "Network"),
    ({"Network": "0.0.0.0/0"}, "Network"),
    ({"Network": "10.1.0.0/29"}, "Network"),
    ({"Network": "10.1.0.0/16", "SubnetLen": 31}, "SubnetLen"),
    ({"Network": "10.1.0.0/16", "SubnetLen": 17}, "SubnetLen"),
    ({"Network": "10.1.0.0/16", "SubnetLen": "24"}, "SubnetLen"),
    ({"Network": "10.1.0.0/16", "SubnetLen": True}, "SubnetLen"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.2.1.0"}, "SubnetMin"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.1.1.7"}, "SubnetMin"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "bogus"}, "SubnetMin"),
    ({"Network": "10.1.0.0/16", "SubnetMax": "10.2.0.0"}, "SubnetMax"),
    ({"Network": "10.1.0.0/16", "SubnetMax": "10.1.9.128"}, "SubnetMax"),
    ({"Network": "10.1.0.0/16", "SubnetMin": "10.1.9.0", "SubnetMax": "10.1.8.0"}, "SubnetMin"),
    ({"Network": "10.1.0.0/16", "Backend": "vxlan"}, "Backend"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": ""}}, "Backend.Type"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1 << 24}}, "VNI"),
    ({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}, "Port"),
    ({"Network": "10.1.0.0/16", "EnableIPv6": True}, "EnableIPv6"),
])
def test_validation_names_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        NetworkConfig.from_json(data)


def test_config_is_frozen_and_hashable():
    cfg = NetworkConfig.from_json(LAB)
    with pytest.raises(AttributeError):
        cfg.subnet_len = 25
    assert hash(cfg) == hash(NetworkConfig(N("10.1.0.0/16")))


# -- keys and values ------------------------------------------------------------------


def test_lease_key_format():
    assert lease_key(N("10.1.79.0/24")) == "/coreos.com/network/subnets/10.1.79.0-24"
    assert lease_key(N("10.1.79.0/24"), prefix="/lab/net/") == "/lab/net/subnets/10.1.79.0-24"
    assert subnets_prefix() == "/coreos.com/network/subnets/"
    assert config_key() == "/coreos.com/network/config"


def test_parse_lease_key():
    assert parse_lease_key("/coreos.com/network/subnets/10.1.79.0-24") == N("10.1.79.0/24")
    assert parse_lease_key(b"/coreos.com/network/subnets/10.1.79.0-24") == N("10.1.79.0/24")
    assert parse_lease_key("/x/subnets/10.1.79.0-24&fc00::-64") == N("10.1.79.0/24")
    assert parse_lease_key("/coreos.com/network/config") is None
    assert parse_lease_key("/coreos.com/network/subnets/10.1.79.5-24") is None  # unaligned
    assert parse_lease_key("/coreos.com/network/subnets/10.1.79.0-33") is None
    assert parse_lease_key("/coreos.com/network/subnets/300.1.79.0-24") is None


def test_lease_key_round_trip_property():
    rng = random.Random(7)
    for _ in range(500):
        plen = rng.randint(8, 30)
        net = N((rng.getrandbits(32) >> (32 - plen) << (32 - plen), plen))
        assert parse_lease_key(lease_key(net)) == net


def test_lease_value_exact_bytes():
    assert lease_value("172.23.100.6", "AA:BB:cc:01:02:03", 1) == (
        '{"PublicIP":"172.23.100.6","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:01:02:03"}}')


def test_lease_value_validation():
    with pytest.raises(ValueError, match="PublicIP"):
        lease_value("nope", "aa:bb:cc:01:02:03", 1)
    with pytest.raises(ValueError, match="VtepMAC"):
        lease_value("10.0.0.1", "aa:bb:cc", 1)
    with pytest.raises(ValueError, match="VNI"):
        lease_value("10.0.0.1", "aa:bb:cc:01:02:03", -1)


def test_parse_lease_value_round_trip():
    v = lease_value("172.23.100.6", "aa:bb:cc:01:02:03", 7)
    assert parse_lease_value(v) == Lease(None, "172.23.100.6", "aa:bb:cc:01:02:03", 7, "vxlan")
    lease = parse_lease("/coreos.com/network/subnets/10.1.79.0-24", v.encode())
    assert lease == Lease(N("10.1.79.0/24"), "172.23.100.6", "aa:bb:cc:01:02:03", 7, "vxlan")
    assert parse_lease("/coreos.com/network/config", v) is None


def test_parse_lease_value_other_backend_and_errors():
    lease = parse_lease_value('{"PublicIP":"10.0.0.9","BackendType":"host-gw"}')
    assert (lease.public_ip, lease.backend_type, lease.vtep_mac, lease.vni) == ("10.0.0.9", "host-gw", None, None)
    with pytest.raises(ValueError):
        parse_lease_value("{")
    with pytest.raises(ValueError, match="PublicIP"):
        parse_lease_value('{"BackendType":"vxlan"}')


# -- choosing --------------------------------------------------------------------------

ME, OTHER, THIRD = "172.23.100.6", "172.23.100.7", "172.23.100.8"


def small_cfg():
    # /24 split into /28s: subnets .16 .. .240 -> 15 candidates.
    return NetworkConfig.from_json({"Network": "10.9.0.0/24", "SubnetLen": 28, "Backend": {"Type": "vxlan"}})


def test_choose_order_existing_beats_everything():
    cfg = NetworkConfig.from_json(LAB)
    leases = {N("10.1.5.0/24"): ME, N("10.1.6.0/24"): OTHER}
    reserved = {N("10.1.7.0/24"): ME}
    assert choose_subnet(cfg, leases, ME, previous=N("10.1.8.0/24"), reserved=reserved) == (N("10.1.5.0/24"), "existing")


def test_choose_order_reserved_beats_previous():
    cfg = NetworkConfig.from_json(LAB)
    got = choose_subnet(cfg, {N("10.1.6.0/24"): OTHER}, ME, previous=N("10.1.8.0/24"),
                        reserved={N("10.1.7.0/24"): ME, N("10.1.9.0/24"): OTHER})
    assert got == (N("10.1.7.0/24"), "reserved")


def test_choose_order_previous_beats_random():
    cfg = NetworkConfig.from_json(LAB)
    got = choose_subnet(cfg, {N("10.1.6.0/24"): OTHER}, ME, previous=N("10.1.8.0/24"),
                        reserved={N("10.1.9.0/24"): OTHER})
    assert got == (N("10.1.8.0/24"), "previous")


@pytest.mark.parametrize("previous", [
    N("10.1.6.0/24"),    # leased by another node
    N("10.1.9.0/24"),    # reserved for another node
    N("10.1.0.0/24"),    # below SubnetMin (the skipped first subnet)
    N("10.2.3.0/24"),    # outside the network
    N("10.1.8.0/25"),    # wrong length
    N("10.1.6.0/23"),    # overlaps a lease
])
def test_unusable_previous_falls_through_to_random(previous):
    cfg = NetworkConfig.from_json(LAB)
    sn, why = choose_subnet(cfg, {N("10.1.6.0/24"): OTHER}, ME, previous=previous,
                            reserved={N("10.1.9.0/24"): OTHER}, rng=random.Random(1))
    assert why == "random"
    assert sn not in (N("10.1.6.0/24"), N("10.1.9.0/24"))


def test_incompatible_existing_lease_is_not_reused_and_reported_stale():
    cfg = NetworkConfig.from_json({"Network": "10.1.0.0/16", "SubnetMax": "10.1.100.0",
                                   "Backend": {"Type": "vxlan"}})
    leases = {N("10.1.200.0/24"): ME, N("10.1.0.0/24"): ME}
    sn, why = choose_subnet(cfg, leases, ME, rng=random.Random(3))
    assert why == "random" and cfg.is_compatible(sn)
    assert stale_leases(cfg, leases, ME) == [N("10.1.0.0/24"), N("10.1.200.0/24")]


def test_reservation_held_by_another_node_is_skipped():
    cfg = NetworkConfig.from_json(LAB)
    sn, why = choose_subnet(cfg, {N("10.1.7.0/24"): OTHER}, ME, reserved={N("10.1.7.0/24"): ME},
                            rng=random.Random(0))
    assert why == "random" and sn != N("10.1.7.0/24")


def test_previous_from_subnet_env_text():
    cfg = NetworkConfig.from_json(LAB)
    env = subnet_env(cfg, N("10.1.79.0/24"), 1450)
    assert choose_subnet(cfg, {}, ME, previous=previous_subnet(env)) == (N("10.1.79.0/24"), "previous")


def test_random_picks_only_from_first_window_of_free_subnets():
    cfg = NetworkConfig.from_json(LAB)
    leases = {N(f"10.1.{i}.0/24"): OTHER for i in range(1, 50, 2)}
    window = set(free_subnets(cfg, list(leases)))
    assert len(window) == RANDOM_WINDOW
    assert max(window) < N("10.1.200.0/24")
    seen = set()
    for seed in range(300):
        sn, why = choose_subnet(cfg, leases, ME, rng=random.Random(seed))
        assert why == "random" and sn in window
        seen.add(sn)
    assert len(seen) > 50  # genuinely spread over the window


def test_random_seeded_is_reproducible():
    cfg = NetworkConfig.from_json(LAB)
    a = choose_subnet(cfg, {}, ME, rng=random.Random(99))
    b = choose_subnet(cfg, {}, ME, rng=random.Random(99))
    assert a == b


def test_full_network_raises():
    cfg = small_cfg()
    leases = {N(f"10.9.0.{16 * i}/28"): f"172.23.0.{i}" for i in range(1, 8)}
    reserved = {N(f"10.9.0.{16 * i}/28"): f"172.23.1.{i}" for i in range(8, 16)}
    with pytest.raises(LeaseError, match="out of subnets"):
        choose_subnet(cfg, leases, ME, reserved=reserved)
    # Drop one reservation and exactly that subnet comes back.
    del reserved[N("10.9.0.176/28")]
    assert choose_subnet(cfg, leases, ME, reserved=reserved) == (N("10.9.0.176/28"), "random")


def test_lease_error_is_a_netlab_error():
    from netlab.errors import NetlabError
    assert issubclass(LeaseError, NetlabError)


def test_one_big_lease_fills_the_network():
    cfg = NetworkConfig.from_json(LAB)
    with pytest.raises(LeaseError):
        choose_subnet(cfg, {N("10.1.0.0/16"): OTHER}, ME)


def test_free_subnets_skips_large_and_misaligned_leases_quickly():
    cfg = NetworkConfig.from_json({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}})
    taken = [N("10.0.0.0/9"), N("10.128.0.0/10"), N("10.192.5.128/25")]
    got = free_subnets(cfg, taken, limit=6)
    assert got[0] == N("10.192.0.0/24")
    assert N("10.192.5.0/24") not in got
    assert got == [N(f"10.192.{i}.0/24") for i in (0, 1, 2, 3, 4, 6)]


def _brute_free(cfg, taken):
    out = []
    size = cfg.subnet_size
    for a in range(int(cfg.subnet_min), int(cfg.subnet_max) + 1, size):
        sn = N((a, cfg.subnet_len))
        if not any(sn.overlaps(t) for t in taken):
            out.append(sn)
    return out


def _random_case(rng):
    plen = rng.randint(16, 26)
    base = rng.choice([10 << 24, (172 << 24) | (16 << 16), (192 << 24) | (168 << 16)])
    net = N((base, plen))
    data = {"Network": str(net), "Backend": {"Type": "vxlan"}}
    if rng.random() < 0.5:
        data["SubnetLen"] = rng.randint(plen + 2, min(plen + 8, 30))
    cfg = NetworkConfig.from_json(data)
    subnets = _brute_free(cfg, [])
    if rng.random() < 0.3 and len(subnets) > 4:  # narrowed min/max
        i, j = sorted(rng.sample(range(len(subnets)), 2))
        data["SubnetMin"], data["SubnetMax"] = str(subnets[i].network_address), str(subnets[j].network_address)
        cfg = NetworkConfig.from_json(data)
        subnets = _brute_free(cfg, [])
    nodes = [f"192.0.2.{i}" for i in range(1, 40)]
    fill = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
    leases, reserved = {}, {}
    for sn in subnets:
        if rng.random() < fill:
            (leases if rng.random() < 0.8 else reserved)[sn] = rng.choice(nodes)
    # Occasionally a lease outside [min, max] or of another length.
    if rng.random() < 0.2:
        leases[N((int(net.network_address), cfg.subnet_len))] = rng.choice(nodes)
    me = rng.choice(nodes + ["198.51.100.1"])
    previous = rng.choice([None, None, rng.choice(subnets),
                           N((int(net.network_address), cfg.subnet_len)),
                           N((int(subnets[0].network_address), min(cfg.subnet_len + 1, 32)))])
    return cfg, leases, reserved, me, previous


def _expected_reason(cfg, leases, reserved, me, previous):
    me = A(me)
    if any(A(ip) == me and cfg.is_compatible(sn) for sn, ip in leases.items()):
        return "existing"
    others = [sn for sn, ip in leases.items() if A(ip) != me]
    if any(A(ip) == me and cfg.is_compatible(sn) and not any(sn.overlaps(o) for o in others)
           for sn, ip in reserved.items()):
        return "reserved"
    taken = list(leases) + list(reserved)
    if previous is not None and cfg.is_compatible(previous) and not any(previous.overlaps(t) for t in taken):
        return "previous"
    return "random" if _brute_free(cfg, taken) else None


def test_thousand_seeded_random_choices_are_valid():
    outcomes = {}
    for seed in range(1000):
        rng = random.Random(seed)
        cfg, leases, reserved, me, previous = _random_case(rng)
        expected = _expected_reason(cfg, leases, reserved, me, previous)
        taken = list(leases) + list(reserved)
        if expected is None:
            with pytest.raises(LeaseError):
                choose_subnet(cfg, leases, me, previous, reserved, rng=rng)
            outcomes["full"] = outcomes.get("full", 0) + 1
            continue
        sn, why = choose_subnet(cfg, leases, me, previous, reserved, rng=rng)
        assert why == expected, seed
        outcomes[why] = outcomes.get(why, 0) + 1
        # Always a proper subnet of the config.
        assert sn.prefixlen == cfg.subnet_len
        assert cfg.subnet_min <= sn.network_address <= cfg.subnet_max
        assert int(sn.network_address) % cfg.subnet_size == 0
        assert sn.subnet_of(cfg.network)
        if why == "existing":
            assert A(leases[sn]) == A(me)
        elif why == "reserved":
            assert A(reserved[sn]) == A(me)
        elif why == "previous":
            assert sn == previous and not any(sn.overlaps(t) for t in taken)
        else:
            free = _brute_free(cfg, taken)
            assert sn in free[:RANDOM_WINDOW]
            assert not any(sn.overlaps(t) for t in taken)
    # The generator exercises every branch.
    assert set(outcomes) == {"existing", "reserved", "previous", "random", "full"}, outcomes


def test_free_subnets_matches_brute_force_property():
    for seed in range(300):
        rng = random.Random(10_000 + seed)
        cfg, leases, reserved, _, _ = _random_case(rng)
        taken = list(leases) + list(reserved)
        # Add a few arbitrary (possibly unaligned, bigger or smaller) blocks.
        for _ in range(rng.randint(0, 3)):
            p = rng.randint(cfg.network.prefixlen, 30)
            a = int(cfg.network.network_address) + rng.randrange(cfg.network.num_addresses)
            taken.append(N((a >> (32 - p) << (32 - p), p)))
        limit = rng.choice([1, 5, 100, 10_000])
        assert free_subnets(cfg, taken, limit) == _brute_free(cfg, taken)[:limit], seed


# -- subnet.env ------------------------------------------------------------------------


def test_subnet_env_exact_text():
    cfg = NetworkConfig.from_json(LAB)
    assert subnet_env(cfg, N("10.1.1.0/24"), 1400) == (
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.1.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
    assert subnet_env(cfg, N("10.1.79.0/24"), 1450, ipmasq=False).endswith("FLANNEL_IPMASQ=false\n")


def test_parse_subnet_env():
    cfg = NetworkConfig.from_json(LAB)
    text = subnet_env(cfg, N("10.1.79.0/24"), 1450)
    assert parse_subnet_env(text) == {"FLANNEL_NETWORK": "10.1.0.0/16", "FLANNEL_SUBNET": "10.1.79.1/24",
                                      "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true"}
    assert parse_subnet_env('# c\n\nexport A="x y"\nB=\'1\'\nC=2 # note\nnonsense\n') == {
        "A": "x y", "B": "1", "C": "2"}


def test_previous_subnet():
    assert previous_subnet("FLANNEL_SUBNET=10.1.79.1/24\n") == N("10.1.79.0/24")
    assert previous_subnet("FLANNEL_NETWORK=10.1.0.0/16\n") is None
    assert previous_subnet("") is None
    assert previous_subnet("FLANNEL_SUBNET=garbage\n") is None
    assert previous_subnet("FLANNEL_SUBNET=10.1.79.1/24,10.1.80.1/24\n") is None
    assert previous_subnet("FLANNEL_SUBNET=fc00::1/64\n") is None


# -- VTEP MAC -----------------------------------------------------------------------------


def test_vtep_mac_stable_local_unicast():
    macs = {vtep_mac(f"node-{i}") for i in range(2000)}
    assert len(macs) == 2000
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01
        assert mac == mac.lower() and len(mac) == 17
    assert vtep_mac("node-a") == vtep_mac("node-a")
    assert vtep_mac("node-a") != vtep_mac("node-b")
    # Usable in a lease value as is.
    assert parse_lease_value(lease_value("10.0.0.1", vtep_mac("node-a"), 1)).vtep_mac == vtep_mac("node-a")
