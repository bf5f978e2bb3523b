"""HEIC/HEIF, AVIF, JPEG XL and camera RAW (DNG): decoding, orientation, failures, fuzzing.

Every file is made here (Pillow and its plugins write HEIC, AVIF and JPEG XL; tests/fixtures/dng
writes DNG), except oriented.jxl: a JPEG XL whose codestream says "rotate 90 degrees clockwise",
made by libjxl's cjxl, which no Python package here can write.
"""

from __future__ import annotations

import functools
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.dng import make_dng
from fixtures.marked import BLUE, RED, encode, marked, with_orientation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipd import formats, raw
from clipd.errors import CorruptImage, ImageError, ImageTooLarge, MissingDecoder, NotAnImage
from clipd.images import DecodedImage, decode_bytes, decode_file

GREEN = (0, 200, 0)
FIXTURES = Path(__file__).parent / "fixtures"
PLUGIN_FORMATS = ["HEIF", "AVIF", "JXL"]


def colour_at(decoded: DecodedImage, xy: tuple[int, int]) -> tuple[int, int, int]:
    assert decoded.image.mode == "RGB"
    value = decoded.image.getpixel(xy)
    assert isinstance(value, tuple)
    return value[0], value[1], value[2]


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_upright_marked(decoded: DecodedImage, red_at: tuple[int, int]) -> None:
    """A 20x40 upright image of marked(): red where the stored top-left corner is shown."""
    assert (decoded.width, decoded.height) == (20, 40)
    for corner in [(4, 4), (15, 4), (4, 35), (15, 35)]:
        expected = RED if corner == red_at else BLUE
        assert near(colour_at(decoded, corner), expected), (corner, colour_at(decoded, corner))


# --- the plugin formats --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", PLUGIN_FORMATS)
def test_each_plugin_format_round_trips(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "photo.any"
    path.write_bytes(encode(marked(), fmt, quality=95))
    decoded = decode_file(path)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (40, 20)
    assert near(colour_at(decoded, (4, 4)), RED)
    assert near(colour_at(decoded, (30, 15)), BLUE)


@pytest.mark.parametrize(("orientation", "red_at"), [(6, (15, 4)), (8, (4, 35))])
@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_are_shown_upright(
    fmt: str, orientation: int, red_at: tuple[int, int]
) -> None:
    # pillow-heif turns EXIF orientation into HEIF's irot/imir boxes; Pillow's AVIF keeps EXIF.
    data = encode(marked(), fmt, exif=with_orientation(orientation).tobytes(), quality=95)
    assert_upright_marked(decode_bytes(data), red_at)


def test_jpeg_xl_codestream_orientation_is_applied() -> None:
    assert_upright_marked(decode_file(FIXTURES / "oriented.jxl"), red_at=(15, 4))


def test_jpeg_xl_recompressed_jpeg_follows_its_exif(tmp_path: Path) -> None:
    jpeg = tmp_path / "rotated.jpg"
    marked().save(jpeg, "JPEG", quality=98, exif=with_orientation(6))
    with Image.open(jpeg) as im:
        data = encode(im, "JXL", lossless_jpeg=True)
    decoded = decode_bytes(data)
    assert decoded.format == "JXL"
    assert_upright_marked(decoded, red_at=(15, 4))


def test_jpeg_xl_exif_orientation_is_ignored_as_its_spec_says() -> None:
    # Pillow's JPEG XL writer stores EXIF orientation 6 but an upright codestream; viewers show
    # the codestream's orientation, and so does clipd.
    exif = with_orientation(6).tobytes()
    decoded = decode_bytes(encode(marked(), "JXL", exif=exif, lossless=True))
    assert (decoded.width, decoded.height) == (40, 20)
    assert near(colour_at(decoded, (4, 4)), RED)


def test_jpeg_xl_header_over_the_cap_is_refused_before_decoding() -> None:
    # A bare codestream: SizeHeader with a 30-bit height of 100000 and a 1:1 ratio.
    bits = 0 | (3 << 1) | ((100_000 - 1) << 3) | (1 << 33)
    data = b"\xff\x0a" + bits.to_bytes(5, "little") + bytes(32)
    assert formats.jxl_size(data) == (100_000, 100_000)
    with pytest.raises(ImageTooLarge, match="100000x100000"):
        decode_bytes(data)


def test_jpeg_xl_size_is_read_from_a_container() -> None:
    data = encode(Image.new("RGB", (123, 45)), "JXL", use_container=True)
    assert data.startswith(b"\x00\x00\x00\x0cJXL ")
    assert formats.jxl_size(data) == (123, 45)
    with pytest.raises(ImageTooLarge):
        decode_bytes(data, max_pixels=123 * 45 - 1)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_cap_applies_to_heif_and_avif(fmt: str) -> None:
    with pytest.raises(ImageTooLarge, match="40x20"):
        decode_bytes(encode(marked(), fmt), max_pixels=799)


@pytest.mark.parametrize("fmt", PLUGIN_FORMATS)
@pytest.mark.parametrize("keep", [0.3, 0.8, 30])
def test_truncated_plugin_format_is_an_image_error(fmt: str, keep: float) -> None:
    data = encode(noise((64, 48)), fmt, quality=90)
    cut = int(len(data) * keep) if keep < 1 else int(keep)
    with pytest.raises(ImageError):
        decode_bytes(data[:cut])


@pytest.mark.parametrize(
    ("decoder", "data", "package"),
    [
        (formats.HEIF, encode(marked(), "HEIF"), "pillow-heif"),
        (formats.JXL, encode(marked(), "JXL"), "pillow-jxl-plugin"),
        (formats.AVIF, encode(marked(), "AVIF"), "Pillow"),
        (formats.RAW, make_dng(marked()), "rawpy"),
    ],
    ids=["HEIF", "JXL", "AVIF", "RAW"],
)
def test_missing_decoder_names_the_package(
    monkeypatch: pytest.MonkeyPatch, decoder: formats.Decoder, data: bytes, package: str
) -> None:
    monkeypatch.setitem(formats.AVAILABLE, decoder, False)
    with pytest.raises(MissingDecoder, match=package) as caught:
        decode_bytes(data)
    assert caught.value.error_class == "MissingDecoder"
    assert decoder.label in str(caught.value)


def test_avif_brand_wins_over_generic_heif_brand() -> None:
    data = encode(marked(), "AVIF")
    # Major brand mif1 (shared by HEIF and AVIF), avif only among the compatible brands.
    relabelled = data[:8] + b"mif1" + data[12:16] + b"avif" + data[20:]
    assert formats.ftyp_brands(relabelled)[0] == b"mif1"
    assert formats.identify(relabelled) == "AVIF"


def test_other_iso_media_is_not_an_image() -> None:
    with pytest.raises(NotAnImage, match="MP4"):
        decode_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(100))


# --- camera RAW ------------------------------------------------------------------------------


def red_circle_photo(size: tuple[int, int] = (160, 120)) -> Image.Image:
    from PIL import ImageDraw

    im = Image.new("RGB", size, (30, 40, 190))
    ImageDraw.Draw(im).ellipse((50, 30, 110, 90), fill=(230, 20, 20))
    return im


def test_dng_without_preview_is_demosaicked_at_half_size() -> None:
    decoded = decode_bytes(make_dng(red_circle_photo()))
    assert decoded.format == "DNG"
    assert (decoded.width, decoded.height) == (160, 120)
    assert decoded.image.size == (80, 60)
    assert near(colour_at(decoded, (40, 30)), RED, 60)
    assert near(colour_at(decoded, (5, 5)), (30, 40, 190), 60)


def test_dng_preview_is_used_when_big_enough_for_min_side() -> None:
    # A green preview of a red picture tells which one was decoded.
    data = make_dng(red_circle_photo(), preview=Image.new("RGB", (80, 60), GREEN))
    assert near(colour_at(decode_bytes(data, min_side=60), (40, 30)), GREEN)
    assert near(colour_at(decode_bytes(data, min_side=61), (40, 30)), RED, 60)
    full = decode_bytes(data, min_side=61)
    assert (full.width, full.height) == (160, 120)


@pytest.mark.parametrize("preview", [False, True])
@pytest.mark.parametrize(("orientation", "red_at"), [(6, (15, 4)), (8, (4, 35)), (3, (15, 35))])
def test_dng_orientation(preview: bool, orientation: int, red_at: tuple[int, int]) -> None:
    picture = marked((80, 40))
    data = make_dng(picture, orientation=orientation, preview=picture if preview else None)
    decoded = decode_bytes(data, min_side=20 if preview else None)
    expected = (80, 40) if orientation == 3 else (40, 80)
    assert (decoded.width, decoded.height) == expected
    small = decoded.image.resize((20, 40) if orientation != 3 else (40, 20))
    if orientation == 3:
        assert near(small.getpixel((35, 15)), RED, 60)  # type: ignore[arg-type]
        assert near(small.getpixel((4, 4)), BLUE, 60)  # type: ignore[arg-type]
        return
    for corner in [(4, 4), (15, 4), (4, 35), (15, 35)]:
        expected_colour = RED if corner == red_at else BLUE
        assert near(small.getpixel(corner), expected_colour, 60), corner  # type: ignore[arg-type]


def test_dng_over_the_cap_is_refused() -> None:
    with pytest.raises(ImageTooLarge, match="160x120"):
        decode_bytes(make_dng(red_circle_photo()), max_pixels=160 * 120 - 1)


def test_raw_preview_over_the_cap_is_refused() -> None:
    data = make_dng(Image.new("RGB", (40, 30)), preview=Image.new("RGB", (400, 300)))
    with pytest.raises(ImageTooLarge, match="400x300"):
        decode_bytes(data, min_side=10, max_pixels=100_000)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"FUJIFILMCCD-RAW 0201FF383501", "RAF"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "CR3"),
        (b"IIRO\x08\x00\x00\x00", "ORF"),
        (b"IIU\x00\x08\x00\x00\x00", "RW2"),
        (b"II*\x00\x10\x00\x00\x00CR\x02\x00", "CR2"),
    ],
)
def test_raw_formats_are_recognised_by_content(data: bytes, kind: str) -> None:
    assert raw.recognise(data) == kind


def test_ordinary_tiff_is_not_raw() -> None:
    exif = Image.Exif()
    exif[271] = "Scanner Co"  # a maker, but no raw data anywhere
    data = encode(marked(), "TIFF", exif=exif)
    assert raw.recognise(data) is None
    assert decode_bytes(data).format == "TIFF"


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.95])
def test_truncated_dng_is_an_image_error(keep: float) -> None:
    data = make_dng(red_circle_photo())
    with pytest.raises(ImageError):
        decode_bytes(data[: int(len(data) * keep)])


def test_damaged_raw_says_why() -> None:
    with pytest.raises(CorruptImage, match="RAW"):
        decode_bytes(b"FUJIFILMCCD-RAW " + bytes(200))


# The real worker, made to crash or hang on chosen inputs, as a hostile file could make libraw.
CHAOS_WORKER = """
import os, signal, sys, time
import clipd.rawworker as worker
real = worker._decode
def decode(data, max_pixels, min_side):
    if data == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if data == b"hang":
        time.sleep(600)
    if data == b"babble":
        sys.stdout.buffer.write(b"not json\\n")
        sys.stdout.buffer.flush()
    return real(data, max_pixels, min_side)
worker._decode = decode
sys.exit(worker.main())
"""


@pytest.fixture
def chaos_pool() -> Any:
    pool = raw.WorkerPool((sys.executable, "-c", CHAOS_WORKER), timeout=10, size=2)
    yield pool
    pool.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("poison", "reason"),
    [(b"crash", "crashed on this file \\(signal 11\\)"), (b"babble", "answered nonsense")],
)
def test_a_crashing_raw_decoder_fails_that_file_only(
    chaos_pool: raw.WorkerPool, poison: bytes, reason: str
) -> None:
    good = make_dng(red_circle_photo())
    assert chaos_pool.decode(good, max_pixels=10**8, min_side=None).rgb is not None
    with pytest.raises(CorruptImage, match=reason):
        chaos_pool.decode(poison, max_pixels=10**8, min_side=None)
    assert chaos_pool.decode(good, max_pixels=10**8, min_side=None).rgb is not None


@pytest.mark.timeout(60)
def test_a_hanging_raw_decoder_is_killed_after_the_timeout() -> None:
    pool = raw.WorkerPool((sys.executable, "-c", CHAOS_WORKER), timeout=3, size=1)
    try:
        with pytest.raises(CorruptImage, match="took over 3 s"):
            pool.decode(b"hang", max_pixels=10**8, min_side=None)
        good = make_dng(red_circle_photo())
        assert pool.decode(good, max_pixels=10**8, min_side=None).rgb is not None
    finally:
        pool.close()


@pytest.mark.timeout(60)
def test_a_request_larger_than_the_pipe_reaches_a_hung_worker_without_blocking() -> None:
    # The request is written while the reply is awaited, both under the deadline: a worker that
    # stops reading cannot block the writer.
    pool = raw.WorkerPool((sys.executable, "-c", "import time; time.sleep(600)"), timeout=2)
    try:
        with pytest.raises(CorruptImage, match="took over"):
            pool.decode(bytes(8 << 20), max_pixels=10**8, min_side=None)
    finally:
        pool.close()


@pytest.mark.timeout(60)
def test_a_worker_finishes_its_file_through_the_signals_that_stop_the_daemon() -> None:
    # Ctrl-C and systemd's stop signal the whole process group; the daemon finishes its batch.
    pool = raw.WorkerPool(size=1)
    try:
        good = make_dng(red_circle_photo())
        pool.decode(good, max_pixels=10**8, min_side=None)
        [worker] = pool._idle
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(worker._proc.pid, signum)
        assert pool.decode(good, max_pixels=10**8, min_side=None).rgb is not None
        assert pool._idle == [worker]
    finally:
        pool.close()


# --- fuzzing -----------------------------------------------------------------------------------


def noise(size: tuple[int, int]) -> Image.Image:
    import random

    rng = random.Random(str(size))
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


@functools.cache
def plugin_seeds() -> tuple[bytes, ...]:
    im = noise((24, 16))
    exif = with_orientation(6)
    return tuple(encode(im, fmt, exif=exif.tobytes(), quality=80) for fmt in PLUGIN_FORMATS)


@functools.cache
def raw_seeds() -> tuple[bytes, ...]:
    im = noise((24, 16))
    return (
        make_dng(im, orientation=6, taken="2024:05:06 07:08:09", offset="+01:00"),
        make_dng(im, preview=im),
    )


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    mutable = bytearray(data)
    for offset, value in edits:
        mutable[offset % len(mutable)] = value
    return bytes(mutable[:cut])


def decodes_or_fails_cleanly(data: bytes, min_side: int | None) -> None:
    try:
        decoded = decode_bytes(data, min_side=min_side)
    except ImageError as exc:
        message = str(exc)
    else:
        assert decoded.image.mode == "RGB"
        assert decoded.width * decoded.height > 0
        return
    assert message
    assert "\n" not in message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, len(PLUGIN_FORMATS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 4000),
    min_side=st.none() | st.integers(1, 20),
)
def test_mutated_heif_avif_jxl_decode_or_raise_image_error(
    seed: int, edits: list[tuple[int, int]], cut: int | None, min_side: int | None
) -> None:
    decodes_or_fails_cleanly(mutate(plugin_seeds()[seed], edits, cut), min_side)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 3000),
    min_side=st.none() | st.integers(1, 20),
)
def test_mutated_dng_decodes_or_raises_image_error(
    seed: int, edits: list[tuple[int, int]], cut: int | None, min_side: int | None
) -> None:
    decodes_or_fails_cleanly(mutate(raw_seeds()[seed], edits, cut), min_side)


MAGIC = [
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    b"\xff\x0a",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n",
    b"FUJIFILMCCD-RAW ",
    b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom",
    b"IIRO\x08\x00\x00\x00",
    b"IIU\x00\x08\x00\x00\x00",
    b"II*\x00\x10\x00\x00\x00CR\x02\x00",
    b"II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHI", 50706, 1, 4) + b"\x01\x04\x00\x00",
]


@settings(max_examples=300, deadline=None)
@given(data=st.tuples(st.sampled_from(MAGIC), st.binary(max_size=2048)).map(b"".join))
def test_random_bytes_behind_new_magic_numbers_fail_cleanly(data: bytes) -> None:
    decodes_or_fails_cleanly(data, 8)
