"""Pure parts of pods (issue 4): Pod validation and defaults, what a container runs, the
kubectl/docker listings, the scheduler's choice, IPAM's fast path and the rtnetlink
messages pods are wired with. No root needed."""

from __future__ import annotations

import errno
import re
import socket
import struct
from collections import Counter
from ipaddress import IPv4Address

import pytest

from netlab.agent.scheduler import choose
from netlab.api import meta, pods
from netlab.cli import output
from netlab.errors import AlreadyExists, KernelError, UsageError
from netlab.kernel import netlink
from netlab.lab import pods as node_pods
from netlab.plan import podrecord
from netlab.plan.ipam import HostLocal, IPAMExhausted


def pod(**spec_over) -> dict:
    c = {"name": "web", "image": "netlab/hello", "ports": [{"containerPort": 80}]}
    spec = {"containers": [c], **spec_over}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec}


# --------------------------------------------------------------------------- validation
def test_a_minimal_pod_gets_kubernetes_defaults():
    p = pods.validate_pod(pod())
    assert p == {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "web", "namespace": "default", "labels": {}},
                 "spec": {"containers": [{"name": "web", "image": "netlab/hello",
                                          "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                          "restartPolicy": "Always"}}
    # normalising twice changes nothing (apply compares normalised specs)
    assert pods.validate_pod(p) == p


def test_owner_references_uid_and_node_are_kept():
    p = pod(nodeName="kub-node-1")
    p["metadata"].update(uid="u-1", ownerReferences=[{"kind": "Deployment", "name": "d", "uid": "x"}],
                         labels={"run": "my-nginx8", "pod-template-hash": "5d8f"})
    v = pods.validate_pod(p)
    assert v["spec"]["nodeName"] == "kub-node-1" and v["metadata"]["uid"] == "u-1"
    assert v["metadata"]["ownerReferences"][0]["uid"] == "x"
    assert v["metadata"]["labels"] == {"run": "my-nginx8", "pod-template-hash": "5d8f"}


@pytest.mark.parametrize("edit, says", [
    (lambda p: p["metadata"].update(name="Web_1"), "metadata.name: 'Web_1' is not a DNS label"),
    (lambda p: p["metadata"].update(name="x" * 64), "metadata.name:"),
    (lambda p: p["spec"]["containers"][0].update(image="nginx:1.25"), "spec.containers[0].image: 'nginx:1.25'"),
    (lambda p: p["spec"]["containers"][0].pop("image"), "spec.containers[0].command: required"),
    (lambda p: p["spec"]["containers"][0].update(command="sleep 1"), "spec.containers[0].command: must be a list"),
    (lambda p: p["spec"]["containers"][0].update(volumeMounts=[]), "spec.containers[0].volumeMounts: not supported"),
    (lambda p: p["spec"].update(volumes=[]), "spec.volumes: not supported"),
    (lambda p: p["spec"].update(restartPolicy="Never"), "spec.restartPolicy:"),
    (lambda p: p["spec"]["containers"][0]["ports"][0].update(containerPort=0), "spec.containers[0].ports[0].containerPort"),
    (lambda p: p["spec"]["containers"][0]["ports"][0].update(protocol="SCTP"), "spec.containers[0].ports[0].protocol"),
    (lambda p: p["spec"]["containers"][0]["ports"][0].update(name="Http_Port"), "spec.containers[0].ports[0].name"),
    (lambda p: p["spec"]["containers"][0].update(env=[{"name": "1X", "value": "v"}]), "spec.containers[0].env[0].name"),
    (lambda p: p["spec"]["containers"][0].update(env=[{"name": "X", "value": 1}]), "spec.containers[0].env[0].value"),
    (lambda p: p["spec"]["containers"].append(dict(p["spec"]["containers"][0])), "spec.containers[1].name: 'web' is used twice"),
    (lambda p: p["spec"].update(containers=[]), "spec.containers: at least one"),
    (lambda p: p["metadata"].update(labels={"app": "a b"}), "metadata.labels.app"),
    (lambda p: p.update(kind="Deployment"), "apiVersion/kind"),
])
def test_bad_pods_name_the_field(edit, says):
    p = pod()
    edit(p)
    with pytest.raises(UsageError) as e:
        pods.validate_pod(p)
    assert says in str(e.value)


def test_new_pod_is_what_kubectl_run_makes():
    p = pods.validate_pod(pods.new_pod("web"))
    c = p["spec"]["containers"][0]
    assert p["metadata"]["labels"] == {"run": "web"} and "nodeName" not in p["spec"]
    assert c == {"name": "web", "image": "netlab/hello", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
    p = pods.validate_pod(pods.new_pod("job", command=["sh", "-c", "true"], node="kub-node-2",
                                       labels={"a": "b"}, env={"K": "V"}))
    c = p["spec"]["containers"][0]
    assert c == {"name": "job", "command": ["sh", "-c", "true"], "env": [{"name": "K", "value": "V"}]}
    assert p["spec"]["nodeName"] == "kub-node-2" and p["metadata"]["labels"] == {"a": "b"}


@pytest.mark.parametrize("container, argv", [
    ({"image": "netlab/hello"}, ["/b/netlab-hello", "--port", "80"]),
    ({"image": "netlab/hello", "ports": [{"containerPort": 53, "protocol": "UDP"},
                                         {"containerPort": 8080, "protocol": "TCP"}]},
     ["/b/netlab-hello", "--port", "8080"]),
    ({"image": "netlab/hello", "args": ["--port", "9"]}, ["/b/netlab-hello", "--port", "9"]),
    ({"image": "netlab/hello", "command": ["sleep"], "args": ["5"]}, ["sleep", "5"]),
    ({"command": ["netlab-hello", "--port", "81"]}, ["/b/netlab-hello", "--port", "81"]),
    ({"command": ["sh", "-c", "exit 3"]}, ["sh", "-c", "exit 3"]),
])
def test_container_argv_follows_kubernetes_command_and_args(container, argv):
    assert pods.container_argv(container, "/b/netlab-hello") == argv


# --------------------------------------------------------------------------- listings
def status(phase="Running", ready=True, restarts=0, waiting=None, node="kub-node-1", **extra):
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": "x"}}
    p = pods.validate_pod(pod(nodeName=node) if node else pod())
    p["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    p["status"] = {"phase": phase, "podIP": "10.1.1.4", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "web", "ready": ready, "restartCount": restarts, "state": state}],
        **extra}
    return p


def test_status_column_as_kubectl_prints_it():
    assert pods.status_text(status()) == "Running"
    assert pods.status_text(status(ready=False, restarts=4, waiting="CrashLoopBackOff")) == "CrashLoopBackOff"
    assert pods.status_text(status("Pending", False, waiting="ContainerCreating")) == "ContainerCreating"
    unbound = pods.validate_pod(pod())
    unbound["status"] = {"phase": "Pending"}
    assert pods.status_text(unbound) == "Pending"
    assert pods.status_text(status("Failed", False, reason="SandboxDied")) == "SandboxDied"


def test_rows_ready_restarts_ip_node_namespace():
    p = status(restarts=2)
    assert output.pod_row(p)[:4] == ["web", "1/1", "Running", 2]
    assert output.pod_row(p, wide=True)[5:] == ["10.1.1.4", "kub-node-1", None, None]
    assert output.pod_row(p, with_namespace=True)[:2] == ["default", "web"]
    assert output.POD_HEADERS == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert output.POD_WIDE_HEADERS[5:7] == ["IP", "NODE"]


def test_ready_and_settled():
    assert meta.pod_ready(status()) and pods.settled(status())
    crashing = status(ready=False, restarts=1, waiting="CrashLoopBackOff")
    assert not meta.pod_ready(crashing) and pods.settled(crashing)
    assert not pods.settled(status("Pending", False, waiting="ContainerCreating"))


def test_names_hosts_file_and_docker_style_helpers():
    v = podrecord.host_veth("0e6b81f5-e41d-4d3a-a00c-b705d8c91e40")
    assert re.fullmatch(r"veth[0-9a-f]{8}", v) and len(v) <= 15
    assert v == podrecord.host_veth("0e6b81f5-e41d-4d3a-a00c-b705d8c91e40") != podrecord.host_veth("other")
    hosts = podrecord.hosts_text("10.1.1.4", "web")
    assert re.search(r"^127\.0\.0\.1\s+localhost$", hosts, re.M) and hosts.endswith("10.1.1.4\tweb\n")
    assert len(podrecord.container_id("u", "web", 0)) == 64 != podrecord.container_id("u", "web", 1)
    assert node_pods._command(["/opt/x/netlab-hello", "--port", "80"]) == '"netlab-hello --port…"'
    assert node_pods._command(["netlab-pause", "web"]) == '"netlab-pause web"'
    assert node_pods._human(0.5) == "Less than a second" and node_pods._human(5) == "5 seconds"
    assert node_pods._human(90) == "About a minute" and node_pods._human(600) == "10 minutes"


# --------------------------------------------------------------------------- scheduler
def test_scheduler_spreads_pods_fewest_first_ties_by_name():
    ready = ["kub-node-1", "kub-node-2"]
    load: Counter = Counter()
    picks = []
    for _ in range(4):
        n = choose(ready, load)
        load[n] += 1
        picks.append(n)
    assert picks == ["kub-node-1", "kub-node-2", "kub-node-1", "kub-node-2"]
    assert choose(ready, Counter({"kub-node-1": 5, "kub-node-2": 1})) == "kub-node-2"


# --------------------------------------------------------------------------- IPAM fast path
def test_allocate_new_round_robin_no_duplicates_and_exhaustion(tmp_path):
    h = HostLocal(tmp_path, "10.1.79.0/24", "10.1.79.11", "10.1.79.14")
    got = [h.allocate_new(f"pod-{i}") for i in range(4)]
    assert got == [IPv4Address(f"10.1.79.{i}") for i in (11, 12, 13, 14)]
    with pytest.raises(IPAMExhausted):
        h.allocate_new("pod-4")
    h.release_ip("10.1.79.12")
    assert h.allocate_new("pod-5") == IPv4Address("10.1.79.12")
    # an allocation made by allocate() (another writer) is never handed out again
    h2 = HostLocal(tmp_path / "b", "10.1.1.0/24", "10.1.1.4", "10.1.1.6")
    assert h2.allocate("a") == IPv4Address("10.1.1.4")
    assert h2.allocate_new("b") == IPv4Address("10.1.1.5")
    assert h2.allocations()[IPv4Address("10.1.1.5")] == "b"


# --------------------------------------------------------------------------- rtnetlink
class _Capture:
    """Stands for Rtnl's socket: keeps what is sent, answers each request with an ACK (or
    with the error `error`), as pyroute2 encodes them."""

    def __init__(self, error: int = 0):
        self.sent: list[bytes] = []
        self.error = error

    def send(self, data) -> None:
        self.sent.append(bytes(data))

    def recv(self, _n: int) -> bytes:
        from pyroute2.netlink import nlmsg, nlmsgerr

        req = nlmsg(self.sent[-1])
        req.decode()
        ack = nlmsgerr()
        ack["header"]["type"] = 2  # NLMSG_ERROR
        ack["header"]["sequence_number"] = req["header"]["sequence_number"]
        ack["error"] = -self.error
        ack.encode()
        return bytes(ack.data) + (self.sent[-1] if self.error else b"")


def _rtnl(error: int = 0) -> netlink.Rtnl:
    rt = netlink.Rtnl.__new__(netlink.Rtnl)
    rt.where, rt.seq, rt.sock, rt.rt = "", 0, _Capture(error), netlink._rtnl_codec()
    return rt


def _sent_by(method: str, *args) -> dict:
    """The message Rtnl.<method> sends, as pyroute2 decodes it back."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    rt = _rtnl()
    getattr(rt, method)(*args)
    (data,) = rt.sock.sent
    (msg,) = MarshalRtnl().parse(data)
    assert msg["header"]["length"] == len(data) and msg["header"]["flags"] & 0x5 == 0x5
    return msg


def test_rtnetlink_messages_are_pyroute2s():
    veth = _sent_by("add_veth", "veth0a", "eth0", 7, 1450, 3)
    assert veth["header"]["type"] == 16 and veth["header"]["flags"] & 0x600 == 0x600
    assert (veth["flags"], veth["change"]) == (1, 1)
    assert [veth.get_attr(a) for a in ("IFLA_IFNAME", "IFLA_MTU", "IFLA_MASTER")] \
        == ["veth0a", 1450, 3]
    info = veth.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert [peer.get_attr(a) for a in ("IFLA_IFNAME", "IFLA_MTU", "IFLA_NET_NS_FD")] \
        == ["eth0", 1450, 7]
    hp = _sent_by("set_hairpin", 9)
    assert (hp["header"]["type"], hp["family"], hp["index"]) == (19, socket.AF_BRIDGE, 9)
    assert hp.get_attr("IFLA_PROTINFO").get_attr("IFLA_BRPORT_MODE") == 1
    # the bridge reads an IFLA_PROTINFO without NLA_F_NESTED as a port state
    assert struct.unpack_from("=HH", hp.data, 32)[1] == 12 | 0x8000
    addr = _sent_by("add_addr", 5, "10.1.2.3", 24)
    assert (addr["family"], addr["prefixlen"], addr["index"]) == (2, 24, 5)
    assert addr.get_attr("IFA_LOCAL") == addr.get_attr("IFA_ADDRESS") == "10.1.2.3"
    route = _sent_by("add_default_route", "10.1.2.1", 5)
    assert (route["dst_len"], route["table"], route["type"]) == (0, 254, 1)
    assert (route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_OIF")) == ("10.1.2.1", 5)
    up = _sent_by("link_up", 4)
    assert (up["header"]["type"], up["index"], up["flags"], up["change"]) == (16, 4, 1, 1)


def test_rtnetlink_errors_name_the_object():
    with pytest.raises(AlreadyExists, match=r"^create veth v1/eth0 in pod x: File exists$"):
        rt = _rtnl(errno.EEXIST)
        rt.where = " in pod x"
        rt.add_veth("v1", "eth0", 7, 1450, 3)
    assert _rtnl(errno.ENODEV).link_index("v1") is None
    assert _rtnl(errno.ENODEV).delete_link("v1") is False
    with pytest.raises(KernelError, match="add default route via 10.0.0.1: Network is unreachable"):
        _rtnl(errno.ENETUNREACH).add_default_route("10.0.0.1", 2)


def test_raw_rtnetlink_reads_links_without_root():
    rt = netlink.Rtnl()
    try:
        lo = rt.link_index("lo")
        assert lo == socket.if_nametoindex("lo")
        assert rt.link_index("no-such-link0") is None
    finally:
        rt.close()
