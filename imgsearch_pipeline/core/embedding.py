"""The embedding loop: loading and preprocessing overlap with inference; the vectors are
written part by part, so a killed run resumes where it stopped."""

import contextlib
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .images import ImageRejected
from .integrity import write_checked_table
from .tables import Location, join
from .vectors import StoredEmbeddings, vectors_table


@dataclass
class EmbeddedBatch:
    ids: list[str]
    vectors: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


def embed_in_batches(
    ids: Sequence[str],
    load_image: Callable[[str], Image.Image],
    prepare: Callable[[list[Image.Image]], Any],
    encode: Callable[[Any], np.ndarray],
    batch_size: int,
    workers: int = 4,
    lookahead: int = 2,
    loader_niceness: int = 19,
) -> Iterator[EmbeddedBatch]:
    """Embed ``ids`` in order. Worker threads fetch, decode and ``prepare`` the next batches
    while the caller's thread runs ``encode`` on the current one; at most
    ``workers * lookahead`` batches are in memory. An image that fails to load is reported
    in ``failures`` and skipped, never fatal to the run.

    Loader threads run at ``loader_niceness`` (Linux, per thread): on a CPU-only machine
    they otherwise preempt the model's compute threads mid-layer and cost ~20% of its
    throughput; at low priority they use the cycles encode leaves (benchmarks/README.md).
    With a GPU the caller's thread mostly waits, so the loaders still get the CPU."""

    def load_batch(chunk: Sequence[str]):
        good_ids, images, failures = [], [], []
        for item in chunk:
            try:
                images.append(load_image(item))
                good_ids.append(item)
            except ImageRejected as rejected:
                failures.append((item, rejected.reason))
            except (OSError, KeyError) as exc:
                failures.append((item, f"could not read image: {exc}"))
        return good_ids, (prepare(images) if images else None), failures

    chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed-loader",
                            initializer=_lower_priority, initargs=(loader_niceness,)) as pool:
        pending: deque = deque()
        next_chunk = 0
        while pending or next_chunk < len(chunks):
            while next_chunk < len(chunks) and len(pending) < workers * lookahead:
                pending.append(pool.submit(load_batch, chunks[next_chunk]))
                next_chunk += 1
            good_ids, prepared, failures = pending.popleft().result()
            vectors = encode(prepared) if good_ids else np.zeros((0, 0), dtype=np.float32)
            yield EmbeddedBatch(good_ids, vectors, failures)


def _lower_priority(niceness: int) -> None:
    """Lower this thread's scheduling priority (Linux threads have their own nice value)."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    # Not permitted or not supported: keep the default priority.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class Encoder(Protocol):
    """What embedding needs of a loaded model (``resources.embedders.EmbeddingModel``)."""

    model_id: str
    numerics: str

    def prepare(self, images: list[Image.Image]) -> Any: ...

    def encode(self, prepared: Any) -> np.ndarray: ...


def embed_into_parts(
    todo: Sequence[str],
    folder: Location,
    split_of: Mapping[str, str],
    load_image: Callable[[str], Image.Image],
    model: Encoder,
    batch_size: int,
    workers: int,
    part_rows: int,
    on_done: Callable[[int], None] = lambda n: None,
) -> list[tuple[str, str]]:
    """Embed ``todo`` into ``folder``, a checked part every ``part_rows`` rows (and one for
    the rest); return the (uuid, reason) of the items not embedded. ``on_done(n)`` after
    each batch, failures included."""
    buffer_ids: list[str] = []
    buffer_vectors: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []

    def flush() -> None:
        if buffer_ids:
            part = vectors_table(buffer_ids, [split_of[u] for u in buffer_ids], model.model_id,
                                 np.concatenate(buffer_vectors), model.numerics)
            write_checked_table(part, join(folder, f"part-{uuid.uuid4().hex}.parquet"))
            buffer_ids.clear()
            buffer_vectors.clear()

    for batch in embed_in_batches(todo, load_image, model.prepare, model.encode, batch_size,
                                  workers):
        buffer_ids += batch.ids
        if batch.ids:
            buffer_vectors.append(batch.vectors)
        failures += batch.failures
        on_done(len(batch.ids) + len(batch.failures))
        if len(buffer_ids) >= part_rows:
            flush()
    flush()
    return failures


def embedding_figures(stored: StoredEmbeddings, posts: int, todo: int,
                      failed: int) -> dict[str, int | str]:
    """The counts an embedding run reports: what the folder holds for the ``posts`` current
    posts after a run that tried ``todo`` of them and failed ``failed``."""
    return {
        "numerics": ", ".join(f"{name}: {rows:,} rows" for name, rows in sorted(stored.numerics.items())),
        "dim": stored.dim,
        "total": stored.present,
        "train": stored.train,
        "test": stored.test,
        "embedded_now": todo - failed,
        "reused": posts - todo,
        "not_embedded": failed,
        "missing": posts - stored.present,
        "stale": stored.stale,
    }
