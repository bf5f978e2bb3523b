"""RAW + JPEG pairs: one photo indexed once, the other file named in its hits."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.dng import make_dng
from fixtures.shapes import draw
from PIL import ExifTags, Image

from clipd import images, pairs
from clipd.config import load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.scanner import Matcher
from clipd.store import Store

SHOT = "2024:02:03 10:11:12"


def exif(stamp: str) -> bytes:
    data = Image.Exif()
    data.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = stamp
    data.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] = "+00:00"
    return data.tobytes()


def shot(folder: Path, name: str, *, raw_taken: str = SHOT, jpeg_taken: str | None = SHOT) -> None:
    """name.dng and (unless jpeg_taken is None) name.jpg of one picture, as a camera writes."""
    picture = draw("red", "circle", (96, 64), random.Random(name))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.dng").write_bytes(make_dng(picture, taken=raw_taken, offset="+00:00"))
    if jpeg_taken is not None:
        picture.save(folder / f"{name}.JPG", "JPEG", exif=exif(jpeg_taken))


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (pairs.Metadata(6000, 4000, 100.2), pairs.Metadata(6000, 4000, 100.9), True),
        (pairs.Metadata(6000, 4000, 100.0), pairs.Metadata(4000, 6000, 100.0), True),  # rotated
        (pairs.Metadata(6000, 4000, 100.0), pairs.Metadata(1620, 1080, 100.0), True),  # smaller
        (pairs.Metadata(6000, 4000, 100.0), pairs.Metadata(6000, 4000, 101.0), False),
        (pairs.Metadata(6000, 4000, 100.0), pairs.Metadata(3840, 2160, 100.0), False),  # 16:9
        (pairs.Metadata(6000, 4000, None), pairs.Metadata(6000, 4000, None), False),
    ],
)
def test_same_photo_rule(a: pairs.Metadata, b: pairs.Metadata, same: bool) -> None:
    assert pairs.same_photo(a, b) is same


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "pics"
    shot(root, "IMG_0001")  # a RAW+JPEG pair
    shot(root, "IMG_0002", jpeg_taken="2024:02:03 18:00:00")  # same name, another shot
    shot(root, "IMG_0003", jpeg_taken=None)  # a RAW alone
    return root


class Indexing:
    """Runs scans like successive daemons on one store."""

    def __init__(self, config_path: Path) -> None:
        self.config = load_config(config_path)
        self.store = Store(self.config.database_file)
        self.embedder = Embedder(self.config.model)
        self.store.bind_model(self.embedder.identity)

    def scan(self, *paths: Path) -> None:
        Indexer(self.config, self.store, self.embedder, Progress()).run_once(list(paths))

    def indexed(self) -> set[str]:
        return {Path(p).name for p in self.store.known_files(str(self.config.roots[0]))}

    def paired(self) -> dict[str, tuple[str, ...]]:
        vector = self.store.vector_for(next(iter(self.store.known_files("/"))))
        assert vector is not None
        hits = self.store.search(vector, limit=100)
        return {Path(h.path).name: tuple(Path(p).name for p in h.paired) for h in hits if h.paired}


@pytest.fixture
def indexing(
    library: Path, write_config: ConfigWriter, request: pytest.FixtureRequest
) -> Iterator[Indexing]:
    mode = getattr(request, "param", "prefer_jpeg")
    run = Indexing(write_config([library], raw_pairs=mode))
    yield run
    run.store.close()


@pytest.mark.parametrize(
    ("indexing", "expected", "paired"),
    [
        ("prefer_jpeg", {"IMG_0001.JPG"}, {"IMG_0001.JPG": ("IMG_0001.dng",)}),
        ("prefer_raw", {"IMG_0001.dng"}, {"IMG_0001.dng": ("IMG_0001.JPG",)}),
        ("both", {"IMG_0001.JPG", "IMG_0001.dng"}, {}),
    ],
    indirect=["indexing"],
)
def test_a_pair_is_indexed_once_and_names_its_other_file(
    indexing: Indexing, library: Path, expected: set[str], paired: dict[str, tuple[str, ...]]
) -> None:
    indexing.scan(library)
    others = {"IMG_0002.dng", "IMG_0002.JPG", "IMG_0003.dng"}  # never paired
    assert indexing.indexed() == expected | others
    assert indexing.paired() == paired


def test_an_unchanged_pair_is_not_read_again(
    indexing: Indexing, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexing.scan(library)
    reads: list[Path] = []
    real = images.read_metadata

    def counting(path: Path) -> tuple[int, int, float | None]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(images, "read_metadata", counting)
    indexing.scan(library)
    # Only the pair that is not one photo is read again (it has no record to trust).
    assert {p.stem for p in reads} == {"IMG_0002"}
    assert "IMG_0001.dng" not in indexing.indexed()


def test_files_of_a_pair_arriving_one_by_one(indexing: Indexing, library: Path) -> None:
    jpeg, raw = library / "IMG_0001.JPG", library / "IMG_0001.dng"
    moved = library.parent / "IMG_0001.JPG"
    jpeg.rename(moved)
    indexing.scan(library)
    assert "IMG_0001.dng" in indexing.indexed()
    # The JPEG lands; the watcher names only it: the RAW it stands for leaves the index.
    moved.rename(jpeg)
    indexing.scan(jpeg)
    assert {"IMG_0001.JPG"} <= indexing.indexed()
    assert "IMG_0001.dng" not in indexing.indexed()
    assert indexing.paired() == {"IMG_0001.JPG": ("IMG_0001.dng",)}
    # The JPEG is deleted; the watcher names only it: the RAW is indexed again.
    jpeg.unlink()
    indexing.scan(jpeg)
    assert "IMG_0001.dng" in indexing.indexed()
    assert "IMG_0001.JPG" not in indexing.indexed()
    # The JPEG is back, then the RAW is deleted: the JPEG no longer names it.
    shot(library, "IMG_0001")
    indexing.scan(jpeg)
    assert indexing.paired() == {"IMG_0001.JPG": ("IMG_0001.dng",)}
    raw.unlink()
    indexing.scan(library)
    assert indexing.store.paired_paths(str(library)) == []
    assert indexing.paired() == {}


def test_siblings_of_many_files_list_their_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    for number in range(5):
        shot(root, f"IMG_{number:04d}")
    (root / "notes.txt").write_text("not a picture")
    listed: list[str] = []
    listdir = os.listdir

    def counted(path: Path) -> list[str]:
        listed.append(str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counted)
    store = Store(tmp_path / "index.db")
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            planner = pairs.Planner(store, pool)
            # What a watcher reports when a camera card is copied: every JPEG, one event each.
            events = [root / f"IMG_{number:04d}.JPG" for number in range(5)]
            found = planner.siblings(events, [root], Matcher(["*.dng", "*.jpg"], [], True))
    finally:
        store.close()
    assert found == [root / f"IMG_{number:04d}.dng" for number in range(5)]
    assert listed == [str(root)]
