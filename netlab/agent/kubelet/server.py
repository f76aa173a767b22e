"""The kubelet's own HTTP endpoint (node IP, port 10250): container logs and exec.

As in Kubernetes, the API server proxies `pods/log` and `pods/exec` here; the kubelet
answers for the pods of its own node only, and only to the API server (a bearer token
derived from the lab's service-account key). Logs are the container's log file (followed
with `follow=true`); exec runs the command in the container's namespaces (the same
`nsenter` argv `netlab exec pod/...` uses) and speaks Kubernetes' WebSocket channel
protocol (`v5.channel.k8s.io`, falling back to v4): one byte of channel, then data
(0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, 255 close of a stream in v5).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import struct
import threading

from aiohttp import WSMsgType, web

from netlab import names
from netlab.errors import NetlabError, NotFound
from netlab.kernel import proc
from netlab.plan import podrecord

PORT = 10250
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
log = logging.getLogger("netlab.kubelet.server")


def kubelet_token(lab: str) -> str:
    """What the API server presents to kubelets (HMAC of "kubelet" under the lab's SA key)."""
    key = (names.state_dir(lab) / "pki" / "sa.key").read_text().strip()
    return hmac.new(key.encode(), b"kubelet", hashlib.sha256).hexdigest()


def exit_status(code: int, argv: list[str]) -> dict:
    """The status message of channel 3 (what kubectl turns into its own exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, "
                       f"exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class KubeletServer:
    def __init__(self, lab: str, node: str, ip: str):
        self.lab, self.node, self.ip = lab, node, ip
        self.token: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="kubelet-server", daemon=True).start()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:  # noqa: BLE001 - logs and exec are gone, pods keep running
            log.exception("kubelet server stopped")

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self.ip, PORT, reuse_address=True).start()
        log.info("kubelet server on %s:%d", self.ip, PORT)
        await asyncio.Event().wait()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token is None:
            try:
                self.token = kubelet_token(self.lab)
            except OSError:
                return web.Response(status=503, text="no credentials yet")
        h = request.headers.get("Authorization", "")
        if not hmac.compare_digest(h, f"Bearer {self.token}"):
            return web.Response(status=401, text="Unauthorized")
        return await handler(request)

    def _record(self, ns: str, pod: str) -> tuple:
        """This node's record of the pod (the live sandbox first while a name is reused)."""
        found = [(d, r) for d, r in podrecord.records(self.lab, self.node, in_node=True)
                 if r["namespace"] == ns and r["name"] == pod]
        if not found:
            raise NotFound(f"pod {pod} (namespace {ns}) is not found on {self.node}")
        found.sort(key=lambda dr: (not proc.proc_alive(dr[1].get("pause")), -dr[1].get("created", 0)))
        return found[0]

    def _container(self, ns: str, pod: str, container: str) -> tuple:
        d, rec = self._record(ns, pod)
        c = (rec.get("containers") or {}).get(container)
        if c is None:
            raise NetlabError(f"container {container} is not valid for pod {pod}")
        return d, rec, c

    def _log_path(self, ns: str, pod: str, container: str, previous: bool):
        d, _, c = self._container(ns, pod, container)
        n = c.get("restartCount", 0) - (1 if previous else 0)
        if n < 0:
            raise NotFound(f"previous terminated container {container} in pod {pod} not found")
        return podrecord.container_log(d, container, n)

    def _log_ended(self, ns: str, pod: str, container: str, path):
        n = int(path.stem.rsplit("_", 1)[1])

        def stop() -> bool:
            try:
                _, _, c = self._container(ns, pod, container)
            except NetlabError:
                return True
            return c.get("restartCount") != n or not proc.proc_alive(c)
        return stop

    def _exec_argv(self, ns: str, pod: str, container: str, cmd: list[str]) -> list[str]:
        """CMD in the container's namespaces (net, UTS, IPC, mount), with its environment."""
        _, _, c = self._container(ns, pod, container)
        if not proc.proc_alive(c):
            raise NetlabError(f"container {container} of pod {pod} is not running")
        env = [f"{k}={v}" for k, v in proc.pid_environ(c["pid"]).items() if k != "PATH"]
        return ["nsenter", "-t", str(c["pid"]), "-n", "-u", "-i", "-m", "--", "env", *env, *cmd]

    # ----------------------------------------------------------------------- logs
    async def logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        q = request.query
        try:
            path = await asyncio.to_thread(self._log_path, ns, pod, container, q.get("previous") == "true")
        except NetlabError as e:
            return web.Response(status=404 if isinstance(e, NotFound) else 400, text=str(e))
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        tail = q.get("tailLines")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            data = b""
        if tail is not None and tail.isdigit():
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail):]) if int(tail) else b""
        limit = q.get("limitBytes")
        if limit and limit.isdigit():
            data = data[:int(limit)]
        await resp.write(data)
        if q.get("follow") == "true":
            stop = self._log_ended(ns, pod, container, path)
            with open(path, "rb") as f:  # noqa: PTH123
                f.seek(0, os.SEEK_END)
                try:
                    while True:
                        chunk = f.read(65536)
                        if chunk:
                            await resp.write(chunk)
                            continue
                        if await asyncio.to_thread(stop):
                            await resp.write(f.read())
                            break
                        await asyncio.sleep(0.2)
                except (ConnectionResetError, asyncio.CancelledError):
                    pass
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    # ----------------------------------------------------------------------- exec
    async def exec(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        q = request.query
        cmd = q.getall("command", [])
        tty = q.get("tty") in ("1", "true")
        want_stdin = q.get("stdin") in ("1", "true")
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"

        async def send(ch: int, data: bytes) -> None:
            await ws.send_bytes(bytes([ch]) + data)

        if not cmd:
            await send(ERROR, json.dumps({"metadata": {}, "status": "Failure",
                                          "message": "you must specify at least 1 command", "reason": "BadRequest"}).encode())
            await ws.close()
            return ws
        try:
            argv = await asyncio.to_thread(self._exec_argv, ns, pod, container, cmd)
        except NetlabError as e:
            await send(ERROR, json.dumps({"metadata": {}, "status": "Failure", "message": str(e),
                                          "reason": "InternalError"}).encode())
            await ws.close()
            return ws
        master_fd = None
        if tty:
            master_fd, slave_fd = proc.open_pty()
            # setsid -c: a session of its own with the pty as controlling terminal (job control)
            child = await asyncio.create_subprocess_exec("setsid", "-c", *argv, stdin=slave_fd, stdout=slave_fd,
                                                        stderr=slave_fd, env=_exec_env())
            os.close(slave_fd)
        else:
            child = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_exec_env())
        loop = asyncio.get_running_loop()

        async def pump(reader, ch: int) -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await send(ch, data)

        async def pump_pty() -> None:
            q_: asyncio.Queue = asyncio.Queue()

            def readable() -> None:
                try:
                    q_.put_nowait(os.read(master_fd, 65536))
                except OSError:
                    q_.put_nowait(b"")
            loop.add_reader(master_fd, readable)
            try:
                while True:
                    data = await q_.get()
                    if not data:
                        return
                    await send(STDOUT, data)
            finally:
                loop.remove_reader(master_fd)

        async def from_client() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                    continue
                ch, data = msg.data[0], msg.data[1:]
                if ch == STDIN:
                    if master_fd is not None:
                        os.write(master_fd, data)
                    elif child.stdin is not None:
                        child.stdin.write(data)
                        await child.stdin.drain()
                elif ch == RESIZE and master_fd is not None:
                    try:
                        size = json.loads(data)
                        proc.set_pty_size(master_fd, int(size.get("Height", 24)), int(size.get("Width", 80)))
                    except (ValueError, TypeError, struct.error):
                        pass
                elif ch == CLOSE and v5 and data[:1] == bytes([STDIN]):
                    if master_fd is not None:
                        os.write(master_fd, b"\x04")
                    elif child.stdin is not None:
                        child.stdin.close()

        client = asyncio.create_task(from_client())
        outs = [asyncio.create_task(pump_pty())] if tty else \
            [asyncio.create_task(pump(child.stdout, STDOUT)), asyncio.create_task(pump(child.stderr, STDERR))]
        try:
            code = await child.wait()
            await asyncio.gather(*outs, return_exceptions=True)
        finally:
            client.cancel()
            if master_fd is not None:
                os.close(master_fd)
            if child.returncode is None:
                child.kill()
        await send(ERROR, json.dumps(exit_status(code, cmd)).encode())
        await ws.close()
        return ws


def _exec_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{names.bin_dir(env.get(names.ENV_MARK, ''))}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env
