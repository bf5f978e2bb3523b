"""Images people add through the web app: checked, saved into upload_dir, never overwriting.

The watcher indexes what lands there (upload_dir is inside a root), so saving is all this does.
A file is kept only if clipd can decode it as an image, under a plain name of its own (no
folders, no hidden names), with the extension of the format it really is, and under a new name
(" (2)", " (3)", ...) where another file has the name already: nothing is ever replaced.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clipd import images
from clipd.errors import ImageError

# Each added file at most; phone photos and RAW-sized JPEGs fit.
MAX_UPLOAD_BYTES = 64 << 20
# Files per request: a drop of a folder's worth, not a whole library.
MAX_UPLOAD_FILES = 100
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
               "BMP": ".bmp", "TIFF": ".tif"}  # fmt: skip
# What may stay of a name: letters, digits, and a few separators; the rest becomes "_".
_UNSAFE = re.compile(r"[^\w\-. ()]+")
_MAX_STEM = 100
_MAX_COPIES = 999


@dataclass(frozen=True, slots=True)
class Refused:
    name: str
    reason: str


def save(folder: Path, name: str, data: bytes, max_pixels: int) -> Path | Refused:
    """Save one added file into folder; the path it got, or why it was refused."""
    if len(data) > MAX_UPLOAD_BYTES:
        return Refused(name, f"over the limit of {MAX_UPLOAD_BYTES >> 20} MiB")
    try:
        decoded = images.decode_bytes(data, max_pixels=max_pixels, min_side=64)
    except ImageError as exc:
        return Refused(name, f"not an image clipd can index: {exc}")
    extension = _EXTENSIONS.get(decoded.format, "")
    if not extension:
        return Refused(name, f"{decoded.format} images cannot be added here")
    stem = _safe_stem(name)
    folder.mkdir(parents=True, exist_ok=True)
    # Written whole under a hidden name first, then linked to its name: the watcher never sees
    # half a file, and link() fails rather than replace a file that has the name already.
    fd, temporary = tempfile.mkstemp(prefix=".clipd-upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        for number in range(1, _MAX_COPIES + 1):
            suffix = "" if number == 1 else f" ({number})"
            candidate = folder / f"{stem}{suffix}{extension}"
            try:
                os.link(temporary, candidate)
            except FileExistsError:
                continue
            return candidate
    finally:
        os.unlink(temporary)
    return Refused(name, f"{stem}{extension} and {_MAX_COPIES - 1} numbered copies exist already")


def _safe_stem(name: str) -> str:
    """A file name's stem with no folder, no leading dot, nothing a shell or OS trips on."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = os.path.splitext(base)[0]
    stem = _UNSAFE.sub("_", stem).strip(" .")[:_MAX_STEM]
    return stem or "image"
