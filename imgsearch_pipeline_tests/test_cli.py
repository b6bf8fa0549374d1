"""The README's materialize command, run as a user would, in a subprocess."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .compose import service_command
from .reaper import server_process

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_serve_listens_on_host_and_port(tmp_path):
    port = _free_port()
    env = {**os.environ, "IMGSEARCH_HOME": str(tmp_path / "var")}  # no index: /health says why
    # -o: never rebuild the environment from here, whatever the file times say.
    with server_process(["make", "-s", "-o", ".venv/bin/dagster", "serve", f"PORT={port}",
                         "HOST=127.0.0.1"], cwd=PROJECT, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, "make serve exited"
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "make serve did not listen on PORT"
                    time.sleep(0.5)
            assert response.status_code == 503 and "no live index" in response.json()["message"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_make_dev_takes_host_and_port():
    planned = subprocess.run(["make", "-n", "-o", ".venv/bin/dagster", "dev", "PORT=4321",
                              "HOST=127.0.0.2"], cwd=PROJECT, capture_output=True, text=True,
                             check=True).stdout
    assert "dagster dev" in planned and "--host 127.0.0.2 --port 4321" in planned


def test_minio_init_runs_the_ensure_bucket_command():
    """compose's one-shot runs the command line module (the bucket itself: test_s3_store.py);
    without the production settings it stops with one line that names what is missing."""
    command = service_command("minio-init", {"python": sys.executable})
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "IMGSEARCH_ES_URL" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]


def test_the_dg_cli_finds_the_project_and_launches_a_run(sample_dataset, tmp_path):
    """``[tool.dg]`` in pyproject.toml points ``dg`` at the definitions: ``dg list defs``
    sees every asset of ``imgsearch_pipeline.definitions`` and ``dg launch`` runs one."""
    from imgsearch_pipeline.definitions import defs

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "IMGSEARCH_HOME": str(tmp_path / "var"),
           "IMGSEARCH_DATASET": str(sample_dataset), "IMGSEARCH_EMBEDDER": "color-texture"}
    dg = str(Path(sys.executable).parent / "dg")
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=PROJECT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert keys == {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    launched = subprocess.run([dg, "launch", "--assets", "raw_posts"], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "RUN_SUCCESS" in launched.stderr + launched.stdout
