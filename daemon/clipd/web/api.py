"""The HTTP JSON API under /api/v1/ and the page at /: requests in, query-core calls, JSON out.

Every rule of a request lives in clipd.queries; this module only parses HTTP (query strings,
JSON bodies, multipart forms) into core calls and turns answers and QueryErrors into responses.
The core's calls block (the model, SQLite, decoding), so they run on the app's own thread pool,
not on the event loop, which stays free to stream status events and serve other requests; only
a kept thumbnail's lookups, tens of microseconds, are done in place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mimetypes
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.datastructures import ImmutableMultiDict, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from clipd.errors import StoreUnavailable
from clipd.queries import (
    WATCH_MIN_INTERVAL_S,
    DaemonState,
    DuplicatesQuery,
    Queries,
    QueryError,
    SearchQuery,
    SearchResult,
    Term,
)
from clipd.web import inputs, openapi, uploads
from clipd.web.errors import INTERNAL, error_response
from clipd_api.kinds import ErrorKind
from clipd_api.query import QueryError as WordError
from clipd_api.query import parse_words, split_words

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Status event streams open at once; each polls the status a few times a second.
MAX_EVENT_STREAMS = 32
_HEARTBEAT_S = 15.0
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
        self._streams = 0
        # The page's files by name, with their content types; nothing else is served from there.
        self._static = {
            path.name: mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            for path in STATIC.iterdir()
            if path.is_file()
        }

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
        return await self.static_file("index.html")

    async def login_page(self) -> Response:
        """The hint to run `clipq web`, for a browser without the session cookie."""
        response = await self.static_file("login.html")
        response.status_code = 401
        return response

    async def static(self, request: Request) -> Response:
        return await self.static_file(request.path_params["name"])

    async def static_file(self, name: str) -> Response:
        """A file of the page (static/), read on the pool; only names listed there at start."""
        content_type = self._static.get(name)
        if content_type is None:
            raise HTTPException(404, f"no such file: /static/{name}")
        data = await self.run((STATIC / name).read_bytes)
        return Response(data, media_type=content_type, headers={"Cache-Control": "no-cache"})

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
        )

    async def status(self, request: Request) -> Response:
        return _json(await self.run(self._status))

    def _status(self) -> dict[str, Any]:
        status = asdict(self.queries.status())
        status["upload_enabled"] = self.state.config.upload_dir is not None
        return status

    async def status_events(self, request: Request) -> Response:
        if self._streams >= MAX_EVENT_STREAMS:
            raise QueryError(
                f"{MAX_EVENT_STREAMS} status streams are open already; close one, or poll "
                "/api/v1/status",
                ErrorKind.UNAVAILABLE,
            )
        return StreamingResponse(
            self._events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(self) -> AsyncIterator[str]:
        """`event: status` whenever the status changes (at most every WATCH_MIN_INTERVAL_S),
        a comment line every _HEARTBEAT_S so that proxies and browsers keep the stream open;
        ends when the daemon stops."""
        self._streams += 1
        try:
            loop = asyncio.get_running_loop()
            progress = self.state.progress
            version = -1
            beat = loop.time()
            while not self.stopping.is_set():
                snap = progress.snapshot()
                if snap.version != version:
                    version = snap.version
                    beat = loop.time()
                    status = await self.run(self._status)
                    yield f"event: status\ndata: {json.dumps(status)}\n\n"
                    if snap.state == "stopping":
                        return
                elif loop.time() - beat >= _HEARTBEAT_S:
                    beat = loop.time()
                    yield ": heartbeat\n\n"
                await asyncio.sleep(WATCH_MIN_INTERVAL_S)
        finally:
            self._streams -= 1

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
        # A stat, an index lookup and a cache read: tens of microseconds, done right here (a
        # hop to the pool and back cost more than the work, measured). Making one goes there.
        version = self.queries.current_version(path)
        headers = _image_headers(request, version.etag)
        if request.headers.get("if-none-match") == version.etag:
            return Response(status_code=304, headers=headers)
        data = self.queries.cached_thumbnail(version, side)
        if data is None:
            data = await self.run(self.queries.web_thumbnail, version, side)
        return Response(data, media_type="image/jpeg", headers=headers)

    async def image(self, request: Request) -> Response:
        original = await self.run(
            self.queries.original, inputs.required_text(request.query_params, "path")
        )
        headers = _image_headers(request, original.version.etag)
        if request.headers.get("if-none-match") == original.version.etag:
            return Response(status_code=304, headers=headers)
        data = original.data
        if data is None:
            data = await self.run(Path(original.version.path).read_bytes)
        return Response(data, media_type=original.content_type, headers=headers)

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
