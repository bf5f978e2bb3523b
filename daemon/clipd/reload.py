"""What a config reload (SIGHUP) changes, decided apart from applying it.

Roots, filters and tuning apply at once. Keys that shape what the process was built around
(the database, the socket, the model, thread counts, watching and polling, logging, the
listeners and the token they check) need a restart: they keep their old value, with a warning
naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from clipd.config import Config

# Keys a running daemon cannot change; reloading keeps their old value.
RESTART_KEYS = (
    "database",
    "socket",
    "model",
    "loader_threads",
    "watch",
    "poll_interval",
    "log_level",
    "web",
    # The TCP listener is bound, and the token it and the web server check read, at start-up.
    "tcp",
    "token_file",
)
# Keys that change which files are indexed: every root is rescanned to apply them.
_FILTER_KEYS = ("include", "exclude", "skip_hidden", "follow_symlinks", "raw_pairs")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config  # the config to run with from now on
    added: tuple[Path, ...]  # roots to watch and scan
    removed: tuple[Path, ...]  # roots to stop watching and forget
    refilter: bool  # include/exclude/... changed: rescan every root
    needs_restart: tuple[str, ...]  # changed keys that were not applied

    @property
    def rescan(self) -> tuple[Path, ...]:
        """The roots to scan now."""
        return self.config.roots if self.refilter else self.added


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    needs_restart = tuple(k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k))
    config = replace(new, **{k: getattr(old, k) for k in RESTART_KEYS})
    return ReloadPlan(
        config=config,
        added=tuple(root for root in new.roots if root not in old.roots),
        removed=tuple(root for root in old.roots if root not in new.roots),
        refilter=any(getattr(old, k) != getattr(new, k) for k in _FILTER_KEYS),
        needs_restart=needs_restart,
    )
