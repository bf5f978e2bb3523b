"""Walk the roots and say which files are image candidates; stat only, no reading.

Include/exclude globs are case-insensitive. A glob without '/' matches a file or directory
name anywhere ('*.jpg', 'node_modules'); a glob with '/' matches the path relative to its root
('Screenshots/*'). An excluded directory is not entered. Symlinks are followed only when asked;
then a directory reached twice (a loop) is entered once, and a file reached by two paths is
listed once, under the path the (deterministic) walk meets first.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clipd.errors import UnusablePath

log = logging.getLogger(__name__)

# Enough of a file to tell copies apart cheaply, without reading whole photos.
_HASH_HEAD = 1 << 20
_HASH_TAIL = 64 << 10


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the scanner knows of a file: enough to tell whether it changed."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> FileStat:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass
class ScanResult:
    files: dict[str, FileStat] = field(default_factory=dict)
    # Candidates whose path cannot be indexed, by a readable form of the path: they go to the
    # failures, so that a user learns of them.
    rejected: dict[str, tuple[FileStat, UnusablePath]] = field(default_factory=dict)
    # Directories that could not be listed: what is indexed below them must not be dropped.
    unreadable: list[str] = field(default_factory=list)
    # (device, inode) of directories entered and files listed, when following symlinks.
    seen: set[tuple[int, int]] = field(default_factory=set)


class Matcher:
    """Decides which names are candidates, from include/exclude globs."""

    def __init__(self, include: Iterable[str], exclude: Iterable[str], skip_hidden: bool) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude)
        self._skip_hidden = skip_hidden

    def wants_dir(self, name: str, relative: str) -> bool:
        if self._skip_hidden and name.startswith("."):
            return False
        return not _matches(self._exclude, name, relative)

    def wants_file(self, name: str, relative: str) -> bool:
        if self._skip_hidden and name.startswith("."):
            return False
        if _matches(self._exclude, name, relative):
            return False
        return _matches(self._include, name, relative)

    def wants_path(self, relative: str, is_directory: bool) -> bool:
        """Whether a path relative to its root is a candidate, every folder on the way too."""
        *parents, name = relative.split(os.sep)
        for depth, part in enumerate(parents):
            if not self.wants_dir(part, os.sep.join(parents[: depth + 1])):
                return False
        if is_directory:
            return self.wants_dir(name, relative)
        return self.wants_file(name, relative)


def _compile(globs: Iterable[str]) -> list[tuple[bool, re.Pattern[str]]]:
    """(matches the relative path?, regex) for each glob."""
    return [(("/" in g), re.compile(fnmatch.translate(g), re.IGNORECASE)) for g in globs]


def _matches(patterns: list[tuple[bool, re.Pattern[str]]], name: str, relative: str) -> bool:
    return any(rx.match(relative if by_path else name) for by_path, rx in patterns)


def scan(
    root: Path, matcher: Matcher, result: ScanResult | None = None, *, follow: bool = False
) -> ScanResult:
    """Every candidate file at or below `root` (a directory or a single file)."""
    result = result if result is not None else ScanResult()
    try:
        st = os.stat(root, follow_symlinks=follow)
    except FileNotFoundError:
        return result  # deleted: whatever was indexed there is gone
    except OSError as exc:
        log.warning("cannot scan %s: %s", root, exc.strerror)
        result.unreadable.append(str(root))
        return result
    if stat.S_ISDIR(st.st_mode):
        result.seen.add((st.st_dev, st.st_ino))
        _Walk(str(root), matcher, result, follow).run()
    elif stat.S_ISLNK(st.st_mode):  # only without follow: lstat()
        log.debug("skipping %s: a symlink, and follow_symlinks is off", _readable(str(root)))
    else:
        # A FIFO, socket or device is listed as a walk lists it: reading it fails, and so it
        # is recorded as a failure instead of vanishing.
        _add(result, str(root), st)
    return result


class _Walk:
    """An iterative walk below one directory, filling a ScanResult."""

    def __init__(self, base: str, matcher: Matcher, result: ScanResult, follow: bool) -> None:
        self.base = base
        self.matcher = matcher
        self.result = result
        self.follow = follow
        self.stack = [base]

    def run(self) -> None:
        while self.stack:
            directory = self.stack.pop()
            try:
                # Sorted, so that which of two paths to one file is listed does not vary.
                entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
            except OSError as exc:
                log.warning("cannot list %s: %s", _readable(directory), exc.strerror)
                self.result.unreadable.append(directory)
                if exc.errno == errno.ENAMETOOLONG:
                    unknown = FileStat(directory, 0, 0, 0, 0)
                    _reject(self.result, directory, unknown, _TOO_LONG)
                continue
            for entry in entries:
                try:
                    self._visit(entry)
                except OSError as exc:  # vanished since listed, a dangling link, permissions
                    if exc.errno == errno.ENAMETOOLONG:
                        unknown = FileStat(entry.path, 0, 0, 0, 0)
                        _reject(self.result, entry.path, unknown, _TOO_LONG)
                    log.debug("skipping %s: %s", _readable(entry.path), exc.strerror)

    def _visit(self, entry: os.DirEntry[str]) -> None:
        relative = os.path.relpath(entry.path, self.base)
        follow = self.follow
        if entry.is_dir(follow_symlinks=follow):
            if self.matcher.wants_dir(entry.name, relative) and self._first_visit(entry):
                self.stack.append(entry.path)
        elif (
            (follow or not entry.is_symlink())
            and self.matcher.wants_file(entry.name, relative)
            and self._first_visit(entry)
        ):
            # FIFOs, sockets and devices with image names are listed too: reading them fails
            # (without blocking), so they are recorded as failures instead of vanishing.
            _add(self.result, entry.path, entry.stat(follow_symlinks=follow))

    def _first_visit(self, entry: os.DirEntry[str]) -> bool:
        """Without symlinks every path is reached once; with them, remember what was reached."""
        if not self.follow:
            return True
        st = entry.stat(follow_symlinks=True)
        key = (st.st_dev, st.st_ino)
        if key in self.result.seen:
            return False
        self.result.seen.add(key)
        return True


_TOO_LONG = (
    "the path is longer than this system allows (PATH_MAX); move or rename its folders to "
    "shorten it"
)


def _add(result: ScanResult, path: str, st: os.stat_result) -> None:
    """List a candidate file, or reject it if its path cannot be stored as text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # Paths are TEXT in the index and proto3 strings must be UTF-8: such a path could be
        # neither stored nor returned in a hit.
        message = (
            f"the name is not valid UTF-8 (raw bytes {os.fsencode(os.path.basename(path))!r}); "
            "clipd keeps paths as text: rename the file (e.g. with convmv) to index it"
        )
        _reject(result, path, FileStat.of(path, st), message)
        return
    result.files[path] = FileStat.of(path, st)


def _reject(result: ScanResult, path: str, st: FileStat, message: str) -> None:
    shown = _readable(path)
    stat_shown = FileStat(shown, st.size, st.mtime_ns, st.inode, st.device)
    result.rejected[shown] = (stat_shown, UnusablePath(message))


def _readable(path: str) -> str:
    """The path with bytes that are not UTF-8 shown as U+FFFD, for messages and failures."""
    return os.fsencode(path).decode("utf-8", "replace")


def is_below(path: str, prefix: str) -> bool:
    """True if `path` is `prefix` or lies inside it."""
    return path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep)


def outside_roots(paths: Iterable[Path], roots: Iterable[Path]) -> list[Path]:
    """The paths below no root. Only files below a root are indexed: clipd watches and rescans
    the roots, so a file indexed outside them would stay in results after it is gone."""
    prefixes = [str(root) for root in roots]
    return [path for path in paths if not any(is_below(str(path), p) for p in prefixes)]


def hashes_whole_file(size: int) -> bool:
    """Whether content_hash reads every byte of a file of this size."""
    return size <= _HASH_HEAD + _HASH_TAIL


def content_hash(path: str, size: int) -> bytes:
    """A cheap identity of the content: size, the first 1 MiB and the last 64 KiB."""
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # never block on a FIFO
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        digest.update(handle.read(_HASH_HEAD))
        if size > _HASH_HEAD:
            handle.seek(max(_HASH_HEAD, size - _HASH_TAIL))
            digest.update(handle.read(_HASH_TAIL))
    return digest.digest()
