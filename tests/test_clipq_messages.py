"""What clipq says when a call goes wrong: each message names the cause and the option to change."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import grpc
import pytest
from harness import CANNED_HITS, FakeDaemon, run_clipq, usage_error

from clipd_api.paths import user_token_path
from clipd_api.v1 import clipd_pb2 as pb
from clipq import Client, TimedOut, Unauthenticated


def test_a_call_past_the_timeout_raises_timed_out(fake_daemon: tuple[FakeDaemon, str]) -> None:
    # The command's message is tested with the other exit statuses in test_clipq.py.
    fake, path = fake_daemon
    fake.hold = threading.Event()
    with Client(path, timeout=0.05) as client, pytest.raises(TimedOut) as raised:
        client.search("cat")
    assert (raised.value.code, raised.value.timeout) == ("DEADLINE_EXCEEDED", 0.05)


def test_tcp_without_a_token_file_says_where_it_looked(
    capsys: pytest.CaptureFixture[str], fake_tcp_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, address = fake_tcp_daemon
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
    capsys: pytest.CaptureFixture[str], fake_tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, address = fake_tcp_daemon
    fake.abort = (grpc.StatusCode.UNAUTHENTICATED, "wrong token")
    token = tmp_path / "token"
    token.write_text("not-the-one\n")
    code, _, err = run_clipq(capsys, "--address", address, "--token-file", str(token), "cat")
    assert (code, err) == (1, "clipq: clipd refused the token: wrong token\n")


def test_an_unknown_graphics_setting_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPQ_GRAPHICS", "bogus")
    assert usage_error(capsys, "--socket", "/nonexistent/clipd.sock", "--preview", "cat") == (
        "clipq: error: CLIPQ_GRAPHICS='bogus' is not one of kitty, iterm2, sixel, none"
    )


def test_preview_into_a_pipe_says_that_is_why_it_lists(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS[:1]
    assert run_clipq(capsys, "--socket", path, "--preview", "cat") == (
        0,
        "0.312  /pics/a.jpg\n",
        "clipq: the output is not a terminal; listing the hits instead\n",
    )


def test_a_missing_default_opener_names_it_and_what_to_set(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake, path = fake_daemon
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


# Empty results and paths that are not there


def test_no_matches_on_a_terminal_says_so_on_stderr(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, path = fake_daemon
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert run_clipq(capsys, "--socket", path, "cat") == (0, "", "clipq: no matches\n")
    narrowed = ["--under", str(tmp_path), "--since", "3d", "--min-score", "0.3", "cat"]
    assert run_clipq(capsys, "--socket", path, *narrowed) == (
        0,
        "",
        "clipq: no matches with --min-score, --under, --since\n",
    )


def test_nothing_searchable_because_every_root_is_offline_says_so(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.nothing_indexed = True
    fake.status = pb.Status(state=pb.Status.IDLE, indexed=0, offline=214, roots=["/media/disk"])
    assert run_clipq(capsys, "--socket", path, "cat") == (
        5,
        "",
        "clipq: nothing is searchable: every root is offline (214 indexed files are on folders "
        "that are not there now); mount or reconnect them, and see the roots with "
        "'clipq status'\n",
    )


def test_under_a_folder_that_is_not_there_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    assert usage_error(capsys, "--socket", path, "--under", "/nonexistent", "cat") == (
        "clipq: error: --under /nonexistent: no such file or folder"
    )
    assert fake.requests == []


def test_under_over_tcp_is_the_daemons_path_and_not_checked_here(
    capsys: pytest.CaptureFixture[str], fake_tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, address = fake_tcp_daemon
    token = tmp_path / "token"
    token.write_text("t")
    argv = ["--address", address, "--token-file", str(token), "--under", "/elsewhere", "cat"]
    assert run_clipq(capsys, *argv)[0] == 0
    assert list(fake.requests[0].under) == ["/elsewhere"]


def test_reindex_of_a_path_that_is_not_there_notes_it_and_still_asks(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "reindex", "--socket", path, "/nonexistent") == (
        0,
        "rescan requested; follow it with 'clipq status --watch'\n",
        "clipq: note: /nonexistent does not exist; the rescan only drops what the index holds "
        "there\n",
    )
    assert [list(request.paths) for request, _ in fake.reindexes] == [["/nonexistent"]]


@pytest.mark.parametrize("partial", [True, False])
def test_every_machine_readable_hit_says_whether_the_result_is_partial(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str], partial: bool
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    fake.partial = partial
    for flag in ("--json", "--jsonl"):
        code, out, err = run_clipq(capsys, "--socket", path, flag, "cat")
        hits = json.loads(out) if flag == "--json" else [json.loads(x) for x in out.splitlines()]
        assert code == 0
        assert [hit["partial"] for hit in hits] == [partial, partial]
        assert ("results may be incomplete" in err) is partial


def test_a_narrow_terminal_keeps_the_folder_that_tells_hits_apart(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    shared = "/home/someone/Pictures/2023/holidays/"
    fake.hits = [
        pb.Hit(path=shared + "italy/IMG_2041.jpg", score=0.31),
        pb.Hit(path=shared + "norway/IMG_2041.jpg", score=-0.01),
    ]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "30")
    code, out, _ = run_clipq(capsys, "--socket", path, "--color", "never", "cat")
    assert (code, out) == (0, "0.310  /h…/italy/IMG_2041.jpg\n-0.010  /…/norway/IMG_2041.jpg\n")
