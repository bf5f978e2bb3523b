"""Where the daemon listens by default; shared by clipd and clipq so they always agree."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CONFIG_ENV = "CLIPD_CONFIG"
SOCKET_ENV = "CLIPD_SOCKET"
ADDRESS_ENV = "CLIPD_ADDRESS"
TOKEN_FILE_ENV = "CLIPD_TOKEN_FILE"


def default_config_path() -> Path:
    """$CLIPD_CONFIG, else $XDG_CONFIG_HOME/clipd/config.yaml: the daemon's config, which clipq
    also reads to find the daemon."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clipd" / "config.yaml"


def runtime_dir() -> Path:
    """The per-user directory for the socket: $XDG_RUNTIME_DIR/clipd, else a private temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "clipd"
    # macOS and minimal Linux sessions have no XDG_RUNTIME_DIR; the uid keeps users apart.
    return Path(tempfile.gettempdir()) / f"clipd-{os.getuid()}"


def default_socket_path() -> Path:
    """$CLIPD_SOCKET when set, else clipd.sock in runtime_dir()."""
    override = os.environ.get(SOCKET_ENV)
    if override:
        return Path(override).expanduser()
    return runtime_dir() / "clipd.sock"


def default_token_path() -> Path:
    """$CLIPD_TOKEN_FILE when set, else user_token_path().

    The daemon writes its TCP token there; clients on the same machine read it from there.
    """
    override = os.environ.get(TOKEN_FILE_ENV)
    if override:
        return Path(override).expanduser()
    return user_token_path()


def user_token_path() -> Path:
    """$XDG_CONFIG_HOME/clipd/token (~/.config/clipd/token): the secret TCP clients must send."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home).expanduser() / "clipd" / "token"
