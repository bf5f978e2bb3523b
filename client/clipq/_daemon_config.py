"""Where the daemon listens, as its own config file says: clipq reads `socket` and `token_file`.

The daemon's config is YAML, but clipq must start fast and stay light (no yaml import), and it
needs only two top-level strings. So it reads just those lines: `key: value` at the start of a
line, the value plain, 'single-' or "double-quoted", and a `# comment` after it. A value in any
other YAML form (a flow collection, an anchor, a block scalar) is not understood and is skipped,
as if the key were absent. Paths are resolved as the daemon resolves them: `~` and `$VARS`
expanded, relative ones relative to the file's folder.

Precedence, the same as the daemon's: $CLIPD_SOCKET / $CLIPD_TOKEN_FILE, then the config file
($CLIPD_CONFIG, else ~/.config/clipd/config.yaml), then the built-in default. A command-line
flag comes before all of them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from clipd_api.paths import (
    SOCKET_ENV,
    TOKEN_FILE_ENV,
    default_config_path,
    default_socket_path,
    default_token_path,
)

# A top-level key (no indentation) and the rest of its line.
_KEY_LINE = re.compile(r"^(socket|token_file)[ \t]*:(?:[ \t]+(.*))?$", re.MULTILINE)
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'[ \t]*(?:#.*)?")
_DOUBLE_QUOTED = re.compile(r'("(?:[^"\\]|\\.)*")[ \t]*(?:#.*)?')
# A plain scalar cannot start with these; such a value is some other YAML form.
_NOT_PLAIN = tuple("[]{}&*!|>%@`,\"'")
_NULLS = ("", "~", "null", "Null", "NULL")


def socket_path() -> Path:
    """The daemon's socket: $CLIPD_SOCKET, else the config's `socket`, else the default."""
    configured = None if os.environ.get(SOCKET_ENV) else _configured("socket")
    return configured or default_socket_path()


def token_path() -> Path:
    """The TCP token file: $CLIPD_TOKEN_FILE, else the config's `token_file`, else the default."""
    configured = None if os.environ.get(TOKEN_FILE_ENV) else _configured("token_file")
    return configured or default_token_path()


def _configured(key: str) -> Path | None:
    """The path the config file gives `key`, or None (no file, no key, or not understood)."""
    config = default_config_path()
    try:
        stat = config.stat()
    except OSError:
        return None
    value = _values(config, stat.st_mtime_ns, stat.st_size).get(key)
    if value is None:
        return None
    path = Path(os.path.expandvars(value)).expanduser()
    return path if path.is_absolute() else (config.parent / path).resolve()


# Help texts and the connection each ask for these paths: read the file once per version of it.
@functools.lru_cache(maxsize=4)
def _values(config: Path, mtime_ns: int, size: int) -> dict[str, str | None]:
    """The keys clipq reads, as the file at `config` (in this version) gives them."""
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        # The daemon reports a config it cannot read; clipq falls back to the defaults.
        return {}
    # YAML keeps the last of duplicate keys.
    return {name: scalar(rest) for name, rest in _KEY_LINE.findall(text)}


def scalar(text: str) -> str | None:
    """The string a YAML scalar on one line means, or None for a null or any other form."""
    text = text.strip()
    quoted = _SINGLE_QUOTED.fullmatch(text)
    if quoted:
        return quoted[1].replace("''", "'")
    quoted = _DOUBLE_QUOTED.fullmatch(text)
    if quoted:
        try:
            # YAML's double-quoted escapes are, for paths, JSON's.
            value = json.loads(quoted[1])
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    if text.startswith(_NOT_PLAIN):
        return None
    # In a plain scalar a comment starts at ' #'.
    value = re.split(r"[ \t]#", text, maxsplit=1)[0].rstrip()
    return None if value in _NULLS or value.startswith("#") else value
