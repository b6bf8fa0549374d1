"""Image checks and normalisation: every unusual kind becomes upright 8-bit RGB, every bad
kind is rejected with a reason, and no hostile bytes raise anything but ImageRejected."""

import io
import random

import numpy as np
import pytest
from PIL import Image

from imgsearch_pipeline.core.images import ImageRejected, decode_cost, inspect_image, load_rgb, to_rgb

from .bad_data import BAD, UNUSUAL, animated_gif, exif_rotated_jpeg, png_claiming


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", sorted(UNUSUAL))
def test_unusual_images_are_accepted_and_normalised(kind):
    data = UNUSUAL[kind]()
    info = inspect_image(data)
    image = load_rgb(data)
    assert image.mode == "RGB"
    assert image.size == (info.width, info.height)
    assert np.asarray(image).dtype == np.uint8


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_images_are_rejected_with_their_reason(kind):
    make, reason = BAD[kind]
    with pytest.raises(ImageRejected) as caught:
        inspect_image(make())
    assert reason in caught.value.reason
    if reason != "too small":  # the minimum size is a policy of the posts check only
        with pytest.raises(ImageRejected):
            load_rgb(make())


def test_bomb_header_is_rejected_without_allocating():
    data = png_claiming(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(ImageRejected, match="decompression bomb"):
        inspect_image(data)


def test_pixel_limit_is_configurable():
    data = _png(Image.new("RGB", (100, 100)))
    assert inspect_image(data, max_pixels=10_000).width == 100
    with pytest.raises(ImageRejected, match="too many pixels: 100x100 > 9,999"):
        inspect_image(data, max_pixels=9_999)


def test_minimum_side_is_configurable():
    data = _png(Image.new("RGB", (1, 1)))
    assert inspect_image(data, min_side=1).width == 1
    assert load_rgb(data).size == (1, 1)


def test_exif_rotation_swaps_size_and_turns_the_pixels():
    data = exif_rotated_jpeg(80, 48, orientation=6)  # stored landscape, shown portrait
    info = inspect_image(data)
    assert (info.width, info.height) == (48, 80)
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    upright = load_rgb(data)
    expected = stored.transpose(Image.Transpose.ROTATE_270)
    assert np.abs(np.asarray(upright, int) - np.asarray(expected, int)).max() == 0


def test_alpha_is_composed_over_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((0, 0), (0, 0, 255, 255))
    rgb = to_rgb(image)
    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (0, 0, 255)
    la = Image.new("LA", (8, 8), (0, 128))  # black at half alpha -> mid grey
    assert abs(to_rgb(la).getpixel((0, 0))[0] - 127) <= 1


def test_palette_transparency_is_composed_over_white():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped():
    array = np.array([[0, 32768, 65535, 65535]] * 4, dtype=np.uint16)
    image = Image.open(io.BytesIO(_png(Image.fromarray(array))))
    assert image.mode.startswith("I;16")
    row = [to_rgb(image).getpixel((x, 0))[0] for x in range(3)]
    assert row[0] == 0 and abs(row[1] - 127) <= 1 and row[2] == 255


def test_float_images_in_unit_range_are_scaled():
    image = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")
    assert abs(to_rgb(image).getpixel((0, 0))[0] - 127) <= 1


def test_cmyk_becomes_rgb_with_similar_colours():
    original = Image.new("RGB", (16, 16), (200, 40, 40))
    buffer = io.BytesIO()
    original.convert("CMYK").save(buffer, format="JPEG", quality=95)
    rgb = load_rgb(buffer.getvalue())
    assert np.abs(np.asarray(rgb, int) - np.asarray(original, int)).mean() < 12


def test_animated_gif_gives_its_first_frame():
    data = animated_gif()
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 3
    first = gif.convert("RGB")
    gif.seek(2)  # even when handed a later frame, to_rgb goes back to the first
    assert np.array_equal(np.asarray(to_rgb(gif)), np.asarray(first))
    info = inspect_image(data)  # an animation is accepted, as its first frame
    assert (info.width, info.height) == first.size


def test_every_mode_converts(tmp_path):
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F",
                 "LA", "La", "PA", "RGBa", "RGBX", "I;16", "I;16B"):
        assert to_rgb(Image.new(mode, (4, 4))).mode == "RGB", mode


def test_mutated_files_never_raise_anything_but_rejected():
    """Random byte flips and cuts of valid files: accepted or rejected, never a crash."""
    rng = random.Random(0)
    seeds = [UNUSUAL[k]() for k in ("cmyk_jpeg", "png_16bit", "animated_gif", "webp", "tiff")]
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
        try:
            inspect_image(bytes(data))
            assert load_rgb(bytes(data)).mode == "RGB"
        except ImageRejected as rejected:
            assert rejected.reason


# -- the cheapest decode for the size needed ----------------------------------------------


def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    x, y = np.meshgrid(np.linspace(0, 255, size[0]), np.linspace(0, 255, size[1]))
    array = np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoding_for_a_size_keeps_both_sides_above_it_and_the_picture(fmt):
    data = _encoded((2400, 1700), fmt)
    full = load_rgb(data)
    small = load_rgb(data, fit=400)
    assert min(small.size) >= 400 and small.width < full.width / 2
    # The same picture: compare both at one size.
    a = np.asarray(full.resize((64, 64)), dtype=np.float64)
    b = np.asarray(small.resize((64, 64)), dtype=np.float64)
    assert np.abs(a - b).mean() < 3.0
    assert load_rgb(_encoded((300, 200), fmt), fit=400).size == (300, 200)  # never enlarged


def test_decode_cost_is_read_from_the_header():
    assert decode_cost(_encoded((2400, 1600), "PNG"), 400) == 2400 * 1600
    assert decode_cost(_encoded((2400, 1600), "JPEG"), 400) == (2400 // 4) * (1600 // 4)
    assert decode_cost(b"not an image", 400) == 0
