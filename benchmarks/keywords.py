"""Caption keyword search engines side by side: SQLite FTS5 (the standard library,
``benchmarks/fts5.py``) and tantivy (PyPI ``tantivy``, what ``core.keywords`` uses).

    .venv/bin/python -m benchmarks.keywords                  # 27,172 captions, 500 queries
    .venv/bin/python -m benchmarks.keywords --captions 5000  # a quick check
    .venv/bin/python -m benchmarks.keywords --json benchmarks/results/keywords.json
    .venv/bin/python -m benchmarks.keywords --hybrid  # also: vector-only vs hybrid p50

With ``--hybrid``, an index version of the project's embedded index (``FaissHnswIndex``
with its defaults, its captions in its tantivy index) is built over generated 768-d vectors,
and the API's own search path (``SearchService.search``, k=10, fusion window 100) is timed
per query in each mode, semantic (vector-only), keyword and hybrid, interleaved query by
query. The text embedding is excluded, as in the issue's goal (hybrid p50 within 2x of the
vector-only p50).

Both engines index the project's tokens (``core.keywords.caption_tokens``;
``benchmarks/fts5.py``'s ``write_keyword_index``/``KeywordIndex`` and ``core.keywords``'
``write_tantivy_index``/``TantivyKeywordIndex``), one
writing thread each, the same OR-of-tokens queries for the fusion window (top 100, each
hit's uuid read back). Build time includes the tokenizing; query latency is per query, after a warm-up.
The captions are generated to look like Instagram's (Zipf-distributed words, hashtags,
mentions, emoji, accents, a share of Japanese), seeded. The share of the CPU that other
processes used during each section is printed beside its figures: above 15% the machine was
loaded and the figures are not comparable with a quiet run's.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks.common import OthersCpuShare, percentiles_ms
from benchmarks.fts5 import KeywordIndex, write_keyword_index
from imgsearch_pipeline.core.keywords import TantivyKeywordIndex, write_tantivy_index

N_CAPTIONS = 27_172  # the prototype's indexed posts
N_QUERIES = 500
WINDOW = 100  # the fusion window: what hybrid search asks each side for
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "be", "zo", "an", "el", "or", "us",
             "ché", "ré", "ñu", "sø", "gü", "de", "fa", "po", "li", "ma", "ti"]
EMOJI = ["🌅", "☕", "🐶", "❤️", "🔥", "✨", "🌊", "📸", "🇫🇷", "👍🏽"]
JAPANESE = ["東京", "夜景", "桜", "紅葉", "ラーメン", "カフェ", "旅行", "写真", "海", "山"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))))
    return sorted(words)


def generated_captions(n: int, seed: int = 22) -> tuple[list[str], list[str], list[str]]:
    """(uuids, captions, vocabulary): 5 to 40 tokens a caption, Zipf-weighted words, ~15%
    hashtags, some mentions and emoji, one caption in twenty Japanese."""
    rng = random.Random(seed)
    words = vocabulary(8000, rng)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    captions = []
    for _ in range(n):
        if rng.random() < 0.05:
            captions.append("".join(rng.choices(JAPANESE, k=rng.randint(2, 6))) + " #" + rng.choice(JAPANESE))
            continue
        tokens = []
        for word in rng.choices(words, weights, k=rng.randint(5, 40)):
            roll = rng.random()
            tokens.append(f"#{word}" if roll < 0.15 else word.capitalize() if roll < 0.25 else word)
        tokens += rng.choices(EMOJI, k=rng.randint(0, 3))
        if rng.random() < 0.2:
            tokens.append(f"@{rng.choice(words)}.{rng.choice(words)}")
        captions.append(" ".join(tokens))
    return [f"{i:032x}" for i in range(n)], captions, words


def generated_queries(words: list[str], n: int, seed: int = 23) -> list[str]:
    """1 to 3 words each, from the common (first 200) and the rare words alike; one in five
    words a hashtag."""
    rng = random.Random(seed)
    queries = []
    for _ in range(n):
        picked = [rng.choice(words[:200]) if rng.random() < 0.5 else rng.choice(words)
                  for _ in range(rng.randint(1, 3))]
        queries.append(" ".join(f"#{w}" if rng.random() < 0.2 else w for w in picked))
    return queries


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_queries(search, queries: list[str], warmup: int = 50) -> tuple[dict, list[list[str]], float]:
    for query in queries[:warmup]:
        search(query)
    watch = OthersCpuShare()
    seconds, answers = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(search(query))
        seconds.append(time.perf_counter() - started)
    return percentiles_ms(seconds), answers, watch.share()


def fts5_section(ids, captions, queries, folder: Path) -> tuple[dict, list[list[str]], object]:
    path = folder / "keywords.sqlite"
    watch = OthersCpuShare()
    started = time.perf_counter()
    write_keyword_index(path, ids, captions)
    build_s = time.perf_counter() - started
    build_share = watch.share()
    index = KeywordIndex(path)

    def search(query: str) -> list[str]:
        return [hit.uuid for hit in index.search(query, WINDOW)]

    latency, answers, query_share = timed_queries(search, queries)
    return {"engine": f"sqlite-fts5 {sqlite3.sqlite_version}", "build_s": build_s,
            "bytes": folder_bytes(path), "query": latency,
            "others_cpu_share": {"build": build_share, "queries": query_share}}, answers, search


def tantivy_section(ids, captions, queries, folder: Path) -> tuple[dict, list[list[str]], object]:
    path = folder / "keywords.tar"
    watch = OthersCpuShare()
    started = time.perf_counter()
    write_tantivy_index(path, ids, captions)
    build_s = time.perf_counter() - started
    build_share = watch.share()
    index = TantivyKeywordIndex(path)

    def search(query: str) -> list[str]:
        return [hit.uuid for hit in index.search(query, WINDOW)]

    latency, answers, query_share = timed_queries(search, queries)
    return {"engine": f"tantivy {metadata.version('tantivy')}", "build_s": build_s,
            "bytes": folder_bytes(path), "query": latency,
            "others_cpu_share": {"build": build_share, "queries": query_share}}, answers, search


def hybrid_section(ids, captions, queries, rounds: int = 1) -> dict:
    """The API's own search path (``SearchService.search``) over a version of the project's
    embedded index (``FaissHnswIndex`` with its defaults, captions in its tantivy index): per
    query, vector-only (semantic), keyword-only and hybrid, k=10, timed interleaved query by
    query in a rotating order, so that each mode sees the same machine; one request at a
    time. ``rounds`` times over the queries: each round's ratio is given, to show its spread,
    and the figures are over all rounds."""
    import faiss

    from benchmarks.vectors import clustered_vectors
    from imgsearch_pipeline.api.service import SearchService, StoredVectors, Timings
    from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch
    from imgsearch_pipeline.settings import Settings

    vectors = clustered_vectors(len(ids), 768, seed=1)
    query_vectors = clustered_vectors(len(queries), 768, seed=2)
    folder = tempfile.mkdtemp(prefix="imgsearch-hybrid-")
    try:
        index = FaissHnswIndex(root=folder)
        step = 4096
        started = time.perf_counter()
        index.build("v1", 768, [IndexBatch(ids[i:i + step], vectors[i:i + step], captions[i:i + step])
                                for i in range(0, len(ids), step)])
        print(f"index version built in {time.perf_counter() - started:.0f} s")
        api = Settings.read({}).api
        service = SearchService(model=None, index=index, store=None, version="v1",
                                documents=len(ids), posts={},
                                vectors=StoredVectors(vectors, {u: i for i, u in enumerate(ids)}),
                                settings=api, num_candidates=index.search_depth("v1"))
        faiss.omp_set_num_threads(1)  # one query at a time on one thread, as the report

        def run(mode: str, i: int):
            return service.search(None if mode == "keyword" else query_vectors[i], k=10,
                                  num_candidates=None, search_filter=None, collapse=None,
                                  timings=Timings(), text=queries[i], mode=mode)

        modes = ("semantic", "keyword", "hybrid")
        for i in range(50):  # warm-up
            for mode in modes:
                run(mode, i)
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        ratios = []
        watch = OthersCpuShare()
        for _ in range(rounds):
            this: dict[str, list[float]] = {mode: [] for mode in modes}
            for i in range(len(queries)):
                for mode in modes[i % 3:] + modes[:i % 3]:
                    began = time.perf_counter()
                    run(mode, i)
                    this[mode].append(time.perf_counter() - began)
            ratios.append(float(np.median(this["hybrid"]) / np.median(this["semantic"])))
            for mode in modes:
                seconds[mode] += this[mode]
        share = watch.share()
        index.release("v1")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures = {mode: {"query": percentiles_ms(values)} for mode, values in seconds.items()}
    return {"path": "SearchService.search over FaissHnswIndex (sq8, m=32, ef_construction=200, "
                    f"depth {service.num_candidates}), k=10, fusion window {api.rrf_window}",
            "modes": figures, "others_cpu_share": share, "round_ratios": ratios,
            "hybrid_over_semantic_p50": figures["hybrid"]["query"]["p50_ms"]
            / figures["semantic"]["query"]["p50_ms"]}


def overlap_at(a: list[list[str]], b: list[list[str]], k: int) -> float:
    """Mean share of the top k the two engines agree on (their idf formulas differ)."""
    shares = [len(set(x[:k]) & set(y[:k])) / max(1, min(k, len(x), len(y)))
              for x, y in zip(a, b, strict=True)]
    return sum(shares) / len(shares)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=N_CAPTIONS)
    parser.add_argument("--queries", type=int, default=N_QUERIES)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--hybrid", action="store_true", help="also time vector-only and hybrid search")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times over the queries in the hybrid timing (each round's ratio is shown)")
    args = parser.parse_args(argv)
    ids, captions, words = generated_captions(args.captions)
    queries = generated_queries(words, args.queries)
    folder = Path(tempfile.mkdtemp(prefix="imgsearch-keywords-"))
    try:
        fts5, fts5_answers, _ = fts5_section(ids, captions, queries, folder)
        tantivy_result, tantivy_answers, _ = tantivy_section(ids, captions, queries, folder)
        hybrid = hybrid_section(ids, captions, queries, args.rounds) if args.hybrid else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results = {"captions": len(ids), "queries": len(queries), "window": WINDOW,
               "mean_hits": sum(map(len, fts5_answers)) / len(fts5_answers),
               "load_average_at_end": os.getloadavg(), "cores": os.cpu_count(),
               "engines": [fts5, tantivy_result],
               "top10_agreement": overlap_at(fts5_answers, tantivy_answers, 10)}
    print(f"{len(ids):,} captions, {len(queries)} queries, top {WINDOW}, "
          f"{results['mean_hits']:.0f} hits a query on average")
    print(f"{'engine':<20}{'build s':>9}{'MiB':>8}{'p50 ms':>9}{'p95 ms':>9}{'others CPU':>12}")
    for engine in results["engines"]:
        share = max(engine["others_cpu_share"].values())
        print(f"{engine['engine']:<20}{engine['build_s']:>9.2f}{engine['bytes'] / 2**20:>8.1f}"
              f"{engine['query']['p50_ms']:>9.2f}{engine['query']['p95_ms']:>9.2f}{share:>11.0%}")
    print(f"top-10 agreement between the engines: {results['top10_agreement']:.1%}")
    if hybrid:
        results["hybrid"] = hybrid
        print(f"search through the API's path ({len(ids):,} x 768, text embedding excluded, "
              f"others' CPU {hybrid['others_cpu_share']:.0%}): {hybrid['path']}")
        print(f"{'mode':<12}{'p50 ms':>9}{'p95 ms':>9}")
        for mode, figure in hybrid["modes"].items():
            print(f"{mode:<12}{figure['query']['p50_ms']:>9.3f}{figure['query']['p95_ms']:>9.3f}")
        print(f"hybrid p50 / vector-only p50: {hybrid['hybrid_over_semantic_p50']:.2f}x "
              f"(each round: {', '.join(f'{r:.2f}x' for r in hybrid['round_ratios'])})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
