"""The clipq command: search the images a clipd daemon has indexed, by what they show."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn

from clipd_api.paths import SOCKET_ENV, default_socket_path
from clipq._client import Client, SearchResult
from clipq._errors import ClipqError, DaemonStarting, DaemonUnavailable

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_STARTING = 4
EXIT_INTERRUPTED = 130
# What a shell reports for a program killed by SIGPIPE (128 + 13), as `cat big | head` does.
EXIT_BROKEN_PIPE = 141

MAX_LIMIT = 1000

_EPILOG = f"""\
exit status:
  {EXIT_OK}    success, also when nothing matches
  {EXIT_DAEMON_ERROR}    the daemon refused or failed the request; the message says why
  {EXIT_USAGE}    usage error
  {EXIT_NO_DAEMON}    no daemon is running at the socket; start it with 'clipd serve'
  {EXIT_STARTING}    the daemon is still starting (loading its model); try again shortly
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_BROKEN_PIPE}  the reader closed the output early, e.g. 'clipq ... | head -1'
"""


def main(argv: list[str] | None = None) -> int:
    """Run clipq with `argv` (default: sys.argv[1:]) and return its exit status."""
    parser = _parser()
    # Intermixed, so that options may come between words: `clipq red -n 5 brick wall`.
    args = parser.parse_intermixed_args(argv)
    query = " ".join(args.query)
    if not query.strip():
        parser.error("the query is empty")
    try:
        with Client(args.socket, timeout=args.timeout) as client:
            result = client.search(query, limit=args.limit)
        _print_result(result, as_json=args.json)
    except ClipqError as error:
        return _fail(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipq",
        description="Search the images indexed by the clipd daemon by what they show.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "query",
        nargs="+",
        metavar="QUERY",
        help="words describing the image; they are joined into one text query",
    )
    parser.add_argument(
        "-n",
        "--limit",
        type=_limit,
        default=20,
        metavar="N",
        help=f"number of hits to show, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array of hits (path, score, width, height, size_bytes, mtime)",
    )
    # argparse %-formats help texts, so a '%' in the path must be doubled.
    socket_default = str(default_socket_path()).replace("%", "%%")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"the daemon's Unix socket (default: {socket_default}; set ${SOCKET_ENV} to change)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on the daemon after this long (default: %(default)s)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    return parser


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # `value > 0` also rejects NaN.
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked.

    argparse's own version action wants the string up front, and importlib.metadata would
    then cost every run more time than the rest of clipq's startup.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("clipd")
        except PackageNotFoundError:
            # Run from a source tree that was never installed.
            installed = "unknown"
        # On stdout, like argparse's own version action (parser.exit would use stderr).
        print(f"clipq {installed}")
        parser.exit()


def _print_result(result: SearchResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(hit) for hit in result]))
    else:
        for hit in result:
            print(f"{hit.score:.3f}  {hit.path}")
        if result.partial:
            print("clipq: note: indexing in progress; results may be incomplete", file=sys.stderr)
    # Flush here, so that a closed pipe raises inside main's handler rather than at exit.
    sys.stdout.flush()


def _fail(error: ClipqError) -> int:
    # One line, even when the daemon's message has several.
    message = " ".join(str(error).split())
    print(f"clipq: {message}", file=sys.stderr)
    if isinstance(error, DaemonUnavailable):
        return EXIT_NO_DAEMON
    if isinstance(error, DaemonStarting):
        return EXIT_STARTING
    return EXIT_DAEMON_ERROR


def _silence_stdout() -> None:
    # The reader is gone. Python flushes stdout once more at exit, which would fail again and
    # print a warning; pointing the descriptor at /dev/null makes that flush harmless.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
