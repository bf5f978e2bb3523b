"""The optional TCP listener: a second gRPC server whose callers must present the token.

The Unix socket needs no token: its 0600 mode in a 0700 directory already admits only the user.
A TCP port admits anyone who can reach it, so every call but the health check must carry
`authorization: Bearer <token>`, the token being the contents of a 0600 file only the user can
read. Health is open, as load balancers and probes expect, and says nothing but "serving";
reflection is not, although the schema it reveals is public. Remote callers also get a servicer
that never opens a file they name (see clipd.server).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from clipd.config import Config, TcpAddress
from clipd.errors import ClipdError, TokenError
from clipd.server import Engine, ImageSearch, add_image_search

log = logging.getLogger(__name__)

_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
_RPC_THREADS = 16


def load_token(path: Path) -> str:
    """The token in `path`, created (random, 0600, in a 0700 folder) if it does not exist."""
    try:
        if not path.exists():
            _create_token(path)
        mode = path.stat().st_mode
        if mode & 0o077:
            raise TokenError(
                f"the token file {path} can be read by other users (mode "
                f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"cannot use the token file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokenError(f"the token file {path} is not text; delete it to make a new one") from exc
    if not token:
        raise TokenError(f"the token file {path} is empty; delete it to make a new one")
    return token


def _create_token(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL: never write into a file someone else slipped in; 0600 from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as sink:
        sink.write(secrets.token_urlsafe(32) + "\n")
    log.info("created a new token for TCP clients in %s", path)


class TokenCheck(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuse every call but health checks unless it carries the right bearer token."""

    def __init__(self, token: str, token_file: Path) -> None:
        self._expected = f"Bearer {token}".encode()
        message = (
            "this clipd needs a token over TCP: send the metadata 'authorization: Bearer TOKEN' "
            f"with the token in {token_file} on the daemon's machine"
        )

        def deny(request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        if handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        supplied = next((value for key, value in metadata if key == "authorization"), "")
        if isinstance(supplied, str) and hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(handler_call_details)
        return self._deny


class TcpServer:
    """The running TCP listener; on shutdown stop() it, wait, then release() its threads."""

    def __init__(self, server: grpc.Server, pool: futures.ThreadPoolExecutor, port: int) -> None:
        self._server = server
        self._pool = pool
        self.port = port

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls now; the event is set once those in flight end (within grace)."""
        stopped: threading.Event = self._server.stop(grace)
        return stopped

    def release(self) -> None:
        self._pool.shutdown(wait=True)  # grpc leaves its executor to its owner


def start_tcp(
    config: Config,
    engine: Engine,
    health_servicer: health.HealthServicer,
    *,
    options: Sequence[tuple[str, Any]],
    maximum_concurrent_rpcs: int,
    services: Sequence[str],
) -> TcpServer | None:
    """Serve on config.tcp behind the token check; None when TCP is off."""
    address = config.tcp
    if address is None:
        return None
    token = load_token(config.token_file)
    pool = futures.ThreadPoolExecutor(_RPC_THREADS, thread_name_prefix="clipd-tcp")
    server = grpc.server(
        pool,
        interceptors=[TokenCheck(token, config.token_file)],
        options=list(options),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    add_image_search(ImageSearch(engine, remote=True), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(services, server)
    try:
        port = server.add_insecure_port(str(address))
    except RuntimeError as exc:
        pool.shutdown()
        raise ClipdError(
            f"cannot listen on TCP {address}: {exc}; is the port in use? Change `tcp`"
        ) from exc
    server.start()
    _warn_if_exposed(address)
    log.info("listening on TCP %s:%d; clients need the token in %s", address.host, port,
             config.token_file)  # fmt: skip
    return TcpServer(server, pool, port)


def _warn_if_exposed(address: TcpAddress) -> None:
    if not address.loopback:
        log.warning(
            "TCP %s is reachable from the network, not just this machine: anyone who has the "
            "token can search your images; use 127.0.0.1 unless you need this",
            address,
        )
