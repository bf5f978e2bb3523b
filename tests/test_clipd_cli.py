"""The `clipd` command's own start-up cost: asking for help or the version stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What `clipd serve` needs but `clipd --help` must not pay for (seconds on a slow disk).
HEAVY_FOR_HELP = ("grpc", "numpy", "PIL", "sqlite_vec", "torch", "open_clip")


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
