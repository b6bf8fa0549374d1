"""Embedding tables: one folder per model id of parquet parts of (uuid, split, model_id,
vector), ``part-<hex>.parquet``, each written atomically (the resume unit) with its own
checksum manifest: a part that does not match it is never read."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .integrity import check_parts
from .tables import part_files


def vectors_table(uuids: list[str], splits: list[str], model_id: str, vectors: np.ndarray,
                  numerics: str = ""):
    """A part's table; ``numerics`` (the runtime and precision that computed the vectors,
    e.g. ``openvino-f32``) goes in its schema metadata."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table({
        "uuid": pa.array(uuids, pa.string()),
        "split": pa.array(splits, pa.string()),
        "model_id": pa.array([model_id] * len(uuids), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    })
    return table.replace_schema_metadata({NUMERICS_KEY: numerics}) if numerics else table


NUMERICS_KEY = "numerics"
UNRECORDED = "unrecorded"


def vector_numerics(folder: str | Path) -> dict[str, int]:
    """Rows of the verified parts by the numerics that computed them (``unrecorded`` for
    parts written before parts recorded it); read from the parquet footers only."""
    rows: dict[str, int] = {}
    for part in embedding_parts(folder)[0]:
        meta = pq.read_metadata(part)
        numerics = (meta.metadata or {}).get(NUMERICS_KEY.encode(), UNRECORDED.encode()).decode()
        rows[numerics] = rows.get(numerics, 0) + meta.num_rows
    return rows


def embedding_parts(folder: str | Path) -> tuple[list[Path], dict[str, str]]:
    """The parts whose checksums match, and the damaged ones (name -> reason)."""
    return check_parts(part_files(folder), Path(folder))


def set_aside_damaged_parts(folder: str | Path) -> dict[str, str]:
    """Rename damaged parts to ``*.damaged`` (kept for inspection, never read again), so
    that their rows are embedded anew; returns what was set aside and why."""
    folder = Path(folder)
    damaged = embedding_parts(folder)[1]
    for name in damaged:
        part = folder / name
        part.rename(part.with_name(part.name + ".damaged"))
    return damaged


def stored_dim(folder: str | Path) -> int | None:
    """The vector size of the stored parts (from a parquet schema), None if there are none."""
    part = next(iter(embedding_parts(folder)[0]), None)
    return None if part is None else pq.read_schema(part).field("vector").type.list_size


def embedded_uuids(folder: str | Path) -> set[str]:
    """The uuids of the verified parts (a damaged part's rows count as not embedded)."""
    return {u for part in embedding_parts(folder)[0]
            for u in pq.read_table(part, columns=["uuid"]).column("uuid").to_pylist()}


def to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(
        np.float32, copy=False)


def iter_vectors(
    folder: str | Path, only: set[str] | None = None, parts: list[Path] | None = None
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(uuids, matrix) part by part, each uuid once, optionally only the uuids in ``only``;
    only the parts whose checksums match (or the already verified ``parts``)."""
    seen: set[str] = set()
    for part in embedding_parts(folder)[0] if parts is None else parts:
        table = pq.read_table(part, columns=["uuid", "vector"])
        uuids = table.column("uuid").to_pylist()
        keep = [i for i, u in enumerate(uuids)
                if u not in seen and (only is None or u in only)]
        if not keep:
            continue
        seen.update(uuids[i] for i in keep)
        matrix = to_matrix(table.column("vector"))[keep]
        yield [uuids[i] for i in keep], matrix


def read_vectors(
    folder: str | Path, only: set[str] | None = None, parts: list[Path] | None = None
) -> tuple[list[str], np.ndarray]:
    """(uuids, matrix) of the verified parts, optionally only the uuids in ``only``.

    The matrix is allocated once for every row the parts hold (from their footers) and
    filled part by part: never the parts' blocks and their concatenation at once (at 1M x
    768 that would be 6 GB for a 3 GB matrix). Rows left over (filtered out, duplicates)
    are never written, so their pages are never touched and take no memory."""
    parts = embedding_parts(folder)[0] if parts is None else parts
    if not parts:
        return [], np.zeros((0, 0), dtype=np.float32)
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    dim = pq.read_schema(parts[0]).field("vector").type.list_size
    matrix = np.empty((rows, dim), dtype=np.float32)
    ids: list[str] = []
    for uuids, block in iter_vectors(folder, only, parts):
        matrix[len(ids) : len(ids) + len(uuids)] = block
        ids += uuids
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    return ids, matrix[: len(ids)]
