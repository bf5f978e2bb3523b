"""The indexing worker: scans paths, embeds what is new or changed, forgets what is gone.

One thread (never a daemon thread) owns all writes. Jobs arrive on a queue; a pool of loader
threads opens, decodes and preprocesses images a bounded distance ahead of the model, so that
decoding overlaps inference. Each batch is committed on its own, so a killed daemon resumes
where it stopped: the next scan sees which files still lack a row.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipd import images, pairs, thumbcache
from clipd.backfill import Backfill
from clipd.config import Config
from clipd.errors import ImageError, MissingDecoder, StoreUnavailable, StoreUnwritable
from clipd.pixels import signature as pixel_signature
from clipd.progress import Progress
from clipd.records import FailureRecord, FileRecord, IndexedCopy
from clipd.scanner import FileStat, Matcher, ScanResult, content_hash, scan
from clipd.served_model import ImageModel
from clipd.storage import IndexStore
from clipd.thumbcache import Thumbnails
from clipd_api import kinds

log = logging.getLogger(__name__)

_LOG_EVERY_S = 5.0
# A batch the storage refused (disk full, read-only) is retried after these waits, doubling.
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 60.0


@dataclass
class ScanJob:
    """Forget what is indexed below `forget`, apply known moves, then rescan these paths.

    `done` is set when the job has finished; the counters say what it did.
    """

    paths: tuple[Path, ...]
    moves: tuple[tuple[Path, Path], ...] = ()
    forget: tuple[Path, ...] = ()  # roots dropped from the config
    done: threading.Event = field(default_factory=threading.Event)
    queued: int = 0
    removed: int = 0
    indexed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    stat: FileStat
    content_hash: bytes
    width: int
    height: int
    pixels: Any  # what the model's prepare() made
    taken_ns: int | None
    signature: bytes  # clipd.pixels


_Outcome = _Loaded | FileRecord | FailureRecord
_STOP = object()


class Indexer:
    """Runs scan jobs on its own thread until stop()."""

    def __init__(
        self,
        config: Config,
        store: IndexStore,
        embedder: ImageModel,
        progress: Progress,
        thumbnails: Thumbnails | None = None,
    ):
        self._config = config
        # Where to keep a thumbnail of each image decoded for the model; None: make none.
        self._thumbnails = thumbnails
        self._store = store
        self._embedder = embedder
        self._progress = progress
        self._matcher = Matcher(config.include, config.exclude, config.skip_hidden)
        self._offline: set[str] = set()  # roots seen missing, for logging transitions once
        # Files that failed for want of a decoder are tried again once per start: the only way
        # to install one is a restart.
        self._retry_missing_decoders = True
        self.model_passes = 0  # images run through the model (reused vectors do not count)
        self._jobs: queue.Queue[ScanJob | object] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipd-indexer")
        threads = config.loader_threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clipd-loader")
        self._backfill = Backfill(store, self._pool, self._decode)
        self._pairs = pairs.Planner(store, self._pool)

    def start(self) -> None:
        self._thread.start()

    def submit(self, paths: Sequence[Path], moves: Sequence[tuple[Path, Path]] = ()) -> ScanJob:
        """Queue a rescan of `paths`; wait on the returned job's `done` to block until it ends."""
        return self._queue(ScanJob(tuple(paths), tuple(moves)))

    def forget(self, roots: Sequence[Path]) -> ScanJob:
        """Queue the removal of every file indexed at or below `roots`, from index and results."""
        return self._queue(ScanJob((), forget=tuple(roots)))

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded config (roots, filters, batch size, ...) from the next job on."""
        self._matcher = Matcher(config.include, config.exclude, config.skip_hidden)
        self._config = config

    def _queue(self, job: ScanJob) -> ScanJob:
        self._progress.begin_scan()  # busy from now: status must not say idle before it runs
        self._jobs.put(job)
        return job

    def stop(self) -> None:
        """Finish and commit the batch in hand, then end the thread; idempotent."""
        self._stopping.set()
        self._jobs.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run_once(self, paths: Sequence[Path]) -> ScanJob:
        """Run one scan job, then a backfill pass (clipd.backfill), on the calling thread (for
        `clipd index`)."""
        job = ScanJob(tuple(paths))
        self._progress.begin_scan()
        try:
            self._run_job(job)
            self._backfill.restart()
            self._fill_in()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return job

    # -- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._jobs.get()
            if not isinstance(job, ScanJob):
                break
            try:
                self._run_job(job)
                if self._covers_every_root(job):
                    self._backfill.restart()
                self._fill_in()
            except StoreUnwritable as exc:  # a move or removal refused: the next scan redoes it
                log.error("scan of %s stopped: %s", ", ".join(map(str, job.paths)), exc)
            except Exception:  # a bug in one job must not end indexing for good
                log.exception("scan of %s failed", ", ".join(map(str, job.paths)))
        # Release anyone waiting on jobs that will never run.
        while True:
            try:
                pending = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(pending, ScanJob):
                self._progress.end_scan()
                pending.done.set()

    def _run_job(self, job: ScanJob) -> None:
        """Run a job whose begin_scan() was counted when it was submitted."""
        try:
            if self._retry_missing_decoders:
                self._retry_missing_decoders = False
                retried = self._store.forget_failures(MissingDecoder.error_class)
                if retried:
                    log.info("trying again %d files whose decoder was missing", retried)
            for root in job.forget:
                job.removed += self._forget(root)
            if self._covers_every_root(job):
                job.removed += self._forget_outside_roots()
            for source, destination in job.moves:
                moved = self._store.move(str(source), str(destination))
                log.info("moved %s -> %s (%d files, no re-embedding)", source, destination, moved)
            todo, gone, rejected = self._plan(job)
            if rejected and self._write([], rejected):
                for failure in rejected:
                    log.warning("cannot index %s: %s", failure.path, failure.message)
                job.failed += len(rejected)
            job.queued = len(todo)
            self._progress.add_queued(len(todo))
            if todo:
                log.info("indexing %d new or changed files", len(todo))
            self._embed_all(todo, job)
            # Removed only now, so that a file moved while no event told us can still be
            # matched to its old row by content and keep its vector.
            if gone and not self._stopping.is_set():
                # A listed file's absence means it is gone, or left out by the filters now.
                left_out = sum(os.path.lexists(path) for path in gone)
                job.removed += self._store.remove(gone)
                reasons = []
                if len(gone) > left_out:
                    reasons.append(f"{_files(len(gone) - left_out)} that no longer exist")
                if left_out:
                    reasons.append(
                        f"{_files(left_out)} that the include, exclude and hidden-file "
                        "settings leave out"
                    )
                log.info("removed %s", " and ".join(reasons))
        finally:
            self._progress.end_scan()
            job.done.set()

    def _forget_outside_roots(self) -> int:
        """Drop what is indexed below no root: left by a root removed while clipd was stopped,
        or indexed by an older clipd that took paths outside the roots."""
        strays = self._store.indexed_outside([str(root) for root in self._config.roots])
        if not strays:
            return 0
        removed = self._store.remove(strays)
        log.info("removed %s indexed outside every root", _files(len(strays)))
        return removed

    def _forget(self, root: Path) -> int:
        prefix = str(root)
        paths = self._store.known_files(prefix).keys() | self._store.known_failures(prefix).keys()
        removed = self._store.remove(sorted(paths))
        self._offline.discard(prefix)
        log.info("removed %s of %s, which is no longer a root", _files(removed), root)
        return removed

    def _plan(self, job: ScanJob) -> tuple[list[FileStat], list[str], list[FailureRecord]]:
        """Scan the job's paths: (files to embed, newest first; indexed paths that are gone;
        new failures for paths that cannot be indexed)."""
        found = ScanResult()
        present = [path for path in job.paths if self._root_is_present(path)]
        if self._config.raw_pairs != "both":
            present += self._pairs.siblings(present, self._config.roots, self._matcher)
        for path in present:
            scan(path, self._matcher, found, follow=self._config.follow_symlinks)
        known: dict[str, tuple[int, int]] = {}
        failed: dict[str, tuple[int, int]] = {}
        for path in present:
            known.update(self._store.known_files(str(path)))
            failed.update(self._store.known_failures(str(path)))
        hidden = tuple(d + os.sep for d in found.unreadable)
        listed = found.files.keys() | found.rejected.keys()
        gone = {p for p in known.keys() | failed.keys() if p not in listed}
        left_out = self._pairs.leave_out(found.files, self._config.raw_pairs)
        gone |= {p for p in left_out if p in known or p in failed}
        vanished = [p for root in present for p in self._store.paired_paths(str(root))]
        if any(p not in listed for p in vanished):
            self._store.set_pairs([], [p for p in vanished if p not in listed])
        todo = [
            st
            for p, st in found.files.items()
            if p not in left_out and _changed(st, known.get(p), failed.get(p))
        ]
        # Newest first: the photos a user just added are the ones they will look for.
        todo.sort(key=lambda st: st.mtime_ns, reverse=True)
        rejected = [
            _failure(st, problem.error_class, str(problem))
            for p, (st, problem) in found.rejected.items()
            if _changed(st, None, failed.get(p))
        ]
        return todo, sorted(p for p in gone if not p.startswith(hidden)), rejected

    def _covers_every_root(self, job: ScanJob) -> bool:
        """A scan of every root: the start-up scan, or a full rescan."""
        return set(self._config.roots) <= set(job.paths)

    def _fill_in(self) -> None:
        """Go on with the backfill pass, if one is under way, until it ends or a job waits."""
        while self._backfill.pending and not self._stopping.is_set() and self._jobs.empty():
            self._backfill.step()

    def _root_is_present(self, path: Path) -> bool:
        """False for a root that is missing or emptied while files are indexed under it (an
        unmounted disk, a network share down): its files are kept, hidden, until it returns."""
        if path not in self._config.roots:
            return True
        try:
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
            emptied = empty and bool(self._store.known_files(str(path)))
        except OSError:
            emptied = True
        key = str(path)
        if emptied:
            hidden = self._store.set_offline(key, offline=True)
            if key not in self._offline:
                self._offline.add(key)
                log.warning("root %s is missing or empty: %d files kept offline until it returns",
                            path, hidden)  # fmt: skip
            return False
        shown = self._store.set_offline(key, offline=False)
        if key in self._offline or shown:
            self._offline.discard(key)
            log.info("root %s is back: %d files online again", path, shown)
        return True

    def _embed_all(self, todo: list[FileStat], job: ScanJob) -> None:
        lookahead = 2 * self._config.batch_size
        pending: deque[Future[_Outcome]] = deque()
        remaining = iter(todo)
        batch = _Batch()
        last_log = time.monotonic()
        while True:
            while len(pending) < lookahead and not self._stopping.is_set():
                stat = next(remaining, None)
                if stat is None:
                    break
                pending.append(self._pool.submit(self._load, stat))
            if not pending:
                break
            batch.add(pending.popleft().result())
            if len(batch) >= self._config.batch_size or not pending:
                self._commit(batch, job)
                batch = _Batch()
            if time.monotonic() - last_log >= _LOG_EVERY_S:
                last_log = time.monotonic()
                log.info("%s", self._progress.describe())

    def _load(self, stat: FileStat) -> _Outcome:
        """Runs on a loader thread: reuse a copy's vector, or read, decode, preprocess.

        Never raises: every problem becomes a FailureRecord.
        """
        try:
            images.require_regular(Path(stat.path))  # before hashing: a device never ends
            digest = content_hash(stat.path, stat.size)
            copy = self._copy_of(digest, stat.size)
            if copy is not None:  # a copy, a touched file, or a move no event told us of
                if self._thumbnails is not None and copy.path:
                    # The same bytes show the same picture: the original's thumbnail is its.
                    kept = self._thumbnails.get(copy.path, stat.size, copy.mtime_ns)
                    if kept is not None:
                        self._thumbnails.put(stat.path, stat.size, stat.mtime_ns, kept)
                return _record(
                    stat,
                    digest,
                    copy.vector,
                    size=(copy.width, copy.height),
                    taken_ns=copy.taken_ns,
                    taken_read=copy.taken_read,
                    signature=copy.pixels,
                )
            decoded = self._decode(stat.path, for_thumbnail=self._thumbnails is not None)
            pixels = self._embedder.prepare(decoded.image)
            self._keep_thumbnail(stat, decoded)
            taken_ns = _ns(decoded.taken)
            signature = pixel_signature(decoded.image)
            return _Loaded(stat, digest, decoded.width, decoded.height, pixels, taken_ns, signature)
        except ImageError as exc:
            return _failure(stat, exc.error_class, str(exc))
        except OSError as exc:  # vanished or unreadable while hashing
            return _failure(stat, kinds.UNREADABLE, f"cannot read the file: {exc.strerror or exc}")
        except Exception as exc:  # one odd file must never take its batch down
            log.exception("unexpected error loading %s", stat.path)
            return _failure(stat, kinds.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _copy_of(self, digest: bytes, size: int) -> IndexedCopy | None:
        """An indexed copy of this content, or None; None too while the database is away, since
        the copy only saves work: the file is embedded, and its write waits for the database."""
        try:
            return self._store.find_copy(digest, size)
        except StoreUnavailable as exc:
            log.debug("no copy lookup: %s", exc)
            return None

    def _decode(self, path: str, *, for_thumbnail: bool = False) -> images.DecodedImage:
        return images.decode_file(
            Path(path),
            max_pixels=self._config.max_image_pixels,
            min_side=self._embedder.image_size,
            thumbnail_side=thumbcache.THUMBNAIL_SIDE if for_thumbnail else None,
        )

    def _keep_thumbnail(self, stat: FileStat, decoded: images.DecodedImage) -> None:
        """Make the web app's thumbnail now, from the image in hand (see clipd.thumbcache)."""
        if self._thumbnails is None:
            return
        image = decoded.for_thumbnail or decoded.image
        if thumbcache.big_enough(image, decoded.width, decoded.height):
            data = thumbcache.encode(image)
            self._thumbnails.put(stat.path, stat.size, stat.mtime_ns, data)

    def _commit(self, batch: _Batch, job: ScanJob) -> None:
        embedded, embed_failures = self._embed(batch.loaded)
        records = batch.ready + embedded
        failures = batch.failures + embed_failures
        if not self._write(records, failures):
            # Stopped while the storage refused it: nothing was written; the next start's scan
            # finds these files again.
            self._progress.add_done(0, 0, len(batch))
            return
        for failure in failures:
            log.warning("cannot index %s: %s", failure.path, failure.message)
        job.indexed += len(records)
        job.failed += len(failures)
        self.model_passes += len(batch.loaded)
        self._progress.add_done(len(records), len(failures), 0)

    def _write(self, records: list[FileRecord], failures: list[FailureRecord]) -> bool:
        """Store a batch, waiting out storage faults; False if stop() came first.

        The batch is held, not dropped and not recorded as failed: its files are fine, the disk
        is not, and nothing else would bring them back before the next periodic rescan.
        """
        delay = _RETRY_FIRST_S
        refused = False
        while True:
            try:
                self._store.write_batch(records, failures)
            except StoreUnwritable as exc:
                refused = True
                waiting = len(records) + len(failures)
                log.error("%s; %d files wait, retrying in %.3g s", exc, waiting, delay)
                self._progress.set_problem(f"{exc}; indexing waits and retries")
                if self._stopping.wait(delay):
                    return False
                delay = min(2 * delay, _RETRY_MAX_S)
                continue
            if refused:
                log.info("the database accepts writes again; indexing resumes")
                self._progress.set_problem("")
            return True

    def _embed(self, loaded: list[_Loaded]) -> tuple[list[FileRecord], list[FailureRecord]]:
        if not loaded:
            return [], []
        try:
            vectors = self._embedder.embed_prepared([item.pixels for item in loaded])
        except Exception:
            if len(loaded) == 1:
                log.exception("embedding %s failed", loaded[0].stat.path)
                item = loaded[0]
                return [], [
                    _failure(item.stat, kinds.EMBED_ERROR, "the model failed on this image")
                ]
            # Isolate the culprit rather than lose the whole batch.
            return _merge([self._embed([item]) for item in loaded])
        pairs = zip(loaded, vectors, strict=True)
        return [
            _record(
                item.stat,
                item.content_hash,
                vector.tobytes(),
                size=(item.width, item.height),
                taken_ns=item.taken_ns,
                signature=item.signature,
            )
            for item, vector in pairs
        ], []


@dataclass
class _Batch:
    """Outcomes gathered for one commit."""

    loaded: list[_Loaded] = field(default_factory=list)
    ready: list[FileRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)

    def add(self, outcome: _Outcome) -> None:
        if isinstance(outcome, _Loaded):
            self.loaded.append(outcome)
        elif isinstance(outcome, FileRecord):
            self.ready.append(outcome)
        else:
            self.failures.append(outcome)

    def __len__(self) -> int:
        return len(self.loaded) + len(self.ready) + len(self.failures)


def _changed(
    stat: FileStat, indexed: tuple[int, int] | None, failed: tuple[int, int] | None
) -> bool:
    """New, or different from both its indexed row and its last failed attempt."""
    current = (stat.size, stat.mtime_ns)
    return current not in (indexed, failed)


def _merge(
    parts: list[tuple[list[FileRecord], list[FailureRecord]]],
) -> tuple[list[FileRecord], list[FailureRecord]]:
    return [r for p in parts for r in p[0]], [f for p in parts for f in p[1]]


def _failure(stat: FileStat, error: str, message: str) -> FailureRecord:
    return FailureRecord(stat.path, stat.size, stat.mtime_ns, error, message)


def _record(
    stat: FileStat,
    digest: bytes,
    vector: bytes,
    *,
    size: tuple[int, int],
    taken_ns: int | None,
    taken_read: bool = True,
    signature: bytes | None,
) -> FileRecord:
    width, height = size
    return FileRecord(
        stat.path,
        stat.size,
        stat.mtime_ns,
        stat.inode,
        stat.device,
        digest,
        width,
        height,
        vector,
        taken_ns=taken_ns,
        taken_read=taken_read,
        pixels=signature,
    )


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"
