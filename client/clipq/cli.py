"""The clipq command: search the images a clipd daemon has indexed, by what they show.

The first word may name another command instead: `clipq status`, `clipq failures` and
`clipq reindex` check on the daemon and ask it to rescan; `clipq search` searches explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict
from typing import Any, NoReturn

from clipd_api.paths import ADDRESS_ENV, CONFIG_ENV, SOCKET_ENV, TOKEN_FILE_ENV
from clipq._arguments import (
    MAX_LIMIT,
    extensions,
    limit,
    offset,
    options_then_words,
    score,
    seconds,
    split_command,
    threshold,
    when,
)
from clipq._client import DUPLICATE_TIERS, Client, Hit, SearchResult, Status, read_token
from clipq._daemon_config import socket_path, token_path
from clipq._errors import (
    ClipqError,
    DaemonStarting,
    DaemonUnavailable,
    PreviewUnsupported,
    TimedOut,
    Unauthenticated,
)
from clipq._format import (
    duplicate_lines,
    failure_lines,
    fit_paths,
    hit_line,
    progress_line,
    reindex_line,
    score_width,
    status_lines,
)
from clipq._open import OPENER_ENV, open_paths
from clipq._query import WHEN_HELP, QueryError, query_terms

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_STARTING = 4
EXIT_NOTHING_INDEXED = 5
EXIT_INTERRUPTED = 130
# What a shell reports for a program killed by SIGPIPE (128 + 13), as `cat big | head` does.
EXIT_BROKEN_PIPE = 141

COMMANDS = ("search", "status", "failures", "reindex", "duplicates", "web", "completion")

_USAGE = """\
clipq [OPTIONS] QUERY...  (e.g. clipq beach -people 2:sunset, clipq photo.jpg)
       clipq status [--json] [--watch] [--until-idle]
       clipq failures [--json] [-n N] [--offset K]
       clipq reindex [--wait] [--json] [PATH...]
       clipq duplicates [--threshold T] [--under DIR] [--tier TIER] [--json]
       clipq web [--print]
       clipq completion {bash,zsh,fish}"""

_QUERY_HELP = """\
query:
  Plain words form one text: 'clipq red brick wall'. +TEXT and -TEXT add or subtract a
  term of their own, W:TERM weights one ('clipq beach -people 2:sunset'); quote a term of
  several words ('-"parked cars"'). A word that looks like a path (it has a '/' or an
  image extension such as .jpg) names an image to search by example, and is an error if it
  names none; other words are always text ('./photo' names a file called photo, and
  --text 'AC/DC' searches a text with a '/'). Text and images combine:
  'clipq photo.jpg -0.5:night'. A -WORD that is also an option (-n, -h) is the option;
  write -1:WORD to subtract that word.

"""

_COMMANDS_HELP = """\
commands (the first word; any other word starts a search):
  QUERY...           search for images showing this, e.g. 'clipq red brick wall'
  search QUERY...    the same; 'clipq search status' or 'clipq -- status' searches for
                     a word that names a command
  status             the daemon's state, counts, model and database; --watch follows it
  failures           files that could not be indexed, and why
  reindex [PATH...]  rescan files or folders (default: every root)
  duplicates         groups of copies and near-copies of the same picture
  web                open the web app in your browser, signed in (--print: the URL)
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
  {EXIT_STARTING}    the daemon is still starting (loading its model); try again shortly,
       or wait for it with --wait-ready
  {EXIT_NOTHING_INDEXED}    a search found nothing because nothing is searchable: nothing is
       indexed yet, or every root is offline
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
        with _connect(args) as client:
            _run_when_ready(client, args, run)
        # Flush here, so that a closed pipe raises inside this handler rather than at exit.
        sys.stdout.flush()
    except ClipqError as error:
        return _fail(error)
    except _NothingIndexed as nothing:
        print(f"clipq: {nothing}", file=sys.stderr)
        return EXIT_NOTHING_INDEXED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK


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


class _NothingIndexed(Exception):
    """A search came back empty because the daemon has no searchable file at all.

    offline counts the indexed files on roots that are not there now (an unmounted disk).
    """

    def __init__(self, offline: int) -> None:
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


def _connect(args: argparse.Namespace) -> Client:
    if args.address is None:
        return Client(args.socket, timeout=args.timeout)
    # Without --token-file the Client reads the default token file, when there is one.
    token = read_token(args.token_file) if args.token_file else None
    return Client(target=args.address, token=token, timeout=args.timeout)


# Command line


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    search = _search_parser()  # it knows every option that takes a value
    command, rest = split_command(list(argv), COMMANDS, search)
    parser = search if command == "search" else _PARSERS[command]()
    if command != "search":
        # Intermixed, so that options may come between words: `clipq reindex a -w b`.
        args = parser.parse_intermixed_args(rest)
        if command == "reindex" and args.address is None:
            _note_missing(args.paths)
        return args
    args = parser.parse_args(options_then_words(parser, rest))
    try:
        args.terms = query_terms(args.query, args.image, args.text)
    except QueryError as error:
        parser.error(str(error))
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser.error("--since must be earlier than --until")
    if args.address is None:
        # The daemon behind the socket shares this file system; over TCP paths are its own.
        for folder in args.under:
            if not os.path.exists(os.path.expanduser(folder)):
                parser.error(f"--under {folder}: no such file or folder")
    if args.output == "preview":
        # Imported here: only --preview pays for the terminal code.
        from clipq._preview import graphics_setting

        try:
            graphics_setting(os.environ)
        except ValueError as error:
            parser.error(str(error))
    return args


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
        epilog=_QUERY_HELP + _COMMANDS_HELP + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "query",
        nargs="*",
        metavar="QUERY",
        help="words describing the image, terms (+TEXT, -TEXT, W:TERM) and image files",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image file to search by example, whatever its name (repeatable)",
    )
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="text to search for, never read as a file name, e.g. --text 'AC/DC' (repeatable)",
    )
    _add_filter_options(parser.add_argument_group("filters and paging"))
    _add_output_options(parser.add_argument_group("output"))
    _add_connection_options(parser)
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.set_defaults(run=_search)
    return parser


def _add_paging_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    noun: str,
    *,
    default_limit: int = 100,
    skipped: str = "",
) -> None:
    """-n/--limit and --offset, alike for every command that lists pages of something."""
    parser.add_argument(
        "-n",
        "--limit",
        type=limit,
        default=default_limit,
        metavar="N",
        help=f"number of {noun} to show, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    parser.add_argument(
        "--offset",
        type=offset,
        default=0,
        metavar="K",
        help=f"skip {skipped or 'the first K ' + noun}, for paging (default: %(default)s)",
    )


def _add_filter_options(group: argparse._ArgumentGroup) -> None:
    _add_paging_options(group, "hits", default_limit=20, skipped="the K best hits")
    group.add_argument(
        "--min-score",
        type=score,
        metavar="S",
        help="drop hits whose cosine score is below S, -1 to 1 (CLIP matches are often 0.2-0.35)",
    )
    group.add_argument(
        "--under",
        action="append",
        default=[],
        metavar="DIR",
        help="only files at or below this folder (repeatable)",
    )
    group.add_argument(
        "--ext",
        action="append",
        default=[],
        type=extensions,
        metavar="EXT",
        help="only files with this extension, e.g. jpg or jpg,png (repeatable)",
    )
    group.add_argument(
        "--since",
        type=when,
        metavar="WHEN",
        help="only photos taken at or after WHEN (files without a capture time: modified): "
        + WHEN_HELP,
    )
    group.add_argument("--until", type=when, metavar="WHEN", help="only photos taken before WHEN")
    group.add_argument(
        "--mtime",
        action="store_true",
        help="--since/--until compare the file's modification time, not the capture time",
    )
    group.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="only files of this machine, in an index several machines share (repeatable)",
    )


def _add_output_options(group: argparse._ArgumentGroup) -> None:
    formats = group.add_mutually_exclusive_group()
    formats.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default="lines",
        help="print one JSON array of hits (path, score, width, height, size_bytes, mtime, "
        "taken, paired, partial)",
    )
    formats.add_argument(
        "--jsonl", dest="output", action="store_const", const="jsonl", help="one JSON hit per line"
    )
    formats.add_argument(
        "--paths",
        dest="output",
        action="store_const",
        const="paths",
        help="only paths, one per line",
    )
    formats.add_argument(
        "-0",
        "--print0",
        dest="output",
        action="store_const",
        const="print0",
        help="only paths, each ended by a NUL byte, for 'xargs -0'",
    )
    formats.add_argument(
        "--preview",
        dest="output",
        action="store_const",
        const="preview",
        help=(
            "show thumbnails inline on terminals that can (kitty, iTerm2, WezTerm, Ghostty, "
            "sixel); $CLIPQ_GRAPHICS=kitty|iterm2|sixel|none overrides the detection"
        ),
    )
    group.add_argument(
        "--open",
        action="store_true",
        help=f"also open the hits in the image viewer (xdg-open, macOS open, or ${OPENER_ENV})",
    )
    group.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the score and file name: auto means on a terminal unless NO_COLOR is set",
    )


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
    _add_paging_options(parser, "failures")
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


def _duplicates_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "duplicates",
        "List groups of near-identical images, each under its tier, best kept first (RAW,\n"
        "then most pixels, most bytes, oldest). Only a report: no file is deleted or moved.\n"
        "Tiers: exact (the same bytes); reencoded (the same picture re-encoded, resized or\n"
        "lightly edited: the pixels match); variant (close variants such as bursts and small\n"
        "crops: CLIP close and the pixels alike). CLIP alone never groups two files.\n"
        "Each group reads 'TIER  N files', then 'SCORE  WxH  SIZE  MODIFIED  PATH' lines,\n"
        "SCORE being the CLIP cosine with the group's first file.",
    )
    parser.add_argument(
        "--threshold",
        type=threshold,
        metavar="T",
        help=(
            "the lowest CLIP cosine at which two images are compared, 0.5 to 1 (default: 0.9); "
            "lower finds looser variants, higher only the closest copies"
        ),
    )
    parser.add_argument(
        "--under",
        action="append",
        default=[],
        metavar="DIR",
        help="only files at or below this folder (repeatable)",
    )
    parser.add_argument(
        "--tier",
        choices=DUPLICATE_TIERS,
        default="variant",
        help=(
            "the loosest tier to group by: exact lists only identical files, reencoded adds "
            "re-encodes and resizes, variant (default) adds close variants"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            "print one JSON array of groups, each {tier, files}, files being hit objects "
            "(path, score, width, height, size_bytes, mtime, taken, paired)"
        ),
    )
    _add_paging_options(parser, "groups")
    _add_connection_options(parser)
    parser.set_defaults(run=_duplicates)
    return parser


def _web_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        "web",
        "Open the daemon's web app in your browser, signed in: the URL carries your token\n"
        "once, and the page trades it for a cookie and drops it from the address bar.",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_url",
        help="print the URL, with the token, instead of opening a browser",
    )
    _add_connection_options(parser)
    parser.set_defaults(run=_web)
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
    "duplicates": _duplicates_parser,
    "web": _web_parser,
    "completion": _completion_parser,
}


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    # argparse %-formats help texts, so a '%' in a path must be doubled.
    socket_default = str(socket_path()).replace("%", "%%")
    token_default = str(token_path()).replace("%", "%%")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--socket",
        metavar="PATH",
        help=(
            f"the daemon's Unix socket (default: {socket_default}, from ${SOCKET_ENV}, else "
            f"the 'socket' of the daemon's config file ${CONFIG_ENV}, else the built-in path)"
        ),
    )
    where.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=os.environ.get(ADDRESS_ENV) or None,
        help=f"talk to a daemon over TCP instead (default: ${ADDRESS_ENV} when set)",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help=(
            f"the TCP token, written by the daemon (default: {token_default}, from "
            f"${TOKEN_FILE_ENV}, else the config's 'token_file', else the built-in path)"
        ),
    )
    group.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on the daemon after this long (default: %(default)s)",
    )
    group.add_argument(
        "--wait-ready",
        action="store_true",
        help=(
            "first wait, up to --timeout, until the daemon answers and has loaded its model "
            "(at a terminal clipq waits for a loading model anyway)"
        ),
    )


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


def _time_window(args: argparse.Namespace) -> dict[str, float | None]:
    """The search arguments for --since/--until: capture times, or with --mtime file times."""
    kind = "modified" if args.mtime else "taken"
    return {f"{kind}_after": args.since, f"{kind}_before": args.until}


def _search(client: Client, args: argparse.Namespace) -> None:
    result = client.search(
        *args.terms,
        limit=args.limit,
        offset=args.offset,
        min_score=args.min_score,
        under=args.under,
        extensions=[ext for group in args.ext for ext in group],
        hosts=args.host,
        **_time_window(args),
    )
    if args.output == "preview":
        _preview(client, result, colour=_use_colour(args.color))
    else:
        _print_hits(result, args.output, colour=_use_colour(args.color))
    if args.open and result.hits:
        # Flushed first, so that the listing is complete before any viewer appears.
        sys.stdout.flush()
        open_paths([hit.path for hit in result if result.is_here(hit)])
    if result.partial:
        # Machine outputs carry it too (each hit's "partial"), but an empty list cannot.
        print("clipq: note: indexing in progress; results may be incomplete", file=sys.stderr)
    if result.nothing_indexed:
        # Only on this path: the status says whether the files are there but offline.
        raise _NothingIndexed(client.status().offline)
    if not result.hits and sys.stdout.isatty():
        print(f"clipq: no matches{_narrowed_by(args)}", file=sys.stderr)


def _narrowed_by(args: argparse.Namespace) -> str:
    """' with --under, --since' for the options that narrowed a search, else ''."""
    used = [
        option
        for option, value in (
            ("--offset", args.offset),
            ("--min-score", args.min_score is not None),
            ("--under", args.under),
            ("--ext", args.ext),
            ("--since", args.since is not None),
            ("--until", args.until is not None),
            ("--host", args.host),
        )
        if value
    ]
    return f" with {', '.join(used)}" if used else ""


def _preview(client: Client, result: SearchResult, *, colour: bool) -> None:
    # Imported here: only --preview pays for the terminal probing code.
    from clipq._preview import detect_graphics, graphics_setting, preview_hits

    try:
        if not (graphics_setting(os.environ) or sys.stdout.isatty()):
            raise PreviewUnsupported("the output is not a terminal")
        graphics = detect_graphics(os.environ)
    except PreviewUnsupported as error:
        print(f"clipq: {error}; listing the hits instead", file=sys.stderr)
        _print_hits(result, "lines", colour=colour)
        return
    sys.stdout.flush()
    preview_hits(
        client,
        result.hits,
        sys.stdout.buffer,
        graphics,
        caption=lambda hit: hit_line(hit.score, result.shown_path(hit), colour=colour),
    )


def _print_hits(result: SearchResult, output: str, *, colour: bool) -> None:
    if output == "json":
        print(json.dumps([_hit_object(hit, result) for hit in result]))
    elif output == "jsonl":
        for hit in result:
            print(json.dumps(_hit_object(hit, result)))
    elif output in ("paths", "print0"):
        end = "\0" if output == "print0" else "\n"
        sys.stdout.write("".join(result.shown_path(hit) + end for hit in result))
    else:
        paths = [result.shown_path(hit) for hit in result]
        if sys.stdout.isatty():
            scores = score_width([hit.score for hit in result])
            paths = fit_paths(paths, shutil.get_terminal_size().columns - scores)
        for hit, path in zip(result, paths, strict=True):
            print(hit_line(hit.score, path, colour=colour))


def _hit_object(hit: Hit, result: SearchResult) -> dict[str, Any]:
    # partial belongs to the whole result; each hit carries it so that --json stays an array.
    return {**asdict(hit), "partial": result.partial}


def _use_colour(when: str) -> bool:
    if when != "auto":
        return when == "always"
    # https://no-color.org: any non-empty NO_COLOR turns colour off.
    return (
        sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )


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


def _note_missing(paths: Sequence[str]) -> None:
    """Say which rescan paths are not there (on this machine, which the socket's daemon shares).

    They are still sent: rescanning a vanished path is how its entries leave the index.
    """
    for path in paths:
        if not os.path.lexists(os.path.expanduser(path)):
            print(
                f"clipq: note: {path} does not exist; the rescan only drops what the index "
                "holds there",
                file=sys.stderr,
            )


def _reindex(client: Client, args: argparse.Namespace) -> None:
    result = client.reindex(*args.paths, wait=args.wait)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(reindex_line(result, waited=args.wait))


def _duplicates(client: Client, args: argparse.Namespace) -> None:
    page = client.duplicates(
        threshold=args.threshold,
        under=args.under,
        tier=args.tier,
        limit=args.limit,
        offset=args.offset,
    )
    if args.json:
        print(json.dumps([asdict(group) for group in page]))
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for line in duplicate_lines(page.groups, width=width):
            print(line)
    shown_to = args.offset + len(page)
    if len(page) and shown_to < page.total:
        print(
            f"clipq: note: {len(page)} of {page.total} groups shown; "
            f"--offset {shown_to} shows more",
            file=sys.stderr,
        )
    if page.unchecked:
        print(
            f"clipq: note: {page.unchecked} files were indexed before clipd compared pixels; "
            "until it has caught up (in the background), they are found only as exact copies",
            file=sys.stderr,
        )


def _web(client: Client, args: argparse.Namespace) -> None:
    url = client.status().web_url
    if not url:
        raise ClipqError(
            "the daemon's web app is off; set `web` in its config (e.g. web: 127.0.0.1:8765, "
            "or remove `web: off`) and restart it"
        )
    from urllib.parse import urlencode

    token = read_token(args.token_file or token_path())
    signed_in = f"{url}?{urlencode({'token': token})}"
    if args.print_url:
        print(signed_in)
        return
    import webbrowser  # only this command pays for it

    if webbrowser.open(signed_in):
        print(f"clipq: opened {url} in your browser", file=sys.stderr)
    else:
        print("clipq: no browser could be started; open this URL:", file=sys.stderr)
        print(signed_in)


def _completion(client: Client, args: argparse.Namespace) -> None:
    # Imported here, so that no other command pays for it; the daemon is never called.
    from clipq._completion import script

    parsers = {name: make() for name, make in _PARSERS.items()}
    sys.stdout.write(script(args.shell, parsers, default_command="search"))


# Errors


def _fail(error: ClipqError) -> int:
    # One line, even when the daemon's message has several.
    message = " ".join(str(error).split())
    print(f"clipq: {message}{_what_to_do(error)}", file=sys.stderr)
    if isinstance(error, DaemonUnavailable):
        return EXIT_NO_DAEMON
    if isinstance(error, DaemonStarting):
        return EXIT_STARTING
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
