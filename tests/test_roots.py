"""Only files below a root are indexed, since only they are watched and rescanned: a reindex or
`clipd index` of another path is refused, and a rescan of every root drops whatever the index
holds outside them, so that no indexed path outlives its file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import ConfigWriter
from harness import in_process_daemon, picture, run_clipd

from clipq import BadRequest


def test_reindex_of_a_path_outside_the_roots_is_refused_naming_them(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    picture(root / "inside.png")
    outside = picture(tmp_path / "elsewhere" / "ghost.png", "blue", "square")
    with in_process_daemon(write_config([root]), root, 1) as live, live.client() as client:
        with pytest.raises(BadRequest, match="only paths below a root can be reindexed") as refused:
            client.reindex(outside, wait=True)
        assert f"{outside} is below none of {root}" in str(refused.value)
        assert "add its folder to `roots`" in str(refused.value)
        # A sibling whose name starts like the root's is outside it too.
        with pytest.raises(BadRequest):
            client.reindex(tmp_path / "pics2", wait=True)
        assert client.reindex(root / "inside.png", wait=True).failed == 0
        assert live.indexed() == {str(root / "inside.png")}
        assert {hit.path for hit in client.search("a blue square").hits} == {
            str(root / "inside.png")
        }


def test_clipd_index_refuses_a_path_outside_the_roots(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    picture(root / "inside.png")
    outside = picture(tmp_path / "elsewhere" / "ghost.png")
    config = write_config([root])
    result = run_clipd("index", "--config", str(config), str(outside))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"clipd: {outside} is below none of the roots in {config} ({root}); only files below a "
        "root are indexed, since only they are kept current: add its folder to `roots` to "
        "index it\n"
    )
    assert not (tmp_path / "index.db").exists()


def test_a_rescan_of_every_root_drops_what_is_indexed_outside_them(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> None:
    """A root removed from the config while clipd was stopped leaves rows no reload forgot."""
    caplog.set_level(logging.INFO, logger="clipd.indexer")
    root, dropped = tmp_path / "pics", tmp_path / "pics2"  # a sibling named like the root
    picture(root / "inside.png")
    picture(dropped / "a.png", "blue", "square", seed=1)
    picture(dropped / "b.png", "blue", "square", seed=2)
    with in_process_daemon(write_config([root, dropped]), root, 3) as live:
        assert live.store.counts().indexed == 3
    with in_process_daemon(write_config([root]), root, 1) as live, live.client() as client:
        assert live.store.indexed_outside([str(root)]) == []
        assert live.store.counts().indexed == 1
        hits = client.search("a blue square").hits
        assert [hit.path for hit in hits] == [str(root / "inside.png")]
    assert "removed 2 files indexed outside every root" in caplog.text
