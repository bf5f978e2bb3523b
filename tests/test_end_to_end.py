"""The real thing: `clipd serve` as a process on generated images, queried with `clipq --json`."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.corpus import Corpus, write_corpus

from clipd_api.paths import default_socket_path
from clipq import BadRequest, Client, ClipqError, ImageFile, Text

BIN = Path(sys.executable).parent
QUERIES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle")]


def wait_until_indexed(expected: int, failed: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with Client(timeout=5) as client:
                status = client.status()
            last = status
            if status.state == "idle" and status.indexed == expected and status.failed == failed:
                return
        except ClipqError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"not indexed in {timeout}s; last status: {last}")


def indexed_soon(at_least: int, timeout: float = 120) -> int:
    """Poll until the daemon reports at_least files indexed (or timeout); the count it saw.

    For tests that interrupt indexing: they stop the daemon as soon as this returns.
    """
    deadline = time.monotonic() + timeout
    indexed = 0
    while indexed < at_least and time.monotonic() < deadline:
        with contextlib.suppress(ClipqError), Client(timeout=2) as client:
            indexed = client.status().indexed
        time.sleep(0.02)
    return indexed


@pytest.fixture
def served(tmp_path: Path, write_config: ConfigWriter) -> Iterator[tuple[Corpus, Path]]:
    """A clipd process serving a fresh corpus; stopped with SIGTERM, which must exit 0."""
    corpus = write_corpus(tmp_path / "pics")
    config = write_config([corpus.root])
    log = tmp_path / "clipd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [BIN / "clipd", "serve", "--config", str(config)], stdout=sink, stderr=sink
        )
    try:
        wait_until_indexed(len(corpus.images), len(corpus.bad))
        yield corpus, log
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert code == 0, log.read_text()
    assert not default_socket_path().exists(), "the socket must be removed on exit"


def clipd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "clipd", *args], capture_output=True, text=True, timeout=120, check=False
    )


def clipq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "clipq", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_search_ranks_the_right_images_first(served: tuple[Corpus, Path]) -> None:
    corpus, _ = served
    for colour, shape in QUERIES:
        result = clipq("--json", "-n", "5", f"a {colour} {shape}")
        assert result.returncode == 0, result.stderr
        hits = json.loads(result.stdout)
        assert len(hits) == 5
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True)
        right = sum(corpus.class_of(hit["path"]) == (colour, shape) for hit in hits)
        assert right / 5 >= 0.8, f"{colour} {shape}: {hits}"


def test_plain_output_and_words_joined(served: tuple[Corpus, Path]) -> None:
    corpus, _ = served
    result = clipq("-n", "3", "a", "red", "circle")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    score, path = lines[0].split("  ", 1)
    assert 0 < float(score) <= 1
    assert corpus.class_of(path) == ("red", "circle")


def test_failures_are_recorded_with_reasons_and_logged(served: tuple[Corpus, Path]) -> None:
    corpus, log = served
    with Client() as client:
        status = client.status()
    assert status.failed == len(corpus.bad)
    assert status.indexed == len(corpus.images)
    assert status.model.endswith("tiny-clip.json")
    text = log.read_text()
    for bad in corpus.bad:
        assert f"cannot index {bad}" in text


def test_clipd_index_refuses_a_database_a_daemon_serves(
    tmp_path: Path, write_config: ConfigWriter, served: tuple[Corpus, Path]
) -> None:
    """Only one process writes the index: `clipd index` points at the daemon instead."""
    corpus, _ = served
    config = write_config([corpus.root])
    result = subprocess.run(
        [BIN / "clipd", "index", "--config", str(config), str(corpus.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "`clipd serve`) is serving the database" in result.stderr
    assert "clipq reindex PATH..." in result.stderr
    assert result.stderr.count("\n") == 1


def test_restart_reuses_the_index(tmp_path: Path, write_config: ConfigWriter) -> None:
    """A second run over the same folder embeds nothing again."""
    corpus = write_corpus(tmp_path / "pics", per_class=1)
    config = write_config([corpus.root])
    command = [str(BIN / "clipd"), "index", "--config", str(config), str(corpus.root)]
    runs = [
        subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    assert runs[0].stdout.startswith(f"indexed {len(corpus.images)}, failed 3,"), runs[0].stdout
    assert runs[1].stdout.startswith("indexed 0, failed 0, removed 0"), runs[1].stdout


def test_clipq_without_daemon_says_how_to_start_it(tmp_path: Path) -> None:
    result = clipq("--socket", str(tmp_path / "none.sock"), "anything")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "clipd serve" in result.stderr
    assert result.stderr.count("\n") == 1


def test_second_daemon_on_the_same_socket_is_refused(
    tmp_path: Path, served: tuple[Corpus, Path], write_config: ConfigWriter
) -> None:
    corpus, _ = served
    config = write_config([corpus.root], database=str(tmp_path / "other.db"))
    result = clipd("serve", "--config", str(config))
    assert result.returncode == 3
    assert "another clipd is already serving on" in result.stderr
    assert "systemctl --user stop clipd" in result.stderr


def test_second_daemon_on_the_same_database_is_refused(
    tmp_path: Path, served: tuple[Corpus, Path], write_config: ConfigWriter
) -> None:
    corpus, _ = served
    config = write_config([corpus.root], socket=str(tmp_path / "other.sock"))
    result = clipd("serve", "--config", str(config))
    assert result.returncode == 3
    pid = (tmp_path / "index.db.lock").read_text().split()[0]
    assert f"another clipd (pid {pid}, `clipd serve`) is using the database" in result.stderr
    assert "systemctl --user stop clipd" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "other.sock").exists()


def test_query_algebra_filters_and_output_modes(served: tuple[Corpus, Path]) -> None:
    corpus, _ = served
    # Subtracting "circle" from a red query keeps the red but drops the circles.
    steered = clipq("--json", "-n", "3", "a red square", "-0.5:a red circle")
    assert steered.returncode == 0, steered.stderr
    classes = [corpus.class_of(hit["path"]) for hit in json.loads(steered.stdout)]
    assert all(c is not None and c[0] == "red" and c[1] != "circle" for c in classes), classes

    example = next(p for p, c in corpus.images.items() if c == ("blue", "triangle"))
    by_example = clipq("--jsonl", "-n", "1", str(example))
    assert by_example.returncode == 0, by_example.stderr
    hit = json.loads(by_example.stdout)
    assert hit["path"] == str(example)
    assert hit["score"] == pytest.approx(1.0, abs=1e-4)

    pngs = clipq("-0", "-n", "50", "--ext", "png", "--under", str(corpus.root), "a green circle")
    assert pngs.returncode == 0, pngs.stderr
    paths = pngs.stdout.split("\0")
    assert paths.pop() == ""
    assert paths
    assert all(p.endswith(".png") for p in paths)

    future = clipq("--paths", "--since", "2999", "a green circle")
    assert (future.returncode, future.stdout) == (0, "")


def test_library_against_the_real_daemon(served: tuple[Corpus, Path]) -> None:
    corpus, _ = served
    example = next(p for p, c in corpus.images.items() if c == ("yellow", "square"))
    with Client(timeout=30) as client:
        status = client.status()
        mixed = client.search(ImageFile(example), Text("a yellow square", 0.5), limit=3)
        assert [corpus.class_of(hit.path) for hit in mixed] == [("yellow", "square")] * 3
        assert not mixed.nothing_indexed

        vector = client.embed("a yellow square")
        assert len(vector) == status.dim
        assert sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)
        assert client.embed(path=example) == pytest.approx(
            client.embed(image=example.read_bytes()), abs=1e-3
        )

        failures = client.failures()
        assert failures.total == len(corpus.bad)
        assert {f.path for f in failures} == {str(p) for p in corpus.bad}

        rescan = client.reindex(corpus.root, wait=True)
        assert (rescan.queued, rescan.indexed, rescan.removed) == (0, 0, 0)
        with pytest.raises(BadRequest, match="limit 5000 is over the maximum"):
            client.search("a cat", limit=5000)
