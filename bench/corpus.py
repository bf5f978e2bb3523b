"""A deterministic folder of phone-like photos for the benchmarks.

Mostly 4032x3024 JPEGs at quality 90 (the 12 Mpx of most phones) with sensor noise, so that
they weigh what phone photos weigh (about 2.4 MB, not 0.4 MB for a smooth picture) and cost
what they cost to decode; a fifth of them portrait and a fifth stored sideways with an EXIF
orientation tag, plus 1920x1080 PNG screenshots (noise-free, as screenshots are) and 4032x3024
WebPs, in nested year/month folders. The same count always gives the same files;
they are cached under bench/out/ and reused while their stamp matches.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent / "out"
PHONE = (4032, 3024)
SCREEN = (1920, 1080)
_VERSION = 2  # bump when the generator changes, so cached corpora are rebuilt
_ORIENTATION = 0x0112
_ROTATED_90_CW = 6  # stored landscape, shown portrait


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of file in the mix."""

    name: str
    size: tuple[int, int]
    fmt: str
    ext: str


KINDS = {
    "jpeg": Kind("JPEG 4032x3024", PHONE, "JPEG", "jpg"),
    "portrait": Kind("JPEG 3024x4032", PHONE[::-1], "JPEG", "jpg"),
    "exif": Kind("JPEG 4032x3024, EXIF rotated", PHONE, "JPEG", "jpg"),
    "png": Kind("PNG 1920x1080", SCREEN, "PNG", "png"),
    "webp": Kind("WebP 4032x3024", PHONE, "WEBP", "webp"),
}
# Of every 20 files: 9 landscape JPEGs, 4 portrait, 4 EXIF-rotated, 2 PNG, 1 WebP.
_MIX = ["jpeg"] * 9 + ["portrait"] * 4 + ["exif"] * 4 + ["png"] * 2 + ["webp"]


def kind_of(number: int) -> str:
    return _MIX[number * 7 % len(_MIX)]


# Standard deviation of the sensor noise on camera pictures, in 8-bit levels.
_SENSOR_NOISE = 6.0


def photo(rng: random.Random, size: tuple[int, int], *, noise: float = 0.0) -> Image.Image:
    """A photo-like picture: a gradient sky, blurred shapes, then `noise` (sensor noise)."""
    width, height = size
    top = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).copy()
    texture = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels + texture, 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(width // 20, width // 5)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    if not noise:
        return image
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, noise, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def corpus(count: int) -> Path:
    """The folder of `count` generated files, made once and then reused."""
    root = OUT / f"photos-{count}"
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == str(_VERSION):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(2024)
    # Distinct content for each of a few templates per kind; files are re-encoded from them
    # with a crop shift and a flip, so no two files are byte-identical (no copy reuse).
    templates = {
        key: [photo(rng, kind.size, noise=_noise(kind)) for _ in range(3)]
        for key, kind in KINDS.items()
    }
    for number in range(count):
        key = kind_of(number)
        kind = KINDS[key]
        image = templates[key][number % 3].rotate(0.5 * (number % 7))
        if number % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        folder = root / f"{2015 + number % 9}" / f"{1 + number % 12:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{number:05d}.{kind.ext}"
        _save(image, path, kind, key)
    stamp.write_text(str(_VERSION))
    return root


def _noise(kind: Kind) -> float:
    return 0.0 if kind.fmt == "PNG" else _SENSOR_NOISE


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _save(image: Image.Image, path: Path, kind: Kind, key: str) -> None:
    if kind.fmt == "JPEG":
        exif = Image.Exif()
        if key == "exif":
            exif[_ORIENTATION] = _ROTATED_90_CW
        image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    elif kind.fmt == "WEBP":
        image.save(path, "WEBP", quality=85, method=0)
    else:
        image.save(path, kind.fmt, compress_level=6)
