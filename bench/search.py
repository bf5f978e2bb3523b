"""Search latency at scale: a store filled directly with synthetic unit vectors.

For each size: p50/p99 of Store.search (top 20) on the in-RAM path and on vec0's KNN, and
recall@20 of the in-RAM path against an exact numpy search. Then, on the 100k store, the
latency of a whole text query (text encoding + search) while the Indexer runs at full speed.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.pipeline import config_for
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.records import FileRecord, ModelIdentity
from clipd.served_model import ServedModel
from clipd.store import Store

Matrix = npt.NDArray[np.float32]
DIM = 512
_CHUNK = 20_000
_K = 20


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float


def percentiles(samples: list[float]) -> Latency:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Latency(statistics.median(ordered) * 1e3, p99 * 1e3)


def unit_rows(rng: np.random.Generator, count: int) -> Matrix:
    rows = rng.standard_normal((count, DIM), dtype=np.float32)
    normalised: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised


def fill(store: Store, count: int, seed: int = 0) -> Matrix:
    """Write `count` synthetic files with random unit vectors; returns the vectors in id order."""
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, count, _CHUNK):
        vectors = unit_rows(rng, min(_CHUNK, count - start))
        store.write_batch(
            [
                FileRecord(
                    f"/synthetic/{(start + i) // 1000:04d}/img{start + i:07d}.jpg",
                    1000 + start + i,
                    1_000_000_000,
                    start + i,
                    1,
                    (start + i).to_bytes(16, "little"),
                    4032,
                    3024,
                    vector.tobytes(),
                )
                for i, vector in enumerate(vectors)
            ],
            [],
        )
        parts.append(vectors)
    return np.concatenate(parts)


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def recall_at_k(store: Store, vectors: Matrix, queries: Matrix) -> float:
    """Mean share of the exact top-k that the store's search returns."""
    found = 0
    for query in queries:
        exact = np.argpartition(-(vectors @ query), _K)[:_K]
        expected = {f"/synthetic/{i // 1000:04d}/img{i:07d}.jpg" for i in exact.tolist()}
        hits = store.search(query.tobytes(), limit=_K)
        found += len(expected & {hit.path for hit in hits})
    return found / (_K * len(queries))


@dataclass(frozen=True, slots=True)
class ScaleResult:
    rows: int
    ram: Latency
    vec0: Latency
    recall: float
    load_s: float  # loading the RAM copy at open
    ram_mb: float


def scale(work: Path, rows: int, queries: int, vec0_queries: int) -> ScaleResult:
    path = work / f"synthetic-{rows}.db"
    store = Store(path)
    store.bind_model(ModelIdentity("synthetic", "random", DIM))
    vectors = fill(store, rows)
    store.close()
    started = time.perf_counter()
    ram = Store(path)
    ram.wait_in_memory()
    load_s = time.perf_counter() - started
    vec0 = Store(path, in_memory=False)
    probes = unit_rows(np.random.default_rng(99), queries)
    cycle = itertools.cycle(probes)
    try:
        ram.search(probes[0].tobytes(), limit=_K)  # warm the reader connection
        ram_ms = timed(lambda: ram.search(next(cycle).tobytes(), limit=_K), queries)
        vec0_ms = timed(lambda: vec0.search(next(cycle).tobytes(), limit=_K), vec0_queries)
        recall = recall_at_k(ram, vectors, probes[: min(20, queries)])
        matrix_mb = ram.in_memory_bytes / 1e6
    finally:
        ram.close()
        vec0.close()
    return ScaleResult(rows, percentiles(ram_ms), percentiles(vec0_ms), recall, load_s, matrix_mb)


@dataclass(frozen=True, slots=True)
class BusyResult:
    idle: Latency
    busy: Latency
    indexed: int


def while_indexing(work: Path, photos: Path, embedder: ServedModel, rows: int) -> BusyResult:
    """Text query + search latency on a `rows` store, idle and while the indexer runs."""
    path = work / f"busy-{rows}.db"
    store = Store(path)
    store.bind_model(embedder.identity)
    fill(store, rows)
    count = 0

    def query() -> None:
        nonlocal count
        count += 1
        vector = embedder.embed_text(f"a photo of a red brick wall number {count}")
        store.search(vector.tobytes(), limit=_K)

    try:
        idle = timed(query, 30)
        indexer = Indexer(config_for(photos, database=str(path)), store, embedder, Progress())
        job = indexer.submit([photos])
        indexer.start()
        busy: list[float] = []
        # Queries back to back, like a user typing, for as long as indexing runs.
        while not job.done.is_set():
            busy += timed(query, 1)
            time.sleep(0.05)
        indexer.stop()
    finally:
        store.close()
    return BusyResult(percentiles(idle), percentiles(busy), job.indexed)
