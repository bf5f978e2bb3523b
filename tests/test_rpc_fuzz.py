"""The gRPC surface under random, extreme and malformed input, and its size and stream limits.

Every answer is OK or a documented refusal (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE,
UNIMPLEMENTED for unknown methods), never UNKNOWN or INTERNAL, and the server stays up.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigWriter
from harness import InProcessDaemon, in_process_daemon, picture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipd.rpc_server import MAX_MESSAGE_BYTES
from clipd.servicer import MAX_WATCHERS
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
UNARY = ("Search", "GetStatus", "Reindex", "Embed", "ListFailures")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Served:
    def __init__(self, live: InProcessDaemon, channel: grpc.Channel) -> None:
        self.live = live
        self.channel = channel
        self.stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]

    def call(self, method: str, request: Any) -> grpc.StatusCode:
        """Call a unary method; the status code it ends with."""
        try:
            getattr(self.stub, method)(request, timeout=30)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK

    @staticmethod
    def call_raw(call: grpc.UnaryUnaryMultiCallable, raw: bytes) -> grpc.StatusCode:
        try:
            call(raw, timeout=30)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK

    def assert_up(self) -> None:
        status = self.stub.GetStatus(pb.StatusRequest(), timeout=10)
        assert status.indexed == 2


@pytest.fixture
def served(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Served]:
    root = tmp_path / "pics"
    picture(root / "red.png")
    picture(root / "blue.png", "blue", "square")
    with in_process_daemon(write_config([root]), root, 2) as live, live.channel() as channel:
        yield Served(live, channel)


def png(seed: int) -> bytes:
    sink = io.BytesIO()
    Image.frombytes("RGB", (2, 2), random.Random(seed).randbytes(12)).save(sink, format="PNG")
    return sink.getvalue()


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    changed = bytearray(data)
    for offset, value in edits:
        changed[offset % len(changed)] = value
    return bytes(changed)


# Strings protobuf can carry (no lone surrogates), including odd unicode and huge ones.
texts = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "\x00", "a" * 2001, "🖼️" * 600, "\u202e\u200bred", "red\ncircle"]
)
paths = texts | st.sampled_from(
    ["/", "/dev/zero", "/dev/null", "/proc/self/mem", "/etc/../etc/passwd", "//", "/no/such.jpg"]
)
numbers = st.floats(width=32)  # NaN, infinities, subnormals, extremes
# Random bytes, and valid PNGs with a few bytes changed.
images = st.binary(max_size=300) | st.builds(
    mutate,
    st.builds(png, st.integers(0, 3)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)
terms = (
    st.builds(
        lambda kind, value, weight: (
            pb.Term(**{kind: value}, weight=weight)
            if weight is not None
            else pb.Term(**{kind: value})
        ),
        st.sampled_from(["text", "path"]),
        texts,
        st.none() | numbers,
    )
    | st.builds(lambda data: pb.Term(image=data), images)
    | st.just(pb.Term())
)
uint32 = st.integers(0, 2**32 - 1)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def request_of(message: type[Any], **fields: Any) -> Any:
    """A message from the fields that are not None."""
    return message(**{key: value for key, value in fields.items() if value is not None})


searches = st.builds(
    lambda **f: request_of(pb.SearchRequest, **f),
    terms=st.lists(terms, max_size=70),
    limit=uint32 | st.integers(0, 30),
    offset=uint32 | st.integers(0, 30),
    min_score=optional(numbers),
    under=st.lists(paths, max_size=3),
    extensions=st.lists(texts, max_size=3),
    modified_after=optional(st.floats()),
    modified_before=optional(st.floats()),
)
embeds = st.one_of(
    st.builds(lambda t: pb.EmbedRequest(text=t), texts),
    st.builds(lambda p: pb.EmbedRequest(path=p), paths),
    st.builds(lambda i: pb.EmbedRequest(image=i), images),
    st.just(pb.EmbedRequest()),
)
failure_pages = st.builds(pb.ListFailuresRequest, limit=uint32, offset=uint32)
statuses = st.just(pb.StatusRequest())


def reindexes(root: Path) -> st.SearchStrategy[pb.ReindexRequest]:
    # Never the whole file system: only odd or relative paths, and places below the temp root.
    below = st.sampled_from(["", "pics", "pics/red.png", "nothing", "pics/../pics"]).map(
        lambda name: str(root / name)
    )
    return st.builds(
        lambda ps: pb.ReindexRequest(paths=ps),
        st.lists(below | texts.filter(lambda p: not p.startswith("/")), max_size=3),
    )


@FUZZ
@given(data=st.data())
def test_random_requests_get_ok_or_a_documented_refusal(
    served: Served, data: st.DataObject
) -> None:
    method, strategy = data.draw(
        st.sampled_from(
            [
                ("Search", searches),
                ("Embed", embeds),
                ("ListFailures", failure_pages),
                ("GetStatus", statuses),
                ("Reindex", reindexes(served.live.root.parent)),
            ]
        ),
        label="method",
    )
    request = data.draw(strategy, label="request")
    assert served.call(method, request) in DOCUMENTED
    served.assert_up()


@FUZZ
@given(method=st.sampled_from(UNARY), raw=st.binary(max_size=200))
def test_raw_bytes_are_refused_as_invalid_not_internal(
    served: Served, method: str, raw: bytes
) -> None:
    # No serializers: the bytes go out as they are, and the server must parse them.
    call = served.channel.unary_unary(f"/clipd.v1.ImageSearch/{method}")
    assert served.call_raw(call, raw) in DOCUMENTED
    served.assert_up()


def test_a_known_malformed_request_names_the_message(served: Served) -> None:
    call = served.channel.unary_unary("/clipd.v1.ImageSearch/Search")
    # Field 1 (terms) declared 100 bytes long with 2 present.
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x0a\x64ab", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid clipd.v1.SearchRequest message" in caught.value.details()
    stream = served.channel.unary_stream("/clipd.v1.ImageSearch/WatchStatus")
    with pytest.raises(grpc.RpcError) as watched:
        next(iter(stream(b"\xff\xff\xff", timeout=30)))
    assert watched.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_over_size_request_is_resource_exhausted(served: Served) -> None:
    huge = pb.SearchRequest(terms=[pb.Term(image=b"\0" * (MAX_MESSAGE_BYTES + 1))])
    assert served.call("Search", huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    served.assert_up()


def test_watch_status_streams_are_capped(served: Served) -> None:
    streams = [served.stub.WatchStatus(pb.StatusRequest()) for _ in range(MAX_WATCHERS)]
    try:
        for stream in streams:
            assert next(stream).indexed == 2
        extra = served.stub.WatchStatus(pb.StatusRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            next(extra)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "WatchStatus streams are open already" in caught.value.details()
        served.assert_up()  # unary calls still have threads
    finally:
        for stream in streams:
            stream.cancel()


def test_extreme_weights_work_and_too_many_terms_are_refused(served: Served) -> None:
    huge = pb.Term(text="a red circle", weight=3.4e38)
    hits = served.stub.Search(pb.SearchRequest(terms=[huge, pb.Term(text="red")]), timeout=30)
    assert len(hits.hits) == 2
    assert all(-1.0001 <= hit.score <= 1.0001 for hit in hits.hits)
    far = pb.SearchRequest(terms=[pb.Term(text="red")], modified_before=1e300)
    assert len(served.stub.Search(far, timeout=30).hits) == 2
    many = pb.SearchRequest(terms=[pb.Term(text="red")] * 65)
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.Search(many, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 64 are allowed" in caught.value.details()
