"""The PostgreSQL store's own rules, on a real PostgreSQL with pgvector: hosts own their rows,
one live daemon per host, one model per database, migrations, reconnection, exact and
approximate searches agreeing. The rules it shares with SQLite are in test_store.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from harness import MODEL, record, unit_vectors
from pgserver import PgServer

from clipd import pgstore
from clipd.errors import AlreadyRunning, StoreError, StoreUnavailable
from clipd.pgschema import MIGRATIONS, host_key
from clipd.pgstore import EXACT_BELOW, PostgresStore, SharedThumbnails
from clipd.pgurl import PostgresDatabase
from clipd.records import FailureRecord, ModelIdentity, SearchFilter


def open_store(url: str, host: str, exact_below: int = EXACT_BELOW) -> PostgresStore:
    store = PostgresStore(PostgresDatabase(url), host=host, exact_below=exact_below)
    store.bind_model(MODEL)
    return store


@pytest.fixture
def two_hosts(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two machines' stores on one database, each with files under /pics/ and its own root."""
    first, second = open_store(pg_url, "alpha"), open_store(pg_url, "beta")
    vectors = unit_vectors(40, seed=3)
    first.write_batch([record(f"/pics/a{i:02d}.jpg", v) for i, v in enumerate(vectors[:20])], [])
    second.write_batch([record(f"/pics/a{i:02d}.jpg", v) for i, v in enumerate(vectors[20:])], [])
    yield first, second
    first.close()
    second.close()


def test_every_host_sees_every_hit_with_its_host(
    two_hosts: tuple[PostgresStore, PostgresStore],
) -> None:
    first, _ = two_hosts
    query = unit_vectors(1, seed=9)[0].tobytes()
    for store in two_hosts:
        hits = store.search(query, limit=100)
        assert len(hits) == 40
        assert {hit.host for hit in hits} == {"alpha", "beta"}
        assert store.counts().indexed == 40
    only_beta = first.search(query, limit=100, where=SearchFilter(hosts=("beta",)))
    assert len(only_beta) == 20
    assert {hit.host for hit in only_beta} == {"beta"}


def test_a_host_changes_only_its_own_rows(two_hosts: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = two_hosts
    assert set(first.known_files("/pics")) == {f"/pics/a{i:02d}.jpg" for i in range(20)}
    assert first.remove(["/pics/a00.jpg"]) == 1
    assert first.move("/pics/a01.jpg", "/pics/moved.jpg") == 1
    assert first.set_offline("/pics", offline=True) == 19
    first.write_batch([], [FailureRecord("/pics/a02.jpg", 1, 1, "CorruptImage", "bad")])
    assert first.indexed_outside(["/elsewhere"]) != []
    # beta's rows of the same paths are untouched: all 20 online, none moved, none failed.
    assert set(second.known_files("/pics")) == {f"/pics/a{i:02d}.jpg" for i in range(20)}
    assert second.vector_for("/pics/a00.jpg") is not None
    assert second.failures(limit=10)[1] == 0
    query = unit_vectors(1, seed=9)[0].tobytes()
    assert {hit.host for hit in second.search(query, limit=100)} == {"beta"}
    assert len(second.search(query, limit=100)) == 20
    assert first.counts().failed == 1
    assert second.counts().failed == 0


def test_two_hosts_writing_at_once_keep_each_others_rows_whole(
    two_hosts: tuple[PostgresStore, PostgresStore],
) -> None:
    """alpha indexes batch after batch while beta renames, deletes and reconciles the same
    paths of its own at the same moment: neither loses, doubles or changes the other's rows."""
    alpha, beta = two_hosts
    vectors = unit_vectors(400, seed=11)
    batches = [
        [record(f"/pics/new/{n:03d}.jpg", vectors[n]) for n in range(start, start + 40)]
        for start in range(0, 400, 40)
    ]

    def index_on_alpha() -> None:
        for batch in batches:
            alpha.write_batch(batch, [])

    def reconcile_on_beta() -> None:
        for i in range(20):
            beta.move(f"/pics/a{i:02d}.jpg", f"/pics/new/{i:03d}.jpg")  # alpha's paths too
            beta.known_files("/pics")
            beta.indexed_outside(["/pics/new"])
        beta.remove([f"/pics/new/{i:03d}.jpg" for i in range(10)])

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(index_on_alpha), pool.submit(reconcile_on_beta)]:
            done.result()
    alpha_files = set(alpha.known_files("/pics"))
    assert alpha_files == {f"/pics/a{i:02d}.jpg" for i in range(20)} | {
        f"/pics/new/{n:03d}.jpg" for n in range(400)
    }
    assert set(beta.known_files("/pics")) == {f"/pics/new/{i:03d}.jpg" for i in range(10, 20)}
    assert alpha.counts().indexed == 420 + 10  # every host's rows: alpha's 420, beta's 10
    assert alpha.vector_for("/pics/new/005.jpg") == vectors[5].tobytes()


def test_writes_holds_until_a_host_writes(
    two_hosts: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status and duplicate answers are cached while `writes` holds: it must hold while
    nothing changes, move at once on this host's write and soon after another host's."""
    alpha, beta = two_hosts
    before = alpha.writes
    alpha.counts(), alpha.search(unit_vectors(1, seed=1)[0].tobytes(), limit=5)  # reads only
    alpha.put_thumbnail("/pics/a01.jpg", 100, 1_000_000_000, b"a kept picture")  # no count moves
    assert alpha.writes == before
    assert alpha.remove(["/pics/a00.jpg"]) == 1
    mine = alpha.writes
    assert mine != before, "this host's own write must show at once"
    monkeypatch.setattr(pgstore, "OTHERS_FRESH_S", 0.0)  # read the other hosts' count each time
    assert alpha.writes == mine
    beta.write_batch([], [FailureRecord("/pics/a03.jpg", 1, 1, "CorruptImage", "bad")])
    assert alpha.writes != mine, "another host's write must show"
    # A transaction that fails changes nothing, so it counts for nothing.
    settled = alpha.writes
    with pytest.raises(psycopg.Error), alpha._transaction() as cursor:
        cursor.execute("SELECT 1 / 0")
    assert alpha.writes == settled


def test_a_second_live_daemon_with_the_same_host_is_refused(pg_url: str) -> None:
    store = open_store(pg_url, "alpha")
    with pytest.raises(AlreadyRunning, match="another clipd with host 'alpha'"):
        PostgresStore(PostgresDatabase(pg_url), host="alpha")
    open_store(pg_url, "beta").close()  # another host is welcome
    store.close()
    open_store(pg_url, "alpha").close()  # and the name is free once the first has stopped


def test_a_host_lock_let_go_a_moment_later_is_waited_for(pg_url: str) -> None:
    """A daemon that has just stopped: the server ends its session, and lets its lock go, a
    moment after the connection closes; a restart at once must wait for it, not refuse."""
    going = psycopg.connect(pg_url, autocommit=True)
    going.execute("SELECT pg_advisory_lock(%s)", (host_key("alpha"),))
    closing_soon = threading.Timer(0.5, going.close)
    closing_soon.start()
    try:
        open_store(pg_url, "alpha").close()
    finally:
        closing_soon.join()


def test_a_daemon_restarted_after_a_crash_takes_its_host_back(pg_url: str) -> None:
    crashed = open_store(pg_url, "alpha")
    crashed.write_batch([record("/p/a.jpg", unit_vectors(1)[0])], [])
    # A crash ends the daemon's sessions: the server drops its connections.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'clipd alpha'"
        )
    restarted = open_store(pg_url, "alpha")
    assert restarted.known_files("/p") == {"/p/a.jpg": (100, 1_000_000_000)}
    restarted.close()
    with pytest.raises(StoreUnavailable):
        crashed.write_batch([record("/p/b.jpg", unit_vectors(1)[0])], [])
    crashed.close()


def test_a_cut_connection_is_replaced_and_a_server_away_is_unavailable(
    private_pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = private_pg_server.url(private_pg_server.create_database())
    store = open_store(url, "alpha")
    vector = unit_vectors(1)[0]
    store.write_batch([record("/p/a.jpg", vector)], [])
    assert store.search(vector.tobytes(), limit=1)
    private_pg_server.terminate_backends(url.rsplit("/", 1)[1])
    # A read finds its connection dead and makes it again on a new one, unseen; the write in
    # hand fails whole (the indexer holds its batch and retries it).
    assert [hit.path for hit in store.search(vector.tobytes(), limit=5)] == ["/p/a.jpg"]
    with pytest.raises(StoreUnavailable):
        store.write_batch([record("/p/b.jpg", vector)], [])
    store.write_batch([record("/p/b.jpg", vector)], [])
    store.write_batch([record("/p/b.jpg", vector)], [])  # a retried batch duplicates nothing
    assert store.counts().indexed == 2
    private_pg_server.stop()
    with pytest.raises(StoreUnavailable, match=r"PostgreSQL at postgresql://.* is unavailable"):
        store.search(vector.tobytes(), limit=1)
    with pytest.raises(StoreUnavailable):
        store.write_batch([record("/p/c.jpg", vector)], [])
    # Nothing may look unchanged while the changes cannot be read.
    monkeypatch.setattr(pgstore, "OTHERS_FRESH_S", 0.0)
    assert len({store.writes for _ in range(3)}) == 3
    private_pg_server.start()
    assert len(store.search(vector.tobytes(), limit=5)) == 2
    store.write_batch([record("/p/c.jpg", vector)], [])
    assert store.counts().indexed == 3
    store.close()


def test_a_database_of_another_model_is_refused_not_dropped(pg_url: str) -> None:
    store = open_store(pg_url, "alpha")
    store.write_batch([record("/p/a.jpg", unit_vectors(1)[0])], [])
    store.close()
    other = PostgresStore(PostgresDatabase(pg_url), host="beta")
    assert other.model == MODEL
    with pytest.raises(StoreError, match="holds vectors of the model test-model / test-weights"):
        other.bind_model(ModelIdentity("other", "weights", 8))
    assert other.bind_model(MODEL) is False
    assert other.counts().indexed == 1
    other.close()


def test_migrations_are_recorded_and_a_newer_database_is_refused(pg_url: str) -> None:
    open_store(pg_url, "alpha").close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        names = [n for (n,) in admin.execute("SELECT name FROM clipd_migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
        admin.execute("INSERT INTO clipd_migrations (name) VALUES ('9999_from_the_future')")
    with pytest.raises(StoreError, match="written by a newer clipd"):
        PostgresStore(PostgresDatabase(pg_url), host="alpha")


def test_an_unreachable_server_is_unavailable_without_showing_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "postgresql://clipd:s3cret@127.0.0.1:1/clipd?connect_timeout=2"
    # Opening succeeds (a daemon starts and waits for its server); every call says why not.
    store = PostgresStore(PostgresDatabase(url), host="alpha")
    try:
        with pytest.raises(StoreUnavailable) as refused:
            store.counts()
    finally:
        store.close()
    assert "s3cret" not in str(refused.value) + caplog.text
    assert "clipd:***@127.0.0.1:1" in str(refused.value)
    assert "clipd:***@127.0.0.1:1" in caplog.text


def test_a_copy_on_another_host_reuses_the_vector(two_hosts: tuple[PostgresStore, ...]) -> None:
    first, second = two_hosts
    copy = second.find_copy(b"h" * 16, 100)
    assert copy is not None
    assert copy.vector in {first.vector_for("/pics/a00.jpg"), second.vector_for("/pics/a00.jpg")}


def test_the_index_fills_a_page_even_when_a_filter_lets_few_rows_through(pg_url: str) -> None:
    """HNSW alone finds few rows that pass a selective filter: iterative scan, then the exact
    fallback, still return `limit` hits, the same as an exact search."""
    indexed = open_store(pg_url, "alpha", exact_below=0)
    vectors = unit_vectors(2000, seed=4)
    paths = [f"/pics/{'rare' if i % 100 == 0 else 'common'}/{i:04d}.jpg" for i in range(2000)]
    indexed.write_batch([record(p, v) for p, v in zip(paths, vectors, strict=True)], [])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ANALYZE clipd_files")
    exact = PostgresStore(PostgresDatabase(pg_url), host="reader", exact_below=10**9)
    rare = SearchFilter(under=("/pics/rare",))
    for seed in range(3):
        query = unit_vectors(1, seed=50 + seed)[0].tobytes()
        found = indexed.search(query, limit=15, where=rare)
        assert len(found) == 15
        assert [h.path for h in found] == [
            h.path for h in exact.search(query, limit=15, where=rare)
        ]
        top = [h.path for h in indexed.search(query, limit=20)]
        truth = [h.path for h in exact.search(query, limit=20)]
        assert len(set(top) & set(truth)) >= 18  # approximate: recall@20 of at least 0.9
    indexed.close()
    exact.close()


def test_a_selective_filter_or_exact_asked_for_is_searched_exactly(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner's estimate of the rows a filter lets through picks the exact search when
    they are fewer than exact_below, even in a table big enough for the index."""
    indexed = open_store(pg_url, "alpha", exact_below=500)
    vectors = unit_vectors(2000, seed=5)
    paths = [f"/pics/{'rare' if i % 100 == 0 else 'common'}/{i:04d}.jpg" for i in range(2000)]
    indexed.write_batch([record(p, v) for p, v in zip(paths, vectors, strict=True)], [])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ANALYZE clipd_files")
    searched_by_index: list[tuple[Any, ...]] = []
    index_search = PostgresStore._search_index

    def spy(store: PostgresStore, *args: Any) -> Any:
        searched_by_index.append(args)
        return index_search(store, *args)

    monkeypatch.setattr(PostgresStore, "_search_index", spy)
    query = unit_vectors(1, seed=60)[0].tobytes()
    assert len(indexed.search(query, limit=10, where=SearchFilter(under=("/pics/rare",)))) == 10
    assert searched_by_index == []
    common = SearchFilter(under=("/pics/common",))
    assert len(indexed.search(query, limit=10, where=common)) == 10
    assert len(searched_by_index) == 1
    # Asked for, the exact search compares every row that passes, however many.
    assert len(indexed.search(query, limit=10, where=common, exact=True)) == 10
    assert len(searched_by_index) == 1
    indexed.close()


def test_thumbnails_are_shared_and_follow_their_files(
    two_hosts: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two_hosts
    mine = SharedThumbnails(first)
    mine.put("/pics/a00.jpg", 100, 1_000_000_000, b"jpeg of a00")
    mine.put("/pics/a01.jpg", 100, 1_000_000_000, b"jpeg of a01")
    mine.put("/pics/gone.jpg", 1, 1, b"never indexed")
    assert mine.get("/pics/a00.jpg", 100, 1_000_000_000) == b"jpeg of a00"
    assert mine.get("/pics/a00.jpg", 101, 1_000_000_000) is None  # the file changed since
    # The other machine finds it by host; its own file of the same path has none.
    assert second.thumbnail("alpha", "/pics/a00.jpg") == (100, 1_000_000_000, b"jpeg of a00")
    assert SharedThumbnails(second).get("/pics/a00.jpg", 100, 1_000_000_000) is None
    assert mine.keep_only(()) == 1  # the database knows which files are indexed
    first.move("/pics/a00.jpg", "/pics/renamed.jpg")
    assert mine.get("/pics/renamed.jpg", 100, 1_000_000_000) == b"jpeg of a00"
    first.remove(["/pics/a01.jpg"])
    assert first.thumbnail("alpha", "/pics/a01.jpg") is None
