"""The benchmark report in markdown."""



def _f(value, spec: str = ".3f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _defaults() -> dict:
    from imgsearch_pipeline.resources.vector_index import DEFAULT_NUM_CANDIDATES, FaissHnswIndex

    index = FaissHnswIndex()
    return {"m": index.m, "ef_construction": index.ef_construction,
            "num_candidates": DEFAULT_NUM_CANDIDATES}


def _load_note(results: dict, section: str) -> list[str]:
    """The section's load record beside its figures: quiet, or flagged as loaded."""
    load = results.get("ran_at", {}).get(section, {}).get("load")
    if load is None:
        return ["Load: not recorded for this section (measured before load checks).", ""]
    start, end = load["start"], load["end"]
    figures = (f"1-min load average {start['load_1min']:.2f} at start, {end['load_1min']:.2f} "
               f"at end, on {start['cores']} cores")
    if results["ran_at"][section].get("quick"):
        figures += "; a --quick run (smaller sets)"
    if "others_cpu_share" in start:
        figures += (f"; other processes used {start['others_cpu_share']:.0%} of the CPU before "
                    f"the section and {end['others_cpu_share']:.0%} during it")
    if load["loaded"]:
        return [f"**⚠ LOADED MACHINE** ({load['threshold']}): {figures}. These figures include "
                "other processes' CPU use; re-run on a quiet machine before quoting them.", ""]
    return [f"Quiet machine: {figures}.", ""]


def _indexes(x: dict) -> list[str]:
    lines = ["## 2b. Embedded index candidates at equal recall", "",
             f"{x['indexed']:,} vectors, {x['queries']:,} queries, m={x['m']}, "
             f"ef_construction={x['ef_construction']}; one query at a time on one thread; per "
             f"candidate the smallest search depth (`core.depth` sweep) reaching mean "
             f"Recall@10 ≥ {x['target']}. Memory: what the process holds for the index; coded "
             "faiss graphs also map their float vectors from disk for the re-rank (page cache, "
             "not the process's own memory). 1M: linear projection per vector.", "",
             "| index | depth | Recall@10 | p50 ms | p95 ms | build s | index MB | at 1M GB "
             "| mmap re-rank MB (at 1M GB) | filters + versions |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    choice = x["choice"]
    for r in x["rows"]:
        name = r["name"] + (" **(chosen)**" if r["name"] == choice["chosen"] else "")
        recall = f"{r['recall']:.4f}" + ("" if r["reached"] else " (target missed)")
        mapped = (f"{r['mapped_bytes'] / 2**20:.0f} ({r['projected_1m_mapped_bytes'] / 1e9:.2f})"
                  if r["mapped_bytes"] else "–")
        lines.append(f"| {name} | {r['depth']} | {recall} | {r['p50_ms']:.3f} | "
                     f"{r['p95_ms']:.3f} | {r['build_s']:.1f} | {r['index_bytes'] / 2**20:.1f} | "
                     f"{r['projected_1m_bytes'] / 1e9:.2f} | {mapped} | "
                     f"{'yes' if r['filters_and_versions'] else 'no (bare library)'} |")
    lines += ["", f"Chosen: the lowest p50 among candidates reaching the target that keep "
              f"filters and versioned files and hold ≤ {x['memory_share_of_flat']:.0%} of the "
              f"flat graph's memory: **{choice['chosen']}**; fastest of all reaching the "
              f"target: {choice['fastest_overall']}. The project's default "
              f"(`FaissHnswIndex.codes` = {choice['default_codes']!r}) "
              + ("is this choice." if choice["default_matches"] else
                 "**differs from this run's choice**."), ""]
    return lines


def _search(s: dict, proto: dict) -> list[str]:
    exact = s["exact"][0]
    lines = ["## 1. Search at prototype scale", "",
             "One query at a time through the pipeline's own code: `core.evaluation.exact_search`, "
             "`FaissHnswIndex.search` (the resource, its build and search), and "
             "`ElasticsearchIndex` when `IMGSEARCH_ES_URL` is set. Batched q/s: "
             "`core.knn.exact_knn` for exact, one faiss call over all queries for a flat HNSW graph "
             "(a coded graph re-ranks each query: no batch figure).", "",
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
             "Index MB: the graph file the process loads; a coded graph (sq8, fp16) also maps "
             "its float vectors (`vectors.f32`, 4 bytes x dim per vector) from disk.", "",
             "| config | num_candidates | Recall@10 | p50 ms | p99 ms | index MB | build s |",
             "|---|---|---|---|---|---|---|"]
    for r in s["sweep"]:
        kind = r["name"].split(" m=")[0]
        mb = r["index_bytes"] / 2**20
        lines.append(f"| {kind} m={r['m']} efC={r['ef_construction']} | {r['num_candidates']} | "
                     f"{r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {mb:.0f} | "
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
    for name in ("color-texture", "siglip", "siglip-openvino"):
        if name not in e:  # results from before the OpenVINO runtime
            continue
        r = e[name]
        lines.append(f"| {name} | {r['images']} | {r['batch_size']} | "
                     f"{r['pipeline_images_per_s']:.3g} | {r['bare_images_per_s']:.3g} | {r['bare_is']} | "
                     f"{r['ratio']:.1%} | {r['get_decode_ms_per_image']:.2f} | "
                     f"{r['prepare_ms_per_image']:.2f} | {r['bare_ms_per_image']:.2f} | "
                     f"{r['pipeline_cpu_s_per_image']:.3f} / {r['bare_cpu_s_per_image']:.3f} | "
                     f"{r['cpu_ratio']:.1%} |")
    s = e["siglip"]
    lines += ["", f"SigLIP: {s['model']} (vision {s['vision_config']}), {s['dim']}-d, "
              f"{s['dtype']} on {s['device']}, {s['torch_threads']} torch threads on {s['cores']} "
              f"cores. Pipeline/bare: {s['ratio']:.1%} in wall time, {s['cpu_ratio']:.1%} in "
              f"CPU seconds per image (target ≥ {e['target']:.0%}). Loading took "
              f"{s['load_s']:.1f} s; one text query {s['text_query_ms']:.0f} ms."]
    if "siglip-openvino" in e:
        lines += ["", "SigLIP on the CPU by runtime (same images, batch and loader; cosine of each "
                  "image's vector to torch fp32's; text: median of 5 single queries after a warm-up):",
                  "", "| runtime | bare img/s | pipeline img/s | pipeline/bare | lowest cosine to torch "
                  "fp32 | text query ms | load s |", "|---|---|---|---|---|---|---|"]
        for name in ("siglip", "siglip-openvino"):
            r = e[name]
            lines.append(f"| {r.get('numerics', 'torch-fp32')} | {r['bare_images_per_s']:.3g} | "
                         f"{r['pipeline_images_per_s']:.3g} | {r['ratio']:.1%} | "
                         f"{r.get('lowest_cosine_to_torch_fp32', 1.0):.6f} | "
                         f"{r['text_query_ms']:.1f} | {r['load_s']:.1f} |")
        torch_rate = e["siglip"]["bare_images_per_s"]
        lines.append(f"\nOpenVINO: {e['siglip-openvino']['bare_images_per_s'] / torch_rate:.2f}x "
                     "torch fp32's bare rate; its load time includes the one-time conversion when "
                     "the IR cache had no copy.")
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
        lines += ["Sections ran at (time, 1-min load average at start): " + "; ".join(
            f"{name} {r['time']} ({r['load_average'][0]:.1f})"
            + (" LOADED" if r.get("load", {}).get("loaded") else "")
            for name, r in results["ran_at"].items()) + ". Each section's figures carry its "
            "load record (start and end) and a flag when the machine was loaded.", ""]
    if "vectors" in results:
        v = results["vectors"]
        lines += [f"Vectors: {v['source']}; {v['indexed']:,} indexed, {v['queries']:,} held-out "
                  f"queries, {v['dim']}-d. Mean cosine of the nearest neighbour "
                  f"{v['mean_top1_cosine']:.3f}, of the 10th {v['mean_top10_cosine']:.3f}, of "
                  f"random pairs {v['mean_random_pair_cosine']:.3f}.", ""]
    sections = {"search": lambda r: _search(r, proto) + _sweep(r, defaults),
                "indexes": _indexes, "ground_truth": _ground_truth, "embedding": _embedding,
                "growth": _growth}
    for name, render in sections.items():
        if name in results:
            body = render(results[name])
            lines += body[:2] + _load_note(results, name) + body[2:]  # under the heading
    return "\n".join(lines) + "\n"
