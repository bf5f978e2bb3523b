"""The child process that decodes camera RAW files with libraw (rawpy), for clipd.raw.

Run as `python -m clipd.rawworker`; it serves requests on stdin/stdout until stdin closes. A
request is a header (struct _REQUEST: payload size, pixel cap, min_side or 0) and the file's
bytes. A reply is one JSON line, then `size` bytes of payload: the embedded preview JPEG
("jpeg"), 8-bit RGB rows ("rgb"), or nothing ("error", with error_class and message). This file
imports nothing from clipd, so that the child loads no more than it needs.
"""

from __future__ import annotations

import io
import json
import signal
import struct
import sys
from typing import IO, Any

_REQUEST = struct.Struct("<QQI")
# Years before this in libraw's timestamp mean "no capture time" (0 is the Unix epoch).
_FIRST_YEAR = 1971


def main() -> int:
    # Ctrl-C in a terminal and systemd's stop reach every process of the daemon's group; the
    # worker must finish the file in hand (the daemon finishes its batch), so it ignores them
    # and ends when the daemon closes its stdin, on exit or death alike.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while header := _read_exact(requests, _REQUEST.size):
        size, max_pixels, min_side = _REQUEST.unpack(header)
        data = _read_exact(requests, size)
        if len(data) != size:
            return 0
        reply, payload = _decode(data, max_pixels, min_side or None)
        reply["size"] = len(payload)
        replies.write(json.dumps(reply).encode() + b"\n" + payload)
        replies.flush()
    return 0


def _read_exact(stream: IO[bytes], count: int) -> bytes:
    chunks = []
    while count:
        chunk = stream.read(count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _decode(data: bytes, max_pixels: int, min_side: int | None) -> tuple[dict[str, Any], bytes]:
    try:
        import rawpy
    except ImportError as exc:
        return _error("MissingDecoder", f"camera RAW needs rawpy: pip install rawpy ({exc})")
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            return _picture(raw, max_pixels, min_side)
    except rawpy.LibRawFileUnsupportedError:
        return _error("CorruptImage", "libraw cannot read this RAW (unknown camera, or damaged)")
    except (rawpy.LibRawTooBigError, MemoryError):
        return _error("ImageTooLarge", "RAW too large for libraw to decode in memory")
    except rawpy.LibRawError as exc:
        return _error("CorruptImage", f"damaged or truncated RAW: {type(exc).__name__} {exc}")
    except Exception as exc:  # libraw's wrappers raise assorted errors on damaged data
        return _error("CorruptImage", f"damaged RAW: {type(exc).__name__}: {exc}")


def _picture(raw: Any, max_pixels: int, min_side: int | None) -> tuple[dict[str, Any], bytes]:
    """The embedded preview if it is big enough, else a half-size demosaic; never full size."""
    import rawpy

    sizes = raw.sizes
    width, height = sizes.width, sizes.height
    if width < 1 or height < 1:
        return _error("CorruptImage", "damaged RAW: no image size")
    if width * height > max_pixels:
        return _error(
            "ImageTooLarge",
            f"image is {width}x{height} ({width * height:,} pixels), "
            f"over the {max_pixels:,}-pixel cap",
        )
    reply: dict[str, Any] = {"width": width, "height": height, "flip": sizes.flip}
    reply["taken"] = _timestamp(raw)
    # A half-size demosaic has half the short side; a preview at least that big is as good.
    needed = min_side or min(width, height) // 2
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        thumb = None
    if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
        if min(_jpeg_size(thumb.data)) >= needed:
            return {**reply, "kind": "jpeg"}, bytes(thumb.data)
    elif thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP:
        rows = thumb.data
        if rows.ndim == 3 and rows.shape[2] == 3 and min(rows.shape[:2]) >= needed:
            return _rgb(reply, rows)
    rows = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8, user_flip=0)
    return _rgb(reply, rows)


def _rgb(reply: dict[str, Any], rows: Any) -> tuple[dict[str, Any], bytes]:
    height, width = rows.shape[:2]
    return {**reply, "kind": "rgb", "rgb_size": [width, height]}, rows.astype("uint8").tobytes()


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """A JPEG's size from its header; (0, 0) if it has none."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # only the header is read; the daemon applies its own cap
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return 0, 0


def _timestamp(raw: Any) -> float | None:
    """libraw's capture time: the camera's local clock read as this machine's local time."""
    try:
        when = raw.other.timestamp
        return when.timestamp() if when.year >= _FIRST_YEAR else None
    except (AttributeError, ValueError, OverflowError, OSError):
        return None


def _error(error_class: str, message: str) -> tuple[dict[str, Any], bytes]:
    return {"kind": "error", "error_class": error_class, "message": message}, b""


if __name__ == "__main__":
    sys.exit(main())
