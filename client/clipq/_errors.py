"""The client's exception tree, and the one place that maps gRPC status codes onto it.

Every exception's str() is one line a person can act on; the CLI prints it after "clipq: ".
"""

from __future__ import annotations

from pathlib import Path

import grpc

from clipd_api.kinds import ERROR_KIND_METADATA, ErrorKind

_START_HINT = (
    "start it with 'clipd serve' or 'systemctl --user start clipd' (or 'make run' in the repo)"
)

# gRPC core's wording when, with wait_for_ready=False, no connection could be made at all
# (no socket file, connection refused, nothing listening on the port).
_CONNECT_FAILED = "failed to connect to all addresses"


class ClipqError(Exception):
    """Base of every error clipq raises on purpose."""


class DaemonUnavailable(ClipqError):
    """No daemon answers at the address: not running, stale socket, or it went away mid-call."""

    def __init__(self, where: str, reason: str | None = None) -> None:
        self.where = where
        self.reason = reason
        if reason is None:
            message = f"no clipd daemon at {where}; {_START_HINT}"
        else:
            message = f"clipd at {where} is unavailable ({reason}); {_START_HINT}"
        super().__init__(message)


class DaemonStarting(ClipqError):
    """The daemon is up but still loading its model; the same call should work shortly.

    str() is the daemon's own message, which says so and when to try again; waited is how long
    the client waited for it (Client.wait_until_ready), else None.
    """

    def __init__(self, details: str, *, waited: float | None = None) -> None:
        self.details = details
        self.waited = waited
        if waited is not None:
            message = f"clipd was still loading its model after {waited:g} s of waiting"
        else:
            message = details or "clipd is still loading its model; try again in a few seconds"
        super().__init__(message)


class BadRequest(ClipqError):
    """The daemon refused the request (INVALID_ARGUMENT, OUT_OF_RANGE, RESOURCE_EXHAUSTED).

    str() is the daemon's message, which says what to change.
    """


class NotFound(ClipqError):
    """Something the request names (a path, a file) does not exist for the daemon."""


class Unauthenticated(ClipqError):
    """A daemon reached over TCP refused the call: no token, or the wrong one.

    token_file is where the client looked for a token and found none (None when one was sent).
    """

    def __init__(self, details: str, token_file: Path | None = None) -> None:
        self.details = details
        self.token_file = token_file
        if token_file is None:
            message = f"clipd refused the token: {details}"
        else:
            message = f"clipd wants a token, and none was sent: there is no token file {token_file}"
        super().__init__(message)


class RpcError(ClipqError):
    """Any other gRPC failure; code is the gRPC status code's name, e.g. "DEADLINE_EXCEEDED"."""

    def __init__(self, code: str, details: str, message: str | None = None) -> None:
        self.code = code
        self.details = details
        super().__init__(message or f"clipd call failed ({code}): {details}")


class TimedOut(RpcError):
    """The daemon did not answer within the call's timeout (seconds)."""

    def __init__(self, details: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__("DEADLINE_EXCEEDED", details, f"clipd did not answer within {timeout:g} s")


class PreviewUnsupported(ClipqError):
    """Images cannot be shown inline here: the terminal has no graphics protocol clipq speaks."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "this terminal cannot show images inline (clipq --preview needs kitty, iTerm2, "
            "WezTerm, Ghostty or a sixel terminal such as foot or xterm -ti vt340); "
            "set CLIPQ_GRAPHICS=kitty|iterm2|sixel to force one"
        )


class NothingIndexed(ClipqError):
    """A search came back empty because the daemon has no searchable file at all.

    Raised by the clipq command, not the library (whose SearchResult says nothing_indexed);
    offline counts the indexed files on roots that are not there now (an unmounted disk).
    """

    def __init__(self, offline: int) -> None:
        self.offline = offline
        if offline:
            message = (
                f"nothing is searchable: every root is offline ({offline} indexed files are on "
                "folders that are not there now); mount or reconnect them, and see the roots "
                "with 'clipq status'"
            )
        else:
            message = (
                "nothing is indexed yet; check that the config lists your image folders under "
                "'roots', and follow the indexing with 'clipq status --watch'"
            )
        super().__init__(message)


_BAD_REQUEST_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def from_rpc_error(
    error: grpc.RpcError,
    where: str,
    *,
    timeout: float | None = None,
    missing_token: Path | None = None,
) -> ClipqError:
    """The ClipqError for a failed call to the daemon at `where` (a socket path or a target).

    timeout is the call's limit in seconds; missing_token the token file a TCP client looked
    for and did not find, so that it sent no token.
    """
    code = error.code()
    details = error.details() or ""
    kind = _error_kind(error)
    if kind == ErrorKind.NOT_READY.value:
        return DaemonStarting(details)
    if kind == ErrorKind.UNAVAILABLE.value:
        # The daemon answered, but cannot serve this now (its shared database is away, too
        # many streams): its own words say why; "start it" would be wrong.
        return RpcError(code.name, details, f"clipd cannot answer now: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return _unavailable(details, where)
    if code in _BAD_REQUEST_CODES:
        return BadRequest(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details, missing_token)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
        return TimedOut(details, timeout)
    return RpcError(code.name, details)


def _error_kind(error: grpc.RpcError) -> str | None:
    """The kind the daemon put in the trailing metadata of a refusal (clipd_api.kinds.ErrorKind);
    None for failures that did not come from the daemon's own code (no connection, a deadline)."""
    trailing = getattr(error, "trailing_metadata", None)  # the errors a call raises have it
    for key, value in (trailing() if trailing else None) or ():
        if key == ERROR_KIND_METADATA and isinstance(value, str):
            return value
    return None


def _unavailable(details: str, where: str) -> ClipqError:
    # gRPC reports "cannot connect" and "the server said UNAVAILABLE" with the same code; only
    # the details tell them apart.
    if details.startswith(_CONNECT_FAILED):
        return DaemonUnavailable(where)
    # The connection dropped mid-call, or the daemon is shutting down.
    return DaemonUnavailable(where, details)
