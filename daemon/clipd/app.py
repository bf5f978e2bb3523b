"""The daemon's lifecycle: open the store, serve gRPC at once, load the model, index, stop cleanly.

The server starts before the model loads so that clients get a clear "still loading" answer
(health NOT_SERVING, UNAVAILABLE with a message) instead of "no daemon".
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent import futures
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from clipd.config import Config, load_config
from clipd.embedder import Embedder
from clipd.errors import ClipdError, ConfigError
from clipd.indexer import Indexer
from clipd.instance import DatabaseLock, prepare_socket, remove_socket
from clipd.notify import Notifier
from clipd.progress import Progress, Snapshot
from clipd.reload import plan_reload
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
# The main loop's beat when nothing wakes it: root checks, periodic rescans, the status line.
_TICK_S = 1.0
# The service manager's status line changes at most this often.
_STATUS_EVERY_S = 1.0


def clipd_version() -> str:
    try:
        return version("clipd")
    except PackageNotFoundError:
        return "unknown"


class Daemon:
    """One running clipd: call run() on the main thread; stop() and reload() from anywhere.

    Signal handlers call on_signal(), which only records the signal and wakes the main loop
    through a pipe: the loop acts on it outside the handler, where locks and logging are safe.
    """

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self._notifier = notifier or Notifier.from_environment()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals: deque[int] = deque()
        # The main loop sleeps on this pipe; -1 while run() is not running.
        self._wake_read = self._wake_write = -1
        self._wake_lock = threading.Lock()  # against closing the pipe under another thread
        self._status_line = ""
        self._status_at = 0.0
        self._watcher: Watcher | None = None
        self.progress = Progress()
        self.engine: Engine | None = None  # set by run(); tests look inside
        # The signal that stopped the daemon, if one did: SIGINT (Ctrl-C) exits 130.
        self.stopped_by: signal.Signals | None = None
        _warn_if_missing(config.roots)

    def stop(self) -> None:
        self._stop.set()
        self._nudge()

    def reload(self) -> None:
        """Re-read the config file on the main loop (what SIGHUP does)."""
        self._reload.set()
        self._nudge()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """A signal handler. It takes no lock: the signal may have interrupted the holder."""
        self._signals.append(signum)
        _poke(self._wake_write)

    def _nudge(self) -> None:
        with self._wake_lock:
            _poke(self._wake_write)

    def run(self) -> None:
        """Serve until stop(); raises ClipdError for problems a user must fix."""
        lock = DatabaseLock(self.config.database, "serve")
        lock.acquire()
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        try:
            prepare_socket(self.config.socket)
            self._serve()
        finally:
            with self._wake_lock:
                write, self._wake_write = self._wake_write, -1
            os.close(write)
            os.close(self._wake_read)
            lock.release()

    def _serve(self) -> None:
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
        # Ready as soon as clients get answers: while the model loads they are told so, and
        # a first start that downloads weights must not run into the manager's start timeout.
        self._notify_status(engine, ready=True)
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
            self._notifier.stopping()
            self.progress.set_state("stopping")
            health_servicer.enter_graceful_shutdown()
            # New calls are refused at once; those in flight get the grace period, meanwhile
            # indexing ends with the batch in hand committed.
            stopped = [server.stop(SHUTDOWN_GRACE_S)]
            if tcp is not None:
                stopped.append(tcp.stop(SHUTDOWN_GRACE_S))
            if self._watcher is not None:
                self._watcher.stop()
            if engine.indexer is not None:
                engine.indexer.stop()
            for event in stopped:
                event.wait()
            rpc_pool.shutdown(wait=True)  # grpc leaves its executor to its owner
            if tcp is not None:
                tcp.release()
            store.close()
            remove_socket(self.config.socket)

    def _stopping(self) -> bool:
        """Act on the signals received since the last call; True once asked to stop."""
        while self._signals:
            signum = self._signals.popleft()
            log.info("received %s", signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                self._reload.set()
            else:
                self.stopped_by = self.stopped_by or signal.Signals(signum)
                self._stop.set()
        return self._stop.is_set()

    def _load(self, engine: Engine) -> bool:
        """Load the model and start indexing; False if stop() came first."""
        embedder = self._load_model()
        if embedder is None:
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

    def _load_model(self) -> Embedder | None:
        """The model, loaded on a thread of its own while this one stays free to stop: a
        download or a load cannot be interrupted, and may take minutes. None if stop() came
        first; the loader is then left behind, and ends with the process."""
        loaded: list[Embedder] = []
        failed: list[BaseException] = []

        def load() -> None:
            try:
                loaded.append(Embedder(self.config.model))
            except BaseException as exc:  # re-raised on the main loop
                failed.append(exc)
            finally:
                self._nudge()

        # A daemon thread: exiting the process must not wait for a download to give up.
        loader = threading.Thread(target=load, name="clipd-model-load", daemon=True)
        loader.start()
        while loader.is_alive():
            if self._stopping():
                log.info("stopped while loading the model")
                return None
            self._sleep(_TICK_S)
        if failed:
            raise failed[0]
        return None if self._stopping() else loaded[0]

    def _tend(self, engine: Engine) -> None:
        """Until stop(): reload when asked, notice roots coming and going, rescan periodically,
        and keep the service manager's status line current."""
        assert engine.indexer is not None
        now = time.monotonic()
        next_check = now + min(_ROOT_CHECK_S, self.config.poll_interval)
        next_reconcile = now + self.config.reconcile_interval
        while not self._stopping():
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                self._reload_config(engine)
                next_reconcile = now + self.config.reconcile_interval
            if self._watcher is not None and now >= next_check:
                self._watcher.check_roots()
                next_check = now + min(_ROOT_CHECK_S, self.config.poll_interval)
            if self.config.reconcile_interval and now >= next_reconcile:
                log.info("periodic rescan of every root")
                engine.indexer.submit(self.config.roots)
                next_reconcile = now + self.config.reconcile_interval
            self._notify_status(engine)
            self._sleep(_TICK_S)

    def _sleep(self, timeout: float) -> None:
        """Wait `timeout` seconds, or less if stop(), reload() or a signal comes."""
        select.select([self._wake_read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)

    def _reload_config(self, engine: Engine) -> None:
        self._notifier.reloading()
        try:
            self._apply_reload(engine)
        finally:
            self._notify_status(engine, ready=True)

    def _apply_reload(self, engine: Engine) -> None:
        """Apply what can change while running; keep the old config if the new one is bad."""
        assert engine.indexer is not None
        source = self.config.source
        if source is None:
            log.warning("reload: this daemon was not started from a config file; nothing to do")
            return
        try:
            new = load_config(source, require_roots=False)
        except ConfigError as exc:
            log.error("reload failed, keeping the current config: %s", exc)
            return
        plan = plan_reload(self.config, new)
        if plan.needs_restart:
            log.warning(
                "reload: %s changed; restart clipd to apply (systemctl --user restart clipd)",
                ", ".join(plan.needs_restart),
            )
        # The watcher first: once it lets go of a removed root, forgetting that root is final.
        if self._watcher is not None:
            self._watcher.reconfigure(plan.config)
        engine.indexer.reconfigure(plan.config)
        if plan.removed:
            engine.indexer.forget(plan.removed)
        self.config = engine.config = plan.config
        _warn_if_missing(plan.added)
        if plan.rescan:
            engine.indexer.submit(plan.rescan)
        log.info(
            "reloaded %s: %d roots added, %d removed%s",
            source,
            len(plan.added),
            len(plan.removed),
            "; rescanning every root for the new filters" if plan.refilter else "",
        )

    def _notify_status(self, engine: Engine, *, ready: bool = False) -> None:
        """Tell the service manager what we are doing, when that changed (or with READY=1)."""
        if not self._notifier.enabled:
            return
        line = _status_line(self.progress.snapshot(), engine)
        now = time.monotonic()
        if ready:
            self._notifier.ready(line)
        elif line != self._status_line and now - self._status_at >= _STATUS_EVERY_S:
            self._notifier.status(line)
        else:
            return
        self._status_line, self._status_at = line, now

    def _start_server(
        self, engine: Engine
    ) -> tuple[grpc.Server, health.HealthServicer, futures.ThreadPoolExecutor]:
        path = self.config.socket
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


def _warn_if_missing(roots: Iterable[Path]) -> None:
    for root in roots:
        if not root.is_dir():
            log.warning("root %s is not there now; its files stay offline until it is", root)


def _status_line(snap: Snapshot, engine: Engine) -> str:
    if snap.problem:
        return f"stalled: {snap.problem}"
    if snap.state == "starting":
        return "loading model"
    if snap.state == "indexing":
        return f"indexing: {snap.queued} queued, {snap.images_per_second:.1f} img/s"
    if snap.state == "stopping":
        return "stopping"
    return f"idle: {engine.store.counts().indexed} images"


def _poke(fd: int) -> None:
    """Wake a loop sleeping on the pipe whose write end is `fd` (-1: none)."""
    if fd >= 0:
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake already
            os.write(fd, b"\0")
