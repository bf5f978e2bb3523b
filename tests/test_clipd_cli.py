"""The `clipd` command's own behaviour: asking for help or the version stays cheap, what
check-config checks and shows, closed pipes, and a config naming a model OpenCLIP does not know."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ConfigWriter
from harness import BIN, run_clipd

from clipd.cli import main
from clipd.config import Config
from clipd_api.paths import default_socket_path

# What `clipd serve` needs but `clipd --help` must not pay for (seconds on a slow disk).
HEAVY_FOR_HELP = (
    "grpc",
    "numpy",
    "PIL",
    "sqlite_vec",
    "torch",
    "open_clip",
    "starlette",
    "uvicorn",
)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["serve", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from clipd.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_FOR_HELP!r})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout


def test_check_config_prints_every_setting(
    tmp_path: Path, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pics").mkdir()
    config = write_config([{"path": str(tmp_path / "pics"), "poll": True}], tcp="127.0.0.1:0")
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    keys = [line.split(":", 1)[0] for line in out.splitlines()[1:-1]]
    expected = [
        f.name for f in dataclasses.fields(Config) if f.name not in ("source", "poll_roots")
    ]
    assert keys == expected
    assert f"roots:              {tmp_path / 'pics'} (polled)\n" in out
    assert "tcp:                127.0.0.1:0\n" in out
    assert "skip_hidden:        true\n" in out
    assert "(device cpu, precision auto, runtime auto)\n" in out
    assert out.endswith("config OK\n")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"name": "ViT-Q-99", "pretrained": "random"},
            "clipd: model.name 'ViT-Q-99' is not an OpenCLIP model",
        ),
        (
            {"name": "ViT-B-32", "pretrained": "laion9b_imaginary"},
            "clipd: model.pretrained 'laion9b_imaginary' is not a tag of ViT-B-32; use one of: ",
        ),
    ],
)
def test_check_config_refuses_a_model_or_tag_openclip_does_not_know(
    tmp_path: Path,
    write_config: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
    model: dict[str, str],
    message: str,
) -> None:
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"], model=model)
    assert main(["check-config", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1


def test_serve_refuses_an_unknown_model_with_exit_2(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    """Exit 2 is a config error, which the systemd unit does not restart (RestartPrevent...)."""
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"], model={"name": "ViT-Q-99", "device": "cpu"})
    result = run_clipd("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clipd: model.name 'ViT-Q-99' is not an OpenCLIP model")
    assert "Traceback" not in result.stderr
    assert not default_socket_path().exists()


@pytest.mark.parametrize(
    "command",
    [["check-config"], ["install-service", "--dry-run", "--platform", "linux"]],
)
def test_a_closed_stdout_exits_141_quietly(
    tmp_path: Path, write_config: ConfigWriter, command: list[str]
) -> None:
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"])
    read_end, write_end = os.pipe()
    # The reader is gone before clipd writes a byte, as with `clipd ... | head -0`.
    os.close(read_end)
    try:
        done = subprocess.run(
            [BIN / "clipd", *command, "--config", str(config)],
            check=False,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")
