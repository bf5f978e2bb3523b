"""How clipq reads the words of a search: which name image files, and what times mean.

These are all decided before any call, so no daemon is needed: a word that looks like a path
(a '/' or an image extension) must name a readable image, or the command stops with exit 2.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from harness import usage_error

from clipd_api.query import IMAGE_EXTENSIONS, looks_like_path
from clipq._client import ImageFile, Text
from clipq._query import QueryError, parse_when, query_terms

PNG_HEAD = b"\x89PNG\r\n\x1a\n" + bytes(24)


@pytest.fixture
def in_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder: an image `shot.png`, an image named `square`, a text `notes.jpg`."""
    (tmp_path / "shot.png").write_bytes(PNG_HEAD)
    (tmp_path / "square").write_bytes(PNG_HEAD)
    (tmp_path / "notes.jpg").write_text("shopping list")
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("beach", False),
        ("square", False),
        ("e.g.", False),
        ("v1.0", False),
        ("photo.jpg", True),
        ("PHOTO.JPEG", True),
        ("raw.CR2", True),
        ("outside/nope", True),
        ("./square", True),
        ("AC/DC", True),
    ],
)
def test_a_word_looks_like_a_path_by_a_slash_or_an_image_extension(
    word: str, expected: bool
) -> None:
    assert looks_like_path(word) is expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["outside/nope.jpg"], "clipq: error: outside/nope.jpg: no such file"),
        (["nope.jpg", "at", "night"], "clipq: error: nope.jpg: no such file"),
        (["-0.5:gone.png"], "clipq: error: gone.png: no such file"),
        (["notes.jpg"], "clipq: error: notes.jpg: not an image file (JPEG, PNG, WebP,"),
        (["pics/"], "clipq: error: pics/: is a folder, not an image file (--under DIR"),
        (["cat", "--image", "nope.jpg"], "clipq: error: --image nope.jpg: no such file"),
        (["--image", "notes.jpg"], "clipq: error: --image notes.jpg: not an image file"),
        (
            ["AC/DC", "poster"],
            "clipq: error: AC/DC: no such file; to search it as text, use --text",
        ),
    ],
)
def test_a_path_that_names_no_image_is_a_usage_error_that_says_why(
    capsys: pytest.CaptureFixture[str], in_folder: Path, argv: list[str], message: str
) -> None:
    assert usage_error(capsys, *argv).startswith(message)


def test_a_bare_word_stays_text_beside_a_file_of_that_name(in_folder: Path) -> None:
    assert query_terms(["square"]) == [Text("square")]
    assert query_terms(["red", "+square"]) == [Text("red"), Text("square")]
    assert query_terms(["./square"]) == [ImageFile("./square")]
    assert query_terms(["shot.png", "-2:square"]) == [ImageFile("shot.png"), Text("square", -2)]


def test_text_option_is_never_read_as_a_file(in_folder: Path) -> None:
    assert query_terms(["poster"], texts=["AC/DC"]) == [Text("poster AC/DC")]
    assert query_terms([], texts=["shot.png"]) == [Text("shot.png")]
    with pytest.raises(QueryError, match="the query is empty"):
        query_terms([], texts=[" "])


def test_image_option_takes_any_name_of_an_image(in_folder: Path) -> None:
    assert query_terms([], ["square"]) == [ImageFile("square")]


def test_a_tilde_the_shell_left_alone_is_the_home_folder(
    in_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(in_folder))
    assert query_terms(["~/shot.png"]) == [ImageFile("~/shot.png")]


# --since / --until

NOW = datetime(2024, 6, 15, 12, 30).timestamp()
# 2024-05-31 18:00 in UTC; Berlin is two hours ahead in summer, Kolkata five and a half.
EVENING_UTC = datetime(2024, 5, 31, 18, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-31 18:00 UTC", EVENING_UTC),
        ("2024-05-31 18:00 utc", EVENING_UTC),
        ("2024-05-31T18:00 Z", EVENING_UTC),
        ("2024-05-31 20:00 Europe/Berlin", EVENING_UTC),
        ("2024-05-31  20:00   Europe/Berlin", EVENING_UTC),
        ("2024-05-31 23:30 Asia/Kolkata", EVENING_UTC),
        ("2024-05-31 20:00 +02:00", EVENING_UTC),
        ("2024-05-31 13:00 -0500", EVENING_UTC),
        ("2024-06 UTC", datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp()),
        ("15min", NOW - 15 * 60),
        ("15m", NOW - 15 * 60),
        ("3 days", NOW - 3 * 86400),
        ("2 weeks ago", NOW - 14 * 86400),
        ("6mo", NOW - 180 * 86400),
        ("6 months", NOW - 180 * 86400),
        ("1Y", NOW - 365 * 86400),
    ],
)
def test_times_with_zones_and_ages_in_words(text: str, expected: float) -> None:
    assert parse_when(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1M", "'1M' is ambiguous: write min for minutes or mo for months"),
        ("90M", "'90M' is ambiguous"),
        ("2024-05-31 18:00 Mars/Olympus", "unknown time zone 'Mars/Olympus': use UTC, a name"),
        ("2024-05-31T18:00Z UTC", "names two time zones"),
        ("3 fortnights", "is not a time: use a date or time"),
    ],
)
def test_ambiguous_units_and_unknown_zones_are_refused(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_when(text, now=NOW)


def test_an_ambiguous_age_is_a_usage_error_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert usage_error(capsys, "cat", "--since", "1M") == (
        "clipq: error: argument --since: '1M' is ambiguous: write min for minutes or mo for months"
    )


def test_every_extension_the_daemon_indexes_names_a_file() -> None:
    from clipd.config import DEFAULT_INCLUDE

    daemon = {glob.removeprefix("*.") for glob in DEFAULT_INCLUDE}
    assert daemon <= IMAGE_EXTENSIONS
