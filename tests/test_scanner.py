"""The scanner: globs, hidden folders, unreadable folders, single files, content hashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipd.config import DEFAULT_INCLUDE
from clipd.scanner import Matcher, content_hash, is_below, outside_roots, scan


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def found(root: Path, matcher: Matcher, follow: bool = False) -> set[str]:
    return {os.path.relpath(p, root) for p in scan(root, matcher, follow=follow).files}


def test_default_globs_hidden_and_case(tmp_path: Path) -> None:
    touch(
        tmp_path, "a.jpg", "B.JPEG", "c.PnG", "d.txt", "sub/deep/e.webp", ".cache/f.jpg", ".g.png"
    )
    matcher = Matcher(DEFAULT_INCLUDE, (), skip_hidden=True)
    assert found(tmp_path, matcher) == {"a.jpg", "B.JPEG", "c.PnG", "sub/deep/e.webp"}
    with_hidden = Matcher(DEFAULT_INCLUDE, (), skip_hidden=False)
    assert found(tmp_path, with_hidden) >= {".cache/f.jpg", ".g.png"}


def test_exclude_by_name_and_by_relative_path(tmp_path: Path) -> None:
    touch(tmp_path, "keep.jpg", "node_modules/x.jpg", "Screenshots/s.png", "a/Screenshots/t.png")
    matcher = Matcher(DEFAULT_INCLUDE, ("node_modules", "Screenshots/*"), skip_hidden=True)
    assert found(tmp_path, matcher) == {"keep.jpg", "a/Screenshots/t.png"}


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.jpg")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real" / "a.jpg")
    (tmp_path / "loop").symlink_to(tmp_path)
    assert found(tmp_path, Matcher(DEFAULT_INCLUDE, (), True)) == {"real/a.jpg"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list any directory")
def test_unreadable_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    touch(tmp_path, "ok.jpg", "locked/x.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        result = scan(tmp_path, Matcher(DEFAULT_INCLUDE, (), True))
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert result.unreadable == [str(tmp_path / "locked")]
    assert list(result.files) == [str(tmp_path / "ok.jpg")]


def test_single_file_and_missing_path(tmp_path: Path) -> None:
    touch(tmp_path, "one.jpg")
    matcher = Matcher(DEFAULT_INCLUDE, (), True)
    assert list(scan(tmp_path / "one.jpg", matcher).files) == [str(tmp_path / "one.jpg")]
    missing = scan(tmp_path / "gone", matcher)
    assert not missing.files
    assert not missing.unreadable  # deleted, not unreadable: what was indexed there goes


def test_a_symlink_to_a_file_named_directly_is_skipped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the watcher submits when a symlink to a file appears in a watched folder."""
    touch(tmp_path, "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "real.jpg")
    matcher = Matcher(DEFAULT_INCLUDE, (), skip_hidden=True)
    skipped = scan(link, matcher)
    assert (skipped.files, skipped.unreadable, skipped.rejected) == ({}, [], {})
    assert "cannot list" not in caplog.text
    assert set(scan(link, matcher, follow=True).files) == {str(link)}


def test_content_hash_sees_head_tail_and_size(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    a, b, c, d = (tmp_path / n for n in "abcd")
    a.write_bytes(big)
    b.write_bytes(big)
    c.write_bytes(big[:-1] + bytes([big[-1] ^ 1]))  # last byte differs
    d.write_bytes(big + b"\0")  # size differs
    hashes = [content_hash(str(p), p.stat().st_size) for p in (a, b, c, d)]
    assert hashes[0] == hashes[1]
    assert len(set(hashes)) == 3


def test_following_symlinks_detects_loops_and_lists_a_file_once(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.jpg", "real/b.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "real")  # the same folder twice
    (tmp_path / "real" / "loop").symlink_to(tmp_path)  # a loop back to the top
    (tmp_path / "z-link.jpg").symlink_to(tmp_path / "real" / "a.jpg")  # the same file twice
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = found(tmp_path, Matcher(DEFAULT_INCLUDE, (), True), follow=True)
    names = sorted(Path(p).name for p in result)
    assert names in (["a.jpg", "b.jpg"], ["b.jpg", "z-link.jpg"])
    assert found(tmp_path, Matcher(DEFAULT_INCLUDE, (), True), follow=True) == result


def test_names_that_are_not_utf8_are_rejected_readably_not_fatal(tmp_path: Path) -> None:
    touch(tmp_path, "ok.jpg")
    with open(os.path.join(os.fsencode(tmp_path), b"bad-\xff.jpg"), "wb") as handle:
        handle.write(b"x")
    result = scan(tmp_path, Matcher(DEFAULT_INCLUDE, (), True))
    assert list(result.files) == [str(tmp_path / "ok.jpg")]
    shown = str(tmp_path / "bad-\ufffd.jpg")
    assert list(result.rejected) == [shown]
    stat, problem = result.rejected[shown]
    assert (stat.path, stat.size) == (shown, 1)
    assert problem.error_class == "UnusablePath"
    assert "not valid UTF-8 (raw bytes b'bad-\\xff.jpg')" in str(problem)
    assert "rename the file" in str(problem)


def test_below_means_inside_the_folder_not_a_name_that_starts_alike() -> None:
    assert is_below("/pics", "/pics")
    assert is_below("/pics/a/b.jpg", "/pics/")
    assert not is_below("/pics2/b.jpg", "/pics")
    assert not is_below("/pic", "/pics")
    roots = [Path("/pics"), Path("/more")]
    paths = [Path("/pics/a.jpg"), Path("/pics2/a.jpg"), Path("/more"), Path("/")]
    assert outside_roots(paths, roots) == [Path("/pics2/a.jpg"), Path("/")]


def test_a_file_whose_path_is_over_path_max_is_rejected_saying_so(tmp_path: Path) -> None:
    """Its folder can be listed, but the file's own path is too long to open."""
    fd = os.open(tmp_path, os.O_RDONLY)
    folder, name = str(tmp_path), "d" * 200
    try:
        while len(folder) < 3900:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, folder = inner, f"{folder}/{name}"
        long_name = "f" * 240 + ".jpg"
        os.close(os.open(long_name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    result = scan(tmp_path, Matcher(DEFAULT_INCLUDE, (), skip_hidden=True))
    assert result.files == {}
    [(path, (_, problem))] = result.rejected.items()
    assert path == f"{folder}/{long_name}"
    assert "longer than this system allows (PATH_MAX)" in str(problem)
