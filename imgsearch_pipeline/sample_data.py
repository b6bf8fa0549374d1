"""Make a sample dataset offline, in the Hugging Face parquet layout of the real one.

Pictures are drawn from random shapes, gradients and textures; each *scene* appears in a
group of near-duplicates (crops, mirror flips, colour shifts, re-encodes) so that search
results can be judged by eye and by tests. A few exact duplicates test their collapse.

    python -m imgsearch_pipeline.sample_data data/sample --images 2000 --shards 2
"""

import argparse
import colorsys
import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

COLOURS = {
    "red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (240, 220, 50),
    "green": (50, 170, 70), "teal": (30, 160, 160), "blue": (40, 80, 220),
    "purple": (140, 60, 190), "pink": (240, 120, 180), "brown": (130, 80, 40),
    "grey": (128, 128, 128), "black": (20, 20, 20), "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "stripes", "rings", "dots")
EMOJI = {"circle": "⭕", "square": "🟥", "triangle": "🔺", "stripes": "🦓", "rings": "💍", "dots": "🎲"}
VARIANTS = ("crop", "flip", "colour shift", "blur", "recompress", "zoom")


def _draw_scene(rng: random.Random, size: int) -> tuple[Image.Image, str]:
    names = list(COLOURS)
    bg1, bg2, main = rng.sample(names, 3)
    top, bottom = np.array(COLOURS[bg1], float), np.array(COLOURS[bg2], float)
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(2, 25),
                                                                 pixels.shape)
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shape = rng.choice(SHAPES)
    colour = COLOURS[main]
    count = rng.randint(1, 6)
    for _ in range(count):
        r = rng.randint(size // 12, size // 4)
        x, y = rng.randint(r, size - r), rng.randint(r, size - r)
        if shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif shape == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
        elif shape == "triangle":
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        elif shape == "stripes":
            width = rng.randint(3, 12)
            for offset in range(-size, size, width * 3):
                draw.line((offset + x, 0, offset + x + size, size), fill=colour, width=width)
            break
        elif shape == "rings":
            for radius in range(r, 4, -max(4, r // 4)):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                             outline=colour, width=3)
        else:
            for _ in range(40):
                dx, dy = rng.randint(0, size), rng.randint(0, size)
                draw.ellipse((dx - 4, dy - 4, dx + 4, dy + 4), fill=colour)
    # Like an Instagram caption: words, an emoji and hashtags (so keyword search has tags to
    # match); made from the scene alone, so the images stay those of the same seed.
    caption = (f"{main} {shape} on a {bg1} to {bg2} background {EMOJI[shape]} "
               f"#{main}{shape.capitalize()} #{bg1}")
    return image, caption


def _variant(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    size = image.size[0]
    if kind == "crop":
        keep = rng.uniform(0.8, 0.92)
        side = int(size * keep)
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        return image.crop((x, y, x + side, y + side)).resize((size, size))
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "colour shift":
        shifted = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
        return ImageEnhance.Brightness(shifted).enhance(rng.uniform(0.9, 1.1))
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.6)))
    if kind == "zoom":
        margin = int(size * 0.05)
        return image.crop((margin, margin, size - margin, size - margin)).resize((size, size))
    return image  # "recompress": same pixels, other JPEG quality below


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def generate_rows(images: int, size: int, seed: int, group_size: int, exact_duplicates: int):
    """Yield dataset rows: {image: {bytes, path}, caption, scene, variant}."""
    rng = random.Random(seed)
    made = scene = 0
    while made < images:
        base, caption = _draw_scene(rng, size)
        members = [("original", base)]
        for kind in rng.sample(VARIANTS, k=min(len(VARIANTS), rng.randint(1, group_size - 1))):
            members.append((kind, _variant(base, kind, rng)))
        for kind, picture in members:
            if made >= images:
                break
            data = _jpeg(picture, 95 if kind != "recompress" else rng.randint(60, 80))
            hue = colorsys.rgb_to_hsv(*[c / 255 for c in picture.resize((1, 1)).getpixel((0, 0))])
            yield {
                "image": {"bytes": data, "path": f"scene{scene:05d}_{made:06d}.jpg"},
                "caption": f"{caption} ({kind})",
                "scene": scene,
                "variant": kind,
                "mean_hue": round(hue[0], 3),
            }
            made += 1
            if exact_duplicates and made < images and rng.random() < exact_duplicates / images:
                yield {"image": {"bytes": data, "path": f"dup_{made:06d}.jpg"},
                       "caption": f"{caption} (exact copy)", "scene": scene,
                       "variant": "exact copy", "mean_hue": round(hue[0], 3)}
                made += 1
        scene += 1


SCHEMA = pa.schema([
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("caption", pa.string()),
    ("scene", pa.int64()),
    ("variant", pa.string()),
    ("mean_hue", pa.float64()),
])


def write_dataset(
    out: str | Path, images: int = 2000, shards: int = 2, size: int = 256, seed: int = 7,
    group_size: int = 5, exact_duplicates: int = 10, row_group_rows: int = 128,
    first_shard: int = 0,
) -> list[Path]:
    """Write ``shards`` parquet files under ``out/data``; returns their paths."""
    folder = Path(out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-images // shards)
    rows = generate_rows(images, size, seed, group_size, exact_duplicates)
    paths = []
    for number in range(first_shard, first_shard + shards):
        path = folder / f"train-{number:05d}-of-{first_shard + shards:05d}.parquet"
        with pq.ParquetWriter(path, SCHEMA) as writer:
            chunk: list[dict] = []
            written = 0
            for row in rows:
                chunk.append(row)
                written += 1
                if len(chunk) == row_group_rows:
                    writer.write_table(pa.Table.from_pylist(chunk, SCHEMA))
                    chunk = []
                if written == per_shard:
                    break
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, SCHEMA))
        paths.append(path)
    (Path(out) / "README.json").write_text(json.dumps(
        {"generator": "imgsearch_pipeline.sample_data", "images": images, "shards": shards,
         "size": size, "seed": seed}, indent=2))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write (shards go to OUT/data)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="side of each image in pixels")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--group-size", type=int, default=5, help="largest near-duplicate group")
    parser.add_argument("--first-shard", type=int, default=0,
                        help="number of the first shard (to add shards to a dataset)")
    args = parser.parse_args(argv)
    paths = write_dataset(args.out, args.images, args.shards, args.size, args.seed,
                          args.group_size, first_shard=args.first_shard)
    print(f"wrote {args.images} images in {len(paths)} shards under {Path(args.out) / 'data'}")


if __name__ == "__main__":
    main()
