"""The clipq command as a whole: start-up weight, no daemon, usage errors, which word selects
which command, and the status, failures and reindex commands, against the harness's stand-in
daemon (a real gRPC server on a temporary socket with canned answers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness import FULL_STATUS, WATCHED, FakeDaemon, run_clipq

from clipd_api.kinds import ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipq import (
    Client,
    Status,
)
from clipq.cli import main

# Start-up weight


HEAVY_MODULES = {"torch", "numpy", "PIL", "yaml", "clipd", "open_clip"}


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = (
        "import clipq.cli, sys; "
        f"bad = {{m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}}}; "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_console_script_help_exits_0() -> None:
    script = Path(sys.executable).with_name("clipq")
    done = subprocess.run(
        [script, "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert "exit status:" in done.stdout


def test_python_m_clipq_prints_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clipq", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("clipq ")


# No daemon


def no_daemon_message(path: str) -> str:
    return (
        f"clipq: no clipd daemon at {path}; start it with 'clipd serve' or "
        "'systemctl --user start clipd' (or 'make run' in the repo)\n"
    )


@pytest.fixture(params=["missing", "plain file", "bound, not listening"])
def dead_socket(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[str]:
    path = short_dir / "clipd.sock"
    if request.param == "missing":
        yield str(path)
    elif request.param == "plain file":
        path.touch()
        yield str(path)
    else:
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(str(path))
            yield str(path)


def test_no_daemon_exits_3_with_one_line(
    capsys: pytest.CaptureFixture[str], dead_socket: str
) -> None:
    assert run_clipq(capsys, "--socket", dead_socket, "hello") == (
        3,
        "",
        no_daemon_message(dead_socket),
    )


def test_socket_comes_from_clipd_socket_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    path = str(short_dir / "from-env.sock")
    monkeypatch.setenv("CLIPD_SOCKET", path)
    assert run_clipq(capsys, "hello") == (3, "", no_daemon_message(path))


@pytest.mark.parametrize(
    "argv", [["status"], ["status", "--watch"], ["failures"], ["reindex", "--wait"]]
)
def test_commands_without_daemon_exit_3(
    capsys: pytest.CaptureFixture[str], short_dir: Path, argv: list[str]
) -> None:
    path = str(short_dir / "clipd.sock")
    assert run_clipq(capsys, *argv, "--socket", path) == (3, "", no_daemon_message(path))


# Usage errors


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-n", "0", "x"],
        ["-n", "1001", "x"],
        ["-n", "a", "x"],
        ["search"],
        ["status", "extra"],
        ["-n", "5", "status"],
        ["failures", "--offset", "-1"],
        ["failures", "-n", "1001"],
        ["reindex", "--bogus"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().out == ""


# Which word selects what


@pytest.mark.parametrize(
    ("argv", "rpc", "query"),
    [
        (["status"], "GetStatus", None),
        (["--json", "status"], "GetStatus", None),
        (["status", "--json"], "GetStatus", None),
        (["failures"], "ListFailures", None),
        (["reindex"], "Reindex", None),
        (["--", "status"], "Search", "status"),
        (["search", "status"], "Search", "status"),
        (["search", "-n", "3", "red", "wall"], "Search", "red wall"),
        (["red", "status"], "Search", "red status"),
        (["--json", "--", "reindex", "now"], "Search", "reindex now"),
    ],
)
def test_the_first_word_selects_the_command(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    argv: list[str],
    rpc: str,
    query: str | None,
) -> None:
    fake, path = fake_daemon
    # The socket option comes first, so the command word is found past an option's value.
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    assert fake.calls == [rpc]
    if query is not None:
        assert list(fake.requests[0].terms) == [pb.Term(text=query)]


def test_an_abbreviated_option_value_is_skipped(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "--sock", path, "--time", "5", "status")[0] == 0
    assert fake.calls == ["GetStatus"]


def test_top_level_help_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--help"])
    out = capsys.readouterr().out
    assert raised.value.code == 0
    for usage in ("clipq status", "clipq failures", "clipq reindex", "search QUERY"):
        assert usage in out


@pytest.mark.parametrize("command", ["search", "status", "failures", "reindex"])
def test_each_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0
    assert "exit status:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("abort", "code"),
    [
        ((grpc.StatusCode.UNAVAILABLE, "loading model", ErrorKind.NOT_READY), 4),
        ((grpc.StatusCode.INVALID_ARGUMENT, "paths: 'x' is not an absolute path"), 1),
    ],
)
def test_command_errors_exit_like_searches(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    abort: tuple[grpc.StatusCode, str, ErrorKind] | tuple[grpc.StatusCode, str],
    code: int,
) -> None:
    fake, path = fake_daemon
    fake.abort = abort
    for argv in (["reindex"], ["failures"], ["status", "--watch"]):
        result = run_clipq(capsys, "--socket", path, *argv)
        assert result[:2] == (code, "")
        assert abort[1] in result[2]


# clipq status


def test_status_prints_aligned_lines(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.status.CopyFrom(FULL_STATUS)
    fake.status.started_at = time.time() - 3725
    assert run_clipq(capsys, "status", "--socket", path) == (
        0,
        "state:    indexing\n"
        "indexed:  1234\n"
        "queued:   3766\n"
        "failed:   2\n"
        "offline:  1\n"
        "rate:     24.6 images/s\n"
        "ETA:      2m33s\n"
        "model:    ViT-B-32 / laion2b_s34b_b79k\n"
        "device:   cpu\n"
        "database: /data/index.db (12.3 MB)\n"
        "roots:    /pics\n"
        "          /more pics\n"
        "web:      http://127.0.0.1:8765/\n"
        "version:  0.1.0\n"
        "uptime:   1h02m\n",
        "",
    )


def test_web_print_gives_the_url_with_the_token_once(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, path = fake_daemon
    fake.status.CopyFrom(FULL_STATUS)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret/+=\n", encoding="utf-8")
    argv = ["web", "--print", "--socket", path, "--token-file", str(token_file)]
    assert run_clipq(capsys, *argv) == (
        0,
        "http://127.0.0.1:8765/?token=s3cret%2F%2B%3D\n",
        "",
    )
    fake.status.web_url = ""
    code, out, err = run_clipq(capsys, *argv)
    assert (code, out) == (1, "")
    assert "web app is off" in err


def test_status_shows_a_problem_only_when_there_is_one(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.status.CopyFrom(FULL_STATUS)
    fake.status.problem = "disk full: cannot write /data/index.db; indexing waits and retries"
    _, out, _ = run_clipq(capsys, "status", "--socket", path)
    assert "problem:  disk full: cannot write /data/index.db;" in out
    fake.status.problem = ""
    _, out, _ = run_clipq(capsys, "status", "--socket", path)
    assert "problem" not in out


def test_idle_status_shows_no_rate_or_eta(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.status = pb.Status(state=pb.Status.IDLE, images_per_second=3.0)
    out = run_clipq(capsys, "status", "--socket", path)[1]
    assert "rate:     -\nETA:      -\n" in out
    assert "roots:    -\n" in out


def test_status_json_has_every_field(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.status = FULL_STATUS
    code, out, err = run_clipq(capsys, "status", "--json", "--socket", path)
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "state": "indexing",
        "version": "0.1.0",
        "indexed": 1234,
        "queued": 3766,
        "failed": 2,
        "offline": 1,
        "images_per_second": 24.6,
        "eta_seconds": 153.1,
        "model": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
        "dim": 512,
        "device": "cpu",
        "roots": ["/pics", "/more pics"],
        "database": "/data/index.db",
        "database_bytes": 12_345_678,
        "started_at": 1.0,
        "problem": "",
        "web_url": "http://127.0.0.1:8765/",
    }


WATCH_LINES = [
    "indexing  1/4 2.0 img/s ETA 2m30s",
    "indexing  3/4 2.0 img/s ETA 30s",
    "idle      4/4",
    "indexing  4/6 2.0 img/s",
]


def test_watch_until_idle_prints_plain_lines_and_exits_0(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    # The repeated status (a heartbeat) prints no line of its own.
    expected = "".join(f"{line}\n" for line in WATCH_LINES[:3])
    assert run_clipq(capsys, "status", "--watch", "--until-idle", "--socket", path) == (
        0,
        expected,
        "",
    )


def test_watch_follows_until_the_stream_ends(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    expected = "".join(f"{line}\n" for line in WATCH_LINES)
    assert run_clipq(capsys, "status", "--watch", "--socket", path) == (0, expected, "")


def test_until_idle_exits_3_when_the_daemon_stops_first(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    fake.watched = [*WATCHED[:3], pb.Status(state=pb.Status.STOPPING, indexed=3, queued=1)]
    code, out, err = run_clipq(capsys, "status", "--until-idle", "--socket", path)
    assert (code, out.splitlines()[-1]) == (3, "stopping  3/4")
    assert "stopped before the index was idle" in err


@pytest.mark.parametrize(("until_idle", "count"), [([], 5), (["--until-idle"], 4)])
def test_watch_json_prints_one_object_per_update(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    until_idle: list[str],
    count: int,
) -> None:
    _, path = fake_daemon
    code, out, _ = run_clipq(capsys, "status", "--watch", "--json", *until_idle, "--socket", path)
    objects = [json.loads(line) for line in out.splitlines()]
    assert (code, len(objects)) == (0, count)
    assert [o["state"] for o in objects[2:4]] == ["indexing", "idle"]
    assert objects[0]["eta_seconds"] == 150


def test_watch_on_a_terminal_redraws_one_line(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = fake_daemon
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run_clipq(capsys, "status", "--until-idle", "--socket", path)
    assert code == 0
    assert out == (
        "\rindexing  1/4 [#####...............] 2.0 img/s ETA 2m30s\x1b[K"
        "\rindexing  3/4 [###############.....] 2.0 img/s ETA 30s\x1b[K"
        "\ridle      4/4 [####################]\x1b[K\n"
    )


def test_ctrl_c_during_a_live_watch_ends_the_line_and_exits_130(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = fake_daemon

    def interrupted(client: Client) -> Iterator[Status]:
        yield client.status()
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "watch_status", interrupted)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = run_clipq(capsys, "status", "--watch", "--socket", path)
    assert (code, err) == (130, "")
    assert out.startswith("\runspecified")
    assert out.endswith("\x1b[K\n")


# clipq failures and reindex


@pytest.fixture
def utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_failures_print_when_error_path_and_message(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    assert run_clipq(capsys, "failures", "--socket", path) == (
        0,
        "2023-11-14 22:13  CorruptImage  /pics/bad.jpg: image file is truncated\n"
        "2023-11-14 22:14  TooLarge      /pics/big.png: over 178956970 pixels\n",
        "clipq: note: 2 of 5 failures shown; --offset 2 shows more\n",
    )
    [request] = fake.failure_requests
    assert (request.limit, request.offset) == (100, 0)


def test_failures_last_page_has_no_note(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    code, _, err = run_clipq(capsys, "failures", "-n", "2", "--offset", "3", "--socket", path)
    assert (code, err) == (0, "")
    [request] = fake.failure_requests
    assert (request.limit, request.offset) == (2, 3)


def test_failures_json_is_an_array_of_objects(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    code, out, err = run_clipq(capsys, "failures", "--json", "--socket", path)
    assert (code, err) == (0, "")
    failures = json.loads(out)
    assert len(failures) == 2
    assert failures[0] == {
        "path": "/pics/bad.jpg",
        "error": "CorruptImage",
        "message": "image file is\n  truncated",
        "attempts": 2,
        "last_seen": 1_700_000_000.0,
    }


def test_reindex_prints_queued(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = fake_daemon
    requested = "rescan requested; follow it with 'clipq status --watch'\n"
    assert run_clipq(capsys, "reindex", "--socket", path) == (0, requested, "")
    [(request, time_left)] = fake.reindexes
    assert (list(request.paths), request.wait) == ([], False)
    assert 0 < time_left < 31


def test_reindex_wait_prints_counts_and_sends_absolute_paths(
    capsys: pytest.CaptureFixture[str],
    fake_daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
    short_dir: Path,
) -> None:
    fake, path = fake_daemon
    monkeypatch.chdir(short_dir)
    (short_dir / "pics").mkdir()
    (short_dir / "more").mkdir()
    assert run_clipq(capsys, "reindex", "pics", "--wait", "pics/../more", "--socket", path) == (
        0,
        "queued 7, indexed 5, failed 1, removed 2\n",
        "",
    )
    [(request, time_left)] = fake.reindexes
    assert list(request.paths) == [str(short_dir.resolve() / name) for name in ("pics", "more")]
    # A full rescan may take long: no deadline (gRPC reports an infinite one as ~292 years).
    assert request.wait
    assert time_left > 1e9


def test_reindex_json_is_one_object(
    capsys: pytest.CaptureFixture[str], fake_daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = fake_daemon
    code, out, _ = run_clipq(capsys, "reindex", "--json", "--socket", path)
    assert code == 0
    assert json.loads(out) == {"queued": 7, "removed": 2, "indexed": 5, "failed": 1}
