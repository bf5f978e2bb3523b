"""The real thing: `clipd serve` as a process on generated images, queried with `clipq --json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.corpus import Corpus, write_corpus
from harness import (
    DaemonProcess,
    daemon_process,
    run_clipd,
    run_clipq_process,
    wait_until_indexed,
)

from clipd.embedder import MIN_COSINE
from clipd_api.paths import default_socket_path
from clipq import BadRequest, Client, ImageFile, Text

Served = tuple[Corpus, DaemonProcess]
QUERIES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle")]


@pytest.fixture
def served(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Served]:
    """A clipd process serving a fresh corpus; stopped with SIGTERM, which must exit 0."""
    corpus = write_corpus(tmp_path / "pics")
    with daemon_process(write_config([corpus.root])) as process:
        wait_until_indexed(len(corpus.images), len(corpus.bad))
        yield corpus, process
    assert not default_socket_path().exists(), "the socket must be removed on exit"


def test_search_ranks_the_right_images_first(served: Served) -> None:
    corpus, _ = served
    for colour, shape in QUERIES:
        result = run_clipq_process("--json", "-n", "5", f"a {colour} {shape}")
        assert result.returncode == 0, result.stderr
        hits = json.loads(result.stdout)
        assert len(hits) == 5
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True)
        right = sum(corpus.class_of(hit["path"]) == (colour, shape) for hit in hits)
        assert right / 5 >= 0.8, f"{colour} {shape}: {hits}"


def test_plain_output_and_words_joined(served: Served) -> None:
    corpus, _ = served
    result = run_clipq_process("-n", "3", "a", "red", "circle")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    score, path = lines[0].split("  ", 1)
    assert 0 < float(score) <= 1
    assert corpus.class_of(path) == ("red", "circle")


def test_failures_are_recorded_with_reasons_and_logged(
    served: Served,
) -> None:
    corpus, process = served
    with Client() as client:
        status = client.status()
    assert status.failed == len(corpus.bad)
    assert status.indexed == len(corpus.images)
    assert status.model.endswith("tiny-clip.json")
    for bad in corpus.bad:
        assert f"cannot index {bad}" in process.output


def test_clipd_index_refuses_a_database_a_daemon_serves(
    tmp_path: Path, write_config: ConfigWriter, served: Served
) -> None:
    """Only one process writes the index: `clipd index` points at the daemon instead."""
    corpus, _ = served
    config = write_config([corpus.root])
    result = run_clipd("index", "--config", str(config), str(corpus.root))
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "`clipd serve`) is serving the database" in result.stderr
    assert "clipq reindex PATH..." in result.stderr
    assert result.stderr.count("\n") == 1


def test_restart_reuses_the_index(tmp_path: Path, write_config: ConfigWriter) -> None:
    """A second run over the same folder embeds nothing again."""
    corpus = write_corpus(tmp_path / "pics", per_class=1)
    config = write_config([corpus.root])
    runs = [run_clipd("index", "--config", str(config), str(corpus.root)) for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    expected = f"indexed {len(corpus.images)}, failed {len(corpus.bad)},"
    assert runs[0].stdout.startswith(expected), runs[0].stdout
    # The rate counts the indexing alone; the model's load is reported apart.
    assert "; the model loaded in " in runs[0].stdout
    for run in runs:  # no library chatter: open_clip's INFO lines are for --log-level debug
        chatter = [line for line in run.stderr.splitlines() if " INFO clipd" not in line]
        assert not [line for line in chatter if " INFO " in line], run.stderr
    assert runs[1].stdout.startswith("indexed 0, failed 0, removed 0"), runs[1].stdout


def test_clipq_without_daemon_says_how_to_start_it(tmp_path: Path) -> None:
    result = run_clipq_process("--socket", str(tmp_path / "none.sock"), "anything")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "clipd serve" in result.stderr
    assert result.stderr.count("\n") == 1


def test_second_daemon_on_the_same_socket_is_refused(
    tmp_path: Path, served: Served, write_config: ConfigWriter
) -> None:
    corpus, _ = served
    config = write_config([corpus.root], database=str(tmp_path / "other.db"))
    result = run_clipd("serve", "--config", str(config))
    assert result.returncode == 3
    assert "another clipd is already serving on" in result.stderr
    assert "systemctl --user stop clipd" in result.stderr


def test_second_daemon_on_the_same_database_is_refused(
    tmp_path: Path, served: Served, write_config: ConfigWriter
) -> None:
    corpus, _ = served
    config = write_config([corpus.root], socket=str(tmp_path / "other.sock"))
    result = run_clipd("serve", "--config", str(config))
    assert result.returncode == 3
    pid = (tmp_path / "index.db.lock").read_text().split()[0]
    assert f"another clipd (pid {pid}, `clipd serve`) is using the database" in result.stderr
    assert "systemctl --user stop clipd" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "other.sock").exists()


def test_query_algebra_filters_and_output_modes(served: Served) -> None:
    corpus, _ = served
    # Subtracting "circle" from a red query keeps the red but drops the circles.
    steered = run_clipq_process("--json", "-n", "3", "a red square", "-0.5:a red circle")
    assert steered.returncode == 0, steered.stderr
    classes = [corpus.class_of(hit["path"]) for hit in json.loads(steered.stdout)]
    assert all(c is not None and c[0] == "red" and c[1] != "circle" for c in classes), classes

    example = next(p for p, c in corpus.images.items() if c == ("blue", "triangle"))
    by_example = run_clipq_process("--jsonl", "-n", "1", str(example))
    assert by_example.returncode == 0, by_example.stderr
    hit = json.loads(by_example.stdout)
    assert hit["path"] == str(example)
    assert hit["score"] == pytest.approx(1.0, abs=1e-4)

    pngs = run_clipq_process(
        "-0", "-n", "50", "--ext", "png", "--under", str(corpus.root), "a green circle"
    )
    assert pngs.returncode == 0, pngs.stderr
    paths = pngs.stdout.split("\0")
    assert paths.pop() == ""
    assert paths
    assert all(p.endswith(".png") for p in paths)

    future = run_clipq_process("--paths", "--since", "2999", "a green circle")
    assert (future.returncode, future.stdout) == (0, "")


def test_library_against_the_real_daemon(served: Served) -> None:
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
        # The stored vector (embedded in an indexing batch) and a fresh one agree within the
        # precision rule: the int8 tower quantises activations per batch.
        stored, fresh = client.embed(path=example), client.embed(image=example.read_bytes())
        assert sum(a * b for a, b in zip(stored, fresh, strict=True)) >= MIN_COSINE

        failures = client.failures()
        assert failures.total == len(corpus.bad)
        assert {f.path for f in failures} == {str(p) for p in corpus.bad}

        rescan = client.reindex(corpus.root, wait=True)
        assert (rescan.queued, rescan.indexed, rescan.removed) == (0, 0, 0)
        with pytest.raises(BadRequest, match="limit 5000 is over the maximum"):
            client.search("a cat", limit=5000)
