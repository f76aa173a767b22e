"""`python -m netlab.api.http --lab L [--listen-fd N]`: the lab's kube-apiserver process.

Started by `netlab up` inside the master node's namespace: it serves HTTPS on the master's
address (port 6443) and on the listening socket(s) the lab handed it (127.0.0.1:<port> of
the root namespace, for kubectl on the host).
"""

from __future__ import annotations

import argparse
import os
import asyncio
import logging
import signal
import socket
import ssl

from aiohttp import web

from netlab import labfile, names
from netlab.api.http import kubelet_proxy, pki
from netlab.api.http.app import Server
from netlab.api.http.auth import Tokens
from netlab.api.http.objects import Api
from netlab.store import Store

PORT = 6443


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="netlab-apiserver")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--listen-fd", type=int, action="append", default=[],
                    help="an inherited listening socket to serve on as well")
    ap.add_argument("--port", type=int, default=PORT)
    a = ap.parse_args(argv)
    try:  # `ps -ef` inside the node shows the daemon a learner looks for; SPT_NOENV keeps
        # the environment (the lab's mark, netlab.kernel.proc.lab_mark) where it is
        os.environ["SPT_NOENV"] = "1"
        import setproctitle

        setproctitle.setproctitle(f"kube-apiserver --secure-port={a.port} --lab={a.lab}")
    except ImportError:  # pragma: no cover
        pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s apiserver %(levelname)s %(message)s")
    lab = labfile.parse_lab(names.lab_copy(a.lab).read_text(), str(names.lab_copy(a.lab)))
    master = lab.etcd_node.ip
    keys = pki.Pki(names.state_dir(a.lab) / "pki")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(keys.crt), str(keys.key))
    st = Store.for_lab(a.lab)
    api = Api(st, a.lab)
    st.wait_healthy(30)
    api.bootstrap(master, a.port)
    server = Server(api, Tokens(keys.read_admin_token(), keys.read_sa_key()), advertise=f"{master}:{a.port}",
                    kubelet=kubelet_proxy.KubeletProxy(api, keys.read_sa_key()).handle)
    asyncio.run(serve(server, ctx, master, a.port, a.listen_fd))


async def serve(server: Server, ctx: ssl.SSLContext, host: str, port: int, fds: list[int]) -> None:
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    sites = [web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)]
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sites.append(web.SockSite(runner, sock, ssl_context=ctx))
    for s in sites:
        await s.start()
    logging.info("serving on %s:%d and %d inherited socket(s)", host, port, len(fds))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    main()
