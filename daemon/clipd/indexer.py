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
from typing import TYPE_CHECKING

from clipd import images, sqlite
from clipd.config import Config
from clipd.embedder import Embedder
from clipd.errors import ImageError
from clipd.progress import Progress
from clipd.scanner import FileStat, Matcher, ScanResult, content_hash, scan
from clipd.store import FailureRecord, FileRecord, Store

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_LOG_EVERY_S = 5.0


@dataclass
class ScanJob:
    """Rescan these paths (files or directories); `done` is set when the job has finished."""

    paths: tuple[Path, ...]
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
    pixels: torch.Tensor


_Outcome = _Loaded | FailureRecord
_STOP = object()


class Indexer:
    """Runs scan jobs on its own thread until stop()."""

    def __init__(self, config: Config, store: Store, embedder: Embedder, progress: Progress):
        self._config = config
        self._store = store
        self._embedder = embedder
        self._progress = progress
        self._matcher = Matcher(config.include, config.exclude, config.skip_hidden)
        self._jobs: queue.Queue[ScanJob | object] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipd-indexer")
        threads = config.loader_threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clipd-loader")

    def start(self) -> None:
        self._thread.start()

    def submit(self, paths: Sequence[Path]) -> ScanJob:
        """Queue a rescan of `paths`; wait on the returned job's `done` to block until it ends."""
        job = ScanJob(tuple(paths))
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
        """Run one scan job on the calling thread (for `clipd index`)."""
        job = ScanJob(tuple(paths))
        try:
            self._run_job(job)
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
            except Exception:  # a bug in one job must not end indexing for good
                log.exception("scan of %s failed", ", ".join(map(str, job.paths)))
                job.done.set()
        # Release anyone waiting on jobs that will never run.
        while True:
            try:
                pending = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(pending, ScanJob):
                pending.done.set()

    def _run_job(self, job: ScanJob) -> None:
        self._progress.begin_scan()
        try:
            todo = self._plan(job)
            job.queued = len(todo)
            self._progress.add_queued(len(todo))
            if todo:
                log.info("indexing %d new or changed files", len(todo))
            self._embed_all(todo, job)
        finally:
            self._progress.end_scan()
            job.done.set()

    def _plan(self, job: ScanJob) -> list[FileStat]:
        """Scan the job's paths; drop vanished files now, return the files to embed."""
        found = ScanResult()
        for path in job.paths:
            scan(path, self._matcher, found)
        todo: list[FileStat] = []
        gone: list[str] = []
        for path in job.paths:
            prefix = str(path)
            known = self._store.known_files(prefix)
            failed = self._store.known_failures(prefix)
            hidden = tuple(d + os.sep for d in found.unreadable)
            for candidate in (known, failed):
                gone += [p for p in candidate if p not in found.files and not p.startswith(hidden)]
            todo += [
                st
                for p, st in found.files.items()
                if p.startswith(prefix)
                and known.get(p) != (st.size, st.mtime_ns)
                and failed.get(p) != (st.size, st.mtime_ns)
            ]
        if gone:
            job.removed = self._store.remove(sorted(set(gone)))
            log.info("removed %d files that no longer exist", job.removed)
        # Newest first: the photos a user just added are the ones they will look for.
        unique = {st.path: st for st in todo}
        return sorted(unique.values(), key=lambda st: st.mtime_ns, reverse=True)

    def _embed_all(self, todo: list[FileStat], job: ScanJob) -> None:
        batch_size = self._config.batch_size
        lookahead = 2 * batch_size
        pending: deque[Future[_Outcome]] = deque()
        remaining = iter(todo)
        loaded: list[_Loaded] = []
        failures: list[FailureRecord] = []
        last_log = time.monotonic()
        while True:
            while len(pending) < lookahead and not self._stopping.is_set():
                stat = next(remaining, None)
                if stat is None:
                    break
                pending.append(self._pool.submit(self._load, stat))
            if not pending:
                break
            outcome = pending.popleft().result()
            (loaded if isinstance(outcome, _Loaded) else failures).append(outcome)  # type: ignore[arg-type]
            if len(loaded) >= batch_size or (not pending and (loaded or failures)):
                self._commit(loaded, failures, job)
                loaded, failures = [], []
            if time.monotonic() - last_log >= _LOG_EVERY_S:
                last_log = time.monotonic()
                log.info("%s", self._progress.describe())
        if loaded or failures:
            self._commit(loaded, failures, job)

    def _load(self, stat: FileStat) -> _Outcome:
        """Runs on a loader thread: read, decode, preprocess. Never raises."""
        try:
            decoded = images.decode_file(
                Path(stat.path),
                max_pixels=self._config.max_image_pixels,
                min_side=self._embedder.image_size,
            )
            return _Loaded(
                stat,
                content_hash(stat.path, stat.size),
                decoded.width,
                decoded.height,
                self._embedder.prepare(decoded.image),
            )
        except ImageError as exc:
            return _failure(stat, exc.error_class, str(exc))
        except OSError as exc:  # vanished or unreadable while hashing
            return _failure(stat, "Unreadable", f"cannot read the file: {exc.strerror or exc}")
        except Exception as exc:  # one odd file must never take its batch down
            log.exception("unexpected error loading %s", stat.path)
            return _failure(stat, "InternalError", f"{type(exc).__name__}: {exc}")

    def _commit(self, loaded: list[_Loaded], failures: list[FailureRecord], job: ScanJob) -> None:
        records, embed_failures = self._embed(loaded)
        failures = failures + embed_failures
        try:
            self._store.write_batch(records, failures)
        except sqlite.Error as exc:
            # Nothing of the batch was written; the next scan finds these files again.
            log.error("could not store a batch of %d files: %s", len(loaded), exc)
            self._progress.add_done(0, 0, len(loaded) + len(failures))
            return
        for failure in failures:
            log.warning("cannot index %s: %s", failure.path, failure.message)
        job.indexed += len(records)
        job.failed += len(failures)
        self._progress.add_done(len(records), len(failures), 0)

    def _embed(self, loaded: list[_Loaded]) -> tuple[list[FileRecord], list[FailureRecord]]:
        if not loaded:
            return [], []
        try:
            vectors = self._embedder.embed_prepared([item.pixels for item in loaded])
        except Exception:
            if len(loaded) == 1:
                log.exception("embedding %s failed", loaded[0].stat.path)
                item = loaded[0]
                return [], [_failure(item.stat, "EmbedError", "the model failed on this image")]
            # Isolate the culprit rather than lose the whole batch.
            return _merge([self._embed([item]) for item in loaded])
        pairs = zip(loaded, vectors, strict=True)
        return [_record(item, vector.tobytes()) for item, vector in pairs], []


def _merge(
    parts: list[tuple[list[FileRecord], list[FailureRecord]]],
) -> tuple[list[FileRecord], list[FailureRecord]]:
    return [r for p in parts for r in p[0]], [f for p in parts for f in p[1]]


def _failure(stat: FileStat, error: str, message: str) -> FailureRecord:
    return FailureRecord(stat.path, stat.size, stat.mtime_ns, error, message)


def _record(item: _Loaded, vector: bytes) -> FileRecord:
    st = item.stat
    return FileRecord(
        st.path, st.size, st.mtime_ns, st.inode, st.device, item.content_hash,
        item.width, item.height, vector,
    )  # fmt: skip
