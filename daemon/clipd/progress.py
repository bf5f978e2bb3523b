"""Live indexing progress, shared by the indexer (writer) and the status RPCs (readers)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# The throughput is measured over the batches of about this many recent seconds: long enough to
# even out batches of cached copies (near instant) and of large files, short enough to follow a
# change of pace.
_RATE_WINDOW_S = 20.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: str  # "starting", "indexing", "idle", "stopping"
    queued: int
    indexed_now: int
    failed_now: int
    images_per_second: float
    eta_seconds: float
    version: int  # bumps on every change, so watchers can wait for the next one
    problem: str  # what keeps indexing from going on, or ""


class Progress:
    """Counters behind a condition variable; every change wakes status watchers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._changed = threading.Condition()
        self._clock = clock
        self._state = "starting"
        self._scans = 0
        self._queued = 0
        self._indexed = 0
        self._failed = 0
        # (time, files finished then): the start of the current run of work, then each batch.
        self._marks: deque[tuple[float, int]] = deque()
        self._version = 0
        self._problem = ""

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def set_state(self, state: str) -> None:
        with self._changed:
            self._state = state
            self._bump()

    def set_problem(self, problem: str) -> None:
        """Say what keeps indexing from going on ("" once it goes on again)."""
        with self._changed:
            if problem != self._problem:
                self._problem = problem
                self._bump()

    def begin_scan(self) -> None:
        with self._changed:
            self._scans += 1
            if self._scans == 1 and not self._queued:
                # Work starts after a rest: the rate counts from now, not across the rest.
                self._marks.clear()
                self._marks.append((self._clock(), 0))
            self._bump()

    def end_scan(self) -> None:
        with self._changed:
            self._scans -= 1
            if self._scans == 0:
                self._queued = 0  # whatever was left is not coming (stop, or error)
            self._bump()

    def add_queued(self, count: int) -> None:
        with self._changed:
            self._queued += count
            self._bump()

    def add_done(self, indexed: int, failed: int, dropped: int) -> None:
        """A batch finished: `indexed` stored, `failed` recorded, `dropped` not written."""
        with self._changed:
            done = indexed + failed + dropped
            self._queued = max(0, self._queued - done)
            self._indexed += indexed
            self._failed += failed
            now = self._clock()
            self._marks.append((now, done))
            # Keep one mark older than the window: the rate's time span starts there.
            while len(self._marks) > 2 and self._marks[1][0] <= now - _RATE_WINDOW_S:
                self._marks.popleft()
            self._bump()

    @property
    def busy(self) -> bool:
        """True while files are being scanned or embedded: search results may be partial."""
        with self._changed:
            return self._scans > 0 or self._queued > 0

    def snapshot(self) -> Snapshot:
        with self._changed:
            return self._snapshot()

    def _rate(self) -> float:
        """Files finished per second over the recent batches; 0 when unknown or at rest."""
        if not (self._scans or self._queued) or len(self._marks) < 2:
            return 0.0
        (start, _), (end, _) = self._marks[0], self._marks[-1]
        done = sum(count for _, count in list(self._marks)[1:])
        return done / (end - start) if end > start else 0.0

    def _snapshot(self) -> Snapshot:
        state = self._state
        if state == "idle" and (self._scans or self._queued):
            state = "indexing"
        rate = self._rate()
        # With another scan waiting its files are not counted yet: no ETA rather than a short one.
        eta = self._queued / rate if rate > 0 and self._queued and self._scans <= 1 else 0.0
        return Snapshot(
            state,
            self._queued,
            self._indexed,
            self._failed,
            rate,
            eta,
            self._version,
            self._problem,
        )

    def wait_for_change(self, version: int, timeout: float) -> Snapshot:
        """The next snapshot after `version`, or the current one after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout=timeout)
            return self._snapshot()

    def describe(self) -> str:
        """One log line: done, queued, rate, ETA."""
        snap = self.snapshot()
        eta = f", ETA {_duration(snap.eta_seconds)}" if snap.eta_seconds else ""
        return (
            f"indexed {snap.indexed_now}, failed {snap.failed_now}, {snap.queued} queued "
            f"({snap.images_per_second:.1f} images/s{eta})"
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
