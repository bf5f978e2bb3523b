"""clipq --preview: terminal detection, the sixel probe on a real pty, the escape sequences, and
thumbnails of real hits from an in-process daemon."""

from __future__ import annotations

import base64
import io
import os
import random
import re
import select
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.shapes import draw
from harness import in_process_daemon
from PIL import Image

from clipq import Client, ClipqError, Hit, NotFound, PreviewUnsupported, Thumbnail
from clipq._preview import Graphics, detect_graphics, image_sequence, preview_hits, speaks_sixel

_KITTY = re.compile(rb"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\")
_ITERM2 = re.compile(rb"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\x07")
_QUERY = b"\x1b[c"


# Detection


class Probe:
    """A stand-in for asking the terminal about sixel, remembering whether it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = False

    def __call__(self) -> bool:
        self.asked = True
        return self.answer


_IN_TMUX = "clipq runs inside tmux, which does not pass images through to the terminal; if"
_IN_SCREEN = "clipq runs inside screen, which does not pass images through"
_TURNED_OFF = "CLIPQ_GRAPHICS=none turns previews off"


@pytest.mark.parametrize(
    ("env", "sixel", "expected", "asks"),
    [
        ({"TERM": "xterm-kitty"}, False, "kitty", False),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, False, "kitty", False),
        ({"TERM": "xterm-ghostty"}, False, "kitty", False),
        ({"TERM_PROGRAM": "ghostty"}, False, "kitty", False),
        ({"TERM_PROGRAM": "WezTerm", "TERM": "xterm-256color"}, True, "iterm2", False),
        ({"TERM_PROGRAM": "iTerm.app"}, False, "iterm2", False),
        ({"LC_TERMINAL": "iTerm2", "TERM": "xterm-256color"}, False, "iterm2", False),
        ({"TERM": "foot"}, True, "sixel", True),
        ({"TERM": "xterm-256color"}, False, "this terminal cannot show images inline", True),
        ({"TERM": "dumb"}, True, "TERM=dumb: this terminal shows text only", False),
        # tmux and screen swallow images, even inside a terminal that shows them.
        ({"TMUX": "/tmp/tmux-1/default,1,0", "KITTY_WINDOW_ID": "1"}, True, _IN_TMUX, False),
        ({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux"}, True, _IN_TMUX, False),
        ({"TERM": "screen.xterm-256color"}, True, _IN_SCREEN, False),
        ({"STY": "1234.pts-0.host", "TERM_PROGRAM": "iTerm.app"}, True, _IN_SCREEN, False),
        # The override wins over everything.
        ({"CLIPQ_GRAPHICS": "sixel", "TMUX": "x", "TERM": "xterm-kitty"}, False, "sixel", False),
        ({"CLIPQ_GRAPHICS": " Kitty ", "TERM": "dumb"}, False, "kitty", False),
        ({"CLIPQ_GRAPHICS": "iterm2"}, False, "iterm2", False),
        ({"CLIPQ_GRAPHICS": "none", "TERM": "xterm-kitty"}, True, _TURNED_OFF, False),
    ],
)
def test_detect_graphics(env: dict[str, str], sixel: bool, expected: str, asks: bool) -> None:
    """expected is a protocol, or the start of the message saying why there is none."""
    probe = Probe(sixel)
    if expected in ("kitty", "iterm2", "sixel"):
        assert detect_graphics(env, probe=probe) == expected
    else:
        with pytest.raises(PreviewUnsupported) as raised:
            detect_graphics(env, probe=probe)
        assert str(raised.value).startswith(expected)
    assert probe.asked == asks


def test_an_unknown_override_is_an_error_naming_it() -> None:
    with pytest.raises(PreviewUnsupported, match="CLIPQ_GRAPHICS='sixels' is not one of kitty"):
        detect_graphics({"CLIPQ_GRAPHICS": "sixels"}, probe=Probe(True))


def test_unsupported_says_which_terminals_work_and_how_to_force_one() -> None:
    message = str(PreviewUnsupported())
    assert message.startswith("this terminal cannot show images inline")
    assert "kitty, iTerm2, WezTerm, Ghostty or a sixel terminal" in message
    assert "CLIPQ_GRAPHICS=kitty|iterm2|sixel" in message
    assert isinstance(PreviewUnsupported(), ClipqError)


# The sixel probe, on a real pseudo-terminal


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    """(terminal side, program side) of a fresh pseudo-terminal."""
    terminal, program = os.openpty()
    yield terminal, program
    os.close(program)
    os.close(terminal)


def read_available(fd: int, seconds: float) -> bytes:
    """What arrives on fd within `seconds` of silence."""
    data = b""
    while select.select([fd], [], [], seconds)[0]:
        data += os.read(fd, 1024)
    return data


class Terminal(threading.Thread):
    """The terminal side: waits for the device attributes query, then sends `reply`."""

    def __init__(self, fd: int, reply: bytes) -> None:
        super().__init__(name="fake-terminal")
        self.fd = fd
        self.reply = reply
        self.received = b""

    def run(self) -> None:
        deadline = time.monotonic() + 5
        while _QUERY not in self.received and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.05)[0]:
                self.received += os.read(self.fd, 64)
        if _QUERY in self.received:
            os.write(self.fd, self.reply)


@pytest.mark.parametrize(
    ("reply", "sixel"),
    [
        (b"\x1b[?62;4;22c", True),  # foot
        (b"\x1b[?63;1;2;4;6;9;15;16;22;28c", True),  # xterm -ti vt340
        (b"\x1b[?1;2;4c", True),
        (b"\x1b[?62;22c", False),  # a VT220-class terminal without sixel
        (b"\x1b[?64;1;2;6;9;15;18;21;22c", False),  # gnome-terminal (VTE)
        (b"\x1b[?1;2c", False),  # a VT100
    ],
)
def test_probe_reads_the_terminals_answer(pty: tuple[int, int], reply: bytes, sixel: bool) -> None:
    terminal_fd, program_fd = pty
    mode = termios.tcgetattr(program_fd)
    terminal = Terminal(terminal_fd, reply)
    terminal.start()
    try:
        assert speaks_sixel(program_fd, program_fd, timeout=5) is sixel
    finally:
        terminal.join()
    assert terminal.received == _QUERY
    assert termios.tcgetattr(program_fd) == mode
    # The reply was consumed, not left for the shell to read as typed input.
    assert read_available(program_fd, 0.05) == b""


def test_probe_gives_up_on_a_silent_terminal(pty: tuple[int, int]) -> None:
    terminal_fd, program_fd = pty
    mode = termios.tcgetattr(program_fd)
    assert not speaks_sixel(program_fd, program_fd, timeout=0.05)
    assert read_available(terminal_fd, 0.05) == _QUERY
    assert termios.tcgetattr(program_fd) == mode


def test_probe_restores_the_mode_when_writing_fails(pty: tuple[int, int]) -> None:
    _, program_fd = pty
    mode = termios.tcgetattr(program_fd)
    read_only = os.open(os.ttyname(program_fd), os.O_RDONLY | os.O_NOCTTY)
    try:
        assert not speaks_sixel(program_fd, read_only, timeout=5)
    finally:
        os.close(read_only)
    assert termios.tcgetattr(program_fd) == mode


def test_probe_asks_nothing_when_not_on_a_terminal(pty: tuple[int, int]) -> None:
    terminal_fd, program_fd = pty
    read_end, write_end = os.pipe()
    try:
        assert not speaks_sixel(read_end, program_fd, timeout=5)
        assert not speaks_sixel(program_fd, write_end, timeout=5)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert read_available(terminal_fd, 0.05) == b""


# Escape sequences


def kitty_payload(output: bytes) -> bytes:
    """The PNG that one kitty transmission (all its chunks) carries; checks the chunking."""
    commands = _KITTY.findall(output)
    assert b"".join(_KITTY.sub(b"", output).split()) == b"", "bytes outside kitty commands"
    assert commands[0][0].startswith(b"a=T,f=100,q=2,")
    flags = [keys.rsplit(b"m=", 1)[1] for keys, _ in commands]
    assert flags == [b"1"] * (len(commands) - 1) + [b"0"]
    assert all(
        keys == b"m=" + flag for (keys, _), flag in zip(commands[1:], flags[1:], strict=True)
    )
    assert all(len(chunk) <= 4096 for _, chunk in commands)
    return base64.b64decode(b"".join(chunk for _, chunk in commands), validate=True)


@pytest.mark.parametrize("size", [1, 3072, 3073, 10_000])
def test_kitty_sends_the_png_in_chunks_of_at_most_4096(size: int) -> None:
    png = random.Random(size).randbytes(size)
    output = image_sequence("kitty", Thumbnail(png, 10, 10))
    assert kitty_payload(output) == png
    assert output.count(b"\x1b_G") == -(-len(base64.b64encode(png)) // 4096)


def test_iterm2_sends_the_png_inline_at_its_pixel_size() -> None:
    png = random.Random(1).randbytes(5000)
    output = image_sequence("iterm2", Thumbnail(png, 256, 170))
    match = _ITERM2.fullmatch(output)
    assert match is not None
    arguments = dict(item.split(b"=") for item in match.group(1).split(b";"))
    assert arguments == {
        b"inline": b"1",
        b"size": b"5000",
        b"width": b"256px",
        b"height": b"170px",
        b"preserveAspectRatio": b"1",
    }
    assert base64.b64decode(match.group(2), validate=True) == png


def test_sixel_is_written_as_the_daemon_made_it() -> None:
    sixel = b'\x1bPq"1;1;1;1#0;2;0;0;0#0@\x1b\\'
    assert image_sequence("sixel", Thumbnail(sixel, 1, 1)) == sixel


# Real hits from a real daemon


@pytest.fixture
def client(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Client]:
    """A client of an in-process daemon that has indexed three pictures (and watches nothing,
    so a file deleted by a test stays indexed)."""
    root = tmp_path / "pics"
    root.mkdir()
    rng = random.Random(3)
    for name, (colour, shape) in {
        "red circle.jpg": ("red", "circle"),
        "blue square.png": ("blue", "square"),
        "green triangle.png": ("green", "triangle"),
    }.items():
        draw(colour, shape, (300, 200), rng).save(root / name)
    config = write_config([root], watch=False)
    with in_process_daemon(config, root, 3) as live, live.client() as connected:
        yield connected


def test_client_thumbnail_png_and_sixel(client: Client) -> None:
    (hit,) = client.search("a blue square", limit=1)
    png = client.thumbnail(hit.path, max_side=64)
    with Image.open(io.BytesIO(png.data)) as image:
        assert image.size == (png.width, png.height) == (64, 43)
    sixel = client.thumbnail(hit.path, fmt="sixel")
    assert (sixel.width, sixel.height) == (256, 171)
    assert sixel.data.startswith(b'\x1bPq"1;1;256;171#')
    with pytest.raises(ValueError, match="'png' or 'sixel'"):
        client.thumbnail(hit.path, fmt="gif")  # type: ignore[arg-type]


def test_client_thumbnail_refuses_files_not_indexed(client: Client) -> None:
    with pytest.raises(NotFound, match="not an indexed image"):
        client.thumbnail(__file__)


# One record of preview output: an image sequence and its caption, or a caption with a note.
_RECORD = re.compile(
    rb"(?P<image>(?:\x1b_G.*?\x1b\\)+|\x1b\]1337;.*?\x07|\x1bPq.*?\x1b\\)\n(?P<caption>[^\n]*)\n"
    rb"|(?P<note>[^\x1b\n]*)\n",
    re.DOTALL,
)


def records(output: bytes) -> list[tuple[bytes | None, str]]:
    """(image sequence or None, line) per hit; fails on anything else in the output."""
    found = []
    position = 0
    while position < len(output):
        record = _RECORD.match(output, position)
        assert record is not None, f"unexpected output at {output[position : position + 40]!r}"
        position = record.end()
        line = record.group("caption") if record.group("image") else record.group("note")
        found.append((record.group("image"), line.decode()))
    return found


@pytest.mark.parametrize("graphics", ["kitty", "iterm2", "sixel"])
def test_preview_hits_shows_each_picture_above_its_line(client: Client, graphics: Graphics) -> None:
    hits = list(client.search("a red circle", limit=3))
    assert len(hits) == 3
    gone = hits[1]
    Path(gone.path).unlink()
    out = io.BytesIO()
    preview_hits(client, hits, out, graphics, max_side=48)

    shown = records(out.getvalue())
    assert [line.split("  ")[:2] for _, line in shown] == [
        [f"{hit.score:.3f}", hit.path] for hit in hits
    ]
    image, line = shown[1]
    assert image is None
    assert line.endswith(
        "(no preview: " + gone.path + ": no such file (deleted, moved, or a broken symlink))"
    )
    for hit, (image, line) in zip([hits[0], hits[2]], [shown[0], shown[2]], strict=True):
        assert line == f"{hit.score:.3f}  {hit.path}"
        assert image is not None
        if graphics == "sixel":
            assert image == client.thumbnail(hit.path, max_side=48, fmt="sixel").data
            continue
        png = client.thumbnail(hit.path, max_side=48).data
        if graphics == "kitty":
            assert kitty_payload(image) == png
        else:
            iterm2 = _ITERM2.fullmatch(image)
            assert iterm2 is not None
            assert base64.b64decode(iterm2.group(2)) == png


def test_preview_hits_takes_a_caption(client: Client) -> None:
    hits = list(client.search("a green triangle", limit=1))
    out = io.BytesIO()
    preview_hits(client, hits, out, "sixel", caption=lambda hit: Path(hit.path).name)
    assert records(out.getvalue())[0][1] == Path(hits[0].path).name


def test_preview_hits_of_nothing_writes_nothing(client: Client) -> None:
    out = io.BytesIO()
    preview_hits(client, [], out, "kitty")
    assert out.getvalue() == b""


def test_a_hit_the_daemon_never_indexed_gets_a_note(client: Client) -> None:
    stranger = Hit(path=__file__, score=0.5, width=1, height=1, size_bytes=1, mtime=0.0)
    out = io.BytesIO()
    preview_hits(client, [stranger], out, "iterm2")
    ((image, line),) = records(out.getvalue())
    assert image is None
    assert line.startswith(f"0.500  {__file__}  (no preview: ")
    assert "not an indexed image" in line
