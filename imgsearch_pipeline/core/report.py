"""The recall report as files a person can read: markdown, JSON, a latency picture and the
search-depth curve."""

import base64
import io

import numpy as np

from .depth import DepthSweep


def _figure():
    """A figure and axis of the report's size, drawn off screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 3.6), dpi=110)


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def latency_figure_png(ann_ms: np.ndarray, exact_ms: np.ndarray) -> bytes:
    """Two latency distributions on one log axis, as PNG bytes."""
    figure, axis = _figure()
    low = max(min(ann_ms.min(), exact_ms.min()), 1e-3)
    high = max(ann_ms.max(), exact_ms.max()) * 1.05
    bins = np.geomspace(low, high, 60)
    axis.hist(ann_ms, bins=bins, alpha=0.7, label=f"ANN (p50 {np.median(ann_ms):.3f} ms)")
    axis.hist(exact_ms, bins=bins, alpha=0.7, label=f"exact (p50 {np.median(exact_ms):.3f} ms)")
    axis.set_xscale("log")
    axis.set_xlabel("latency per query (ms, log scale)")
    axis.set_ylabel("queries")
    axis.set_title("Search latency, one query at a time")
    axis.legend()
    return _png(figure)


def depth_figure_png(sweep: DepthSweep) -> bytes:
    """Recall@k against ANN p50 latency for each depth tried, the target and the choice."""
    figure, axis = _figure()
    points = sorted(sweep.points, key=lambda p: p.depth)
    axis.plot([p.p50_ms for p in points], [p.mean_recall for p in points], marker="o")
    for p in points:
        axis.annotate(str(p.depth), (p.p50_ms, p.mean_recall), fontsize=7, xytext=(3, -9),
                      textcoords="offset points")
    axis.axhline(sweep.target, color="red", linestyle="--", linewidth=1,
                 label=f"target {sweep.target}")
    if sweep.chosen is not None:
        best = sweep.best
        axis.scatter([best.p50_ms], [best.mean_recall], s=90, facecolors="none",
                     edgecolors="green", label=f"chosen depth {best.depth}")
    axis.set_xlabel("ANN p50 latency per query (ms)")
    axis.set_ylabel(f"mean Recall@{sweep.k}")
    axis.set_title("Search depth: recall against latency (labels: num_candidates)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def depth_markdown(sweep: dict) -> str:
    """The sweep (``DepthSweep.as_dict()``) as a table, the chosen depth in bold."""
    rows = "\n".join(
        f"| {'**' + str(p['depth']) + '**' if p['depth'] == sweep['chosen'] else p['depth']} "
        f"| {p['mean_recall']:.4f} | {p['min_recall']:.4f} | {p['p50_ms']:.3f} | {p['p95_ms']:.3f} |"
        for p in sweep["points"])
    return (f"| num_candidates | mean Recall@{sweep['k']} | lowest | ANN p50 ms | ANN p95 ms |\n"
            f"|---|---|---|---|---|\n{rows}\n")


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def report_markdown(report: dict) -> str:
    ann, exact = report["ann_latency"], report["exact_latency"]
    rows = "\n".join(
        f"| {name} | {a:.3f} | {e:.3f} |"
        for name, a, e in (
            ("mean", ann["mean_ms"], exact["mean_ms"]),
            ("p50", ann["p50_ms"], exact["p50_ms"]),
            ("p95", ann["p95_ms"], exact["p95_ms"]),
            ("p99", ann["p99_ms"], exact["p99_ms"]),
        )
    )
    params = ", ".join(f"{k}={v}" for k, v in report["index_params"].items())
    timed = report.get("exact_timed", report["queries"])
    return f"""# Recall report

| | |
|---|---|
| Mean Recall@{report['k']} | **{report['mean_recall']:.4%}** |
| Lowest per-query recall | {report['min_recall']:.4f} ({report['queries_below_1']} queries below 1.0) |
| Queries (test split) | {report['queries']:,} |
| Indexed items (train split) | {report['indexed']:,} |
| Search depth (num_candidates) | **{report['num_candidates']}** ({report['depth_verdict']}) |
| Speed-up of ANN over exact (p50) | {report['speedup_p50']:.1f}x |
| Model | `{report['model_id']}` |
| Index | {report['index_version']} ({params}) |

## Latency per query (ms)

Recall over all {report['queries']:,} queries; ANN and exact search each timed one query at
a time on the same {timed:,} of them.

| statistic | ANN | exact |
|---|---|---|
{rows}

## Search depth

The smallest depth (HNSW efSearch / Elasticsearch num_candidates) reaching the target
mean Recall@{report['k']} {report['target']}, tried shallowest first up to
{report['depth_sweep']['cap']}; this version is searched at the chosen depth unless a request
asks for another.

{depth_markdown(report['depth_sweep'])}"""
