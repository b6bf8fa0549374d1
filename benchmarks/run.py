"""Run the benchmark suite and write benchmarks/results/{report.md, results.json, machine.json}.

    .venv/bin/python -m benchmarks.run            # full run (~15 min on 2 cores)
    .venv/bin/python -m benchmarks.run --quick    # smaller sweep and fewer images
    .venv/bin/python -m benchmarks.run --only search,ground_truth
"""

import argparse
import json
import os
import time
from pathlib import Path

from . import embedding, ground_truth, growth, search
from .common import PROTOTYPE, machine, write_json
from .report import report_markdown
from .vectors import neighbour_cosines, prototype_scale

SECTIONS = ("search", "ground_truth", "embedding", "growth")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweep, fewer images")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--render", action="store_true",
                        help="only rewrite report.md from results.json and machine.json")
    parser.add_argument("--home", default=os.environ.get("IMGSEARCH_HOME", "var"),
                        help="pipeline home whose embeddings asset is used when big enough")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out = Path(args.out)
    if args.render:  # e.g. after editing the defaults the report compares against
        results = json.loads((out / "results.json").read_text())
        info = json.loads((out / "machine.json").read_text())
        (out / "report.md").write_text(report_markdown(results, info, PROTOTYPE))
        if "search" in results:
            search.sweep_png(results["search"]["sweep"], out / "sweep.png")
        return
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    info = machine()
    # Re-running some sections keeps the others' figures (each records when it ran).
    previous = out / "results.json"
    results: dict = json.loads(previous.read_text()) if previous.is_file() and \
        set(only) != set(SECTIONS) else {}
    results["quick"] = args.quick
    ran_at = results.setdefault("ran_at", {})

    def mark(section: str) -> None:
        ran_at[section] = {"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "load_average": os.getloadavg()}
    if {"search", "ground_truth"} & set(only):
        corpus, queries, source = prototype_scale(Path(args.home))
        structure = neighbour_cosines(queries, corpus)
        results["vectors"] = {"source": source, "indexed": len(corpus), "queries": len(queries),
                              "dim": corpus.shape[1], **structure}
        log(f"{source}: top-1 cosine {structure['mean_top1_cosine']:.3f}, top-10 "
            f"{structure['mean_top10_cosine']:.3f}, random pairs "
            f"{structure['mean_random_pair_cosine']:.3f}")
        if "search" in only:
            mark("search")
            results["search"] = search.run(corpus, queries, args.quick, log)
            search.sweep_png(results["search"]["sweep"], out / "sweep.png")
        if "ground_truth" in only:
            mark("ground_truth")
            results["ground_truth"] = ground_truth.run(corpus, queries, args.quick, log)
    if "embedding" in only:
        mark("embedding")
        results["embedding"] = embedding.run(embedding.dataset(1000, 256), embedding.dataset(100, 512),
                                             args.quick, log)
    if "growth" in only:
        mark("growth")
        results["growth"] = growth.run(growth.QUICK_SIZES if args.quick else growth.SIZES, log,
                                       out)
    info["load_average_at_end"] = os.getloadavg()
    info["suite_seconds"] = time.perf_counter() - started
    write_json(info, out / "machine.json")
    write_json(results, out / "results.json")
    (out / "report.md").write_text(report_markdown(results, info, PROTOTYPE))
    log(f"report at {out / 'report.md'}")


if __name__ == "__main__":
    main()
