"""Resident memory of the search API over many index swaps (it must stay flat).

Starts uvicorn (loopback, free port) on a pipeline home, then publishes ``--swaps`` new
versions one after another, as the pipeline does: each a copy of the live version's files
under a new name (with its checksums), published through the index's own ``publish`` and
pruned to ``keep_versions``. After each swap, once /health shows the new version served, it
reads the server's VmRSS from /proc.

    .venv/bin/python -m benchmarks.api_swaps [--home var] [--swaps 100]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

from .search_api import _free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_for(client: httpx.Client, version: str, server: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            body = client.get("/health").json()
            if body.get("index_version") == version:
                return body
        except httpx.TransportError:
            if server.poll() is not None:
                raise RuntimeError("the API exited") from None
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} not served within {seconds} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("IMGSEARCH_HOME", "var"))
    parser.add_argument("--swaps", type=int, default=100)
    args = parser.parse_args()
    home = Path(args.home)
    index = FaissHnswIndex(root=Layout.at(home).index)
    first = index.live_version()
    if first is None:
        print(f"no live index under {home}: run `make demo` first", file=sys.stderr)
        return 1
    port = _free_port()
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_API_LIVE_CHECK_S": "0.05",
           "IMGSEARCH_EMBEDDER": os.environ.get("IMGSEARCH_EMBEDDER", "color-texture")}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "imgsearch_pipeline.api.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"], env=env)
    made: list[str] = []
    samples: list[tuple[int, float]] = []
    settled: list[tuple[int, float]] = []
    template = Path(tempfile.mkdtemp(prefix="imgsearch-swaps-")) / first
    shutil.copytree(Path(index.root) / "versions" / first, template)  # pruning will delete it
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            health = wait_for(client, first, server)
            samples.append((0, rss_mb(server.pid)))
            for swap in range(1, args.swaps + 1):
                version = f"{first}-swap{swap:03d}"
                shutil.copytree(template, Path(index.root) / "versions" / version)
                made.append(version)
                index.publish(version)
                wait_for(client, version, server)
                index.prune()
                samples.append((swap, rss_mb(server.pid)))
                if swap % max(1, args.swaps // 4) == 0:
                    time.sleep(5)  # past the grace period in which a swapped-out version is kept
                    settled.append((swap, rss_mb(server.pid)))
    finally:
        server.terminate()
        server.wait(timeout=10)
        # Leave the home as it was: the first version back and live, the copies gone.
        if not (Path(index.root) / "versions" / first).is_dir():
            shutil.copytree(template, Path(index.root) / "versions" / first)
        index.publish(first)
        for version in made:
            index.delete_version(version)
        shutil.rmtree(template.parent, ignore_errors=True)

    print(f"{args.swaps} swaps of a {health['documents']:,}-document index "
          f"({health['backend']}, {health['model_id']}); server resident memory (VmRSS):")
    marks = sorted({0, 1, 10, 25, 50, 75, args.swaps} & {s for s, _ in samples})
    print("  while swapping: " + "  ".join(f"after {s}: {dict(samples)[s]:.0f} MB" for s in marks))
    print("  settled (5 s after a swap, swapped-out versions released): " + "  ".join(
        f"after {swap}: {mb:.0f} MB" for swap, mb in settled))
    half = [mb for swap, mb in settled if swap >= args.swaps // 2]
    print(f"  from the middle to the end: {half[-1] - half[0]:+.0f} MB over {args.swaps - args.swaps // 2} "
          f"swaps ({(half[-1] - half[0]) * 1024 / max(1, args.swaps - args.swaps // 2):+.0f} kB per swap); "
          f"peak {max(mb for _, mb in samples):.0f} MB")
    print(f"  load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
