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
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import (
    BadRequest,
    Client,
    DaemonStarting,
    DaemonUnavailable,
    Failure,
    FailurePage,
    Hit,
    NotFound,
    ReindexResult,
    RpcError,
    SearchResult,
    Status,
)
from clipq.cli import main

HEAVY_MODULES = {"torch", "numpy", "PIL", "yaml", "clipd", "open_clip"}

CANNED_HITS = [
    pb.Hit(path="/pics/a.jpg", score=0.3124, width=640, height=480, size_bytes=1234, mtime=1.5),
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
    # The invocation metadata of each Search call.
    metadata: list[dict[str, str]] = field(default_factory=list)
    # The refusal to answer every call with, and the kind to put in its trailing metadata.
    abort: tuple[grpc.StatusCode, str] | tuple[grpc.StatusCode, str, ErrorKind] | None = None
    status: pb.Status = field(default_factory=pb.Status)
    requests: list[pb.SearchRequest] = field(default_factory=list)
    # Set to make Search hang until the fixture's teardown sets it again.
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


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths must fit in 108 bytes; pytest's tmp_path can be longer than that.
    path = Path(tempfile.mkdtemp(prefix="clipq-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[tuple[FakeDaemon, str]]:
    with fake_daemon(f"unix:{short_dir / 'clipd.sock'}") as (fake, _):
        yield fake, str(short_dir / "clipd.sock")


@pytest.fixture
def tcp_daemon() -> Iterator[tuple[FakeDaemon, str]]:
    """The stand-in daemon on a loopback TCP port; yields it and its HOST:PORT."""
    with fake_daemon("127.0.0.1:0") as (fake, port):
        yield fake, f"127.0.0.1:{port}"


@contextmanager
def fake_daemon(address: str) -> Iterator[tuple[FakeDaemon, int]]:
    fake = FakeDaemon()
    threads_before = set(threading.enumerate())
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(executor)
    pb_grpc.add_ImageSearchServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    server.start()
    yield fake, port
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
    loading = "clipd is still loading its model; try again in a few seconds"
    fake.abort = (grpc.StatusCode.UNAVAILABLE, loading, ErrorKind.NOT_READY)
    assert run_clipq(capsys, "--socket", path, "cat") == (4, "", f"clipq: {loading}\n")


def test_only_the_error_kind_says_the_daemon_is_loading(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.abort = (grpc.StatusCode.UNAVAILABLE, "loading is over: shutting down")
    assert run_clipq(capsys, "--socket", path, "cat")[0] == 3


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
    ("status", "kind", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, ErrorKind.NOT_READY, DaemonStarting),
        (grpc.StatusCode.UNAVAILABLE, None, DaemonUnavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, None, BadRequest),
        (grpc.StatusCode.NOT_FOUND, None, NotFound),
        (grpc.StatusCode.INTERNAL, None, RpcError),
    ],
)
def test_library_maps_status_codes(
    daemon: tuple[FakeDaemon, str],
    status: grpc.StatusCode,
    kind: ErrorKind | None,
    error: type[Exception],
) -> None:
    fake, path = daemon
    fake.abort = (status, "starting up") if kind is None else (status, "starting up", kind)
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


# Commands: which word selects what


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
    daemon: tuple[FakeDaemon, str],
    argv: list[str],
    rpc: str,
    query: str | None,
) -> None:
    fake, path = daemon
    # The socket option comes first, so the command word is found past an option's value.
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    assert fake.calls == [rpc]
    if query is not None:
        assert list(fake.requests[0].terms) == [pb.Term(text=query)]


def test_an_abbreviated_option_value_is_skipped(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
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
    "argv", [["status"], ["status", "--watch"], ["failures"], ["reindex", "--wait"]]
)
def test_commands_without_daemon_exit_3(
    capsys: pytest.CaptureFixture[str], short_dir: Path, argv: list[str]
) -> None:
    path = str(short_dir / "clipd.sock")
    assert run_clipq(capsys, *argv, "--socket", path) == (3, "", no_daemon_message(path))


@pytest.mark.parametrize(
    ("abort", "code"),
    [
        ((grpc.StatusCode.UNAVAILABLE, "loading model", ErrorKind.NOT_READY), 4),
        ((grpc.StatusCode.INVALID_ARGUMENT, "paths: 'x' is not an absolute path"), 1),
    ],
)
def test_command_errors_exit_like_searches(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    abort: tuple[grpc.StatusCode, str, ErrorKind] | tuple[grpc.StatusCode, str],
    code: int,
) -> None:
    fake, path = daemon
    fake.abort = abort
    for argv in (["reindex"], ["failures"], ["status", "--watch"]):
        result = run_clipq(capsys, "--socket", path, *argv)
        assert result[:2] == (code, "")
        assert abort[1] in result[2]


# clipq status


def test_status_prints_aligned_lines(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
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
        "version:  0.1.0\n"
        "uptime:   1h02m\n",
        "",
    )


def test_status_shows_a_problem_only_when_there_is_one(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.status.CopyFrom(FULL_STATUS)
    fake.status.problem = "disk full: cannot write /data/index.db; indexing waits and retries"
    _, out, _ = run_clipq(capsys, "status", "--socket", path)
    assert "problem:  disk full: cannot write /data/index.db;" in out
    fake.status.problem = ""
    _, out, _ = run_clipq(capsys, "status", "--socket", path)
    assert "problem" not in out


def test_idle_status_shows_no_rate_or_eta(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.status = pb.Status(state=pb.Status.IDLE, images_per_second=3.0)
    out = run_clipq(capsys, "status", "--socket", path)[1]
    assert "rate:     -\nETA:      -\n" in out
    assert "roots:    -\n" in out


def test_status_json_has_every_field(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
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
    }


WATCH_LINES = [
    "indexing  1/4 2.0 img/s ETA 2m30s",
    "indexing  3/4 2.0 img/s ETA 30s",
    "idle      4/4",
    "indexing  4/6 2.0 img/s",
]


def test_watch_until_idle_prints_plain_lines_and_exits_0(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
    # The repeated status (a heartbeat) prints no line of its own.
    expected = "".join(f"{line}\n" for line in WATCH_LINES[:3])
    assert run_clipq(capsys, "status", "--watch", "--until-idle", "--socket", path) == (
        0,
        expected,
        "",
    )


def test_watch_follows_until_the_stream_ends(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
    expected = "".join(f"{line}\n" for line in WATCH_LINES)
    assert run_clipq(capsys, "status", "--watch", "--socket", path) == (0, expected, "")


def test_until_idle_exits_3_when_the_daemon_stops_first(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.watched = [*WATCHED[:3], pb.Status(state=pb.Status.STOPPING, indexed=3, queued=1)]
    code, out, err = run_clipq(capsys, "status", "--until-idle", "--socket", path)
    assert (code, out.splitlines()[-1]) == (3, "stopping  3/4")
    assert "stopped before the index was idle" in err


@pytest.mark.parametrize(("until_idle", "count"), [([], 5), (["--until-idle"], 4)])
def test_watch_json_prints_one_object_per_update(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    until_idle: list[str],
    count: int,
) -> None:
    _, path = daemon
    code, out, _ = run_clipq(capsys, "status", "--watch", "--json", *until_idle, "--socket", path)
    objects = [json.loads(line) for line in out.splitlines()]
    assert (code, len(objects)) == (0, count)
    assert [o["state"] for o in objects[2:4]] == ["indexing", "idle"]
    assert objects[0]["eta_seconds"] == 150


def test_watch_on_a_terminal_redraws_one_line(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = daemon
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
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, path = daemon

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
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    assert run_clipq(capsys, "failures", "--socket", path) == (
        0,
        "2023-11-14 22:13  CorruptImage  /pics/bad.jpg: image file is truncated\n"
        "2023-11-14 22:14  TooLarge      /pics/big.png: over 178956970 pixels\n",
        "clipq: note: 2 of 5 failures shown; --offset 2 shows more\n",
    )
    [request] = fake.failure_requests
    assert (request.limit, request.offset) == (100, 0)


def test_failures_last_page_has_no_note(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    code, _, err = run_clipq(capsys, "failures", "-n", "2", "--offset", "3", "--socket", path)
    assert (code, err) == (0, "")
    [request] = fake.failure_requests
    assert (request.limit, request.offset) == (2, 3)


def test_failures_json_is_an_array_of_objects(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
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
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    requested = "rescan requested; follow it with 'clipq status --watch'\n"
    assert run_clipq(capsys, "reindex", "--socket", path) == (0, requested, "")
    [(request, time_left)] = fake.reindexes
    assert (list(request.paths), request.wait) == ([], False)
    assert 0 < time_left < 31


def test_reindex_wait_prints_counts_and_sends_absolute_paths(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
    short_dir: Path,
) -> None:
    fake, path = daemon
    monkeypatch.chdir(short_dir)
    assert run_clipq(capsys, "reindex", "pics", "--wait", "/a/../b", "--socket", path) == (
        0,
        "queued 7, indexed 5, failed 1, removed 2\n",
        "",
    )
    [(request, time_left)] = fake.reindexes
    assert list(request.paths) == [str(short_dir.resolve() / "pics"), "/b"]
    # A full rescan may take long: no deadline (gRPC reports an infinite one as ~292 years).
    assert request.wait
    assert time_left > 1e9


def test_reindex_json_is_one_object(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    _, path = daemon
    code, out, _ = run_clipq(capsys, "reindex", "--json", "--socket", path)
    assert code == 0
    assert json.loads(out) == {"queued": 7, "removed": 2, "indexed": 5, "failed": 1}


# Library: watch_status, reindex, failures, embed


def test_library_watch_status_yields_until_the_stream_ends(
    daemon: tuple[FakeDaemon, str],
) -> None:
    _, path = daemon
    with Client(path) as client:
        statuses = list(client.watch_status())
    assert [s.state for s in statuses] == ["indexing"] * 3 + ["idle", "indexing"]
    assert (statuses[2].indexed, statuses[2].queued, statuses[2].eta_seconds) == (3, 1, 30)


def test_closing_watch_status_cancels_the_call(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    fake.watch_forever = True
    with Client(path) as client:
        statuses = client.watch_status()
        assert next(statuses).indexed == 1
        statuses.close()
        assert fake.watch_ended.wait(timeout=5)
        # The client stays usable.
        assert client.status().state == "unspecified"


def test_closing_the_client_ends_watch_status(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    fake.watched = WATCHED[:1]
    fake.watch_forever = True
    client = Client(path)
    statuses = client.watch_status()
    assert next(statuses).indexed == 1
    closer = threading.Timer(0.05, client.close)
    closer.start()
    # Blocked waiting for the next status, until the client is closed from the other thread.
    assert list(statuses) == []
    closer.join()
    assert fake.watch_ended.wait(timeout=5)


def test_library_watch_status_without_daemon(short_dir: Path) -> None:
    with Client(short_dir / "nope.sock") as client, pytest.raises(DaemonUnavailable):
        next(client.watch_status())


def test_library_reindex(
    daemon: tuple[FakeDaemon, str], monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    fake, path = daemon
    with Client(path) as client:
        result = client.reindex("~/pics", Path("/x/./y"), wait=True)
    assert result == ReindexResult(queued=7, removed=2, indexed=5, failed=1)
    [(request, _)] = fake.reindexes
    assert list(request.paths) == [str(isolated_env.resolve() / "pics"), "/x/y"]


def test_library_failures(daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = daemon
    with Client(path) as client:
        page = client.failures(limit=2, offset=4)
    assert isinstance(page, FailurePage)
    assert (page.total, len(page)) == (5, 2)
    assert next(iter(page)) == Failure(
        "/pics/bad.jpg", "CorruptImage", "image file is\n  truncated", 2, 1_700_000_000.0
    )
    [request] = fake.failure_requests
    assert (request.limit, request.offset) == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"text": "a red circle"}, pb.EmbedRequest(text="a red circle")),
        ({"image": b"\x89PNG"}, pb.EmbedRequest(image=b"\x89PNG")),
        ({"path": "/pics/../pics/a.jpg"}, pb.EmbedRequest(path="/pics/a.jpg")),
    ],
)
def test_library_embed(
    daemon: tuple[FakeDaemon, str], kwargs: dict[str, str | bytes], expected: pb.EmbedRequest
) -> None:
    fake, path = daemon
    with Client(path) as client:
        vector = client.embed(**kwargs)  # type: ignore[arg-type]
    assert vector == [pytest.approx(0.6), pytest.approx(0.8)]
    assert fake.embeds == [expected]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"text": " "}, {"text": "cat", "image": b"x"}, {"image": b"x", "path": "/a.jpg"}],
)
def test_library_embed_needs_exactly_one_input(
    daemon: tuple[FakeDaemon, str], kwargs: dict[str, str | bytes]
) -> None:
    fake, path = daemon
    with Client(path) as client, pytest.raises(ValueError, match="embed"):
        client.embed(**kwargs)  # type: ignore[arg-type]
    assert fake.calls == []


# Query terms, filters and output modes of a search


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
    daemon: tuple[FakeDaemon, str],
    argv: list[str],
    terms: list[tuple[str, object, float]],
) -> None:
    fake, path = daemon
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    assert terms_sent(fake) == terms


def write_png(path: Path) -> Path:
    import random

    from fixtures.shapes import draw

    draw("red", "circle", (40, 30), random.Random(1)).save(path, format="PNG")
    return path


def test_image_files_are_sent_as_paths_over_the_socket(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = daemon
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "shot.png")
    write_png(tmp_path / "other")
    code, _, _ = run_clipq(capsys, "--socket", path, "shot.png", "-0.5:night", "--image", "other")
    assert code == 0
    assert terms_sent(fake) == [
        ("path", str(tmp_path / "shot.png"), 1),
        ("text", "night", -0.5),
        ("path", str(tmp_path / "other"), 1),
    ]


def test_over_tcp_image_files_are_sent_as_bytes_with_the_token(
    capsys: pytest.CaptureFixture[str], tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, address = tcp_daemon
    image = write_png(tmp_path / "shot.png")
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    argv = ["--address", address, "--token-file", str(token), str(image), "+sunset"]
    assert run_clipq(capsys, *argv)[0] == 0
    assert terms_sent(fake) == [("image", image.read_bytes(), 1), ("text", "sunset", 1)]
    assert fake.metadata[0]["authorization"] == "Bearer s3cret-token"


def test_address_and_token_come_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    tcp_daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, address = tcp_daemon
    token = tmp_path / "token"
    token.write_text("from-env")
    monkeypatch.setenv("CLIPD_ADDRESS", address)
    monkeypatch.setenv("CLIPD_TOKEN_FILE", str(token))
    assert run_clipq(capsys, "cat")[0] == 0
    assert fake.metadata[0]["authorization"] == "Bearer from-env"


def test_a_missing_token_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tcp_daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    _, address = tcp_daemon
    missing = tmp_path / "nope"
    code, _, err = run_clipq(capsys, "--address", address, "--token-file", str(missing), "cat")
    assert (code, err) == (
        1,
        f"clipq: cannot read the token file {missing}: No such file or directory\n",
    )


def test_filters_reach_the_daemon(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = daemon
    monkeypatch.chdir(tmp_path)
    argv = ["cat", "--under", "holidays", "--under=/pics/2023", "--ext", "JPG,.png"]
    argv += ["--ext", "webp", "--min-score", "-0.2", "--offset", "40"]
    argv += ["--since", "2023-05-01", "--until", "2024"]
    assert run_clipq(capsys, "--socket", path, *argv)[0] == 0
    [request] = fake.requests
    assert list(request.under) == [str(tmp_path / "holidays"), "/pics/2023"]
    assert list(request.extensions) == ["jpg", "png", "webp"]
    assert request.min_score == pytest.approx(-0.2)
    assert request.offset == 40
    assert request.modified_after == datetime(2023, 5, 1).timestamp()
    assert request.modified_before == datetime(2024, 1, 1).timestamp()


def test_without_filters_none_are_sent(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    run_clipq(capsys, "--socket", path, "cat")
    [request] = fake.requests
    for name in ("min_score", "modified_after", "modified_before"):
        assert not request.HasField(name)
    assert (list(request.under), list(request.extensions), request.offset) == ([], [], 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cat", "--ext", "j*g"], "not a file extension"),
        (["cat", "--since", "last week"], "is not a time"),
        (["cat", "--min-score", "2"], "must be between -1 and 1"),
        (["cat", "--since", "2025", "--until", "2024"], "--since must be earlier than --until"),
        (["cat", "--image", "/no/such.jpg"], "not an image file"),
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
    daemon: tuple[FakeDaemon, str],
    flag: str,
    expected: str | None,
) -> None:
    fake, path = daemon
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
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS
    _, coloured, _ = run_clipq(capsys, "--socket", path, "--color", "always", "cat")
    assert "\x1b[1ma.jpg\x1b[0m" in coloured
    # Not a terminal: auto means no colour.
    _, plain, _ = run_clipq(capsys, "--socket", path, "cat")
    assert "\x1b" not in plain


def test_nothing_indexed_exits_5_and_says_what_to_do(
    capsys: pytest.CaptureFixture[str], daemon: tuple[FakeDaemon, str]
) -> None:
    fake, path = daemon
    fake.nothing_indexed = True
    code, out, err = run_clipq(capsys, "--socket", path, "--json", "cat")
    assert (code, out) == (5, "[]\n")
    assert err.startswith("clipq: nothing is indexed yet;")
    assert "'roots'" in err


def test_open_starts_the_viewer_with_every_hit(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = daemon
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
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.read_text().splitlines() == ["--fullscreen", "/pics/a.jpg", "/pics/b c.png"]


def test_open_without_a_viewer_says_what_to_install(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS
    monkeypatch.setenv("CLIPQ_OPENER", "no-such-viewer-anywhere")
    code, _, err = run_clipq(capsys, "--socket", path, "--open", "cat")
    assert code == 1
    assert "'no-such-viewer-anywhere' was not found" in err


def test_preview_draws_each_hit_then_its_line(
    capsysbinary: pytest.CaptureFixture[bytes],
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    fake, path = daemon
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
    daemon: tuple[FakeDaemon, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, path = daemon
    fake.hits = CANNED_HITS
    monkeypatch.setenv("CLIPQ_GRAPHICS", "none")
    code, out, err = run_clipq(capsys, "--socket", path, "--preview", "cat")
    assert code == 0
    assert out == "0.312  /pics/a.jpg\n0.200  /pics/b c.png\n"
    assert err.startswith("clipq: this terminal cannot show images inline")
    assert "Thumbnail" not in fake.calls
