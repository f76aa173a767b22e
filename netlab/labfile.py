"""Lab file: the YAML description of a lab, its validation, and the embedded default lab.

Everything is checked here, before any kernel object is touched: an error names the field
path (`nodes[2].ip: '172.23.100.300' is not an IPv4 address`) and maps to exit code 2.
"""

from __future__ import annotations

import ipaddress
import re
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netlab import names, yamlin
from netlab.errors import LabNotUp, UsageError

DEFAULT_MAX_PODS = 110
SUPPORTED_WORKLOAD_KINDS = {("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Pod")}


def _ipv4(v: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(str(v)))
    except ValueError:
        raise ValueError(f"'{v}' is not an IPv4 address") from None


def _net4(v: Any) -> str:
    try:
        return str(ipaddress.IPv4Network(str(v), strict=True))
    except ValueError:
        raise ValueError(f"'{v}' is not an IPv4 network in CIDR form (like 10.1.0.0/16)") from None


def _duration_seconds(v: Any) -> int:
    if isinstance(v, int) and v > 0:
        return v
    m = re.fullmatch(r"(\d+)([smhd])", str(v))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"'{v}' is not a duration (like 30s, 10m, 24h)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class NodeNetwork(_Model):
    cidr: str
    gateway: str
    mtu: int = Field(1450, ge=1280, le=9000)

    _cidr = field_validator("cidr", mode="before")(_net4)
    _gw = field_validator("gateway", mode="before")(_ipv4)

    @model_validator(mode="after")
    def _gateway_inside(self):
        if ipaddress.IPv4Address(self.gateway) not in ipaddress.IPv4Network(self.cidr):
            raise ValueError(f"gateway {self.gateway} is not inside cidr {self.cidr}")
        return self


class PodRange(_Model):
    range_start: str | None = Field(None, alias="rangeStart")
    range_end: str | None = Field(None, alias="rangeEnd")

    @field_validator("range_start", "range_end", mode="before")
    @classmethod
    def _ip(cls, v):
        return None if v is None else _ipv4(v)


class Node(_Model):
    name: str
    ip: str
    role: Literal["master", "worker"] = "worker"
    pod_range: PodRange = Field(default_factory=PodRange, alias="podRange")
    # The kubelet's --max-pods: how many pods the scheduler binds here (also bounded by the
    # node's IPAM range, see Lab.pod_capacity). Kubernetes' default is 110.
    max_pods: int | None = Field(None, alias="maxPods", ge=1, le=65536)  # None: DEFAULT_MAX_PODS

    _ip = field_validator("ip", mode="before")(_ipv4)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not names.NODE_NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a valid node name (lower-case letters, digits, '-', at most 32)")
        if v.startswith("pod-") or v == "net":
            raise ValueError(f"'{v}' is reserved (node names may not be 'net' or start with 'pod-')")
        return v


class Etcd(_Model):
    node: str | None = None  # default: the master
    client_port: int = Field(2379, alias="clientPort", ge=1, le=65535)
    peer_port: int = Field(2380, alias="peerPort", ge=1, le=65535)


class Backend(_Model):
    type: Literal["vxlan"] = Field("vxlan", alias="Type")
    vni: int | None = Field(None, alias="VNI", ge=1, le=16777215)
    port: int | None = Field(None, alias="Port", ge=1, le=65535)


class Flannel(_Model):
    network: str = Field(alias="Network")
    subnet_len: int | None = Field(None, alias="SubnetLen", ge=8, le=30)
    subnet_min: str | None = Field(None, alias="SubnetMin")
    subnet_max: str | None = Field(None, alias="SubnetMax")
    backend: Backend = Field(default_factory=Backend, alias="Backend")
    lease_ttl: int = Field(24 * 3600, alias="leaseTTL")
    ip_masq: bool = Field(True, alias="ipMasq")
    nodes: list[str] | None = None  # which nodes run flannel; default: all
    reservations: dict[str, str] = Field(default_factory=dict)

    _net = field_validator("network", mode="before")(_net4)
    _ttl = field_validator("lease_ttl", mode="before")(_duration_seconds)

    @field_validator("subnet_min", "subnet_max", mode="before")
    @classmethod
    def _ip(cls, v):
        return None if v is None else _ipv4(v)

    @field_validator("reservations", mode="before")
    @classmethod
    def _res(cls, v):
        if not isinstance(v, dict):
            raise ValueError("must be a mapping of node name to subnet")
        out = {}
        for node, subnet in v.items():
            try:
                out[str(node)] = _net4(subnet)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        return out

    def config_json(self) -> dict:
        """/coreos.com/network/config as flannel reads it: only the fields the lab sets."""
        cfg: dict[str, Any] = {"Network": self.network}
        if self.subnet_len is not None:
            cfg["SubnetLen"] = self.subnet_len
        if self.subnet_min:
            cfg["SubnetMin"] = self.subnet_min
        if self.subnet_max:
            cfg["SubnetMax"] = self.subnet_max
        backend: dict[str, Any] = {"Type": self.backend.type}
        if self.backend.vni is not None:
            backend["VNI"] = self.backend.vni
        if self.backend.port is not None:
            backend["Port"] = self.backend.port
        cfg["Backend"] = backend
        return cfg


class Services(_Model):
    cluster_ip_range: str = Field("192.1.0.0/16", alias="clusterIPRange")
    node_port_range: str = Field("30000-32767", alias="nodePortRange")
    # LoadBalancer addresses: a range on the node network, announced by ARP (L2, as MetalLB).
    load_balancer_pool: str = Field("172.23.100.200-172.23.100.250", alias="loadBalancerPool")

    _cidr = field_validator("cluster_ip_range", mode="before")(_net4)

    @field_validator("load_balancer_pool", mode="before")
    @classmethod
    def _pool(cls, v):
        lo, sep, hi = str(v).partition("-")
        try:
            a, b = ipaddress.IPv4Address(lo.strip()), ipaddress.IPv4Address(hi.strip())
        except ValueError:
            raise ValueError(f"'{v}' is not an address range like 172.23.100.200-172.23.100.250") from None
        if not sep or a > b:
            raise ValueError(f"'{v}' is not an address range like 172.23.100.200-172.23.100.250")
        return f"{a}-{b}"

    @property
    def lb_pool(self) -> tuple[int, int]:
        """First and last LoadBalancer address, as ints."""
        lo, hi = self.load_balancer_pool.split("-")
        return int(ipaddress.IPv4Address(lo)), int(ipaddress.IPv4Address(hi))

    @field_validator("node_port_range", mode="before")
    @classmethod
    def _ports(cls, v):
        m = re.fullmatch(r"(\d+)-(\d+)", str(v))
        if not m or not (1 <= int(m.group(1)) < int(m.group(2)) <= 65535):
            raise ValueError(f"'{v}' is not a port range like 30000-32767")
        return str(v)

    @property
    def node_ports(self) -> tuple[int, int]:
        lo, hi = self.node_port_range.split("-")
        return int(lo), int(hi)


class Dns(_Model):
    """Cluster DNS: the kube-dns Service's address, the cluster domain, the Deployment's size."""
    cluster_ip: str | None = Field(None, alias="clusterIP")  # default: the range's 10th (192.1.0.10)
    domain: str = "cluster.local"
    replicas: int = Field(1, ge=0, le=10)

    @field_validator("cluster_ip", mode="before")
    @classmethod
    def _ip(cls, v):
        return None if v is None else _ipv4(v)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", v):
            raise ValueError(f"'{v}' is not a DNS domain (like cluster.local)")
        return v


class KubeProxy(_Model):
    # iptables: the seed's kube-proxy; nftables: kube-proxy's nftables mode (KEP-3866).
    mode: Literal["iptables", "nftables"] = "iptables"


class Lab(_Model):
    api_version: Literal["netlab/v1"] = Field("netlab/v1", alias="apiVersion")
    kind: Literal["Lab"] = "Lab"
    name: str
    node_network: NodeNetwork = Field(alias="nodeNetwork")
    nodes: list[Node] = Field(min_length=1)
    etcd: Etcd = Field(default_factory=Etcd)
    flannel: Flannel
    services: Services = Field(default_factory=Services)
    dns: Dns = Field(default_factory=Dns)
    kube_proxy: KubeProxy = Field(default_factory=KubeProxy, alias="kubeProxy")
    # Kubernetes manifests (Deployment apps/v1, Service v1, Pod v1) applied after `up`.
    workloads: list[dict[str, Any]] = Field(default_factory=list)
    # kube-controller-manager's --node-monitor-grace-period: a node whose lease is older is
    # NotReady and its pods are evicted (recreated elsewhere by their deployments).
    node_monitor_grace_period: int = Field(10, alias="nodeMonitorGracePeriod")

    _grace = field_validator("node_monitor_grace_period", mode="before")(_duration_seconds)

    @field_validator("node_monitor_grace_period")
    @classmethod
    def _grace_min(cls, v: int) -> int:
        if v < 3:
            raise ValueError(f"{v}s is too short: agents renew their node lease every 2s (use 3s or more)")
        return v

    @field_validator("name")
    @classmethod
    def _lab_name(cls, v: str) -> str:
        if not names.LAB_NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a valid lab name (a lower-case letter, then up to 11 letters or digits; no '-')")
        return v

    @field_validator("workloads")
    @classmethod
    def _workloads(cls, v: list[dict]) -> list[dict]:
        for i, doc in enumerate(v):
            if not isinstance(doc, dict):
                raise ValueError(f"[{i}] is not a mapping")
            key = (doc.get("apiVersion"), doc.get("kind"))
            if not all(isinstance(k, str) for k in key) or key not in SUPPORTED_WORKLOAD_KINDS:
                raise ValueError(f"[{i}]: apiVersion/kind {yamlin.short(key[0])}/{yamlin.short(key[1])} is not supported "
                                 "(Deployment apps/v1, Service v1, Pod v1)")
            meta = doc.get("metadata")
            if not isinstance(meta, dict) or not meta.get("name"):
                raise ValueError(f"[{i}].metadata.name is required")
        return v

    @model_validator(mode="after")
    def _cross(self):
        net = ipaddress.IPv4Network(self.node_network.cidr)
        seen_names: dict[str, int] = {}
        seen_ips: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            if n.name in seen_names:
                raise _PathError(f"nodes[{i}].name", f"'{n.name}' is already used by nodes[{seen_names[n.name]}]")
            seen_names[n.name] = i
            ip = ipaddress.IPv4Address(n.ip)
            if ip not in net or ip in (net.network_address, net.broadcast_address):
                raise _PathError(f"nodes[{i}].ip", f"{n.ip} is not a host address of nodeNetwork.cidr {net}")
            if n.ip == self.node_network.gateway:
                raise _PathError(f"nodes[{i}].ip", f"{n.ip} is the gateway (the router / outside host)")
            if n.ip in seen_ips:
                raise _PathError(f"nodes[{i}].ip", f"{n.ip} is already used by nodes[{seen_ips[n.ip]}]")
            seen_ips[n.ip] = i
        masters = [n for n in self.nodes if n.role == "master"]
        if len(masters) != 1:
            raise _PathError("nodes", f"exactly one node must have role master (found {len(masters)})")
        if self.etcd.node is not None and self.etcd.node not in seen_names:
            raise _PathError("etcd.node", f"'{self.etcd.node}' is not a node of this lab")
        if self.etcd.client_port == self.etcd.peer_port:
            raise _PathError("etcd.peerPort", "must differ from etcd.clientPort")
        fnet = ipaddress.IPv4Network(self.flannel.network)
        snet = ipaddress.IPv4Network(self.services.cluster_ip_range)
        for path, other in (("flannel.Network", fnet), ("services.clusterIPRange", snet)):
            if other.overlaps(net):
                raise _PathError(path, f"{other} overlaps nodeNetwork.cidr {net}")
        if fnet.overlaps(snet):
            raise _PathError("services.clusterIPRange", f"{snet} overlaps flannel.Network {fnet}")
        lo, hi = self.services.lb_pool
        for a in (lo, hi):
            if ipaddress.IPv4Address(a) not in net or a in (int(net.network_address), int(net.broadcast_address)):
                raise _PathError("services.loadBalancerPool",
                                 f"{self.services.load_balancer_pool} is not inside nodeNetwork.cidr {net}")
        for i, n in enumerate(self.nodes):
            if lo <= int(ipaddress.IPv4Address(n.ip)) <= hi:
                raise _PathError("services.loadBalancerPool", f"holds {n.ip}, the address of nodes[{i}]")
        if lo <= int(ipaddress.IPv4Address(self.node_network.gateway)) <= hi:
            raise _PathError("services.loadBalancerPool", f"holds the gateway {self.node_network.gateway}")
        if self.dns.cluster_ip is not None:
            dip = ipaddress.IPv4Address(self.dns.cluster_ip)
            if dip not in snet or dip in (snet.network_address, snet.network_address + 1, snet.broadcast_address):
                raise _PathError("dns.clusterIP", f"{dip} is not an allocatable address of "
                                                  f"services.clusterIPRange {snet}")
        elif self.dns.replicas and snet.num_addresses < 12:
            raise _PathError("dns.clusterIP", f"required: services.clusterIPRange {snet} has no 10th address")
        slen = self.flannel.subnet_len or (24 if fnet.prefixlen < 24 else fnet.prefixlen + 2)
        if slen <= fnet.prefixlen:
            raise _PathError("flannel.SubnetLen", f"{slen} must be longer than the network's /{fnet.prefixlen}")
        for key in ("subnet_min", "subnet_max"):
            val = getattr(self.flannel, key)
            if val and ipaddress.IPv4Address(val) not in fnet:
                alias = "SubnetMin" if key == "subnet_min" else "SubnetMax"
                raise _PathError(f"flannel.{alias}", f"{val} is not inside flannel.Network {fnet}")
        for node in self.flannel.nodes or []:
            if node not in seen_names:
                raise _PathError("flannel.nodes", f"'{node}' is not a node of this lab")
        res_seen: dict[str, str] = {}
        for node, subnet in self.flannel.reservations.items():
            path = f"flannel.reservations.{node}"
            if node not in seen_names:
                raise _PathError(path, f"'{node}' is not a node of this lab")
            sn = ipaddress.IPv4Network(subnet)
            if not sn.subnet_of(fnet) or sn.prefixlen != slen:
                raise _PathError(path, f"{subnet} is not a /{slen} inside flannel.Network {fnet}")
            if subnet in res_seen:
                raise _PathError(path, f"{subnet} is already reserved for {res_seen[subnet]}")
            res_seen[subnet] = node
        for i, n in enumerate(self.nodes):
            for key, alias in (("range_start", "rangeStart"), ("range_end", "rangeEnd")):
                val = getattr(n.pod_range, key)
                if val is None:
                    continue
                if ipaddress.IPv4Address(val) not in fnet:
                    raise _PathError(f"nodes[{i}].podRange.{alias}", f"{val} is not inside flannel.Network {fnet}")
                res = self.flannel.reservations.get(n.name)
                if res and ipaddress.IPv4Address(val) not in ipaddress.IPv4Network(res):
                    raise _PathError(f"nodes[{i}].podRange.{alias}",
                                     f"{val} is not inside the node's reserved subnet {res}")
            size = self.pod_range_size(n.name)
            if n.max_pods is not None and n.max_pods > size:
                raise _PathError(f"nodes[{i}].maxPods", f"{n.max_pods} is more than the {size} pod "
                                 f"addresses of the node's IPAM range (a /{self.subnet_len} subnet)")
        return self

    # -- convenience -------------------------------------------------------------
    @property
    def master(self) -> Node:
        return next(n for n in self.nodes if n.role == "master")

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    @property
    def etcd_node(self) -> Node:
        return self.node(self.etcd.node) if self.etcd.node else self.master

    @property
    def dns_ip(self) -> str:
        """kube-dns's cluster IP: dns.clusterIP, or the service range's 10th address (kubeadm's)."""
        if self.dns.cluster_ip:
            return self.dns.cluster_ip
        return str(ipaddress.IPv4Network(self.services.cluster_ip_range).network_address + 10)

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.etcd_node.ip}:{self.etcd.client_port}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.node_network.cidr).prefixlen

    @property
    def subnet_len(self) -> int:
        """The length of each node's flannel subnet (flannel's default: /24 in a /16)."""
        fnet = ipaddress.IPv4Network(self.flannel.network)
        return self.flannel.subnet_len or (24 if fnet.prefixlen < 24 else fnet.prefixlen + 2)

    def pod_range_size(self, name: str) -> int:
        """How many pod addresses host-local IPAM can give on the node: its subnet minus
        network, gateway (.1) and broadcast, or its podRange within the subnet."""
        n = self.node(name)
        size = 1 << (32 - self.subnet_len)
        net = int(ipaddress.IPv4Address(n.pod_range.range_start or n.pod_range.range_end or "0.0.0.0")) \
            & ~(size - 1) & 0xFFFFFFFF
        start = int(ipaddress.IPv4Address(n.pod_range.range_start)) if n.pod_range.range_start else net + 2
        end = int(ipaddress.IPv4Address(n.pod_range.range_end)) if n.pod_range.range_end else net + size - 2
        return max(0, end - max(start, net + 2) + 1)

    def pod_capacity(self, name: str) -> int:
        """Pods the scheduler may bind to a worker (0 on the master, which runs none)."""
        n = self.node(name)
        return 0 if n.role != "worker" else min(n.max_pods or DEFAULT_MAX_PODS, self.pod_range_size(name))

    @property
    def total_pod_capacity(self) -> int:
        return sum(self.pod_capacity(n.name) for n in self.workers)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise UsageError(f"node '{name}' is not part of lab '{self.name}' "
                         f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def flannel_nodes(self) -> list[Node]:
        if self.flannel.nodes is None:
            return list(self.nodes)
        return [n for n in self.nodes if n.name in self.flannel.nodes]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(by_alias=True, exclude_none=True), sort_keys=False)


class _PathError(ValueError):
    """Raised from model validators to point at a precise field path."""

    def __init__(self, path: str, msg: str):
        super().__init__(msg)
        self.path = path
        self.msg = msg


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _format(err: ValidationError) -> str:
    e = err.errors(include_url=False)[0]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _PathError):
        return f"{ctx_err.path}: {ctx_err.msg}"
    path = _loc_to_path(tuple(p for p in e["loc"] if p not in ("function-after",)))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif e["type"] in ("literal_error",):
        msg = f"{e.get('input')!r} is not allowed ({msg.removeprefix('Input should be ')})"
    elif "input" in e and e["type"] != "value_error" and not isinstance(e["input"], (dict, list)):
        msg = f"{e['input']!r}: {msg}"
    return f"{path}: {msg}" if path else msg


def parse_lab(text: str, source: str = "lab file") -> Lab:
    data = yamlin.load_one(text, source)  # duplicate keys, bombs, depth: refused there
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping at the top level")
    try:
        return Lab.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"{source}: {_format(e)}") from None


def default_lab_text() -> str:
    return resources.files("netlab.data").joinpath("default-lab.yaml").read_text()


def load_lab(path: str | Path | None) -> Lab:
    if path is None:
        return parse_lab(default_lab_text(), "default lab")
    if str(path) == "-":
        return parse_lab(yamlin.read_file("-"), "<stdin>")
    return parse_lab(yamlin.read_file(str(path)), str(path))


def load_running(lab: str) -> Lab:
    """The running lab's copy (/run/netlab/<lab>/lab.yaml, with runtime node changes): what
    the CLI, the host side and every agent read. LabNotUp if the lab is not up."""
    p = names.lab_copy(lab)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise LabNotUp(f"lab '{lab}' is not up (no {p}); start it with `netlab up`") from None
    return parse_lab(text, str(p))
