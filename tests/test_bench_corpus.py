"""The benchmark's samples of its corpus: what they measure must have the corpus's mix of kinds,
or the pipeline bound and the steady state are figures of another corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.corpus import KINDS, kind_of, mixed, number_of


def _names(count: int) -> list[Path]:
    """The corpus's file names, as bench.corpus writes them, sorted as bench.corpus.files does."""
    return sorted(
        Path(f"{2015 + n % 9}/{1 + n % 12:02d}/IMG_{n:05d}.{KINDS[kind_of(n)].ext}")
        for n in range(count)
    )


def _kinds(paths: list[Path]) -> Counter[str]:
    return Counter(kind_of(number_of(path)) for path in paths)


def test_a_mixed_sample_holds_the_corpus_mix_of_kinds() -> None:
    paths = _names(400)
    whole = _kinds(paths)
    assert whole == {"jpeg": 180, "portrait": 80, "exif": 80, "png": 40, "webp": 20}
    for count in (20, 60, 80):
        assert _kinds(mixed(paths, count)) == {kind: n * count // 400 for kind, n in whole.items()}
    # What the bench sampled before: every sixth sorted path.
    assert _kinds(paths[::6][:60])["webp"] == 1


def test_number_of_reads_the_file_number() -> None:
    assert number_of(Path("2016/03/IMG_00042.jpg")) == 42
