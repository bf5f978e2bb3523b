"""Decode cost per format: CPU-ms per 12 Mpx photo, decoded to the model's input size.

One phone-sized picture (4032x3024) is saved in every format clipd reads, plus two camera RAW
cases: a DNG whose embedded preview is big enough for the model (cameras embed 1.6-24 Mpx
previews) and one without a usable preview, which libraw demosaics at half size. Each file is
decoded with min_side=224, as the indexer does, rounds interleaved across formats; the CPU time
counts every thread of this process and, for RAW, the worker processes (reaped after each round,
so that their CPU is counted; a worker's own start-up is measured apart and subtracted).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bench.corpus import OUT, PHONE, photo
from clipd import images, raw

# The DNG writer the tests use (tests/fixtures/dng.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.dng import make_dng

MODEL_SIDE = 224
_VERSION = 1  # bump when the files change, so the cached ones are rebuilt
_Writer = Callable[[Image.Image, Path], None]


def _pillow(fmt: str, **params: object) -> _Writer:
    return lambda image, path: image.save(path, fmt, **params)


def _dng(preview: bool) -> _Writer:
    def write(image: Image.Image, path: Path) -> None:
        small = image.resize((1620, 1080)) if preview else None
        path.write_bytes(make_dng(image, preview=small))

    return write


# label -> (file name, writer)
FORMATS: dict[str, tuple[str, _Writer]] = {
    "JPEG q90": ("photo.jpg", _pillow("JPEG", quality=90)),
    "PNG": ("photo.png", _pillow("PNG", compress_level=6)),
    "WebP q85": ("photo.webp", _pillow("WEBP", quality=85, method=0)),
    "HEIC q85": ("photo.heic", _pillow("HEIF", quality=85)),
    "AVIF q80": ("photo.avif", _pillow("AVIF", quality=80, speed=8)),
    "JPEG XL q90": ("photo.jxl", _pillow("JXL", quality=90, effort=3)),
    "DNG, 1620x1080 preview": ("preview.dng", _dng(preview=True)),
    "DNG, no preview (demosaic)": ("mosaic.dng", _dng(preview=False)),
}


def files() -> dict[str, Path]:
    """label -> the file of that format, made once and cached under bench/out/."""
    root = OUT / "formats"
    stamp = root / ".complete"
    paths = {label: root / name for label, (name, _) in FORMATS.items()}
    if stamp.exists() and stamp.read_text() == str(_VERSION):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    import random

    picture = photo(random.Random(12), PHONE)
    for label, (_, write) in FORMATS.items():
        write(picture, paths[label])
    stamp.write_text(str(_VERSION))
    return paths


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _round(path: Path, per_round: int) -> float:
    """CPU-seconds per decode of path, worker processes included."""
    started = _cpu_seconds()
    for _ in range(per_round):
        images.decode_file(path, min_side=MODEL_SIDE)
    raw.close_workers()
    return (_cpu_seconds() - started) / per_round


def _worker_start(tiny: Path) -> float:
    """CPU-seconds to start a RAW worker (and decode one tiny file), to subtract."""
    started = _cpu_seconds()
    images.decode_file(tiny)
    raw.close_workers()
    return _cpu_seconds() - started


def measure(rounds: int = 5, per_round: int = 4) -> list[tuple[str, int, float]]:
    """(label, file size, median CPU-ms per image), rounds interleaved across formats."""
    paths = files()
    tiny = OUT / "formats" / "tiny.dng"
    tiny.write_bytes(make_dng(Image.new("RGB", (64, 48))))
    for path in paths.values():  # warm caches, load plugins
        images.decode_file(path, min_side=MODEL_SIDE)
    raw.close_workers()
    samples: dict[str, list[float]] = {label: [] for label in paths}
    starts = []
    for _ in range(rounds):
        starts.append(_worker_start(tiny))
        for label, path in paths.items():
            samples[label].append(_round(path, per_round))
    start = statistics.median(starts)
    results = []
    for label, path in paths.items():
        cost = statistics.median(samples[label])
        if raw.recognise(path.read_bytes()) is not None:
            cost -= start / per_round
        results.append((label, path.stat().st_size, cost * 1e3))
    return results


def report(rounds: int) -> None:
    results = measure(rounds=rounds)
    print(f"\ndecode cost per format, {PHONE[0]}x{PHONE[1]} photo to min_side {MODEL_SIDE}:")
    width = max(len(label) for label, _, _ in results)
    for label, size, ms in results:
        print(f"  {label:{width}}  {ms:8.1f} CPU-ms/img  ({size / 2**20:5.1f} MiB)")


if __name__ == "__main__":
    report(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 5)
