"""The gRPC servicer: validates requests, turns terms into a query vector, answers from the store.

Every failure a caller can cause becomes INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a message
a person can act on, bytes that are not a valid request message included; an unexpected error
becomes INTERNAL with a short message and a logged traceback, never UNKNOWN.

A servicer for remote callers (TCP) never opens a file a query names: a path term must be
indexed, and only paths below a root may be reindexed. The daemon may read files its caller
could not.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from clipd import duplicates, images, thumbnails
from clipd.config import Config
from clipd.embedder import Embedder, Vectors
from clipd.errors import ImageError, ImageTooLarge
from clipd.progress import Progress
from clipd.records import SearchFilter
from clipd.scanner import is_below
from clipd.store import Store
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from clipd.indexer import Indexer

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
DEFAULT_FAILURES_LIMIT = 100
MAX_TEXT_CHARS = 2000
DEFAULT_THUMBNAIL_SIDE = 256
MAX_THUMBNAIL_SIDE = 1024
# Each term costs a model pass or a file read: a query needs a few, never hundreds.
MAX_TERMS = 64
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")
# How often WatchStatus may push, at most, and how long it waits before re-sending anyway.
_WATCH_MIN_INTERVAL_S = 0.25
_WATCH_HEARTBEAT_S = 5.0
# Times in requests are clamped to this many seconds either side of the epoch (int64 ns).
_MAX_SECONDS = 9e9
# Each WatchStatus stream holds an RPC thread for its whole life: leave threads for the rest.
MAX_WATCHERS = 8

_THUMBNAIL_FORMATS: dict[int, thumbnails.Format] = {
    pb.ThumbnailRequest.FORMAT_UNSPECIFIED: "png",
    pb.ThumbnailRequest.PNG: "png",
    pb.ThumbnailRequest.SIXEL: "sixel",
}

_TIER_NUMBERS = {
    "exact": pb.DuplicateGroup.EXACT,
    "reencoded": pb.DuplicateGroup.REENCODED,
    "variant": pb.DuplicateGroup.VARIANT,
}
_TIERS = {number: name for name, number in _TIER_NUMBERS.items()}
_TIERS[pb.DuplicateGroup.TIER_UNSPECIFIED] = "variant"

_STATES = {
    "starting": pb.Status.STARTING,
    "indexing": pb.Status.INDEXING,
    "idle": pb.Status.IDLE,
    "stopping": pb.Status.STOPPING,
}


class RequestError(Exception):
    """A request the caller must fix; carries the gRPC code to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


@dataclass
class Engine:
    """What the servicer answers from; embedder and indexer are None until the model loads."""

    config: Config
    store: Store
    progress: Progress
    version: str
    started_at: float
    embedder: Embedder | None = None
    indexer: Indexer | None = None


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _rpc(handler: _Handler) -> _Handler:
    """Map RequestError and unexpected exceptions to proper status codes for unary RPCs."""

    @functools.wraps(handler)
    def wrapper(self: ImageSearch, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        except Exception:
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error in clipd; see its log")

    return wrapper  # type: ignore[return-value]


class ImageSearch(pb_grpc.ImageSearchServicer):
    def __init__(self, engine: Engine, *, remote: bool = False) -> None:
        self._engine = engine
        self._remote = remote
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)
        self._duplicates = duplicates.DuplicateFinder(engine.store)

    def _ready(self) -> tuple[Embedder, Indexer]:
        engine = self._engine
        if engine.embedder is None or engine.indexer is None:
            raise RequestError(
                "clipd is still loading its model; try again in a few seconds",
                grpc.StatusCode.UNAVAILABLE,
            )
        return engine.embedder, engine.indexer

    @_rpc
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        embedder, _ = self._ready()
        started = time.perf_counter()
        limit = _limit(request.limit, DEFAULT_LIMIT)
        min_score = request.min_score if request.HasField("min_score") else None
        if min_score is not None and not (math.isfinite(min_score) and -1 <= min_score <= 1):
            raise RequestError(f"min_score must be between -1 and 1, not {min_score}")
        where = _search_filter(request)
        query = self._query_vector(embedder, request.terms)
        store = self._engine.store
        hits = store.search(
            query.tobytes(), limit=limit, offset=request.offset, min_score=min_score, where=where
        )
        return pb.SearchResponse(
            hits=[pb.Hit(**asdict(hit)) for hit in hits],  # the same fields, by design
            partial=self._engine.progress.busy,
            took_ms=(time.perf_counter() - started) * 1000,
            nothing_indexed=not hits and store.counts().indexed == 0,
        )

    def _query_vector(self, embedder: Embedder, terms: Sequence[pb.Term]) -> Vectors:
        if not terms:
            raise RequestError("the query is empty; give at least one text, image or path term")
        if len(terms) > MAX_TERMS:
            raise RequestError(f"the query has {len(terms)} terms; at most {MAX_TERMS} are allowed")
        # float64: weights up to float32's maximum cannot overflow the sum.
        total = np.zeros(embedder.identity.dim, dtype=np.float64)
        for number, term in enumerate(terms, start=1):
            weight = term.weight if term.HasField("weight") else 1.0
            if not math.isfinite(weight) or weight == 0:
                raise RequestError(f"term {number}: weight must be a non-zero number")
            total += weight * self._term_vector(embedder, term, number)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise RequestError("the query terms cancel each other out; change their weights")
        normalised: Vectors = (total / norm).astype(np.float32)
        return normalised

    def _term_vector(self, embedder: Embedder, term: pb.Term, number: int) -> Vectors:
        kind = term.WhichOneof("kind")
        if kind == "text":
            return _text_vector(embedder, term.text, f"term {number}")
        if kind == "image":
            return self._image_vector(embedder, term.image, f"term {number}")
        if kind == "path":
            return self._path_vector(embedder, term.path, f"term {number}")
        raise RequestError(f"term {number} is empty; set one of text, image or path")

    def _path_vector(self, embedder: Embedder, raw: str, label: str) -> Vectors:
        path = _absolute(raw, label)
        stored = self._engine.store.vector_for(path)
        if stored is not None:
            vector: Vectors = np.frombuffer(stored, dtype=np.float32)
            return vector
        if self._remote:
            raise RequestError(
                f"{label}: over TCP only indexed paths can be used as query terms, "
                f"and {path} is not indexed; send the image's bytes instead"
            )
        return self._image_vector(embedder, Path(path), label)

    def _image_vector(self, embedder: Embedder, source: bytes | Path, label: str) -> Vectors:
        """The vector of image bytes or an image file; one that cannot be decoded is refused."""
        decoded = self._decode(source, embedder.image_size, label)
        vector: Vectors = embedder.embed_images([decoded.image])[0]
        return vector

    def _decode(self, source: bytes | Path, min_side: int, label: str) -> images.DecodedImage:
        """Image bytes or file, decoded down to min_side; bad input becomes a RequestError."""
        max_pixels = self._engine.config.max_image_pixels
        try:
            if isinstance(source, bytes):
                return images.decode_bytes(source, max_pixels=max_pixels, min_side=min_side)
            return images.decode_file(source, max_pixels=max_pixels, min_side=min_side)
        except ImageTooLarge as exc:
            raise RequestError(f"{label}: {exc}", grpc.StatusCode.RESOURCE_EXHAUSTED) from exc
        except ImageError as exc:
            raise RequestError(f"{label}: {exc}") from exc

    @_rpc
    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        return self._status()

    def WatchStatus(
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Status]:
        if not self._watchers.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHERS} WatchStatus streams are open already; close one, or poll "
                "GetStatus",
            )
        try:
            yield from self._watch(context)
        finally:
            self._watchers.release()

    def _watch(self, context: grpc.ServicerContext) -> Iterator[pb.Status]:
        progress = self._engine.progress
        version = -1
        while context.is_active():
            snap = progress.wait_for_change(version, timeout=_WATCH_HEARTBEAT_S)
            version = snap.version
            yield self._status()
            if snap.state == "stopping":
                return
            time.sleep(_WATCH_MIN_INTERVAL_S)

    def _status(self) -> pb.Status:
        engine = self._engine
        snap = engine.progress.snapshot()
        counts = engine.store.counts()
        model = engine.config.model
        return pb.Status(
            state=_STATES[snap.state],
            version=engine.version,
            indexed=counts.indexed,
            queued=snap.queued,
            failed=counts.failed,
            offline=counts.offline,
            images_per_second=snap.images_per_second,
            eta_seconds=snap.eta_seconds,
            model=model.name,
            pretrained=model.pretrained,
            dim=engine.store.model.dim if engine.store.model else 0,
            device=engine.embedder.device if engine.embedder else "",
            roots=[str(root) for root in engine.config.roots],
            database=str(engine.store.path),
            database_bytes=engine.store.size_bytes(),
            started_at=engine.started_at,
            problem=snap.problem,
        )

    @_rpc
    def Reindex(
        self, request: pb.ReindexRequest, context: grpc.ServicerContext
    ) -> pb.ReindexResponse:
        _, indexer = self._ready()
        paths = [Path(_absolute(p, "paths")) for p in request.paths]
        roots = [str(root) for root in self._engine.config.roots]
        outside = [p for p in paths if not any(is_below(str(p), root) for root in roots)]
        if self._remote and outside:
            raise RequestError(
                f"paths: over TCP only paths below a root can be reindexed, not {outside[0]}"
            )
        job = indexer.submit(paths or list(self._engine.config.roots))
        if request.wait:
            while not job.done.wait(timeout=0.5):
                if not context.is_active():
                    break
        return pb.ReindexResponse(
            queued=job.queued, removed=job.removed, indexed=job.indexed, failed=job.failed
        )

    @_rpc
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        embedder, _ = self._ready()
        term = pb.Term()
        kind = request.WhichOneof("input")
        if kind is None:
            raise RequestError("nothing to embed; set one of text, image or path")
        setattr(term, kind, getattr(request, kind))
        vector = self._term_vector(embedder, term, 1)
        model = self._engine.config.model
        return pb.EmbedResponse(
            vector=vector.tolist(), model=model.name, pretrained=model.pretrained
        )

    @_rpc
    def ListFailures(
        self, request: pb.ListFailuresRequest, context: grpc.ServicerContext
    ) -> pb.ListFailuresResponse:
        limit = _limit(request.limit, DEFAULT_FAILURES_LIMIT)
        page, total = self._engine.store.failures(limit=limit, offset=request.offset)
        return pb.ListFailuresResponse(
            failures=[pb.Failure(**asdict(failure)) for failure in page], total=total
        )

    @_rpc
    def Thumbnail(
        self, request: pb.ThumbnailRequest, context: grpc.ServicerContext
    ) -> pb.ThumbnailResponse:
        path = _absolute(request.path, "path")
        max_side = _thumbnail_side(request.max_side)
        fmt = _THUMBNAIL_FORMATS.get(request.format)
        if fmt is None:
            raise RequestError(f"format {request.format} is unknown; use PNG or SIXEL")
        # Only indexed files: thumbnails are for hits, and the daemon must not become a way to
        # read any file its user can read for whoever reaches the socket.
        if self._engine.store.vector_for(path) is None:
            raise RequestError(f"{path!r} is not an indexed image", grpc.StatusCode.NOT_FOUND)
        # min_side lets a JPEG decode at a reduced scale that still covers max_side.
        decoded = self._decode(Path(path), max_side, path)
        thumbnail = thumbnails.render(decoded.image, max_side, fmt)
        return pb.ThumbnailResponse(
            data=thumbnail.data, width=thumbnail.width, height=thumbnail.height
        )

    @_rpc
    def Duplicates(
        self, request: pb.DuplicatesRequest, context: grpc.ServicerContext
    ) -> pb.DuplicatesResponse:
        tier = _TIERS.get(request.tier)
        if tier is None:
            raise RequestError(f"tier {request.tier} is unknown; use EXACT, REENCODED or VARIANT")
        threshold = (
            request.threshold if request.HasField("threshold") else duplicates.DEFAULT_THRESHOLD
        )
        try:
            query = duplicates.DuplicatesQuery(
                threshold=threshold,
                under=tuple(_absolute(p, "under") for p in request.under),
                tier=tier,
                limit=request.limit or duplicates.DEFAULT_LIMIT,
                offset=request.offset,
            )
        except duplicates.BadDuplicatesRequest as exc:
            raise RequestError(str(exc)) from exc
        report = self._duplicates.find(query)
        return pb.DuplicatesResponse(
            groups=[
                pb.DuplicateGroup(
                    tier=_TIER_NUMBERS[group.tier],
                    files=[pb.Hit(**asdict(file)) for file in group.files],
                )
                for group in report.groups
            ],
            total=report.total,
            unchecked=report.unchecked,
        )


def _thumbnail_side(requested: int) -> int:
    if requested > MAX_THUMBNAIL_SIDE:
        raise RequestError(
            f"max_side {requested} is over the maximum of {MAX_THUMBNAIL_SIDE} pixels"
        )
    return requested or DEFAULT_THUMBNAIL_SIDE


def _limit(requested: int, default: int) -> int:
    if requested > MAX_LIMIT:
        raise RequestError(
            f"limit {requested} is over the maximum of {MAX_LIMIT}; page with offset"
        )
    return requested or default


def _search_filter(request: pb.SearchRequest) -> SearchFilter:
    extensions = []
    for raw in request.extensions:
        ext = raw.strip().lstrip(".").lower()
        if not _EXTENSION.fullmatch(ext):
            raise RequestError(f"extensions: {raw!r} is not a file extension like 'jpg'")
        extensions.append(ext)
    after = _time_ns(request, "modified_after")
    before = _time_ns(request, "modified_before")
    if after is not None and before is not None and after >= before:
        raise RequestError("modified_after must be earlier than modified_before")
    return SearchFilter(
        under=tuple(_absolute(p, "under") for p in request.under),
        extensions=tuple(extensions),
        modified_after_ns=after,
        modified_before_ns=before,
    )


def _time_ns(request: pb.SearchRequest, field: str) -> int | None:
    if not request.HasField(field):
        return None
    seconds: float = getattr(request, field)
    if not math.isfinite(seconds):
        raise RequestError(f"{field} must be a time in seconds since the Unix epoch")
    # Beyond what SQLite's 64-bit nanoseconds hold (years 1678-2262) no file can be: clamp.
    return round(max(-_MAX_SECONDS, min(seconds, _MAX_SECONDS)) * 1e9)


def _absolute(raw: str, label: str) -> str:
    if not raw or not os.path.isabs(raw):
        raise RequestError(f"{label}: {raw!r} is not an absolute path")
    return os.path.normpath(raw)


def _text_vector(embedder: Embedder, text: str, label: str) -> Vectors:
    text = text.strip()
    if not text:
        raise RequestError(f"{label}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise RequestError(f"{label}: the text is over {MAX_TEXT_CHARS} characters")
    return embedder.embed_text(text)


class _Malformed:
    """What a lenient deserializer returns for bytes that are not the expected message."""

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(message_type: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    """A request deserializer that lets the handler refuse garbage with INVALID_ARGUMENT.

    gRPC answers INTERNAL when a deserializer raises; a malformed request is the caller's fault.
    """

    def parse(data: bytes) -> Message | _Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            name = message_type.DESCRIPTOR.full_name
            return _Malformed(f"the request is not a valid {name} message: {exc}")

    return parse


def _refuse_malformed(behaviour: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    def check(request: object, context: grpc.ServicerContext) -> None:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

    def unary(request: object, context: grpc.ServicerContext) -> Any:
        check(request, context)
        return behaviour(request, context)

    def stream(request: object, context: grpc.ServicerContext) -> Iterator[Any]:
        check(request, context)
        yield from behaviour(request, context)

    return stream if streaming else unary


def add_image_search(servicer: ImageSearch, server: grpc.Server) -> None:
    """Register the servicer like the generated add_ImageSearchServicer_to_server, except that
    a request that does not parse gets INVALID_ARGUMENT instead of INTERNAL."""
    service = pb.DESCRIPTOR.services_by_name["ImageSearch"]
    handlers = {}
    for method in service.methods:
        request_type: type[Message] = getattr(pb, method.input_type.name)
        response_type: type[Message] = getattr(pb, method.output_type.name)
        streaming = method.server_streaming
        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            _refuse_malformed(getattr(servicer, method.name), streaming),
            request_deserializer=_lenient(request_type),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
