"""Decoding and preprocessing of single images, including every kind of bad input."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from facegan.data import images
from facegan.data.images import BadImage, crop_box, load_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def halves(size: tuple[int, int], left: tuple, right: tuple) -> Image.Image:
    """An RGB image whose left half is ``left`` and right half ``right``."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = left
    arr[:, size[0] // 2 :] = right
    return Image.fromarray(arr)


def noise(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)), fmt)


def corrupt_png() -> bytes:
    """A PNG whose headers are intact but whose compressed pixel data is overwritten."""
    data = noise("PNG")
    return data[:60] + bytes(200) + data[260:]


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring a huge image, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_shape_dtype_and_exact_same_size_pixels():
    arr = np.random.default_rng(1).integers(0, 256, (16, 16, 3), np.uint8)
    out = load_image(encode(Image.fromarray(arr)), 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out, arr)


def test_center_crop_takes_the_middle_square():
    # 96x32: red | green | blue thirds; the centred square is the green third.
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, :32], arr[:, 32:64], arr[:, 64:] = RED, GREEN, BLUE
    out = load_image(encode(Image.fromarray(arr)), 16).astype(int)
    inner = out[:, 3:-3]  # the Lanczos kernel may touch the neighbours at the very edge
    assert np.abs(inner - GREEN).max() <= 2


def test_crop_none_squashes_whole_image():
    out = load_image(encode(halves((64, 16), RED, BLUE)), 16, crop="none").astype(int)
    assert np.abs(out[:, :6] - RED).max() <= 2 and np.abs(out[:, -6:] - BLUE).max() <= 2


def test_crop_boxes():
    assert crop_box(178, 218, "center") == (0, 20, 178, 198)
    assert crop_box(178, 218, "celeba") == (19, 51, 159, 191)
    assert crop_box(356, 436, "celeba") == (38, 102, 318, 382)
    assert crop_box(50, 40, "none") == (0, 0, 50, 40)
    with pytest.raises(ValueError):
        crop_box(10, 10, "bogus")


def test_celeba_crop_keeps_only_the_face_box():
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[51:191, 19:159] = WHITE
    data = encode(Image.fromarray(arr))
    celeba = load_image(data, 32, crop="celeba")
    assert celeba[2:-2, 2:-2].min() >= 250
    assert load_image(data, 32, crop="center").mean() < 200  # centre square includes black


def test_grayscale_output_and_gray_replication():
    gray = Image.fromarray(np.full((20, 20), 77, np.uint8))
    assert load_image(encode(gray), 20, channels=1).shape == (20, 20, 1)
    rgb = load_image(encode(gray), 20, channels=3)
    assert (rgb == 77).all()
    red_as_gray = load_image(encode(Image.new("RGB", (20, 20), RED)), 20, channels=1)
    assert (red_as_gray == 76).all()  # ITU-R 601 luma of pure red


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red
    out = load_image(encode(cmyk, "JPEG", quality=95), 16).astype(int)
    assert np.abs(out - RED).max() <= 12


def test_16_bit_is_stretched_over_its_actual_range():
    values = np.tile(np.linspace(1000, 3000, 16).astype(np.uint16), (16, 1))
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    out = load_image(encode(img), 16, channels=1)[..., 0]
    expected = np.round((values.astype(float) - 1000) * 255 / 2000).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255  # clipping would have made it all white


def test_float_mode_is_stretched():
    img = Image.fromarray(np.tile(np.linspace(-1, 1, 16, dtype=np.float32), (16, 1)), "F")
    out = load_image(encode(img, "TIFF"), 16, channels=1)[..., 0]
    assert out[0, 0] == 0 and out[0, -1] == 255


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 = red, 1 = blue
    img.paste(1, (0, 0, 8, 16))
    out = load_image(encode(img, fmt, transparency=1), 16)
    assert (out[:, :8] == WHITE).all() and (out[:, 8:] == RED).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode):
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 3] = 255
    arr[:, :8, 3] = 0  # left half fully transparent (and black underneath)
    img = Image.fromarray(arr, "RGBA").convert(mode)
    out = load_image(encode(img), 16)
    assert (out[:, :8] == 255).all() and (out[:, 8:] == 0).all()


def test_half_alpha_blends_with_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 128))
    assert np.abs(load_image(encode(img), 16).astype(int) - 127).max() <= 1


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    data = encode(halves((64, 32), RED, BLUE), "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(data, 16, crop="none").astype(int)
    # Displayed upright the image is 32x64 with the stored left half (red) on top.
    assert np.abs(out[2, 8] - RED).max() <= 20 and np.abs(out[13, 8] - BLUE).max() <= 20


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    buf = BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue(), 16).astype(int)
    assert np.abs(out - RED).max() <= 2


def test_large_jpeg_uses_draft_and_matches_full_decode(monkeypatch):
    data = encode(halves((1600, 800), RED, BLUE), "JPEG", quality=95)
    fast = load_image(data, 32).astype(int)
    monkeypatch.setattr(images, "_draft", lambda *args: None)
    full = load_image(data, 32).astype(int)
    assert np.abs(fast - full).mean() < 2
    assert np.abs(fast[:, :14] - RED).max() <= 12 and np.abs(fast[:, -14:] - BLUE).max() <= 12


def test_array_input():
    arr = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    out = load_image(arr, 28, channels=3)
    assert out.shape == (28, 28, 3)
    np.testing.assert_array_equal(out[..., 1], arr)
    assert load_image(arr, 64, channels=1).shape == (64, 64, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file pretending to be a jpg\n", "not an image"),
        (noise("JPEG")[:400], "truncated"),
        (noise("JPEG")[:-200], "truncated"),
        (corrupt_png(), "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not an image"),
        (huge_png_header(20000, 20000), "decompression bomb"),
        (encode(Image.new("RGB", (10, 30))), "too small: 10x30"),
    ],
    ids=["empty", "text", "truncated-header", "truncated", "corrupt", "garbage", "bomb", "tiny"],
)
def test_bad_inputs_raise_badimage(data, reason):
    with pytest.raises(BadImage) as info:
        load_image(data, 64)
    assert str(info.value).startswith(reason)


def test_bomb_limit_is_checked_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(BadImage, match="decompression bomb: 16x16"):
        load_image(encode(Image.new("RGB", (16, 16))), 16)


def test_min_size_default_and_override():
    data = encode(Image.new("RGB", (15, 15), RED))
    with pytest.raises(BadImage, match="too small"):
        load_image(data, 64)  # default minimum is 64 // 4 = 16
    assert load_image(data, 64, min_size=0).shape == (64, 64, 3)
    assert load_image(data, 32).shape == (32, 32, 3)  # minimum max(8, 32 // 4) = 8
