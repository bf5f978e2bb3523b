"""What a reload applies, and an in-process daemon applying new filters without a restart."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ConfigWriter
from harness import in_process_daemon, picture

from clipd.config import Config, ModelConfig
from clipd.reload import plan_reload


def test_roots_and_filters_apply_restart_keys_keep_their_old_value(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    old = Config(roots=(a, b), database=tmp_path / "one.db", socket=tmp_path / "one.sock")
    new = replace(
        old,
        roots=(b, c),
        database=tmp_path / "two.db",
        model=ModelConfig(name="ViT-L-14"),
        batch_size=4,
    )
    plan = plan_reload(old, new)
    assert plan.added == (c,)
    assert plan.removed == (a,)
    assert plan.needs_restart == ("database", "model")
    assert plan.config == replace(new, database=old.database, model=old.model)
    assert not plan.refilter
    assert plan.rescan == (c,)


def test_a_filter_change_rescans_every_root(tmp_path: Path) -> None:
    old = Config(roots=(tmp_path / "a", tmp_path / "b"))
    plan = plan_reload(old, replace(old, exclude=("*.tmp",)))
    assert plan.refilter
    assert plan.rescan == old.roots
    assert (plan.added, plan.removed, plan.needs_restart) == ((), (), ())


def test_a_narrower_include_drops_files_on_reload(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pics"
    png = picture(root / "a.png", seed=1)
    jpeg = picture(root / "b.jpg", "blue", "square", seed=2)
    config = write_config([root])
    with in_process_daemon(config, root, 2) as live:
        caplog.set_level(logging.INFO, logger="clipd.indexer")
        write_config([root], include=["*.png"])
        live.daemon.reload()
        live.wait_for(lambda: live.indexed() == {str(png)}, "the JPEG dropped by include")
        # It still exists: it is left out, not gone.
        assert "removed 1 file that the include, exclude and hidden-file settings" in caplog.text
        assert "no longer exist" not in caplog.text
        write_config([root])
        live.daemon.reload()
        live.wait_for(lambda: live.indexed() == {str(png), str(jpeg)}, "the JPEG back")
        live.assert_consistent()
