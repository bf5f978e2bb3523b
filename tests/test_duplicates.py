"""Duplicate groups from a real store: tiers, pixel confirmation, exact bytes, order, paging.

The vectors here are made up, and made as bad as can be: every red-circle picture gets the same
CLIP vector, so only the pixel signatures (from the real files) can tell copies from other
pictures of the subject. tests/test_duplicates_daemon.py runs the real model end to end.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fixtures.near_copies import NearCopies, picture, write_big_twins, write_near_copies

from clipd import images, neighbours, pixels, sqlite
from clipd import store as store_module
from clipd.backfill import Backfill
from clipd.duplicates import DEFAULT_THRESHOLD, Criteria, DuplicateFinder, DuplicatesReport
from clipd.records import FileRecord, ModelIdentity
from clipd.scanner import content_hash
from clipd.store import Store

DIM = 32
Matrix = npt.NDArray[np.float32]


def unit(vector: Matrix) -> Matrix:
    normalised: Matrix = (vector / np.linalg.norm(vector)).astype(np.float32)
    return normalised


def random_unit(rng: np.random.Generator, count: int, dim: int = DIM) -> Matrix:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    normalised: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised


def indexed_record(path: Path, vector: Matrix, *, signed: bool = True) -> FileRecord:
    """A record as the indexer writes it, from the real file; `vector` stands in for CLIP."""
    st = path.stat()
    decoded = images.decode_file(path, min_side=32)
    return FileRecord(
        str(path),
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        st.st_dev,
        content_hash(str(path), st.st_size),
        decoded.width,
        decoded.height,
        vector.tobytes(),
        pixels=pixels.signature(decoded.image) if signed else None,
    )


@pytest.fixture
def copies(tmp_path: Path) -> NearCopies:
    return write_near_copies(tmp_path / "pics")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "index.db")
    opened.bind_model(ModelIdentity("test", "test", DIM))
    opened.wait_in_memory()
    yield opened
    opened.close()


def fill(store: Store, root: Path, *, signed: bool = True) -> None:
    """Index every file under root. Files of one subject (red circles, twins, squares) get
    one vector plus a little noise, as if CLIP could hardly tell them apart."""
    rng = np.random.default_rng(1)
    subjects = {name: random_unit(rng, 1)[0] for name in ("twin", "square", "circle")}
    records = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        subject = next((name for name in subjects if name in path.name), "circle")
        vector = unit(subjects[subject] + 0.2 * random_unit(rng, 1)[0])  # cos ~0.96
        records.append(indexed_record(path, vector, signed=signed))
    store.write_batch(records, [])


def groups_of(report: DuplicatesReport) -> set[tuple[str, frozenset[str]]]:
    return {(g.tier, frozenset(f.path for f in g.files)) for g in report.groups}


def every_group(copies: NearCopies) -> set[tuple[str, frozenset[str]]]:
    return expected(
        ("exact", copies.exact[0]),
        ("reencoded", copies.reencoded[0]),
        ("variant", copies.variant[0]),
    )


def expected(*groups: tuple[str, list[Path]]) -> set[tuple[str, frozenset[str]]]:
    return {(tier, frozenset(map(str, paths))) for tier, paths in groups}


def test_copies_are_grouped_by_tier_and_other_pictures_stay_apart(
    store: Store, copies: NearCopies
) -> None:
    fill(store, copies.root)
    report = DuplicateFinder(store).find(Criteria())
    assert groups_of(report) == expected(
        ("exact", copies.exact[0]),
        ("reencoded", copies.reencoded[0]),
        ("variant", copies.variant[0]),
    )
    assert report.total == 3
    assert report.unchecked == 0
    grouped = {f.path for g in report.groups for f in g.files}
    assert not grouped & {str(p) for p in copies.alone}


def test_clip_alone_would_have_grouped_the_other_pictures(store: Store, copies: NearCopies) -> None:
    """The premise of the test above: CLIP puts every red circle together."""
    fill(store, copies.root)
    ids, vectors = store.vectors()
    paths = {c.file_id: c.path for c in store.candidates(ids.tolist()).values()}
    row = {paths[i]: r for r, i in enumerate(ids.tolist())}
    low, left = vectors[row[str(copies.alone[0])]], vectors[row[str(copies.exact[0][0])]]
    assert float(low @ left) > DEFAULT_THRESHOLD


def test_tiers_nest_a_stricter_tier_splits_looser_groups(store: Store, copies: NearCopies) -> None:
    fill(store, copies.root)
    finder = DuplicateFinder(store)
    high, _, bright = copies.variant[0]
    assert groups_of(finder.find(Criteria(tier="reencoded"))) == expected(
        ("exact", copies.exact[0]),
        ("reencoded", copies.reencoded[0]),
        ("reencoded", [high, bright]),
    )
    assert groups_of(finder.find(Criteria(tier="exact"))) == expected(("exact", copies.exact[0]))


def test_a_group_with_an_exact_copy_and_a_variant_is_a_variant(
    store: Store, copies: NearCopies
) -> None:
    high = copies.variant[0][0]
    shutil.copyfile(high, copies.root / "backup" / "high.png")
    fill(store, copies.root)
    finder = DuplicateFinder(store)
    variants = [g for g in finder.find(Criteria()).groups if g.tier == "variant"]
    assert {f.path for f in variants[0].files} == {
        *map(str, copies.variant[0]),
        str(copies.root / "backup" / "high.png"),
    }
    exact = groups_of(finder.find(Criteria(tier="exact")))
    assert ("exact", frozenset({str(high), str(copies.root / "backup" / "high.png")})) in exact


def test_exact_means_the_same_bytes_not_the_same_stored_hash(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    first, second = write_big_twins(root)
    assert content_hash(str(first), first.stat().st_size) == content_hash(
        str(second), second.stat().st_size
    )
    shutil.copyfile(first, root / "twin-copy.bmp")
    fill(store, root)
    assert groups_of(DuplicateFinder(store).find(Criteria(tier="exact"))) == expected(
        ("exact", [first, root / "twin-copy.bmp"])
    )
    assert groups_of(DuplicateFinder(store).find(Criteria())) == expected(
        ("reencoded", [first, second, root / "twin-copy.bmp"])
    )


def test_a_copy_deleted_since_it_was_indexed_is_no_exact_copy(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    first, _ = write_big_twins(root)
    shutil.copyfile(first, root / "twin-copy.bmp")
    fill(store, root)
    (root / "twin-copy.bmp").unlink()
    assert DuplicateFinder(store).find(Criteria(tier="exact")).groups == ()


def test_under_limits_the_files_compared(store: Store, copies: NearCopies) -> None:
    fill(store, copies.root)
    exports = copies.root / "exports"
    report = DuplicateFinder(store).find(Criteria(under=(str(exports),)))
    assert groups_of(report) == expected(
        ("reencoded", copies.reencoded[0][1:]), ("variant", copies.variant[0][1:])
    )


def test_a_higher_threshold_drops_the_pairs_clip_puts_apart(
    store: Store, copies: NearCopies
) -> None:
    fill(store, copies.root)
    right, small, webp = copies.reencoded[0]
    ids, vectors = store.vectors()
    rows = {c.path: ids.tolist().index(c.file_id) for c in store.candidates(ids.tolist()).values()}
    closest = max(float(vectors[rows[str(small)]] @ vectors[rows[str(p)]]) for p in (right, webp))
    finder = DuplicateFinder(store)
    below = finder.find(Criteria(threshold=closest - 0.001))
    above = finder.find(Criteria(threshold=closest + 0.001))
    assert str(small) in {f.path for g in below.groups for f in g.files}
    assert str(small) not in {f.path for g in above.groups for f in g.files}


def test_files_come_best_kept_first_scored_against_the_first(
    store: Store, copies: NearCopies
) -> None:
    right = copies.reencoded[0][0]
    shutil.copyfile(right, copies.root / "right.dng")  # a RAW stands first, whatever its size
    fill(store, copies.root)
    report = DuplicateFinder(store).find(Criteria(tier="reencoded"))
    group = next(g for g in report.groups if str(right) in {f.path for f in g.files})
    assert [f.path for f in group.files] == [
        str(copies.root / "right.dng"),  # RAW
        str(right),  # 640x480, the most bytes
        str(copies.root / "exports" / "right.webp"),  # 640x480, fewer bytes
        str(copies.root / "exports" / "right-small.jpg"),  # 320x240
    ]
    assert group.files[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(0.9 <= f.score <= 1.0001 for f in group.files)
    assert (group.files[3].width, group.files[3].height) == (320, 240)


def test_groups_are_paged_in_a_stable_order(store: Store, copies: NearCopies) -> None:
    fill(store, copies.root)
    finder = DuplicateFinder(store)
    everything = finder.find(Criteria()).groups
    assert [g.tier for g in everything] == ["exact", "reencoded", "variant"]
    pages = [finder.find(Criteria(limit=1, offset=i)) for i in range(4)]
    assert [p.groups for p in pages] == [everything[:1], everything[1:2], everything[2:], ()]
    assert {p.total for p in pages} == {3}


def test_pages_come_from_one_search_until_the_store_is_written(
    store: Store, copies: NearCopies, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, copies.root)
    searches = []
    similar_pairs = neighbours.similar_pairs

    def counted(vectors: Matrix, threshold: float, k: int) -> neighbours.Pairs:
        searches.append(threshold)
        return similar_pairs(vectors, threshold, k)

    monkeypatch.setattr(neighbours, "similar_pairs", counted)
    finder = DuplicateFinder(store)
    pages = [finder.find(Criteria(limit=1, offset=i)) for i in range(3)]
    assert len(searches) == 1
    assert [g.tier for p in pages for g in p.groups] == ["exact", "reencoded", "variant"]
    finder.find(Criteria(threshold=0.95))  # other criteria: another search, kept beside it
    finder.find(Criteria(limit=2))
    assert searches == [DEFAULT_THRESHOLD, 0.95]

    store.remove([str(copies.exact[0][1])])  # any write: every kept answer is out of date
    after = finder.find(Criteria())
    assert len(searches) == 3
    assert [g.tier for g in after.groups] == ["reencoded", "variant"]


def test_unsigned_files_are_only_exact_until_the_backfill_signs_them(
    store: Store, copies: NearCopies
) -> None:
    fill(store, copies.root, signed=False)
    finder = DuplicateFinder(store)
    before = finder.find(Criteria())
    assert groups_of(before) == expected(("exact", copies.exact[0]))
    assert before.unchecked == sum(1 for p in copies.root.rglob("*") if p.is_file())

    def decode(path: str) -> images.DecodedImage:
        return images.decode_file(Path(path), min_side=32)

    (copies.root / "blue-square.png").write_bytes(b"changed since it was indexed")
    with ThreadPoolExecutor(max_workers=2) as pool:
        backfill = Backfill(store, pool, decode)
        backfill.restart()
        while backfill.pending:
            backfill.step()
    after = finder.find(Criteria())
    assert groups_of(after) == expected(
        ("exact", copies.exact[0]),
        ("reencoded", copies.reencoded[0]),
        ("variant", copies.variant[0]),
    )
    assert after.unchecked == 1  # the changed file waits for its rescan


# -- the pieces -------------------------------------------------------------------------------


def test_pixel_similarity_tells_copies_from_other_pictures() -> None:
    left = picture("left")
    signature = pixels.as_rows([pixels.signature(left)])

    def score(image: object) -> float:
        other = pixels.as_rows([pixels.signature(image)])  # type: ignore[arg-type]
        return float(pixels.similarity(signature, other)[0])

    assert score(left.resize((200, 150))) >= 0.99
    assert score(picture("right")) < 0.9
    assert score(picture("low")) < 0.9


def test_flat_pictures_match_only_themselves() -> None:
    grey = bytes([128]) * pixels.SIZE
    black = bytes(pixels.SIZE)
    rows = pixels.as_rows([grey, grey, black])
    assert pixels.similarity(rows[:2], rows[[1, 2]]).tolist() == [1.0, 0.0]


def planted(count: int, copies: int, dim: int, seed: int) -> tuple[Matrix, set[tuple[int, int]]]:
    """Random unit vectors, the last `copies` of which are near copies (cos 0.93-0.99)."""
    rng = np.random.default_rng(seed)
    vectors = random_unit(rng, count, dim)
    pairs = set()
    for copy, source in enumerate(rng.choice(count - copies, copies, replace=False)):
        target = count - copies + copy
        noise = random_unit(rng, 1, dim)[0]
        noise = unit(noise - (noise @ vectors[source]) * vectors[source])
        cos = rng.uniform(0.93, 0.99)
        vectors[target] = unit(cos * vectors[source] + np.sqrt(1 - cos * cos) * noise)
        pairs.add((int(source), target))
    return vectors, pairs


def as_set(found: neighbours.Pairs) -> set[tuple[int, int]]:
    return set(zip(found.left.tolist(), found.right.tolist(), strict=True))


def test_a_small_set_gets_exactly_the_pairs_above_the_threshold() -> None:
    vectors, _ = planted(400, 40, DIM, seed=2)
    scores = vectors @ vectors.T
    truth = {(i, j) for i, j in zip(*np.nonzero(scores >= 0.9), strict=True) if i < j}
    found = neighbours.similar_pairs(vectors, 0.9, k=400)
    assert as_set(found) == truth
    assert np.allclose(found.scores, scores[found.left, found.right], atol=1e-5)


def test_a_large_set_is_searched_in_buckets_and_still_finds_near_copies() -> None:
    count = 3 * neighbours.EXACT_ROWS
    vectors, pairs = planted(count, 150, 64, seed=3)
    found = neighbours.similar_pairs(vectors, 0.9, k=8)
    # Approximate by design; random vectors are its worst case (bench/duplicates.py measures).
    assert len(as_set(found) & pairs) >= 0.97 * len(pairs)
    assert len(found) < len(pairs) * 2  # random vectors are far apart: little else is found
    assert (found.scores >= 0.9).all()


def test_each_vector_keeps_only_k_neighbours_yet_a_burst_stays_connected() -> None:
    rng = np.random.default_rng(4)
    frame = random_unit(rng, 1)[0]
    burst = np.stack([unit(frame + 0.01 * v) for v in random_unit(rng, 60)])
    found = neighbours.similar_pairs(burst, 0.9, k=3)
    assert len(found) <= 60 * 3
    parent = list(range(60))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in as_set(found):
        parent[root(a)] = root(b)
    assert len({root(i) for i in range(60)}) == 1


def test_a_database_from_before_signatures_keeps_its_vectors_and_lacks_only_pixels(
    tmp_path: Path, copies: NearCopies
) -> None:
    path = copies.exact[0][0]
    vector = random_unit(np.random.default_rng(5), 1)[0]
    made = Store(tmp_path / "old.db")
    made.bind_model(ModelIdentity("test", "test", DIM))
    made.write_batch([indexed_record(path, vector)], [])
    made.close()
    # Back to the schema before migration 0002: no pixels column.
    before = next(i for i, (name, _) in enumerate(store_module.MIGRATIONS) if "pixel" in name)
    conn = sqlite.connect(tmp_path / "old.db")
    conn.execute("DROP INDEX files_unsigned")
    conn.execute("ALTER TABLE files DROP COLUMN pixels")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.commit()
    conn.close()

    upgraded = Store(tmp_path / "old.db")
    try:
        assert upgraded.vector_for(str(path)) == vector.tobytes()
        assert upgraded.count_unsigned() == 1
        assert [row[1] for row in upgraded.unsigned_files(0, 10)] == [str(path)]
    finally:
        upgraded.close()


def test_nothing_indexed_there_means_no_groups(store: Store, copies: NearCopies) -> None:
    finder = DuplicateFinder(store)
    assert finder.find(Criteria()) == DuplicatesReport((), 0, 0)
    fill(store, copies.root)
    assert finder.find(Criteria(under=(str(copies.root / "nowhere"),))) == DuplicatesReport(
        (), 0, 0
    )
