"""A real `clipd serve` with the tiny model on one picture saved in every format it reads."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.dng import make_dng
from fixtures.shapes import COLOURS, SHAPES, draw
from harness import daemon_process, run_clipq_process, wait_until_indexed
from PIL import ExifTags, Image

import clipd.formats  # (also registers the HEIF and JPEG XL plugins used to write files)
from clipd.config import load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.store import Store
from clipq import Client

# The same red circle in every format; HEIC stands first as the one phones write.
SAME_PICTURE = {"HEIF": "heic", "JPEG": "jpg", "AVIF": "avif", "JXL": "jxl", "DNG": "dng"}
TAKEN = "2022:08:14 09:15:00"
TAKEN_AT = datetime(2022, 8, 14, 9, 15, tzinfo=timezone.utc).timestamp()


def save(picture: Image.Image, path: Path, fmt: str, exif: bytes) -> None:
    if fmt == "DNG":
        path.write_bytes(make_dng(picture, taken=TAKEN, offset="+00:00"))
        return
    buffer = io.BytesIO()
    picture.save(buffer, fmt, quality=90, exif=exif)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def library(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Path]:
    """A daemon serving the red circle in every format among distractors of every other class."""
    root = tmp_path / "pics"
    root.mkdir()
    rng = random.Random(13)
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = TAKEN
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] = "+00:00"
    circle = draw("red", "circle", (320, 240), rng)
    for fmt, ext in SAME_PICTURE.items():
        save(circle, root / f"circle.{ext}", fmt, exif.tobytes())
    for colour in COLOURS:
        for shape in SHAPES:
            if (colour, shape) != ("red", "circle"):
                draw(colour, shape, (320, 240), rng).save(root / f"{colour}-{shape}.jpg")
    # circle.jpg and circle.dng would be a RAW + JPEG pair (test_pairs.py): index every file.
    with daemon_process(write_config([root], raw_pairs="both")) as process:
        wait_until_indexed(len(SAME_PICTURE) + 11, 0)
        yield root
    assert "Traceback" not in process.output


@pytest.mark.slow
def test_every_format_of_one_picture_is_found_alike(library: Path) -> None:
    result = run_clipq_process("--json", "-n", str(len(SAME_PICTURE)), "a red circle")
    assert result.returncode == 0, result.stderr
    hits = {Path(hit["path"]).suffix[1:]: hit for hit in json.loads(result.stdout)}
    assert set(hits) == set(SAME_PICTURE.values()), "the top hits are the circle, every format"
    jpeg = hits["jpg"]["score"]
    for ext, hit in hits.items():
        assert hit["score"] == pytest.approx(jpeg, abs=0.03), ext
        assert (hit["width"], hit["height"]) == (320, 240), ext
        assert hit["taken"] == TAKEN_AT, ext

    with Client() as client:
        # Nothing was taken before the circle: the distractors have no capture time and count
        # by their mtime, which is now.
        assert len(client.search("a red circle", taken_before=TAKEN_AT, limit=50)) == 0
        after = client.search("a red circle", taken_after=TAKEN_AT, limit=50)
        assert len(after) == len(SAME_PICTURE) + 11
        for ext in ("heic", "dng", "jxl"):
            thumbnail = client.thumbnail(library / f"circle.{ext}", max_side=64)
            with Image.open(io.BytesIO(thumbnail.data)) as im:
                assert im.format == "PNG"
                assert max(im.size) == 64
                red, green, blue = im.convert("RGB").getpixel((32, 24))  # type: ignore[misc]
                assert red > 150 > green, (ext, red, green, blue)


def test_a_missing_decoder_fails_its_files_until_a_restart_finds_it(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    draw("red", "circle", (64, 48), random.Random(1)).save(root / "phone.heic", "HEIF")
    config = load_config(write_config([root]))
    store = Store(config.database_file)
    try:
        embedder = Embedder(config.model)
        store.bind_model(embedder.identity)
        with monkeypatch.context() as without_heif:
            without_heif.setitem(clipd.formats.AVAILABLE, clipd.formats.HEIF, False)
            job = Indexer(config, store, embedder, Progress()).run_once([root])
            assert (job.indexed, job.failed) == (0, 1)
            (failure,), _ = store.failures(limit=10)
            assert failure.error == "MissingDecoder"
            assert "pip install pillow-heif" in failure.message
        job = Indexer(config, store, embedder, Progress()).run_once([root])  # a restart
        assert (job.indexed, job.failed) == (1, 0)
        assert store.failures(limit=10) == ([], 0)
    finally:
        store.close()
