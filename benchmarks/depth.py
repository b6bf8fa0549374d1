"""Section 6: the search depth an index version chooses for itself as the index grows.

    .venv/bin/python -m benchmarks.depth --sizes 100000
    nice -n 19 .venv/bin/python -m benchmarks.depth --sizes 1000000

Per size: n indexed + 3,019 held-out 768-d generated vectors (``benchmarks.vectors``,
drawn in chunks onto a memmap under ``data/bench/``), the ``FaissHnswIndex`` resource's own
build at its defaults (m=32, ef_construction=200), exact truth by ``core.knn.exact_knn``,
then the pipeline's own sweep (``core.depth``, as ``recall_report`` runs it: one query at
a time, shallowest depth first) against target Recall@10 >= 0.997. Each size is merged
into ``results/depth_growth.json`` and ``results/depth_growth.md`` as it finishes, with
the load average at its start and end (the machine is shared).
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from imgsearch_pipeline.core.depth import candidate_depths, measure_depth, sweep_depths
from imgsearch_pipeline.core.knn import exact_knn
from imgsearch_pipeline.resources.vector_index import (
    DEFAULT_NUM_CANDIDATES,
    FaissHnswIndex,
    IndexBatch,
)

from .common import PROTOTYPE, RECALL_TARGET, K, peak_rss_mb, write_json
from .vectors import clustered_vectors

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CAP = 1024
BATCH = 50_000


def vectors(n: int, queries: int, dim: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(corpus, queries) on a memmap, drawn once per size and reused."""
    path = folder / f"clustered-{n + queries}x{dim}.f32"
    ready = path.with_suffix(".done")
    if not ready.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                        shape=(n + queries, dim))
        clustered_vectors(n + queries, dim, chunk=BATCH, out=out)
        out.flush()
        del out
        ready.touch()
    data = np.load(path, mmap_mode="r")
    return data[queries:], np.ascontiguousarray(data[:queries])


def measure(n: int, queries: int, dim: int, work: Path, log) -> dict:
    row: dict = {"indexed": n, "queries": queries, "dim": dim, "k": K, "target": RECALL_TARGET,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "load_average_start": os.getloadavg(), "cores": os.cpu_count()}
    started = time.perf_counter()
    corpus, query_vectors = vectors(n, queries, dim, ROOT / "data" / "bench" / "vectors")
    row["vectors_s"] = time.perf_counter() - started
    log(f"{n:,}: vectors ready in {row['vectors_s']:.0f} s")

    started = time.perf_counter()
    ids = [f"{i:08d}" for i in range(n)]
    truth = [[ids[i] for i in block] for _, indices, _ in
             exact_knn(query_vectors, corpus, K, batch_size=128) for block in indices]
    row["truth_s"] = time.perf_counter() - started
    log(f"{n:,}: exact truth in {row['truth_s']:.0f} s")

    index = FaissHnswIndex(root=str(work / f"n{n}"))
    row.update(m=index.m, ef_construction=index.ef_construction)
    started = time.perf_counter()
    batches = (IndexBatch(ids[s:s + BATCH], np.ascontiguousarray(corpus[s:s + BATCH]))
               for s in range(0, n, BATCH))
    index.build("bench", dim, batches)
    row["build_s"] = time.perf_counter() - started
    row["load_average_after_build"] = os.getloadavg()
    log(f"{n:,}: built in {row['build_s']:.0f} s, peak RSS {peak_rss_mb():.0f} MB")
    del corpus

    def search(vector: np.ndarray, depth: int) -> list[str]:
        return [h.uuid for h in index.search(vector, K, depth, version="bench")]

    started = time.perf_counter()
    sweep = sweep_depths(lambda d: measure_depth(search, query_vectors, truth, K, d, warmup=20),
                         candidate_depths(K, CAP), K, RECALL_TARGET)
    row["sweep_s"] = time.perf_counter() - started
    row["sweep"] = sweep.as_dict()
    row["chosen"] = sweep.chosen
    best = sweep.best
    row.update(recall=best.mean_recall, p50_ms=best.p50_ms, p95_ms=best.p95_ms)
    default = next((p for p in sweep.points if p.depth == DEFAULT_NUM_CANDIDATES), None)
    if default is not None:
        row["at_default"] = {"depth": default.depth, "recall": default.mean_recall,
                             "p50_ms": default.p50_ms}
    row["peak_rss_mb"] = peak_rss_mb()
    row["load_average_end"] = os.getloadavg()
    row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    log(f"{n:,}: {sweep.verdict()} (sweep {row['sweep_s']:.0f} s; load "
        f"{row['load_average_start'][0]:.1f} -> {row['load_average_end'][0]:.1f})")
    index.delete_version("bench")
    shutil.rmtree(index.root, ignore_errors=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Search depth as the index grows", "",
             f"Target mean Recall@{K} >= {RECALL_TARGET}; generated clustered 768-d vectors; "
             "FaissHnswIndex at its defaults; one query at a time on a shared 2-core machine "
             "(load average: 1-minute figure at start / after build / at end).", "",
             "| indexed | queries | chosen depth | Recall@10 | p50 ms | p95 ms | at depth 128 "
             "| build s | peak RSS MB | load avg | finished |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["indexed"]):
        at = r.get("at_default")
        default = f"{at['recall']:.4f} at {at['p50_ms']:.2f} ms" if at else "not measured"
        load = " / ".join(f"{r[k][0]:.1f}" for k in ("load_average_start",
                                                   "load_average_after_build",
                                                   "load_average_end"))
        lines.append(f"| {r['indexed']:,} | {r['queries']:,} | {r['chosen'] or 'none'} | "
                     f"{r['recall']:.4f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {default} | "
                     f"{r['build_s']:.0f} | {r['peak_rss_mb']:.0f} | {load} | {r['finished']} |")
    lines += ["", "Each sweep (depth: Recall@10, p50 ms):", ""]
    for r in sorted(rows, key=lambda r: r["indexed"]):
        points = ", ".join(f"{p['depth']}: {p['mean_recall']:.4f} / {p['p50_ms']:.2f}"
                           for p in r["sweep"]["points"])
        lines.append(f"- {r['indexed']:,}: {points}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="indexed vectors, comma-separated")
    parser.add_argument("--queries", type=int, default=PROTOTYPE["queries"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    work = ROOT / "data" / "bench" / "depth-index"
    for n in (int(s) for s in args.sizes.split(",") if s):
        row = measure(n, args.queries, PROTOTYPE["dim"], work, log)
        path = out / "depth_growth.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        rows = [r for r in rows if r["indexed"] != n] + [row]
        write_json(rows, path)
        (out / "depth_growth.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
