"""pods/log and pods/exec: proxied to the kubelet of the pod's node, as kube-apiserver does.

The kubelet (netlab/agent/kubelet_server.py) listens on its node's IP, port 10250; the
API server runs on the master, which reaches every node over the node network. Logs are
streamed through; exec is a WebSocket relayed message by message in both directions, with
the channel subprotocol (v5.channel.k8s.io / v4) the client chose. `port-forward` is not
offered: it answers with a clear error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import urllib.parse

import aiohttp
from aiohttp import WSMsgType, web

from netlab.api.http import status as S

KUBELET_PORT = 10250
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def kubelet_token(sa_key: str) -> str:
    return hmac.new(sa_key.encode(), b"kubelet", hashlib.sha256).hexdigest()


class KubeletProxy:
    def __init__(self, api, sa_key: str):
        self.api = api
        self.headers = {"Authorization": f"Bearer {kubelet_token(sa_key)}"}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    def _node_ip(self, pod: dict) -> str:
        node = (pod.get("spec") or {}).get("nodeName")
        ip = (pod.get("status") or {}).get("hostIP")
        if not ip and node:
            ip = next((n.ip for n in self.api.lab.nodes if n.name == node), None)
        if not node or not ip:
            raise S.ApiError(400, f'pod {pod["metadata"]["name"]} is not scheduled to a node yet', "BadRequest")
        return ip

    def _container(self, pod: dict, requested: str | None) -> str:
        names_ = [c["name"] for c in pod["spec"].get("containers") or []]
        if requested:
            if requested not in names_:
                raise S.ApiError(400, f'container {requested} is not valid for pod {pod["metadata"]["name"]}',
                                 "BadRequest")
            return requested
        if len(names_) != 1:
            raise S.ApiError(400, f'a container name must be specified for pod {pod["metadata"]["name"]}, '
                                  f'choose one of: [{" ".join(names_)}]', "BadRequest")
        return names_[0]

    async def handle(self, request: web.Request, pod: dict, sub: str) -> web.StreamResponse:
        ip = self._node_ip(pod)
        c = self._container(pod, request.query.get("container"))
        m = pod["metadata"]
        if sub == "log":
            return await self.logs(request, ip, m["namespace"], m["name"], c)
        return await self.exec(request, ip, m["namespace"], m["name"], c)

    async def logs(self, request: web.Request, ip: str, ns: str, pod: str, c: str) -> web.StreamResponse:
        q = {k: v for k, v in request.query.items() if k in ("follow", "previous", "tailLines", "limitBytes",
                                                              "timestamps", "sinceSeconds")}
        url = f"http://{ip}:{KUBELET_PORT}/containerLogs/{ns}/{pod}/{c}?{urllib.parse.urlencode(q)}"
        try:
            upstream = await self.session.get(url, headers=self.headers)
        except aiohttp.ClientError as e:
            raise S.ApiError(503, f"the kubelet of pod {pod} ({ip}:{KUBELET_PORT}) did not answer: {e}",
                             "ServiceUnavailable") from None
        async with upstream:
            if upstream.status != 200:
                text = (await upstream.text()).strip()
                raise S.ApiError(404 if upstream.status == 404 else 400, text or f"kubelet: {upstream.status}")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            return resp

    async def exec(self, request: web.Request, ip: str, ns: str, pod: str, c: str) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise S.ApiError(400, "exec needs a WebSocket (v5.channel.k8s.io); SPDY is not supported by netlab",
                             "BadRequest")
        q = [(k, v) for k, v in request.query.items() if k in ("command", "stdin", "stdout", "stderr", "tty")]
        url = f"http://{ip}:{KUBELET_PORT}/exec/{ns}/{pod}/{c}?{urllib.parse.urlencode(q)}"
        client = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=4 * 1024 * 1024)
        proto = client.can_prepare(request).protocol
        try:
            upstream = await self.session.ws_connect(url, headers=self.headers, protocols=(proto,) if proto else PROTOCOLS,
                                                     max_msg_size=4 * 1024 * 1024)
        except (aiohttp.ClientError, aiohttp.WSServerHandshakeError) as e:
            raise S.ApiError(503, f"the kubelet of pod {pod} ({ip}:{KUBELET_PORT}) did not answer: {e}",
                             "ServiceUnavailable") from None
        await client.prepare(request)

        async def relay(src, dst) -> None:
            async for msg in src:
                if msg.type == WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        up = asyncio.create_task(relay(client, upstream))
        down = asyncio.create_task(relay(upstream, client))
        try:
            await down  # the kubelet closes after the status message
        finally:
            up.cancel()
            await upstream.close()
            await client.close()
        return client
