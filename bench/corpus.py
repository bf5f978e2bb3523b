"""A deterministic folder of phone-like photos for the benchmarks.

Mostly 4032x3024 JPEGs at quality 90 (the 12 Mpx of most phones) with sensor noise, so that
they weigh what phone photos weigh (about 2.4 MB, not 0.4 MB for a smooth picture) and cost
what they cost to decode; a fifth of them portrait and a fifth stored sideways with an EXIF
orientation tag, plus 1920x1080 PNG screenshots (noise-free, as screenshots are) and 4032x3024
WebPs, in nested year/month folders. Every file shows its own picture (no two are copies, so
no file's vector or thumbnail is reused from another's), yet a file costs only an encode: a few
noisy backgrounds per kind are drawn once, and each file shifts the colours of shapes of its
own on one of them. Files are written by one process per core. The same count always gives the
same files; they are cached under bench/out/ and reused while their stamp matches.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent / "out"
PHONE = (4032, 3024)
SCREEN = (1920, 1080)
_VERSION = 3  # bump when the generator changes, so cached corpora are rebuilt
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
    print(f"generating {count} photos into {root} ...", flush=True)
    rng = random.Random(2024)
    # Made before the writers are forked, which read them copy-on-write.
    _BACKGROUNDS.update(
        (key, [photo(rng, kind.size, noise=_noise(kind)) for _ in range(3)])
        for key, kind in KINDS.items()
    )
    try:
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            for _ in pool.imap_unordered(partial(_write, root), range(count), chunksize=8):
                pass
    finally:
        _BACKGROUNDS.clear()
    stamp.write_text(str(_VERSION))
    return root


_BACKGROUNDS: dict[str, list[Image.Image]] = {}


def _write(root: Path, number: int) -> None:
    """File `number`: one of its kind's backgrounds with tinted shapes of its own."""
    key = kind_of(number)
    kind = KINDS[key]
    rng = random.Random(number)
    image = _BACKGROUNDS[key][number % 3].copy()
    width, height = kind.size
    for _ in range(4):
        side = rng.randint(width // 8, width // 3)
        corner = (rng.randrange(width - side), rng.randrange(height - side))
        _tint(image, corner, side, [rng.randint(-110, 110) for _ in range(3)], rng.random() < 0.5)
    folder = root / f"{2015 + number % 9}" / f"{1 + number % 12:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    _save(image, folder / f"IMG_{number:05d}.{kind.ext}", kind, key)


def _tint(
    image: Image.Image, corner: tuple[int, int], side: int, shift: list[int], round_shape: bool
) -> None:
    """Shift the colour of a square (or the disc in it) by `shift` levels per channel, keeping
    the grain beneath: a shape that weighs and decodes like the rest of the photo."""
    x, y = corner
    region = image.crop((x, y, x + side, y + side))
    lighter = Image.new("RGB", region.size, tuple(max(0, level) for level in shift))
    darker = Image.new("RGB", region.size, tuple(max(0, -level) for level in shift))
    shifted = ImageChops.subtract(ImageChops.add(region, lighter), darker)
    mask = None
    if round_shape:
        mask = Image.new("L", region.size, 0)
        ImageDraw.Draw(mask).ellipse((0, 0, side - 1, side - 1), fill=255)
    image.paste(shifted, corner, mask)


def _noise(kind: Kind) -> float:
    return 0.0 if kind.fmt == "PNG" else _SENSOR_NOISE


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def number_of(path: Path) -> int:
    """The number a file of the corpus was made from (IMG_00042.jpg: 42)."""
    return int(path.stem.split("_")[1])


def mixed(paths: list[Path], count: int) -> list[Path]:
    """`count` files of the corpus with its mix of kinds: the lowest-numbered ones, since every
    len(_MIX) consecutive numbers hold the whole mix. A slice of the sorted paths does not:
    the folders sort by year, and 60 files taken every sixth held 1 WebP and 3 PNGs instead of
    3 and 6, which made decoding look 15% cheaper than over the whole corpus."""
    return sorted(paths, key=number_of)[:count]


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
