"""Camera RAW files: recognised here by content, decoded by libraw in worker processes.

libraw parses dozens of undocumented vendor formats in C and has a history of memory-safety
bugs; in the daemon's process one hostile file could crash it, or hang a loader thread for good.
So libraw is never loaded here: `python -m clipd.rawworker` children do the decoding, one
request at a time each, over pipes. A child that dies (a crash) or overruns DECODE_TIMEOUT_S
is killed and replaced, and only that file fails, with the reason. A few children are started
on demand (at most MAX_WORKERS) and kept for the next RAW; each holds ~35 MB while idle.

What comes back is the preview JPEG the camera embedded, when it is at least min_side on its
short side (fast: no demosaic), else a half-size demosaic (libraw's fast path); the caller
decodes the JPEG and applies the orientation (`flip`), which libraw reports for both.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from PIL import Image

from clipd.errors import CorruptImage, ImageError, ImageTooLarge, MissingDecoder

# A half-size demosaic of a 100 Mpx RAW takes a few seconds on one core; a hang takes forever.
DECODE_TIMEOUT_S = 120.0
MAX_WORKERS = max(2, min(4, os.cpu_count() or 1))
_REQUEST = struct.Struct("<QQI")  # as clipd.rawworker reads it
_PIPE_BYTES = 1 << 20
_WORKER_ARGV = (sys.executable, "-m", "clipd.rawworker")
_ERRORS: dict[str, type[ImageError]] = {
    "CorruptImage": CorruptImage,
    "ImageTooLarge": ImageTooLarge,
    "MissingDecoder": MissingDecoder,
}
# Orientation as libraw's `flip` -> the transpose that shows the picture upright.
_FLIPS = {
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.ROTATE_90,  # 90 degrees counter-clockwise
    6: Image.Transpose.ROTATE_270,  # 90 degrees clockwise
}

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_DNG_VERSION, _COMPRESSION, _PHOTOMETRIC, _SUB_IFDS, _MAKE = 50706, 259, 262, 330, 271
_CFA = 32803  # PhotometricInterpretation of raw sensor data
# Compression codes that only camera makers use (Sony, Nikon, Samsung, Panasonic, Kodak, Pentax).
_VENDOR_COMPRESSIONS = frozenset({32767, 32769, 32770, 34713, 34316, 65000, 65535})


def recognise(data: bytes) -> str | None:
    """The RAW format the bytes hold ("DNG", "CR2", ...), or None if they hold no camera RAW."""
    if data.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if data[4:8] == b"ftyp" and data[8:12] == b"crx ":
        return "CR3"
    if data[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if data[:4] == b"IIU\x00":
        return "RW2"
    if data[:4] not in _TIFF_MAGIC:
        return None
    if data[8:10] == b"CR":
        return "CR2"
    tags = _first_directory(data)
    if _DNG_VERSION in tags:
        return "DNG"
    # NEF, ARW, PEF, SRW...: TIFF files whose first directory is raw sensor data, or a preview
    # pointing to the raw data in sub-directories, from a camera maker. A scanner's or editor's
    # TIFF has neither.
    sensor = tags.get(_PHOTOMETRIC) == _CFA or tags.get(_COMPRESSION) in _VENDOR_COMPRESSIONS
    if sensor or (_SUB_IFDS in tags and _MAKE in tags):
        return "RAW"
    return None


def _first_directory(data: bytes) -> dict[int, int]:
    """Tag -> first value (SHORT/LONG, else 0) of a TIFF's first directory; {} if damaged."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        tags = {}
        for start in range(offset + 2, offset + 2 + 12 * min(count, 1024), 12):
            tag, kind, _, value = struct.unpack(order + "HHI4s", data[start : start + 12])
            number = {3: order + "H2x", 4: order + "I"}.get(kind)
            tags[tag] = struct.unpack(number, value)[0] if number else 0
    except struct.error:
        return {}
    return tags


@dataclass(frozen=True, slots=True)
class RawPicture:
    """What a worker made of a RAW file: a preview JPEG to decode, or RGB pixels."""

    width: int  # the sensor image, before orientation
    height: int
    transpose: Image.Transpose | None  # what shows it upright
    taken: float | None  # libraw's capture time (local clock, no zone)
    jpeg: bytes | None
    rgb: Image.Image | None


class WorkerPool:
    """Up to `size` worker processes, started on demand, each serving one request at a time."""

    def __init__(
        self,
        argv: tuple[str, ...] = _WORKER_ARGV,
        *,
        timeout: float = DECODE_TIMEOUT_S,
        size: int = MAX_WORKERS,
    ) -> None:
        self._argv = argv
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def decode(self, data: bytes, *, max_pixels: int, min_side: int | None) -> RawPicture:
        """Decode a RAW file's bytes in a worker; ImageError on any failure, never a crash."""
        with self._slots:
            worker = self._take()
            try:
                reply, payload = worker.exchange(
                    _REQUEST.pack(len(data), max_pixels, min_side or 0), data, self._timeout
                )
            except BaseException:  # a crash, a timeout: the worker's state is unknown
                worker.kill()
                raise
            with self._lock:
                self._idle.append(worker)
        return _picture(reply, payload)

    def close(self) -> None:
        """End every idle worker (busy ones end when their request does)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.kill()
        return _Worker(self._argv)


class _Worker:
    """One child process and its pipes."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        for stream in (self._stdin, self._stdout):
            os.set_blocking(stream.fileno(), False)
            _widen_pipe(stream.fileno())

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def exchange(
        self, header: bytes, data: bytes, timeout: float
    ) -> tuple[dict[str, object], bytes]:
        """Send one request and read its reply, all within timeout seconds."""
        deadline = time.monotonic() + timeout
        # Sent piece by piece, never joined: a join would copy the whole file once more.
        outgoing = [memoryview(header), memoryview(data)]
        received = bytearray()
        reply: dict[str, object] | None = None
        needed = -1
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdin, selectors.EVENT_WRITE)
            selector.register(self._stdout, selectors.EVENT_READ)
            while reply is None or len(received) < needed:
                left = deadline - time.monotonic()
                events = selector.select(left) if left > 0 else []
                if not events:
                    raise CorruptImage(f"the RAW decoder took over {timeout:g} s; file skipped")
                for key, _ in events:
                    if key.fileobj is self._stdin:
                        outgoing[0] = outgoing[0][self._send(outgoing[0]) :]
                        while outgoing and not outgoing[0]:
                            outgoing.pop(0)
                        if not outgoing:
                            selector.unregister(self._stdin)
                        continue
                    received += self._receive()
                    if reply is None and b"\n" in received:
                        line, _, rest = bytes(received).partition(b"\n")
                        reply = _parse_reply(line)
                        needed = _payload_size(reply)
                        received = bytearray(rest)
        return reply, bytes(received)

    def _send(self, outgoing: memoryview) -> int:
        try:
            return os.write(self._stdin.fileno(), outgoing[: 1 << 20])
        except BrokenPipeError:
            raise self._died() from None
        except BlockingIOError:
            return 0

    def _receive(self) -> bytes:
        try:
            chunk = os.read(self._stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return b""
        if not chunk:
            raise self._died()
        return chunk

    def _died(self) -> CorruptImage:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return CorruptImage(f"the RAW decoder crashed on this file ({how}); file skipped")

    def kill(self) -> None:
        self._proc.kill()
        self.close()

    def close(self) -> None:
        """Close stdin (the worker's signal to end) and reap it."""
        for stream in (self._stdin, self._stdout):
            with suppress(OSError):  # a broken pipe flushing nothing: the child is gone anyway
                stream.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _widen_pipe(fd: int) -> None:
    """Give a pipe a 1 MiB buffer where the OS allows (Linux): a 25 MB RAW then crosses in 25
    writes instead of 400 of 64 KiB, which cost the daemon ~30 ms of CPU per file."""
    resize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if resize is not None:
        with suppress(OSError):  # above /proc/sys/fs/pipe-max-size for an unprivileged user
            fcntl.fcntl(fd, resize, _PIPE_BYTES)


def _parse_reply(line: bytes) -> dict[str, object]:
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise CorruptImage("the RAW decoder answered nonsense; file skipped") from exc
    if not isinstance(reply, dict):
        raise CorruptImage("the RAW decoder answered nonsense; file skipped")
    return reply


def _payload_size(reply: dict[str, object]) -> int:
    size = reply.get("size")
    if not isinstance(size, int) or size < 0:
        raise CorruptImage("the RAW decoder answered nonsense; file skipped")
    return size


def _picture(reply: dict[str, object], payload: bytes) -> RawPicture:
    kind = reply.get("kind")
    if kind == "error":
        error = _ERRORS.get(str(reply.get("error_class")), CorruptImage)
        raise error(str(reply.get("message")))
    width, height, flip = reply.get("width"), reply.get("height"), reply.get("flip")
    taken = reply.get("taken")
    if not (isinstance(width, int) and isinstance(height, int) and isinstance(flip, int)):
        raise CorruptImage("the RAW decoder answered nonsense; file skipped")
    rgb = None
    if kind == "rgb":
        size = reply.get("rgb_size")
        match size:
            case [int(columns), int(rows)] if columns * rows * 3 == len(payload) > 0:
                rgb = Image.frombytes("RGB", (columns, rows), payload)
            case _:
                raise CorruptImage("the RAW decoder answered nonsense; file skipped")
    return RawPicture(
        width=width,
        height=height,
        transpose=_FLIPS.get(flip),
        taken=float(taken) if isinstance(taken, (int, float)) else None,
        jpeg=payload if kind == "jpeg" else None,
        rgb=rgb,
    )


_POOL = WorkerPool()
atexit.register(_POOL.close)


def decode(data: bytes, *, max_pixels: int, min_side: int | None) -> RawPicture:
    """Decode RAW bytes in the shared worker pool."""
    return _POOL.decode(data, max_pixels=max_pixels, min_side=min_side)


def close_workers() -> None:
    """End the shared pool's idle workers now (the next RAW starts new ones)."""
    _POOL.close()
