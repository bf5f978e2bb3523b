"""What a reload applies, and an in-process daemon applying new filters without a restart."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ConfigWriter
from harness import free_port, in_process_daemon, picture, wait_until

from clipd.config import Config, ModelConfig, TcpAddress
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


def test_a_new_tcp_address_or_token_file_is_kept_for_a_restart(tmp_path: Path) -> None:
    old = Config(roots=(tmp_path / "a",), tcp=TcpAddress("127.0.0.1", 50051))
    new = replace(old, tcp=TcpAddress("127.0.0.1", 50052), token_file=tmp_path / "token")
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("tcp", "token_file")
    assert plan.config == old
    # Turning TCP off is a change of its own too: the port stays open until a restart.
    assert plan_reload(old, replace(old, tcp=None)).needs_restart == ("tcp",)


def test_a_reload_says_a_new_tcp_address_needs_a_restart(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    token = str(tmp_path / "token")
    config = write_config([root], tcp="127.0.0.1:0", token_file=token)
    with in_process_daemon(config, root, 0) as live:
        listening = live.daemon.config.tcp
        caplog.set_level(logging.INFO, logger="clipd.app")
        write_config([root], tcp=f"127.0.0.1:{free_port()}", token_file=token)
        live.daemon.reload()  # done on the daemon's main loop, which logs when it is
        wait_until(lambda: "reloaded " in caplog.text, "the reload")
        assert "reload: tcp changed; restart clipd to apply" in caplog.text
        assert live.daemon.config.tcp == listening


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
