"""The HTTP JSON API under /api/v1/ and the page at /: requests in, query-core calls, JSON out.

Every rule of a request lives in clipd.queries; this module only parses HTTP (query strings,
JSON bodies, multipart forms) into core calls and turns answers and QueryErrors into responses.
The core's calls block (the model, SQLite, decoding), so they run on the app's own thread pool,
not on the event loop, which stays free to serve other requests; only the checks of an image
request and a kept thumbnail's lookup, tens of microseconds, are done in place. Each status
stream waits for changes on a thread of its own pool.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.datastructures import ImmutableMultiDict, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clipd.errors import StoreUnavailable
from clipd.queries import (
    DaemonState,
    DuplicatesQuery,
    Queries,
    QueryError,
    SearchQuery,
    SearchResult,
    StatusReport,
    Term,
)
from clipd.web import inputs, openapi, uploads
from clipd.web.assets import Assets
from clipd.web.errors import INTERNAL, error_response
from clipd_api.kinds import ErrorKind
from clipd_api.query import QueryError as WordError
from clipd_api.query import parse_words, split_words

log = logging.getLogger(__name__)

# Status event streams open at once; each holds a thread while it waits for a change.
MAX_EVENT_STREAMS = 32
# Thumbnails and originals change only with their file, whose size and mtime make the ETag.
# A URL that carries v (the hit's mtime) names one version of the file: cached for good. Without
# it the browser asks again each time, and an unchanged file costs a 304.
_VERSIONED = "private, max-age=31536000, immutable"
_UNVERSIONED = "private, no-cache"

_T = TypeVar("_T")

# The API: path, the Api method that answers it, its methods. openapi.DOCUMENT describes each.
ROUTES = (
    ("/api/v1/search", "search", ["GET", "POST"]),
    ("/api/v1/status", "status", ["GET"]),
    ("/api/v1/status/events", "status_events", ["GET"]),
    ("/api/v1/failures", "failures", ["GET"]),
    ("/api/v1/duplicates", "duplicates", ["GET"]),
    ("/api/v1/reindex", "reindex", ["POST"]),
    ("/api/v1/thumbnail", "thumbnail", ["GET"]),
    ("/api/v1/image", "image", ["GET"]),
    ("/api/v1/embed", "embed", ["POST"]),
    ("/api/v1/upload", "upload", ["POST"]),
    ("/api/v1/openapi.json", "openapi", ["GET"]),
)


class Api:
    """What the routes answer from: the core (for remote callers), the state, a thread pool."""

    def __init__(self, state: DaemonState, stopping: threading.Event) -> None:
        self.state = state
        self.queries = Queries(state, remote=True)
        self.stopping = stopping
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="clipd-web")
        self._stream_pool = ThreadPoolExecutor(
            MAX_EVENT_STREAMS, thread_name_prefix="clipd-web-events"
        )
        self._streams = 0
        self._assets = Assets()

    async def run(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """call(*args, **kwargs) on the pool: blocking work stays off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(call, *args, **kwargs))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            *(Route(path, getattr(self, name), methods=methods) for path, name, methods in ROUTES),
            Route("/static/{name}", self.static),
        ]

    async def page(self, request: Request) -> Response:
        return self._assets.response("index.html", request)

    async def login_page(self) -> Response:
        """The hint to run `clipq web`, for a browser without the session cookie."""
        return self._assets.response("login.html", status=401)

    async def static(self, request: Request) -> Response:
        return self._assets.response(request.path_params["name"], request)

    async def search(self, request: Request) -> Response:
        if request.method == "GET":
            query = self._search_query(request.query_params, [])
        else:
            query = await self._posted_search(request)
        result = await self.run(self.queries.search, query)
        return _json(_search_answer(result))

    async def _posted_search(self, request: Request) -> SearchQuery:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with inputs.form(request) as form:
                image = form.get("image")
                if not isinstance(image, UploadFile):
                    raise QueryError("image: send the query image as a file part named 'image'")
                return self._search_query(form, [Term("image", await image.read())])
        if content_type.startswith("application/json"):
            return self._json_search(await inputs.json_body(request))
        raise QueryError(
            "send the search as multipart/form-data (an 'image' file and fields) or as "
            'application/json ({"terms": [...]})'
        )

    def _search_query(self, fields: ImmutableMultiDict[str, Any], terms: list[Term]) -> SearchQuery:
        """A search from query-string or form fields (see the OpenAPI document)."""
        q = inputs.text_field(fields, "q")
        if q is not None and q.strip():
            terms = [*self._words(q), *terms]
        terms += [Term("path", like) for like in inputs.text_fields(fields, "like")]
        if not terms:
            raise QueryError("give q (words to search for), like (an indexed path) or an image")
        extensions = [
            ext for value in inputs.text_fields(fields, "ext") for ext in value.split(",")
        ]
        return SearchQuery(
            terms=terms,
            limit=inputs.integer(fields, "limit"),
            offset=inputs.integer(fields, "offset"),
            min_score=inputs.number(fields, "min_score"),
            under=inputs.text_fields(fields, "under"),
            extensions=[ext for ext in extensions if ext.strip()],
            # clipq's --since/--until: the capture time, else the modification time.
            taken_after=inputs.number(fields, "after"),
            taken_before=inputs.number(fields, "before"),
            hosts=inputs.text_fields(fields, "host"),
            exact=inputs.boolean(fields, "exact"),
        )

    def _words(self, q: str) -> list[Term]:
        """q in clipq's query language; a word that looks like a path names an indexed image
        (the core refuses any other), whose stored vector joins the query."""
        try:
            parsed = parse_words(split_words(q))
        except WordError as exc:
            raise QueryError(f"q: {exc}") from exc
        return [Term("path" if term.image else "text", term.value, term.weight) for term in parsed]

    def _json_search(self, body: Mapping[str, Any]) -> SearchQuery:
        raw_terms = body.get("terms")
        if not isinstance(raw_terms, list):
            raise QueryError('terms: give a list of terms like [{"text": "a red car"}]')
        return SearchQuery(
            terms=[inputs.json_term(raw, f"terms[{n}]") for n, raw in enumerate(raw_terms)],
            limit=inputs.json_integer(body, "limit"),
            offset=inputs.json_integer(body, "offset"),
            min_score=inputs.json_number(body, "min_score"),
            under=inputs.json_strings(body, "under"),
            extensions=inputs.json_strings(body, "extensions"),
            taken_after=inputs.json_number(body, "after"),
            taken_before=inputs.json_number(body, "before"),
            hosts=inputs.json_strings(body, "hosts"),
            exact=inputs.json_boolean(body, "exact"),
        )

    async def status(self, request: Request) -> Response:
        return _json(await self.run(lambda: self._status(self.queries.status())))

    def _status(self, report: StatusReport) -> dict[str, Any]:
        status = asdict(report)
        status["upload_enabled"] = self.state.config.upload_dir is not None
        return status

    async def status_events(self, request: Request) -> Response:
        # Counted here, with no await between the check and the count: two requests cannot
        # both take the last place. The response gives it back once its stream ends.
        if self._streams >= MAX_EVENT_STREAMS:
            raise QueryError(
                f"{MAX_EVENT_STREAMS} status streams are open already; close one, or poll "
                "/api/v1/status",
                ErrorKind.UNAVAILABLE,
            )
        self._streams += 1
        return _EventStream(self._events(), self._stream_ended)

    def _stream_ended(self) -> None:
        self._streams -= 1

    async def _events(self) -> AsyncIterator[str]:
        """`event: status` as the core's watch_status yields a changed status; a comment line
        when it yields the same one again (a heartbeat that keeps proxies and browsers from
        closing the stream); ends when the daemon stops or the client goes."""
        listening = True
        watch = self.queries.watch_status(lambda: listening and not self.stopping.is_set())
        loop = asyncio.get_running_loop()
        last: StatusReport | None = None
        try:
            while True:
                report = await loop.run_in_executor(self._stream_pool, _next_or_none, watch)
                if report is None:
                    return
                if report is last:
                    yield ": heartbeat\n\n"
                else:
                    last = report
                    yield f"event: status\ndata: {json.dumps(self._status(report))}\n\n"
        finally:
            # A wait in progress ends within WATCH_HEARTBEAT_S; no next one is asked for.
            listening = False

    async def failures(self, request: Request) -> Response:
        params = request.query_params
        limit, offset = inputs.integer(params, "limit"), inputs.integer(params, "offset")
        page, total = await self.run(self.queries.failures, limit=limit, offset=offset)
        return _json({"failures": [asdict(failure) for failure in page], "total": total})

    async def duplicates(self, request: Request) -> Response:
        params = request.query_params
        query = DuplicatesQuery(
            threshold=inputs.number(params, "threshold"),
            under=inputs.text_fields(params, "under"),
            tier=inputs.text_field(params, "tier"),
            limit=inputs.integer(params, "limit"),
            offset=inputs.integer(params, "offset"),
        )
        return _json(asdict(await self.run(self.queries.duplicates, query)))

    async def reindex(self, request: Request) -> Response:
        body = await inputs.json_body(request)
        wait = body.get("wait", False)
        if not isinstance(wait, bool):
            raise QueryError("wait must be true or false")
        result = await self.run(
            self.queries.reindex,
            inputs.json_strings(body, "paths"),
            wait=wait,
            active=lambda: not self.stopping.is_set(),
        )
        return _json(asdict(result))

    async def thumbnail(self, request: Request) -> Response:
        params = request.query_params
        path = inputs.required_text(params, "path")
        side = inputs.integer(params, "size")
        host = inputs.text_field(params, "host")
        if host and host != self.state.store.host:
            return await self._remote_picture(request, host, path, side)
        # A stat, an index lookup and a cache read: tens of microseconds, done right here (a
        # hop to the pool and back cost more than the work, measured). Making one goes there.
        version = self.queries.current_version(path)
        headers = _image_headers(request, version.etag)
        if request.headers.get("if-none-match") == version.etag:
            return Response(status_code=304, headers=headers)
        data = self.queries.cached_thumbnail(version, side)
        if data is None:
            data = await self.run(self.queries.make_thumbnail, version, side)
        return Response(data, media_type="image/jpeg", headers=headers)

    async def image(self, request: Request) -> Response:
        path = inputs.required_text(request.query_params, "path")
        host = inputs.text_field(request.query_params, "host")
        if host and host != self.state.store.host:
            # The file lives on that machine: the largest picture here is the one it keeps.
            return await self._remote_picture(request, host, path, 0)
        # The file's version first: a browser that has this one gets a 304 before anything
        # is read, let alone a HEIC or RAW decoded.
        version = self.queries.current_version(path)
        headers = _image_headers(request, version.etag)
        if request.headers.get("if-none-match") == version.etag:
            return Response(status_code=304, headers=headers)
        original = await self.run(self.queries.original, version)
        if original.data is None:  # a format browsers show: the file itself, as it is
            return FileResponse(version.path, headers=headers, media_type=original.content_type)
        return Response(original.data, media_type=original.content_type, headers=headers)

    async def _remote_picture(self, request: Request, host: str, path: str, side: int) -> Response:
        """Another machine's image, from the thumbnail it keeps in the shared index."""
        etag, data = await self.run(self.queries.remote_picture, host, path, side)
        headers = _image_headers(request, etag)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    async def embed(self, request: Request) -> Response:
        body = await inputs.json_body(request)
        embedding = await self.run(self.queries.embed, inputs.json_term(body, "body"))
        return _json(
            {
                "vector": embedding.vector.tolist(),
                "model": embedding.model,
                "pretrained": embedding.pretrained,
            }
        )

    async def upload(self, request: Request) -> Response:
        folder = self.state.config.upload_dir
        if folder is None:
            raise QueryError(
                "adding images is off: set upload_dir (a folder inside a root) in the config",
                ErrorKind.NOT_FOUND,
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise QueryError("send the images as multipart/form-data, one 'file' part each")
        saved: list[str] = []
        refused: list[dict[str, str]] = []
        max_pixels = self.state.config.max_image_pixels
        async with inputs.form(request) as form:
            files = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
            if not files:
                raise QueryError("no images: send each as a file part named 'file'")
            for part in files:
                name = part.filename or "image"
                data = await part.read()
                outcome = await self.run(uploads.save, folder, name, data, max_pixels)
                if isinstance(outcome, uploads.Refused):
                    refused.append(asdict(outcome))
                else:
                    saved.append(str(outcome))
        return _json({"saved": saved, "refused": refused})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.DOCUMENT)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._stream_pool.shutdown(wait=True, cancel_futures=True)


class _EventStream(StreamingResponse):
    """A status stream that calls `ended` once it is over, however it ends."""

    def __init__(self, events: AsyncIterator[str], ended: Callable[[], None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ended()


def _next_or_none(reports: Iterator[StatusReport]) -> StatusReport | None:
    return next(reports, None)


def build_app(api: Api) -> Starlette:
    """The Starlette app: routes, and every error as JSON (see clipd.web.errors)."""

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QueryError)
        return error_response(exc.kind, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        return error_response(ErrorKind.UNAVAILABLE, str(exc))  # the store reconnects

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {404: ErrorKind.NOT_FOUND, 413: ErrorKind.TOO_LARGE}.get(
            exc.status_code, ErrorKind.BAD_REQUEST
        )
        response = error_response(kind.value, str(exc.detail), exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(INTERNAL, "internal error in clipd; see its log", 500)

    return Starlette(
        routes=api.routes(),
        middleware=[Middleware(inputs.BodyLimit)],
        exception_handlers={
            QueryError: refused,
            StoreUnavailable: unavailable,
            HTTPException: http_error,
            Exception: crashed,
        },
    )


def _image_headers(request: Request, etag: str) -> dict[str, str]:
    versioned = "v" in request.query_params
    return {"Cache-Control": _VERSIONED if versioned else _UNVERSIONED, "ETag": etag}


def _json(content: Any) -> JSONResponse:
    return JSONResponse(content, headers={"Cache-Control": "no-store"})


def _search_answer(result: SearchResult) -> dict[str, Any]:
    return {
        "hits": [asdict(hit) for hit in result.hits],
        "partial": result.partial,
        "took_ms": result.took_ms,
        "nothing_indexed": result.nothing_indexed,
        "host": result.host,
    }
