"""clipq's commands, their options and help texts, and the exit statuses the help lists.

Completion scripts are made from these parsers too (clipq._completion), so an option added here
completes in every shell.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from clipd_api.paths import ADDRESS_ENV, CONFIG_ENV, SOCKET_ENV, TOKEN_FILE_ENV
from clipq._arguments import (
    MAX_LIMIT,
    extensions,
    limit,
    offset,
    score,
    seconds,
    threshold,
    when,
)
from clipq._client import DUPLICATE_TIERS
from clipq._daemon_config import socket_path, token_path
from clipq._open import OPENER_ENV
from clipq._query import WHEN_HELP

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


def _new_parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"clipq {command}",
        description=description,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def search_parser() -> argparse.ArgumentParser:
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
    group.add_argument(
        "--exact",
        action="store_true",
        help="compare every file that passes the filters instead of searching a shared "
        "index's approximate one (slower on a big PostgreSQL index; SQLite is always exact)",
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
    return parser


# Completion scripts are generated from these parsers (see clipq._completion): an option whose
# metavar is PATH, FILE or IMAGE completes file names, DIR directory names, choices their values.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "search": search_parser,
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
