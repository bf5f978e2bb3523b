"""The backfill of rows an older clipd indexed without pixel signatures or capture times: one
read per file for both, and passes started only by scans of every root (clipd.backfill)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.exif_time import exif_with_time, utc
from fixtures.shapes import draw
from harness import wait_until

from clipd import images, sqlite
from clipd.backfill import Backfill
from clipd.config import Config, load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.store import Store

STAMP = "2021:04:05 06:07:08"


def photos(root: Path, count: int, seed: int = 0) -> list[Path]:
    """JPEGs that record when they were taken, each a picture of its own."""
    root.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"photo{i}.jpg"
        image = draw("red", "circle", (64, 48), random.Random(seed + i))
        image.save(path, "JPEG", exif=exif_with_time(STAMP, "+00:00", None))
        paths.append(path)
    return paths


def make_old(database: Path) -> None:
    """Make every row look as an older clipd left it: no pixel signature, no capture time."""
    conn = sqlite.connect(database)
    try:
        conn.execute("UPDATE files SET pixels = NULL, taken_ns = NULL, taken_read = 0")
        conn.commit()
    finally:
        conn.close()


def lacking(store: Store) -> tuple[int, int]:
    """(rows without a pixel signature, rows whose capture time was never read)."""
    return store.count_unsigned(), len(store.unread_capture_times(1000))


@pytest.fixture
def config(tmp_path: Path, write_config: ConfigWriter) -> Config:
    (tmp_path / "pics").mkdir()
    return load_config(write_config([tmp_path / "pics"]))


@pytest.fixture
def embedder(config: Config) -> Embedder:
    return Embedder(config.model)


@pytest.fixture
def store(config: Config, embedder: Embedder) -> Iterator[Store]:
    opened = Store(config.database_file)
    opened.bind_model(embedder.identity)
    yield opened
    opened.close()


def test_one_decode_gives_an_old_file_both_its_signature_and_its_capture_time(
    config: Config, embedder: Embedder, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = photos(config.roots[0], 3)
    Indexer(config, store, embedder, Progress()).run_once(config.roots)
    make_old(config.database_file)
    assert lacking(store) == (3, 3)
    decoded: list[str] = []
    headers: list[Path] = []
    read_metadata = images.read_metadata

    def decode(path: str) -> images.DecodedImage:
        decoded.append(path)
        return images.decode_file(Path(path), min_side=32)

    def header(path: Path) -> tuple[int, int, float | None]:
        headers.append(path)
        return read_metadata(path)

    monkeypatch.setattr(images, "read_metadata", header)
    with ThreadPoolExecutor(max_workers=2) as pool:
        backfill = Backfill(store, pool, decode)
        backfill.restart()
        while backfill.pending:
            backfill.step()
    assert sorted(decoded) == sorted(map(str, paths))
    assert headers == []  # the decode gave the capture time: no second read
    assert lacking(store) == (0, 0)
    hits = store.search(store.vectors()[1][0].tobytes(), limit=3)
    assert {hit.taken for hit in hits} == {utc(STAMP)}


def test_only_a_scan_of_every_root_starts_a_pass(
    config: Config, embedder: Embedder, store: Store
) -> None:
    root = config.roots[0]
    photos(root, 2)
    Indexer(config, store, embedder, Progress()).run_once(config.roots)
    make_old(config.database_file)
    indexer = Indexer(config, store, embedder, Progress())
    indexer.start()
    try:
        # A watcher's event names one new file; the job after it ends once its own has.
        photos(root / "new", 1, seed=100)
        indexer.submit([root / "new" / "photo0.jpg"])
        assert indexer.submit([root / "new"]).done.wait(60)
        assert lacking(store) == (2, 2)  # the old rows: untouched by the watcher's jobs

        indexer.submit(config.roots)  # the start-up scan, or a full rescan
        wait_until(lambda: lacking(store) == (0, 0), "the backfill pass", timeout=60)
    finally:
        indexer.stop()
