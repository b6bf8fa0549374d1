"""Section 5, growth: the graph from embeddings onward at 100k, 300k and 1M vectors of 768-d.

    nice -n 19 .venv/bin/python -m benchmarks.growth --prepare --sizes 1000000   # inputs only
    .venv/bin/python -m benchmarks.growth --sizes 100000,300000,1000000          # the figures
    .venv/bin/python -m benchmarks.growth --sizes 20000                          # a quick check

Per size, a pipeline home is made whose inputs look as if the pipeline had embedded them:
the posts table (n train + 3,019 test uuids), the embeddings table of n + 3,019 generated
768-d vectors (``benchmarks.vectors.clustered_vectors``, the structure of real image
embeddings), and the values ``posts`` and ``image_embeddings`` that the assets hand on. The
inputs are generated once under ``data/bench/growth/`` and reused (their generation is not
timed). Then each step of the graph runs in a process of its own, through the command a
user runs (``dagster asset materialize --select <step>``, its asset checks included), with
the deployment's default resources (the embedded profile's default index, whatever it is):
``search_index`` (build), ``ground_truth`` (exact KNN), ``recall_report`` (depth sweep,
recall on every query, exact and ANN latency timed interleaved on a sample) and
``live_index`` (publish). Each
step's wall time and peak RSS (the largest process of its tree: RUSAGE_CHILDREN) are
recorded with the load average before and after, then the index size on disk and, from
the recall report, the recall, the chosen search depth and its p50. Each size is merged into
``results/growth.json`` and ``results/growth.md`` as it finishes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from imgsearch_pipeline.artifacts import EmbeddingSet, PostsTable
from imgsearch_pipeline.core.integrity import write_checked_table
from imgsearch_pipeline.core.layout import Layout, model_slug
from imgsearch_pipeline.core.tables import write_table_atomic
from imgsearch_pipeline.core.vectors import vectors_table
from imgsearch_pipeline.resources.vector_index import DEFAULT_NUM_CANDIDATES

from .common import OTHERS_SHARE_LIMIT, PROTOTYPE, OthersCpuShare, write_json
from .vectors import clustered_vectors

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
INPUTS = ROOT / "data" / "bench" / "growth"
SIZES = (100_000, 300_000, 1_000_000)
QUICK_SIZES = (20_000,)
# The graph from the embeddings onward, one process per step; the goal (issue 14) counts
# the first three: 1M vectors through them in under 30 minutes with every process < 6 GB.
STEPS = ("search_index", "ground_truth", "recall_report", "live_index")
TIMED = STEPS[:3]
GOAL_S, GOAL_MB = 30 * 60, 6 * 1024
MODEL_ID = "bench/clustered-768"
PART_ROWS = 50_000  # rows per embeddings part, as the pipeline writes them part by part

# Runs one command and prints its wall time and the largest RSS of any process in its
# tree: RUSAGE_CHILDREN's ru_maxrss is the maximum over waited-for descendants.
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('BENCH', rc, time.perf_counter() - t,"
    " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def inputs(n: int, queries: int, dim: int, log) -> Path:
    """The posts and embeddings tables of n train + ``queries`` test vectors, made once."""
    folder = INPUTS / f"n{n}-q{queries}-d{dim}"
    if (folder / "inputs.json").is_file():
        return folder
    started = time.perf_counter()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    embeddings = partial / "embeddings" / model_slug(MODEL_ID)
    embeddings.mkdir(parents=True)
    total = n + queries
    # Drawn onto a scratch memmap (1M x 768 is 3 GB), then written part by part.
    scratch = np.lib.format.open_memmap(partial / "scratch.npy", mode="w+", dtype=np.float32,
                                        shape=(total, dim))
    clustered_vectors(total, dim, chunk=PART_ROWS, out=scratch)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(total)]
    splits = ["test"] * queries + ["train"] * n  # held-out queries first, as section 1
    for number, start in enumerate(range(0, total, PART_ROWS)):
        stop = min(total, start + PART_ROWS)
        write_checked_table(vectors_table(ids[start:stop], splits[start:stop], MODEL_ID,
                                          scratch[start:stop]),
                            embeddings / f"part-{number:05d}.parquet")
    del scratch
    (partial / "scratch.npy").unlink()
    write_table_atomic(pa.table({"uuid": ids, "split": splits,
                                 "key": [f"bench/{u}" for u in ids]}), partial / "posts.parquet")
    description = {"indexed": n, "queries": queries, "dim": dim, "model_id": MODEL_ID,
                   "generator": "benchmarks.vectors.clustered_vectors (seed 0)",
                   "generated_s": round(time.perf_counter() - started, 1)}
    (partial / "inputs.json").write_text(json.dumps(description, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log(f"{n:,}: inputs generated in {description['generated_s']:.0f} s at {folder}")
    return folder


def _hand_on(values: str, name: str, value: object) -> None:
    """Store ``value`` as asset ``name``'s output through the deployment's IO manager type."""
    import dagster as dg

    manager = dg.FilesystemIOManager(base_dir=values).create_io_manager(
        dg.build_init_resource_context())
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey(name)), value)


def make_home(folder: Path, home: Path) -> Layout:
    """A pipeline home whose upstream values point at the cached input tables."""
    described = json.loads((folder / "inputs.json").read_text())
    n, queries, dim = described["indexed"], described["queries"], described["dim"]
    layout = Layout.at(home)
    posts = PostsTable(str(folder / "posts.parquet"), layout.rejects, n + queries, n, queries,
                       duplicates=0, rejected=0)
    embeddings = EmbeddingSet(str(folder / "embeddings" / model_slug(MODEL_ID)), MODEL_ID, dim,
                              n + queries, n, queries)
    _hand_on(layout.values, "posts", posts)
    _hand_on(layout.values, "image_embeddings", embeddings)
    return layout


def step(name: str, env: dict, log_path: Path, args: list[str] | None = None) -> dict:
    """One step (or the dagster command ``args``) in a fresh process: wall time, peak RSS,
    load average before and after."""
    before = os.getloadavg()
    args = args or ["asset", "materialize", "--select", name, "-m", "imgsearch_pipeline"]
    command = [sys.executable, "-c", _WRAPPER, str(Path(sys.executable).parent / "dagster"),
               *args]
    with log_path.open("a") as log_file:
        out = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=log_file, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"{name} gave no figures; log at {log_path}")
    _, rc, wall, maxrss_kb = line.split()
    if int(rc) != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{name} failed (rc {rc}); log at {log_path}:\n{tail}")
    return {"wall_s": float(wall), "peak_rss_mb": int(maxrss_kb) / 1024,
            "load_average_before": before, "load_average_after": os.getloadavg()}


def folder_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def measure(n: int, queries: int, dim: int, log) -> dict:
    folder = inputs(n, queries, dim, log)
    row: dict = {"indexed": n, "queries": queries, "dim": dim, "inputs": str(folder),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(),
                 "steps": {}}
    INPUTS.mkdir(parents=True, exist_ok=True)
    others = OthersCpuShare()  # after the inputs: their generation is not timed
    with tempfile.TemporaryDirectory(prefix=f"home-n{n}-", dir=INPUTS) as tmp:
        layout = make_home(folder, Path(tmp) / "var")
        env = {**os.environ, "DAGSTER_HOME": tmp, "IMGSEARCH_HOME": layout.root,
               "IMGSEARCH_DATASET": str(folder), "IMGSEARCH_PROFILE": "embedded",
               "IMGSEARCH_EMBEDDER": "color-texture"}  # nothing is embedded: no model loads
        log_path = INPUTS / f"growth-n{n}.log"  # the steps' own logs, beside the inputs
        log_path.unlink(missing_ok=True)
        for name in STEPS:
            result = row["steps"][name] = step(name, env, log_path)
            log(f"{n:,}: {name} {result['wall_s']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MiB"
                f" (load {result['load_average_before'][0]:.1f} -> "
                f"{result['load_average_after'][0]:.1f})")
            if name == "search_index":
                row["index_mb"] = folder_mb(layout.index)
        report = json.loads(Path(layout.report("recall_report.json")).read_text())
        from imgsearch_pipeline.resources.profiles import resources_for
        from imgsearch_pipeline.settings import Settings

        row["published"] = (resources_for(Settings.read(env))["vector_index"].live_version()
                            == report["index_version"])
    sweep = report["depth_sweep"]
    at_default = next((p for p in sweep["points"] if p["depth"] == DEFAULT_NUM_CANDIDATES),
                      None)
    row.update({
        "index_params": report["index_params"], "target": report["target"],
        "chosen_depth": sweep["chosen"], "num_candidates": report["num_candidates"],
        "recall": report["mean_recall"], "min_recall": report["min_recall"],
        "ann_p50_ms": report["ann_latency"]["p50_ms"],
        "ann_p95_ms": report["ann_latency"]["p95_ms"],
        "exact_p50_ms": report["exact_latency"]["p50_ms"],
        "exact_timed": report.get("exact_timed"), "sweep": sweep["points"],
        "at_depth_128": at_default,
        "graph_s": sum(row["steps"][s]["wall_s"] for s in TIMED),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in row["steps"].values()),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "others_cpu_share": others.share(),
    })
    row["within_goal"] = row["graph_s"] < GOAL_S and row["peak_rss_mb"] < GOAL_MB
    log(f"{n:,}: index + ground truth + report {row['graph_s']:.0f} s, largest process "
        f"{row['peak_rss_mb']:.0f} MiB, index {row['index_mb']:.0f} MiB; recall "
        f"{row['recall']:.4f} at depth {row['num_candidates']} (p50 {row['ann_p50_ms']:.2f} ms)")
    return row


def markdown(rows: list[dict]) -> str:
    return "\n".join(["# The graph as the data grows", "", *table_lines(rows)]) + "\n"


def table_lines(rows: list[dict]) -> list[str]:
    """The growth table and each size's depth sweep (growth.md and the suite's report)."""
    head = " | ".join(f"{s} s / MiB" for s in STEPS)
    lines = ["Generated clustered 768-d vectors (n train + test queries) in a pipeline home; each "
             "step `dagster asset materialize --select <step>` in a process of its own with the "
             f"default embedded index. Goal: {', '.join(TIMED)} together under "
             f"{GOAL_S // 60} min, every process under {GOAL_MB // 1024} GiB (at 1M). "
             "Load: 1-minute average before the first step / after the last, and the share of "
             f"the CPU other processes used meanwhile (above {OTHERS_SHARE_LIMIT:.0%} flags the "
             "row: its times are inflated).", "",
             f"| indexed | {head} | graph s | largest MiB | index MiB | depth | Recall@10 "
             f"| p50 ms | at depth {DEFAULT_NUM_CANDIDATES} | exact p50 ms | load | published "
             "| finished |",
             "|---|" + "---|" * (len(STEPS) + 11)]
    for r in sorted(rows, key=lambda r: r["indexed"]):
        steps = " | ".join(f"{r['steps'][s]['wall_s']:.0f} / {r['steps'][s]['peak_rss_mb']:.0f}"
                           for s in STEPS)
        at = r["at_depth_128"]
        default = f"{at['mean_recall']:.4f}" if at else "—"
        load = (f"{r['steps'][STEPS[0]]['load_average_before'][0]:.1f} / "
                f"{r['steps'][STEPS[-1]]['load_average_after'][0]:.1f}")
        if "others_cpu_share" in r:
            flag = " LOADED" if r["others_cpu_share"] > OTHERS_SHARE_LIMIT else ""
            load += f", others {r['others_cpu_share']:.0%}{flag}"
        lines.append(f"| {r['indexed']:,} | {steps} | {r['graph_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['index_mb']:.0f} | {r['chosen_depth'] or 'none'} "
                     f"| {r['recall']:.4f} | {r['ann_p50_ms']:.2f} | {default} | "
                     f"{r['exact_p50_ms']:.1f} | {load} | {r['published']} | {r['finished']} |")
    lines += ["", "Index parameters: " + "; ".join(
        f"{r['indexed']:,}: {r['index_params']}" for r in sorted(rows, key=lambda r: r['indexed'])),
        "", "Each depth sweep (depth: Recall@10 / p50 ms):", ""]
    for r in sorted(rows, key=lambda r: r["indexed"]):
        points = ", ".join(f"{p['depth']}: {p['mean_recall']:.4f} / {p['p50_ms']:.2f}"
                           for p in r["sweep"])
        lines.append(f"- {r['indexed']:,}: {points}")
    return lines


def record(row: dict, out: Path) -> list[dict]:
    """Merge one size into growth.json and growth.md (a re-run replaces that size)."""
    path = out / "growth.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    rows = [r for r in rows if r["indexed"] != row["indexed"]] + [row]
    write_json(rows, path)
    (out / "growth.md").write_text(markdown(rows))
    return rows


def run(sizes: tuple[int, ...], log, out: Path = RESULTS, queries: int = PROTOTYPE["queries"]
        ) -> list[dict]:
    rows: list[dict] = []
    for n in sizes:
        rows = record(measure(n, queries, PROTOTYPE["dim"], log), out)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                        help="indexed vectors, comma-separated")
    parser.add_argument("--queries", type=int, default=PROTOTYPE["queries"])
    parser.add_argument("--prepare", action="store_true", help="only generate the inputs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    if args.prepare:
        for n in sizes:
            log(f"{n:,}: inputs at {inputs(n, args.queries, PROTOTYPE['dim'], log)}")
        return
    run(sizes, log, Path(args.out), args.queries)


if __name__ == "__main__":
    main()
