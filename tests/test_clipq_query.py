"""How clipq reads query words and times, and lays out hit lines: pure functions, no daemon."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fixtures.shapes import draw

from clipq._client import ImageFile, Text
from clipq._format import fit_paths, hit_line, shorten_path
from clipq._query import QueryError, image_problem, parse_when, query_terms

IMAGES = {"photo.jpg", "/abs/shot.png"}


def check(word: str) -> str | None:
    return None if word in IMAGES else "no such file"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["red", "brick", "wall"], [Text("red brick wall")]),
        (
            ["beach", "-people", "2:sunset", "+dog"],
            [Text("beach"), Text("people", -1), Text("sunset", 2), Text("dog")],
        ),
        (["-0.5:night", "city"], [Text("city"), Text("night", -0.5)]),
        ([".5:fog", "+1.5:rain"], [Text("fog", 0.5), Text("rain", 1.5)]),
        (["photo.jpg"], [ImageFile("photo.jpg")]),
        (["photo.jpg", "at", "night"], [Text("at night"), ImageFile("photo.jpg")]),
        (
            ["-photo.jpg", "3:/abs/shot.png"],
            [ImageFile("photo.jpg", -1), ImageFile("/abs/shot.png", 3)],
        ),
        (["-parked cars"], [Text("parked cars", -1)]),
        (["note:thing", "-", "+"], [Text("note:thing - +")]),
        # Another machine's file, as clipq prints its hits: never looked for here.
        (["laptop:/pics/a.jpg"], [ImageFile("/pics/a.jpg", host="laptop")]),
        (
            ["2:laptop:/pics/a.jpg", "-nas:/b/c.png"],
            [ImageFile("/pics/a.jpg", 2, host="laptop"), ImageFile("/b/c.png", -1, host="nas")],
        ),
        # A host has no '/': these are this machine's paths (and not readable ones here).
        (["3:/abs/shot.png"], [ImageFile("/abs/shot.png", 3)]),
    ],
)
def test_query_words_become_terms(words: list[str], expected: list[Text | ImageFile]) -> None:
    assert query_terms(words, check=check) == expected


def test_image_option_adds_an_image_term() -> None:
    terms = query_terms(["sunset"], ["/abs/shot.png"], check=check)
    assert terms == [Text("sunset"), ImageFile("/abs/shot.png")]
    assert query_terms([], ["photo.jpg"], check=check) == [ImageFile("photo.jpg")]
    assert query_terms([], ["nas:/b/c.png"], check=check) == [ImageFile("/b/c.png", host="nas")]


@pytest.mark.parametrize(
    ("words", "images", "message"),
    [
        ([], [], "the query is empty"),
        (["  "], [], "the query is empty"),
        (["0:cat"], [], "a weight of 0"),
        (["2:"], [], "nothing follows the weight"),
        (["cat"], ["notes.txt"], "--image notes.txt: no such file"),
        (["./a:/b.jpg"], [], "./a:/b.jpg: no such file"),
        (["/a:/b.jpg"], [], "/a:/b.jpg: no such file"),
    ],
)
def test_bad_queries_say_why(words: list[str], images: list[str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        query_terms(words, images, check=check)


def test_image_files_are_told_apart_by_their_content(tmp_path: Path) -> None:
    import random

    for fmt, name in [("JPEG", "a.jpg"), ("PNG", "b"), ("WEBP", "c.bin"), ("GIF", "d.gif")]:
        draw("red", "circle", (40, 30), random.Random(1)).save(tmp_path / name, format=fmt)
        assert image_problem(str(tmp_path / name)) is None, name
    (tmp_path / "cat").write_text("not a picture of a cat")
    assert image_problem(str(tmp_path / "cat")) == (
        "not an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF, JPEG XL or camera RAW)"
    )
    assert image_problem(str(tmp_path)).startswith("is a folder")  # type: ignore[union-attr]
    assert image_problem(str(tmp_path / "missing.jpg")) == "no such file"


NOW = datetime(2024, 6, 15, 12, 30).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", NOW - 90 * 60),
        ("36h", NOW - 36 * 3600),
        ("3d", NOW - 3 * 86400),
        ("2W", NOW - 14 * 86400),
        ("6mo", NOW - 180 * 86400),
        ("1y", NOW - 365 * 86400),
        ("today", datetime(2024, 6, 15).timestamp()),
        ("yesterday", datetime(2024, 6, 14).timestamp()),
        ("2023", datetime(2023, 1, 1).timestamp()),
        ("2023-05", datetime(2023, 5, 1).timestamp()),
        ("2023-05-31", datetime(2023, 5, 31).timestamp()),
        ("2023-05-31 18:00", datetime(2023, 5, 31, 18).timestamp()),
        ("2023-05-31t18:00:30", datetime(2023, 5, 31, 18, 0, 30).timestamp()),
        ("2023-05-31T18:00Z", 1685556000.0),
    ],
)
def test_times_for_since_and_until(text: str, expected: float) -> None:
    assert parse_when(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "last week", "3 parsecs", "2023-13-01", "-3d"])
def test_bad_times_say_what_is_accepted(text: str) -> None:
    with pytest.raises(QueryError, match="is not a time: use a date or time"):
        parse_when(text, now=NOW)


def test_a_long_path_alone_keeps_its_start_and_its_file_name() -> None:
    path = "/home/someone/Pictures/2023/holidays/italy/IMG_2041.jpg"
    assert fit_paths([path], len(path)) == [path]
    [fitted] = fit_paths([path], 33)
    assert fitted == "/home/someone/Pictu…/IMG_2041.jpg"
    assert shorten_path(path, len(path)) == path
    assert shorten_path("/a/very-long-file-name.jpg", 10) == "…-name.jpg"
    assert shorten_path("no-folder-at-all.jpg", 8) == "…all.jpg"


HOLIDAYS = "/home/someone/Pictures/2023/holidays/"


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (
            40,
            [
                "/home/someone/Pictur…/italy/IMG_2041.jpg",
                "/home/someone/Pictu…/norway/IMG_2041.jpg",
                # Too long even without the shared folders: the middle of the rest goes too.
                "…/norw…/a-very-long-file-name-indeed.jpg",
            ],
        ),
        (20, ["…/italy/IMG_2041.jpg", "…/norw…/IMG_2041.jpg", "…ile-name-indeed.jpg"]),
        (2, ["…g", "…g", "…g"]),
        (0, ["", "", ""]),
    ],
)
def test_paths_listed_together_lose_the_folders_they_share_first(
    width: int, expected: list[str]
) -> None:
    paths = [
        HOLIDAYS + "italy/IMG_2041.jpg",
        HOLIDAYS + "norway/IMG_2041.jpg",
        HOLIDAYS + "norway/a-very-long-file-name-indeed.jpg",
    ]
    assert fit_paths(paths, width) == expected


def test_hit_lines_in_colour_keep_the_text() -> None:
    line = hit_line(0.35, "/pics/beach.jpg", colour=True)
    assert "\x1b[" in line
    plain = line
    for code in ("\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[32m"):
        plain = plain.replace(code, "")
    assert plain == "0.350  /pics/beach.jpg"
    assert "\x1b[33m" in hit_line(0.25, "/x.jpg", colour=True)
    assert "\x1b[3" not in hit_line(0.1, "/x.jpg", colour=True)


def test_photo_formats_are_image_files_to_clipq_as_to_the_daemon(tmp_path: Path) -> None:
    import io
    import random

    from fixtures.dng import make_dng

    from clipd import formats, raw

    picture = draw("red", "circle", (40, 30), random.Random(2))
    samples = {"phone.heic": b"", "web.avif": b"", "new.jxl": b"", "camera.dng": make_dng(picture)}
    for name, fmt in [("phone.heic", "HEIF"), ("web.avif", "AVIF"), ("new.jxl", "JXL")]:
        buffer = io.BytesIO()
        picture.save(buffer, fmt)
        samples[name] = buffer.getvalue()
    # RAW formats clipq can tell by their first bytes (libraw itself is only in the daemon).
    samples["x.raf"] = b"FUJIFILMCCD-RAW 0201"
    samples["x.cr3"] = b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom"
    samples["x.orf"] = b"IIRO\x08\x00\x00\x00"
    samples["x.rw2"] = b"IIU\x00\x08\x00\x00\x00"
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        assert image_problem(str(tmp_path / name)) is None, name
        assert raw.recognise(data) or formats.identify(data), name
