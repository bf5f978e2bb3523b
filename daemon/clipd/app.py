"""The daemon's lifecycle: open the store, serve gRPC at once, load the model, index, stop cleanly.

The server starts before the model loads so that clients get a clear "still loading" answer
(health NOT_SERVING, UNAVAILABLE with a message) instead of "no daemon".
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time
from concurrent import futures
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from clipd.config import Config
from clipd.embedder import Embedder
from clipd.errors import ClipdError
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.server import Engine, ImageSearch, add_image_search
from clipd.store import Store
from clipd.tcp import TcpServer, start_tcp
from clipd.watcher import Watcher
from clipd_api.v1 import clipd_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = clipd_pb2.DESCRIPTOR.services_by_name["ImageSearch"].full_name
_REFLECTED = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
# In-flight RPCs get this long to finish on shutdown.
SHUTDOWN_GRACE_S = 5.0
# Image terms arrive as whole files: allow phone photos, refuse anything absurd.
MAX_MESSAGE_BYTES = 64 << 20
_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
_RPC_THREADS = 16
# Calls beyond the threads wait, holding their requests; past this many they are refused with
# RESOURCE_EXHAUSTED, so a flood of clients cannot pile up memory without bound.
MAX_CONCURRENT_RPCS = 64
# How often to look for roots that vanished or came back (unmounted disks, network shares).
_ROOT_CHECK_S = 5.0


def clipd_version() -> str:
    try:
        return version("clipd")
    except PackageNotFoundError:
        return "unknown"


class Daemon:
    """One running clipd: call run() on the main thread, stop() from a signal handler."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = threading.Event()
        self._watcher: Watcher | None = None
        self.progress = Progress()
        self.engine: Engine | None = None  # set by run(); tests look inside
        for root in config.roots:
            if not root.is_dir():
                log.warning("root %s is not there now; its files stay offline until it is", root)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Serve until stop(); raises ClipdError for problems a user must fix."""
        store = Store(self.config.database)
        engine = self.engine = Engine(
            self.config, store, self.progress, clipd_version(), time.time()
        )
        try:
            server, health_servicer, rpc_pool = self._start_server(engine)
        except BaseException:
            store.close()
            raise
        tcp: TcpServer | None = None
        try:
            tcp = start_tcp(
                self.config,
                engine,
                health_servicer,
                options=_SERVER_OPTIONS,
                maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
                services=_REFLECTED,
            )
            if self._load(engine):
                health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
                health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
                log.info("serving on %s", self.config.socket)
                self._tend(engine)
        finally:
            log.info("shutting down")
            self.progress.set_state("stopping")
            health_servicer.enter_graceful_shutdown()
            if tcp is not None:
                tcp.stop(SHUTDOWN_GRACE_S)
            server.stop(SHUTDOWN_GRACE_S).wait()
            rpc_pool.shutdown(wait=True)  # grpc leaves its executor to its owner
            if self._watcher is not None:
                self._watcher.stop()
            if engine.indexer is not None:
                engine.indexer.stop()
            store.close()
            _remove_socket(self.config.socket)

    def _load(self, engine: Engine) -> bool:
        """Load the model and start indexing; False if stop() came first."""
        embedder = Embedder(self.config.model)
        if self._stop.is_set():
            return False
        engine.store.bind_model(embedder.identity)
        indexer = Indexer(self.config, engine.store, embedder, self.progress)
        indexer.start()
        engine.embedder, engine.indexer = embedder, indexer  # run() stops what is set here
        # Watch first, then scan: a change during the scan is caught by one or the other.
        if self.config.watch:
            self._watcher = Watcher(self.config, indexer.submit)
            self._watcher.start()
        indexer.submit(self.config.roots)
        self.progress.set_state("idle")
        return True

    def _tend(self, engine: Engine) -> None:
        """Until stop(): notice roots coming and going, and rescan everything periodically."""
        assert engine.indexer is not None
        interval = self.config.reconcile_interval
        next_reconcile = time.monotonic() + interval
        while not self._stop.wait(min(_ROOT_CHECK_S, self.config.poll_interval)):
            if self._watcher is not None:
                self._watcher.check_roots()
            if interval and time.monotonic() >= next_reconcile:
                log.info("periodic rescan of every root")
                engine.indexer.submit(self.config.roots)
                next_reconcile = time.monotonic() + interval

    def _start_server(
        self, engine: Engine
    ) -> tuple[grpc.Server, health.HealthServicer, futures.ThreadPoolExecutor]:
        path = self.config.socket
        _prepare_socket(path)
        rpc_pool = futures.ThreadPoolExecutor(_RPC_THREADS, thread_name_prefix="clipd-rpc")
        server = grpc.server(
            rpc_pool, options=_SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS
        )
        add_image_search(ImageSearch(engine), server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(_REFLECTED, server)
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            rpc_pool.shutdown()
            raise ClipdError(f"cannot listen on {path}: {exc}") from exc
        server.start()
        os.chmod(path, 0o600)  # the 0700 directory already keeps others out; belt and braces
        log.info("listening on %s (loading the model)", path)
        return server, health_servicer, rpc_pool


def _prepare_socket(path: Path) -> None:
    """A private directory for the socket; refuse a live daemon there, clear a stale socket."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ClipdError(f"cannot create the socket directory {path.parent}: {exc}") from exc
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ClipdError(f"{path} exists and is not a socket; remove it or set `socket` elsewhere")
    if _socket_is_live(path):
        raise ClipdError(
            f"another clipd is already serving on {path}; stop it first "
            "(systemctl --user stop clipd), or set `socket` to another path"
        )
    log.info("removing stale socket %s left by an earlier run", path)
    path.unlink()


def _socket_is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise ClipdError(f"cannot check socket {path}: {exc.strerror}") from exc
        return True


def _remove_socket(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove socket %s: %s", path, exc.strerror)
