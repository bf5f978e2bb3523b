"""What several benchmarks share: where the installed commands are, and daemon config files."""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = {
    "tiny": {
        "name": str(REPO / "tests/fixtures/tiny-clip.json"),
        "pretrained": str(REPO / "tests/fixtures/tiny-clip.pt"),
    },
    "vit-b-32": {"name": "ViT-B-32", "pretrained": "random"},
}


def compile_sources() -> None:
    """Write the bytecode of clipd's, clipq's and the API's modules, as `pip install` does for
    a package it installs (and rclip's has): the commands timed then start as a user's do, not
    compiling their sources on every start, as they would where PYTHONDONTWRITEBYTECODE is set
    (10% of a clipq query's wall time on the project VM)."""
    for folder in ("daemon", "client", "protos"):
        compileall.compile_dir(REPO / folder, quiet=1)


def write_config(
    work: Path, photos: Path, model: str, precision: str = "auto", **extra: object
) -> Path:
    """A config file in work for a daemon over photos with one of MODELS, on CPU."""
    config = {
        "roots": [str(photos)],
        "database": str(work / f"{model}.db"),
        "socket": str(work / f"{model}.sock"),
        "model": {**MODELS[model], "device": "cpu", "precision": precision},
        "log_level": "warning",
        **extra,
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{model}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
