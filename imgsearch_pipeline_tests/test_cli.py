"""The README's materialize command, run as a user would, in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_materialize_command_runs_whole_graph(sample_dataset, tmp_path):
    home = tmp_path / "var"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "IMGSEARCH_HOME": str(home),
        "IMGSEARCH_DATASET": str(sample_dataset),
        "IMGSEARCH_EMBEDDER": "color-texture",
    }
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "asset", "materialize", "--select", "*",
         "-m", "imgsearch_pipeline",
         "-c", str(PROJECT / "config" / "demo.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "RUN_SUCCESS" in completed.stderr
    report = json.loads((home / "tables" / "reports" / "recall_report.json").read_text())
    assert report["queries"] > 0 and report["indexed"] > report["queries"]
    assert (home / "tables" / "reports" / "latency.png").stat().st_size > 1000
    assert (home / "index" / "LIVE").read_text().strip() == report["index_version"]
