"""Install clipd as a per-user service: a systemd user unit on Linux, a launchd agent on macOS.

The unit and the plist are templates shipped inside the package (clipd/units), so this works
from an installed wheel; the copies in the repository's systemd/ folder are rendered from the
same templates. An install is a list of actions, printed by --dry-run and run otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape

from clipd.errors import ClipdError

UNIT_NAME = "clipd.service"
LABEL = "io.clipd.daemon"
PLATFORMS = ("linux", "darwin")


@dataclass(frozen=True, slots=True)
class Write:
    path: Path
    content: str


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path


@dataclass(frozen=True, slots=True)
class Remove:
    path: Path


@dataclass(frozen=True, slots=True)
class Run:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. unloading what is not loaded
    probe: bool = False  # success means there is nothing more to do


Action = Write | MakeDir | Remove | Run


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    summary: str  # said once the actions succeeded


def template(name: str) -> str:
    return (resources.files("clipd") / "units" / name).read_text(encoding="utf-8")


def render_unit(clipd: str, config: str) -> str:
    """The systemd unit; both arguments already in unit syntax (quoted, % and $ escaped)."""
    return template(UNIT_NAME).replace("@CLIPD@", clipd).replace("@CONFIG@", config)


def render_plist(clipd: str, config: str, log_dir: str, tmpdir: str) -> str:
    values = {"@CLIPD@": clipd, "@CONFIG@": config, "@LOG_DIR@": log_dir, "@TMPDIR@": tmpdir}
    text = template(f"{LABEL}.plist")
    for placeholder, value in values.items():
        text = text.replace(placeholder, escape(value))
    return text


def clipd_executable() -> Path:
    """This environment's `clipd`: beside the running Python (a venv, pipx), else on PATH."""
    beside = Path(sys.executable).parent / "clipd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("clipd")
    if found is None:
        raise ClipdError(
            f"cannot find the clipd executable (not in {beside.parent}, not on PATH); "
            "install clipd with pip or pipx, then run install-service again"
        )
    return Path(found).absolute()


def plan_install(platform: str, config: Path, clipd: Path) -> Plan:
    """What installing (or updating) the service for `config` takes, given what is there."""
    if platform == "linux":
        return _Systemd().install(clipd, config.absolute())
    if platform == "darwin":
        return _Launchd().install(clipd, config.absolute())
    raise _unsupported(platform)


def plan_uninstall(platform: str) -> Plan:
    if platform == "linux":
        return _Systemd().uninstall()
    if platform == "darwin":
        return _Launchd().uninstall()
    raise _unsupported(platform)


def execute(plan: Plan, out: TextIO, *, dry_run: bool) -> None:
    """Carry out the plan, or with dry_run print each file it would write and each command."""
    for action in plan.actions:
        if dry_run:
            out.write(_describe(action))
            continue
        if isinstance(action, Write):
            action.path.parent.mkdir(parents=True, exist_ok=True)
            action.path.write_text(action.content, encoding="utf-8")
        elif isinstance(action, MakeDir):
            action.path.mkdir(parents=True, exist_ok=True)
        elif isinstance(action, Remove):
            action.path.unlink(missing_ok=True)
        elif _run(action) and action.probe:
            break
    out.write("dry run: nothing was changed\n" if dry_run and plan.actions else f"{plan.summary}\n")


class _Systemd:
    def __init__(self) -> None:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        self.path = Path(base) / "systemd" / "user" / UNIT_NAME

    def install(self, clipd: Path, config: Path) -> Plan:
        content = render_unit(_unit_word(str(clipd)), _unit_word(str(config)))
        previous = _read(self.path)
        if previous == content:
            actions: tuple[Action, ...] = (_systemctl("enable", "--now", UNIT_NAME),)
            return Plan(actions, f"{UNIT_NAME} is already installed and up to date")
        write = Write(self.path, content)
        reload = _systemctl("daemon-reload")
        logs = "logs: journalctl --user -u clipd -f"
        if previous is None:
            actions = (write, reload, _systemctl("enable", "--now", UNIT_NAME))
            return Plan(actions, f"installed and started {self.path}; {logs}")
        actions = (
            write,
            reload,
            _systemctl("enable", UNIT_NAME),
            _systemctl("restart", UNIT_NAME),
        )
        return Plan(actions, f"updated {self.path} and restarted {UNIT_NAME}; {logs}")

    def uninstall(self) -> Plan:
        if not self.path.exists():
            return Plan((), f"{UNIT_NAME} is not installed ({self.path} does not exist)")
        actions = (
            _systemctl("disable", "--now", UNIT_NAME),
            Remove(self.path),
            _systemctl("daemon-reload"),
        )
        return Plan(actions, f"stopped {UNIT_NAME} and removed {self.path}")


class _Launchd:
    def __init__(self) -> None:
        home = Path.home()
        self.path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        self.logs = home / "Library" / "Logs" / "clipd"
        self.domain = f"gui/{os.getuid()}"

    def install(self, clipd: Path, config: Path) -> Plan:
        content = render_plist(str(clipd), str(config), str(self.logs), tempfile.gettempdir())
        previous = _read(self.path)
        bootstrap = Run(("launchctl", "bootstrap", self.domain, str(self.path)))
        if previous == content:
            # Loaded already (print succeeds): nothing to do; else load it.
            probe = Run(("launchctl", "print", f"{self.domain}/{LABEL}"), probe=True)
            return Plan((probe, bootstrap), f"{LABEL} is already installed and up to date")
        # Unload the old definition first (fails harmlessly when none is loaded).
        bootout = Run(("launchctl", "bootout", f"{self.domain}/{LABEL}"), may_fail=True)
        actions = (MakeDir(self.logs), Write(self.path, content), bootout, bootstrap)
        verb = "installed" if previous is None else "updated"
        return Plan(actions, f"{verb} and started {self.path}; logs: {self.logs}/clipd.log")

    def uninstall(self) -> Plan:
        if not self.path.exists():
            return Plan((), f"{LABEL} is not installed ({self.path} does not exist)")
        bootout = Run(("launchctl", "bootout", f"{self.domain}/{LABEL}"), may_fail=True)
        return Plan((bootout, Remove(self.path)), f"stopped {LABEL} and removed {self.path}")


def _systemctl(*args: str) -> Run:
    return Run(("systemctl", "--user", *args))


def _unit_word(value: str) -> str:
    """`value` as one word of a unit's command line: % and $ escaped, quoted if need be."""
    text = value.replace("%", "%%").replace("$", "$$")
    if any(c in text for c in " \t\"'\\"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _run(action: Run) -> bool:
    """Run a command; True if it succeeded. A failure raises unless the action allows it."""
    try:
        result = subprocess.run(action.argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ClipdError(
            f"{action.argv[0]} not found; install-service needs "
            f"{'systemd' if action.argv[0] == 'systemctl' else 'launchd'} "
            "(or start `clipd serve` some other way)"
        ) from None
    if result.returncode != 0 and not (action.may_fail or action.probe):
        lines = (result.stderr or result.stdout).strip().splitlines()
        why = f": {lines[-1]}" if lines else ""
        raise ClipdError(f"`{_command(action.argv)}` failed (exit {result.returncode}){why}")
    return result.returncode == 0


def _describe(action: Action) -> str:
    if isinstance(action, Write):
        return f"would write {action.path}:\n{action.content.rstrip()}\n\n"
    if isinstance(action, MakeDir):
        return f"would create the folder {action.path}\n"
    if isinstance(action, Remove):
        return f"would remove {action.path}\n"
    note = (
        "  # if this succeeds it is loaded: stop here"
        if action.probe
        else "  # may fail: not loaded"
        if action.may_fail
        else ""
    )
    return f"would run: {_command(action.argv)}{note}\n"


def _command(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _unsupported(platform: str) -> ClipdError:
    return ClipdError(
        f"install-service supports Linux (systemd) and macOS (launchd), not {platform}; "
        "start `clipd serve` from your session's autostart instead"
    )
