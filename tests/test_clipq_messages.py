"""What clipq says when a call goes wrong: each message names the cause and the option to change."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from test_clipq import FakeDaemon, daemon, run_clipq, short_dir, tcp_daemon

from clipd_api.paths import user_token_path
from clipq import Client, TimedOut, Unauthenticated

__all__ = ["daemon", "short_dir", "tcp_daemon"]  # fixtures


def test_a_call_past_the_timeout_raises_timed_out(daemon: tuple[FakeDaemon, str]) -> None:
    # The command's message is tested with the other exit statuses in test_clipq.py.
    fake, path = daemon
    fake.hold = threading.Event()
    with Client(path, timeout=0.05) as client, pytest.raises(TimedOut) as raised:
        client.search("cat")
    assert (raised.value.code, raised.value.timeout) == ("DEADLINE_EXCEEDED", 0.05)


def test_tcp_without_a_token_file_says_where_it_looked(
    capsys: pytest.CaptureFixture[str], tcp_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, address = tcp_daemon
    fake.abort = (grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
    code, out, err = run_clipq(capsys, "--address", address, "cat")
    assert (code, out) == (1, "")
    assert err == (
        f"clipq: clipd wants a token, and none was sent: there is no token file "
        f"{user_token_path()}; name the token file the daemon wrote (its token_file setting) "
        "with --token-file or $CLIPD_TOKEN_FILE\n"
    )
    assert "authorization" not in fake.metadata[0]
    with Client(target=address) as client, pytest.raises(Unauthenticated) as raised:
        client.status()
    assert raised.value.token_file == user_token_path()


def test_tcp_with_a_wrong_token_says_it_was_refused(
    capsys: pytest.CaptureFixture[str], tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, address = tcp_daemon
    fake.abort = (grpc.StatusCode.UNAUTHENTICATED, "wrong token")
    token = tmp_path / "token"
    token.write_text("not-the-one\n")
    code, _, err = run_clipq(capsys, "--address", address, "--token-file", str(token), "cat")
    assert (code, err) == (1, "clipq: clipd refused the token: wrong token\n")
