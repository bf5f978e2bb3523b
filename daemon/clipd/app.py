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
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from grpc_health.v1 import health, health_pb2

from clipd import clipd_version
from clipd.config import Config, load_config
from clipd.errors import ConfigError, StoreUnavailable
from clipd.image_model import for_the_daemon
from clipd.indexer import Indexer
from clipd.instance import file_lock, prepare_socket, remove_socket
from clipd.notify import Notifier
from clipd.progress import Progress, Snapshot
from clipd.queries import DaemonState, Queries
from clipd.records import ModelIdentity
from clipd.reload import plan_reload
from clipd.rpc_server import SERVICE_NAME, RpcServer, start_rpc_server
from clipd.served_model import ServedModel
from clipd.storage import IndexStore, store_for, thumbnails_for
from clipd.tcp import start_tcp
from clipd.thumbcache import Thumbnails
from clipd.tokens import load_token
from clipd.watcher import Watcher

if TYPE_CHECKING:
    from clipd.web.server import WebServer

log = logging.getLogger(__name__)

# In-flight RPCs get this long to finish on shutdown.
SHUTDOWN_GRACE_S = 5.0
# A shared store's server away when the daemon starts is tried again after this, doubling.
_STORE_RETRY_FIRST_S = 0.5
_STORE_RETRY_MAX_S = 10.0
# How often to look for roots that vanished or came back (unmounted disks, network shares).
_ROOT_CHECK_S = 5.0
# The main loop's beat when nothing wakes it: root checks, periodic rescans, the status line.
_TICK_S = 1.0
# The service manager's status line changes at most this often.
_STATUS_EVERY_S = 1.0


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
        self.state: DaemonState | None = None  # set by run(); tests look inside
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
        lock = file_lock(self.config.database, "serve")
        if lock is not None:
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
            if lock is not None:
                lock.release()

    def _serve(self) -> None:
        store = store_for(self.config)
        state = self.state = DaemonState(
            self.config, store, self.progress, clipd_version(), time.time()
        )
        thumbnails = state.thumbnails = thumbnails_for(store)
        self._forget_stray_thumbnails(store, thumbnails)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            server = self._listen(state, health_servicer)
        except BaseException:
            thumbnails.close()
            store.close()
            raise
        tcp: RpcServer | None = None
        web: WebServer | None = None
        # Ready as soon as clients get answers: while the model loads they are told so, and
        # a first start that downloads weights must not run into the manager's start timeout.
        self._notify_status(state, ready=True)
        try:
            if self.config.tcp is not None or self.config.web is not None:
                # Read once: the TCP listener and the web app check the same secret.
                token = load_token(self.config.token_file)
                tcp = start_tcp(self.config, Queries(state, remote=True), health_servicer, token)
                web = self._start_web(state, token)
            if self._load(state):
                health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
                health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
                log.info("serving on %s", self.config.socket)
                self._tend(state)
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
            if web is not None:
                web.stop()
            if self._watcher is not None:
                self._watcher.stop()
            if state.indexer is not None:
                state.indexer.stop()
            for event in stopped:
                event.wait()
            server.release()
            if tcp is not None:
                tcp.release()
            thumbnails.close()
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

    def _forget_stray_thumbnails(self, store: IndexStore, thumbnails: Thumbnails) -> None:
        roots = self.config.roots
        try:
            indexed = {path for root in roots for path in store.known_files(str(root))}
        except StoreUnavailable:
            return  # a shared store's server away at start: the next start cleans up
        if forgotten := thumbnails.keep_only(indexed):
            log.info("forgot the thumbnails of %d files no longer indexed", forgotten)

    def _load(self, state: DaemonState) -> bool:
        """Load the model and start indexing; False if stop() came first."""
        embedder = self._load_model()
        if embedder is None or not self._bind_model(state.store, embedder.identity):
            return False
        indexer = Indexer(self.config, state.store, embedder, self.progress, state.thumbnails)
        indexer.start()
        state.embedder, state.indexer = embedder, indexer  # run() stops what is set here
        # Watch first, then scan: a change during the scan is caught by one or the other.
        if self.config.watch:
            self._watcher = Watcher(self.config, indexer.submit)
            self._watcher.start()
        indexer.submit(self.config.roots)
        self.progress.set_state("idle")
        return True

    def _bind_model(self, store: IndexStore, identity: ModelIdentity) -> bool:
        """Bind the model to the store, waiting for a shared store's server that is away (down
        when the daemon started): status says so meanwhile, and searches are answered
        UNAVAILABLE with the reason. False if stop() came first."""
        delay = _STORE_RETRY_FIRST_S
        waited = False
        while True:
            try:
                store.bind_model(identity)
            except StoreUnavailable as exc:
                if not waited:
                    log.warning("%s; waiting for it before indexing", exc)
                waited = True
                self.progress.set_problem(f"{exc}; clipd waits for it")
                self._sleep(delay)
                if self._stopping():
                    return False
                delay = min(2 * delay, _STORE_RETRY_MAX_S)
                continue
            if waited:
                log.info("connected to %s", store.location)
                self.progress.set_problem("")
            return True

    def _load_model(self) -> ServedModel | None:
        """The model, loaded on a thread of its own while this one stays free to stop: a
        download or a load cannot be interrupted, and may take minutes. None if stop() came
        first; the loader is then left behind, and ends with the process."""
        loaded: list[ServedModel] = []
        failed: list[BaseException] = []

        def load() -> None:
            try:
                embedder = for_the_daemon(self.config.model)
                embedder.warm_up()
                loaded.append(embedder)
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

    def _tend(self, state: DaemonState) -> None:
        """Until stop(): reload when asked, notice roots coming and going, rescan periodically,
        and keep the service manager's status line current."""
        assert state.indexer is not None
        now = time.monotonic()
        next_check = now + min(_ROOT_CHECK_S, self.config.poll_interval)
        next_reconcile = now + self.config.reconcile_interval
        while not self._stopping():
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                self._reload_config(state)
                next_reconcile = now + self.config.reconcile_interval
            if self._watcher is not None and now >= next_check:
                self._watcher.check_roots()
                next_check = now + min(_ROOT_CHECK_S, self.config.poll_interval)
            if self.config.reconcile_interval and now >= next_reconcile:
                log.info("periodic rescan of every root")
                state.indexer.submit(self.config.roots)
                next_reconcile = now + self.config.reconcile_interval
            self._notify_status(state)
            self._sleep(_TICK_S)

    def _sleep(self, timeout: float) -> None:
        """Wait `timeout` seconds, or less if stop(), reload() or a signal comes."""
        select.select([self._wake_read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)

    def _reload_config(self, state: DaemonState) -> None:
        self._notifier.reloading()
        try:
            self._apply_reload(state)
        finally:
            self._notify_status(state, ready=True)

    def _apply_reload(self, state: DaemonState) -> None:
        """Apply what can change while running; keep the old config if the new one is bad."""
        assert state.indexer is not None
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
        state.indexer.reconfigure(plan.config)
        if plan.removed:
            state.indexer.forget(plan.removed)
        self.config = state.config = plan.config
        _warn_if_missing(plan.added)
        if plan.rescan:
            state.indexer.submit(plan.rescan)
        log.info(
            "reloaded %s: %d roots added, %d removed%s",
            source,
            len(plan.added),
            len(plan.removed),
            "; rescanning every root for the new filters" if plan.refilter else "",
        )

    def _notify_status(self, state: DaemonState, *, ready: bool = False) -> None:
        """Tell the service manager what we are doing, when that changed (or with READY=1)."""
        if not self._notifier.enabled:
            return
        line = _status_line(self.progress.snapshot(), state)
        now = time.monotonic()
        if ready:
            self._notifier.ready(line)
        elif line != self._status_line and now - self._status_at >= _STATUS_EVERY_S:
            self._notifier.status(line)
        else:
            return
        self._status_line, self._status_at = line, now

    def _start_web(self, state: DaemonState, token: str) -> WebServer | None:
        """The web app and HTTP API on loopback, unless `web: off`; `token` admits callers."""
        if self.config.web is None:
            return None
        from clipd.web.server import WebServer  # starlette and uvicorn only when serving

        web = WebServer(state, self.config.web, token=token)
        web.start()
        state.web_url = web.url
        return web

    def _listen(self, state: DaemonState, health_servicer: health.HealthServicer) -> RpcServer:
        """Serve gRPC on the Unix socket, private to the user (no token needed there)."""
        path = self.config.socket
        server = start_rpc_server(
            f"unix:{path}",
            Queries(state, remote=False),
            health_servicer,
            label=str(path),
            threads_named="clipd-rpc",
        )
        os.chmod(path, 0o600)  # the 0700 directory already keeps others out; belt and braces
        log.info("listening on %s (loading the model)", path)
        return server


def _warn_if_missing(roots: Iterable[Path]) -> None:
    for root in roots:
        if not root.is_dir():
            log.warning("root %s is not there now; its files stay offline until it is", root)


def _status_line(snap: Snapshot, state: DaemonState) -> str:
    if snap.problem:
        return f"stalled: {snap.problem}"
    if snap.state == "starting":
        return "loading model"
    if snap.state == "indexing":
        return f"indexing: {snap.queued} queued, {snap.images_per_second:.1f} img/s"
    if snap.state == "stopping":
        return "stopping"
    return f"idle: {state.store.counts().indexed} images"


def _poke(fd: int) -> None:
    """Wake a loop sleeping on the pipe whose write end is `fd` (-1: none)."""
    if fd >= 0:
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake already
            os.write(fd, b"\0")
