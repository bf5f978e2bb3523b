"""Waiting for a daemon that is loading its model: Client.wait_until_ready and --wait-ready.

The stand-in daemon answers GetStatus with STARTING and refuses searches as the real one does
while it loads; it finishes loading once it has said "starting" as often as the test asks, so
every test sees the client told "starting" and asking again, whatever the machine's speed. It is
a real gRPC server on a temporary socket.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from socket import AF_UNIX
from socket import socket as unix_socket

import grpc
import pytest
from harness import serve

from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import Client, DaemonStarting, DaemonUnavailable
from clipq.cli import main

LOADING = "clipd is still loading its model; try again in a few seconds"


class LoadingDaemon(pb_grpc.ImageSearchServicer):
    """Loading until loaded is set; then idle, and every search finds one hit.

    With loads_after set, it sets loaded itself once it has answered "starting" that many times.
    """

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.loads_after: int | None = None
        self.searches = 0
        self.starting_answers = 0

    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        if self.loaded.is_set():
            return pb.Status(state=pb.Status.IDLE, indexed=1)
        self.starting_answers += 1
        if self.starting_answers == self.loads_after:
            self.loaded.set()
        return pb.Status(state=pb.Status.STARTING, indexed=1)

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        if not self.loaded.is_set():
            context.set_trailing_metadata(((ERROR_KIND_METADATA, ErrorKind.NOT_READY.value),))
            context.abort(grpc.StatusCode.UNAVAILABLE, LOADING)
        self.searches += 1
        return pb.SearchResponse(hits=[pb.Hit(path="/pics/a.jpg", score=0.5)])


@pytest.fixture
def loading(short_dir: Path) -> Iterator[tuple[LoadingDaemon, str]]:
    daemon = LoadingDaemon()
    socket = short_dir / "clipd.sock"
    with serve(daemon, f"unix:{socket}"):
        yield daemon, str(socket)


def test_wait_until_ready_returns_once_the_model_is_loaded(
    loading: tuple[LoadingDaemon, str],
) -> None:
    daemon, socket = loading
    daemon.loads_after = 2
    with Client(socket) as client:
        assert client.wait_until_ready(timeout=10).state == "idle"
    # It was told "starting" and asked again, rather than returning at the first answer.
    assert daemon.starting_answers == 2


def test_wait_until_ready_gives_up_after_the_timeout(loading: tuple[LoadingDaemon, str]) -> None:
    _, socket = loading
    with Client(socket) as client, pytest.raises(DaemonStarting) as raised:
        client.wait_until_ready(timeout=0.3)
    assert raised.value.waited == 0.3


def test_wait_until_ready_waits_for_a_daemon_that_is_not_there_yet(short_dir: Path) -> None:
    daemon = LoadingDaemon()
    daemon.loaded.set()
    socket = short_dir / "clipd.sock"
    with Client(socket) as client, futures.ThreadPoolExecutor(max_workers=1) as pool:
        # A stale socket that hangs up on the client: it must wait on rather than fail.
        with unix_socket(AF_UNIX) as stale:
            stale.bind(str(socket))
            stale.listen()
            stale.settimeout(10)
            waiting = pool.submit(client.wait_until_ready, 10)
            stale.accept()[0].close()
        assert not waiting.done()
        socket.unlink()
        with serve(daemon, f"unix:{socket}"):
            assert waiting.result(timeout=10).state == "idle"
    with Client(short_dir / "never.sock") as client, pytest.raises(DaemonUnavailable) as gone:
        client.wait_until_ready(timeout=0.2)
    assert "no answer within 0.2 s" in str(gone.value)


def test_wait_ready_flag_searches_once_the_model_is_loaded(
    capsys: pytest.CaptureFixture[str], loading: tuple[LoadingDaemon, str]
) -> None:
    daemon, socket = loading
    daemon.loads_after = 1
    code = main(["--socket", socket, "--wait-ready", "cat"])
    assert (code, *capsys.readouterr()) == (0, "0.500  /pics/a.jpg\n", "")
    assert daemon.searches == 1


def test_wait_ready_flag_past_the_timeout_exits_4_saying_how_long(
    capsys: pytest.CaptureFixture[str], loading: tuple[LoadingDaemon, str]
) -> None:
    _, socket = loading
    code = main(["--socket", socket, "--wait-ready", "--timeout", "0.3", "cat"])
    assert (code, *capsys.readouterr()) == (
        4,
        "",
        "clipq: clipd was still loading its model after 0.3 s of waiting; allow it longer with "
        "--timeout SECONDS\n",
    )


def test_at_a_terminal_a_loading_daemon_is_waited_for(
    capsys: pytest.CaptureFixture[str],
    loading: tuple[LoadingDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon, socket = loading
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    daemon.loads_after = 1
    code = main(["--socket", socket, "cat"])
    assert (code, *capsys.readouterr()) == (
        0,
        "0.500  /pics/a.jpg\n",
        "clipq: clipd is loading its model; waiting up to 30 s (--timeout; Ctrl-C stops)\n",
    )


def test_a_script_is_told_at_once_that_the_daemon_is_loading(
    capsys: pytest.CaptureFixture[str], loading: tuple[LoadingDaemon, str]
) -> None:
    daemon, socket = loading
    assert main(["--socket", socket, "cat"]) == 4
    assert capsys.readouterr().err == f"clipq: {LOADING}\n"
    assert daemon.searches == 0
