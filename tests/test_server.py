"""The gRPC API of an in-process daemon on a temp socket: validation, terms, health, reflection."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigWriter
from fixtures.corpus import Corpus, write_corpus
from fixtures.shapes import draw
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import InProcessDaemon, hold_model_loading, in_process_daemon

from clipd.progress import Progress
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc


class Running:
    def __init__(self, corpus: Corpus, live: InProcessDaemon, channel: grpc.Channel) -> None:
        self.corpus = corpus
        self.live = live
        self.stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
        self.channel = channel

    def search(self, *terms: pb.Term, **fields: Any) -> pb.SearchResponse:
        response: pb.SearchResponse = self.stub.Search(
            pb.SearchRequest(terms=terms, **fields), timeout=30
        )
        return response

    def classes(self, response: pb.SearchResponse) -> list[tuple[str, str] | None]:
        return [self.corpus.class_of(hit.path) for hit in response.hits]


@pytest.fixture
def daemon(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Running]:
    corpus = write_corpus(tmp_path / "pics", per_class=3)
    with in_process(corpus, write_config) as running:
        yield running


@contextmanager
def in_process(corpus: Corpus, write_config: ConfigWriter, **overrides: Any) -> Iterator[Running]:
    """An in-process daemon over corpus, once it has indexed everything, and a channel to it."""
    config = write_config([corpus.root], **overrides)
    files = len(corpus.images) + len(corpus.bad)
    with in_process_daemon(config, corpus.root, files) as live, live.channel() as channel:
        yield Running(corpus, live, channel)


def text(value: str, weight: float | None = None) -> pb.Term:
    return pb.Term(text=value) if weight is None else pb.Term(text=value, weight=weight)


def png_bytes(colour: str, shape: str) -> bytes:
    import random

    buffer = io.BytesIO()
    draw(colour, shape, (200, 160), random.Random(99)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({}, "the query is empty"),
        ({"terms": [text("   ")]}, "term 1: the text is empty"),
        ({"terms": [pb.Term()]}, "term 1 is empty"),
        ({"terms": [text("red", 0.0)]}, "weight must be a non-zero number"),
        ({"terms": [text("red", float("nan"))]}, "weight must be a non-zero number"),
        ({"terms": [text("red")], "limit": 1001}, "over the maximum"),
        ({"terms": [text("red")], "min_score": 2.0}, "min_score must be between -1 and 1"),
        ({"terms": [text("red")], "under": ["relative/dir"]}, "is not an absolute path"),
        ({"terms": [pb.Term(image=b"not an image")]}, "term 1:"),
        ({"terms": [pb.Term(path="/no/such/file.jpg")]}, "term 1:"),
        ({"terms": [text("red"), text("red", -1.0)]}, "cancel each other out"),
        ({"terms": [text("red")], "extensions": ["j*g"]}, "is not a file extension"),
        ({"terms": [text("red")], "modified_after": float("inf")}, "seconds since the Unix epoch"),
        (
            {"terms": [text("red")], "modified_after": 20.0, "modified_before": 10.0},
            "must be earlier than",
        ),
    ],
)
def test_bad_requests_get_invalid_argument_with_a_message(
    daemon: Running, request_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        daemon.stub.Search(pb.SearchRequest(**request_fields), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def test_search_terms_filters_and_paging(daemon: Running) -> None:
    red_circles = daemon.search(text("a red circle"), limit=3)
    assert daemon.classes(red_circles) == [("red", "circle")] * 3
    assert not red_circles.partial

    by_image = daemon.search(pb.Term(image=png_bytes("blue", "square")), limit=3)
    assert daemon.classes(by_image).count(("blue", "square")) >= 2

    example = next(p for p, c in daemon.corpus.images.items() if c == ("green", "triangle"))
    by_path = daemon.search(pb.Term(path=str(example)), limit=1)
    assert by_path.hits[0].path == str(example)
    assert by_path.hits[0].score == pytest.approx(1.0, abs=1e-4)

    first, second = (daemon.search(text("a yellow square"), limit=4, offset=o) for o in (0, 4))
    both = daemon.search(text("a yellow square"), limit=8)
    assert [h.path for h in first.hits] + [h.path for h in second.hits] == [
        h.path for h in both.hits
    ]

    sub = str(daemon.corpus.root / "set1")
    under = daemon.search(text("a red circle"), limit=50, under=[sub])
    assert under.hits
    assert all(h.path.startswith(sub + "/") for h in under.hits)

    pngs = daemon.search(text("a red circle"), limit=100, extensions=[".PNG", "gif"])
    assert {Path(h.path).suffix for h in pngs.hits} == {".png", ".gif"}

    newest = max(daemon.corpus.images, key=lambda p: p.stat().st_mtime_ns)
    cutoff = (newest.stat().st_mtime_ns - 1000) / 1e9  # a float cannot hold every ns
    recent = daemon.search(text("a red circle"), limit=100, modified_after=cutoff)
    assert newest in {Path(h.path) for h in recent.hits}
    assert all(h.mtime >= cutoff for h in recent.hits)
    assert not daemon.search(text("a red circle"), modified_after=1e12).hits  # past int64 ns
    older = daemon.search(text("a red circle"), limit=100, modified_before=cutoff)
    assert all(h.mtime < cutoff for h in older.hits)
    assert not older.nothing_indexed

    none = daemon.search(text("a red circle"), under=["/nowhere"])
    assert not none.hits
    assert not none.nothing_indexed

    strict = daemon.search(text("a red circle"), limit=50, min_score=0.99)
    assert all(h.score >= 0.99 for h in strict.hits)

    hit = red_circles.hits[0]
    assert hit.width > 0
    assert hit.height > 0
    assert hit.size_bytes == Path(hit.path).stat().st_size
    assert hit.mtime == pytest.approx(Path(hit.path).stat().st_mtime, abs=1e-3)


def test_weighted_terms_steer_the_query(daemon: Running) -> None:
    # "red" minus "circle" should prefer red squares and triangles to red circles.
    steered = daemon.search(text("a red square"), text("a red circle", -0.5), limit=3)
    assert all(
        c is not None and c[0] == "red" and c[1] != "circle" for c in daemon.classes(steered)
    )


def test_status_embed_failures_health_reflection(daemon: Running) -> None:
    status = daemon.stub.GetStatus(pb.StatusRequest(), timeout=5)
    assert status.state == pb.Status.IDLE
    assert status.indexed == len(daemon.corpus.images)
    assert status.failed == len(daemon.corpus.bad)
    assert status.dim == 32
    assert status.device == "cpu"
    assert status.database_bytes > 0
    assert list(status.roots) == [str(daemon.corpus.root)]

    embedded = daemon.stub.Embed(pb.EmbedRequest(text="a red circle"), timeout=5)
    assert len(embedded.vector) == 32
    assert sum(v * v for v in embedded.vector) == pytest.approx(1.0, abs=1e-4)

    failures = daemon.stub.ListFailures(pb.ListFailuresRequest(), timeout=5)
    assert failures.total == len(daemon.corpus.bad)
    reasons = {Path(f.path).name: f.error for f in failures.failures}
    assert reasons == {
        "empty.jpg": "NotAnImage",
        "notes.png": "NotAnImage",
        "truncated.jpg": "CorruptImage",
    }

    health = health_pb2_grpc.HealthStub(daemon.channel)
    for service in ("", "clipd.v1.ImageSearch"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(daemon.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = reflection.ServerReflectionInfo(iter([request]), timeout=5)
    names = {s.name for s in response.list_services_response.service}
    assert "clipd.v1.ImageSearch" in names


def test_reindex_picks_up_new_changed_and_deleted_files(daemon: Running) -> None:
    import random

    root = daemon.corpus.root
    new = root / "new" / "fresh.png"
    new.parent.mkdir()
    draw("red", "circle", (120, 120), random.Random(5)).save(new)
    gone = next(iter(daemon.corpus.images))
    gone.unlink()
    answer = daemon.stub.Reindex(pb.ReindexRequest(wait=True), timeout=60)
    assert (answer.queued, answer.indexed, answer.removed) == (1, 1, 1)
    paths = {h.path for h in daemon.search(text("a red circle"), limit=100).hits}
    assert str(new) in paths
    assert str(gone) not in paths

    again = daemon.stub.Reindex(pb.ReindexRequest(paths=[str(root)], wait=True), timeout=60)
    assert (again.queued, again.indexed, again.removed) == (0, 0, 0)


def test_deadlines_are_honoured(tmp_path: Path, write_config: ConfigWriter) -> None:
    import random

    corpus = write_corpus(tmp_path / "pics", per_class=1)
    # No watcher, so that only the Reindex below can pick the new files up.
    with in_process(corpus, write_config, watch=False) as daemon:
        # Enough work to outlast the deadline many times over, even at the tiny model's speed.
        for number in range(120):
            image = draw("blue", "circle", (400, 400), random.Random(number))
            image.save(corpus.root / f"new{number}.png")
        with pytest.raises(grpc.RpcError) as caught:
            daemon.stub.Reindex(pb.ReindexRequest(wait=True), timeout=0.02)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The abandoned wait frees its server thread, and the daemon goes on answering.
        assert daemon.search(text("a blue circle"), limit=1).hits
        # A deadline of 20 ms may pass before the server even runs the call: ask once more,
        # without waiting, so the new files are picked up either way.
        daemon.stub.Reindex(pb.ReindexRequest(), timeout=10)
        daemon.live.wait_settled(len(corpus.images) + len(corpus.bad) + 120)


def test_results_are_flagged_partial_while_indexing(
    daemon: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not daemon.search(text("a red circle")).partial
    monkeypatch.setattr(Progress, "busy", property(lambda self: True))
    assert daemon.search(text("a red circle")).partial


def test_watch_status_streams_updates(daemon: Running) -> None:
    stream = daemon.stub.WatchStatus(pb.StatusRequest(), timeout=10)
    first = next(stream)
    assert first.state == pb.Status.IDLE
    stream.cancel()


def test_an_empty_index_says_why_nothing_was_found(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    empty = Corpus(tmp_path / "empty")
    empty.root.mkdir()
    with in_process(empty, write_config) as running:
        response = running.search(text("a red circle"))
    assert not response.hits
    assert response.nothing_indexed


def test_thumbnails_of_indexed_images_only(daemon: Running) -> None:
    from PIL import Image

    path = next(p for p in daemon.corpus.images if p.suffix == ".jpg")
    with Image.open(path) as original:
        longer = max(original.size)
    png = daemon.stub.Thumbnail(pb.ThumbnailRequest(path=str(path), max_side=40), timeout=10)
    with Image.open(io.BytesIO(png.data)) as image:
        assert image.format == "PNG"
        assert image.size == (png.width, png.height)
    assert max(png.width, png.height) == min(40, longer)

    sixel = daemon.stub.Thumbnail(
        pb.ThumbnailRequest(path=str(path), format=pb.ThumbnailRequest.SIXEL), timeout=10
    )
    assert sixel.data.startswith(b'\x1bPq"1;1;%d;%d' % (sixel.width, sixel.height))
    assert sixel.data.endswith(b"\x1b\\")
    assert max(sixel.width, sixel.height) == min(256, longer)

    refused = {
        "relative/a.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        str(daemon.corpus.bad[0]): grpc.StatusCode.NOT_FOUND,  # exists, but failed to index
        __file__: grpc.StatusCode.NOT_FOUND,  # readable, never indexed
    }
    for refused_path, code in refused.items():
        with pytest.raises(grpc.RpcError) as caught:
            daemon.stub.Thumbnail(pb.ThumbnailRequest(path=refused_path), timeout=10)
        assert caught.value.code() == code
    assert "not an indexed image" in caught.value.details()

    with pytest.raises(grpc.RpcError) as too_big:
        daemon.stub.Thumbnail(pb.ThumbnailRequest(path=str(path), max_side=1025), timeout=10)
    assert "over the maximum of 1024" in too_big.value.details()


def test_while_the_model_loads_refusals_say_not_ready_in_metadata(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind

    model_gate = hold_model_loading(monkeypatch)
    corpus = write_corpus(tmp_path / "pics", per_class=1)
    config = write_config([corpus.root])
    with in_process_daemon(config, corpus.root) as live, live.channel() as channel:
        try:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.Search(pb.SearchRequest(terms=[text("red")]), timeout=30, wait_for_ready=True)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == (
                "clipd is still loading its model; try again in a few seconds"
            )
            kinds = dict(caught.value.trailing_metadata())
            assert kinds[ERROR_KIND_METADATA] == ErrorKind.NOT_READY.value
            # A request refused for what it says carries its own kind, not "not ready".
            with pytest.raises(grpc.RpcError) as bad:
                stub.Thumbnail(pb.ThumbnailRequest(path="relative"), timeout=30)
            assert dict(bad.value.trailing_metadata())[ERROR_KIND_METADATA] == "bad_request"
        finally:
            model_gate.release()  # before the stop: the loader then ends, not left waiting
