"""`clipd migrate-store`: an index moved between SQLite and PostgreSQL equals a fresh index of
the same folder there (same files, vectors bit for bit, capture times, pixel signatures, RAW
pairings, failures, model), without running the model; a target holding an index is refused
unless told; and a move back to SQLite gives the original rows again."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import ConfigWriter
from fixtures.dng import make_dng
from fixtures.shapes import draw
from harness import picture, run_clipd
from pgserver import PgServer
from PIL import ExifTags, Image

from clipd import sqlite

pytestmark = pytest.mark.slow

# Everything a row holds but the time it was written and its id.
_COLUMNS = (
    "path, size, mtime_ns, inode, device, content_hash, width, height, state, taken_ns, "
    "taken_read, pixels"
)


def library(root: Path) -> Path:
    """Pictures in two folders, a RAW+JPEG pair, and a file that is not an image."""
    for n, (colour, shape) in enumerate(
        [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    ):
        picture(root / f"d{n % 2}" / f"{colour}.png", colour, shape, seed=n)
    shot = draw("yellow", "circle", (96, 64), random.Random(7))
    (root / "IMG_0001.dng").write_bytes(
        make_dng(shot, taken="2024:02:03 10:11:12", offset="+00:00")
    )
    stamp = Image.Exif()
    stamp.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:02:03 10:11:12"
    stamp.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] = "+00:00"
    shot.save(root / "IMG_0001.JPG", "JPEG", exif=stamp.tobytes())
    (root / "broken.jpg").write_bytes(b"not a picture at all")
    return root


def sqlite_index(path: Path) -> dict[str, Any]:
    conn = sqlite.connect(path, readonly=True)
    try:
        return {
            "files": {
                row[0]: (*row[1:-1], bytes(row[-1]))
                for row in conn.execute(
                    f"SELECT {', '.join('f.' + c.strip() for c in _COLUMNS.split(','))},"
                    " v.embedding FROM files f JOIN vectors v ON v.rowid = f.id"
                )
            },
            "failures": sorted(conn.execute("SELECT path, error, message FROM failures")),
            "pairs": sorted(conn.execute("SELECT * FROM raw_pairs")),
            "model": sorted(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'model%'")),
        }
    finally:
        conn.close()


def postgres_index(url: str, host: str) -> dict[str, Any]:
    def rows(sql: str, params: tuple[str, ...] = (host,)) -> list[tuple[Any, ...]]:
        found = conn.execute(sql, params).fetchall()
        return sorted(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                      for row in found)  # fmt: skip

    with psycopg.connect(url) as conn:
        files = {
            row[0]: (*row[1:-1], np.asarray(row[-1], dtype="<f4").tobytes())
            for row in rows(
                f"SELECT {_COLUMNS}, embedding::real[] FROM clipd_files WHERE host = %s"
            )
        }
        return {
            "files": files,
            "failures": rows("SELECT path, error, message FROM clipd_failures WHERE host = %s"),
            "pairs": rows(
                "SELECT path, size, mtime_ns, partner, partner_size, partner_mtime_ns"
                " FROM clipd_raw_pairs WHERE host = %s"
            ),
            "model": rows("SELECT key, value FROM clipd_meta WHERE key LIKE 'model%%'", ()),
        }


def comparable(index: dict[str, Any]) -> dict[str, Any]:
    """Rows as both stores hold them: SQLite's 0/1 and PostgreSQL's booleans alike."""
    files = {
        path: tuple(int(v) if isinstance(v, bool) else v for v in row)
        for path, row in index["files"].items()
    }
    pairs = [tuple(row) for row in index["pairs"]]
    return {**index, "files": files, "pairs": pairs,
            "failures": [tuple(row) for row in index["failures"]]}  # fmt: skip


def test_sqlite_to_postgresql_and_back_equals_a_fresh_index(
    pg_server: PgServer, tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = library(tmp_path / "photos")
    sqlite_db = tmp_path / "index.db"
    config = write_config([root], database=str(sqlite_db), host="alpha")
    indexed = run_clipd("index", "--config", str(config), str(root))
    assert indexed.returncode == 0, indexed.stderr
    original = sqlite_index(sqlite_db)
    assert len(original["files"]) == 4
    assert original["failures"]
    assert original["pairs"]

    moved_url = pg_server.url(pg_server.create_database())
    moved = run_clipd("migrate-store", str(sqlite_db), moved_url, "--host", "alpha")
    assert moved.returncode == 0, moved.stderr
    assert "4 files" in moved.stdout

    fresh_url = pg_server.url(pg_server.create_database())
    fresh_config = write_config([root], database=fresh_url, host="alpha")
    fresh = run_clipd("index", "--config", str(fresh_config), str(root))
    assert fresh.returncode == 0, fresh.stderr
    assert comparable(postgres_index(moved_url, "alpha")) == comparable(
        postgres_index(fresh_url, "alpha")
    )

    # And back into a new SQLite file: the original rows again.
    back = tmp_path / "back.db"
    returned = run_clipd("migrate-store", moved_url, str(back), "--host", "alpha")
    assert returned.returncode == 0, returned.stderr
    assert comparable(sqlite_index(back)) == comparable(original)


def test_a_target_holding_an_index_is_refused_unless_told(
    pg_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "photos"
    picture(root / "red.png", "red", "circle")
    sqlite_db = tmp_path / "index.db"
    config = write_config([root], database=str(sqlite_db), host="alpha")
    assert run_clipd("index", "--config", str(config), str(root)).returncode == 0
    assert run_clipd("migrate-store", str(sqlite_db), pg_url, "--host", "alpha").returncode == 0
    picture(root / "blue.png", "blue", "square")
    assert run_clipd("index", "--config", str(config), str(root)).returncode == 0

    again = run_clipd("migrate-store", str(sqlite_db), pg_url, "--host", "alpha")
    assert again.returncode != 0
    assert "--replace" in again.stderr
    assert set(postgres_index(pg_url, "alpha")["files"]) == {str(root / "red.png")}

    replaced = run_clipd("migrate-store", str(sqlite_db), pg_url, "--host", "alpha", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert set(postgres_index(pg_url, "alpha")["files"]) == {
        str(root / "red.png"),
        str(root / "blue.png"),
    }
