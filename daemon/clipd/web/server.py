"""The HTTP server: uvicorn on its own thread, on a loopback socket bound before it starts.

Binding first gives the port (a free one unless `web:` pins it) before any request can come, so
the allowed Host names and the URL in the status are known from the start. stop() lets requests
in flight finish (status streams end as the daemon stops), then joins every thread it started.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from clipd.config import TcpAddress
from clipd.errors import ClipdError
from clipd.queries import DaemonState
from clipd.tokens import load_token
from clipd.web.api import Api, build_app
from clipd.web.security import Guard

log = logging.getLogger(__name__)
# uvicorn says "Started server process" and the like at INFO: the daemon logs its own line.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

# Requests in flight get this long to finish on shutdown; then their connections are closed.
SHUTDOWN_GRACE_S = 3
_START_TIMEOUT_S = 30.0


class WebServer:
    """One running web app; start() it, read `url`, stop() it once."""

    def __init__(
        self, state: DaemonState, address: TcpAddress, *, token: str | None = None
    ) -> None:
        """`token` admits callers; None reads it from the config's token_file (a web app
        started on its own, as the benchmarks do; the daemon passes the one it read)."""
        self._state = state
        self._address = address
        self._token = token
        self._stopping = threading.Event()
        self._api = Api(state, self._stopping)
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self.url = ""

    def start(self) -> None:
        config = self._state.config
        token = self._token if self._token is not None else load_token(config.token_file)
        sock = _bind(self._address)
        port = sock.getsockname()[1]
        host = f"[{self._address.host}]" if ":" in self._address.host else self._address.host
        if host == "localhost":
            host = "127.0.0.1"
        self.url = f"http://{host}:{port}/"
        app = Guard(
            build_app(self._api),
            token=token,
            token_file=str(config.token_file),
            hosts=(f"{host}:{port}", f"localhost:{port}"),
            login_page=self._api.login_page,
        )
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,  # leave the daemon's logging as it is
                access_log=False,
                lifespan="off",
                proxy_headers=False,
                server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                ws="none",
            )
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="clipd-http"
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise ClipdError(f"the web app could not start on {self.url}; see the log")
            time.sleep(0.01)
        log.info("web app on %s (open it with: clipq web)", self.url)

    def stop(self) -> None:
        """Refuse new connections, let requests in flight end, join the threads."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._api.close()


def _bind(address: TcpAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    host = "127.0.0.1" if address.host == "localhost" else address.host
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it a keep-alive response written in two parts waits ~40 ms for a delayed ACK (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, address.port))
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ClipdError(
            f"cannot serve the web app on {address}: {exc.strerror or exc}; is the port in use? "
            "Change `web` in the config (a free port is picked when it is 0), or set it to off"
        ) from exc
    return sock
