"""Section 4: images/s of the pipeline's embedding step against the bare model.

SigLIP is measured at the real google/siglip-base-patch16-512 architecture (random weights,
saved in the Hub's file layout under data/bench/ once and reused), on 512 px images, in both
CPU runtimes: torch fp32 (the reference) and OpenVINO at the precision this CPU gets (bf16
with avx512_bf16 or AMX, f32 otherwise), with the lowest cosine of its vectors to torch's and
one text query's latency in each.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

from imgsearch_pipeline.core.embedding import embed_in_batches
from imgsearch_pipeline.core.images import DEFAULT_MAX_PIXELS, load_rgb
from imgsearch_pipeline.resources.embedders import ColorTextureEmbedder, SiglipEmbedder
from imgsearch_pipeline.resources.embedders.siglip import load_siglip
from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.run_config import EmbeddingConfig
from imgsearch_pipeline_tests.tiny_models import (
    FULL_SIZE_TEXT,
    FULL_SIZE_VISION,
    HUB_FILES,
    save_full_size_siglip,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.90
FULL_SIZE_FOLDER = ROOT / "data" / "bench" / "siglip-base-patch16-512-random"


def full_size_siglip(folder: Path = FULL_SIZE_FOLDER) -> Path:
    """google/siglip-base-patch16-512's configuration with random weights (~0.8 GB), made
    once: written beside ``folder`` and renamed into place."""
    if all((folder / name).is_file() for name in HUB_FILES):
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_full_size_siglip(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def _store_images(dataset: Path, count: int, root: Path) -> tuple[LocalObjectStore, list[str]]:
    import pyarrow.parquet as pq

    store = LocalObjectStore(root=str(root))
    keys: list[str] = []
    for shard in sorted((dataset / "data").glob("*.parquet")):
        for record in pq.read_table(shard, columns=["image"]).column("image").to_pylist():
            if len(keys) == count:
                return store, keys
            key = f"images/{len(keys):06d}.jpg"
            store.put(key, record["bytes"], "image/jpeg")
            keys.append(key)
    return store, keys


def measure(model, store: LocalObjectStore, keys: list[str], batch_size: int, workers: int,
            repeat: int, model_in_prepare: bool = False, vectors: list | None = None) -> dict:
    """Pipeline path (get -> load_rgb -> prepare -> encode, overlapped) vs the bare model:
    encode alone on the same batches prepared beforehand, or, when the model's work is in
    ``prepare`` (the colour-texture descriptor), prepare + encode on decoded images in
    one thread. Best of ``repeat`` for each, in wall time and in this process's CPU time
    (all its threads): on a shared machine the wall figures follow the other jobs' load, the
    CPU seconds an image costs far less so. ``vectors`` receives the bare run's vectors."""
    images = [load_rgb(store.get(k), DEFAULT_MAX_PIXELS) for k in keys]
    chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    prepared = [model.prepare(chunk) for chunk in chunks]
    model.encode(model.prepare(chunks[0][:2]))  # warm-up: lazy init, allocator
    bare = pipeline = bare_cpu = pipeline_cpu = float("inf")
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        out = [model.encode(model.prepare(chunk) if model_in_prepare else batch)
               for chunk, batch in zip(chunks, prepared, strict=True)]
        bare = min(bare, time.perf_counter() - started)
        bare_cpu = min(bare_cpu, time.process_time() - cpu)
        started, cpu = time.perf_counter(), time.process_time()
        done = sum(len(b.ids) for b in embed_in_batches(
            keys, lambda k: load_rgb(store.get(k), DEFAULT_MAX_PIXELS), model.prepare,
            model.encode, batch_size, workers=workers))
        pipeline = min(pipeline, time.perf_counter() - started)
        pipeline_cpu = min(pipeline_cpu, time.process_time() - cpu)
        assert done == len(keys), f"embedded {done} of {len(keys)}"
    if vectors is not None:
        vectors.extend(out)
    # Preparation alone in this thread: what the loader threads must hide behind encode.
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model.prepare(images[i:i + batch_size])
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    for k in keys:
        load_rgb(store.get(k), DEFAULT_MAX_PIXELS)
    load_s = time.perf_counter() - started
    n = len(keys)
    return {"images": n, "batch_size": batch_size, "loader_workers": workers,
            "bare_images_per_s": n / bare, "pipeline_images_per_s": n / pipeline,
            "ratio": bare / pipeline, "loader_overhead_pct": (pipeline / bare - 1) * 100,
            "get_decode_ms_per_image": load_s / n * 1000,
            "prepare_ms_per_image": prepare_s / n * 1000, "bare_ms_per_image": bare / n * 1000,
            "bare_cpu_s_per_image": bare_cpu / n, "pipeline_cpu_s_per_image": pipeline_cpu / n,
            "cpu_ratio": bare_cpu / pipeline_cpu,
            "bare_is": "prepare + encode" if model_in_prepare else "encode"}


def text_query_ms(model, text: str, repeat: int = 5) -> float:
    """Median latency of one text query (tokenize + text tower), after one warm-up."""
    vector = model.encode_text([text])
    assert vector.shape == (1, model.dim)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        model.encode_text([text])
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


def run(dataset: Path, siglip_dataset: Path, quick: bool, log) -> dict:
    """``dataset`` for the colour-texture descriptor; ``siglip_dataset`` (512 px images) for
    SigLIP, a few dozen images: the full-size model does about one image a second on 2 cores."""
    workers = EmbeddingConfig().loader_workers
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-embed-") as tmp:
        store, keys = _store_images(dataset, 256 if quick else 768, Path(tmp) / "objects")
        colour = ColorTextureEmbedder()
        results["color-texture"] = {
            **measure(colour.load(), store, keys, colour.batch_size, workers, 2,
                      model_in_prepare=True),
            "note": "the descriptor is computed in prepare, so 'bare' is prepare + encode on "
                    f"decoded images in one thread; the pipeline runs prepare in {workers} "
                    "loader threads and can exceed it"}
        log(f"color-texture: {results['color-texture']['pipeline_images_per_s']:.0f} images/s")
        import numpy as np
        import torch

        started = time.perf_counter()
        folder = full_size_siglip()
        log(f"full-size SigLIP checkpoint at {folder} ({time.perf_counter() - started:.0f} s)")
        store512, keys512 = _store_images(siglip_dataset, 32 if quick else 64, Path(tmp) / "objects512")
        # Two batches at least, so that loading overlaps the model as in a real run.
        batch = 16 if quick else SiglipEmbedder().batch_size
        reference: list = []
        for name, runtime in (("siglip", "torch"), ("siglip-openvino", "openvino")):
            siglip = SiglipEmbedder(model_name=str(folder), device="cpu", runtime=runtime)
            started = time.perf_counter()
            model = siglip.load()  # openvino: converts once, then loads the cached IR
            load_s = time.perf_counter() - started
            text_ms = text_query_ms(model, "a photo of a cat on a beach at sunset")
            load_before = os.getloadavg()
            vectors: list = []
            measured = measure(model, store512, keys512, batch, workers, 1 if quick else 2,
                               vectors=vectors)
            vectors = np.concatenate(vectors)
            assert vectors.shape == (len(keys512), FULL_SIZE_VISION["hidden_size"])
            if runtime == "torch":
                reference = vectors
            results[name] = {**measured,
                             "model": "google/siglip-base-patch16-512 architecture, random weights",
                             "vision_config": FULL_SIZE_VISION, "text_config": FULL_SIZE_TEXT,
                             "dim": model.dim, "load_s": load_s, "text_query_ms": text_ms,
                             "device": "cpu", "runtime": runtime, "numerics": model.numerics,
                             "dtype": model.numerics.split("-")[-1],
                             "lowest_cosine_to_torch_fp32": float(
                                 np.einsum("ij,ij->i", vectors, reference).min()),
                             "torch_threads": torch.get_num_threads(),
                             "cores": len(os.sched_getaffinity(0)),
                             "load_average_before": load_before,
                             "load_average_after": os.getloadavg()}
            r = results[name]
            log(f"{name} ({r['numerics']}): pipeline {r['pipeline_images_per_s']:.2f} images/s, bare "
                f"{r['bare_images_per_s']:.2f} images/s ({r['ratio']:.1%}); CPU s per image "
                f"{r['pipeline_cpu_s_per_image']:.2f} vs {r['bare_cpu_s_per_image']:.2f} "
                f"({r['cpu_ratio']:.1%}); lowest cosine to torch fp32 "
                f"{r['lowest_cosine_to_torch_fp32']:.6f}; text query {text_ms:.1f} ms; load "
                f"{load_s:.1f} s; load average {load_before[0]:.1f} -> {r['load_average_after'][0]:.1f}")
            del model
            load_siglip.cache_clear()
    results["target"] = TARGET
    return results


def dataset(images: int, size: int) -> Path:
    """A generated image dataset under data/bench/, made once and reused."""
    import subprocess
    import sys

    folder = ROOT / "data" / "bench" / f"n{images}-s{size}"
    if not (folder / "README.json").is_file():
        subprocess.run([sys.executable, "-m", "imgsearch_pipeline.sample_data", str(folder),
                        "--images", str(images), "--shards", str(max(1, images // 5000)),
                        "--size", str(size)], check=True, cwd=ROOT)
    return folder


# -- choosing a model: each family's full-size architecture on the CPU -------------------------

MODELS_FOLDER = ROOT / "data" / "bench" / "models"
RESULTS = ROOT / "benchmarks" / "results"
QUERY = "a photo of a cat on a beach at sunset"


def _made_once(folder: Path, make) -> Path:
    """``make(partial)`` once, renamed into place (random full-size weights are big)."""
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    make(partial)
    partial.rename(folder)
    return folder


def model_families() -> list[dict]:
    """Each family's full-size architecture, random weights, in its Hub layout: how it is made
    and which embedder settings load it."""
    from imgsearch_pipeline_tests import tiny_models as tm

    def st_clip(sizes):
        return lambda folder: tm.save_old_st_clip(folder, sizes)

    def st_multilingual(folder: Path) -> None:
        tm.save_multilingual_text_model(folder, 512, tm.MULTILINGUAL_FULL_SIZE)

    return [
        {"name": "google/siglip-base-patch16-224", "embedder": "siglip",
         "make": lambda f: tm.save_full_size_siglip(f, 224)},
        {"name": "google/siglip-base-patch16-384", "embedder": "siglip",
         "make": lambda f: tm.save_full_size_siglip(f, 384)},
        {"name": "google/siglip-base-patch16-512", "embedder": "siglip",
         "make": lambda f: tm.save_full_size_siglip(f, 512)},
        {"name": "google/siglip2-base-patch16-224", "embedder": "siglip",
         "make": lambda f: tm.save_full_size_siglip2(f, 224)},
        {"name": "google/siglip2-base-patch16-512", "embedder": "siglip",
         "make": lambda f: tm.save_full_size_siglip2(f, 512)},
        {"name": "sentence-transformers/clip-ViT-B-32", "embedder": "sentence-transformers",
         "make": st_clip(tm.CLIP_B32)},
        {"name": "sentence-transformers/clip-ViT-L-14", "embedder": "sentence-transformers",
         "make": st_clip(tm.CLIP_L14)},
        {"name": "sentence-transformers/clip-ViT-B-32 + clip-ViT-B-32-multilingual-v1",
         "embedder": "sentence-transformers", "make": st_clip(tm.CLIP_B32),
         "folder": "clip-ViT-B-32", "text_model": "clip-ViT-B-32-multilingual-v1",
         "make_text": st_multilingual},
    ]


def measure_models(dataset: Path, images: int, log, only: set[str] | None = None,
                   repeat: int = 2) -> dict:
    """images/s through the pipeline and bare, and one text query's latency, of each family's
    full-size architecture through its embedder on the CPU (torch fp32 for all, so the
    figures compare; SigLIP's OpenVINO runtime is measured by ``run``)."""
    import torch

    from imgsearch_pipeline.resources.embedders import SentenceTransformerEmbedder
    from imgsearch_pipeline.resources.embedders.sentence_transformers import load_sentence_transformer

    workers = EmbeddingConfig().loader_workers
    results: dict = {"images": images, "repeat": repeat, "cores": len(os.sched_getaffinity(0)),
                     "torch_threads": torch.get_num_threads(), "models": {}}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-models-") as tmp:
        store, keys = _store_images(dataset, images, Path(tmp) / "objects")
        for family in model_families():
            name = family["name"]
            if only and name not in only:
                continue
            started = time.perf_counter()
            folder = _made_once(MODELS_FOLDER / family.get("folder", name.rsplit("/", 1)[-1]),
                                family["make"])
            text_folder = None
            if "text_model" in family:
                text_folder = _made_once(MODELS_FOLDER / family["text_model"], family["make_text"])
            made_s = time.perf_counter() - started
            if family["embedder"] == "siglip":
                embedder = SiglipEmbedder(model_name=str(folder), device="cpu", runtime="torch")
            else:
                embedder = SentenceTransformerEmbedder(
                    model_name=str(folder), text_model_name=str(text_folder or ""), device="cpu")
            started = time.perf_counter()
            model = embedder.load()
            load_s = time.perf_counter() - started
            parameters = sum(p.numel() for m in {id(x): x for x in _torch_modules(model)}.values()
                             for p in m.parameters())
            load_before = os.getloadavg()
            text_ms = text_query_ms(model, QUERY, repeat=5)
            measured = measure(model, store, keys, 4, workers, repeat)
            results["models"][name] = {
                **measured, "embedder": family["embedder"], "dim": model.dim,
                "numerics": model.numerics, "parameters_m": round(parameters / 1e6, 1),
                "text_query_ms": text_ms, "load_s": load_s, "made_s": made_s,
                "load_average_before": load_before, "load_average_after": os.getloadavg()}
            r = results["models"][name]
            log(f"{name}: pipeline {r['pipeline_images_per_s']:.2f} images/s, bare "
                f"{r['bare_images_per_s']:.2f}; text query {text_ms:.0f} ms; dim {model.dim}; "
                f"{r['parameters_m']} M parameters; load average {load_before[0]:.1f} -> "
                f"{r['load_average_after'][0]:.1f}")
            del model
            load_siglip.cache_clear()
            load_sentence_transformer.cache_clear()
    return results


def _torch_modules(model) -> list:
    """The torch modules a loaded model holds (to count its parameters)."""
    found = [getattr(model, attribute) for attribute in ("_model", "_image", "_text")
             if hasattr(model, attribute)]
    return found


def models_table(results: dict) -> str:
    """The README's table: wall-time figures, and the CPU seconds an image costs (this
    process's, all threads), which follow other jobs' load far less than wall time."""
    rows = ["| model | embedder | dim | parameters | images/s pipeline | images/s bare | "
            "CPU s per image (bare) | text query | load average |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        load = f"{r['load_average_before'][0]:.1f} → {r['load_average_after'][0]:.1f}"
        rows.append(f"| `{name}` | `{r['embedder']}` | {r['dim']} | {r['parameters_m']:.0f} M | "
                    f"{r['pipeline_images_per_s']:.2f} | {r['bare_images_per_s']:.2f} | "
                    f"{r['bare_cpu_s_per_image']:.2f} | {r['text_query_ms']:.0f} ms | {load} |")
    return "\n".join(rows)


def main() -> None:
    """``python -m benchmarks.embedding models [N] [name ...]``: the model table, written to
    benchmarks/results/embedding_models.json and .md."""
    import json
    import platform
    import sys

    args = sys.argv[1:]
    if not args or args[0] != "models":
        raise SystemExit(main.__doc__)
    images = int(args[1]) if len(args) > 1 else 8
    only = set(args[2:]) or None
    data = dataset(64, 512)
    results = measure_models(data, images, lambda line: print(line, flush=True), only)
    results["machine"] = {"processor": platform.processor(), "python": platform.python_version(),
                          "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "embedding_models.json"
    previous = json.loads(path.read_text()) if path.is_file() and only else {"models": {}}
    results["models"] = {**previous.get("models", {}), **results["models"]}
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    (RESULTS / "embedding_models.md").write_text(models_table(results) + "\n")
    print(models_table(results))


if __name__ == "__main__":
    main()
