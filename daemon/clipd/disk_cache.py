"""Small JSON files under $XDG_CACHE_HOME/clipd/ that spare later starts work already done.

Each file maps string keys to JSON values. A missing, unreadable or damaged file reads as
empty, and a file that cannot be written is logged: a cache only ever saves time.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipd"


class JsonCache:
    """One cache file, e.g. JsonCache("precision.json")."""

    def __init__(self, filename: str) -> None:
        self.filename = filename

    @property
    def path(self) -> Path:
        # Read each time: tests and users may point XDG_CACHE_HOME elsewhere after import.
        return cache_dir() / self.filename

    def lookup(self, key: str) -> object:
        """The value stored under key, or None."""
        return self._read().get(key)

    def store(self, key: str, value: object) -> None:
        """Remember value under key (other keys kept); written whole, then renamed into place."""
        path = self.path
        entries = self._read()
        entries[key] = value
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp"
            ) as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(handle.name, path)
        except OSError as exc:
            log.info("cannot write the cache file %s: %s", path, exc)

    def _read(self) -> dict[str, object]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}
