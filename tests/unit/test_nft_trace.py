"""plan.nft_trace: `netlab trace` reading kube-proxy's nftables table from `nft -j` JSON.

The fixture is `nft -j list table ip kube-proxy` as nft 1.0.6 printed it after loading
plan.nft_rules.full_text() for the seed's two services and a service without endpoints.
"""

import json
from pathlib import Path

from netlab.plan.nft_trace import NftRules
from netlab.plan.trace import HookEnv, Packet

DATA = Path(__file__).parent / "data" / "nft-seed-table.json"
NODE = {"172.23.100.5", "10.1.1.1", "127.0.0.1"}


def rules() -> NftRules:
    return NftRules([o for o in json.loads(DATA.read_text())["nftables"] if "metainfo" not in o])


def env(hook, prefer=None):
    return HookEnv(hook, "docker0", None, NODE, lambda dev: "10.1.1.1", prefer)


def test_base_chains_with_priorities():
    r = rules()
    assert sorted(r.base_chains("PREROUTING")) == [(-110, "kube-proxy", "filter-prerouting"),
                                                  (-100, "kube-proxy", "nat-prerouting")]
    assert sorted(r.base_chains("OUTPUT"))[-1] == (-90, "kube-proxy", "filter-output-post-dnat")
    assert r.has_services()


def test_cluster_ip_is_dnated_to_the_preferred_endpoint_with_both_listed():
    r = rules()
    pkt = Packet("tcp", "10.1.1.7", "192.1.47.211", 40000, 80)
    for prefer, want in ((None, "10.1.1.4"), ("10.1.79.11", "10.1.79.11")):
        res = r.run("kube-proxy", "nat-prerouting", pkt, env("PREROUTING", prefer))
        assert res.verdict == "ACCEPT" and (res.packet.dst, res.packet.dport) == (want, 80)
        (choice,) = [d for d in res.decisions if d.choices]
        assert {c.endpoint for c in choice.choices} == {"10.1.1.4:80", "10.1.79.11:80"}
        assert [c.probability for c in choice.choices] == [0.5, 0.5]
        assert res.packet.mark == 0  # not its own endpoint: no hairpin mark


def test_hairpin_marks_and_node_port_masquerades():
    r = rules()
    res = r.run("kube-proxy", "nat-prerouting", Packet("tcp", "10.1.1.4", "192.1.47.211", 1, 80), env("PREROUTING"))
    assert res.packet.dst == "10.1.1.4" and res.packet.mark == 0x4000
    res = r.run("kube-proxy", "nat-prerouting", Packet("tcp", "172.23.100.1", "172.23.100.5", 1, 31295),
                env("PREROUTING"))
    assert res.packet.dst in ("10.1.1.4", "10.1.79.11") and res.packet.mark == 0x4000
    # another node's address is not local here: no node port
    res = r.run("kube-proxy", "nat-prerouting", Packet("tcp", "172.23.100.1", "172.23.100.6", 1, 31295),
                env("PREROUTING"))
    assert res.packet.dst == "172.23.100.6" and not res.decisions[1:]


def test_rejections():
    r = rules()
    no_ep = r.run("kube-proxy", "filter-forward", Packet("tcp", "10.1.1.7", "192.1.3.3", 1, 80), env("FORWARD"))
    assert no_ep.verdict == "REJECT" and "no-endpoint-services" in no_ep.decisions[-2].text
    other_port = r.run("kube-proxy", "filter-output-post-dnat", Packet("tcp", "172.23.100.5", "192.1.47.211", 1, 81),
                       env("OUTPUT"))
    assert other_port.verdict == "REJECT"
    fine = r.run("kube-proxy", "filter-forward", Packet("tcp", "10.1.1.7", "10.1.79.11", 1, 80), env("FORWARD"))
    assert fine.verdict == "ACCEPT"
