"""clipq, the client library and command, against no daemon and against a stand-in daemon.

The stand-in is a real gRPC server on a temporary Unix socket with canned answers, so these
tests cover the client's own behaviour (request building, output, error mapping, exit codes);
the real daemon end to end is tested elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import (
    BadRequest,
    Client,
    DaemonStarting,
    DaemonUnavailable,
    Hit,
    NotFound,
    RpcError,
    SearchResult,
)
from clipq.cli import main

HEAVY_MODULES = {"torch", "numpy", "PIL", "yaml", "clipd", "open_clip"}

CANNED_HITS = [
    pb.Hit(path="/pics/a.jpg", score=0.3124, width=640, height=480, size_bytes=1234, mtime=1.5),
    pb.Hit(path="/pics/b c.png", score=0.2, width=10, height=20, size_bytes=99, mtime=2.0),
]


@dataclass
class FakeDaemon(pb_grpc.ImageSearchServicer):
    """Answers with whatever the test sets, and remembers the requests it got."""

    hits: list[pb.Hit] = field(default_factory=list)
    partial: bool = False
    abort: tuple[grpc.StatusCode, str] | None = None
    status: pb.Status = field(default_factory=pb.Status)
    requests: list[pb.SearchRequest] = field(default_factory=list)
    # Set to make Search hang until the fixture's teardown sets it again.
    hold: threading.Event | None = None

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        self.requests.append(request)
        if self.hold is not None:
            self.hold.wait(timeout=5)
        if self.abort is not None:
            context.abort(*self.abort)
        return pb.SearchResponse(hits=self.hits, partial=self.partial, took_ms=1.5)

    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        return self.status


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths must fit in 108 bytes; pytest's tmp_path can be longer than that.
    path = Path(tempfile.mkdtemp(prefix="clipq-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[tuple[FakeDaemon, str]]:
    fake = FakeDaemon()
    path = str(short_dir / "clipd.sock")
    threads_before = set(threading.enumerate())
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(executor)
    pb_grpc.add_ImageSearchServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield fake, path
    if fake.hold is not None:
        fake.hold.set()
    server.stop(None)
    executor.shutdown(wait=True)
    # stop() returns as the server's polling thread is told to end, not once it has.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=5)


def run_clipq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def no_daemon_message(path: str) -> str:
    return (
        f"clipq: no clipd daemon at {path}; start it with 'clipd serve' or "
        "'systemctl --user start clipd' (or 'make run' in the repo)\n"
    )


# Startup weight


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


def test_library_raises_daemon_unavailable(short_dir: Path) -> None:
    path = short_dir / "nope.sock"
    with Client(path) as client, pytest.raises(DaemonUnavailable) as raised:
        client.search("hello")
    assert raised.value.where == str(path)


# Usage errors


@pytest.mark.parametrize("argv", [[], ["-n", "0", "x"], ["-n", "1001", "x"], ["-n", "a", "x"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().out == ""


def test_blank_query_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    with pytest.raises(SystemExit) as raised:
        main(["--socket", path, " "])
    assert raised.value.code == 2
    assert "the query is empty" in capsys.readouterr().err
    assert fake.requests == []


# Output


def test_prints_score_and_path_lines_best_first(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS
    assert run_clipq(capsys, "--socket", path, "cat") == (
        0,
        "0.312  /pics/a.jpg\n0.200  /pics/b c.png\n",
        "",
    )


def test_no_hits_is_success(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
    assert run_clipq(capsys, "--socket", path, "cat") == (0, "", "")


def test_json_prints_one_array_of_hits(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
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
    }


def test_json_with_no_hits_prints_empty_array(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
    assert run_clipq(capsys, "--socket", path, "--json", "cat") == (0, "[]\n", "")


def test_partial_results_note_on_stderr_in_human_mode_only(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS[:1]
    fake.partial = True
    note = "clipq: note: indexing in progress; results may be incomplete\n"
    assert run_clipq(capsys, "--socket", path, "cat") == (0, "0.312  /pics/a.jpg\n", note)
    code, _, err = run_clipq(capsys, "--socket", path, "--json", "cat")
    assert (code, err) == (0, "")


def test_closed_stdout_exits_141_quietly(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
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
    daemon: tuple[FakeDaemon, str],
    argv: list[str],
    limit: int,
) -> None:
    fake, path = daemon
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    [request] = fake.requests
    assert list(request.terms) == [pb.Term(text="red brick wall")]
    assert not request.terms[0].HasField("weight")
    assert request.limit == limit


def test_library_sends_weights_and_filters(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    with Client(path) as client:
        client.search(
            "beach", ("people", -0.5), limit=3, offset=6, min_score=0.25, under=[Path("/pics")]
        )
    [request] = fake.requests
    assert list(request.terms) == [pb.Term(text="beach"), pb.Term(text="people", weight=-0.5)]
    assert (request.limit, request.offset, request.min_score) == (3, 6, 0.25)
    assert list(request.under) == ["/pics"]
    assert not request.terms[0].HasField("weight")


def test_library_returns_typed_result(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS[:1]
    fake.partial = True
    with Client(path) as client:
        result = client.search("cat")
    assert isinstance(result, SearchResult)
    assert (result.partial, result.took_ms, len(result)) == (True, 1.5, 1)
    [hit] = result
    assert hit == Hit("/pics/a.jpg", pytest.approx(0.3124), 640, 480, 1234, 1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("terms", [(), ("",), ("  ",), ("cat", ("\t", 1.0))])
def test_library_refuses_empty_query_before_calling(
    daemon: tuple[FakeDaemon, str], terms: tuple[str, ...]
) -> None:
    fake, path = daemon
    with Client(path) as client, pytest.raises(ValueError, match="empty query"):
        client.search(*terms)
    assert fake.requests == []


def test_library_status(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    fake.status = pb.Status(
        state=pb.Status.INDEXING, indexed=7, queued=3, roots=["/pics"], model="ViT-B-32", dim=512
    )
    with Client(path) as client:
        status = client.status()
    assert (status.state, status.indexed, status.queued) == ("indexing", 7, 3)
    assert (status.roots, status.model, status.dim) == (("/pics",), "ViT-B-32", 512)


def test_client_refuses_socket_and_target_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        Client("/x.sock", target="localhost:1")


# Errors from the daemon


def test_loading_model_exits_4(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.abort = (grpc.StatusCode.UNAVAILABLE, "loading model ViT-B-32")
    assert run_clipq(capsys, "--socket", path, "cat") == (
        4,
        "",
        "clipq: clipd is still starting: loading model ViT-B-32; try again in a few seconds\n",
    )


def test_unavailable_for_another_reason_exits_3(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
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
    daemon: tuple[FakeDaemon, str],
    status: grpc.StatusCode,
) -> None:
    fake, path = daemon
    fake.abort = (status, "offset must be at most 100000")
    assert run_clipq(capsys, "--socket", path, "cat") == (
        1,
        "",
        "clipq: offset must be at most 100000\n",
    )


def test_a_multi_line_message_is_printed_on_one_line(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.abort = (grpc.StatusCode.INVALID_ARGUMENT, "bad query\n  use fewer terms")
    assert run_clipq(capsys, "--socket", path, "cat")[2] == "clipq: bad query use fewer terms\n"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, DaemonStarting),
        (grpc.StatusCode.INVALID_ARGUMENT, BadRequest),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INTERNAL, RpcError),
    ],
)
def test_library_maps_status_codes(
    daemon: tuple[FakeDaemon, str], status: grpc.StatusCode, error: type[Exception]
) -> None:
    fake, path = daemon
    fake.abort = (status, "starting up")
    with Client(path) as client, pytest.raises(error, match="starting up"):
        client.search("cat")


def test_timeout_exits_1_naming_the_deadline(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.hold = threading.Event()
    code, out, err = run_clipq(capsys, "--socket", path, "--timeout", "0.05", "cat")
    assert (code, out) == (1, "")
    assert err.startswith("clipq: clipd call failed (DEADLINE_EXCEEDED)")


def test_ctrl_c_exits_130_without_traceback(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = daemon

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "search", interrupted)
    assert run_clipq(capsys, "--socket", path, "cat") == (130, "", "")
