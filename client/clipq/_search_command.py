"""The clipq search command: ask the daemon, then print the hits as lines, JSON, paths or
thumbnails, and open them on request."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict
from typing import Any

from clipq._client import Client, Hit, SearchResult
from clipq._errors import NothingIndexed, PreviewUnsupported
from clipq._format import fit_paths, hit_line, score_width
from clipq._open import open_paths


def search(client: Client, args: argparse.Namespace) -> None:
    result = client.search(
        *args.terms,
        limit=args.limit,
        offset=args.offset,
        min_score=args.min_score,
        under=args.under,
        extensions=[ext for group in args.ext for ext in group],
        hosts=args.host,
        exact=args.exact,
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
        raise NothingIndexed(client.status().offline)
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


def _time_window(args: argparse.Namespace) -> dict[str, float | None]:
    """The search arguments for --since/--until: capture times, or with --mtime file times."""
    kind = "modified" if args.mtime else "taken"
    return {f"{kind}_after": args.since, f"{kind}_before": args.until}
