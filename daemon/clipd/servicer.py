"""The gRPC servicer: translates requests into query-core calls and QueryErrors into status codes.

Every rule of a request lives in clipd.queries; this module only converts messages. A refusal
carries its kind in the trailing metadata (clipd_api.kinds.ERROR_KIND_METADATA) beside the status
code, so a client tells "still loading" from "shutting down" without reading the message. Bytes
that are not a valid request message get INVALID_ARGUMENT too, and an unexpected error becomes
INTERNAL with a short message and a logged traceback, never UNKNOWN.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from clipd import thumbnails
from clipd.errors import StoreUnavailable
from clipd.queries import (
    DuplicatesQuery,
    Queries,
    QueryError,
    SearchQuery,
    StatusReport,
    Term,
    TermKind,
)
from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# Each WatchStatus stream holds an RPC thread for its whole life: leave threads for the rest.
MAX_WATCHERS = 8

STATUS_CODES = {
    ErrorKind.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

_THUMBNAIL_FORMATS: dict[int, thumbnails.Format] = {
    pb.ThumbnailRequest.FORMAT_UNSPECIFIED: "png",
    pb.ThumbnailRequest.PNG: "png",
    pb.ThumbnailRequest.SIXEL: "sixel",
}

_TIERS = {
    "exact": pb.DuplicateGroup.EXACT,
    "reencoded": pb.DuplicateGroup.REENCODED,
    "variant": pb.DuplicateGroup.VARIANT,
}
_TIER_NAMES = {number: name for name, number in _TIERS.items()}

_STATES = {
    "starting": pb.Status.STARTING,
    "indexing": pb.Status.INDEXING,
    "idle": pb.Status.IDLE,
    "stopping": pb.Status.STOPPING,
}

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def refuse(context: grpc.ServicerContext, kind: ErrorKind, message: str) -> NoReturn:
    """End the call with the status code for `kind`, the kind itself in trailing metadata."""
    context.set_trailing_metadata(((ERROR_KIND_METADATA, kind.value),))
    context.abort(STATUS_CODES[kind], message)
    raise AssertionError("context.abort returned")  # it always raises


def _rpc(handler: _Handler) -> _Handler:
    """Map QueryError and unexpected exceptions to proper status codes for unary RPCs."""

    @functools.wraps(handler)
    def wrapper(self: ImageSearch, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except QueryError as exc:
            refuse(context, exc.kind, str(exc))
        except StoreUnavailable as exc:  # the database server, for now; the store reconnects
            refuse(context, ErrorKind.UNAVAILABLE, str(exc))
        except Exception:
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error in clipd; see its log")

    return wrapper  # type: ignore[return-value]


class ImageSearch(pb_grpc.ImageSearchServicer):
    def __init__(self, queries: Queries) -> None:
        self._queries = queries
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)

    @_rpc
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        result = self._queries.search(
            SearchQuery(
                terms=[_term(term) for term in request.terms],
                limit=request.limit,
                offset=request.offset,
                min_score=request.min_score if request.HasField("min_score") else None,
                under=list(request.under),
                extensions=list(request.extensions),
                modified_after=_optional(request, "modified_after"),
                modified_before=_optional(request, "modified_before"),
                taken_after=_optional(request, "taken_after"),
                taken_before=_optional(request, "taken_before"),
                hosts=list(request.hosts),
                exact=request.exact,
            )
        )
        return pb.SearchResponse(
            hits=[pb.Hit(**asdict(hit)) for hit in result.hits],  # the same fields, by design
            partial=result.partial,
            took_ms=result.took_ms,
            nothing_indexed=result.nothing_indexed,
            host=result.host,
        )

    @_rpc
    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        return _status(self._queries.status())

    def WatchStatus(
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Status]:
        if not self._watchers.acquire(blocking=False):
            context.set_trailing_metadata(((ERROR_KIND_METADATA, ErrorKind.UNAVAILABLE.value),))
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHERS} WatchStatus streams are open already; close one, or poll "
                "GetStatus",
            )
        try:
            for report in self._queries.watch_status(context.is_active):
                yield _status(report)
        finally:
            self._watchers.release()

    @_rpc
    def Reindex(
        self, request: pb.ReindexRequest, context: grpc.ServicerContext
    ) -> pb.ReindexResponse:
        result = self._queries.reindex(request.paths, wait=request.wait, active=context.is_active)
        return pb.ReindexResponse(**asdict(result))

    @_rpc
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        kind: TermKind | None = request.WhichOneof("input")
        value = getattr(request, kind) if kind else ""
        embedding = self._queries.embed(Term(kind, value))
        return pb.EmbedResponse(
            vector=embedding.vector.tolist(),
            model=embedding.model,
            pretrained=embedding.pretrained,
        )

    @_rpc
    def ListFailures(
        self, request: pb.ListFailuresRequest, context: grpc.ServicerContext
    ) -> pb.ListFailuresResponse:
        page, total = self._queries.failures(limit=request.limit, offset=request.offset)
        return pb.ListFailuresResponse(
            failures=[pb.Failure(**asdict(failure)) for failure in page], total=total
        )

    @_rpc
    def Thumbnail(
        self, request: pb.ThumbnailRequest, context: grpc.ServicerContext
    ) -> pb.ThumbnailResponse:
        fmt = _THUMBNAIL_FORMATS.get(request.format)
        if fmt is None:
            raise QueryError(f"format {request.format} is unknown; use PNG or SIXEL")
        thumbnail = self._queries.thumbnail(request.path, request.max_side, fmt, request.host)
        return pb.ThumbnailResponse(
            data=thumbnail.data, width=thumbnail.width, height=thumbnail.height
        )

    @_rpc
    def Duplicates(
        self, request: pb.DuplicatesRequest, context: grpc.ServicerContext
    ) -> pb.DuplicatesResponse:
        tier = None
        if request.tier != pb.DuplicateGroup.TIER_UNSPECIFIED:
            tier = _TIER_NAMES.get(request.tier)
            if tier is None:
                raise QueryError(f"tier {request.tier} is unknown; use EXACT, REENCODED or VARIANT")
        report = self._queries.duplicates(
            DuplicatesQuery(
                threshold=_optional(request, "threshold"),
                under=list(request.under),
                tier=tier,
                limit=request.limit,
                offset=request.offset,
            )
        )
        return pb.DuplicatesResponse(
            groups=[
                pb.DuplicateGroup(
                    tier=_TIERS[group.tier], files=[pb.Hit(**asdict(f)) for f in group.files]
                )
                for group in report.groups
            ],
            total=report.total,
            unchecked=report.unchecked,
        )


def _term(term: pb.Term) -> Term:
    kind: TermKind | None = term.WhichOneof("kind")
    value = getattr(term, kind) if kind else ""
    return Term(kind, value, term.weight if term.HasField("weight") else None)


def _optional(request: Message, field: str) -> float | None:
    """A proto3 `optional` number field's value; None when unset (not 0)."""
    value: float | None = getattr(request, field) if request.HasField(field) else None
    return value


def _status(report: StatusReport) -> pb.Status:
    fields = asdict(report)
    fields["state"] = _STATES[report.state]
    return pb.Status(**fields)


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
            refuse(context, ErrorKind.BAD_REQUEST, request.message)

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
