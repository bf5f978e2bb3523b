"""What requests carry, as typed values: query-string and form fields, JSON bodies, multipart
forms. Every value that is missing, malformed or out of range becomes a QueryError saying which
field and why; no body larger than MAX_BODY_BYTES is ever read into memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import FormData, Headers, ImmutableMultiDict
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipd.queries import QueryError, Term
from clipd.web import uploads
from clipd.web.errors import error_response
from clipd_api.kinds import ErrorKind

# A request body at most: a search image or a few added photos.
MAX_BODY_BYTES = 128 << 20


class BodyLimit:
    """Refuse, as too_large, a body over MAX_BODY_BYTES: one that says so in its Content-Length
    before any of it is read, and one that grows past it as it arrives (chunked bodies have no
    Content-Length). Nothing reads more than that into memory, whichever route reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await error_response(ErrorKind.TOO_LARGE, _too_large())(scope, receive, send)
            return
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise QueryError(_too_large(), ErrorKind.TOO_LARGE)
            return message

        await self._app(scope, counting, send)


def _too_large() -> str:
    return f"the request body is over the limit of {MAX_BODY_BYTES >> 20} MiB"


class _InMemoryParser(MultiPartParser):
    """Starlette's multipart parser, keeping file parts in memory (the body is at most
    MAX_BODY_BYTES): spooled to disk they would be written on AnyIO's worker threads, which
    outlive the request, rather than on the app's own pool."""

    spool_max_size = MAX_BODY_BYTES


@asynccontextmanager
async def form(request: Request) -> AsyncIterator[FormData]:
    """The multipart form of a request, its files closed after use."""
    parser = _InMemoryParser(
        request.headers, request.stream(), max_files=uploads.MAX_UPLOAD_FILES, max_fields=200
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:  # too many parts, a malformed body
        raise QueryError(f"the form cannot be read: {exc.message}") from exc
    try:
        yield form
    finally:
        await form.close()


async def json_body(request: Request) -> Mapping[str, Any]:
    body = await request.body()
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise QueryError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise QueryError("the body must be a JSON object")
    return data


def text_fields(fields: ImmutableMultiDict[str, Any], name: str) -> list[str]:
    values = fields.getlist(name)
    if not all(isinstance(value, str) for value in values):
        raise QueryError(f"{name} must be text, not a file")
    return list(values)


def text_field(fields: ImmutableMultiDict[str, Any], name: str) -> str | None:
    values = text_fields(fields, name)
    if len(values) > 1:
        raise QueryError(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def required_text(fields: ImmutableMultiDict[str, Any], name: str) -> str:
    value = text_field(fields, name)
    if not value:
        raise QueryError(f"{name} is required")
    return value


def integer(fields: ImmutableMultiDict[str, Any], name: str) -> int:
    value = text_field(fields, name)
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"{name} must be a whole number, not {value!r}") from None
    return bounded(number, name)


def bounded(number: int, name: str) -> int:
    # Far past any real limit or offset, and below what SQLite's 64-bit integers hold.
    if abs(number) > 1 << 40:
        raise QueryError(f"{name} {number} is out of range")
    return number


def number(fields: ImmutableMultiDict[str, Any], name: str) -> float | None:
    value = text_field(fields, name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise QueryError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise QueryError(f"{name} must be a finite number, not {value!r}")
    return number


def boolean(fields: ImmutableMultiDict[str, Any], name: str) -> bool:
    value = text_field(fields, name)
    if value is None or value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise QueryError(f"{name} must be true or false, not {value!r}")


def json_boolean(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise QueryError(f"{name} must be true or false, not {value!r}")
    return value


def json_integer(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{name} must be a whole number, not {value!r}")
    return bounded(value, name)


def json_number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"{name} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise QueryError(f"{name} must be a finite number")
    return number


def json_strings(body: Mapping[str, Any], name: str) -> Sequence[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise QueryError(f"{name} must be a list of strings")
    return value


def json_term(raw: object, label: str) -> Term:
    """{"text" | "image_base64" | "path": ..., "weight": w} as a core Term."""
    if not isinstance(raw, dict):
        raise QueryError(f'{label} must be an object like {{"text": "a red car"}}')
    kinds = [key for key in ("text", "image_base64", "path") if key in raw]
    if len(kinds) != 1:
        raise QueryError(f"{label}: give exactly one of text, image_base64 or path")
    value = raw[kinds[0]]
    if not isinstance(value, str):
        raise QueryError(f"{label}.{kinds[0]} must be a string")
    weight = json_number(raw, "weight")
    if kinds[0] == "image_base64":
        try:
            return Term("image", base64.b64decode(value, validate=True), weight)
        except (binascii.Error, ValueError) as exc:
            raise QueryError(f"{label}.image_base64 is not base64: {exc}") from exc
    return Term("text" if kinds[0] == "text" else "path", value, weight)
