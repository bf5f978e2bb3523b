"""What clipq says when a call goes wrong: each message names the cause and the option to change."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import grpc
import pytest
from test_clipq import CANNED_HITS, FakeDaemon, daemon, run_clipq, short_dir, tcp_daemon

from clipd_api.paths import user_token_path
from clipq import Client, TimedOut, Unauthenticated
from clipq.cli import main

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


def test_an_unknown_graphics_setting_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPQ_GRAPHICS", "bogus")
    with pytest.raises(SystemExit) as raised:
        main(["--socket", "/nonexistent/clipd.sock", "--preview", "cat"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "clipq: error: CLIPQ_GRAPHICS='bogus' is not one of kitty, iterm2, sixel, none\n"
    )


def test_preview_into_a_pipe_says_that_is_why_it_lists(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS[:1]
    assert run_clipq(capsys, "--socket", path, "--preview", "cat") == (
        0,
        "0.312  /pics/a.jpg\n",
        "clipq: the output is not a terminal; listing the hits instead\n",
    )


def test_a_missing_default_opener_names_it_and_what_to_set(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS[:1]
    monkeypatch.delenv("CLIPQ_OPENER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no viewer anywhere
    code, _, err = run_clipq(capsys, "--socket", path, "--open", "cat")
    program = "open" if sys.platform == "darwin" else "xdg-open"
    assert code == 1
    assert err.startswith(f"clipq: cannot open the results: {program!r} (the default on ")
    assert err.endswith(
        "was not found; install it, or set CLIPQ_OPENER to an image viewer that is installed, "
        "e.g. CLIPQ_OPENER=feh\n"
    )
