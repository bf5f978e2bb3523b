"""Hits as thumbnails inline in a terminal, over the kitty, iTerm2 or sixel graphics protocol.

The daemon renders the pictures (clipq never imports PIL); this module finds out which protocol
the terminal speaks and wraps each picture in that protocol's escape sequence.
"""

from __future__ import annotations

import base64
import os
import re
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable, Mapping
from typing import BinaryIO, Literal, TypeAlias

from clipq._client import Client, Hit, Thumbnail
from clipq._errors import BadRequest, NotFound, PreviewUnsupported

Graphics: TypeAlias = Literal["kitty", "iterm2", "sixel"]
GRAPHICS_ENV = "CLIPQ_GRAPHICS"
DEFAULT_SIDE = 256
# The values $CLIPQ_GRAPHICS may take.
_SETTINGS: dict[str, Graphics | None] = {
    "kitty": "kitty",
    "iterm2": "iterm2",
    "sixel": "sixel",
    "none": None,
}

# The kitty protocol takes base64 payloads in pieces of at most 4096 bytes.
_KITTY_CHUNK = 4096
# Primary Device Attributes: every VT100-style terminal answers "ESC [ ? class ; features c",
# and feature 4 is sixel graphics. Terminals answer in microseconds to a few milliseconds
# (over ssh, a round trip); the timeout only bounds the wait on one that never answers.
_DEVICE_ATTRIBUTES = b"\x1b[c"
_ATTRIBUTES_REPLY = re.compile(rb"\x1b\[\?([0-9;]*)c")
_SIXEL_FEATURE = b"4"
_PROBE_TIMEOUT_S = 0.15


def default_caption(hit: Hit) -> str:
    """The line shown under a picture: the same `score  path` as the plain listing."""
    return f"{hit.score:.3f}  {hit.path}"


def preview_hits(
    client: Client,
    hits: Iterable[Hit],
    out: BinaryIO,
    graphics: Graphics,
    *,
    max_side: int = DEFAULT_SIDE,
    caption: Callable[[Hit], str] = default_caption,
) -> None:
    """Write each hit's thumbnail, then its caption line, to the terminal behind `out`.

    A hit whose picture the daemon cannot make (file gone or unreadable) gets its caption and a
    short note instead; any other error, e.g. the daemon going away, is raised.
    """
    fmt: Literal["png", "sixel"] = "sixel" if graphics == "sixel" else "png"
    for hit in hits:
        try:
            picture = client.thumbnail(hit.path, max_side=max_side, fmt=fmt, host=hit.host)
        except (BadRequest, NotFound) as error:
            reason = " ".join(str(error).split())
            out.write(_line(f"{caption(hit)}  (no preview: {reason})"))
        else:
            # The image leaves the cursor on its bottom row: start the caption below it.
            out.write(image_sequence(graphics, picture) + b"\n" + _line(caption(hit)))
        # Each picture appears as soon as it is fetched, not all at the end.
        out.flush()


def image_sequence(graphics: Graphics, picture: Thumbnail) -> bytes:
    """The escape sequence that shows `picture` at the cursor in the given protocol.

    The picture must be PNG for kitty and iTerm2, and sixel for sixel.
    """
    if graphics == "kitty":
        return _kitty_image(picture.data)
    if graphics == "iterm2":
        return _iterm2_image(picture.data, picture.width, picture.height)
    return picture.data


def _kitty_image(png: bytes) -> bytes:
    """kitty graphics: transmit a PNG and display it at the cursor, with replies suppressed."""
    payload = base64.standard_b64encode(png)
    pieces = [payload[i : i + _KITTY_CHUNK] for i in range(0, len(payload), _KITTY_CHUNK)]
    commands = []
    for number, piece in enumerate(pieces):
        more = int(number < len(pieces) - 1)
        # a=T transmits and displays, f=100 says PNG, q=2 keeps the terminal from answering
        # (an answer would land in the shell's input); later pieces carry only m.
        keys = b"a=T,f=100,q=2,m=%d" % more if number == 0 else b"m=%d" % more
        commands.append(b"\x1b_G" + keys + b";" + piece + b"\x1b\\")
    return b"".join(commands)


def _iterm2_image(png: bytes, width: int, height: int) -> bytes:
    """iTerm2 inline image (OSC 1337), shown at its pixel size."""
    arguments = b"inline=1;size=%d;width=%dpx;height=%dpx;preserveAspectRatio=1" % (
        len(png),
        width,
        height,
    )
    return b"\x1b]1337;File=" + arguments + b":" + base64.standard_b64encode(png) + b"\x07"


def graphics_setting(env: Mapping[str, str]) -> str:
    """$CLIPQ_GRAPHICS, lower-cased ("" when unset); ValueError when it is not a known value."""
    value = env.get(GRAPHICS_ENV, "").strip().lower()
    if value and value not in _SETTINGS:
        raise ValueError(f"{GRAPHICS_ENV}={value!r} is not one of {', '.join(_SETTINGS)}")
    return value


def detect_graphics(env: Mapping[str, str], *, probe: Callable[[], bool] | None = None) -> Graphics:
    """The graphics protocol of the terminal clipq runs in; PreviewUnsupported says why not.

    $CLIPQ_GRAPHICS (kitty, iterm2, sixel or none) decides first; then the variables terminals
    set; last, `probe` (by default: ask the terminal on stdin/stdout) says whether it draws
    sixel. Inside tmux or screen there is none, since they do not pass images through.
    """
    try:
        forced = graphics_setting(env)
    except ValueError as error:
        raise PreviewUnsupported(str(error)) from None
    if forced:
        chosen = _SETTINGS[forced]
        if chosen is None:
            raise PreviewUnsupported(f"{GRAPHICS_ENV}=none turns previews off")
        return chosen
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    multiplexer = _multiplexer(env, term)
    if multiplexer:
        raise PreviewUnsupported(
            f"clipq runs inside {multiplexer}, which does not pass images through to the "
            f"terminal; if yours does (tmux: allow-passthrough), set {GRAPHICS_ENV}="
            "kitty|iterm2|sixel"
        )
    if "KITTY_WINDOW_ID" in env or term in ("xterm-kitty", "xterm-ghostty") or program == "ghostty":
        return "kitty"
    # WezTerm speaks both, but its kitty support is off unless configured; iTerm2 always works.
    if program in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm2"
    if term == "dumb":
        raise PreviewUnsupported("TERM=dumb: this terminal shows text only")
    speaks_sixel = probe if probe is not None else _stdio_speaks_sixel
    if not speaks_sixel():
        raise PreviewUnsupported()
    return "sixel"


def _multiplexer(env: Mapping[str, str], term: str) -> str | None:
    if "TMUX" in env or term.startswith("tmux"):
        return "tmux"
    if "STY" in env or term.startswith("screen"):
        return "screen"
    return None


def _stdio_speaks_sixel() -> bool:
    """Whether the terminal on stdin and stdout draws sixel; False when either is not one."""
    try:
        fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        # No stdin at all, or replaced by an object without a descriptor (a test's capture).
        return False
    return speaks_sixel(fd_in, fd_out)


def speaks_sixel(fd_in: int, fd_out: int, *, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Ask the terminal on these descriptors for its device attributes: do they list sixel?

    The terminal's input is in raw mode while waiting, so the reply is neither echoed nor held
    back until Enter; its mode is restored whatever happens. Any failure counts as no.
    """
    if not (os.isatty(fd_in) and os.isatty(fd_out)):
        return False
    try:
        saved = termios.tcgetattr(fd_in)
    except termios.error:
        return False
    try:
        tty.setraw(fd_in, termios.TCSANOW)
        os.write(fd_out, _DEVICE_ATTRIBUTES)
        reply = _read_reply(fd_in, timeout)
    except (OSError, termios.error):
        return False
    finally:
        termios.tcsetattr(fd_in, termios.TCSANOW, saved)
    match = _ATTRIBUTES_REPLY.search(reply)
    # The first number is the terminal's class, the rest its features.
    return match is not None and _SIXEL_FEATURE in match.group(1).split(b";")[1:]


def _read_reply(fd: int, timeout: float) -> bytes:
    """What the terminal sends until a complete attributes reply, or until the timeout."""
    deadline = time.monotonic() + timeout
    reply = b""
    while not _ATTRIBUTES_REPLY.search(reply):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        reply += chunk
    return reply


def _line(text: str) -> bytes:
    # surrogateescape gives back the original bytes of a path that is not valid UTF-8.
    return (text + "\n").encode("utf-8", "surrogateescape")
