"""Two runs that reach the embedding step at the same time never embed a post twice: the
step is in the pool ``embedding`` whose limit (1) comes from the project's dagster.yaml."""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .pipeline import materialize_all, pipeline_resources
from .reaper import server_process

PROJECT = Path(__file__).resolve().parents[1]


def embedded_rows(folder: Path) -> list[str]:
    """Every uuid row of every part, duplicates included."""
    return [u for part in sorted(folder.glob("part-*.parquet"))
            for u in pq.read_table(part, columns=["uuid"]).column("uuid").to_pylist()]


def prepared_home(sample_dataset, tmp_path) -> tuple[Path, Path, int]:
    """Posts and objects stored, nothing embedded yet."""
    home = tmp_path / "var"
    first = materialize_all(pipeline_resources(home, sample_dataset))
    folder = Path(first.output_for_node("image_embeddings").folder)
    shutil.rmtree(folder)
    return home, folder, first.output_for_node("posts").posts


def two_overlapping_runs(home: Path, dataset: Path, folder: Path, gates: Path,
                         dagster_home: Path | None) -> list[str]:
    """Both processes start and import; the first run is let go, the second once the first
    has written a part: mid-embedding. Returns what each printed and logged."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    gates = [gates / "first", gates / "second"]
    # Reaped when this ends: a run still waiting for its gate would otherwise wait forever.
    with contextlib.ExitStack() as reaped:
        processes = [reaped.enter_context(server_process(
            [sys.executable, "-m", "imgsearch_pipeline_tests.embed_run", str(home), str(dataset),
             str(gate)], env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)) for gate in gates]
        deadline = time.monotonic() + 240
        while not all(Path(f"{gate}.ready").exists() for gate in gates):
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
            time.sleep(0.05)
        Path(f"{gates[0]}.go").touch()
        while not list(folder.glob("part-*.parquet")):
            assert time.monotonic() < deadline and processes[0].poll() is None, "no part written"
            time.sleep(0.02)
        Path(f"{gates[1]}.go").touch()
        outputs = [p.communicate(timeout=400)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [o[-2000:] for o in outputs]
    return outputs


def embedded_now(output: str) -> int:
    return int(next(line for line in output.splitlines() if line.startswith("embedded_now="))
               .split("=")[1])


@pytest.mark.slow
def test_two_overlapping_runs_embed_each_post_once(sample_dataset, tmp_path):
    home, folder, posts = prepared_home(sample_dataset, tmp_path)
    # The project's instance settings (its pool limit), with storage in this test's folder.
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    text = (PROJECT / "dagster.yaml").read_text().replace("var/dagster", str(dagster_home))
    (dagster_home / "dagster.yaml").write_text(text)

    first, second = two_overlapping_runs(home, sample_dataset, folder, tmp_path, dagster_home)
    rows = embedded_rows(folder)
    assert len(rows) == len(set(rows)) == posts  # one embedding row per post
    # the second run's step waited for the pool, then found everything embedded
    assert "Step blocked by limit for pool embedding" in second
    assert (embedded_now(first), embedded_now(second)) == (posts, 0)


@pytest.mark.slow
def test_without_the_pool_limit_the_same_runs_embed_twice(sample_dataset, tmp_path):
    """The control: runs that share no instance (so no pool), where the test above would catch
    double work."""
    home, folder, posts = prepared_home(sample_dataset, tmp_path)
    first, second = two_overlapping_runs(home, sample_dataset, folder, tmp_path, None)
    assert embedded_now(first) == posts and embedded_now(second) > 0
    assert len(embedded_rows(folder)) > posts
