"""The clipq command: search the images a clipd daemon has indexed, by what they show.

The first word may name another command instead: `clipq status`, `clipq failures` and
`clipq reindex` check on the daemon and ask it to rescan; `clipq search` searches explicitly.
This module runs one: it reads the command line (clipq._command_line), connects, runs the
command's code, and turns errors into one line and an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import cast

from clipd_api.paths import TOKEN_FILE_ENV
from clipq._client import Client, read_token
from clipq._command_line import parse
from clipq._errors import (
    ClipqError,
    DaemonStarting,
    DaemonUnavailable,
    NothingIndexed,
    TimedOut,
    Unauthenticated,
)
from clipq._parsers import (
    EXIT_BROKEN_PIPE,
    EXIT_DAEMON_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_NOTHING_INDEXED,
    EXIT_OK,
    EXIT_STARTING,
)

_Runner = Callable[[Client, argparse.Namespace], None]

# Where each command's code lives: imported only when that command runs, so that no command
# pays at start-up for another's (the search command's output code, say, for `clipq status`).
_RUNNERS = {
    "search": ("clipq._search_command", "search"),
    "status": ("clipq._library_commands", "status"),
    "failures": ("clipq._library_commands", "failures"),
    "reindex": ("clipq._library_commands", "reindex"),
    "duplicates": ("clipq._library_commands", "duplicates"),
    "web": ("clipq._library_commands", "web"),
    "completion": ("clipq._library_commands", "completion"),
}


def main(argv: list[str] | None = None) -> int:
    """Run clipq with `argv` (default: sys.argv[1:]) and return its exit status."""
    args = parse(sys.argv[1:] if argv is None else argv)
    run = _runner(args.command)
    try:
        with _connect(args) as client:
            _run_when_ready(client, args, run)
        # Flush here, so that a closed pipe raises inside this handler rather than at exit.
        sys.stdout.flush()
    except ClipqError as error:
        return _fail(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK


def _runner(command: str) -> _Runner:
    module, name = _RUNNERS[command]
    return cast(_Runner, getattr(importlib.import_module(module), name))


def _run_when_ready(client: Client, args: argparse.Namespace, run: _Runner) -> None:
    """Run the command; with --wait-ready, or for a person at a terminal, once it can work.

    --wait-ready waits first, also for a daemon that does not answer yet. At a terminal a
    command refused because the model is loading waits for it and runs again (nothing was done
    the first time); scripts get exit 4 at once unless they ask to wait.
    """
    if args.wait_ready:
        client.wait_until_ready(args.timeout)
        run(client, args)
        return
    try:
        run(client, args)
    except DaemonStarting:
        if not sys.stderr.isatty():
            raise
        print(
            f"clipq: clipd is loading its model; waiting up to {args.timeout:g} s "
            "(--timeout; Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        client.wait_until_ready(args.timeout)
        run(client, args)


def _connect(args: argparse.Namespace) -> Client:
    if args.address is None:
        return Client(args.socket, timeout=args.timeout)
    # Without --token-file the Client reads the default token file, when there is one.
    token = read_token(args.token_file) if args.token_file else None
    return Client(target=args.address, token=token, timeout=args.timeout)


def _fail(error: ClipqError) -> int:
    # One line, even when the daemon's message has several.
    message = " ".join(str(error).split())
    print(f"clipq: {message}{_what_to_do(error)}", file=sys.stderr)
    if isinstance(error, DaemonUnavailable):
        return EXIT_NO_DAEMON
    if isinstance(error, DaemonStarting):
        return EXIT_STARTING
    if isinstance(error, NothingIndexed):
        return EXIT_NOTHING_INDEXED
    return EXIT_DAEMON_ERROR


def _what_to_do(error: ClipqError) -> str:
    """The command's own advice for errors whose fix is one of its options."""
    if isinstance(error, TimedOut) or (isinstance(error, DaemonStarting) and error.waited):
        return "; allow it longer with --timeout SECONDS"
    if isinstance(error, Unauthenticated) and error.token_file is not None:
        return (
            "; name the token file the daemon wrote (its token_file setting) with --token-file "
            f"or ${TOKEN_FILE_ENV}"
        )
    return ""


def _silence_stdout() -> None:
    # The reader is gone. Python flushes stdout once more at exit, which would fail again and
    # print a warning; pointing the descriptor at /dev/null makes that flush harmless.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
