"""The clipq command: search the images a clipd daemon has indexed, by what they show.

The first word may name another command instead: `clipq status`, `clipq failures` and
`clipq reindex` check on the daemon and ask it to rescan; `clipq search` searches explicitly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict
from typing import Any, NoReturn

from clipd_api.paths import SOCKET_ENV, default_socket_path
from clipq._client import Client, SearchResult, Status
from clipq._errors import ClipqError, DaemonStarting, DaemonUnavailable
from clipq._format import failure_lines, progress_line, reindex_line, status_lines

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_STARTING = 4
EXIT_INTERRUPTED = 130
# What a shell reports for a program killed by SIGPIPE (128 + 13), as `cat big | head` does.
EXIT_BROKEN_PIPE = 141

MAX_LIMIT = 1000
MAX_OFFSET = 2**32 - 1

COMMANDS = ("search", "status", "failures", "reindex", "completion")
# The options of any command that take a value, so that peeking for the command skips values.
_VALUE_OPTIONS = ("-n", "--limit", "--offset", "--socket", "--timeout")

_USAGE = """\
clipq [-n N] [--json] [--socket PATH] [--timeout SECONDS] QUERY...
       clipq status [--json] [--watch] [--until-idle]
       clipq failures [--json] [-n N] [--offset K]
       clipq reindex [--wait] [--json] [PATH...]
       clipq completion {bash,zsh,fish}"""

_COMMANDS_HELP = """\
commands (the first word; any other word starts a search):
  QUERY...           search for images showing this, e.g. 'clipq red brick wall'
  search QUERY...    the same; 'clipq search status' or 'clipq -- status' searches for
                     a word that names a command
  status             the daemon's state, counts, model and database; --watch follows it
  failures           files that could not be indexed, and why
  reindex [PATH...]  rescan files or folders (default: every root)
  completion SHELL   print the completion script for bash, zsh or fish
'clipq COMMAND --help' describes a command's options.

"""

_EPILOG = f"""\
exit status:
  {EXIT_OK}    success, also when nothing matches
  {EXIT_DAEMON_ERROR}    the daemon refused or failed the request; the message says why
  {EXIT_USAGE}    usage error
  {EXIT_NO_DAEMON}    no daemon is running at the socket, or it stopped during
       'status --until-idle'; start it with 'clipd serve'
  {EXIT_STARTING}    the daemon is still starting (loading its model); try again shortly
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_BROKEN_PIPE}  the reader closed the output early, e.g. 'clipq ... | head -1'
"""

# States after which the live progress line is finished with a newline.
_RESTING_STATES = ("idle", "stopping")

_Runner = Callable[[Client, argparse.Namespace], None]


def main(argv: list[str] | None = None) -> int:
    """Run clipq with `argv` (default: sys.argv[1:]) and return its exit status."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    run: _Runner = args.run
    try:
        with Client(args.socket, timeout=args.timeout) as client:
            run(client, args)
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


# Command line


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    command, rest = _split_command(list(argv))
    parser = _PARSERS[command]()
    # Intermixed, so that options may come between words: `clipq red -n 5 brick wall`.
    args = parser.parse_intermixed_args(rest)
    if command == "search":
        args.query = " ".join(args.query)
        if not args.query.strip():
            parser.error("the query is empty")
    return args


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command that the first word of argv names, and argv without it; else "search".

    Options before that word are skipped with their values (`clipq --socket S status`); after
    `--`, every word is a search word (`clipq -- status`).
    """
    skip_value = False
    for index, arg in enumerate(argv):
        if skip_value:
            skip_value = False
        elif arg == "--":
            break
        elif arg.startswith("-") and arg != "-":
            skip_value = _takes_value(arg)
        else:
            if arg in COMMANDS:
                return arg, argv[:index] + argv[index + 1 :]
            break
    return "search", argv


def _takes_value(option: str) -> bool:
    if "=" in option:
        return False
    if option.startswith("--"):
        # argparse also accepts an unambiguous prefix of a long option: `--sock PATH`.
        return any(name.startswith(option) for name in _VALUE_OPTIONS if name.startswith("--"))
    return option in _VALUE_OPTIONS


def _new_parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"clipq {command}",
        description=description,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipq",
        usage=_USAGE,
        description=(
            "Search the images indexed by the clipd daemon by what they show, or check on\n"
            "the daemon and ask it to rescan (see commands below)."
        ),
        epilog=_COMMANDS_HELP + _EPILOG,
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
    _add_connection_options(parser)
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.set_defaults(run=_search)
    return parser


def _status_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "status",
        "Show the daemon's state, counts, throughput, model, database and roots.\n"
        "--watch prints lines 'STATE  DONE/TOTAL RATE img/s ETA TIME' (on a terminal, one\n"
        "live line with a bar): DONE counts the files indexed, TOTAL adds those queued.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object of every status field; with --watch, one per line",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help=(
            "follow the status until Ctrl-C: a live progress line on a terminal, else one "
            "line per change"
        ),
    )
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="--watch, and exit once the daemon is idle with nothing queued",
    )
    _add_connection_options(parser)
    parser.set_defaults(run=_status)
    return parser


def _failures_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "failures",
        "List the files the daemon could not index, and why; they are retried when they\n"
        "change. Each line reads 'WHEN  ERROR  PATH: MESSAGE', WHEN being the last attempt\n"
        "in local time; a note on stderr says when there are more.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array of failures (path, error, message, attempts, last_seen)",
    )
    parser.add_argument(
        "-n",
        "--limit",
        type=_limit,
        default=100,
        metavar="N",
        help=f"number of failures to show, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    parser.add_argument(
        "--offset",
        type=_offset,
        default=0,
        metavar="K",
        help="skip the first K failures, for paging (default: %(default)s)",
    )
    _add_connection_options(parser)
    parser.set_defaults(run=_failures)
    return parser


def _reindex_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "reindex",
        "Ask the daemon to rescan files or folders: new and changed images are embedded,\n"
        "vanished ones removed. Returns at once, or with --wait once it is done, printing\n"
        "'queued N, indexed N, failed N, removed N'.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or folders to rescan (default: every root)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="return once the rescan and its embedding are done, however long (no --timeout)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (queued, removed, indexed, failed)",
    )
    _add_connection_options(parser)
    parser.set_defaults(run=_reindex)
    return parser


def _completion_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "completion",
        "Print the completion script for a shell, made from clipq's own options. Install it:\n"
        "  bash: clipq completion bash > ~/.local/share/bash-completion/completions/clipq\n"
        "  zsh:  clipq completion zsh > DIR/_clipq   (DIR: a directory in $fpath)\n"
        "  fish: clipq completion fish > ~/.config/fish/completions/clipq.fish",
    )
    parser.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    _add_connection_options(parser)
    parser.set_defaults(run=_completion)
    return parser


# Completion scripts are generated from these parsers (see clipq._completion): an option whose
# metavar is PATH, FILE or IMAGE completes file names, DIR directory names, choices their values.
_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "search": _search_parser,
    "status": _status_parser,
    "failures": _failures_parser,
    "reindex": _reindex_parser,
    "completion": _completion_parser,
}


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
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


def _limit(text: str) -> int:
    return _whole_number(text, 1, MAX_LIMIT)


def _offset(text: str) -> int:
    return _whole_number(text, 0, MAX_OFFSET)


def _whole_number(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
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


# Commands


def _search(client: Client, args: argparse.Namespace) -> None:
    result = client.search(args.query, limit=args.limit)
    _print_result(result, as_json=args.json)


def _print_result(result: SearchResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(hit) for hit in result]))
    else:
        for hit in result:
            print(f"{hit.score:.3f}  {hit.path}")
        if result.partial:
            print("clipq: note: indexing in progress; results may be incomplete", file=sys.stderr)


def _status(client: Client, args: argparse.Namespace) -> None:
    if args.watch or args.until_idle:
        _watch(client, as_json=args.json, until_idle=args.until_idle)
        return
    status = client.status()
    if args.json:
        print(json.dumps(asdict(status)))
    else:
        print("\n".join(status_lines(status, now=time.time())))


def _watch(client: Client, *, as_json: bool, until_idle: bool) -> None:
    feed = _StatusFeed(as_json=as_json, live=sys.stdout.isatty())
    with closing(client.watch_status()) as statuses:
        try:
            for status in statuses:
                feed.show(status)
                if until_idle and status.state == "idle" and status.queued == 0:
                    return
        finally:
            feed.end()
    if until_idle:
        raise DaemonUnavailable(client.where, "it stopped before the index was idle")


class _StatusFeed:
    """Prints the statuses of a watch: JSON Lines, plain lines, or one live line on a terminal.

    Human lines are printed only when they change (the daemon repeats itself as a heartbeat).
    The live line is redrawn in place, and finished with a newline once the daemon rests.
    """

    def __init__(self, *, as_json: bool, live: bool) -> None:
        self._as_json = as_json
        self._live = live
        self._last = ""
        self._line_open = False

    def show(self, status: Status) -> None:
        if self._as_json:
            print(json.dumps(asdict(status)), flush=True)
            return
        line = progress_line(status, bar=self._live)
        if line == self._last:
            return
        self._last = line
        if not self._live:
            print(line, flush=True)
            return
        resting = status.state in _RESTING_STATES
        # \r returns to the line's start, and \x1b[K erases what a longer line left there.
        sys.stdout.write(f"\r{line}\x1b[K" + ("\n" if resting else ""))
        sys.stdout.flush()
        self._line_open = not resting

    def end(self) -> None:
        """Finish an open live line, so that what follows starts on a line of its own."""
        if self._line_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._line_open = False


def _failures(client: Client, args: argparse.Namespace) -> None:
    page = client.failures(limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps([asdict(failure) for failure in page]))
        return
    for line in failure_lines(page.failures):
        print(line)
    shown_to = args.offset + len(page)
    if len(page) and shown_to < page.total:
        print(
            f"clipq: note: {len(page)} of {page.total} failures shown; "
            f"--offset {shown_to} shows more",
            file=sys.stderr,
        )


def _reindex(client: Client, args: argparse.Namespace) -> None:
    result = client.reindex(*args.paths, wait=args.wait)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(reindex_line(result, waited=args.wait))


def _completion(client: Client, args: argparse.Namespace) -> None:
    # Imported here, so that no other command pays for it; the daemon is never called.
    from clipq._completion import script

    parsers = {name: make() for name, make in _PARSERS.items()}
    sys.stdout.write(script(args.shell, parsers, default_command="search"))


# Errors


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
