"""The daemon's gRPC servers, built in one place: the Unix socket's and the TCP port's.

Both serve the same service, health and reflection, with the same limits; they differ in the
address, the interceptors (TCP checks a token) and the query core (TCP's is for remote callers).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from clipd.errors import ClipdError
from clipd.queries import Queries
from clipd.servicer import ImageSearch, add_image_search
from clipd_api.v1 import clipd_pb2

SERVICE_NAME = clipd_pb2.DESCRIPTOR.services_by_name["ImageSearch"].full_name
REFLECTED = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
# Image terms arrive as whole files: allow phone photos, refuse anything absurd.
MAX_MESSAGE_BYTES = 64 << 20
_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
_RPC_THREADS = 16
# Calls beyond the threads wait, holding their requests; past this many they are refused with
# RESOURCE_EXHAUSTED, so a flood of clients cannot pile up memory without bound.
MAX_CONCURRENT_RPCS = 64


class RpcServer:
    """A running gRPC server; on shutdown stop() it, wait for the event, then release()."""

    def __init__(self, server: grpc.Server, pool: futures.ThreadPoolExecutor, port: int) -> None:
        self._server = server
        self._pool = pool
        # The bound TCP port (0 for a Unix socket).
        self.port = port

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls now; the event is set once those in flight end (within grace)."""
        stopped: threading.Event = self._server.stop(grace)
        return stopped

    def release(self) -> None:
        self._pool.shutdown(wait=True)  # grpc leaves its executor to its owner


def start_rpc_server(
    address: str,
    queries: Queries,
    health_servicer: health.HealthServicer,
    *,
    label: str,
    threads_named: str,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    hint: str = "",
) -> RpcServer:
    """Serve ImageSearch, health and reflection on a gRPC address ("unix:PATH", "HOST:PORT").

    A refused address raises ClipdError naming it as `label`, followed by `hint`.
    """
    pool = futures.ThreadPoolExecutor(_RPC_THREADS, thread_name_prefix=threads_named)
    server = grpc.server(
        pool,
        interceptors=list(interceptors),
        options=_OPTIONS,
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    add_image_search(ImageSearch(queries), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(REFLECTED, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        pool.shutdown()
        raise ClipdError(f"cannot listen on {label}: {exc}{hint}") from exc
    server.start()
    return RpcServer(server, pool, port)
