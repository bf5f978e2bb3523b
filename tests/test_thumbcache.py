"""The web app's thumbnail cache: made once, matched to the file as it is, never in the way."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from fixtures.shapes import draw
from PIL import Image

from clipd import thumbcache
from clipd.thumbcache import THUMBNAIL_SIDE, ThumbnailCache


def test_a_thumbnail_fits_the_side_and_is_never_enlarged() -> None:
    big = draw("red", "circle", (1200, 900), random.Random(1))
    with Image.open(io.BytesIO(thumbcache.encode(big))) as fitted:
        assert (fitted.format, fitted.size) == ("JPEG", (THUMBNAIL_SIDE, 300))
    small = draw("red", "circle", (120, 90), random.Random(1))
    with Image.open(io.BytesIO(thumbcache.encode(small))) as kept:
        assert kept.size == (120, 90)
    assert thumbcache.big_enough(big, 4000, 3000)
    assert thumbcache.big_enough(small, 120, 90)  # the whole original
    assert not thumbcache.big_enough(small, 1200, 900)  # decoded too small for the model


def test_a_thumbnail_matches_only_the_file_it_was_made_from(tmp_path: Path) -> None:
    cache = ThumbnailCache(tmp_path / "thumbs.db")
    try:
        cache.put("/pics/a.jpg", 100, 5, b"one")
        assert cache.get("/pics/a.jpg", 100, 5) == b"one"
        assert cache.get("/pics/a.jpg", 100, 6) is None  # modified since
        assert cache.get("/pics/a.jpg", 101, 5) is None
        cache.put("/pics/a.jpg", 100, 6, b"two")  # replaces the old one
        assert cache.get("/pics/a.jpg", 100, 6) == b"two"
        cache.put("/pics/b.jpg", 1, 1, b"three")
        assert cache.keep_only({"/pics/b.jpg"}) == 1
        assert cache.get("/pics/a.jpg", 100, 6) is None
        assert cache.get("/pics/b.jpg", 1, 1) == b"three"
    finally:
        cache.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_cache_that_cannot_be_written_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cache = ThumbnailCache(locked / "thumbs.db")
    try:
        cache.put("/pics/a.jpg", 1, 1, b"x")
        assert cache.get("/pics/a.jpg", 1, 1) is None
        assert "thumbnails are made on every view" in caplog.text
    finally:
        cache.close()


def test_a_damaged_cache_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    damaged = tmp_path / "thumbs.db"
    damaged.write_bytes(b"this is not a database" * 100)
    cache = ThumbnailCache(damaged)
    try:
        cache.put("/pics/a.jpg", 1, 1, b"x")
        assert cache.get("/pics/a.jpg", 1, 1) is None
        assert cache.keep_only(set()) == 0
        assert "thumbnails are made on every view" in caplog.text
    finally:
        cache.close()
