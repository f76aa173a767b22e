"""Cluster DNS server: what the pods of Deployment kube-system/coredns run (CoreDNS's part).

Owns answering DNS for the cluster domain on UDP and TCP port 53 inside its pod, from an
informer cache of Services and Endpoints: one list, then one watch per resource against
the API server, which it reaches as any pod does (the `kubernetes` service, its
service-account token, the lab CA), exactly as CoreDNS's kubernetes plugin does. The
answers come from the pure netlab.plan.dns.answer(); dnslib's DNSServer does the wire
format and the sockets. Traffic reaches it through the kube-dns Service (192.1.0.10), so
it crosses the proxy's UDP and TCP paths like any service's.

Run as: python -m netlab.agent.dns --domain cluster.local [--port 53]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import ssl
import threading
import time

from dnslib import A, QTYPE, RCODE, RR, SOA, SRV, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from netlab.plan import dns

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
log = logging.getLogger("netlab.dns")


class Cache:
    """Services and Endpoints by (namespace, name), kept by list + watch (an informer)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.data: dict[str, dict[tuple[str, str], dict]] = {"services": {}, "endpoints": {}}
        self.synced = {k: threading.Event() for k in self.data}

    def replace(self, kind: str, items: list[dict]) -> None:
        with self.lock:
            self.data[kind] = {_key(o): o for o in items}
        self.synced[kind].set()

    def event(self, kind: str, typ: str, obj: dict) -> None:
        with self.lock:
            if typ == "DELETED":
                self.data[kind].pop(_key(obj), None)
            elif typ in ("ADDED", "MODIFIED"):
                self.data[kind][_key(obj)] = obj

    def snapshot(self) -> tuple[dict, dict]:
        with self.lock:
            return self.data["services"], self.data["endpoints"]  # replaced or mutated under the lock only


def _key(obj: dict) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return m.get("namespace", "default"), m.get("name", "")


class Api:
    """The API server as a pod sees it: https://$KUBERNETES_SERVICE_HOST, bearer token, lab CA."""

    def __init__(self):
        self.host = os.environ.get("KUBERNETES_SERVICE_HOST", "192.1.0.1")
        self.port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
        self.ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
        self.ctx.check_hostname = False  # the certificate names the service's IP; we dial it anyway

    def _conn(self, timeout: float | None):
        token = open(f"{SA}/token").read().strip()
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        return c, {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def list(self, kind: str) -> tuple[list[dict], str]:
        c, h = self._conn(10)
        try:
            c.request("GET", f"/api/v1/{kind}", headers=h)
            r = c.getresponse()
            body = json.loads(r.read())
            if r.status != 200:
                raise RuntimeError(f"list {kind}: {r.status} {body.get('message')}")
            return body.get("items") or [], body["metadata"]["resourceVersion"]
        finally:
            c.close()

    def watch(self, kind: str, rv: str):
        c, h = self._conn(None)
        c.request("GET", f"/api/v1/{kind}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true", headers=h)
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"watch {kind}: {r.status}")
        try:
            while True:
                line = r.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            c.close()


def informer(api: Api, cache: Cache, kind: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            items, rv = api.list(kind)
            cache.replace(kind, items)
            for ev in api.watch(kind, rv):
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    break  # 410 Gone and the like: list again
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if typ != "BOOKMARK":
                    cache.event(kind, typ, obj)
        except Exception as e:  # noqa: BLE001 - the API server restarts; list again
            log.warning("%s informer: %s; listing again", kind, e)
            stop.wait(0.5)


class Resolver(BaseResolver):
    def __init__(self, domain: str, cache: Cache):
        self.domain = domain
        self.cache = cache

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        reply = request.reply()
        q = request.q
        services, endpoints = self.cache.snapshot()
        with self.cache.lock:
            ans = dns.answer(str(q.qname), QTYPE[q.qtype], self.domain, services, endpoints)
        reply.header.rcode = getattr(RCODE, ans.rcode)
        for section, add in ((ans.records, reply.add_answer), (ans.authority, reply.add_auth),
                             (ans.additional, reply.add_ar)):
            for rec in section:
                add(_rr(rec))
        return reply


def _rr(rec: dns.Record) -> RR:
    if rec.type == "A":
        rdata = A(rec.data[0])
    elif rec.type == "SRV":
        pri, weight, port, target = rec.data
        rdata = SRV(pri, weight, port, target + ".")
    else:
        mname, rname, serial, refresh, retry, expire, minimum = rec.data
        rdata = SOA(mname + ".", rname + ".", (serial, refresh, retry, expire, minimum))
    return RR(rec.name + ".", getattr(QTYPE, rec.type), rdata=rdata, ttl=rec.ttl)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="netlab-dns")
    ap.add_argument("--domain", default="cluster.local")
    ap.add_argument("--port", type=int, default=53)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cache, stop = Cache(), threading.Event()
    api = Api()
    for kind in cache.data:
        threading.Thread(target=informer, args=(api, cache, kind, stop), name=kind, daemon=True).start()
    for ev in cache.synced.values():  # serve only once the caches hold the cluster (CoreDNS waits too)
        ev.wait()
    resolver = Resolver(args.domain, cache)
    servers = [DNSServer(resolver, port=args.port, address="0.0.0.0", tcp=tcp, logger=_Quiet()) for tcp in (False, True)]
    for s in servers:
        s.start_thread()
    log.info("serving %s on udp and tcp port %d", args.domain, args.port)
    while True:
        time.sleep(3600)


class _Quiet:
    """dnslib's DNSLogger minus a line per query (a busy lab would fill the pod's log)."""

    def __getattr__(self, name):
        return lambda *a, **k: None


if __name__ == "__main__":
    main()
