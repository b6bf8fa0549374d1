"""POST /search latency over real HTTP, with the embedding time taken out.

Starts uvicorn in a subprocess on the demo index (``make demo`` first; IMGSEARCH_HOME,
default var, colour-texture), uploads dataset images one at a time over a keep-alive
connection and reads each answer's Server-Timing header (decode, embed, search). The
figure that matters for the index and the service is the client-seen latency minus the
time spent making the query's vector (decode + embed), which depends only on the model.

    .venv/bin/python -m benchmarks.search_api [--requests 400] [--k 10]
"""

import argparse
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq

from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.settings import Settings

from .common import percentiles_ms

TARGET_MS = 5.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stages(header: str) -> dict[str, float]:
    """``decode;dur=1.2, embed;dur=3.4`` -> {decode: 1.2, embed: 3.4} (milliseconds)."""
    stages = {}
    for item in header.split(","):
        name, _, duration = item.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


def _query_images(resources: dict, count: int) -> list[bytes]:
    layout = resources["home"].layout
    posts = pq.read_table(layout.posts, columns=["key"]).column("key").to_pylist()
    keys = random.Random(0).sample(posts, min(count, len(posts)))
    return [resources["object_store"].get(key) for key in keys]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    env = {**os.environ, "IMGSEARCH_EMBEDDER": os.environ.get("IMGSEARCH_EMBEDDER", "color-texture")}
    resources = resources_for(Settings.read(env))
    if resources["vector_index"].live_version() is None:
        print(f"no live index under {resources['home'].layout.root}: run `make demo` first",
              file=sys.stderr)
        return 1
    images = _query_images(resources, 100)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "imgsearch_pipeline.api.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    health = client.get("/health").json()
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        print("the API did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            if not health.get("index_loaded"):
                print(f"index not loaded: {health.get('message')}", file=sys.stderr)
                return 1

            totals, embeds, rests, searches = [], [], [], []
            for i in range(args.warmup + args.requests):
                data = images[i % len(images)]
                started = time.perf_counter()
                response = client.post(f"/search?k={args.k}",
                                       files={"image": ("q.jpg", data, "image/jpeg")})
                seconds = time.perf_counter() - started
                response.raise_for_status()
                if i < args.warmup:
                    continue
                stages = _stages(response.headers["server-timing"])
                embed_s = (stages["decode"] + stages["embed"]) / 1000.0
                totals.append(seconds)
                embeds.append(embed_s)
                rests.append(seconds - embed_s)
                searches.append(stages["search"] / 1000.0)
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"POST /search on {health['documents']:,} documents ({health['backend']}, "
          f"{health['model_id']}), k={args.k}, {args.requests} requests after {args.warmup} warm-up, "
          "one at a time over keep-alive HTTP")
    rows = [("client latency", totals), ("decode + embed (server)", embeds),
            ("latency - decode - embed", rests), ("index search (server)", searches)]
    print(f"{'':28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, values in rows:
        p = percentiles_ms(values)
        print(f"{name:28}{p['p50_ms']:9.2f}{p['p95_ms']:9.2f}{p['p99_ms']:9.2f}")
    p50 = percentiles_ms(rests)["p50_ms"]
    verdict = "meets" if p50 < TARGET_MS else "misses"
    print(f"p50 latency without embedding: {p50:.2f} ms ({verdict} the {TARGET_MS:.0f} ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
