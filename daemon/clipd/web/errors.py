"""Errors as the HTTP API answers them: JSON {"error": {"kind", "message"}} with a status."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from clipd_api.kinds import ErrorKind

# The model loads in seconds; a client told to wait this long finds it ready or nearly so.
RETRY_AFTER_S = 5

HTTP_STATUS = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.NOT_READY: 503,
    ErrorKind.UNAVAILABLE: 503,
}
# Kinds only the HTTP layer says: who may call, and bugs.
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
INTERNAL = "internal"


def error_response(kind: ErrorKind | str, message: str, status: int | None = None) -> JSONResponse:
    """The JSON error for `kind`; its status is HTTP_STATUS[kind] unless given."""
    name = kind.value if isinstance(kind, ErrorKind) else kind
    if status is None:
        assert isinstance(kind, ErrorKind), "HTTP-only kinds need an explicit status"
        status = HTTP_STATUS[kind]
    headers: Mapping[str, str] = {"Cache-Control": "no-store"}
    if kind == ErrorKind.NOT_READY:
        headers = {**headers, "Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"error": {"kind": name, "message": message}}, status, headers)
