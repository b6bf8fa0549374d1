"""The recall report: its value (``RecallReport``) and the files a person reads (markdown,
JSON, a per-query table, a latency picture and the search-depth curve)."""

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .cpu_load import OTHERS_SHARE_LIMIT
from .depth import DepthSweep
from .evaluation import EvaluationQueries, QueryResult, summarise


@dataclass(frozen=True)
class RecallReport:
    """Recall@k of an index version against the exact answers, at the search depth its
    sweep chose, and the ANN and exact latencies, timed interleaved in one step, with the load
    they were timed under. The fields are recall_report.json's keys, in its order."""

    k: int
    queries: int
    mean_recall: float
    min_recall: float
    queries_below_1: int
    ann_latency: dict[str, float]  # mean_ms, p50_ms, p95_ms, p99_ms
    exact_latency: dict[str, float]
    ann_timed: int
    exact_timed: int
    speedup_p50: float
    num_candidates: int  # the search depth judged (chosen, or the best when none reached)
    target: float
    depth_sweep: dict  # DepthSweep.as_dict()
    depth_verdict: str
    indexed: int
    ground_truth_corpus: int
    index_version: str
    index_params: dict
    model_id: str
    # While the latencies were timed: other processes' share of the machine's CPU time
    # (others_cpu_share), the 1-minute load average (load_1min), the usable cores and whether
    # that counts as loaded (core.cpu_load.load_now); empty when not measured.
    timing_load: dict = field(default_factory=dict)

    @classmethod
    def of(cls, results: Sequence[QueryResult], sweep: DepthSweep, *, indexed: int,
           ground_truth_corpus: int, index_version: str, index_params: dict,
           model_id: str, timing_load: dict | None = None) -> "RecallReport":
        """The report of ``results`` (the pass at the sweep's best depth)."""
        return cls(**summarise(results, sweep.k), num_candidates=sweep.best.depth,
                   target=sweep.target, depth_sweep=sweep.as_dict(),
                   depth_verdict=sweep.verdict(), indexed=indexed,
                   ground_truth_corpus=ground_truth_corpus, index_version=index_version,
                   index_params=dict(index_params), model_id=model_id,
                   timing_load=dict(timing_load or {}))

    def timed_under(self) -> str:
        """The load the latencies were timed under, in words."""
        load = self.timing_load
        if not load:
            return "load not measured"
        verdict = (f"LOADED: above {OTHERS_SHARE_LIMIT:.0%}, the latencies are slower than on "
                   "a quiet machine" if load["loaded"] else "quiet")
        return (f"other processes used {load['others_cpu_share']:.1%} of the CPU time of "
                f"{load['cores']} cores, 1-minute load {load['load_1min']:.2f} ({verdict})")

    def as_dict(self) -> dict:
        """The JSON form (recall_report.json)."""
        return asdict(self)

    def figures(self) -> dict[str, float | int | str]:
        """The figures recorded with each materialization (the UI plots them across runs)."""
        ann, exact = self.ann_latency, self.exact_latency
        return {
            "mean_recall": round(self.mean_recall, 4),
            "min_recall": round(self.min_recall, 4),
            "k": self.k,
            "num_candidates": self.num_candidates,
            "target": float(self.target),
            "search_depth": self.depth_verdict,
            "queries": self.queries,
            "indexed": self.indexed,
            "ann_p50_ms": round(ann["p50_ms"], 3),
            "ann_p95_ms": round(ann["p95_ms"], 3),
            "exact_p50_ms": round(exact["p50_ms"], 3),
            "exact_p95_ms": round(exact["p95_ms"], 3),
            "exact_timed": self.exact_timed,
            "speedup_p50": round(self.speedup_p50, 2),
            "index_version": self.index_version,
            "others_cpu_share": round(float(self.timing_load.get("others_cpu_share",
                                                                 float("nan"))), 3),
            "timed_under": self.timed_under(),
        }

    def summary_line(self, where: str) -> str:
        return (f"mean recall@{self.k} = {self.mean_recall:.4f} over {self.queries} queries; "
                f"report at {where}")


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


def report_markdown(report: RecallReport) -> str:
    ann, exact = report.ann_latency, report.exact_latency
    rows = "\n".join(
        f"| {name} | {a:.3f} | {e:.3f} |"
        for name, a, e in (
            ("mean", ann["mean_ms"], exact["mean_ms"]),
            ("p50", ann["p50_ms"], exact["p50_ms"]),
            ("p95", ann["p95_ms"], exact["p95_ms"]),
            ("p99", ann["p99_ms"], exact["p99_ms"]),
        )
    )
    params = ", ".join(f"{k}={v}" for k, v in report.index_params.items())
    return f"""# Recall report

| | |
|---|---|
| Mean Recall@{report.k} | **{report.mean_recall:.4%}** |
| Lowest per-query recall | {report.min_recall:.4f} ({report.queries_below_1} queries below 1.0) |
| Queries (test split) | {report.queries:,} |
| Indexed items (train split) | {report.indexed:,} |
| Search depth (num_candidates) | **{report.num_candidates}** ({report.depth_verdict}) |
| Speed-up of ANN over exact (p50) | {report.speedup_p50:.1f}x |
| Model | `{report.model_id}` |
| Index | {report.index_version} ({params}) |

## Latency per query (ms)

Recall over all {report.queries:,} queries; ANN (at the chosen depth) and exact search
timed one query at a time on the same {report.exact_timed:,} of them, interleaved query by
query in one step (ANN then exact, exact then ANN on the next), so that both saw the same
machine: {report.timed_under()}.

| statistic | ANN | exact |
|---|---|---|
{rows}

## Search depth

The smallest depth (HNSW efSearch / Elasticsearch num_candidates) reaching the target
mean Recall@{report.k} {report.target}, tried shallowest first up to
{report.depth_sweep['cap']}; this version is searched at the chosen depth unless a request
asks for another.

{depth_markdown(report.depth_sweep)}"""


def per_query_table(query_ids: Sequence[str], expected: Sequence[Sequence[str]],
                    results: Sequence[QueryResult]) -> pa.Table:
    """recall_per_query.parquet: each query's recall, its timings (ms, null where not
    timed), and the exact and ANN answers."""
    def ms(seconds: list[float | None]) -> pa.Array:
        return pa.array([None if s is None else s * 1000 for s in seconds], pa.float64())

    return pa.table({
        "query": list(query_ids),
        "recall": [r.recall for r in results],
        "ann_ms": ms([r.ann_s for r in results]),
        "exact_ms": ms([r.exact_s for r in results]),
        "exact": [list(e) for e in expected],
        "ann": [r.found for r in results],
    })


@dataclass(frozen=True)
class ReportDocuments:
    """The report's files by name (written in this order) and its markdown for the UI,
    pictures inline (the UI cannot follow the files' relative links)."""

    files: dict[str, bytes]
    ui_markdown: str


def report_documents(report: RecallReport, queries: EvaluationQueries,
                     results: Sequence[QueryResult], sweep: DepthSweep) -> ReportDocuments:
    """recall_per_query.parquet, recall_report.json, the pictures (when there are queries)
    and recall_report.md, which links them."""
    markdown = report_markdown(report)
    per_query = io.BytesIO()
    pq.write_table(per_query_table(queries.ids, queries.expected, results), per_query)
    files = {"recall_per_query.parquet": per_query.getvalue(),
             "recall_report.json": json.dumps(report.as_dict(), indent=2).encode()}
    pictures = ""
    if results:
        latency = latency_figure_png(
            np.array([r.ann_s * 1000 for r in results if r.ann_s is not None]),
            np.array([r.exact_s * 1000 for r in results if r.exact_s is not None]))
        files |= {"latency.png": latency, "search_depth.png": depth_figure_png(sweep)}
        pictures = (png_markdown(latency, "latency") + "\n\n"
                    + png_markdown(files["search_depth.png"], "search depth"))
    files["recall_report.md"] = (
        markdown + "\n![latency](latency.png)\n"
        + ("\n![search depth](search_depth.png)\n" if "search_depth.png" in files else "")
    ).encode()
    return ReportDocuments(files, markdown + pictures)
