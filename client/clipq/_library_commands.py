"""The clipq commands that look after the library: status, failures, reindex, duplicates, web
and completion."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import closing
from dataclasses import asdict

from clipq._client import Client, Status, read_token
from clipq._daemon_config import token_path
from clipq._errors import ClipqError, DaemonUnavailable
from clipq._format import (
    duplicate_lines,
    failure_lines,
    progress_line,
    reindex_line,
    status_lines,
)
from clipq._parsers import PARSERS

# States after which the live progress line is finished with a newline.
_RESTING_STATES = ("idle", "stopping")


def status(client: Client, args: argparse.Namespace) -> None:
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


def failures(client: Client, args: argparse.Namespace) -> None:
    page = client.failures(limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps([asdict(failure) for failure in page]))
        return
    for line in failure_lines(page.failures):
        print(line)
    _note_more_pages(len(page), page.total, args.offset, "failures")


def _note_more_pages(shown: int, total: int, offset: int, noun: str) -> None:
    """Say on stderr how to see the rest when a page of `noun` is not the last."""
    shown_to = offset + shown
    if shown and shown_to < total:
        print(
            f"clipq: note: {shown} of {total} {noun} shown; --offset {shown_to} shows more",
            file=sys.stderr,
        )


def reindex(client: Client, args: argparse.Namespace) -> None:
    result = client.reindex(*args.paths, wait=args.wait)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(reindex_line(result, waited=args.wait))


def duplicates(client: Client, args: argparse.Namespace) -> None:
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
    _note_more_pages(len(page), page.total, args.offset, "groups")
    if page.unchecked:
        print(
            f"clipq: note: {page.unchecked} files were indexed before clipd compared pixels; "
            "until it has caught up (in the background), they are found only as exact copies",
            file=sys.stderr,
        )


def web(client: Client, args: argparse.Namespace) -> None:
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


def completion(client: Client, args: argparse.Namespace) -> None:
    # Imported here, so that no other command pays for it; the daemon is never called.
    from clipq._completion import script

    parsers = {name: make() for name, make in PARSERS.items()}
    sys.stdout.write(script(args.shell, parsers, default_command="search"))
