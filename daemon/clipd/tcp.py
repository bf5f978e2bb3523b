"""The optional TCP listener: a second gRPC server whose callers must present the token.

The Unix socket needs no token: its 0600 mode in a 0700 directory already admits only the user.
A TCP port admits anyone who can reach it, so every call but the health check must carry
`authorization: Bearer <token>`, the token being the contents of a 0600 file only the user can
read. Health is open, as load balancers and probes expect, and says nothing but "serving";
reflection is not, although the schema it reveals is public. Remote callers also get
a query core that never opens a file they name (see clipd.queries).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from clipd.config import Config, TcpAddress
from clipd.queries import Queries
from clipd.rpc_server import RpcServer, start_rpc_server

log = logging.getLogger(__name__)

_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"


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


def start_tcp(
    config: Config, queries: Queries, health_servicer: health.HealthServicer, token: str
) -> RpcServer | None:
    """Serve on config.tcp behind a check for `token`; None when TCP is off.

    `queries` must be a core for remote callers: it never opens a file a caller names.
    """
    address = config.tcp
    if address is None:
        return None
    server = start_rpc_server(
        str(address),
        queries,
        health_servicer,
        label=f"TCP {address}",
        threads_named="clipd-tcp",
        interceptors=[TokenCheck(token, config.token_file)],
        hint="; is the port in use? Change `tcp`",
    )
    _warn_if_exposed(address)
    log.info("listening on TCP %s:%d; clients need the token in %s", address.host, server.port,
             config.token_file)  # fmt: skip
    return server


def _warn_if_exposed(address: TcpAddress) -> None:
    if not address.loopback:
        log.warning(
            "TCP %s is reachable from the network, not just this machine: anyone who has the "
            "token can search your images; use 127.0.0.1 unless you need this",
            address,
        )
