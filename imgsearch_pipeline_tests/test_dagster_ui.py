"""The Dagster UI in headless Chromium: "Materialize all" launches one plain run, no picker."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import httpx
import pytest

from .reaper import server_process
from .test_browser import CHROMIUM, _free_port
from .test_browser import pytestmark as browser_marks

pytestmark = [*browser_marks, pytest.mark.slow]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, "the webserver exited"
        assert time.monotonic() < deadline, f"{url} did not answer"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


def test_materialize_all_launches_one_run_without_a_partition_picker(sample_dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "IMGSEARCH_HOME": str(tmp_path / "var"),
           "IMGSEARCH_DATASET": str(sample_dataset), "IMGSEARCH_EMBEDDER": "color-texture"}
    base = f"http://127.0.0.1:{port}"
    with server_process(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "imgsearch_pipeline.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as webserver:
        try:
            _wait_for(f"{base}/server_info", webserver)
            # The "Join the Dagster community" dialog opens a second after a first visit and would
            # cover the button; the UI's own mutation records it as seen on the instance, so it never opens.
            seen = httpx.post(f"{base}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30)
            assert seen.json()["data"]["setNuxSeen"] is True
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
                button = page.get_by_role("button", name="Materialize all")
                button.wait_for(state="visible", timeout=180_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('button')].some("
                    "b => b.textContent.includes('Materialize all') && !b.disabled)", timeout=120_000)
                button.click()
                with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                    deadline = time.monotonic() + 120
                    while not instance.get_runs() and time.monotonic() < deadline:
                        time.sleep(0.5)
                    runs = instance.get_runs()
                # no partition dialog was opened on the way
                assert page.get_by_text("partition", exact=False).count() == 0
                browser.close()
        finally:
            webserver.terminate()
            webserver.wait(timeout=30)

    assert len(runs) == 1
    run = runs[0]
    assert not any(tag.startswith("dagster/asset_partition") or tag == "dagster/partition"
                   for tag in run.tags)
    selected = {key.to_user_string() for key in run.asset_selection or ()}
    assert {"raw_posts", "posts", "image_objects", "image_embeddings", "search_index",
            "ground_truth", "recall_report", "live_index"} <= selected
