"""The indexing rate and ETA that status reports, on a clock the test moves."""

from __future__ import annotations

import pytest

from clipd.progress import Progress


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def batches(progress: Progress, clock: Clock, count: int, size: int, seconds: float) -> None:
    """`count` batches of `size` files, each taking `seconds`."""
    for _ in range(count):
        clock.now += seconds
        progress.add_done(size, 0, 0)


def test_at_rest_the_rate_and_eta_are_zero(clock: Clock) -> None:
    progress = Progress(clock)
    progress.set_state("idle")
    progress.begin_scan()
    progress.add_queued(40)
    batches(progress, clock, 4, 10, 1.0)
    progress.end_scan()
    snap = progress.snapshot()
    assert (snap.state, snap.images_per_second, snap.eta_seconds) == ("idle", 0.0, 0.0)


def test_a_rest_between_runs_does_not_count_in_the_rate(clock: Clock) -> None:
    progress = Progress(clock)
    progress.begin_scan()
    progress.add_queued(20)
    batches(progress, clock, 2, 10, 1.0)
    progress.end_scan()
    clock.now += 3600
    progress.begin_scan()
    progress.add_queued(30)
    batches(progress, clock, 1, 10, 1.0)
    snap = progress.snapshot()
    assert snap.images_per_second == pytest.approx(10.0)
    assert snap.eta_seconds == pytest.approx(2.0)


def test_the_eta_follows_the_real_pace_through_batches_of_instant_copies(clock: Clock) -> None:
    """A batch of copies (vectors reused) takes no time: the ETA must not believe it is the pace.

    Averaging each batch's own rate did: 10 files in 10 ms counted as 1000 files/s.
    """
    progress = Progress(clock)
    progress.begin_scan()
    progress.add_queued(200)
    batches(progress, clock, 5, 10, 1.0)
    batches(progress, clock, 1, 10, 0.01)
    # 60 files in 5.01 s: the 140 left take about 11.7 s at this pace.
    snap = progress.snapshot()
    assert snap.images_per_second == pytest.approx(60 / 5.01)
    assert snap.eta_seconds == pytest.approx(140 / (60 / 5.01))


def test_the_rate_follows_a_change_of_pace_within_its_window(clock: Clock) -> None:
    progress = Progress(clock)
    progress.begin_scan()
    progress.add_queued(10_000)
    batches(progress, clock, 30, 10, 1.0)  # 10 files/s
    batches(progress, clock, 50, 10, 0.5)  # then 20 files/s, for longer than the window
    assert progress.snapshot().images_per_second == pytest.approx(20.0)


def test_no_eta_while_another_scan_waits_with_files_not_yet_counted(clock: Clock) -> None:
    progress = Progress(clock)
    progress.begin_scan()
    progress.add_queued(100)
    batches(progress, clock, 2, 10, 1.0)
    assert progress.snapshot().eta_seconds == pytest.approx(8.0)
    progress.begin_scan()  # a second folder, still to be scanned
    snap = progress.snapshot()
    assert snap.images_per_second == pytest.approx(10.0)
    assert snap.eta_seconds == 0.0


def test_before_the_first_batch_the_rate_is_unknown(clock: Clock) -> None:
    progress = Progress(clock)
    progress.set_state("idle")
    progress.begin_scan()
    progress.add_queued(100)
    clock.now += 5
    snap = progress.snapshot()
    assert (snap.state, snap.images_per_second, snap.eta_seconds) == ("indexing", 0.0, 0.0)
