"""Section 5: wall time and peak memory per process of the sample graph as data grows."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgsearch_pipeline.core.layout import Layout

MEMORY_LIMIT_MB = 1536
ROOT = Path(__file__).resolve().parent.parent

# Runs the CLI a user runs (`make demo`) and reports the largest RSS of any process in
# its tree: RUSAGE_CHILDREN's ru_maxrss is the maximum over waited-for descendants.
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('BENCH', rc, time.perf_counter() - t,"
    " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def dataset(images: int, size: int) -> Path:
    """A generated dataset under data/bench/, made once and reused."""
    shards = max(1, images // 5000)
    folder = ROOT / "data" / "bench" / f"n{images}-s{size}"
    if not (folder / "README.json").is_file():
        subprocess.run([sys.executable, "-m", "imgsearch_pipeline.sample_data", str(folder),
                        "--images", str(images), "--shards", str(shards), "--size", str(size)],
                       check=True, cwd=ROOT)
    return folder


def materialize(data: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-graph-") as tmp:
        env = {**os.environ, "DAGSTER_HOME": tmp, "IMGSEARCH_HOME": f"{tmp}/var",
               "IMGSEARCH_DATASET": str(data), "IMGSEARCH_EMBEDDER": "color-texture",
               "IMGSEARCH_PROFILE": "embedded"}
        command = [sys.executable, "-c", _WRAPPER, str(Path(sys.executable).parent / "dagster"),
                   "asset", "materialize", "--select", "*", "-m", "imgsearch_pipeline",
                   "-c", str(ROOT / "config" / "demo.yaml")]
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"graph run gave no figures: {out.stderr[-2000:]}")
        _, rc, wall, maxrss_kb = line.split()
        if int(rc) != 0:
            raise RuntimeError(f"graph run failed (rc {rc}): {out.stderr[-3000:]}")
        report_path = Path(Layout.at(f"{tmp}/var").report("recall_report.json"))
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        return {"wall_s": float(wall), "peak_rss_mb": int(maxrss_kb) / 1024,
                "recall": report.get("mean_recall"), "indexed": report.get("indexed"),
                "queries": report.get("queries")}


def run(quick: bool, log) -> dict:
    sizes = [1000, 5000] if quick else [1000, 5000, 20000]
    rows = []
    for images in sizes:
        data = dataset(images, 256)
        started = time.perf_counter()
        result = materialize(data)
        rows.append({"images": images, "size_px": 256, **result})
        log(f"graph on {images:,} images: {result['wall_s']:.1f} s, peak RSS "
            f"{result['peak_rss_mb']:.0f} MB (total {time.perf_counter() - started:.0f} s)")
    big = {"images": 5000, "size_px": 512, **materialize(dataset(5000, 512))}
    log(f"graph on 5,000 images of 512 px: peak RSS {big['peak_rss_mb']:.0f} MB")
    return {"rows": rows, "large_images": big, "limit_mb": MEMORY_LIMIT_MB,
            "large_images_under_limit": big["peak_rss_mb"] < MEMORY_LIMIT_MB}
