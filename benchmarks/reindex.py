"""Section 6, re-indexing that costs what changed: three re-indexes of one home side by side in
one run, and the exact ground truth's peak memory as the corpus grows.

    nice -n 19 .venv/bin/python -m benchmarks.growth --prepare --sizes 100000,300000,1000000
    .venv/bin/python -m benchmarks.reindex --size 1000000 --memory-sizes 100000,300000,1000000
    .venv/bin/python -m benchmarks.reindex --size 20000 --memory-sizes 20000    # a quick check

On a home whose posts and embeddings look as if the pipeline had embedded them (the growth
section's generated inputs, filed under the default embedder's model id so that
``image_embeddings`` finds every post embedded and loads no model), the scheduled job runs
three times, each as ``dagster job execute -j reindex`` (embeddings, index, ground truth,
report, publish and their checks, in the run's process, as a user runs it):

1. a full build (no live version yet);
2. a re-index with nothing new (the goal: under 60 s at 1M, mostly Dagster's start-up);
3. a re-index after 1% new posts and 0.1% removed (the goal: at most 10% of the full build,
   the gate passing by itself): the new posts' vectors are existing train vectors moved a
   little (new pictures like the ones already there), the removed are spread over the set.

Then ``ground_truth`` alone, on a fresh home per size, gives its peak RSS (the goal: within
20% from 100k to 1M). Each figure is the wall time and the largest RSS of the run's process
tree, with the share of the CPU other processes used meanwhile (above 15% flags it).
"""

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgsearch_pipeline.artifacts import EmbeddingSet, PostsTable
from imgsearch_pipeline.core.integrity import part_manifest_path, write_checked_table
from imgsearch_pipeline.core.layout import Layout, model_slug
from imgsearch_pipeline.core.tables import read_table, write_table_atomic
from imgsearch_pipeline.core.vectors import vectors_table

from .common import OTHERS_SHARE_LIMIT, PROTOTYPE, OthersCpuShare, write_json
from .growth import INPUTS, MODEL_ID, _hand_on, inputs, step

RESULTS = Path(__file__).parent / "results"
# The default embedder's model id: the given vectors are filed under it (nothing is embedded).
FILED_AS = "color-texture-v1"
ADDED_SHARE, REMOVED_SHARE = 0.01, 0.001
NOTHING_NEW_GOAL_S, INCREMENTAL_GOAL, MEMORY_GOAL = 60.0, 0.10, 0.20


def hand_on(layout: Layout, posts_path: str, train: int, queries: int, dim: int) -> None:
    """The values ``posts`` and ``image_embeddings`` hand on, pointing at these tables."""
    total = train + queries
    _hand_on(layout.values, "posts", PostsTable(posts_path, layout.rejects, total, train,
                                                queries, duplicates=0, rejected=0))
    _hand_on(layout.values, "image_embeddings",
             EmbeddingSet(layout.embeddings(FILED_AS), FILED_AS, dim, total, train, queries))


def file_parts(source: Path, layout: Layout) -> Path:
    """Links in the home's embeddings folder to each given part and its manifest."""
    folder = Path(layout.embeddings(FILED_AS))
    folder.mkdir(parents=True, exist_ok=True)
    for part in sorted(source.glob("part-*.parquet")):
        (folder / part.name).symlink_to(part)
        manifest = Path(part_manifest_path(str(part)))
        (folder / manifest.name).symlink_to(manifest)
    return folder


def changed_inputs(folder: Path, out: Path, embeddings: Path, added: int, removed: int,
                   seed: int = 1) -> tuple[str, int]:
    """The inputs after ``added`` new train posts and ``removed`` removed ones: a posts table
    (under ``out``) without the removed and with the new, and one new part in the home's
    ``embeddings`` folder. Returns (posts path, train count)."""
    posts = read_table(str(folder / "posts.parquet"))
    train_rows = np.flatnonzero(pc.equal(posts.column("split"), "train").to_numpy(
        zero_copy_only=False))
    gone_rows = train_rows[np.linspace(0, len(train_rows) - 1, removed).round().astype(int)]
    keep = np.ones(posts.num_rows, dtype=bool)
    keep[gone_rows] = False
    rng = np.random.default_rng(seed)
    sources = rng.choice(train_rows, size=added, replace=False)
    source_ids = set(posts.column("uuid").take(pa.array(sources)).to_pylist())
    vectors = {}
    for part in sorted((folder / "embeddings" / model_slug(MODEL_ID)).glob("part-*.parquet")):
        table = read_table(str(part), columns=["uuid", "vector"])
        ids = table.column("uuid").to_pylist()
        rows = [i for i, u in enumerate(ids) if u in source_ids]
        if rows:
            block = np.stack(table.column("vector").take(pa.array(rows)).to_numpy(
                zero_copy_only=False))
            vectors.update(zip([ids[i] for i in rows], block, strict=True))
    moved = np.stack([vectors[u] for u in sorted(vectors)]).astype(np.float32)
    moved += rng.normal(scale=0.3 / np.sqrt(moved.shape[1]), size=moved.shape).astype(np.float32)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    new_ids = [str(uuid.UUID(int=2**64 + i)) for i in range(added)]
    write_checked_table(vectors_table(new_ids, ["train"] * added, FILED_AS, moved),
                        str(embeddings / "part-zz-added.parquet"))
    new_posts = pa.table({"uuid": new_ids, "split": ["train"] * added,
                          "key": [f"bench/{u}" for u in new_ids]})
    changed = pa.concat_tables([posts.filter(pa.array(keep)).select(["uuid", "split", "key"]),
                                new_posts])
    out.mkdir(parents=True, exist_ok=True)
    write_table_atomic(changed, str(out / "posts.parquet"))
    return str(out / "posts.parquet"), len(train_rows) - removed + added


def _run(what: str, env: dict, log_path: Path, log) -> dict:
    others = OthersCpuShare()
    result = step("reindex", env, log_path,
                  ["job", "execute", "-j", "reindex", "-m", "imgsearch_pipeline"])
    result["others_cpu_share"] = round(others.share(), 3)
    log(f"{what}: {result['wall_s']:.1f} s, largest process {result['peak_rss_mb']:.0f} MiB, "
        f"others' CPU {result['others_cpu_share']:.0%}")
    return result


def _last_decision(log_path: Path) -> str:
    """The search_index step's last 'search index: <action>: <why>' line."""
    lines = [line for line in log_path.read_text().splitlines() if "search index: " in line]
    return lines[-1].split("search index: ", 1)[1].strip() if lines else "(not found)"


def reindexes(n: int, queries: int, dim: int, log) -> dict:
    folder = inputs(n, queries, dim, log)
    added, removed = round(n * ADDED_SHARE), round(n * REMOVED_SHARE)
    row: dict = {"indexed": n, "queries": queries, "dim": dim, "added": added,
                 "removed": removed, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix=f"reindex-n{n}-", dir=INPUTS) as tmp:
        layout = Layout.at(Path(tmp) / "var")
        embeddings = file_parts(folder / "embeddings" / model_slug(MODEL_ID), layout)
        hand_on(layout, str(folder / "posts.parquet"), n, queries, dim)
        env = {**os.environ, "DAGSTER_HOME": tmp, "IMGSEARCH_HOME": layout.root,
               "IMGSEARCH_DATASET": str(folder), "IMGSEARCH_PROFILE": "embedded",
               "IMGSEARCH_EMBEDDER": "color-texture"}
        log_path = INPUTS / f"reindex-n{n}.log"
        log_path.unlink(missing_ok=True)
        row["full"] = _run("full build", env, log_path, log)
        row["full"]["decision"] = _last_decision(log_path)
        report = json.loads(Path(layout.report("recall_report.json")).read_text())
        row["full"]["recall"], row["full"]["version"] = report["mean_recall"], report["index_version"]
        row["nothing_new"] = _run("nothing new", env, log_path, log)
        row["nothing_new"]["decision"] = _last_decision(log_path)
        log(f"  {row['nothing_new']['decision']}")
        started = time.perf_counter()
        posts_path, train = changed_inputs(folder, Path(tmp) / "changed", embeddings, added,
                                           removed)
        hand_on(layout, posts_path, train, queries, dim)
        log(f"changed inputs (+{added:,} -{removed:,}) made in "
            f"{time.perf_counter() - started:.0f} s (not timed)")
        row["incremental"] = _run("1% new, 0.1% removed", env, log_path, log)
        row["incremental"]["decision"] = _last_decision(log_path)
        log(f"  {row['incremental']['decision']}")
        report = json.loads(Path(layout.report("recall_report.json")).read_text())
        live = (Path(layout.index) / "LIVE").read_text().strip()
        row["incremental"].update({"recall": report["mean_recall"],
                                   "version": report["index_version"],
                                   "published": live == report["index_version"]})
    row["incremental_share"] = row["incremental"]["wall_s"] / row["full"]["wall_s"]
    row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return row


def ground_truth_memory(n: int, queries: int, dim: int, log) -> dict:
    folder = inputs(n, queries, dim, log)
    with tempfile.TemporaryDirectory(prefix=f"gt-n{n}-", dir=INPUTS) as tmp:
        layout = Layout.at(Path(tmp) / "var")
        file_parts(folder / "embeddings" / model_slug(MODEL_ID), layout)
        hand_on(layout, str(folder / "posts.parquet"), n, queries, dim)
        env = {**os.environ, "DAGSTER_HOME": tmp, "IMGSEARCH_HOME": layout.root,
               "IMGSEARCH_PROFILE": "embedded", "IMGSEARCH_EMBEDDER": "color-texture"}
        log_path = INPUTS / f"ground-truth-n{n}.log"
        log_path.unlink(missing_ok=True)
        others = OthersCpuShare()
        result = step("ground_truth", env, log_path)
    result.update({"indexed": n, "others_cpu_share": round(others.share(), 3)})
    log(f"ground truth at {n:,}: {result['wall_s']:.0f} s, peak RSS "
        f"{result['peak_rss_mb']:.0f} MiB, others' CPU {result['others_cpu_share']:.0%}")
    return result


def _load(result: dict) -> str:
    share = result["others_cpu_share"]
    return f"{share:.0%}" + (" LOADED" if share > OTHERS_SHARE_LIMIT else "")


def markdown(row: dict, memory: list[dict]) -> str:
    full, none, inc = row["full"], row["nothing_new"], row["incremental"]
    lines = [
        "# Re-indexing that costs what changed", "",
        f"Generated clustered {row['dim']}-d vectors, {row['indexed']:,} train + "
        f"{row['queries']:,} test, one home; each run is `dagster job execute -j reindex` "
        "(the vectors are given: `image_embeddings` finds every post embedded). Wall time and the "
        "largest RSS of the run's process tree; others' CPU = the share of the machine's CPU "
        f"that other processes used during the run (above {OTHERS_SHARE_LIMIT:.0%}: LOADED). "
        f"Run {row['started']} to {row['finished']} on {row['cores']} cores.", "",
        "| run | wall s | largest MiB | others' CPU | what search_index decided |",
        "|---|---|---|---|---|",
        f"| full build | {full['wall_s']:.1f} | {full['peak_rss_mb']:.0f} | {_load(full)} | "
        f"{full['decision']} |",
        f"| nothing new | {none['wall_s']:.1f} | {none['peak_rss_mb']:.0f} | {_load(none)} | "
        f"{none['decision']} |",
        f"| +{row['added']:,} new, -{row['removed']:,} removed | {inc['wall_s']:.1f} | "
        f"{inc['peak_rss_mb']:.0f} | {_load(inc)} | {inc['decision']} |", "",
        f"- Nothing new: {none['wall_s']:.1f} s (goal < {NOTHING_NEW_GOAL_S:.0f} s: "
        f"{'met' if none['wall_s'] < NOTHING_NEW_GOAL_S else 'NOT met'}).",
        f"- Incremental: {row['incremental_share']:.1%} of the full build (goal <= "
        f"{INCREMENTAL_GOAL:.0%}: {'met' if row['incremental_share'] <= INCREMENTAL_GOAL else 'NOT met'}); "
        f"Recall@10 {inc['recall']:.4f} (full build {full['recall']:.4f}); gate passed and "
        f"published: {inc['published']}.",
    ]
    if memory:
        low, high = min(m["peak_rss_mb"] for m in memory), max(m["peak_rss_mb"] for m in memory)
        lines += ["", "## Ground truth's peak memory as the corpus grows", "",
                  "`dagster asset materialize --select ground_truth` on a fresh home (a full "
                  "computation), default `buffer_mb`.", "",
                  "| corpus | wall s | peak RSS MiB | others' CPU |", "|---|---|---|---|"]
        lines += [f"| {m['indexed']:,} | {m['wall_s']:.0f} | {m['peak_rss_mb']:.0f} | {_load(m)} |"
                  for m in sorted(memory, key=lambda m: m["indexed"])]
        spread = high / low - 1
        lines += ["", f"Largest over smallest: +{spread:.0%} (goal within {MEMORY_GOAL:.0%}: "
                      f"{'met' if spread <= MEMORY_GOAL else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--memory-sizes", default="100000,300000,1000000")
    parser.add_argument("--queries", type=int, default=PROTOTYPE["queries"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    dim = PROTOTYPE["dim"]
    row = reindexes(args.size, args.queries, dim, log)
    memory = [ground_truth_memory(n, args.queries, dim, log)
              for n in (int(s) for s in args.memory_sizes.split(",") if s)]
    out = Path(args.out)
    name = "reindex" if args.size >= 1_000_000 else f"reindex-n{args.size}"
    write_json({"reindex": row, "ground_truth_memory": memory}, out / f"{name}.json")
    (out / f"{name}.md").write_text(markdown(row, memory))
    print(markdown(row, memory))


if __name__ == "__main__":
    main()
