"""sd_notify over a real AF_UNIX datagram socket, by path and by abstract name."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipd.notify import NOTIFY_SOCKET_ENV, Notifier


@pytest.fixture
def manager() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound like systemd's, and its address for $NOTIFY_SOCKET."""
    path = Path(os.environ["XDG_RUNTIME_DIR"]) / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_ready_then_status_lines_arrive_in_order(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier(address)
    assert notifier.enabled
    notifier.ready("loading model")
    notifier.status("indexing: 12 queued, 3.5 img/s")
    notifier.reloading()
    notifier.stopping()
    received = [sock.recv(4096).decode() for _ in range(4)]
    assert received[:2] == [
        "READY=1\nSTATUS=loading model",
        "STATUS=indexing: 12 queued, 3.5 img/s",
    ]
    reloading, usec = received[2].split("\n")
    assert reloading == "RELOADING=1"
    assert int(usec.removeprefix("MONOTONIC_USEC=")) > 0
    assert received[3] == "STOPPING=1\nSTATUS=stopping"


def test_an_abstract_address_starting_with_at_is_used() -> None:
    name = f"clipd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier("@" + name).ready("x")
        assert sock.recv(4096) == b"READY=1\nSTATUS=x"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NOTIFY_SOCKET_ENV, raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    notifier.ready("x")  # no socket, no error


def test_a_vanished_manager_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    notifier.ready("x")
    notifier.status("y")
    assert caplog.text.count("cannot notify the service manager") == 1
