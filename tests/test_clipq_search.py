"""`clipq QUERY...`, the search command, against the harness's stand-in daemon: the terms and
filters it sends, its output modes, and how it reports the daemon's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from harness import CANNED_HITS, FakeDaemon, picture, run_clipq, wait_until

from clipd_api.kinds import ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipq import (
    Client,
)
from clipq.cli import main

# Arguments and output


def test_blank_query_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    with pytest.raises(SystemExit) as raised:
        main(["--socket", path, " "])
    assert raised.value.code == 2
    assert "the query is empty" in capsys.readouterr().err
    assert fake.requests == []


def test_prints_score_and_path_lines_best_first(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    assert run_clipq(capsys, "--socket", path, "cat") == (
        0,
        "0.312  /pics/a.jpg\n0.200  /pics/b c.png\n",
        "",
    )


def test_other_machines_hits_show_their_host_and_host_filters(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    """In an index several machines share, a hit of another machine than the daemon's is
    host:path; --host asks for those machines' files only."""
    fake, path = fake_daemon
    fake.host = "laptop"
    fake.hits = [
        pb.Hit(path="/pics/a.jpg", score=0.3, host="laptop"),
        pb.Hit(path="/pics/b.jpg", score=0.2, host="nas"),
    ]
    out = run_clipq(capsys, "--socket", path, "--host", "nas", "--host", "laptop", "cat")
    assert out == (0, "0.300  /pics/a.jpg\n0.200  nas:/pics/b.jpg\n", "")
    assert list(fake.requests[0].hosts) == ["nas", "laptop"]
    assert not fake.requests[0].exact
    run_clipq(capsys, "--socket", path, "--exact", "cat")
    assert fake.requests[1].exact
    assert run_clipq(capsys, "--socket", path, "--paths", "cat")[1] == (
        "/pics/a.jpg\nnas:/pics/b.jpg\n"
    )


def test_no_hits_is_success(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    assert run_clipq(capsys, "--socket", path, "cat") == (0, "", "")


def test_json_prints_one_array_of_hits(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    code, out, err = run_clipq(capsys, "--socket", path, "--json", "cat")
    assert (code, err) == (0, "")
    hits = json.loads(out)
    assert [h["path"] for h in hits] == ["/pics/a.jpg", "/pics/b c.png"]
    assert hits[0] == {
        "path": "/pics/a.jpg",
        "score": pytest.approx(0.3124),
        "width": 640,
        "height": 480,
        "size_bytes": 1234,
        "mtime": 1.5,
        "taken": 0.5,
        "paired": [],
        "host": "",
        "partial": False,
    }
    assert hits[1]["taken"] is None  # no capture time recorded


def test_json_with_no_hits_prints_empty_array(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    assert run_clipq(capsys, "--socket", path, "--json", "cat") == (0, "[]\n", "")


def test_partial_results_note_on_stderr_in_human_mode_only(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS[:1]
    fake.partial = True
    note = "clipq: note: indexing in progress; results may be incomplete\n"
    assert run_clipq(capsys, "--socket", path, "cat") == (0, "0.312  /pics/a.jpg\n", note)
    code, out, err = run_clipq(capsys, "--socket", path, "--json", "cat")
    assert (code, err) == (0, note)
    assert json.loads(out)[0]["partial"] is True


def test_closed_stdout_exits_141_quietly(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    read_end, write_end = os.pipe()
    # The reader is gone before clipq writes a byte, as with `clipq ... | head -0`.
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clipq", "--socket", path, "cat"],
            check=False,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")


# What goes on the wire


@pytest.mark.parametrize(
    ("argv", "limit"),
    [
        (["red", "brick", "wall"], 20),
        (["red brick wall"], 20),
        (["-n", "5", "red", "brick", "wall"], 5),
        (["red", "--limit", "1000", "brick", "wall"], 1000),
    ],
)
def test_words_become_one_text_term_and_limit_passes_through(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    argv: list[str],
    limit: int,
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    [request] = fake.requests
    assert list(request.terms) == [pb.Term(text="red brick wall")]
    assert not request.terms[0].HasField("weight")
    assert request.limit == limit


def terms_sent(fake: FakeDaemon) -> list[tuple[str, object, float]]:
    """(kind, value, weight) of each term of the one search the stand-in got."""
    [request] = fake.requests
    return [
        (
            str(term.WhichOneof("kind")),
            getattr(term, str(term.WhichOneof("kind"))),
            term.weight if term.HasField("weight") else 1.0,
        )
        for term in request.terms
    ]


@pytest.mark.parametrize(
    ("argv", "terms"),
    [
        (
            ["beach", "-people", "2:sunset", "+dog"],
            [
                ("text", "beach", 1),
                ("text", "people", -1),
                ("text", "sunset", 2),
                ("text", "dog", 1),
            ],
        ),
        (["-n", "5", "city", "-night"], [("text", "city", 1), ("text", "night", -1)]),
        (["city", "-n5", "-0.5:night"], [("text", "city", 1), ("text", "night", -0.5)]),
        (["--", "-n", "status"], [("text", "status", 1), ("text", "n", -1)]),
    ],
)
def test_query_algebra_reaches_the_daemon(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    argv: list[str],
    terms: list[tuple[str, object, float]],
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    assert terms_sent(fake) == terms


def test_image_files_are_sent_as_paths_over_the_socket(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    monkeypatch.chdir(tmp_path)
    shot = picture(tmp_path / "shot.png")
    (tmp_path / "other").write_bytes(shot.read_bytes())  # a PNG without an extension
    code, _, _ = run_clipq(capsys, "--socket", path, "shot.png", "-0.5:night", "--image", "other")
    assert code == 0
    assert terms_sent(fake) == [
        ("path", str(tmp_path / "shot.png"), 1),
        ("text", "night", -0.5),
        ("path", str(tmp_path / "other"), 1),
    ]


def test_over_tcp_image_files_are_sent_as_bytes_with_the_token(
    capsys: pytest.CaptureFixture[str], fake_tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, address = fake_tcp_daemon
    image = picture(tmp_path / "shot.png")
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    argv = ["--address", address, "--token-file", str(token), str(image), "+sunset"]
    assert run_clipq(capsys, *argv)[0] == 0
    assert terms_sent(fake) == [("image", image.read_bytes(), 1), ("text", "sunset", 1)]
    assert fake.metadata[0]["authorization"] == "Bearer s3cret-token"


def test_address_and_token_come_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    fake_tcp_daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, address = fake_tcp_daemon
    token = tmp_path / "token"
    token.write_text("from-env")
    monkeypatch.setenv("CLIPD_ADDRESS", address)
    monkeypatch.setenv("CLIPD_TOKEN_FILE", str(token))
    assert run_clipq(capsys, "cat")[0] == 0
    assert fake.metadata[0]["authorization"] == "Bearer from-env"


def test_a_missing_token_file_is_one_line(
    capsys: pytest.CaptureFixture[str], fake_tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    _, address = fake_tcp_daemon
    missing = tmp_path / "nope"
    code, _, err = run_clipq(capsys, "--address", address, "--token-file", str(missing), "cat")
    assert (code, err) == (
        1,
        f"clipq: cannot read the token file {missing}: No such file or directory\n",
    )


def test_filters_reach_the_daemon(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    monkeypatch.chdir(tmp_path)
    (tmp_path / "holidays").mkdir()
    (tmp_path / "2023").mkdir()
    argv = ["cat", "--under", "holidays", f"--under={tmp_path}/2023", "--ext", "JPG,.png"]
    argv += ["--ext", "webp", "--min-score", "-0.2", "--offset", "40"]
    argv += ["--since", "2023-05-01", "--until", "2024"]
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    [request] = fake.requests
    assert list(request.under) == [str(tmp_path / "holidays"), str(tmp_path / "2023")]
    assert list(request.extensions) == ["jpg", "png", "webp"]
    assert request.min_score == pytest.approx(-0.2)
    assert request.offset == 40
    # --since/--until filter on capture times (the daemon falls back to mtime per file).
    assert request.taken_after == datetime(2023, 5, 1).timestamp()
    assert request.taken_before == datetime(2024, 1, 1).timestamp()
    assert not request.HasField("modified_after")
    assert not request.HasField("modified_before")


def test_mtime_flag_filters_on_modification_time(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "--socket", path, "cat", "--mtime", "--since", "2023")[0] == 0
    [request] = fake.requests
    assert request.modified_after == datetime(2023, 1, 1).timestamp()
    assert not request.HasField("modified_before")
    assert not request.HasField("taken_after")


def test_without_filters_none_are_sent(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    run_clipq(capsys, "--socket", path, "cat")
    [request] = fake.requests
    for name in ("min_score", "modified_after", "modified_before", "taken_after", "taken_before"):
        assert not request.HasField(name)
    assert (list(request.under), list(request.extensions), request.offset) == ([], [], 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cat", "--ext", "j*g"], "not a file extension"),
        (["cat", "--since", "last week"], "is not a time"),
        (["cat", "--min-score", "2"], "must be between -1 and 1"),
        (["cat", "--since", "2025", "--until", "2024"], "--since must be earlier than --until"),
        (["cat", "--image", "/no/such.jpg"], "--image /no/such.jpg: no such file"),
        (["cat", "--json", "--paths"], "not allowed with argument"),
        (["0:cat"], "a weight of 0"),
        (["cat", "--socket", "/s", "--address", "h:1"], "not allowed with argument"),
    ],
)
def test_bad_search_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    out, err = capsys.readouterr()
    assert (raised.value.code, out) == (2, "")
    assert message in err


# Errors from the daemon


def test_loading_model_exits_4(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    loading = "clipd is still loading its model; try again in a few seconds"
    fake.abort = (grpc.StatusCode.UNAVAILABLE, loading, ErrorKind.NOT_READY)
    assert run_clipq(capsys, "--socket", path, "cat") == (4, "", f"clipq: {loading}\n")


def test_only_the_error_kind_says_the_daemon_is_loading(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.abort = (grpc.StatusCode.UNAVAILABLE, "loading is over: shutting down")
    assert run_clipq(capsys, "--socket", path, "cat")[0] == 3


def test_unavailable_for_another_reason_exits_3(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.abort = (grpc.StatusCode.UNAVAILABLE, "shutting down")
    code, out, err = run_clipq(capsys, "--socket", path, "cat")
    assert (code, out) == (3, "")
    assert err.startswith(f"clipq: clipd at {path} is unavailable (shutting down); start it")


@pytest.mark.parametrize(
    "status",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_bad_request_exits_1_with_the_daemons_message(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    status: grpc.StatusCode,
) -> None:
    fake, path = fake_daemon
    fake.abort = (status, "offset must be at most 100000")
    assert run_clipq(capsys, "--socket", path, "cat") == (
        1,
        "",
        "clipq: offset must be at most 100000\n",
    )


def test_a_multi_line_message_is_printed_on_one_line(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.abort = (grpc.StatusCode.INVALID_ARGUMENT, "bad query\n  use fewer terms")
    assert run_clipq(capsys, "--socket", path, "cat")[2] == "clipq: bad query use fewer terms\n"


def test_timeout_exits_1_naming_the_deadline(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hold = threading.Event()
    code, out, err = run_clipq(capsys, "--socket", path, "--timeout", "0.05", "cat")
    assert (code, out) == (1, "")
    assert (
        err == "clipq: clipd did not answer within 0.05 s; allow it longer with --timeout SECONDS\n"
    )


def test_ctrl_c_exits_130_without_traceback(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = fake_daemon

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "search", interrupted)
    assert run_clipq(capsys, "--socket", path, "cat") == (130, "", "")


def test_nothing_indexed_exits_5_and_says_what_to_do(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.nothing_indexed = True
    code, out, err = run_clipq(capsys, "--socket", path, "--json", "cat")
    assert (code, out) == (5, "[]\n")
    assert err.startswith("clipq: nothing is indexed yet;")
    assert "'roots'" in err


# Output modes, opening and previews


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--jsonl", None),
        ("--paths", "/pics/a.jpg\n/pics/b c.png\n"),
        ("-0", "/pics/a.jpg\0/pics/b c.png\0"),
        ("--print0", "/pics/a.jpg\0/pics/b c.png\0"),
    ],
)
def test_machine_outputs(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    flag: str,
    expected: str | None,
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    code, out, err = run_clipq(capsys, "--socket", path, flag, "cat")
    assert (code, err) == (0, "")
    if expected is None:
        assert [json.loads(line)["path"] for line in out.splitlines()] == [
            "/pics/a.jpg",
            "/pics/b c.png",
        ]
    else:
        assert out == expected


def test_colour_is_chosen_by_flag(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    _, coloured, _ = run_clipq(capsys, "--socket", path, "--color", "always", "cat")
    assert "\x1b[1ma.jpg\x1b[0m" in coloured
    # Not a terminal: auto means no colour.
    _, plain, _ = run_clipq(capsys, "--socket", path, "cat")
    assert "\x1b" not in plain


def test_open_starts_the_viewer_with_every_hit(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    record = tmp_path / "opened"
    viewer = tmp_path / "viewer"
    viewer.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.tmp && mv {record}.tmp {record}\n'
    )
    viewer.chmod(0o755)
    monkeypatch.setenv("CLIPQ_OPENER", f"{viewer} --fullscreen")
    code, out, _ = run_clipq(capsys, "--socket", path, "--open", "cat")
    assert code == 0
    assert out.count("\n") == 2
    wait_until(record.exists, "the viewer started", timeout=10, interval=0.02)
    assert record.read_text().splitlines() == ["--fullscreen", "/pics/a.jpg", "/pics/b c.png"]


def test_open_without_a_viewer_says_what_to_install(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    monkeypatch.setenv("CLIPQ_OPENER", "no-such-viewer-anywhere")
    code, _, err = run_clipq(capsys, "--socket", path, "--open", "cat")
    assert code == 1
    assert err == (
        "clipq: cannot open the results: 'no-such-viewer-anywhere' ($CLIPQ_OPENER) was not "
        "found; install it, or set CLIPQ_OPENER to an image viewer that is installed, "
        "e.g. CLIPQ_OPENER=feh\n"
    )


def test_preview_draws_each_hit_then_its_line(
    capsysbinary: pytest.CaptureFixture[bytes],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    monkeypatch.setenv("CLIPQ_GRAPHICS", "kitty")
    assert main(["--socket", path, "--preview", "cat"]) == 0
    out = capsysbinary.readouterr().out
    for hit in CANNED_HITS:
        assert base64.b64encode(b"PNG of " + hit.path.encode()) in out
        assert f"{hit.score:.3f}  {hit.path}\n".encode() in out
    assert out.count(b"\x1b_G") == 2
    assert fake.calls == ["Search", "Thumbnail", "Thumbnail"]


def test_preview_on_a_terminal_without_graphics_lists_the_hits_and_says_so(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS
    monkeypatch.setenv("CLIPQ_GRAPHICS", "none")
    code, out, err = run_clipq(capsys, "--socket", path, "--preview", "cat")
    assert code == 0
    assert out == "0.312  /pics/a.jpg\n0.200  /pics/b c.png\n"
    assert err == "clipq: CLIPQ_GRAPHICS=none turns previews off; listing the hits instead\n"
    assert "Thumbnail" not in fake.calls
