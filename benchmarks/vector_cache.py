"""The API's stored vectors: memory-mapped from the local cache file vs read into the heap.

    .venv/bin/python -m benchmarks.vector_cache --rows 100000
    .venv/bin/python -m benchmarks.vector_cache --rows 20000 --dim 64   # quick

Writes ``--rows`` x ``--dim`` vectors as checked parquet parts in a temporary folder, then
in a fresh process each loads them into the heap (``read_vectors``, as of this change:
one preallocated matrix; the API's loader before it also held the parts' blocks) or maps
them as the API does now (``mapped_vectors``: the cache file written once, then mapped),
and prints the resident set size it gained and the seconds it took. A mapped
file's pages count in RSS only once read, and are shared with every process mapping it.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PART_ROWS = 10_000


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        line = next(row for row in handle if row.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _load(mode: str, folder: str, cache: str) -> dict:
    from imgsearch_pipeline.core.vectors import (
        embedding_parts,
        mapped_vectors,
        parts_fingerprint,
        read_vectors,
    )

    parts = embedding_parts(folder)[0]
    read_vectors(folder, parts=parts[:1])  # libraries loaded before the measurement
    before = _rss_mb()
    started = time.perf_counter()
    if mode == "heap":
        ids, matrix = read_vectors(folder, parts=parts)
    else:
        ids, matrix = mapped_vectors(parts, cache, parts_fingerprint(parts, "v", "m"))
    seconds = time.perf_counter() - started
    return {"mode": mode, "rows": len(ids), "rss_gain_mb": round(_rss_mb() - before, 1),
            "seconds": round(seconds, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_load(*args.child)))
        return

    from imgsearch_pipeline.core.integrity import write_checked_table
    from imgsearch_pipeline.core.vectors import vectors_table

    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
        folder, cache = Path(tmp, "parts"), Path(tmp, "cache")
        rng = np.random.default_rng(0)
        for start in range(0, args.rows, PART_ROWS):
            count = min(PART_ROWS, args.rows - start)
            ids = [f"{i:08d}" for i in range(start, start + count)]
            vectors = rng.standard_normal((count, args.dim), dtype=np.float32)
            write_checked_table(vectors_table(ids, ["train"] * count, "m", vectors),
                                folder / f"part-{start:08d}.parquet")
        print(f"{args.rows:,} x {args.dim} float32 vectors "
              f"({args.rows * args.dim * 4 / 2**20:,.0f} MB) in {-(-args.rows // PART_ROWS)} parts")
        # heap; mapped, first (writes the cache file); mapped again (maps it only)
        for mode in ("heap", "mapped", "mapped"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.vector_cache", "--child",
                                  mode, str(folder), str(cache)],
                                 check=True, capture_output=True, text=True).stdout
            print(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
