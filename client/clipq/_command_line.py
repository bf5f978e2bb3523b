"""How clipq reads its command line into a command and checked options.

What each command does lives in clipq._search_command and clipq._library_commands, which
clipq.cli imports only for the command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from clipq._arguments import options_then_words, split_command
from clipq._parsers import COMMANDS, PARSERS, search_parser
from clipq._query import QueryError, query_terms


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command and options that argv names; args.command is the command's name.

    A usage error prints the command's usage and exits with EXIT_USAGE, as argparse does.
    """
    search = search_parser()  # it knows every option that takes a value
    command, rest = split_command(list(argv), COMMANDS, search)
    parser = search if command == "search" else PARSERS[command]()
    if command != "search":
        # Intermixed, so that options may come between words: `clipq reindex a -w b`.
        args = parser.parse_intermixed_args(rest)
        if command == "reindex" and args.address is None:
            _note_missing(args.paths)
        args.command = command
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
    args.command = command
    return args


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
