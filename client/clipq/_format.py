"""How the clipq command shows statuses, failures and rescans to a person."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from clipq._client import DuplicateGroup, Failure, ReindexResult, Status

# Width of the bar in the live progress line.
_BAR_WIDTH = 20


def status_lines(status: Status, now: float) -> list[str]:
    """`key: value` lines, values aligned, for `clipq status`; `now` is the current epoch time."""
    indexing = status.state == "indexing"
    # 0 is the daemon's "not known yet" (just started) as well as "at rest".
    rate = status.images_per_second if indexing else 0.0
    fields = [
        ("state", status.state),
        ("indexed", str(status.indexed)),
        ("queued", str(status.queued)),
        ("failed", str(status.failed)),
        ("offline", str(status.offline)),
        ("rate", f"{rate:.1f} images/s" if rate > 0 else "-"),
        ("ETA", duration(status.eta_seconds) if indexing and status.eta_seconds else "-"),
        ("model", f"{status.model} / {status.pretrained}"),
        ("device", status.device or "-"),
        ("database", f"{status.database} ({size(status.database_bytes)})"),
        ("roots", "\n".join(status.roots) or "-"),
        ("web", status.web_url or "off"),
        *([("problem", status.problem)] if status.problem else []),
        ("version", status.version),
        ("uptime", duration(now - status.started_at) if status.started_at else "-"),
    ]
    width = max(len(key) for key, _ in fields) + 2
    lines = []
    for key, value in fields:
        # A value of several lines (the roots) continues in the value column.
        first, *rest = value.split("\n")
        lines.append(f"{key + ':':<{width}}{first}")
        lines.extend(" " * width + more for more in rest)
    return lines


def progress_line(status: Status, *, bar: bool) -> str:
    """One line of `clipq status --watch`, e.g. `indexing  1234/5000 [####....] 24.6 img/s`.

    done is status.indexed and total indexed + queued; bar adds a progress bar. The rate and
    ETA are shown only while indexing.
    """
    total = status.indexed + status.queued
    parts = [f"{status.state:<8}  {status.indexed}/{total}"]
    if bar:
        filled = round(_BAR_WIDTH * status.indexed / total) if total else _BAR_WIDTH
        parts.append(f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}]")
    if status.state == "indexing" and status.images_per_second > 0:
        parts.append(f"{status.images_per_second:.1f} img/s")
        if status.eta_seconds:
            parts.append(f"ETA {duration(status.eta_seconds)}")
    return " ".join(parts)


def failure_lines(failures: tuple[Failure, ...]) -> list[str]:
    """`when  error  path: message` lines; when is local time, errors padded to one width."""
    width = max((len(f.error) for f in failures), default=0)
    return [
        f"{when(f.last_seen)}  {f.error:<{width}}  {f.path}: {' '.join(f.message.split())}"
        for f in failures
    ]


def duplicate_lines(groups: tuple[DuplicateGroup, ...], *, width: int | None) -> list[str]:
    """A block per group: `TIER  N files`, then a line per file, best kept first:
    `  SCORE  WIDTHxHEIGHT  SIZE  MODIFIED  PATH`; a blank line between blocks."""
    lines: list[str] = []
    for group in groups:
        if lines:
            lines.append("")
        lines.append(f"{group.tier}  {len(group.files)} files")
        rows = [
            (f"{h.score:.3f}", f"{h.width}x{h.height}", size(h.size_bytes), when(h.mtime), h.path)
            for h in group.files
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for *columns, path in rows:
            start = "  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
            room = None if width is None else max(1, width - len(start) - 2)
            lines.append(f"{start}  {path if room is None else shorten_path(path, room)}")
    return lines


def reindex_line(result: ReindexResult, *, waited: bool) -> str:
    """What a rescan did, or, when not waited for, that it was asked for.

    The daemon answers a rescan not waited for before it runs, so there are no counts yet.
    """
    if waited:
        return (
            f"queued {result.queued}, indexed {result.indexed}, failed {result.failed}, "
            f"removed {result.removed}"
        )
    return "rescan requested; follow it with 'clipq status --watch'"


def duration(seconds: float) -> str:
    """Seconds for a person: `45s`, `3m12s`, `2h05m`, `3d04h`."""
    secs = max(0, round(seconds))
    minutes, secs = divmod(secs, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def size(num_bytes: int) -> str:
    """Bytes for a person, in powers of 1000: `512 B`, `12.3 MB`."""
    if num_bytes < 1000:
        return f"{num_bytes} B"
    value = float(num_bytes)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def when(epoch_seconds: float) -> str:
    """An epoch time as local `YYYY-MM-DD HH:MM`."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch_seconds))


# Search hits

_ELLIPSIS = "…"
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
# Scores are coloured by how good a CLIP match they usually are: green, yellow, plain.
_GOOD_SCORE, _FAIR_SCORE = 0.30, 0.22
_GREEN, _YELLOW = "\x1b[32m", "\x1b[33m"


def hit_line(score: float, path: str, *, colour: bool = False) -> str:
    """`0.312  /pics/beach.jpg`; with colour the score is coloured by quality, the folder dimmed
    and the file name bold."""
    score_text = f"{score:.3f}"
    if not colour:
        return f"{score_text}  {path}"
    folder, slash, name = path.rpartition("/")
    tint = _GREEN if score >= _GOOD_SCORE else _YELLOW if score >= _FAIR_SCORE else ""
    score_text = f"{tint}{score_text}{_RESET}" if tint else score_text
    return f"{score_text}  {_DIM}{folder}{slash}{_RESET}{_BOLD}{name}{_RESET}"


def score_width(scores: Sequence[float]) -> int:
    """The columns hit_line gives the score and the gap after it."""
    return max((len(f"{score:.3f}") for score in scores), default=0) + 2


def fit_paths(paths: Sequence[str], width: int) -> list[str]:
    """The paths, each shortened to width columns where longer, to be listed together.

    What the paths share tells them apart least, so the folders common to all of them are
    elided first (from their end, keeping where they start); only a path still too long loses
    the middle of what follows, keeping its file name.
    """
    # The rest starts at the shared folder's last '/', so that '…/italy/a.jpg' shows a boundary.
    common = max(len(_common_folder(paths)) - 1, 0)
    return [_fit(path, width, common) for path in paths]


def _common_folder(paths: Sequence[str]) -> str:
    """The folder all paths are in, with its final '/'; "" when there is none to elide."""
    try:
        common = os.path.commonpath([path.rpartition("/")[0] or "/" for path in paths])
    except ValueError:  # no paths, or absolute and relative ones mixed
        return ""
    common = common.rstrip("/") + "/"
    # commonpath normalises ('//' to '/'); elide only a prefix the paths really share.
    return common if all(path.startswith(common) for path in paths) else ""


def _fit(path: str, width: int, common: int) -> str:
    if len(path) <= width:
        return path
    rest = path[common:]
    if not common:
        return shorten_path(path, width)
    if len(rest) < width:
        return path[: width - 1 - len(rest)] + _ELLIPSIS + rest
    # All of the common part goes, then the middle of the rest; at the narrowest, only its end
    # stays (one ellipsis, never two in a row).
    fitted = shorten_path(rest, width - 1)
    if fitted.startswith(_ELLIPSIS):
        fitted = rest[len(rest) - (width - 1) :] if width > 1 else ""
    return _ELLIPSIS[: max(width, 0)] + fitted


def shorten_path(path: str, width: int) -> str:
    """path, or when longer than width, its start and its end around an ellipsis.

    The end (the file name) is kept whole when it fits, since it tells hits apart best.
    """
    if len(path) <= width:
        return path
    if width <= 1:
        return _ELLIPSIS[: max(width, 0)]
    name = path[path.rfind("/") :] if "/" in path else path
    tail = len(name) if len(name) < width - 1 else width - 1
    head = width - 1 - tail
    return path[:head] + _ELLIPSIS + path[len(path) - tail :]
