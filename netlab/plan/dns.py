"""Cluster DNS answers (the Kubernetes DNS spec, as CoreDNS's kubernetes plugin gives them).

Owns the pure mapping from (question, the Services and Endpoints a DNS server's cache
holds) to an answer: a response code and records as plain tuples, no wire format (the
server turns them into dnslib records). For the zone `<domain>` (cluster.local):

- `<svc>.<ns>.svc.<domain>` A: the cluster IP; for a headless service (clusterIP: None)
  one A per ready endpoint address; `<a-b-c-d>.<svc>.<ns>.svc.<domain>` for each of them.
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for each named port (headless: one per
  endpoint, its target the endpoint's own name).
- `<a-b-c-d>.<ns>.pod.<domain>` A: that address (CoreDNS's `pods insecure`, kubeadm's default).
- Names that exist with no record of the asked type, and the zone's inner names
  (`svc.<domain>`, `<ns>.svc.<domain>`): NOERROR without answers. Anything else in the zone:
  NXDOMAIN (with the zone's SOA, so resolvers may cache the negative answer briefly).
- Names outside the zone: REFUSED (the lab has no upstream resolver).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

TTL = 5  # CoreDNS kubernetes plugin's default
NOERROR, NXDOMAIN, REFUSED = "NOERROR", "NXDOMAIN", "REFUSED"


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, no trailing dot
    type: str  # A, SRV, SOA
    data: tuple  # A: (ip,); SRV: (priority, weight, port, target)
    ttl: int = TTL


@dataclass
class Answer:
    rcode: str
    records: list[Record]
    authority: list[Record]
    additional: list[Record] = field(default_factory=list)  # SRV targets' A records


def soa(domain: str) -> Record:
    # CoreDNS: ns.dns.<zone> hostmaster.<zone>, minimum TTL = the plugin's TTL.
    return Record(domain, "SOA", (f"ns.dns.{domain}", f"hostmaster.{domain}", 1, 7200, 1800, 86400, TTL))


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def _ready(ep: dict | None) -> list[str]:
    out = {a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get("addresses") or [] if a.get("ip")}
    return sorted(out, key=lambda i: ipaddress.IPv4Address(i).packed)


def _ep_ports(ep: dict | None, name: str, proto: str) -> list[tuple[str, int]]:
    return sorted({(a["ip"], int(p["port"])) for s in (ep or {}).get("subsets") or []
                   for p in s.get("ports") or [] if (p.get("name") or "") == name
                   and (p.get("protocol") or "TCP") == proto for a in s.get("addresses") or []})


def answer(qname: str, qtype: str, domain: str, services: dict[tuple[str, str], dict],
           endpoints: dict[tuple[str, str], dict]) -> Answer:
    """The answer to one question; `services`/`endpoints` are keyed by (namespace, name)."""
    name = qname.rstrip(".").lower()
    if name != domain and not name.endswith("." + domain):
        return Answer(REFUSED, [], [])
    neg = Answer(NXDOMAIN, [], [soa(domain)])
    empty = Answer(NOERROR, [], [soa(domain)])
    rel = name[: -len(domain)].rstrip(".")
    labels = rel.split(".") if rel else []
    if qtype == "SOA" and not labels:
        return Answer(NOERROR, [soa(domain)], [])
    if not labels or labels == ["svc"] or labels == ["pod"]:
        return empty
    if labels[-1] == "pod":
        if len(labels) == 2:
            return empty  # <ns>.pod.<domain>
        if len(labels) == 3:
            try:
                ip = str(ipaddress.IPv4Address(labels[0].replace("-", ".")))
            except ValueError:
                return neg
            if dashed(ip) != labels[0]:
                return neg
            return Answer(NOERROR, [Record(name, "A", (ip,))] if qtype in ("A", "ANY") else [], [])
        return neg
    if labels[-1] != "svc":
        return neg
    parts = labels[:-1]  # [..., svc, ns]
    if len(parts) == 1:
        return empty if any(ns == parts[0] for ns, _ in services) else neg
    ns, svc_name = parts[-1], parts[-2]
    svc = services.get((ns, svc_name))
    if svc is None:
        return neg
    spec = svc.get("spec") or {}
    ep = endpoints.get((ns, svc_name))
    headless = spec.get("clusterIP") == "None"
    base = f"{svc_name}.{ns}.svc.{domain}"
    rest = parts[:-2]
    if not rest:  # the service itself
        if qtype not in ("A", "ANY"):
            return empty
        ips = _ready(ep) if headless else [spec.get("clusterIP")] if spec.get("clusterIP") else []
        return Answer(NOERROR, [Record(name, "A", (ip,)) for ip in ips], [])
    if len(rest) == 1 and headless:  # one endpoint of a headless service
        match = [ip for ip in _ready(ep) if dashed(ip) == rest[0]]
        if not match:
            return neg
        return Answer(NOERROR, [Record(name, "A", (match[0],))] if qtype in ("A", "ANY") else [], [])
    if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
        port_name, proto = rest[0][1:], rest[1][1:].upper()
        ports = [p for p in spec.get("ports") or [] if p.get("name") == port_name
                 and (p.get("protocol") or "TCP") == proto]
        if not ports:
            return neg
        if qtype not in ("SRV", "ANY"):
            return empty
        if headless:
            recs = [Record(name, "SRV", (0, 100, port, f"{dashed(ip)}.{base}"))
                    for ip, port in _ep_ports(ep, port_name, proto)]
            extra = [Record(f"{dashed(ip)}.{base}", "A", (ip,)) for ip, _ in _ep_ports(ep, port_name, proto)]
            return Answer(NOERROR, recs, [], extra)
        return Answer(NOERROR, [Record(name, "SRV", (0, 100, int(ports[0]["port"]), base))], [],
                      [Record(base, "A", (spec["clusterIP"],))])
    return neg


# --------------------------------------------------------------------------- the add-on
def addon_manifests(dns_ip: str, domain: str, replicas: int, argv: list[str]) -> list[dict]:
    """Deployment kube-system/coredns and Service kube-system/kube-dns, shaped as kubeadm's.

    `argv`: the server's command (netlab runs host programs in pods: this interpreter with
    -m netlab.agent.dns). dnsPolicy Default: the DNS server does not resolve through itself.
    """
    labels = {"k8s-app": "kube-dns"}
    container = {"name": "coredns", "command": [*argv, "--domain", domain],
                 "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                           {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(labels)},
           "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                    "template": {"metadata": {"labels": dict(labels)},
                                 "spec": {"dnsPolicy": "Default", "containers": [container]}}}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kube-dns", "namespace": "kube-system",
                        "labels": {**labels, "kubernetes.io/name": "CoreDNS"}},
           "spec": {"type": "ClusterIP", "clusterIP": dns_ip, "selector": dict(labels),
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                              {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}
    return [dep, svc]


def resolv_conf(dns_ip: str, namespace: str, domain: str) -> str:
    """/etc/resolv.conf of a ClusterFirst pod, as the kubelet writes it."""
    return (f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {dns_ip}\noptions ndots:5\n")
