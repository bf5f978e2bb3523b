"""install-service / uninstall-service for systemd and launchd: the real code, with the service
managers replaced by scripts that log their arguments; and the unit checked by systemd itself."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ConfigWriter

from clipd import cli
from clipd.autostart import LABEL, render_plist, render_unit

REPO = Path(__file__).parent.parent
CLIPD = Path(sys.executable).parent / "clipd"
UID = os.getuid()


class FakeTool:
    """A `name` script first on PATH that logs each call's arguments."""

    def __init__(self, bin_dir: Path, name: str, script: str = "") -> None:
        self.log = bin_dir / f"{name}.calls"
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "$*" >> "{self.log}"\n{script}\nexit 0\n')
        path.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ['PATH']}")
    return path


@pytest.fixture
def config(tmp_path: Path, write_config: ConfigWriter) -> Path:
    (tmp_path / "pics").mkdir()
    return write_config([tmp_path / "pics"])


def unit_path() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "clipd.service"


def clipd(*args: str) -> int:
    return cli.main(list(args))


def test_dry_run_prints_the_unit_and_the_commands_and_does_nothing(
    bin_dir: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl = FakeTool(bin_dir, "systemctl")
    command = ("install-service", "--config", str(config), "--dry-run", "--platform", "linux")
    assert clipd(*command) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"would write {unit_path()}:\n# clipd")
    assert f"\nExecStart={CLIPD} serve --config {config}\n" in out
    assert out.endswith(
        "would run: systemctl --user daemon-reload\n"
        "would run: systemctl --user enable --now clipd.service\n"
        "dry run: nothing was changed\n"
    )
    assert not unit_path().exists()
    assert systemctl.calls() == []


def test_install_writes_enables_and_starts_and_is_idempotent(
    tmp_path: Path, bin_dir: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl = FakeTool(bin_dir, "systemctl")
    assert clipd("install-service", "--config", str(config), "--platform", "linux") == 0
    assert unit_path().read_text() == render_unit(str(CLIPD), str(config))
    assert systemctl.calls() == ["--user daemon-reload", "--user enable --now clipd.service"]
    assert "installed and started" in capsys.readouterr().out

    assert clipd("install-service", "--config", str(config), "--platform", "linux") == 0
    assert capsys.readouterr().out == "clipd.service is already installed and up to date\n"
    assert systemctl.calls()[2:] == ["--user enable --now clipd.service"]

    other = tmp_path / "my conf 100%" / "config.yaml"
    other.parent.mkdir()
    shutil.copy(config, other)
    assert clipd("install-service", "--config", str(other), "--platform", "linux") == 0
    assert f'--config "{other.parent}%/config.yaml"\n' in unit_path().read_text()
    assert systemctl.calls()[3:] == [
        "--user daemon-reload",
        "--user enable clipd.service",
        "--user restart clipd.service",
    ]
    assert "restarted clipd.service" in capsys.readouterr().out


def test_uninstall_stops_disables_and_removes(
    bin_dir: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl = FakeTool(bin_dir, "systemctl")
    assert clipd("install-service", "--config", str(config), "--platform", "linux") == 0
    assert clipd("uninstall-service", "--platform", "linux") == 0
    assert not unit_path().exists()
    assert systemctl.calls()[2:] == ["--user disable --now clipd.service", "--user daemon-reload"]
    capsys.readouterr()
    assert clipd("uninstall-service", "--platform", "linux") == 0
    assert "clipd.service is not installed" in capsys.readouterr().out
    assert len(systemctl.calls()) == 4


def test_a_missing_or_failing_systemctl_is_one_line_and_exit_1(
    tmp_path: Path, bin_dir: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(bin_dir))
    command = [str(CLIPD), "install-service", "--config", str(config), "--platform", "linux"]
    missing = subprocess.run(command, capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("clipd: systemctl not found; install-service needs systemd")
    assert missing.stderr.count("\n") == 1

    unit_path().unlink()
    FakeTool(bin_dir, "systemctl", 'echo "Failed to connect to bus: No medium found" >&2; exit 1')
    failing = subprocess.run(command, capture_output=True, text=True, check=False)
    assert failing.returncode == 1
    assert failing.stderr == (
        "clipd: `systemctl --user daemon-reload` failed (exit 1): "
        "Failed to connect to bus: No medium found\n"
    )


def test_launchd_agent_is_written_loaded_and_unloaded(
    bin_dir: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launchctl = FakeTool(bin_dir, "launchctl", '[ "$1" = print ] && exit "${PRINT_EXIT:-0}"')
    home = Path.home()
    plist = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert clipd("install-service", "--config", str(config), "--platform", "darwin") == 0
    agent = plistlib.loads(plist.read_bytes())
    logs = home / "Library" / "Logs" / "clipd"
    assert agent["Label"] == LABEL
    assert agent["ProgramArguments"] == [str(CLIPD), "serve", "--config", str(config)]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProcessType"] == "Background"
    assert agent["LowPriorityIO"] is True
    assert agent["Nice"] >= 10
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == str(logs / "clipd.log")
    assert logs.is_dir()
    assert launchctl.calls() == [f"bootout gui/{UID}/{LABEL}", f"bootstrap gui/{UID} {plist}"]
    assert "installed and started" in capsys.readouterr().out

    assert clipd("install-service", "--config", str(config), "--platform", "darwin") == 0
    assert launchctl.calls()[2:] == [f"print gui/{UID}/{LABEL}"], "loaded: nothing more to do"
    assert capsys.readouterr().out == f"{LABEL} is already installed and up to date\n"

    monkeypatch.setenv("PRINT_EXIT", "113")  # launchctl's answer for a service not loaded
    assert clipd("install-service", "--config", str(config), "--platform", "darwin") == 0
    assert launchctl.calls()[3:] == [f"print gui/{UID}/{LABEL}", f"bootstrap gui/{UID} {plist}"]

    assert clipd("uninstall-service", "--platform", "darwin") == 0
    assert launchctl.calls()[5:] == [f"bootout gui/{UID}/{LABEL}"]
    assert not plist.exists()


def test_launchd_dry_run(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = ("install-service", "--config", str(config), "--dry-run", "--platform", "darwin")
    assert clipd(*command) == 0
    out = capsys.readouterr().out
    plist = Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert f"would write {plist}:\n<?xml" in out
    assert f"would run: launchctl bootstrap gui/{UID} {plist}\n" in out
    assert not plist.exists()


def test_the_repository_copies_are_the_rendered_templates() -> None:
    """systemd/ holds the files as rendered for a pip --user or pipx install: they cannot drift."""
    unit = render_unit("%h/.local/bin/clipd", "%h/.config/clipd/config.yaml")
    assert (REPO / "systemd" / "clipd.service").read_text() == unit
    plist = render_plist(
        "/Users/you/.local/bin/clipd",
        "/Users/you/.config/clipd/config.yaml",
        "/Users/you/Library/Logs/clipd",
        "/var/folders/xx/you/T",
    )
    assert (REPO / "systemd" / f"{LABEL}.plist").read_text() == plist
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '\n"clipd.units" = ["*.service", "*.plist"]\n' in pyproject, "the templates must ship"


def systemd_verify(unit: Path, home: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if "Failed to initialize manager" in result.stderr:
        pytest.skip(f"systemd-analyze --user cannot run here: {result.stderr.strip()}")
    return result


def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path, config: Path) -> None:
    """Unknown keys or values are only warnings to systemd: any output at all fails."""
    rendered = tmp_path / "clipd.service"
    rendered.write_text(render_unit(str(CLIPD), str(config)))
    result = systemd_verify(rendered, tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")

    home = tmp_path / "home"  # the repository copy runs %h/.local/bin/clipd
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "clipd").symlink_to(CLIPD)
    result = systemd_verify(REPO / "systemd" / "clipd.service", home)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_systemd_verify_does_report_a_bad_line(tmp_path: Path, config: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    rendered = tmp_path / "clipd.service"
    rendered.write_text(render_unit(str(CLIPD), str(config)).replace("Nice=", "Nicety="))
    result = systemd_verify(rendered, tmp_path)
    assert "Unknown key 'Nicety'" in result.stderr
