"""The recall report as files a person can read: markdown, JSON and a latency picture."""

import base64
import io

import numpy as np


def latency_figure_png(ann_ms: np.ndarray, exact_ms: np.ndarray) -> bytes:
    """Two latency distributions on one log axis, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=110)
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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


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
    return f"""# Recall report

| | |
|---|---|
| Mean Recall@{report['k']} | **{report['mean_recall']:.4%}** |
| Lowest per-query recall | {report['min_recall']:.4f} ({report['queries_below_1']} queries below 1.0) |
| Queries (test split) | {report['queries']:,} |
| Indexed items (train split) | {report['indexed']:,} |
| num_candidates | {report['num_candidates']} |
| Speed-up of ANN over exact (p50) | {report['speedup_p50']:.1f}x |
| Model | `{report['model_id']}` |
| Index | {report['index_version']} ({params}) |

## Latency per query (ms)

| statistic | ANN | exact |
|---|---|---|
{rows}
"""
