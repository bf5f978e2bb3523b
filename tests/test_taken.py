"""Capture times: reading them from every format, storing them, the migration and its backfill."""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.dng import make_dng
from fixtures.exif_time import OFFSET, STAMP, SUBSEC, exif_with_time, utc
from fixtures.shapes import draw
from PIL import ExifTags, Image

from clipd import images, store, taken
from clipd import sqlite as clipd_sqlite
from clipd.config import load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.records import FileRecord, ModelIdentity, SearchFilter
from clipd.scanner import content_hash
from clipd.store import Store

WHEN = datetime(2021, 6, 5, 12, 30, 15, 250_000, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def in_tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC+9 (no daylight saving), so local readings are told apart from UTC."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def encoded(fmt: str, exif: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buf, fmt, exif=exif)
    return buf.getvalue()


# --- parsing ---------------------------------------------------------------------------------


def test_offset_and_subseconds_give_the_exact_instant() -> None:
    assert taken.parse(STAMP, OFFSET, SUBSEC) == pytest.approx(WHEN)
    assert (
        taken.parse(STAMP, "-05:30")
        == datetime(2021, 6, 5, 20, 0, 15, tzinfo=timezone.utc).timestamp()
    )


@pytest.mark.usefixtures("in_tokyo")
def test_a_time_without_offset_is_local_time() -> None:
    assert taken.parse(STAMP) == datetime(2021, 6, 5, 5, 30, 15, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "    :  :     :  :  ",
        "0000:00:00 00:00:00",
        "2021:13:05 14:30:15",
        "yesterday",
        None,
        42,
    ],
)
def test_unset_or_invalid_times_are_unknown(stamp: object) -> None:
    assert taken.parse(stamp) is None


def test_a_bad_offset_or_subsecond_is_ignored() -> None:
    base = taken.parse(STAMP, "+02:00")
    assert taken.parse(STAMP, "+02:00", "abc") == base
    assert taken.parse(STAMP, "+99:00") is None  # beyond any real zone: the reading is wrong


def test_digitized_time_stands_in_for_a_missing_original() -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeDigitized] = STAMP
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeDigitized] = OFFSET
    assert taken.from_exif(exif) == pytest.approx(WHEN - 0.25)


def test_modification_datetime_is_not_a_capture_time() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = STAMP  # editors rewrite it on every save
    assert taken.from_exif(exif) is None


# --- every format ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF", "JXL"])
def test_every_format_reports_its_capture_time(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "photo"
    path.write_bytes(encoded(fmt, exif_with_time()))
    assert images.decode_file(path).taken == pytest.approx(WHEN)
    assert images.read_metadata(path)[2] == pytest.approx(WHEN)


def test_dng_capture_time(tmp_path: Path) -> None:
    path = tmp_path / "photo.dng"
    path.write_bytes(make_dng(Image.new("RGB", (32, 24)), taken=STAMP, offset=OFFSET))
    assert images.decode_file(path).taken == pytest.approx(WHEN - 0.25)
    assert images.read_metadata(path)[2] == pytest.approx(WHEN - 0.25)


def test_no_metadata_no_capture_time(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    assert images.decode_file(path).taken is None
    assert images.read_metadata(path)[2] is None


# --- the store, the migration and the backfill -----------------------------------------------


def photo(path: Path, colour: str, shape: str, stamp: str | None) -> Path:
    """A shape image saved as JPEG, with a capture time in UTC when stamp is given."""
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = exif_with_time(stamp, "+00:00", None) if stamp else b""
    draw(colour, shape, (64, 64), random.Random(path.name)).save(path, "JPEG", exif=exif)
    return path


def make_old_database(database: Path, embedder: Embedder, root: Path) -> dict[str, bytes]:
    """Index root as clipd did before capture times: schema 0001, rows as its store wrote them."""
    conn = clipd_sqlite.connect(database)
    try:
        _, schema = store.MIGRATIONS[0]
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        identity = embedder.identity
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("model_name", identity.name),
                ("model_pretrained", identity.pretrained),
                ("model_dim", str(identity.dim)),
            ],
        )
        conn.execute(
            f"CREATE VIRTUAL TABLE vectors USING vec0("
            f"embedding float[{identity.dim}] distance_metric=cosine)"
        )
        vectors = {}
        for path in sorted(root.iterdir()):
            st = path.stat()
            decoded = images.decode_file(path)
            vector = embedder.embed_images([decoded.image])[0].tobytes()
            ((file_id,),) = conn.execute(
                "INSERT INTO files (path, size, mtime_ns, inode, device, content_hash, width, "
                "height, indexed_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok') RETURNING id",
                (
                    str(path),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                    st.st_dev,
                    content_hash(str(path), st.st_size),
                    decoded.width,
                    decoded.height,
                    time.time(),
                ),
            ).fetchall()
            conn.execute("INSERT INTO vectors (rowid, embedding) VALUES (?, ?)", (file_id, vector))
            vectors[str(path)] = vector
        conn.commit()
    finally:
        conn.close()
    return vectors


def test_old_database_keeps_its_vectors_and_gains_capture_times(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    dated = photo(root / "dated.jpg", "red", "circle", "2019:07:01 10:00:00")
    undated = photo(root / "undated.jpg", "blue", "square", None)
    config = load_config(write_config([root]))
    embedder = Embedder(config.model)
    vectors = make_old_database(config.database_file, embedder, root)
    assert len(vectors) == 2

    new = Store(config.database_file)
    try:
        assert len(new.unread_capture_times(10)) == 2  # migrated: old rows wait for the backfill
        assert not new.bind_model(embedder.identity)
        indexer = Indexer(config, new, embedder, Progress())
        indexer.run_once([root])
        assert indexer.model_passes == 0, "nothing may be embedded again"
        assert new.unread_capture_times(10) == []
        for path, vector in vectors.items():
            assert new.vector_for(path) == vector
        hits = {hit.path: hit for hit in new.search(vectors[str(dated)], limit=10)}
        assert hits[str(dated)].taken == utc("2019:07:01 10:00:00")
        assert hits[str(undated)].taken is None
    finally:
        new.close()
    conn = clipd_sqlite.connect(config.database_file)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (store.SCHEMA_VERSION,)
    finally:
        conn.close()


def test_backfill_ignores_a_time_read_from_a_changed_file(tmp_path: Path) -> None:
    db = Store(tmp_path / "index.db", in_memory=False)
    try:
        db.bind_model(ModelIdentity("m", "p", 2))
        vector = struct.pack("<2f", 1.0, 0.0)
        record = FileRecord("/a.jpg", 10, 100, 1, 1, b"h", 4, 4, vector, None, taken_read=False)
        db.write_batch([record], [])
        [(file_id, *_)] = db.unread_capture_times(10)
        db.set_capture_times([(file_id, 10, 999, 5 * 10**9)])  # read from a newer file
        assert db.unread_capture_times(10) == []
        [hit] = db.search(vector, limit=1)
        assert hit.taken is None
    finally:
        db.close()


def test_time_filters_use_capture_time_else_mtime(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    old_photo = photo(root / "2015.jpg", "red", "circle", "2015:03:01 12:00:00")
    new_photo = photo(root / "2023.jpg", "red", "square", "2023:03:01 12:00:00")
    undated = photo(root / "scan.jpg", "red", "triangle", None)
    # Every file was copied now; the undated one's mtime says 2018.
    os.utime(undated, (utc("2018:01:01 00:00:00"),) * 2)
    config = load_config(write_config([root]))
    db = Store(config.database_file)
    try:
        embedder = Embedder(config.model)
        db.bind_model(embedder.identity)
        Indexer(config, db, embedder, Progress()).run_once([root])
        query = db.vector_for(str(old_photo))
        assert query is not None

        def found(**window: float) -> set[str]:
            ns = {key: round(value * 1e9) for key, value in window.items()}
            hits = db.search(query, limit=10, where=SearchFilter(**ns))  # type: ignore[arg-type]
            return {Path(hit.path).name for hit in hits}

        assert found(taken_after_ns=utc("2016:01:01 00:00:00")) == {"2023.jpg", "scan.jpg"}
        assert found(taken_before_ns=utc("2016:01:01 00:00:00")) == {"2015.jpg"}
        assert found(
            taken_after_ns=utc("2017:01:01 00:00:00"), taken_before_ns=utc("2019:01:01 00:00:00")
        ) == {"scan.jpg"}
        # Modification times: the two dated photos were written just now.
        assert found(modified_after_ns=utc("2020:01:01 00:00:00")) == {"2015.jpg", "2023.jpg"}
        assert new_photo.exists()
    finally:
        db.close()
