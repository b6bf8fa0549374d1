"""Fairness under a flood: cheap requests stay fast while many clients upload heavy images.

Starts uvicorn (loopback only, free port) on a pipeline home. ``--clients`` threads post a
small PNG that declares 6300x6300 pixels (~40 Mpx, under the pixel limit, costly to decode)
as fast as the server answers (from 4 processes, apart from the measuring one), for
``--seconds``. Meanwhile one client measures, one request
at a time, ``GET /health`` and ``GET /images/{uuid}/similar`` (more like this by uuid), and
another posts a small real picture every ~0.5 s (honouring Retry-After if refused). Bounded
by time; nothing leaves 127.0.0.1.

    .venv/bin/python -m benchmarks.api_flood [--home var] [--clients 32] [--seconds 20]
"""

import argparse
import collections
import io
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

from .api_swaps import wait_for
from .common import percentiles_ms
from .search_api import _free_port

TARGET_P95_MS = 50.0


def heavy_png(side: int = 6300) -> bytes:
    """A few kB-to-100s-of-kB PNG whose header declares side x side pixels."""
    image = Image.new("RGB", (side, side), (200, 220, 240))
    draw = ImageDraw.Draw(image)
    rng = random.Random(0)
    for _ in range(400):
        x, y = rng.randrange(side), rng.randrange(side)
        draw.rectangle([x, y, x + rng.randrange(50, 600), y + rng.randrange(50, 600)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def _flood_process(base: str, heavy: bytes, threads: int, stop, results) -> None:
    """Flooding clients in a process of their own, so that their work does not slow the
    measuring client (one Python process shares one interpreter lock)."""
    # The flooding clients stand for machines elsewhere: on this one they must not take the
    # server's CPU, or the figures would measure the client, not the server.
    os.nice(19)
    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def flooder() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while not stop.is_set():
                try:
                    response = client.post("/search", files={"image": ("big.png", heavy, "image/png")})
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    counts[status] += 1

    workers = [threading.Thread(target=flooder) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(dict(counts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("IMGSEARCH_HOME", "var"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    home = Path(args.home)
    live = FaissHnswIndex(root=Layout.at(home).index).live_version()
    if live is None:
        print(f"no live index under {home}: run `make demo` first", file=sys.stderr)
        return 1
    layout = Layout.at(home)
    posts = pq.read_table(layout.posts, columns=["uuid", "key", "split"]).to_pylist()
    train = [p for p in posts if p["split"] == "train"]
    uuids = [p["uuid"] for p in random.Random(1).sample(train, min(50, len(train)))]
    small = LocalObjectStore(root=layout.objects).get(train[0]["key"])
    heavy = heavy_png()
    load_before = os.getloadavg()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "IMGSEARCH_HOME": str(home),
           "IMGSEARCH_EMBEDDER": os.environ.get("IMGSEARCH_EMBEDDER", "color-texture")}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "imgsearch_pipeline.api.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"], env=env)
    stop = threading.Event()
    flood_stop = multiprocessing.Event()
    flood_results: multiprocessing.Queue = multiprocessing.Queue()
    flood: collections.Counter = collections.Counter()
    latencies: dict[str, list[float]] = {"health": [], "similar": [], "small upload": []}
    small_status: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()

    def prober() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            turn = 0
            while not stop.is_set():
                name = "health" if turn % 2 == 0 else "similar"
                url = "/health" if name == "health" else f"/images/{uuids[turn % len(uuids)]}/similar?k=10"
                started = time.perf_counter()
                response = client.get(url)
                latencies[name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors[f"{name} {response.status_code}"] += 1
                turn += 1
                time.sleep(0.01)

    def small_uploader() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                response = client.post("/search", files={"image": ("small.jpg", small, "image/jpeg")})
                small_status[response.status_code] += 1
                if response.status_code == 200:
                    latencies["small upload"].append(time.perf_counter() - started)
                    time.sleep(0.5)
                else:
                    time.sleep(float(response.headers.get("retry-after", "1")))

    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            health = wait_for(client, live, server)
        processes = [multiprocessing.Process(
            target=_flood_process, args=(base, heavy, len(share), flood_stop, flood_results))
            for share in (range(args.clients)[i::4] for i in range(4)) if len(share)]
        for process in processes:
            process.start()
        time.sleep(2)  # the flood is on before measuring
        threads = [threading.Thread(target=prober, daemon=True),
                   threading.Thread(target=small_uploader, daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        flood_stop.set()
        for thread in threads:
            thread.join(timeout=60)
        for _ in processes:
            flood.update(flood_results.get(timeout=120))
        for process in processes:
            process.join(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=10)

    load_after = os.getloadavg()
    print(f"{args.clients} clients flooding POST /search with a {len(heavy) / 1024:.0f} kB PNG declaring "
          f"6300x6300 px, {args.seconds:.0f} s, on {health['documents']:,} documents "
          f"({health['backend']}, {health['model_id']}), loopback")
    total = sum(flood.values())
    answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(flood.items(), key=str))
    print(f"  flood answers: {total:,} ({answers})")
    print(f"{'':22}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for name, values in latencies.items():
        if values:
            p = percentiles_ms(values)
            print(f"  {name:20}{len(values):6}{p['p50_ms']:9.1f}{p['p95_ms']:9.1f}{max(values) * 1000:9.1f}")
        else:
            print(f"  {name:20}{0:6}   (none completed)")
    print(f"  small uploads: {dict(small_status)}; probe errors: {dict(errors) or 'none'}")
    worst = max(percentiles_ms(latencies[n])["p95_ms"] for n in ("health", "similar") if latencies[n])
    verdict = "meets" if worst < TARGET_P95_MS else "misses"
    print(f"  health / more-like-this p95 {worst:.1f} ms: {verdict} the {TARGET_P95_MS:.0f} ms target")
    print(f"  load average before {', '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{', '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} cores, shared with others)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
