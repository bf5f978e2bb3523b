"""The clipq library (`from clipq import Client`) against no daemon and against the stand-in
daemon of the harness: the requests it builds, the typed results and errors it returns."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from harness import CANNED_HITS, WATCHED, FakeDaemon

from clipd_api.kinds import ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipq import (
    BadRequest,
    Client,
    DaemonStarting,
    DaemonUnavailable,
    Failure,
    FailurePage,
    Hit,
    ImageFile,
    NotFound,
    ReindexResult,
    RpcError,
    SearchResult,
)


def test_library_raises_daemon_unavailable(short_dir: Path) -> None:
    path = short_dir / "nope.sock"
    with Client(path) as client, pytest.raises(DaemonUnavailable) as raised:
        client.search("hello")
    assert raised.value.where == str(path)


def test_library_sends_weights_and_filters(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
    with Client(path) as client:
        client.search(
            "beach", ("people", -0.5), limit=3, offset=6, min_score=0.25, under=[Path("/pics")]
        )
    [request] = fake.requests
    assert list(request.terms) == [pb.Term(text="beach"), pb.Term(text="people", weight=-0.5)]
    assert (request.limit, request.offset, request.min_score) == (3, 6, 0.25)
    assert list(request.under) == ["/pics"]
    assert not request.terms[0].HasField("weight")


def test_library_names_another_machines_file_by_host_and_path(
    fake_daemon: tuple[FakeDaemon, str],
) -> None:
    fake, path = fake_daemon
    with Client(path) as client:
        client.search(ImageFile("/pics/a.jpg", 2, host="laptop"))
        for bad, message in [
            (ImageFile("pics/a.jpg", host="laptop"), "absolute path there"),
            (ImageFile("/pics/a.jpg", host="lap/top"), "not a machine's name"),
        ]:
            with pytest.raises(ValueError, match=message):
                client.search(bad)
    [request] = fake.requests  # the refused ones were never sent
    assert list(request.terms) == [pb.Term(path="laptop:/pics/a.jpg", weight=2)]


def test_library_returns_typed_result(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
    fake.hits = CANNED_HITS[:1]
    fake.partial = True
    with Client(path) as client:
        result = client.search("cat")
    assert isinstance(result, SearchResult)
    assert (result.partial, result.took_ms, len(result)) == (True, 1.5, 1)
    [hit] = result
    assert hit == Hit("/pics/a.jpg", pytest.approx(0.3124), 640, 480, 1234, 1.5, 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("terms", [(), ("",), ("  ",), ("cat", ("\t", 1.0))])
def test_library_refuses_empty_query_before_calling(
    fake_daemon: tuple[FakeDaemon, str], terms: tuple[str, ...]
) -> None:
    fake, path = fake_daemon
    with Client(path) as client, pytest.raises(ValueError, match="empty query"):
        client.search(*terms)
    assert fake.requests == []


def test_library_status(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
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


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, ErrorKind.NOT_READY, DaemonStarting),
        (grpc.StatusCode.UNAVAILABLE, None, DaemonUnavailable),
        (grpc.StatusCode.UNAVAILABLE, ErrorKind.UNAVAILABLE, RpcError),
        (grpc.StatusCode.INVALID_ARGUMENT, None, BadRequest),
        (grpc.StatusCode.NOT_FOUND, None, NotFound),
        (grpc.StatusCode.INTERNAL, None, RpcError),
    ],
)
def test_library_maps_status_codes(
    fake_daemon: tuple[FakeDaemon, str],
    status: grpc.StatusCode,
    kind: ErrorKind | None,
    error: type[Exception],
) -> None:
    fake, path = fake_daemon
    fake.abort = (status, "starting up") if kind is None else (status, "starting up", kind)
    with Client(path) as client, pytest.raises(error, match="starting up"):
        client.search("cat")


def test_library_watch_status_yields_until_the_stream_ends(
    fake_daemon: tuple[FakeDaemon, str],
) -> None:
    _, path = fake_daemon
    with Client(path) as client:
        statuses = list(client.watch_status())
    assert [s.state for s in statuses] == ["indexing"] * 3 + ["idle", "indexing"]
    assert (statuses[2].indexed, statuses[2].queued, statuses[2].eta_seconds) == (3, 1, 30)


def test_closing_watch_status_cancels_the_call(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
    fake.watch_forever = True
    with Client(path) as client:
        statuses = client.watch_status()
        assert next(statuses).indexed == 1
        statuses.close()
        assert fake.watch_ended.wait(timeout=5)
        # The client stays usable.
        assert client.status().state == "unspecified"


def test_closing_the_client_ends_watch_status(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
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
    fake_daemon: tuple[FakeDaemon, str], monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    fake, path = fake_daemon
    with Client(path) as client:
        result = client.reindex("~/pics", Path("/x/./y"), wait=True)
    assert result == ReindexResult(queued=7, removed=2, indexed=5, failed=1)
    [(request, _)] = fake.reindexes
    assert list(request.paths) == [str(isolated_env.resolve() / "pics"), "/x/y"]


def test_library_failures(fake_daemon: tuple[FakeDaemon, str]) -> None:
    fake, path = fake_daemon
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
    fake_daemon: tuple[FakeDaemon, str], kwargs: dict[str, str | bytes], expected: pb.EmbedRequest
) -> None:
    fake, path = fake_daemon
    with Client(path) as client:
        vector = client.embed(**kwargs)  # type: ignore[arg-type]
    assert vector == [pytest.approx(0.6), pytest.approx(0.8)]
    assert fake.embeds == [expected]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"text": " "}, {"text": "cat", "image": b"x"}, {"image": b"x", "path": "/a.jpg"}],
)
def test_library_embed_needs_exactly_one_input(
    fake_daemon: tuple[FakeDaemon, str], kwargs: dict[str, str | bytes]
) -> None:
    fake, path = fake_daemon
    with Client(path) as client, pytest.raises(ValueError, match="embed"):
        client.embed(**kwargs)  # type: ignore[arg-type]
    assert fake.calls == []
