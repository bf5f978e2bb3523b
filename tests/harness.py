"""The one test harness: how a test runs a daemon and waits for it.

- `wait_until`: the one poll loop.
- `InProcessDaemon` / `in_process_daemon`: the real daemon on a thread of the test process, so
  a test can look inside it (store, indexer) and drive it (stop, reload).
- `DaemonProcess` / `daemon_process`: `clipd serve` as a real process, driven by signals, its
  output kept in memory (a pipe, so even a file size limit on it cannot cut the log).
- `hold_model_loading`: a daemon that stays "starting" until the test lets its model load.
- `FakeDaemon` / `serve_fake` (`serve` for a stand-in of a test's own): a real gRPC server with
  canned answers, for the client's tests.
- Small makers the tests share: pictures, store records, one-shot `clipd`/`clipq` runs, clipq
  usage errors, free loopback ports.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from fixtures.shapes import draw

from clipd import sqlite
from clipd.app import Daemon
from clipd.config import Config, load_config
from clipd.indexer import Indexer
from clipd.records import FileRecord, ModelIdentity
from clipd.storage import IndexStore
from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import Client, ClipqError, Status
from clipq.cli import main as clipq_main

BIN = Path(sys.executable).parent
T = TypeVar("T")


# -- waiting ---------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    what: str,
    *,
    timeout: float = 60,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something true, and return that.

    Exceptions of the `ignoring` types count as "not yet" (a daemon still starting). Past
    `timeout` seconds it fails the test naming `what` and the last answer or error seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignoring as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def daemon_status(socket: Path | None = None) -> Status:
    """The status of the daemon on `socket` (default: the default socket)."""
    with Client(socket, timeout=5) as client:
        return client.status()


def wait_until_indexed(
    expected: int, failed: int, *, socket: Path | None = None, timeout: float = 120
) -> Status:
    """Wait until the daemon is idle with exactly `expected` files indexed and `failed` failed."""

    def done() -> Status | None:
        status = daemon_status(socket)
        finished = (status.state, status.indexed, status.failed) == ("idle", expected, failed)
        return status if finished else None

    status = wait_until(
        done,
        f"{expected} indexed and {failed} failed, idle",
        timeout=timeout,
        interval=0.1,
        ignoring=(ClipqError,),
    )
    assert status is not None
    return status


def indexed_soon(at_least: int, *, socket: Path | None = None, timeout: float = 120) -> int:
    """Wait until the daemon reports `at_least` files indexed; the count it saw.

    For tests that interrupt indexing: they stop the daemon as soon as this returns.
    """

    def enough() -> int:
        indexed = daemon_status(socket).indexed
        return indexed if indexed >= at_least else 0

    return wait_until(
        enough,
        f"at least {at_least} files indexed",
        timeout=timeout,
        interval=0.02,
        ignoring=(ClipqError,),
    )


# -- the daemon in this process -----------------------------------------------------------------


class InProcessDaemon:
    """A real `Daemon` running on a thread of the test process."""

    def __init__(self, daemon: Daemon, root: Path) -> None:
        self.daemon = daemon
        self.root = root

    @property
    def config(self) -> Config:
        return self.daemon.config

    @property
    def store(self) -> IndexStore:
        assert self.daemon.state is not None
        return self.daemon.state.store

    @property
    def indexer(self) -> Indexer:
        assert self.daemon.state is not None
        assert self.daemon.state.indexer is not None
        return self.daemon.state.indexer

    @property
    def loaded(self) -> bool:
        """The model is loaded and indexing has started."""
        return self.daemon.state is not None and self.daemon.state.indexer is not None

    def indexed(self) -> set[str]:
        """Paths with a row in the store under the root (offline ones included)."""
        return set(self.store.known_files(str(self.root)))

    def client(self, timeout: float = 30) -> Client:
        return Client(self.config.socket, timeout=timeout)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.config.socket}")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Wait until `condition` holds with the indexer idle."""
        try:
            wait_until(
                lambda: self.loaded and condition() and not self.daemon.progress.busy,
                what,
                timeout=timeout,
            )
        except AssertionError as exc:
            indexed = sorted(self.indexed()) if self.loaded else "model not loaded"
            raise AssertionError(f"{exc}; indexed: {indexed}") from None

    def wait_settled(self, files: int, timeout: float = 120) -> None:
        """Wait until `files` files are indexed or failed, and indexing is idle."""
        self.wait_for(
            lambda: (counts := self.store.counts()).indexed + counts.failed == files,
            f"{files} files indexed or failed",
            timeout=timeout,
        )

    def assert_consistent(self) -> None:
        assert_one_to_one(self.config.database_file)


@contextlib.contextmanager
def in_process_daemon(
    config: Path | Config, root: Path, files: int | None = None
) -> Iterator[InProcessDaemon]:
    """A daemon on `config` (watching `root`) running on a thread; with `files`, once that many
    files are indexed or failed and indexing is idle. Stopped and joined on exit."""
    if isinstance(config, Path):
        config = load_config(config, require_roots=False)
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        running = InProcessDaemon(daemon, root)
        if files is not None:
            running.wait_settled(files)
        yield running
    finally:
        daemon.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the daemon did not stop"


class ModelGate:
    """Holds back model loading in daemons started while it is installed (see
    `hold_model_loading`)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._loaders: list[threading.Thread] = []

    def model(self, *args: Any) -> Any:
        from clipd.image_model import for_the_daemon

        self._loaders.append(threading.current_thread())
        self._open.wait(timeout=60)
        return for_the_daemon(*args)

    def release(self) -> None:
        """Let the held loaders load, and wait until they have: a loader still building the
        model when the test ends would be reported as a leaked thread (on a busy machine the
        tiny model takes seconds)."""
        self._open.set()
        for loader in self._loaders:
            loader.join(timeout=120)


def hold_model_loading(monkeypatch: pytest.MonkeyPatch) -> ModelGate:
    """Make daemons started from now on load their model only once the returned gate is
    released. Release it before stopping such a daemon, so that its loader ends rather than
    being left waiting."""
    import clipd.app

    gate = ModelGate()
    monkeypatch.setattr(clipd.app, "for_the_daemon", gate.model)
    return gate


# -- the daemon as a process --------------------------------------------------------------------


class DaemonProcess:
    """`clipd serve --config CONFIG` as a child process; its stdout and stderr kept in memory.

    `env` replaces the environment it inherits (the test's, isolated by conftest)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.popen = subprocess.Popen(
            [BIN / "clipd", "serve", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="clipd-output")
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.append(line)
        self.popen.stdout.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        """Everything the process has written so far."""
        return "".join(self._lines)

    def send_signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            assert self.popen.poll() is None or text in self.output, self.output
            return text in self.output

        wait_until(seen, f"{text!r} in the daemon's output", timeout=timeout)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to end; its exit code."""
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `signum` if it still runs, and wait for it; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        return self.wait(timeout)


@contextlib.contextmanager
def daemon_process(config: Path, *args: str) -> Iterator[DaemonProcess]:
    """A `clipd serve` process, stopped with SIGTERM on exit, which must exit 0."""
    process = DaemonProcess(config, *args)
    try:
        yield process
    finally:
        code = process.stop()
    assert code == 0, process.output


def run_clipd(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`clipd ARGS` run to completion (`env` replaces the inherited environment)."""
    return subprocess.run(
        [BIN / "clipd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def run_clipq_process(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`clipq ARGS` run to completion as its own process."""
    return subprocess.run(
        [BIN / "clipq", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# -- things to index and check ------------------------------------------------------------------


def picture(path: Path, colour: str = "red", shape: str = "circle", seed: int = 0) -> Path:
    """A small PNG of a coloured shape at `path` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(colour, shape, (96, 80), random.Random(seed)).save(path)
    return path


def assert_one_to_one(database: Path) -> None:
    """Every file row has exactly one vector and every vector one row."""
    conn = sqlite.connect(database)
    try:
        orphan_rows = conn.execute(
            "SELECT count(*) FROM files WHERE id NOT IN (SELECT rowid FROM vectors)"
        ).fetchone()[0]
        orphan_vectors = conn.execute(
            "SELECT count(*) FROM vectors WHERE rowid NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
    finally:
        conn.close()
    assert (orphan_rows, orphan_vectors) == (0, 0)


# Store records without a model: random unit vectors of a small dimension.
DIM = 16
MODEL = ModelIdentity("test-model", "test-weights", DIM)
Matrix = npt.NDArray[np.float32]


def unit_vectors(count: int, seed: int = 0) -> Matrix:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((count, DIM)).astype(np.float32)
    normalised: Matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normalised


def record(path: str, vector: Matrix, size: int = 100, mtime_ns: int = 1_000_000_000) -> FileRecord:
    return FileRecord(path, size, mtime_ns, 1, 1, b"h" * 16, 64, 48, vector.tobytes())


# -- the fake daemon -----------------------------------------------------------------------------

CANNED_HITS = [
    pb.Hit(
        path="/pics/a.jpg",
        score=0.3124,
        width=640,
        height=480,
        size_bytes=1234,
        mtime=1.5,
        taken=0.5,
    ),
    pb.Hit(path="/pics/b c.png", score=0.2, width=10, height=20, size_bytes=99, mtime=2.0),
]


FULL_STATUS = pb.Status(
    state=pb.Status.INDEXING,
    version="0.1.0",
    indexed=1234,
    queued=3766,
    failed=2,
    offline=1,
    images_per_second=24.6,
    eta_seconds=153.1,
    model="ViT-B-32",
    pretrained="laion2b_s34b_b79k",
    dim=512,
    device="cpu",
    roots=["/pics", "/more pics"],
    database="/data/index.db",
    database_bytes=12_345_678,
    started_at=1.0,
    web_url="http://127.0.0.1:8765/",
)

# What WatchStatus yields, then it ends: progress (the second a heartbeat repeating the
# first), idle, and new work after that.
WATCHED = [
    pb.Status(state=pb.Status.INDEXING, indexed=1, queued=3, images_per_second=2, eta_seconds=150),
    pb.Status(state=pb.Status.INDEXING, indexed=1, queued=3, images_per_second=2, eta_seconds=150),
    pb.Status(state=pb.Status.INDEXING, indexed=3, queued=1, images_per_second=2, eta_seconds=30),
    pb.Status(state=pb.Status.IDLE, indexed=4, images_per_second=2),
    pb.Status(state=pb.Status.INDEXING, indexed=4, queued=2, images_per_second=2),
]

CANNED_FAILURES = [
    pb.Failure(
        path="/pics/bad.jpg",
        error="CorruptImage",
        message="image file is\n  truncated",
        attempts=2,
        last_seen=1_700_000_000.0,
    ),
    pb.Failure(
        path="/pics/big.png",
        error="TooLarge",
        message="over 178956970 pixels",
        attempts=1,
        last_seen=1_700_000_060.0,
    ),
]


@dataclass
class FakeDaemon(pb_grpc.ImageSearchServicer):
    """Answers with whatever the test sets, and remembers the requests it got."""

    hits: list[pb.Hit] = field(default_factory=list)
    partial: bool = False
    nothing_indexed: bool = False
    host: str = ""  # the machine it says it is (SearchResponse.host)
    # The invocation metadata of each Search call.
    metadata: list[dict[str, str]] = field(default_factory=list)
    # The refusal to answer every call with, and the kind to put in its trailing metadata.
    abort: tuple[grpc.StatusCode, str] | tuple[grpc.StatusCode, str, ErrorKind] | None = None
    status: pb.Status = field(default_factory=pb.Status)
    requests: list[pb.SearchRequest] = field(default_factory=list)
    # Set to make Search hang until the fake's teardown sets it again.
    hold: threading.Event | None = None
    # The names of the RPCs called, in order.
    calls: list[str] = field(default_factory=list)
    # WatchStatus yields these, then ends, or with watch_forever waits until cancelled.
    watched: list[pb.Status] = field(default_factory=lambda: list(WATCHED))
    watch_forever: bool = False
    watch_ended: threading.Event = field(default_factory=threading.Event)
    # Each Reindex request, with the seconds its deadline left it.
    reindexes: list[tuple[pb.ReindexRequest, float]] = field(default_factory=list)
    failure_requests: list[pb.ListFailuresRequest] = field(default_factory=list)
    embeds: list[pb.EmbedRequest] = field(default_factory=list)

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        if self.hold is not None:
            self.hold.wait(timeout=5)
        self._answer("Search", context)
        return pb.SearchResponse(
            hits=self.hits,
            partial=self.partial,
            took_ms=1.5,
            nothing_indexed=self.nothing_indexed,
            host=self.host,
        )

    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        self._answer("GetStatus", context)
        return self.status

    def WatchStatus(
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Status]:
        try:
            self._answer("WatchStatus", context)
            yield from self.watched
            while self.watch_forever and context.is_active():
                time.sleep(0.01)
        finally:
            self.watch_ended.set()

    def Reindex(
        self, request: pb.ReindexRequest, context: grpc.ServicerContext
    ) -> pb.ReindexResponse:
        self.reindexes.append((request, context.time_remaining()))
        self._answer("Reindex", context)
        return pb.ReindexResponse(queued=7, removed=2, indexed=5, failed=1)

    def ListFailures(
        self, request: pb.ListFailuresRequest, context: grpc.ServicerContext
    ) -> pb.ListFailuresResponse:
        self.failure_requests.append(request)
        self._answer("ListFailures", context)
        return pb.ListFailuresResponse(failures=CANNED_FAILURES, total=5)

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        self.embeds.append(request)
        self._answer("Embed", context)
        return pb.EmbedResponse(vector=[0.6, 0.8], model="ViT-B-32", pretrained="x")

    def Thumbnail(
        self, request: pb.ThumbnailRequest, context: grpc.ServicerContext
    ) -> pb.ThumbnailResponse:
        self._answer("Thumbnail", context)
        return pb.ThumbnailResponse(data=b"PNG of " + request.path.encode(), width=4, height=3)

    def _answer(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls.append(name)
        if self.abort is not None:
            code, message, *kind = self.abort
            if kind:
                context.set_trailing_metadata(((ERROR_KIND_METADATA, kind[0].value),))
            context.abort(code, message)


@contextlib.contextmanager
def serve(servicer: pb_grpc.ImageSearchServicer, address: str) -> Iterator[int]:
    """A real gRPC server for `servicer` on `address` ("unix:PATH" or "HOST:PORT").

    Yields the port it bound; on leaving, stops it and joins its threads.
    """
    threads_before = set(threading.enumerate())
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(executor)
    pb_grpc.add_ImageSearchServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)
        executor.shutdown(wait=True)
        # stop() returns as the server's polling thread is told to end, not once it has.
        for thread in set(threading.enumerate()) - threads_before:
            thread.join(timeout=5)


@contextlib.contextmanager
def serve_fake(address: str) -> Iterator[tuple[FakeDaemon, int]]:
    """A FakeDaemon serving on `address` ("unix:PATH" or "HOST:PORT"); yields it and its port."""
    fake = FakeDaemon()
    with serve(fake, address) as port:
        try:
            yield fake, port
        finally:
            # A held search would keep the server from stopping.
            if fake.hold is not None:
                fake.hold.set()


def run_clipq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`clipq ARGV` run in this process: (exit code, stdout, stderr)."""
    code = clipq_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The last stderr line of a clipq command that must stop with exit 2 before any call."""
    with pytest.raises(SystemExit) as raised:
        clipq_main(list(argv))
    assert raised.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.strip().splitlines()[-1]


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
