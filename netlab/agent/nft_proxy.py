"""kube-proxy (nftables mode) on a worker: Services + Endpoints in etcd -> table ip kube-proxy.

Owns the node's `ip kube-proxy` nftables table (and nothing in iptables). The etcd side (list,
watch, informer cache, status report) is ProxyRole's; only the kernel side differs:

- a full sync replaces the whole table in one `nft -f` transaction (add, delete, define)
  at start, every FULL_SYNC_SECONDS (or 20 times its own cost if longer), after a lost
  watch, and when the table's `services`
  chain is gone (the canary check, read with `nft -j`);
- in between, each change is one transaction of only the changed services' map elements
  and chains (plan.nft_rules.delta_ops): a raw nfnetlink batch (kernel.nft_netlink) when
  the table uses the rule form below, `nft -f` otherwise (nft reads the whole table into
  its cache first: ~0.3 s per change at 10,000 services, ~5 ms at a lab's 10); if it
  fails, a full sync follows (also when a change holds a rule the netlink encoder does not
  know: the externalTrafficPolicy Local and loadBalancerSourceRanges rules);
- endpoint choice: kube-proxy's `numgen random mod N vmap {...}` while the node has at most
  VMAP_LIMIT services; above that, the same choice as plain rules, because the kernel's
  cost of thousands of anonymous maps grows quadratically (2,000 services: 2.6 s instead
  of 0.7 s to load; docs/performance.md). The form is picked at each full sync;
- conntrack entries of removed UDP endpoints are flushed as in the iptables mode.
"""

from __future__ import annotations

import time

from netlab.agent.proxy import Input, ProxyRole, SvcKey
from netlab.errors import KernelError
from netlab.kernel import nft, nft_netlink
from netlab.plan import nft_rules

VMAP_LIMIT = 1000


class NftProxyRole(ProxyRole):
    name = "proxy"

    def __init__(self, agent):
        super().__init__(agent)
        self._contribs: dict[SvcKey, nft_rules.Contribution] = {}
        self._vmap = True
        self._full_cost = 0.0
        self._sock = None  # NETLINK_NETFILTER socket in this node's namespace, made on first use

    def _full_sync_every(self) -> float:
        # Periodic full syncs stay a small share of the time (a 10,000-service load takes
        # seconds); changes never wait for them.
        return max(super()._full_sync_every(), 20 * self._full_cost)

    def _full_sync(self, inputs: dict[SvcKey, Input | None], rev: int) -> None:
        t0 = time.perf_counter()
        live = {k: v for k, v in inputs.items() if v}
        self._vmap = len(live) <= VMAP_LIMIT
        contribs = {k: nft_rules.contribution(v, vmap=self._vmap) for k, v in live.items()}
        text = nft_rules.full_text(contribs.values())
        nft.nft_apply(None, text)
        if self._last_full:
            self._flush_udp(self._applied, live)
        self._applied, self._contribs = live, contribs
        self._need_full = self._read_kernel = False
        self._last_full = time.monotonic()
        self._full_cost = time.perf_counter() - t0
        self._done("full", t0, rev, len(text))

    def _partial_sync(self, inputs: dict[SvcKey, Input | None], rev: int) -> None:
        t0 = time.perf_counter()
        changed = {k: v or None for k, v in inputs.items() if (self._applied.get(k) or None) != (v or None)}
        if not changed:
            return
        new = {k: nft_rules.contribution(v, vmap=self._vmap) if v else None for k, v in changed.items()}
        pairs = [(self._contribs.get(k), c) for k, c in new.items()]
        if self._vmap:
            text = nft_rules.delta_text(pairs)
            if text:
                nft.nft_apply(None, text)
            size = len(text)
        else:
            try:
                if self._sock is None:
                    self._sock = nft_netlink.open_socket()
                size = nft_netlink.apply_ops(self._sock, nft_rules.TABLE, nft_rules.delta_ops(pairs))
            except ValueError as e:  # a rule form the encoder does not know: nothing was sent
                raise KernelError(str(e)) from None
        old = {k: self._applied.get(k) for k in changed}
        for k, v in changed.items():
            if v:
                self._applied[k], self._contribs[k] = v, new[k]
            else:
                self._applied.pop(k, None)
                self._contribs.pop(k, None)
        self._flush_udp(old, {k: v for k, v in changed.items() if v})
        self._done("partial", t0, rev, size)

    def _check_canary(self) -> None:
        # kube-proxy's own chains are the canary: `services` gone (table deleted or flushed
        # by hand) means the kernel no longer holds what we wrote.
        now = time.monotonic()
        if self._need_full or now - self._last_canary < max(1.0, 20 * self._canary_cost):
            return
        t0 = time.perf_counter()
        objs = nft.nft_json(None, "list", "chain", nft_rules.FAMILY, nft_rules.TABLE, "services")
        rules = [o for o in objs if "rule" in o]
        self._canary_cost = time.perf_counter() - t0
        self._last_canary = time.monotonic()
        if len(rules) != len(nft_rules.BASE_RULES["services"]):
            self.log.warning("chain services of table %s %s has %d rules: someone changed the "
                             "rules; full resync", nft_rules.FAMILY, nft_rules.TABLE, len(rules))
            self._need_full = True
