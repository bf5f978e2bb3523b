"""Watch the roots and turn file-system events into settled, coalesced scan jobs.

The watcher never embeds: it only decides which paths to rescan. Events are coalesced by path;
a path is handed over once it has been quiet for `settle_seconds` and its size and mtime are the
same as at its last event, so a file still being written is embedded once, after it settles.
Moves are handed over at once, so the indexer can re-path rows instead of re-embedding.
Native watching (inotify, FSEvents, ...) is used unless a root asks for polling, sits on a
network file system, or the OS refuses more watches; then that root is polled, with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog import events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from clipd.config import Config
from clipd.scanner import Matcher, is_below

log = logging.getLogger(__name__)

Submit = Callable[[Sequence[Path], Sequence[tuple[Path, Path]]], object]

_EVENTS: list[type[events.FileSystemEvent]] = [
    events.FileCreatedEvent,
    events.FileModifiedEvent,
    events.FileClosedEvent,
    events.FileMovedEvent,
    events.FileDeletedEvent,
    events.DirCreatedEvent,
    events.DirMovedEvent,
    events.DirDeletedEvent,
]
# File systems where inotify/FSEvents miss changes made by other machines.
_NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs",
     "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse"}
)  # fmt: skip

_Identity = tuple[int, int]  # (st_dev, st_ino) of a root: changes when a disk is (un)mounted


@dataclass(frozen=True, slots=True)
class _Move:
    source: Path
    destination: Path
    is_directory: bool


@dataclass
class _Pending:
    last_event: float
    stat: tuple[int, int] | None  # (size, mtime_ns) at the last event; None if absent


class Watcher:
    """Observers for every root, plus a thread that hands settled paths to `submit`."""

    def __init__(self, config: Config, submit: Submit) -> None:
        self._config = config
        self._submit = submit
        self._matcher = Matcher(config.include, config.exclude, config.skip_hidden)
        self._handler = _Handler(self)
        self._native: BaseObserver = Observer()
        self._polling: BaseObserver = PollingObserver(timeout=config.poll_interval)
        self._watches: dict[Path, tuple[BaseObserver, ObservedWatch, _Identity]] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._moves: list[_Move] = []
        self._stopping = threading.Event()
        self._settler = threading.Thread(target=self._settle_loop, name="clipd-settle")

    def start(self) -> None:
        self._native.start()
        self._polling.start()
        for root in self._config.roots:
            self._watch(root)
        self._settler.start()

    def stop(self) -> None:
        self._stopping.set()
        for observer in (self._native, self._polling):
            observer.stop()
        for observer in (self._native, self._polling):
            if observer.is_alive():
                observer.join()
        if self._settler.is_alive():
            self._settler.join()

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config: watch added roots, drop removed ones, new filters.

        Nothing is submitted for a dropped root once this returns, so its files can be
        forgotten right after without a late event bringing some back.
        """
        old = self._config
        with self._lock:
            self._config = config
            self._matcher = Matcher(config.include, config.exclude, config.skip_hidden)
            for root in old.roots:
                if root not in config.roots:
                    prefix = str(root)
                    self._pending = {
                        p: e for p, e in self._pending.items() if not is_below(p, prefix)
                    }
        for root in old.roots:
            polled = (root in old.poll_roots) != (root in config.poll_roots)
            if root not in config.roots or polled:
                self._unwatch(root)
        for root in config.roots:
            if root not in self._watches:
                self._watch(root)

    def check_roots(self) -> None:
        """Notice roots that vanished, came back, or were (un)mounted; rescan those."""
        for root in self._config.roots:
            identity = _identity(root)
            watched = self._watches.get(root)
            if watched is None and identity is None:
                continue  # still missing
            if watched is not None and watched[2] == identity:
                continue
            if watched is not None:
                self._unwatch(root)
            if identity is not None:
                self._watch(root)
            self._submit([root], [])

    # -- scheduling -------------------------------------------------------------------------

    def _watch(self, root: Path) -> None:
        identity = _identity(root)
        if identity is None:
            log.warning("root %s is missing; it will be watched when it appears", root)
            return
        reason = self._poll_reason(root)
        observer = self._polling if reason else self._native
        try:
            watch = self._schedule(observer, root)
        except OSError as exc:
            if observer is self._polling:
                log.warning("cannot poll %s (%s); will try again", root, exc.strerror or exc)
                return
            reason = _native_failure(exc)
            observer = self._polling
            try:
                watch = self._schedule(observer, root)
            except OSError as retry:  # vanished meanwhile: check_roots() tries again
                log.warning("cannot poll %s (%s); will try again", root, retry.strerror or retry)
                return
        if reason:
            log.warning("polling %s every %gs: %s", root, self._config.poll_interval, reason)
        self._watches[root] = (observer, watch, identity)

    def _unwatch(self, root: Path) -> None:
        watched = self._watches.pop(root, None)
        if watched is not None:
            watched[0].unschedule(watched[1])

    def _schedule(self, observer: BaseObserver, root: Path) -> ObservedWatch:
        return observer.schedule(self._handler, str(root), recursive=True, event_filter=_EVENTS)

    def _poll_reason(self, root: Path) -> str | None:
        if root in self._config.poll_roots:
            return "asked for by `poll: true` in the config"
        fstype = _filesystem_type(root)
        if fstype in _NETWORK_FS:
            return f"it is on a {fstype} network file system, where change events are unreliable"
        return None

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: events.FileSystemEvent) -> None:
        """Called on observer threads: record the paths to rescan (cheap; no I/O but a stat)."""
        source = os.fsdecode(event.src_path)
        if isinstance(event, events.FileSystemMovedEvent):
            destination = os.fsdecode(event.dest_path)
            if self._wanted(destination, event.is_directory):
                with self._lock:
                    self._moves.append(_Move(Path(source), Path(destination), event.is_directory))
                self._touch(destination)
            else:
                self._touch(source)  # renamed to something we do not index: it is gone
            return
        if event.is_directory and isinstance(event, events.DirModifiedEvent):
            return  # its files report their own changes
        if self._wanted(source, event.is_directory):
            self._touch(source)

    def _wanted(self, path: str, is_directory: bool) -> bool:
        root = next((r for r in self._config.roots if is_below(path, str(r))), None)
        if root is None:
            return False
        relative = os.path.relpath(path, root)
        return relative == "." or self._matcher.wants_path(relative, is_directory)

    def _touch(self, path: str) -> None:
        entry = _Pending(time.monotonic(), _size_and_mtime(path))
        with self._lock:
            self._pending[path] = entry

    # -- settling -----------------------------------------------------------------------------

    def _settle_loop(self) -> None:
        tick = min(0.2, max(0.02, self._config.settle_seconds / 4))
        while not self._stopping.wait(tick):
            try:
                self._hand_over()
            except Exception:  # never let the watcher die of one odd path
                log.exception("watcher failed to hand over changes")

    def _hand_over(self) -> None:
        now = time.monotonic()
        ready: list[str] = []
        with self._lock:
            moves, self._moves = self._moves, []
            candidates = [
                (path, entry)
                for path, entry in self._pending.items()
                if now - entry.last_event >= self._config.settle_seconds
            ]
        for path, entry in candidates:
            current = _size_and_mtime(path)
            with self._lock:
                if self._pending.get(path) is not entry:
                    continue  # a newer event came in meanwhile
                if current == entry.stat:
                    ready.append(path)
                    del self._pending[path]
                else:  # changed without telling us (or still being written): wait again
                    self._pending[path] = _Pending(now, current)
        if not (ready or moves):
            return
        # Under the lock, so that a root dropped by reconfigure() gets nothing after it returns.
        with self._lock:
            roots = [str(root) for root in self._config.roots]
            paths = [Path(p) for p in _outermost(ready) if _below_any(p, roots)]
            kept = [m for m in _collapse(moves) if _below_any(str(m[1]), roots)]
            if paths or kept:
                self._submit(paths, kept)


class _Handler(events.FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: events.FileSystemEvent) -> None:
        self._watcher.on_event(event)


def _collapse(moves: list[_Move]) -> list[tuple[Path, Path]]:
    """The moves to apply, without those a directory move before them already made: watchers
    report every file of a moved directory as moved too."""
    kept: list[tuple[Path, Path]] = []
    directories: list[_Move] = []
    for move in moves:
        covered = any(
            is_below(str(move.source), str(d.source))
            and is_below(str(move.destination), str(d.destination))
            for d in directories
        )
        if not covered:
            kept.append((move.source, move.destination))
            if move.is_directory:
                directories.append(move)
    return kept


def _below_any(path: str, roots: list[str]) -> bool:
    return any(is_below(path, root) for root in roots)


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths inside another path of the list: rescanning the directory covers them."""
    kept: list[str] = []
    for path in sorted(paths):
        if not kept or not is_below(path, kept[-1]):
            kept.append(path)
    return kept


def _size_and_mtime(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _identity(root: Path) -> _Identity | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(root) else None


def _native_failure(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return (
            "the inotify watch limit is reached; raise it with "
            "`sudo sysctl fs.inotify.max_user_watches=524288` to watch natively"
        )
    if exc.errno == errno.EMFILE:
        return (
            "the inotify instance limit is reached; raise it with "
            "`sudo sysctl fs.inotify.max_user_instances=512`"
        )
    return f"native watching failed ({exc.strerror or exc})"


def _filesystem_type(path: Path) -> str | None:
    """The type of the mount holding `path`, from /proc/mounts (None where there is none)."""
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best, fstype = "", None
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            mount = fields[1].replace("\\040", " ")
            if is_below(target, mount) and len(mount) > len(best):
                best, fstype = mount, fields[2]
    return fstype
