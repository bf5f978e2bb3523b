"""Duplicate detection at scale, and what pixel signatures add to indexing.

scale(): a store filled directly with N random unit vectors (512-d) and synthetic pixel
signatures, with planted groups: re-encodes (vector cosine 0.97-0.995, signature plus a little
noise), variants (cosine 0.92-0.97, more noise) and decoys, pictures of the same subject (cosine
0.92-0.97, unrelated signatures), which must stay apart. One DuplicateFinder.find over all of
it: wall and CPU time, the peak of memory allocated during it (tracemalloc, numpy included),
how many planted pairs it groups (recall) and how many decoys it wrongly groups.

neighbours(): the CLIP neighbour search alone on the same vectors, buckets (what find() runs)
against the exact blocked search of every row against every other (numpy/BLAS over the matrix):
time, peak memory, and the share of the exact pairs the buckets find (recall).

signature_cost(): CPU-ms per image of a loader thread's work (hash, decode, preprocess) without
and with the pixel signature, interleaved A B A B, medians.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.pipeline import decode_cpu_seconds
from clipd import images, neighbours, pixels
from clipd.duplicates import DEFAULT_THRESHOLD, MAX_LIMIT, NEIGHBOURS, Criteria, DuplicateFinder
from clipd.records import FileRecord, ModelIdentity
from clipd.scanner import content_hash
from clipd.served_model import ImageModel
from clipd.store import Store

Matrix = npt.NDArray[np.float32]
DIM = 512
_CHUNK = 20_000
# Shares of the rows that are planted copies of another row, by kind.
_REENCODED, _VARIANT, _DECOY = 0.01, 0.01, 0.01


@dataclass(frozen=True, slots=True)
class ScaleResult:
    rows: int
    wall_s: float
    cpu_s: float
    peak_mb: float
    groups: int
    recall: float  # planted re-encode and variant pairs found in one group
    decoys_grouped: int  # same-subject decoys wrongly grouped with their source


def _unit(rows: Matrix) -> Matrix:
    normalised: Matrix = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    return normalised


def _near(rng: np.random.Generator, source: Matrix, low: float, high: float) -> Matrix:
    """Unit vectors at a cosine in [low, high] from each source row."""
    noise = rng.standard_normal(source.shape, dtype=np.float32)
    noise -= np.sum(noise * source, axis=1, keepdims=True) * source
    cos = rng.uniform(low, high, (len(source), 1)).astype(np.float32)
    return _unit(cos * source + np.sqrt(1 - cos * cos) * _unit(noise))


Pairs = list[tuple[int, int]]


def _planted(rows: int, seed: int) -> tuple[Matrix, npt.NDArray[np.uint8], dict[str, Pairs]]:
    """Vectors, signatures and the planted (source, copy) pairs by kind."""
    rng = np.random.default_rng(seed)
    vectors = _unit(rng.standard_normal((rows, DIM), dtype=np.float32))
    signatures = rng.integers(0, 256, (rows, pixels.SIZE), dtype=np.uint8)
    counts = {"reencoded": _REENCODED, "variant": _VARIANT, "decoy": _DECOY}
    copies = iter(range(rows - 1, -1, -1))
    sources = iter(rng.permutation(rows // 2))
    pairs: dict[str, Pairs] = {}
    for kind, share in counts.items():
        made = [(int(next(sources)), next(copies)) for _ in range(int(rows * share))]
        src = np.array([s for s, _ in made])
        dst = np.array([c for _, c in made])
        low, high = (0.97, 0.995) if kind == "reencoded" else (0.92, 0.97)
        vectors[dst] = _near(rng, vectors[src], low, high)
        if kind != "decoy":
            spread = 4.0 if kind == "reencoded" else 25.0
            noise = rng.normal(0, spread, (len(src), pixels.SIZE))
            signatures[dst] = np.clip(signatures[src] + noise, 0, 255).astype(np.uint8)
        pairs[kind] = made
    return vectors, signatures, pairs


def _fill(store: Store, vectors: Matrix, signatures: npt.NDArray[np.uint8]) -> None:
    for start in range(0, len(vectors), _CHUNK):
        store.write_batch(
            [
                FileRecord(
                    f"/synthetic/{i // 1000:04d}/img{i:07d}.jpg",
                    1000 + i,
                    1_000_000_000,
                    i,
                    1,
                    i.to_bytes(16, "little"),
                    640,
                    480,
                    vectors[i].tobytes(),
                    pixels=signatures[i].tobytes(),
                )
                for i in range(start, min(start + _CHUNK, len(vectors)))
            ],
            [],
        )


def scale(work: Path, rows: int, seed: int = 0) -> ScaleResult:
    vectors, signatures, pairs = _planted(rows, seed)
    store = Store(work / f"duplicates-{rows}.db")
    try:
        store.bind_model(ModelIdentity("bench", "random", DIM))
        _fill(store, vectors, signatures)
        store.wait_in_memory()
        finder = DuplicateFinder(store)
        tracemalloc.start()
        wall, cpu = time.perf_counter(), time.process_time()
        first = finder.find(Criteria(limit=MAX_LIMIT))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # The other pages, untimed (each request runs the whole search again).
        pages = [first] + [
            finder.find(Criteria(limit=MAX_LIMIT, offset=offset))
            for offset in range(MAX_LIMIT, first.total, MAX_LIMIT)
        ]
    finally:
        store.close()
    group_of = {
        int(Path(f.path).stem[3:]): number
        for number, group in enumerate(g for page in pages for g in page.groups)
        for f in group.files
    }

    def together(planted: Pairs) -> int:
        return sum(1 for a, b in planted if a in group_of and group_of.get(a) == group_of.get(b))

    planted = pairs["reencoded"] + pairs["variant"]
    return ScaleResult(
        rows,
        wall,
        cpu,
        peak / 1e6,
        first.total,
        together(planted) / len(planted),
        together(pairs["decoy"]),
    )


@dataclass(frozen=True, slots=True)
class Timed:
    wall_s: float
    cpu_s: float
    peak_mb: float


@dataclass(frozen=True, slots=True)
class NeighbourResult:
    rows: int
    buckets: Timed
    exact: Timed
    pairs: int  # found by the exact search
    recall: float  # of those, the share the buckets find


def neighbour_search(rows: int, seed: int = 0) -> NeighbourResult:
    """The bucket search and the exact search over the same planted vectors, one run each."""
    vectors = _planted(rows, seed)[0]
    threshold, k = DEFAULT_THRESHOLD, NEIGHBOURS
    found, buckets = _timed(lambda: neighbours.similar_pairs(vectors, threshold, k))
    truth, exact = _timed(lambda: neighbours.exact_pairs(vectors, threshold, k))
    wanted = _keys(truth, rows)
    recall = len(wanted & _keys(found, rows)) / len(wanted) if wanted else 1.0
    return NeighbourResult(rows, buckets, exact, len(wanted), recall)


def _keys(pairs: neighbours.Pairs, rows: int) -> set[int]:
    return set((pairs.left * rows + pairs.right).tolist())


def _timed(run: Callable[[], neighbours.Pairs]) -> tuple[neighbours.Pairs, Timed]:
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, Timed(wall, cpu, peak / 1e6)


def signature_cost(paths: list[Path], embedder: ImageModel, rounds: int) -> tuple[float, float]:
    """Medians of CPU-seconds per image of a loader's work (A) and A + pixel signature (B)."""
    without, with_signature = [], []
    for _ in range(rounds):
        without.append(decode_cpu_seconds(paths, embedder, draft=True))
        with_signature.append(_loader_with_signature(paths, embedder))
    return statistics.median(without), statistics.median(with_signature)


def _loader_with_signature(paths: list[Path], embedder: ImageModel) -> float:
    started = time.thread_time()
    for path in paths:
        content_hash(str(path), path.stat().st_size)
        decoded = images.decode_file(path, min_side=embedder.image_size)
        embedder.prepare(decoded.image)
        pixels.signature(decoded.image)
    return (time.thread_time() - started) / len(paths)


def _line(timed: Timed) -> str:
    return f"{timed.cpu_s:.1f} CPU-s, {timed.wall_s:.1f} s wall, peak +{timed.peak_mb:.0f} MB"


def report(
    work: Path, sizes: list[int], paths: list[Path], embedder: ImageModel, rounds: int
) -> None:
    """Print the duplicate-detection figures: one line per size, then the signature's cost."""
    print("\nduplicates (clipq duplicates, default threshold, every tier):")
    for rows in sizes:
        result = scale(work, rows)
        print(
            f"  {rows:>9,} images: {result.wall_s:6.1f} s wall, {result.cpu_s:6.1f} s CPU, "
            f"peak +{result.peak_mb:.0f} MB; {result.groups:,} groups, planted copies grouped "
            f"{result.recall:.1%}, same-subject decoys grouped {result.decoys_grouped}"
        )
        search = neighbour_search(rows)
        print(
            f"    neighbour search alone: buckets {_line(search.buckets)}; exact (every pair, "
            f"blocked BLAS) {_line(search.exact)}; buckets/exact CPU "
            f"{search.buckets.cpu_s / search.exact.cpu_s:.3f}; recall {search.recall:.2%} of "
            f"the {search.pairs:,} exact pairs"
        )
    without, with_signature = signature_cost(paths, embedder, rounds)
    print(
        f"  loader CPU-ms/img without / with pixel signature (interleaved, medians): "
        f"{without * 1e3:.2f} / {with_signature * 1e3:.2f} ({with_signature / without - 1:+.1%})"
    )
