"""A dataset holding every kind of bad input the pipeline must survive, and what to expect.

Rows: good pictures (from the sample generator), valid but unusual images that must be
normalised and indexed (CMYK, 16-bit, palette, alpha, EXIF-rotated, animated, ...), bad
images that must be quarantined with a reason (empty, truncated, not an image, bombs, ...),
exact duplicates. Files: good shards plus shards that cannot be read at all (random bytes,
a truncated file, a missing or mistyped ``image`` column).

    python -m imgsearch_pipeline_tests.bad_data OUT     # writes OUT/data/*.parquet
"""

import io
import random
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from imgsearch_pipeline.sample_data import SCHEMA, generate_rows

HOSTILE_PATHS = ("../../etc/passwd", "/etc/shadow", "..\\..\\windows\\system32", "a\x00b.jpg")


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width`` x ``height`` (nothing is allocated)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


# ---- images that are valid but unusual: each must be normalised and indexed -------------

def _cmyk_jpeg() -> bytes:
    return _save(_picture(1).convert("CMYK"), "JPEG", quality=90)


def _png16() -> bytes:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    return _save(Image.fromarray(ramp), "PNG")  # opens as mode I;16


def _palette_png() -> bytes:
    return _save(_picture(2).quantize(16), "PNG")


def _palette_transparent_png() -> bytes:
    image = _picture(3).quantize(16)
    image.info["transparency"] = 0
    return _save(image, "PNG", transparency=0)


def _rgba_png() -> bytes:
    image = _picture(4).convert("RGBA")
    alpha = Image.linear_gradient("L").resize(image.size)
    image.putalpha(alpha)
    return _save(image, "PNG")


def _la_png() -> bytes:
    image = _picture(5).convert("LA")
    return _save(image, "PNG")


def exif_rotated_jpeg(width: int = 80, height: int = 48, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(_picture(6).resize((width, height)), "JPEG", exif=exif.tobytes())


def _bad_orientation_jpeg() -> bytes:
    return exif_rotated_jpeg(orientation=99)  # out of range: ignored, the image is kept


def animated_gif() -> bytes:
    frames = [_picture(10 + i).convert("P") for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _greyscale_jpeg() -> bytes:
    return _save(_picture(7).convert("L"), "JPEG")


def _one_bit_png() -> bytes:
    return _save(_picture(8).convert("1"), "PNG")


def _webp() -> bytes:
    return _save(_picture(9), "WEBP")


def _bmp() -> bytes:
    return _save(_picture(11), "BMP")


def _tiff16_rgb() -> bytes:
    return _save(_picture(12), "TIFF")


UNUSUAL: dict[str, Callable[[], bytes]] = {
    "cmyk_jpeg": _cmyk_jpeg,
    "png_16bit": _png16,
    "palette_png": _palette_png,
    "palette_transparent_png": _palette_transparent_png,
    "rgba_png": _rgba_png,
    "la_png": _la_png,
    "exif_rotated_jpeg": exif_rotated_jpeg,
    "bad_exif_orientation": _bad_orientation_jpeg,
    "animated_gif": animated_gif,
    "greyscale_jpeg": _greyscale_jpeg,
    "one_bit_png": _one_bit_png,
    "webp": _webp,
    "bmp": _bmp,
    "tiff": _tiff16_rgb,
}

# ---- bad images: each must land in the quarantine with this reason (a substring) ---------


def _truncated_jpeg() -> bytes:
    data = _save(_picture(20, 128), "JPEG", quality=95)
    return data[: len(data) // 2]


def _ppm() -> bytes:
    return _save(_picture(21), "PPM")


def _over_limit_png() -> bytes:
    # Over the default 40 MP limit but under Pillow's own: only our check can stop it.
    return _save(Image.new("1", (7000, 7000)), "PNG")


BAD: dict[str, tuple[Callable[[], bytes | None], str]] = {
    "zero_bytes": (lambda: b"", "empty image"),
    "truncated_jpeg": (_truncated_jpeg, "corrupt image data"),
    "not_an_image": (lambda: b"<html><body>this is not an image</body></html>" * 20,
                     "not an image"),
    "svg_unsupported": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10"/>',
                        "not an image"),
    "ppm_unsupported": (_ppm, "unsupported format: PPM"),
    "png_bomb_100000": (lambda: png_claiming(100_000, 100_000), "decompression bomb"),
    "png_over_limit": (_over_limit_png, "too many pixels"),
    "one_pixel": (lambda: _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "too small"),
    "null_bytes": (lambda: b"\x00" * 4096, "null bytes"),
    "null_image_bytes": (lambda: None, "missing image"),
}
NULL_STRUCT = "null_struct"  # the whole ``image`` struct is null: "missing image"


@dataclass
class BadDataset:
    folder: Path  # the dataset location (OUT/data)
    rows: int  # rows in the readable shards
    good: int  # distinct usable images
    duplicates: int
    expected_rejects: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    unusual: dict[tuple[str, int], str] = field(default_factory=dict)  # (shard, row) -> kind
    bad_files: dict[str, str] = field(default_factory=dict)  # file name -> what is wrong


def _good_rows(count: int, seed: int, size: int) -> list[dict]:
    rows = list(generate_rows(count, size, seed, group_size=3, exact_duplicates=0))
    for i, row in enumerate(rows[: len(HOSTILE_PATHS)]):
        row["image"]["path"] = HOSTILE_PATHS[i]  # recorded, never used as a path
    return rows


def write_bad_dataset(out: str | Path, good: int = 80, size: int = 48, seed: int = 11) -> BadDataset:
    folder = Path(out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = _good_rows(good, seed, size)
    duplicates = 3
    for row in rows[:duplicates]:  # exact copies collapse into one post
        rows.append({**row, "image": {**row["image"], "path": "copy.jpg"}, "variant": "copy"})

    special: list[tuple[dict, str, str | None]] = []  # (row, kind, expected reason)
    for kind, make in UNUSUAL.items():
        special.append(({"image": {"bytes": make(), "path": f"{kind}.img"}, "caption": kind,
                         "scene": -1, "variant": kind, "mean_hue": 0.0}, kind, None))
    for kind, (make, reason) in BAD.items():
        special.append(({"image": {"bytes": make(), "path": f"{kind}.img"}, "caption": kind,
                         "scene": -1, "variant": kind, "mean_hue": 0.0}, kind, reason))
    special.append(({"image": None, "caption": NULL_STRUCT, "scene": -1, "variant": NULL_STRUCT,
                     "mean_hue": 0.0}, NULL_STRUCT, "missing image"))
    for item in special:  # scattered among the good rows, at known positions
        rows.insert(rng.randrange(len(rows) + 1), item)

    half = len(rows) // 2
    dataset = BadDataset(folder, rows=len(rows), good=good + len(UNUSUAL), duplicates=duplicates)
    for number, chunk in enumerate((rows[:half], rows[half:])):
        name = f"train-{number:05d}-of-00002.parquet"
        plain = []
        for row_number, item in enumerate(chunk):
            if isinstance(item, tuple):
                row, kind, reason = item
                if reason is None:
                    dataset.unusual[(name, row_number)] = kind
                else:
                    dataset.expected_rejects[(name, row_number)] = (kind, reason)
                plain.append(row)
            else:
                plain.append(item)
        table = pa.Table.from_pylist(plain, SCHEMA)
        if number == 1:  # hostile and mistyped extra columns must not break the posts table
            table = table.append_column("uuid", pa.array(["../../etc/passwd"] * len(plain)))
            table = table.set_column(table.schema.get_field_index("caption"), "caption",
                                     pa.array(list(range(len(plain))), pa.int64()))
        pq.write_table(table, folder / name, row_group_size=32)

    good_bytes = (folder / "train-00000-of-00002.parquet").read_bytes()
    bad_files = {
        "random-bytes.parquet": (bytes(rng.getrandbits(8) for _ in range(4096)), "not a readable"),
        "truncated.parquet": (good_bytes[: len(good_bytes) // 2], "not a readable"),
    }
    for name, (data, reason) in bad_files.items():
        (folder / name).write_bytes(data)
        dataset.bad_files[name] = reason
    pq.write_table(pa.table({"caption": ["no image column"]}), folder / "no-image-column.parquet")
    dataset.bad_files["no-image-column.parquet"] = "missing column 'image'"
    pq.write_table(pa.table({"image": ["a string, not a struct"]}), folder / "image-as-text.parquet")
    dataset.bad_files["image-as-text.parquet"] = "must be a struct"
    return dataset


if __name__ == "__main__":
    made = write_bad_dataset(sys.argv[1] if len(sys.argv) > 1 else "data/bad")
    print(f"wrote {made.rows} rows ({len(made.expected_rejects)} bad, {len(made.unusual)} unusual)"
          f" and {len(made.bad_files)} broken files under {made.folder}")
