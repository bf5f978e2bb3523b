"""Tests for clipd.images; every image is made here, with Pillow or by hand, none committed."""

from __future__ import annotations

import errno
import functools
import io
import os
import random
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fixtures.marked import BLUE, RED, encode, marked, with_orientation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipd import images
from clipd.config import DEFAULT_MAX_PIXELS
from clipd.errors import CorruptImage, ImageError, ImageTooLarge, NotAnImage, Unreadable
from clipd.images import DecodedImage, decode_bytes, decode_file

GREY = (128, 128, 128)  # the composite background images.py documents


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """data written to tmp_path/name."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


def noise(size: tuple[int, int]) -> Image.Image:
    """An RGB image of (repeatable) random pixels: incompressible, so a cut lands in pixel data."""
    return Image.frombytes("RGB", size, random.Random(str(size)).randbytes(size[0] * size[1] * 3))


def assert_colour(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> None:
    """Channels within tolerance of the expected colour."""
    assert len(actual) == len(expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def pixel(decoded: DecodedImage, xy: tuple[int, int]) -> tuple[int, ...]:
    """The RGB value at xy, checking the image really is RGB."""
    assert decoded.image.mode == "RGB"
    value = decoded.image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk with a valid CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A hand-made PNG: IHDR, one IDAT holding the already-filtered rows, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# --- formats and colours -----------------------------------------------------------------


LOSSLESS = ("PNG", "GIF", "BMP", "TIFF")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_format_round_trips(tmp_path: Path, fmt: str) -> None:
    colour = (200, 60, 30)
    path = write(tmp_path, f"photo.{fmt.lower()}", encode(Image.new("RGB", (64, 48), colour), fmt))
    decoded = decode_file(path)
    assert (decoded.width, decoded.height, decoded.format) == (64, 48, fmt)
    assert decoded.image.size == (64, 48)
    assert_colour(pixel(decoded, (32, 24)), colour, 0 if fmt in LOSSLESS else 6)
    assert decode_bytes(path.read_bytes()) == DecodedImage(decoded.image, 64, 48, fmt)


def test_wrong_extension_is_identified_by_content(tmp_path: Path) -> None:
    path = write(tmp_path, "actually-a-png.jpg", encode(Image.new("RGB", (8, 8), RED), "PNG"))
    decoded = decode_file(path)
    assert decoded.format == "PNG"
    assert pixel(decoded, (0, 0)) == RED


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (0, 255, 0), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
    assert_colour(pixel(decode_bytes(data), (8, 8)), RED, 0)


def test_multipage_tiff_gives_first_page() -> None:
    pages = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (32, 8), BLUE)]
    decoded = decode_bytes(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert (decoded.width, decoded.height) == (16, 16)
    assert pixel(decoded, (8, 8)) == RED


@pytest.mark.parametrize(
    ("mode", "value", "fmt", "expected"),
    [
        ("1", 1, "PNG", (255, 255, 255)),
        ("L", 77, "PNG", (77, 77, 77)),
        ("L", 77, "TIFF", (77, 77, 77)),
        ("I;16", 0, "PNG", (0, 0, 0)),
        ("I;16", 128 * 257, "PNG", GREY),  # Pillow's own convert() would clip this to white
        ("I;16", 65535, "PNG", (255, 255, 255)),
        ("I;16", 128 * 257, "TIFF", GREY),
        ("I", 128 * 257, "TIFF", GREY),
        ("CMYK", (0, 255, 255, 0), "TIFF", RED),
        ("P", 1, "BMP", RED),
    ],
)
def test_modes_convert_to_rgb_with_right_levels(
    mode: str, value: int | tuple[int, ...], fmt: str, expected: tuple[int, int, int]
) -> None:
    im = Image.new(mode, (8, 8), value)
    if mode == "P":
        im.putpalette([*BLUE, *RED])
    assert pixel(decode_bytes(encode(im, fmt)), (4, 4)) == expected


def test_16_bit_rgb_png() -> None:
    # Scanners and camera raw converters write these; Pillow reads the high bytes.
    row = b"\x00" + struct.pack(">HHH", 65535, 128 * 257, 0) * 4
    decoded = decode_bytes(png(4, 2, 16, 2, row * 2))
    assert (decoded.format, decoded.image.size) == ("PNG", (4, 2))
    assert pixel(decoded, (3, 1)) == (255, 128, 0)


def test_float_tiff_is_stretched_to_its_own_range() -> None:
    ramp = Image.linear_gradient("L").convert("F").point(lambda v: v / 255 * 0.5 + 0.25)
    decoded = decode_bytes(encode(ramp, "TIFF"))  # samples 0.25..0.75: no standard range
    assert pixel(decoded, (0, 0)) == (0, 0, 0)
    assert pixel(decoded, (0, 255)) == (255, 255, 255)
    assert_colour(pixel(decoded, (0, 128)), GREY, 2)


def test_cmyk_jpeg_red(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cmyk.jpg", encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    )
    with Image.open(path) as raw:  # Pillow writes Adobe (inverted) CMYK, the Photoshop kind
        assert (raw.mode, "adobe" in raw.info) == ("CMYK", True)
    assert_colour(pixel(decode_file(path), (16, 16)), RED)


# --- transparency ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index(fmt: str) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([*BLUE, *RED])
    im.paste(1, (0, 0, 4, 8))  # left half red, right half index 0, transparent
    decoded = decode_bytes(encode(im, fmt, transparency=0))
    assert pixel(decoded, (1, 4)) == RED
    assert pixel(decoded, (6, 4)) == GREY  # never the hidden colour (blue)


def test_palette_with_alpha_bytes() -> None:
    # tRNS holding one alpha per palette entry: Pillow warns if this goes straight to RGB.
    im = Image.new("P", (8, 8), 0)
    im.putpalette([*BLUE, *RED])
    im.paste(1, (0, 0, 4, 8))
    decoded = decode_bytes(encode(im, "PNG", transparency=bytes([128, 255])))
    assert pixel(decoded, (1, 4)) == RED
    assert_colour(pixel(decoded, (6, 4)), (64, 64, 192), 1)


ALPHA_CASES = [
    ("RGBA", (255, 0, 0, 255), RED),
    ("RGBA", (255, 0, 0, 0), GREY),
    ("RGBA", (255, 0, 0, 128), (192, 64, 64)),
    ("LA", (0, 0), GREY),
    ("LA", (0, 255), (0, 0, 0)),
    ("LA", (255, 128), (192, 192, 192)),
    ("PA", (1, 0), GREY),
]
# What each format can store: WebP only RGBA, PNG no PA.
ALPHA_MODES = {"PNG": {"RGBA", "LA"}, "TIFF": {"RGBA", "LA", "PA"}, "WEBP": {"RGBA"}}


@pytest.mark.parametrize(
    ("fmt", "mode", "value", "expected"),
    [
        (fmt, *case)
        for fmt, modes in ALPHA_MODES.items()
        for case in ALPHA_CASES
        if case[0] in modes
    ],
)
def test_alpha_is_composited_over_grey(
    fmt: str, mode: str, value: tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    im = Image.new(mode, (8, 8), value)
    if mode == "PA":
        im.putpalette([*BLUE, *RED])
    assert_colour(pixel(decode_bytes(encode(im, fmt, lossless=True)), (4, 4)), expected, 1)


@pytest.mark.parametrize(("mode", "key"), [("RGB", RED), ("L", 40)])
def test_colour_key_transparency(mode: str, key: int | tuple[int, ...]) -> None:
    im = Image.new(mode, (8, 8), key)
    assert pixel(decode_bytes(encode(im, "PNG", transparency=key)), (4, 4)) == GREY


# --- EXIF orientation --------------------------------------------------------------------


# Where the stored top-left corner is displayed, in the 20x40 upright image.
@pytest.mark.parametrize(("orientation", "red_at"), [(6, (15, 4)), (8, (4, 35))])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_rotates(fmt: str, orientation: int, red_at: tuple[int, int]) -> None:
    data = encode(marked(), fmt, exif=with_orientation(orientation), lossless=True)
    decoded = decode_bytes(data)
    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.image.size == (20, 40)
    assert_colour(pixel(decoded, red_at), RED, 20)
    for corner in [(4, 4), (15, 4), (4, 35), (15, 35)]:
        if corner != red_at:
            assert_colour(pixel(decoded, corner), BLUE, 20)


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00garbage, not a TIFF header",
        # A valid TIFF header whose first directory claims 50 entries in 4 bytes.
        b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 50) + b"\x12\x01\x03\x00",
        # Orientation stored as ASCII, not SHORT.
        b"Exif\x00\x00II*\x00" + struct.pack("<IHHHII", 8, 1, 0x0112, 2, 2, 0x36) + b"\0" * 4,
        b"Exif\x00\x00MM\x00*" + struct.pack(">I", 0xFFFFFFF0),
    ],
)
# Pillow warns (UserWarning) about damaged EXIF while it parses the JPEG header, where no caller
# can avoid it; the daemon runs with default warning filters, so there it is a log line.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupt_exif_still_decodes_unrotated(exif: bytes) -> None:
    decoded = decode_bytes(encode(marked(), "JPEG", exif=exif))
    assert (decoded.width, decoded.height) == (40, 20)
    assert_colour(pixel(decoded, (4, 4)), RED, 20)


# --- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "seen"),
    [
        (b"", "empty file"),
        (random.Random(1).randbytes(4096), "unrecognised data"),
        (b"holiday notes\n" * 10, "plain text"),
        (b"BMW service due in May\n", "plain text"),  # BMP's magic is just "BM"
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "MP4"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 ", "JPEG 2000"),
    ],
)
def test_not_an_image_names_what_it_saw(tmp_path: Path, data: bytes, seen: str) -> None:
    for name in ("photo.jpg", "photo.png"):
        with pytest.raises(NotAnImage, match=seen) as caught:
            decode_file(write(tmp_path, name, data))
        assert caught.value.error_class == "NotAnImage"
        assert "\n" not in str(caught.value)


def test_format_without_its_codec_is_not_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    factory, _ = Image.OPEN["WEBP"]
    monkeypatch.setitem(Image.OPEN, "WEBP", (factory, lambda prefix: "WEBP support missing"))
    data = encode(Image.new("RGB", (8, 8)), "WEBP")
    with pytest.raises(NotAnImage, match="WEBP support missing"):
        decode_bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 20])
def test_truncated_file_is_corrupt(tmp_path: Path, fmt: str, keep: float) -> None:
    data = encode(noise((96, 64)), fmt)
    cut = data[: int(len(data) * keep) if keep < 1 else int(keep)]
    with pytest.raises(CorruptImage) as caught:
        decode_file(write(tmp_path, f"cut.{fmt.lower()}", cut))
    assert caught.value.error_class == "CorruptImage"
    assert fmt in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.timeout(5)
def test_png_header_claiming_30000x30000_fails_before_decoding() -> None:
    rows = zlib.compress(b"\x00" * 1000)  # a few bytes pretending to be 2.7 GB of pixels
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )
    with pytest.raises(ImageTooLarge, match=r"30000x30000 \(900,000,000 pixels\)") as caught:
        decode_bytes(data)
    assert f"{DEFAULT_MAX_PIXELS:,}-pixel cap" in str(caught.value)
    assert caught.value.error_class == "ImageTooLarge"


def test_max_pixels_cap_applies_to_normal_images(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.png", encode(Image.new("RGB", (100, 100)), "PNG"))
    assert decode_file(path, max_pixels=10_000).width == 100
    with pytest.raises(ImageTooLarge, match="100x100"):
        decode_file(path, max_pixels=9_999)


def test_gif_frame_bigger_than_its_screen_is_checked_against_the_cap() -> None:
    data = bytearray(encode(Image.new("P", (10, 10)), "GIF"))
    data[6:10] = struct.pack("<HH", 1, 1)  # logical screen 1x1: the frame itself is 10x10
    assert decode_bytes(bytes(data)).width == 10
    with pytest.raises(ImageTooLarge, match="10x10"):
        decode_bytes(bytes(data), max_pixels=50)


def test_pillow_internal_size_limit_is_image_too_large() -> None:
    # Pillow's TIFF loader applies its own global limit (~179 Mpx) when it allocates, whatever
    # cap the caller allows; that refusal must still come out as ImageTooLarge.
    data = bytearray(encode(Image.new("L", (8, 8)), "TIFF"))
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            assert kind == 4  # LONG
            struct.pack_into("<I", data, entry + 8, 20000 if tag == 256 else 10000)
    with pytest.raises(ImageTooLarge, match="Pillow's own size limit"):
        decode_bytes(bytes(data), max_pixels=10**9)


# --- files that cannot be read -----------------------------------------------------------


@pytest.mark.timeout(10)
def test_fifo_is_unreadable_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(Unreadable, match="FIFO"):
        decode_file(fifo)


@pytest.mark.timeout(10)
def test_fifo_swapped_in_after_stat_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    decoy = write(tmp_path, "decoy.jpg", b"x")
    real_stat = os.stat

    def stat_before_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return real_stat(decoy if path == fifo else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_before_swap)
    with pytest.raises(Unreadable, match="FIFO"):
        decode_file(fifo)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(Unreadable, match="directory") as caught:
        decode_file(tmp_path)
    assert caught.value.error_class == "Unreadable"


def test_device_is_unreadable() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(Unreadable, match="character device"):
        decode_file(Path("/dev/zero"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unpermitted_file_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.png", encode(Image.new("RGB", (4, 4)), "PNG"))
    path.chmod(0)
    with pytest.raises(Unreadable, match="permission denied"):
        decode_file(path)


def test_permission_error_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test above cannot run as root; this one simulates what open() raises for others.
    path = write(tmp_path, "secret.png", b"x")

    def deny(name: Any, flags: int, *args: Any) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(Unreadable, match="permission denied"):
        decode_file(path)


def test_vanished_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(Unreadable, match="no such file"):
        decode_file(tmp_path / "gone.jpg")


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as f:  # sparse: takes no disk space
        f.write(encode(Image.new("RGB", (4, 4)), "PNG"))
        f.truncate(images.MAX_FILE_BYTES + 1)
    with pytest.raises(ImageTooLarge, match="512 MiB cap"):
        decode_file(path)


# --- min_side ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(noise((400, 300)).resize((4000, 3000)), "JPEG", quality=85)


def test_min_side_drafts_jpeg_but_reports_original_size(big_jpeg: bytes) -> None:
    small = decode_bytes(big_jpeg, min_side=224)
    full = decode_bytes(big_jpeg)
    assert (small.width, small.height) == (full.width, full.height) == (4000, 3000)
    assert full.image.size == (4000, 3000)
    assert 224 <= min(small.image.size) < 3000
    # Exactly 1/8: the DCT-domain draft. A reduce() after a full decode would give 308x231.
    assert small.image.size == (500, 375)


def test_min_side_with_rotation(big_jpeg: bytes) -> None:
    with Image.open(io.BytesIO(big_jpeg)) as im:
        rotated = encode(im, "JPEG", exif=with_orientation(6))
    decoded = decode_bytes(rotated, min_side=224)
    assert (decoded.width, decoded.height) == (3000, 4000)
    assert decoded.image.size == (375, 500)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_min_side_reduces_other_formats(fmt: str) -> None:
    decoded = decode_bytes(encode(Image.new("RGB", (1000, 700), RED), fmt), min_side=224)
    assert (decoded.width, decoded.height) == (1000, 700)
    assert decoded.image.size == (334, 234)  # reduced by 3: shorter side stays >= 224
    assert_colour(pixel(decoded, (100, 100)), RED, 2)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_min_side_never_upscales(fmt: str) -> None:
    decoded = decode_bytes(encode(Image.new("RGB", (300, 200)), fmt), min_side=224)
    assert decoded.image.size == (300, 200)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_picture_reduced_for_the_model_comes_with_a_larger_copy_for_its_thumbnail(
    fmt: str,
) -> None:
    data = encode(noise((120, 90)).resize((2400, 1800)), fmt)
    plain = decode_bytes(data, min_side=224)
    both = decode_bytes(data, min_side=224, thumbnail_side=400)
    assert plain.for_thumbnail is None
    assert both.image.tobytes() == plain.image.tobytes()  # the model's input is unchanged
    assert both.image.size == (300, 225)  # reduced by 8
    assert both.for_thumbnail is not None
    assert both.for_thumbnail.size == (400, 300)  # reduced by 6, from the same decode


def test_a_larger_copy_is_turned_upright_too() -> None:
    data = encode(noise((120, 90)).resize((1200, 900)), "PNG", exif=with_orientation(6))
    decoded = decode_bytes(data, min_side=224, thumbnail_side=400)
    assert decoded.image.size == (225, 300)
    assert decoded.for_thumbnail is not None
    assert decoded.for_thumbnail.size == (300, 400)


def test_no_larger_copy_when_the_reduced_picture_is_big_enough(big_jpeg: bytes) -> None:
    assert decode_bytes(big_jpeg, min_side=224, thumbnail_side=400).for_thumbnail is None
    small = encode(noise((120, 90)).resize((300, 200)), "PNG")
    assert decode_bytes(small, min_side=224, thumbnail_side=400).for_thumbnail is None


def test_min_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_side"):
        decode_bytes(b"", min_side=0)


# --- concurrency and fuzzing -------------------------------------------------------------


def test_concurrent_decodes_match_sequential() -> None:
    inputs = [
        encode(noise((120, 90)), fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
    ] * 4
    expected = [decode_bytes(data, min_side=32).image.tobytes() for data in inputs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = pool.map(lambda data: decode_bytes(data, min_side=32).image.tobytes(), inputs)
        assert list(results) == expected


@functools.cache
def fuzz_seeds() -> tuple[bytes, ...]:
    """Small valid images, with EXIF and transparency, for the mutation test."""
    im = noise((24, 16))
    exif = with_orientation(6)
    return (
        encode(im, "PNG", exif=exif),
        encode(im.convert("P"), "PNG", transparency=3),
        encode(im, "JPEG", exif=exif),
        encode(im, "JPEG", progressive=True),
    )


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 3),
    edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 4000),
    min_side=st.none() | st.integers(1, 20),
)
def test_mutated_images_decode_or_raise_image_error(
    seed: int, edits: list[tuple[int, int]], cut: int | None, min_side: int | None
) -> None:
    data = bytearray(fuzz_seeds()[seed])
    for offset, value in edits:
        data[offset % len(data)] = value
    try:
        decoded = decode_bytes(bytes(data[:cut]), min_side=min_side)
    except ImageError:
        return
    assert decoded.image.mode == "RGB"
    assert decoded.width * decoded.height > 0


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF", b"BM", b"II*\x00", b"MM\x00*"]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048) | st.tuples(st.sampled_from(MAGIC), st.binary()).map(b"".join))
def test_random_bytes_decode_or_raise_image_error(data: bytes) -> None:
    # Random bytes, bare or behind each format's magic number so that its parser runs.
    try:
        decoded = decode_bytes(data, min_side=8)
    except ImageError:
        return
    assert decoded.image.mode == "RGB"
