"""The benchmark report in markdown."""


def _f(value, spec: str = ".3f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _defaults() -> dict:
    from imgsearch_pipeline.resources.vector_index import DEFAULT_NUM_CANDIDATES, FaissHnswIndex

    index = FaissHnswIndex()
    return {"m": index.m, "ef_construction": index.ef_construction,
            "num_candidates": DEFAULT_NUM_CANDIDATES}


def _search(s: dict, proto: dict) -> list[str]:
    exact = s["exact"][0]
    lines = ["## 1. Search at prototype scale", "",
             "One query at a time through the pipeline's own code: `core.evaluation.exact_search`, "
             "`FaissHnswIndex.search` (the resource, its build and search), and "
             "`ElasticsearchIndex` when `IMGSEARCH_ES_URL` is set. Batched q/s: "
             "`core.knn.exact_knn` for exact, one faiss call over all queries for HNSW.", "",
             "| search | Recall@10 | p50 ms | p95 ms | p99 ms | batched q/s | p50 vs exact "
             "| p50 vs prototype ES | p50 vs prototype exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    chosen = s.get("chosen")
    picked = [exact] + ([chosen] if chosen else []) + [
        r for r in s["sweep"] if r["kind"] == "hnsw" and r["m"] == (chosen or {}).get("m")
        and r["ef_construction"] == (chosen or {}).get("ef_construction")
        and r is not chosen] + s.get("elasticsearch", [])
    for r in picked:
        name = r["name"] + (" **(chosen)**" if r is chosen else "")
        lines.append(
            f"| {name} | {r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {_f(r['batch_qps'], ',.0f')} | "
            f"{exact['p50_ms'] / r['p50_ms']:.1f}x faster | {proto['es_ms'] / r['p50_ms']:.0f}x faster | "
            f"{proto['exact_ms'] / r['p50_ms']:.0f}x faster |")
    lines.append(f"| prototype (reported) | {proto['recall_at_10']:.4f} | ES {proto['es_ms']} / "
                 f"exact {proto['exact_ms']} | | | | | | |")
    lines += ["", s["elasticsearch_note"], ""]
    return lines


def _sweep(s: dict, defaults: dict) -> list[str]:
    lines = ["## 2. Tuning sweep", "", "![recall vs latency](sweep.png)", "",
             "| config | num_candidates | Recall@10 | p50 ms | p99 ms | index MB | build s |",
             "|---|---|---|---|---|---|---|"]
    for r in s["sweep"]:
        kind = "SQ8 + exact re-rank" if r["kind"] == "hnsw-sq8" else "HNSW flat"
        mb = r["index_bytes"] / 2**20
        extra = f" (+{r['rerank_vectors_bytes'] / 2**20:.0f} MB float vectors to re-rank)" \
            if "rerank_vectors_bytes" in r else ""
        lines.append(f"| {kind} m={r['m']} efC={r['ef_construction']} | {r['num_candidates']} | "
                     f"{r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {mb:.0f}{extra} | "
                     f"{r['build_s']:.1f} |")
    chosen = s.get("chosen")
    lines.append("")
    if chosen:
        lines.append(
            f"**Smallest setting reaching Recall@10 ≥ 0.997**: m={chosen['m']}, "
            f"ef_construction={chosen['ef_construction']}, num_candidates="
            f"{chosen['num_candidates']} (recall {chosen['recall']:.4f}, p50 "
            f"{chosen['p50_ms']:.3f} ms). Per config, the smallest num_candidates reaching the "
            "target; of those, the lowest p50.")
        same = (defaults["m"], defaults["ef_construction"], defaults["num_candidates"]) == \
            (chosen["m"], chosen["ef_construction"], chosen["num_candidates"])
        lines.append("")
        lines.append(
            f"Pipeline defaults now: m={defaults['m']}, ef_construction="
            f"{defaults['ef_construction']} (resources/vector_index.py), num_candidates="
            f"{defaults['num_candidates']} (the depth for versions that recorded none; each "
            "new version chooses its own in recall_report) — "
            + ("taken from this sweep." if same else "**differ from this run's choice**."))
    else:
        lines.append("**No setting in the sweep reached Recall@10 ≥ 0.997.**")
    return lines + [""]


def _ground_truth(g: dict) -> list[str]:
    n, m, d = g["shape"]
    lines = ["## 3. Ground truth throughput", "",
             f"`core.knn.exact_knn` (k={g['k']}) over {n:,} × {m:,} × {d} against numpy's bare "
             f"`queries @ corpus.T`: {g['bare_matmul_s']:.3f} s, {g['bare_gflops']:.0f} GFLOP/s "
             "(best of runs).", "",
             "| queries per product | seconds | GFLOP/s | vs bare matmul | score buffer MB |",
             "|---|---|---|---|---|"]
    for r in g["rows"]:
        default = " (default)" if r["is_default"] else ""
        lines.append(f"| {r['batch_size']}{default} | {r['seconds']:.3f} | {r['gflops']:.0f} | "
                     f"{r['ratio_to_bare']:.2f}x | {r['score_buffer_mb']:.0f} |")
    verdict = "meets" if g["meets_target"] else "**misses**"
    lines += ["", f"Default score buffer ({g['default']['score_buffer_mb']:.0f} MB): "
              f"{g['default']['ratio_to_bare']:.2f}x the bare matmul — "
              f"{verdict} the ≤ {g['target_ratio']}x target.", ""]
    return lines


def _embedding(e: dict) -> list[str]:
    lines = ["## 4. Embedding throughput", "",
             "Pipeline: `core.embedding.embed_in_batches` with object store get → "
             "`core.images.load_rgb` → `model.prepare` (loader threads) → `model.encode`. "
             "Bare: the model alone on decoded images in one thread (see column *bare is*).", "",
             "| embedder | images | batch | pipeline img/s | bare img/s | bare is | pipeline/bare "
             "| get+decode ms/img | prepare ms/img | bare ms/img | CPU s/img pipeline / bare "
             "| CPU bare/pipeline |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("color-texture", "siglip"):
        r = e[name]
        lines.append(f"| {name} | {r['images']} | {r['batch_size']} | "
                     f"{r['pipeline_images_per_s']:.3g} | {r['bare_images_per_s']:.3g} | {r['bare_is']} | "
                     f"{r['ratio']:.1%} | {r['get_decode_ms_per_image']:.2f} | "
                     f"{r['prepare_ms_per_image']:.2f} | {r['bare_ms_per_image']:.2f} | "
                     f"{r['pipeline_cpu_s_per_image']:.3f} / {r['bare_cpu_s_per_image']:.3f} | "
                     f"{r['cpu_ratio']:.1%} |")
    s = e["siglip"]
    before, after = s["load_average_before"][0], s["load_average_after"][0]
    lines += ["", f"SigLIP: {s['model']} (vision {s['vision_config']}), {s['dim']}-d, "
              f"{s['dtype']} on {s['device']}, {s['torch_threads']} torch threads on {s['cores']} "
              f"cores; 1-minute load average {before:.1f} before and {after:.1f} after (a shared "
              f"machine). Pipeline/bare: {s['ratio']:.1%} in wall time, {s['cpu_ratio']:.1%} in "
              f"CPU seconds per image (target ≥ {e['target']:.0%}). Loading took "
              f"{s['load_s']:.1f} s; one text query {s['text_query_ms']:.0f} ms."]
    if max(before, after) > s["cores"]:
        lines.append(f"With the load average above the {s['cores']} cores, the wall figures "
                     "measure the other jobs as much as this code; the CPU seconds per image "
                     "are the steadier comparison.")
    lines += ["",
              f"Colour-texture: {e['color-texture']['note']}.", ""]
    return lines


def _growth(rows: list[dict]) -> list[str]:
    from .growth import table_lines

    return ["## 5. Growth: the graph from embeddings onward (`benchmarks.growth`)", "",
            *table_lines(rows), ""]


def report_markdown(results: dict, info: dict, proto: dict) -> str:
    defaults = _defaults()
    lines = ["# imgsearch benchmarks", "",
             f"Machine: {info['cpu_model']}, {info['usable_cores']} cores, {info['ram_gb']} GB; "
             f"python {info['python']}, numpy {info['numpy']} "
             f"({info['numpy_blas'].get('name')} {info['numpy_blas'].get('version')}), faiss "
             f"{info['faiss']}, torch {info['torch']}. Load average at start "
             f"{tuple(round(x, 1) for x in info['load_average_at_start'])}, at end "
             f"{tuple(round(x, 1) for x in info['load_average_at_end'])}. Last invocation: "
             f"{info['suite_seconds'] / 60:.1f} min{' (--quick)' if results['quick'] else ''}. "
             "Details in machine.json and results.json.", ""]
    if results.get("ran_at"):
        lines += ["Sections ran at (time, load average): " + "; ".join(
            f"{name} {r['time']} ({r['load_average'][0]:.1f})"
            for name, r in results["ran_at"].items()) + ". The machine is shared: the load "
            "average above 2 means other processes took CPU during that section.", ""]
    if "vectors" in results:
        v = results["vectors"]
        lines += [f"Vectors: {v['source']}; {v['indexed']:,} indexed, {v['queries']:,} held-out "
                  f"queries, {v['dim']}-d. Mean cosine of the nearest neighbour "
                  f"{v['mean_top1_cosine']:.3f}, of the 10th {v['mean_top10_cosine']:.3f}, of "
                  f"random pairs {v['mean_random_pair_cosine']:.3f}.", ""]
    if "search" in results:
        lines += _search(results["search"], proto) + _sweep(results["search"], defaults)
    if "ground_truth" in results:
        lines += _ground_truth(results["ground_truth"])
    if "embedding" in results:
        lines += _embedding(results["embedding"])
    if "growth" in results:
        lines += _growth(results["growth"])
    return "\n".join(lines) + "\n"
