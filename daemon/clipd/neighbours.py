"""Pairs of similar vectors among many, without scoring every pair.

Every pair of 100k vectors is 5 * 10^9 dot products (about five minutes on two cores). Near
duplicates are very close (cosine 0.9 and above), so each vector is compared only with vectors
that lie near it, as an inverted-file index does: a few rounds of spherical k-means on a sample
place C centres; each vector is filed in the bucket of its nearest centre and searches the
buckets of its PROBES nearest centres, by blocks of rows (a matrix product and an argpartition
per block), keeping its best `k` neighbours at or above the threshold. For n vectors that is
n * C dot products to file them and n * PROBES * n / C to search, so C grows as sqrt(n) (see
_bucket_count), not as n: at 1M vectors, one centre per 128 would spend 8 * 10^9 dot products
filing alone. Two close vectors nearly always meet; bench/duplicates.py measures how often they
do not (recall, against the exact search), and the time and memory at 100k vectors. Small sets
(up to EXACT_ROWS) are searched exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]

# Up to this many vectors, every pair is scored (at most ~4 * 10^6 dot products).
EXACT_ROWS = 2048
# Each vector searches the buckets of its PROBES nearest centres.
PROBES = 6
_KMEANS_ROUNDS = 4
_SAMPLE_PER_BUCKET = 32
# Query rows scored per matrix product: a block of scores is _BLOCK x bucket size floats.
_BLOCK = 256


@dataclass(frozen=True, slots=True)
class Pairs:
    """Row pairs (left < right, each pair once) and their cosine scores."""

    left: Ids
    right: Ids
    scores: Floats

    def __len__(self) -> int:
        return len(self.left)


def similar_pairs(vectors: Floats, threshold: float, k: int) -> Pairs:
    """Pairs of rows of `vectors` (L2-normalised) whose cosine is at least `threshold`.

    Each row contributes at most its `k` best neighbours per bucket, so a burst of hundreds of
    frames costs rows * k pairs, not rows^2; those pairs still connect the whole burst.
    """
    # Thousands of small products: a multi-threaded BLAS spends more time handing them out and
    # spinning than computing (at 50k vectors: 12 s CPU, 65 s wall on a busy 2-core machine;
    # one thread: 2.7 s CPU, 19 s wall). Only numpy's BLAS: torch's threads are its own.
    with threadpool_limits(limits=1, user_api="blas"):
        return _similar_pairs(vectors, threshold, k)


def exact_pairs(vectors: Floats, threshold: float, k: int) -> Pairs:
    """The same pairs, every row scored against every other: for small sets, and to measure
    how many the buckets miss (bench/duplicates.py)."""
    with threadpool_limits(limits=1, user_api="blas"):
        rows = np.arange(len(vectors), dtype=np.int64)
        return _unique(_search(vectors, rows, rows, threshold, k), len(vectors))


def _similar_pairs(vectors: Floats, threshold: float, k: int) -> Pairs:
    if len(vectors) <= EXACT_ROWS:
        return exact_pairs(vectors, threshold, k)
    rng = np.random.default_rng(0)  # buckets depend only on the vectors: answers repeat
    centres = _centres(vectors, _bucket_count(len(vectors)), rng)
    nearest = _nearest(vectors, centres)
    members = _grouped(nearest[:, 0], len(centres))
    searchers = _grouped(nearest.ravel(), len(centres), repeat=nearest.shape[1])
    found = [
        _search(vectors, queries, bucket, threshold, k)
        for queries, bucket in zip(searchers, members, strict=True)
        if len(bucket) and len(queries)
    ]
    return _unique(_concatenate(found), len(vectors))


def _bucket_count(rows: int) -> int:
    """How many centres: filing costs rows * count dot products (plus k-means on a sample,
    _SAMPLE_PER_BUCKET * _KMEANS_ROUNDS * count^2), searching rows * PROBES * rows / count; the
    sum is least near sqrt(PROBES * rows / 2) (548 at 100k rows, 1,732 at 1M)."""
    return max(1, round(math.sqrt(PROBES * rows / 2)))


def _centres(vectors: Floats, count: int, rng: np.random.Generator) -> Floats:
    """`count` unit centres from a few rounds of spherical k-means on a sample."""
    size = min(len(vectors), count * _SAMPLE_PER_BUCKET)
    sample = vectors[rng.choice(len(vectors), size, replace=False)]
    centres = sample[:count].copy()
    for _ in range(_KMEANS_ROUNDS):
        nearest = np.argmax(sample @ centres.T, axis=1)
        order = np.argsort(nearest, kind="stable")
        used, starts = np.unique(nearest[order], return_index=True)
        sums = np.add.reduceat(sample[order], starts, axis=0)  # an empty centre keeps its place
        centres[used] = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return centres


def _nearest(vectors: Floats, centres: Floats) -> Ids:
    """For each row, its PROBES nearest centres, nearest first, by blocks of rows."""
    probes = min(PROBES, len(centres))
    nearest = np.empty((len(vectors), probes), dtype=np.int64)
    step = _BLOCK * 16
    for start in range(0, len(vectors), step):
        scores = vectors[start : start + step] @ centres.T
        best = np.argpartition(-scores, probes - 1, axis=1)[:, :probes]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
        nearest[start : start + len(best)] = np.take_along_axis(best, order, axis=1)
    return nearest


def _grouped(bucket_of: Ids, count: int, repeat: int = 1) -> list[Ids]:
    """Row numbers grouped by bucket; entry i of bucket_of belongs to row i // repeat."""
    order = np.argsort(bucket_of, kind="stable")
    bounds = np.searchsorted(bucket_of[order], np.arange(count + 1))
    rows = order // repeat
    return [rows[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]


def _search(vectors: Floats, queries: Ids, rows: Ids, threshold: float, k: int) -> Pairs:
    """Each query row's best k neighbours among `rows`, at or above threshold, by blocks."""
    members = vectors[rows]
    found: list[Pairs] = []
    for start in range(0, len(queries), _BLOCK):
        block = queries[start : start + _BLOCK]
        scores = vectors[block] @ members.T
        scores[block[:, None] == rows[None, :]] = -np.inf  # not its own neighbour
        take = min(k, len(rows))
        if take < len(rows):
            best = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            best = np.broadcast_to(np.arange(len(rows)), scores.shape)
        best_scores = np.take_along_axis(scores, best, axis=1)
        hit_row, hit_col = np.nonzero(best_scores >= threshold)
        found.append(
            Pairs(block[hit_row], rows[best[hit_row, hit_col]], best_scores[hit_row, hit_col])
        )
    return _concatenate(found)


def _concatenate(parts: list[Pairs]) -> Pairs:
    empty = np.empty(0, dtype=np.int64)
    return Pairs(
        np.concatenate([empty, *(p.left for p in parts)]),
        np.concatenate([empty, *(p.right for p in parts)]),
        np.concatenate([np.empty(0, dtype=np.float32), *(p.scores for p in parts)]),
    )


def _unique(pairs: Pairs, count: int) -> Pairs:
    """Each pair once, as (smaller row, larger row); rows are below `count`."""
    low, high = np.minimum(pairs.left, pairs.right), np.maximum(pairs.left, pairs.right)
    _, first = np.unique(low * count + high, return_index=True)
    return Pairs(low[first], high[first], pairs.scores[first])
