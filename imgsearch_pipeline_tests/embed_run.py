"""One run of the embedding step in a process of its own, on a slow object store (so that two
of them overlap): ``python -m imgsearch_pipeline_tests.embed_run <home> <dataset> <gate>``.

Once imported it creates ``<gate>.ready`` and waits for ``<gate>.go`` (the test decides when
each run starts); it uses the instance of ``DAGSTER_HOME`` (if set) and prints ``embedded_now=<n>``."""

import os
import sys
import time
from pathlib import Path

import dagster as dg

from imgsearch_pipeline.resources.object_store import LocalObjectStore

from .pipeline import all_assets, pipeline_resources


class SlowStore(LocalObjectStore):
    """Reads take a while, so that the embedding step lasts long enough to be overlapped."""

    delay_s: float = 0.05  # ~15 s for 300 images: the second run starts within it

    def get(self, key: str) -> bytes:
        time.sleep(self.delay_s)
        return super().get(key)


def main(home: str, dataset: str, gate: str) -> int:
    Path(f"{gate}.ready").touch()
    while not Path(f"{gate}.go").exists():
        time.sleep(0.02)
    resources = pipeline_resources(home, dataset)
    resources["object_store"] = SlowStore(root=resources["object_store"].root)
    # With DAGSTER_HOME: that instance (and its pool limits); without: one of its own.
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    with instance:
        result = dg.materialize(all_assets(), selection=["image_embeddings"], resources=resources,
                                instance=instance,  # small parts: the first is written early
                                run_config={"ops": {"image_embeddings": {"config": {"part_rows": 16}}}})
    embedded = result.asset_materializations_for_node("image_embeddings")[0].metadata
    print(f"embedded_now={embedded['embedded_now'].value}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
