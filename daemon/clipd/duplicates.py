"""Groups of near-identical images, each labelled with how alike its files are: its tier.

- exact: the same bytes. Found by the store's content hash and size, then confirmed by a hash
  of the whole file where the stored hash covers only part of it (files over 1 MiB + 64 KiB).
- reencoded: the same picture re-encoded, resized or converted: CLIP proposes the pair and the
  pixel signatures (clipd.pixels) correlate at REENCODED_PIXELS or more.
- variant: close variants (bursts, small crops, brightness edits): CLIP cosine at or above the
  caller's threshold and pixel signatures correlating at VARIANT_PIXELS or more. CLIP alone
  never groups: another photo of the same subject is as close to CLIP as a copy, but its
  pixels differ. Files whose signature is not made yet (see clipd.backfill) can only be exact.

CLIP candidates come from clipd.neighbours (each file's best NEIGHBOURS neighbours at or above
the threshold, never all pairs); confirmed pairs are joined by union-find. A group's tier is
the strictest one whose pairs alone connect all of its files. Tiers nest: a query names the
loosest tier it groups by (default variant), so asking for exact lists every set of identical
files, even those that a looser tier would merge with their variants. Files come best-kept
first: RAW before anything else, then more pixels, more bytes, the older, and by path. This
only reports: nothing here deletes or moves a file.

A search's whole answer is kept (a few, by criteria) until the store is next written, so that
paging through groups, or going back to a threshold just tried, does not search again.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from clipd import neighbours, pixels
from clipd.records import DuplicateCandidate, SearchFilter
from clipd.scanner import hashes_whole_file
from clipd.storage import IndexStore

TIERS = ("exact", "reencoded", "variant")  # strictest first
DEFAULT_THRESHOLD = 0.9
# The loosest threshold accepted: below it CLIP proposes pairs by the thousand and they
# are mostly different photos of one subject, which the pixel check then throws away.
MIN_THRESHOLD = 0.5
REENCODED_PIXELS = 0.99
VARIANT_PIXELS = 0.9
NEIGHBOURS = 16
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

# Camera RAW extensions (those of config.DEFAULT_INCLUDE): the original a photographer keeps,
# whatever its size.
RAW_EXTENSIONS = frozenset(
    {"dng", "cr2", "cr3", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "rwl"}
    | {"pef", "srw", "3fr", "erf", "dcr", "kdc"}
)
_HASH_CHUNK = 1 << 20
# Whole-file hashes kept between requests (about 100 bytes each).
_MAX_KEPT_HASHES = 100_000
# Whole answers kept between requests (a threshold or folder being tried out, paged through).
_KEPT_SEARCHES = 8


@dataclass(frozen=True, slots=True)
class Criteria:
    """Which groups to report (checked by the query core, clipd.queries)."""

    threshold: float = DEFAULT_THRESHOLD  # CLIP cosine, MIN_THRESHOLD to 1
    under: tuple[str, ...] = ()  # absolute, normalised
    tier: str = TIERS[-1]  # the loosest tier grouped by
    limit: int = DEFAULT_LIMIT
    offset: int = 0


@dataclass(frozen=True, slots=True)
class DuplicateFile:
    """A file of a group; score is its CLIP cosine with the group's first file."""

    path: str
    score: float
    width: int
    height: int
    size_bytes: int
    mtime: float
    taken: float | None  # capture time, seconds since the epoch; None when unknown
    paired: tuple[str, ...]  # other files of the same photo (a RAW beside its JPEG)


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    tier: str
    files: tuple[DuplicateFile, ...]


@dataclass(frozen=True, slots=True)
class DuplicatesReport:
    """A page of groups; total counts every group; unchecked counts the files that could
    only be matched as exact copies, their pixel signatures not made yet."""

    groups: tuple[DuplicateGroup, ...]
    total: int
    unchecked: int


@dataclass(frozen=True, slots=True)
class _Found:
    """Every group of one search, in order, and the files it could not compare by pixels."""

    groups: tuple[DuplicateGroup, ...]
    unchecked: int


@dataclass
class _Edges:
    """Confirmed pairs of file ids, by tier number (index into TIERS)."""

    by_tier: tuple[list[tuple[int, int]], ...] = field(default_factory=lambda: ([], [], []))


class DuplicateFinder:
    """Finds duplicate groups in a store; keeps whole-file hashes and recent answers between
    requests."""

    def __init__(self, store: IndexStore) -> None:
        self._store = store
        # One search at a time: at 100k files each holds a copy of the vectors (~200 MB).
        self._one_at_a_time = threading.Lock()
        self._full_hashes: dict[tuple[str, int, float], bytes] = {}
        # Whole answers by (threshold, under, tier), valid while store.writes == _found_at.
        self._found: dict[tuple[float, tuple[str, ...], str], _Found] = {}
        self._found_at: int | None = None

    def find(self, criteria: Criteria) -> DuplicatesReport:
        with self._one_at_a_time:
            found = self._found_for(criteria)
        page = found.groups[criteria.offset : criteria.offset + criteria.limit]
        return DuplicatesReport(page, len(found.groups), found.unchecked)

    def _found_for(self, criteria: Criteria) -> _Found:
        """Every group for these criteria: kept from an earlier request while the store has
        not been written since (the pages of one listing are one search, not one each)."""
        writes = self._store.writes  # a shared store's: other machines' writes show within 1 s
        if writes != self._found_at:
            self._found.clear()
            self._found_at = writes
        key = (criteria.threshold, criteria.under, criteria.tier)
        found = self._found.pop(key, None) or self._search(criteria)
        self._found[key] = found  # the most recently used last
        if len(self._found) > _KEPT_SEARCHES:
            del self._found[next(iter(self._found))]
        return found

    def _search(self, criteria: Criteria) -> _Found:
        where = SearchFilter(under=criteria.under)
        ids, vectors = self._store.vectors(where)
        pairs = neighbours.similar_pairs(vectors, criteria.threshold, NEIGHBOURS)
        same = self._store.same_content(where)
        involved = set(ids[pairs.left].tolist()) | set(ids[pairs.right].tolist())
        files = self._store.candidates(sorted(involved.union(*map(set, same))))
        edges = _Edges()
        edges.by_tier[0].extend(self._exact_pairs(same, files))
        clip_pairs = list(zip(ids[pairs.left].tolist(), ids[pairs.right].tolist(), strict=True))
        self._pixel_pairs(clip_pairs, files, edges)
        unchecked = self._store.count_unsigned(where)
        row_of = {file_id: row for row, file_id in enumerate(ids.tolist())}
        groups = [
            _group(tier, [files[i] for i in members], vectors, row_of)
            for tier, members in _components(edges, TIERS.index(criteria.tier))
            if all(i in row_of and i in files for i in members)
        ]
        groups.sort(key=lambda g: (TIERS.index(g.tier), g.files[0].path))
        return _Found(tuple(groups), unchecked)

    def _exact_pairs(
        self, same: list[list[int]], files: dict[int, DuplicateCandidate]
    ) -> Iterable[tuple[int, int]]:
        """Pairs among files of one stored hash whose whole contents are the same."""
        for ids in same:
            by_digest: dict[bytes, list[int]] = {}
            for file_id in ids:
                candidate = files.get(file_id)
                digest = None if candidate is None else self._whole_hash(candidate)
                if digest is not None:
                    by_digest.setdefault(digest, []).append(file_id)
            for members in by_digest.values():
                yield from itertools.pairwise(members)

    def _whole_hash(self, candidate: DuplicateCandidate) -> bytes | None:
        """A hash of the file's whole content (the stored one, when it covers it all)."""
        if hashes_whole_file(candidate.size_bytes):
            return b"stored"  # the store grouped these by a hash of every byte already
        key = (candidate.path, candidate.size_bytes, candidate.mtime)
        known = self._full_hashes.get(key)  # only find() uses it, one call at a time
        if known is not None:
            return known
        try:
            digest = _hash_file(candidate.path)
        except OSError:
            return None  # gone or unreadable: not provably a copy
        if len(self._full_hashes) >= _MAX_KEPT_HASHES:
            self._full_hashes.clear()
        self._full_hashes[key] = digest
        return digest

    def _pixel_pairs(
        self, pairs: list[tuple[int, int]], files: dict[int, DuplicateCandidate], edges: _Edges
    ) -> None:
        """File CLIP's pairs under the tier their pixels confirm, if any."""
        signed = [(a, b) for a, b in pairs if _signature(files, a) and _signature(files, b)]
        if not signed:
            return
        left = pixels.as_rows([_signature(files, a) for a, _ in signed])
        right = pixels.as_rows([_signature(files, b) for _, b in signed])
        for pair, score in zip(signed, pixels.similarity(left, right).tolist(), strict=True):
            if score >= REENCODED_PIXELS:
                edges.by_tier[1].append(pair)
            elif score >= VARIANT_PIXELS:
                edges.by_tier[2].append(pair)


def _signature(files: dict[int, DuplicateCandidate], file_id: int) -> bytes:
    """The file's pixel signature; b"" when it has none (not made yet, or undecodable)."""
    candidate = files.get(file_id)
    return (candidate.pixels or b"") if candidate is not None else b""


def _hash_file(path: str) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # never block on a FIFO
    with os.fdopen(os.open(path, flags), "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _components(edges: _Edges, loosest: int) -> list[tuple[str, list[int]]]:
    """Groups of files connected by pairs of tiers up to `loosest`, each with the strictest
    tier whose pairs connect it."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    roots_by_tier: list[dict[int, int]] = []
    for tier_edges in edges.by_tier[: loosest + 1]:
        for a, b in tier_edges:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        roots_by_tier.append({node: root(node) for node in parent})
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    groups: list[tuple[str, list[int]]] = []
    for group in members.values():
        tier = next(
            name
            for name, roots in zip(TIERS, roots_by_tier, strict=False)
            if len({roots.get(node, -node - 1) for node in group}) == 1
        )
        groups.append((tier, group))
    return groups


def _group(
    tier: str,
    members: list[DuplicateCandidate],
    vectors: neighbours.Floats,
    row_of: dict[int, int],
) -> DuplicateGroup:
    """The group's files best-kept first, scored against the first."""
    members.sort(key=_keep_order)
    first = vectors[row_of[members[0].file_id]]
    scores = vectors[[row_of[m.file_id] for m in members]] @ first
    return DuplicateGroup(
        tier,
        tuple(
            DuplicateFile(
                m.path, float(s), m.width, m.height, m.size_bytes, m.mtime, m.taken, m.paired
            )
            for m, s in zip(members, scores.tolist(), strict=True)
        ),
    )


def _keep_order(file: DuplicateCandidate) -> tuple[bool, int, int, float, str]:
    """Sort key putting the file to keep first: RAW, most pixels, most bytes, oldest (by
    capture time where the file records one, else by modification time)."""
    extension = file.path.rsplit(".", 1)[-1].lower() if "." in file.path else ""
    return (
        extension not in RAW_EXTENSIONS,
        -file.width * file.height,
        -file.size_bytes,
        file.mtime if file.taken is None else file.taken,
        file.path,
    )
