"""Run the benchmark suite and write benchmarks/results/{report.md, results.json, machine.json}.

    .venv/bin/python -m benchmarks.run            # full run (~40 min on 2 cores, growth 25)
    .venv/bin/python -m benchmarks.run --quick    # smaller sweep and fewer images
    .venv/bin/python -m benchmarks.run --only search,ground_truth
    .venv/bin/python -m benchmarks.run --strict   # refuse sections measured on a loaded machine

Each section records the share of the CPU other processes used in a few seconds before it
and over it, with the 1-minute load average (``common.load_now``); a share above
``common.OTHERS_SHARE_LIMIT`` flags the section as loaded in results.json and report.md, and
with ``--strict`` the section is refused: not run when the machine is loaded before it, its
figures discarded when it was loaded during it (the previous figures stay), and the run
exits with status 1.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import embedding, ground_truth, growth, indexes, search
from .common import (
    OTHERS_SHARE_LIMIT,
    PROTOTYPE,
    OthersCpuShare,
    load_now,
    machine,
    quiet_check,
    section_load,
    write_json,
)
from .report import report_markdown
from .vectors import neighbour_cosines, prototype_scale

SECTIONS = ("search", "indexes", "ground_truth", "embedding", "growth")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweep, fewer images")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--render", action="store_true",
                        help="only rewrite report.md from results.json and machine.json")
    parser.add_argument("--strict", action="store_true",
                        help=f"refuse a section when other processes use more than "
                             f"{OTHERS_SHARE_LIMIT:.0%} of the CPU before or during it")
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
    refused: list[str] = []

    def measure(section: str, fn: Callable[[], object]) -> bool:
        """Run one section between two load readings; False when --strict refused it."""
        start = quiet_check()
        if args.strict and start["loaded"]:
            log(f"{section}: refused, other processes used {start['others_cpu_share']:.0%} "
                "of the CPU before it (--strict)")
            refused.append(section)
            return False
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        watch = OthersCpuShare()
        figures = fn()
        load = section_load(start, load_now(watch.share()))
        if args.strict and load["loaded"]:
            log(f"{section}: figures discarded, other processes used "
                f"{load['end']['others_cpu_share']:.0%} of the CPU during it (--strict)")
            refused.append(section)
            return False
        results[section] = figures
        ran_at[section] = {"time": when, "load_average": [load["start"]["load_1min"]],
                           "load": load, "quick": args.quick}
        if load["loaded"]:
            log(f"{section}: measured on a LOADED machine (other processes used "
                f"{load['start']['others_cpu_share']:.0%} of the CPU before it, "
                f"{load['end']['others_cpu_share']:.0%} during it)")
        return True

    if {"search", "indexes", "ground_truth"} & set(only):
        corpus, queries, source = prototype_scale(Path(args.home))
        structure = neighbour_cosines(queries, corpus)
        results["vectors"] = {"source": source, "indexed": len(corpus), "queries": len(queries),
                              "dim": corpus.shape[1], **structure}
        log(f"{source}: top-1 cosine {structure['mean_top1_cosine']:.3f}, top-10 "
            f"{structure['mean_top10_cosine']:.3f}, random pairs "
            f"{structure['mean_random_pair_cosine']:.3f}")
        if "search" in only and measure(
                "search", lambda: search.run(corpus, queries, args.quick, log)):
            search.sweep_png(results["search"]["sweep"], out / "sweep.png")
        if "indexes" in only:
            measure("indexes", lambda: indexes.run(corpus, queries, args.quick, log))
        if "ground_truth" in only:
            measure("ground_truth", lambda: ground_truth.run(corpus, queries, args.quick, log))
    if "embedding" in only:
        measure("embedding", lambda: embedding.run(embedding.dataset(1000, 256),
                                                   embedding.dataset(100, 512), args.quick, log))
    if "growth" in only:
        measure("growth", lambda: growth.run(growth.QUICK_SIZES if args.quick else growth.SIZES,
                                             log, out))
    info["load_average_at_end"] = os.getloadavg()
    info["suite_seconds"] = time.perf_counter() - started
    write_json(info, out / "machine.json")
    write_json(results, out / "results.json")
    (out / "report.md").write_text(report_markdown(results, info, PROTOTYPE))
    log(f"report at {out / 'report.md'}")
    if refused:
        sys.exit(f"refused on a loaded machine (--strict): {', '.join(refused)}")


if __name__ == "__main__":
    main()
