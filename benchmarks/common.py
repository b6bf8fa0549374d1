"""Timing helpers, the prototype's figures and the machine's description."""

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imgsearch_pipeline.core.cpu_load import (  # noqa: F401  (re-exported)
    OTHERS_SHARE_LIMIT,
    OthersCpuShare,
    cpu_seconds,
    load_now,
    others_share,
    usable_cores,
)

# What the prototype reported (3,019 queries over 27,172 SigLIP vectors, 768-d).
PROTOTYPE = {"indexed": 27_172, "queries": 3_019, "dim": 768, "recall_at_10": 0.9970,
             "es_ms": 51.53, "exact_ms": 84.29}
RECALL_TARGET = 0.997
K = 10
# A section is measured on a loaded machine when other processes (anything but the benchmark
# and the processes it waited for) kept more than OTHERS_SHARE_LIMIT of the machine's CPU
# time busy: sampled for a few seconds before the section, and over the whole section. The
# measuring lives in core.cpu_load (the recall report records the same share while it times).
QUIET_SAMPLE_S = 3.0


def quiet_check(seconds: float = QUIET_SAMPLE_S) -> dict:
    """``load_now`` over a short idle sample: what other processes use before a section."""
    watch = OthersCpuShare()
    time.sleep(seconds)
    return load_now(watch.share())


def section_load(start: dict, end: dict) -> dict:
    """A section's load record: before it and over it, and loaded if either was."""
    return {"start": start, "end": end, "loaded": start["loaded"] or end["loaded"],
            "threshold": f"other processes above {OTHERS_SHARE_LIMIT:.0%} of the CPU time "
                         "before or during the section"}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(ms.mean())}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` runs in seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    import faiss
    import torch
    from threadpoolctl import threadpool_info

    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gb": _ram_gb(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": {k: blas.get(k) for k in ("name", "version", "openblas configuration")},
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "threadpools": [{k: p.get(k) for k in ("user_api", "internal_api", "version",
                                               "num_threads", "architecture")}
                        for p in threadpool_info()],
    }


def write_json(data: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
