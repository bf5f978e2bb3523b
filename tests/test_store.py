"""The store's behaviour: ordering, filters, atomicity, schema.

The shared rules run against every backend (the `db` fixture): SQLite searching its RAM copy
or vec0, and PostgreSQL searching exactly or by its HNSW index. The tests at the end that open
files are SQLite's own; PostgreSQL's own are in test_pgstore.py.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from harness import DIM, MODEL, Matrix, record, unit_vectors

from clipd import sqlite, store
from clipd.errors import StoreError
from clipd.pgstore import PostgresStore
from clipd.pgurl import PostgresDatabase
from clipd.records import FailureRecord, ModelIdentity, SearchFilter
from clipd.storage import IndexStore
from clipd.store import Store

# Every backend, and each way it searches.
BACKENDS = ["ram", "vec0", "pg-exact", "pg-hnsw"]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexStore]:
    """A SQLite store searching its RAM copy of the vectors or vec0 (as while that copy loads),
    or a PostgreSQL store scanning exactly or searching its HNSW index (as a big one does)."""
    opened: IndexStore
    if request.param.startswith("pg-"):
        url = request.getfixturevalue("pg_url")
        exact_below = 10**9 if request.param == "pg-exact" else 0
        opened = PostgresStore(PostgresDatabase(url), host="here", exact_below=exact_below)
    else:
        in_memory = request.param == "ram"
        opened = Store(tmp_path / "index.db", in_memory=in_memory, host="here")
        opened.bind_model(MODEL)
        assert opened.in_memory_ready == in_memory
    opened.bind_model(MODEL)
    yield opened
    opened.close()


@pytest.fixture
def filled(db: IndexStore) -> tuple[IndexStore, list[str], Matrix]:
    vectors = unit_vectors(300)
    paths = [f"/pics/{'a' if i % 3 else 'b'}/img{i:03d}.jpg" for i in range(300)]
    db.write_batch([record(p, v) for p, v in zip(paths, vectors, strict=True)], [])
    return db, paths, vectors


def brute_force(paths: list[str], vectors: Matrix, query: Matrix) -> list[tuple[str, float]]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")
    return [(paths[i], float(scores[i])) for i in order]


def test_knn_order_equals_numpy_brute_force(filled: tuple[IndexStore, list[str], Matrix]) -> None:
    db, paths, vectors = filled
    for seed in range(5):
        query = unit_vectors(1, seed=100 + seed)[0]
        hits = db.search(query.tobytes(), limit=25)
        expected = brute_force(paths, vectors, query)[:25]
        assert [h.path for h in hits] == [p for p, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_offset_pages_through_the_same_order(filled: tuple[IndexStore, list[str], Matrix]) -> None:
    db, paths, vectors = filled
    query = vectors[7]
    first = db.search(query.tobytes(), limit=10)
    second = db.search(query.tobytes(), limit=10, offset=10)
    both = db.search(query.tobytes(), limit=20)
    assert [h.path for h in first + second] == [h.path for h in both]
    assert first[0].path == paths[7]
    assert first[0].score == pytest.approx(1.0, abs=1e-5)


def test_min_score_cuts_the_tail(filled: tuple[IndexStore, list[str], Matrix]) -> None:
    db, paths, vectors = filled
    query = vectors[0]
    hits = db.search(query.tobytes(), limit=300, min_score=0.2)
    expected = [p for p, s in brute_force(paths, vectors, query) if s >= 0.2]
    assert [h.path for h in hits] == expected


def test_under_filters_inside_the_knn(filled: tuple[IndexStore, list[str], Matrix]) -> None:
    db, paths, vectors = filled
    query = vectors[1]  # lives in /pics/a
    hits = db.search(query.tobytes(), limit=20, where=SearchFilter(under=("/pics/b/",)))
    in_b = [(p, v) for p, v in zip(paths, vectors, strict=True) if p.startswith("/pics/b/")]
    expected = brute_force([p for p, _ in in_b], np.array([v for _, v in in_b]), query)[:20]
    assert [h.path for h in hits] == [p for p, _ in expected]
    assert len(hits) == 20


def test_hits_carry_their_host_and_a_host_filter_keeps_its_files(
    filled: tuple[IndexStore, list[str], Matrix],
) -> None:
    db, _, vectors = filled
    query = vectors[0].tobytes()
    assert {hit.host for hit in db.search(query, limit=300)} == {"here"}
    assert len(db.search(query, limit=300, where=SearchFilter(hosts=("elsewhere", "here")))) == 300
    assert db.search(query, limit=300, where=SearchFilter(hosts=("elsewhere",))) == []
    assert len(db.vectors(SearchFilter(hosts=("here",)))[0]) == 300
    assert len(db.vectors(SearchFilter(hosts=("elsewhere",)))[0]) == 0


def test_under_respects_directory_boundaries(db: IndexStore) -> None:
    vectors = unit_vectors(3)
    db.write_batch(
        [
            record("/pics/a/x.jpg", vectors[0]),
            record("/pics/ab/y.jpg", vectors[1]),
            record("/pics/a.jpg", vectors[2]),
        ],
        [],
    )
    hits = db.search(vectors[0].tobytes(), limit=10, where=SearchFilter(under=("/pics/a",)))
    assert [h.path for h in hits] == ["/pics/a/x.jpg"]
    single = db.search(
        vectors[0].tobytes(), limit=10, where=SearchFilter(under=("/pics/a.jpg", "/pics/ab"))
    )
    assert {h.path for h in single} == {"/pics/a.jpg", "/pics/ab/y.jpg"}


@pytest.mark.parametrize("db", ["vec0"], indirect=True)
def test_deep_pages_fall_back_to_an_exact_scan(
    filled: tuple[Store, list[str], Matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On vec0, a page past KNN_MAX_K cannot be a KNN: an exact scan gives the same order."""
    db, paths, vectors = filled
    query = vectors[3]
    monkeypatch.setattr(store, "KNN_MAX_K", 50)
    scanned = db.search(query.tobytes(), limit=30, offset=40)
    expected = brute_force(paths, vectors, query)[40:70]
    assert [h.path for h in scanned] == [p for p, _ in expected]
    assert [h.score for h in scanned] == pytest.approx([s for _, s in expected], abs=1e-5)
    under_b = db.search(
        query.tobytes(), limit=30, offset=40, where=SearchFilter(under=("/pics/b",))
    )
    in_b = [(p, s) for p, s in brute_force(paths, vectors, query) if p.startswith("/pics/b/")]
    assert [h.path for h in under_b] == [p for p, _ in in_b[40:70]]


@pytest.mark.parametrize(
    ("db", "knn_max_k"),
    [
        ("ram", store.KNN_MAX_K),
        ("vec0", store.KNN_MAX_K),
        ("vec0", 0),  # 0: the exact scan
        ("pg-exact", 0),
        ("pg-hnsw", 0),
    ],
    indirect=["db"],
)
def test_extension_and_mtime_filters(
    db: IndexStore, knn_max_k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "KNN_MAX_K", knn_max_k)
    vectors = unit_vectors(60)
    names = [f"/pics/img{i:02d}.{('jpg', 'PNG', 'webp')[i % 3]}" for i in range(60)]
    mtimes = [i * 1_000_000_000 for i in range(60)]
    db.write_batch(
        [record(n, v, mtime_ns=t) for n, v, t in zip(names, vectors, mtimes, strict=True)], []
    )
    query = vectors[0].tobytes()

    def found(where: SearchFilter) -> set[str]:
        return {h.path for h in db.search(query, limit=100, where=where)}

    assert found(SearchFilter(extensions=("png",))) == set(names[1::3])
    assert found(SearchFilter(extensions=("jpg", "webp"))) == set(names[0::3] + names[2::3])
    window = SearchFilter(modified_after_ns=10_000_000_000, modified_before_ns=20_000_000_000)
    assert found(window) == set(names[10:20])
    both = SearchFilter(extensions=("jpg",), modified_after_ns=30_000_000_000)
    assert found(both) == {n for n in names[30:] if n.endswith(".jpg")}


def test_offline_files_are_hidden(filled: tuple[IndexStore, list[str], Matrix]) -> None:
    db, _, vectors = filled
    assert db.set_offline("/pics/a", offline=True) == 200
    hits = db.search(vectors[1].tobytes(), limit=50)
    assert len(hits) == 50
    assert all(h.path.startswith("/pics/b/") for h in hits)
    counts = db.counts()
    assert counts.indexed == 100
    assert counts.offline == 200


def test_rewrite_replaces_vector_and_row(db: IndexStore) -> None:
    old, new = unit_vectors(2)
    db.write_batch([record("/p/x.jpg", old, size=1)], [])
    db.write_batch([record("/p/x.jpg", new, size=2)], [])
    assert db.vector_for("/p/x.jpg") == new.tobytes()
    assert db.known_files("/p") == {"/p/x.jpg": (2, 1_000_000_000)}
    assert db.counts().indexed == 1


def test_failures_are_recorded_counted_and_cleared(db: IndexStore) -> None:
    vector = unit_vectors(1)[0]
    db.write_batch([record("/p/ok.jpg", vector)], [])
    bad = FailureRecord("/p/ok.jpg", 5, 6, "CorruptImage", "truncated")
    db.write_batch([], [bad])
    db.write_batch([], [bad])
    assert db.vector_for("/p/ok.jpg") is None  # it changed into something unreadable
    page, total = db.failures(limit=10)
    assert total == 1
    assert page[0].attempts == 2
    assert page[0].error == "CorruptImage"
    assert db.known_failures("/p") == {"/p/ok.jpg": (5, 6)}
    db.write_batch([record("/p/ok.jpg", vector)], [])
    assert db.failures(limit=10)[1] == 0


def test_is_indexed_follows_writes_failures_and_removals(db: IndexStore) -> None:
    vector = unit_vectors(1)[0]
    writes = db.writes
    db.write_batch([record("/p/a.jpg", vector)], [])
    assert db.writes != writes  # what the status cache keys on
    assert db.is_indexed("/p/a.jpg")
    assert not db.is_indexed("/p/b.jpg")
    assert not db.is_indexed("/p")  # a prefix names no file
    db.write_batch([], [FailureRecord("/p/a.jpg", 5, 6, "CorruptImage", "truncated")])
    assert not db.is_indexed("/p/a.jpg")
    db.write_batch([record("/p/a.jpg", vector)], [])
    db.remove(["/p/a.jpg"])
    assert not db.is_indexed("/p/a.jpg")


def test_remove_deletes_row_vector_and_failure(
    filled: tuple[IndexStore, list[str], Matrix],
) -> None:
    db, paths, vectors = filled
    assert db.remove(paths[:10]) == 10
    assert db.counts().indexed == 290
    hits = db.search(vectors[0].tobytes(), limit=300)
    assert len(hits) == 290
    assert paths[0] not in {h.path for h in hits}


def test_a_failed_batch_writes_nothing(db: IndexStore) -> None:
    vectors = unit_vectors(2)
    wrong_width = np.zeros(DIM + 1, dtype=np.float32)
    with pytest.raises((sqlite.Error, psycopg.Error)):
        db.write_batch([record("/p/a.jpg", vectors[0]), record("/p/b.jpg", wrong_width)], [])
    assert db.counts().indexed == 0
    assert db.known_files("/p") == {}


def test_model_identity_persists_and_a_new_model_drops_old_vectors(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    first = Store(path)
    assert first.model is None
    assert first.bind_model(MODEL) is False
    first.write_batch([record("/p/a.jpg", unit_vectors(1)[0])], [])
    first.close()

    again = Store(path)
    assert again.model == MODEL
    assert again.bind_model(MODEL) is False
    assert again.counts().indexed == 1
    other = ModelIdentity("other", "weights", 8)
    assert again.bind_model(other) is True
    assert again.counts().indexed == 0
    eight = np.full(8, 8**-0.5, dtype=np.float32)
    again.write_batch([record("/p/a.jpg", eight)], [])
    assert again.search(eight.tobytes(), limit=1)[0].path == "/p/a.jpg"
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    Store(path).close()
    conn = sqlite.connect(path)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="written by a newer clipd"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    junk = b"this is not sqlite, it is someone's data" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not a usable clipd database"):
        Store(path)
    assert path.read_bytes() == junk


def test_migrations_are_recorded(tmp_path: Path) -> None:
    Store(tmp_path / "index.db").close()
    conn = sqlite.connect(tmp_path / "index.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def same_hits(ram: Store, vec0: Store, query: Matrix, **kwargs: object) -> list[str]:
    """Search both paths; assert they agree; return the paths found."""
    fast = ram.search(query.tobytes(), **kwargs)  # type: ignore[arg-type]
    slow = vec0.search(query.tobytes(), **kwargs)  # type: ignore[arg-type]
    assert [h.path for h in fast] == [h.path for h in slow]
    assert [h.score for h in fast] == pytest.approx([h.score for h in slow], abs=1e-5)
    assert [(h.width, h.height, h.size_bytes, h.mtime) for h in fast] == [
        (h.width, h.height, h.size_bytes, h.mtime) for h in slow
    ]
    return [h.path for h in fast]


FILTERS = (
    SearchFilter(),
    SearchFilter(under=("/pics/b",)),
    SearchFilter(under=("/pics/c", "/pics/a/sub")),
    SearchFilter(extensions=("png",)),
    SearchFilter(modified_after_ns=50_000_000_000, modified_before_ns=150_000_000_000),
    SearchFilter(under=("/pics/a",), extensions=("jpg",), modified_after_ns=20_000_000_000),
)


def test_ram_and_vec0_paths_agree_after_mixed_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ram = Store(tmp_path / "index.db")
    ram.bind_model(MODEL)
    vec0 = Store(tmp_path / "index.db", in_memory=False)
    assert ram.in_memory_ready
    assert not vec0.in_memory_ready
    vectors = unit_vectors(400, seed=1)
    paths = [
        f"/pics/{'abc'[i % 3]}/{'sub/' if i % 5 == 0 else ''}img{i:03d}.{('jpg', 'png')[i % 2]}"
        for i in range(400)
    ]
    mtimes = [i * 1_000_000_000 for i in range(400)]
    ram.write_batch(
        [record(p, v, mtime_ns=t) for p, v, t in zip(paths, vectors, mtimes, strict=True)], []
    )
    # Changed files get new vectors; some turn unreadable; some are deleted; a folder moves over
    # another; a root goes offline and half of it comes back.
    changed = zip(paths[:40], unit_vectors(40, seed=2), strict=True)
    ram.write_batch([record(p, v) for p, v in changed], [])
    ram.write_batch([], [FailureRecord(p, 1, 1, "CorruptImage", "bad") for p in paths[40:60]])
    ram.remove(paths[60:120:2])
    ram.write_batch([record("/pics/c/new.png", unit_vectors(1, seed=3)[0])], [])
    assert ram.move("/pics/a/sub", "/pics/c/sub") > 0
    ram.set_offline("/pics/c", offline=True)
    ram.set_offline("/pics/c/sub", offline=False)
    # vec0 answers by KNN, and with KNN_MAX_K = 0 by its exact scan.
    for knn_max_k in (store.KNN_MAX_K, 0):
        monkeypatch.setattr(store, "KNN_MAX_K", knn_max_k)
        for seed in range(4):
            query = unit_vectors(1, seed=200 + seed)[0]
            for where in FILTERS:
                found = same_hits(ram, vec0, query, limit=30, where=where)
                assert all(
                    not p.startswith("/pics/c/") or p.startswith("/pics/c/sub/") for p in found
                )
            same_hits(ram, vec0, query, limit=25, offset=50)
            same_hits(ram, vec0, query, limit=400, min_score=0.1)
            same_hits(ram, vec0, query, limit=400, where=SearchFilter(under=("/pics/c/sub",)))
    ram.close()
    vec0.close()


@pytest.mark.parametrize("db", ["ram", "vec0"], indirect=True)
def test_a_reopened_store_loads_its_vectors_into_ram(
    filled: tuple[Store, list[str], Matrix],
) -> None:
    db, paths, vectors = filled
    db.remove(paths[:5])
    reopened = Store(db.path)
    reopened.wait_in_memory()
    assert reopened.in_memory_ready
    vec0 = Store(db.path, in_memory=False)
    for query in vectors[:10]:
        found = same_hits(reopened, vec0, query, limit=20)
        assert paths[0] not in found
    reopened.close()
    vec0.close()


@pytest.mark.parametrize("db", ["ram", "vec0"], indirect=True)
def test_a_new_model_empties_the_ram_copy(db: Store) -> None:
    db.write_batch([record("/p/a.jpg", unit_vectors(1)[0])], [])
    eight = np.full(8, 8**-0.5, dtype=np.float32)
    assert db.bind_model(ModelIdentity("other", "weights", 8)) is True
    assert db.search(eight.tobytes(), limit=5) == []
    db.write_batch([record("/p/b.jpg", eight)], [])
    assert [h.path for h in db.search(eight.tobytes(), limit=5)] == ["/p/b.jpg"]


def test_searches_beside_a_writer_thread_stay_consistent(tmp_path: Path) -> None:
    ram = Store(tmp_path / "index.db")
    ram.bind_model(MODEL)
    vectors = unit_vectors(600, seed=5)
    paths = [f"/pics/{i % 4}/img{i:03d}.jpg" for i in range(600)]
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for start in range(0, 600, 20):
                batch = zip(paths[start : start + 20], vectors[start : start + 20], strict=True)
                ram.write_batch([record(p, v) for p, v in batch], [])
                ram.remove(paths[start : start + 5])
                ram.set_offline("/pics/3", offline=start % 40 == 0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read(seed: int) -> None:
        try:
            while not done.is_set():
                for hit in ram.search(unit_vectors(1, seed)[0].tobytes(), limit=10):
                    assert hit.path in paths
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=read, args=(seed,)) for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    vec0 = Store(tmp_path / "index.db", in_memory=False)
    for query in vectors[::50]:
        assert len(same_hits(ram, vec0, query, limit=50)) == 50
    ram.close()
    vec0.close()


def test_a_new_database_is_private_in_a_private_folder(tmp_path: Path) -> None:
    """The index lists the user's file names: 0600 files (WAL included) in a 0700 folder."""
    database = tmp_path / "made" / "index.db"
    opened = Store(database)
    try:
        opened.bind_model(MODEL)
        opened.write_batch([record("/p/a.jpg", unit_vectors(1)[0])], [])
        assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
        for made in (database, Path(f"{database}-wal")):
            assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    finally:
        opened.close()


@pytest.mark.parametrize("db", ["ram", "vec0"], indirect=True)
def test_size_counts_the_database_and_its_wal(db: Store) -> None:
    db.write_batch([record(f"/p/{n}.jpg", v) for n, v in enumerate(unit_vectors(50))], [])
    wal = Path(f"{db.path}-wal").stat().st_size
    assert wal > 0, "written since the last checkpoint"
    assert db.size_bytes() == db.path.stat().st_size + wal
