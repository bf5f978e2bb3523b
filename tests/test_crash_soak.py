"""Crashes: SIGKILL at random moments while indexing a changing folder, a few times (the long
soak is bench/soak.py); after each, files and vectors are one-to-one with no duplicate paths, and
the final index equals a clean index of the same folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from conftest import ConfigWriter

from bench.soak import SOAK_PRECISION, add_images, soak


@pytest.mark.timeout(600)
def test_three_sigkills_then_the_index_equals_a_clean_one(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "photos"
    add_images(root, random.Random(3), 60)
    config = write_config([root], batch_size=4)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["precision"] = SOAK_PRECISION
    config.write_text(yaml.safe_dump(settings))
    clean = tmp_path / "clean.yaml"
    clean.write_text(yaml.safe_dump({**settings, "database": str(tmp_path / "clean.db")}))
    rounds = soak(root, config, clean, kills=3, seed=3)
    assert len(rounds) == 3
    assert any(r.queued_at_kill for r in rounds), "at least one kill must land mid-indexing"
