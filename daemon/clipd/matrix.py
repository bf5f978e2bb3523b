"""An in-RAM float32 copy of the store's vectors: exact top-k by one matrix-vector product.

sqlite-vec 0.1.9 scans vec0 without SIMD (about 60-90 ms at 100k rows on this project's
2-core build machine, 800 ms at 1M); numpy's BLAS product over the same rows in RAM is 5-20x
faster and exact, so it is the query path once loaded. The store keeps it in step with vec0:
every write is applied here right after its transaction commits, under the store's write lock.
float32 (2 KiB per 512-d row) because it is exact and numpy has no fast half-precision or int8
product; bench/search.py measures the half-precision and binary alternatives.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]

_MISSING = -1
# Below this share of rows allowed by a filter, gathering them first beats scoring every row.
_GATHER_SHARE = 0.125


class VectorMatrix:
    """Rows addressed by file id. Thread-safe: one lock covers writes and scoring alike."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._vectors: Floats = np.empty((0, dim), dtype=np.float32)
        self._ids: Ids = np.empty(0, dtype=np.int64)
        self._row_of: Ids = np.empty(0, dtype=np.int64)  # file id -> row, or _MISSING
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """RAM held, including spare capacity."""
        return self._vectors.nbytes + self._ids.nbytes + self._row_of.nbytes

    def put(self, ids: Ids, vectors: Floats) -> None:
        """Insert or replace the vectors of these file ids."""
        with self._lock:
            self._reserve(self._count + len(ids), int(ids.max(initial=0)))
            for file_id, vector in zip(ids.tolist(), vectors, strict=True):
                row = int(self._row_of[file_id])
                if row == _MISSING:
                    row = self._count
                    self._count += 1
                    self._ids[row] = file_id
                    self._row_of[file_id] = row
                self._vectors[row] = vector

    def discard(self, ids: Ids) -> None:
        """Forget these file ids; unknown ids are ignored."""
        with self._lock:
            for file_id in ids.tolist():
                if file_id >= len(self._row_of) or self._row_of[file_id] == _MISSING:
                    continue
                # Fill the hole with the last row so that rows stay dense.
                row, last = int(self._row_of[file_id]), self._count - 1
                moved = int(self._ids[last])
                self._vectors[row] = self._vectors[last]
                self._ids[row] = moved
                self._row_of[moved] = row
                self._row_of[file_id] = _MISSING
                self._count = last

    def top(
        self, query: Floats, k: int, *, allowed: Ids | None = None, excluded: Ids | None = None
    ) -> tuple[Ids, Floats]:
        """(file ids, cosine scores) of the best k rows, best first.

        `allowed` limits the search to those ids; `excluded` removes ids from it.
        """
        with self._lock:
            rows, scores = self._scores(query, allowed)
            if excluded is not None and len(excluded):
                keep = ~np.isin(rows, self._rows(excluded))
                rows, scores = rows[keep], scores[keep]
            if k < len(scores):
                best = np.argpartition(-scores, k - 1)[:k]
                rows, scores = rows[best], scores[best]
            order = np.argsort(-scores, kind="stable")
            return self._ids[rows[order]], scores[order]

    def rows(self, ids: Ids) -> tuple[Ids, Floats]:
        """(the ids held here, a copy of their vectors), in the order given."""
        with self._lock:
            rows = self._rows(ids)
            return self._ids[rows], self._vectors[rows]

    def _scores(self, query: Floats, allowed: Ids | None) -> tuple[Ids, Floats]:
        """Rows and their scores: every row, or only the allowed ones."""
        if allowed is None:
            return np.arange(self._count), self._vectors[: self._count] @ query
        rows = self._rows(allowed)
        if len(rows) < _GATHER_SHARE * self._count:
            return rows, self._vectors[rows] @ query
        return rows, (self._vectors[: self._count] @ query)[rows]

    def _rows(self, ids: Ids) -> Ids:
        """The rows of those ids that are held here."""
        rows: Ids = self._row_of[ids[ids < len(self._row_of)]]
        held: Ids = rows[rows != _MISSING]
        return held

    def _reserve(self, count: int, max_id: int) -> None:
        """Grow (by doubling, so that appends stay amortised O(1)) to hold count rows and max_id."""
        if count > len(self._vectors):
            capacity = max(count, 2 * len(self._vectors), 1024)
            vectors = np.empty((capacity, self.dim), dtype=np.float32)
            vectors[: self._count] = self._vectors[: self._count]
            ids = np.empty(capacity, dtype=np.int64)
            ids[: self._count] = self._ids[: self._count]
            self._vectors, self._ids = vectors, ids
        if max_id >= len(self._row_of):
            row_of = np.full(max(max_id + 1, 2 * len(self._row_of)), _MISSING, dtype=np.int64)
            row_of[: len(self._row_of)] = self._row_of
            self._row_of = row_of
