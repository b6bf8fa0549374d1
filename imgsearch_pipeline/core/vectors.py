"""Embedding tables: one folder per model id of parquet parts of (uuid, split, model_id,
vector), ``part-<hex>.parquet``, each written atomically (the resume unit) with its own
checksum manifest: a part that does not match it is never read."""

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .integrity import check_parts, part_manifest_path
from .tables import (
    Location,
    atomic_path,
    base_name,
    join,
    move,
    parquet_metadata,
    part_files,
    read_schema,
    read_table,
    read_text,
    write_text_atomic,
)


def vectors_table(uuids: list[str], splits: list[str], model_id: str, vectors: np.ndarray,
                  numerics: str = ""):
    """A part's table; its schema metadata holds ``numerics`` (the runtime and precision that
    computed the vectors, e.g. ``openvino-f32``) and the vectors' ``block_stats``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table({
        "uuid": pa.array(uuids, pa.string()),
        "split": pa.array(splits, pa.string()),
        "model_id": pa.array([model_id] * len(uuids), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    })
    meta = {STATS_KEY: json.dumps(block_stats(vectors))}
    return table.replace_schema_metadata({**meta, NUMERICS_KEY: numerics} if numerics else meta)


NUMERICS_KEY = "numerics"
STATS_KEY = "vector_stats"
UNRECORDED = "unrecorded"


def block_stats(matrix: np.ndarray) -> dict:
    """Rows, size, finiteness and the worst distance of a norm from 1 of a block of vectors."""
    ok = np.isfinite(matrix).all(axis=1)
    worst = float(np.abs(np.linalg.norm(matrix[ok], axis=1) - 1.0).max()) if ok.any() else 0.0
    return {"rows": int(len(matrix)), "dim": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
            "finite": bool(ok.all()), "max_norm_error": worst}


def part_stats(parts: list[str]) -> Iterator[dict]:
    """``block_stats`` of each verified part: from its footer, where it was recorded when the
    part was written (the part's checksum covers it), else from its vectors (older parts):
    a re-run checks what it wrote, not the whole set again."""
    for part in parts:
        recorded = (parquet_metadata(part).metadata or {}).get(STATS_KEY.encode())
        if recorded is not None:
            yield json.loads(recorded)
        else:
            yield block_stats(to_matrix(read_table(part, columns=["vector"]).column("vector")))


def vector_numerics(folder: Location, parts: list[str] | None = None) -> dict[str, int]:
    """Rows of the verified parts (or the already verified ``parts``) by the numerics that
    computed them (``unrecorded`` for parts written before parts recorded it); read from the
    parquet footers only."""
    rows: dict[str, int] = {}
    for part in embedding_parts(folder)[0] if parts is None else parts:
        meta = parquet_metadata(part)
        numerics = (meta.metadata or {}).get(NUMERICS_KEY.encode(), UNRECORDED.encode()).decode()
        rows[numerics] = rows.get(numerics, 0) + meta.num_rows
    return rows


def embedding_parts(folder: Location) -> tuple[list[str], dict[str, str]]:
    """The parts whose checksums match, and the damaged ones (name -> reason)."""
    return check_parts(part_files(folder))


def set_aside_damaged_parts(folder: Location, damaged: dict[str, str] | None = None
                            ) -> dict[str, str]:
    """Rename damaged parts (found here, or the already found ``damaged``) to ``*.damaged``
    (kept for inspection, never read again), so that their rows are embedded anew; returns
    what was set aside and why."""
    damaged = embedding_parts(folder)[1] if damaged is None else damaged
    for name in damaged:
        part = join(folder, name)
        move(part, part + ".damaged")
    return damaged


def stored_dim(folder: Location, parts: list[str] | None = None) -> int | None:
    """The vector size of the stored parts (from a parquet schema), None if there are none."""
    part = next(iter(embedding_parts(folder)[0] if parts is None else parts), None)
    return None if part is None else read_schema(part).field("vector").type.list_size


def embedded_uuids(folder: Location, parts: list[str] | None = None) -> set[str]:
    """The uuids of the verified parts, or of the already verified ``parts`` (a damaged
    part's rows count as not embedded)."""
    return {u for part in (embedding_parts(folder)[0] if parts is None else parts)
            for u in read_table(part, columns=["uuid"]).column("uuid").to_pylist()}


@dataclass(frozen=True)
class StoredEmbeddings:
    """What a model's folder holds for the current posts."""

    dim: int  # 0 when nothing is stored
    present: int  # current posts with a vector
    train: int
    stale: int  # vectors of posts that are no longer current (kept, never indexed)
    numerics: dict[str, int]  # rows by the runtime and precision that computed them

    @property
    def test(self) -> int:
        return self.present - self.train


def stored_embeddings(folder: Location, split_of: Mapping[str, str],
                      parts: list[str] | None = None) -> StoredEmbeddings:
    """Count the verified parts' vectors (or the already verified ``parts``') against the
    current posts (uuid -> split)."""
    parts = embedding_parts(folder)[0] if parts is None else parts
    stored = embedded_uuids(folder, parts)
    present = stored & split_of.keys()
    train = sum(1 for u in present if split_of[u] == "train")
    return StoredEmbeddings(stored_dim(folder, parts) or 0, len(present), train,
                            len(stored - present), vector_numerics(folder, parts))


def to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(
        np.float32, copy=False)


def iter_vectors(
    folder: Location, only: set[str] | None = None, parts: list[str] | None = None
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(uuids, matrix) part by part, each uuid once, optionally only the uuids in ``only``;
    only the parts whose checksums match (or the already verified ``parts``)."""
    for ((uuids, matrix),) in _iter_groups(folder, [only], parts):
        if uuids:
            yield uuids, matrix


def _iter_groups(
    folder: Location, groups: Sequence[set[str] | None], parts: list[str] | None
) -> Iterator[list[tuple[list[str], np.ndarray]]]:
    """Per verified part, read once: each group's (uuids, rows) in it (None: every row),
    each uuid once per group (the first part holding it wins)."""
    seen: list[set[str]] = [set() for _ in groups]
    for part in embedding_parts(folder)[0] if parts is None else parts:
        uuids = read_table(part, columns=["uuid"]).column("uuid").to_pylist()
        keeps = [[i for i, u in enumerate(uuids) if u not in done and (group is None or u in group)]
                 for group, done in zip(groups, seen, strict=True)]
        # The vectors only of a part that holds some wanted: an incremental build wants the
        # new part's rows; decoding a 50,000 x 768 part's vectors took 0.3 s cached, 2.6 s from
        # disk (measured).
        block = (to_matrix(read_table(part, columns=["vector"]).column("vector"))
                 if any(keeps) else None)
        found = []
        for keep, done in zip(keeps, seen, strict=True):
            taken = [uuids[i] for i in keep]
            done.update(taken)
            found.append((taken, block[keep] if keep else np.zeros((0, 0), dtype=np.float32)))
        yield found


def read_vectors(
    folder: Location, only: set[str] | None = None, parts: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(uuids, matrix) of the verified parts, optionally only the uuids in ``only``."""
    return read_vector_groups(folder, [only], parts)[0]


def vectors_in_order(folder: Location, ids: Sequence[str], parts: list[str] | None = None
                     ) -> np.ndarray:
    """The vectors of ``ids``, one row each, in their order (KeyError: one is not stored),
    from the verified parts (or the already verified ``parts``)."""
    found, matrix = read_vectors(folder, set(ids), parts)
    row = {u: i for i, u in enumerate(found)}
    return matrix[[row[u] for u in ids]] if len(ids) else matrix


def read_vector_groups(
    folder: Location, groups: Sequence[set[str] | None], parts: list[str] | None = None
) -> list[tuple[list[str], np.ndarray]]:
    """(uuids, matrix) of each group of uuids (None: every row) in one pass over the
    verified parts: the train corpus and the test queries read together cost one read of
    the set, not two.

    Each matrix is allocated once for every row the parts hold (from their footers) and
    filled part by part: never the parts' blocks and their concatenation at once (at 1M x
    768 that would be 6 GB for a 3 GB matrix). Rows left over (other groups, duplicates)
    are never written, so their pages are never touched and take no memory."""
    parts = embedding_parts(folder)[0] if parts is None else parts
    if not parts:
        return [([], np.zeros((0, 0), dtype=np.float32)) for _ in groups]
    rows = sum(parquet_metadata(part).num_rows for part in parts)
    dim = read_schema(parts[0]).field("vector").type.list_size
    matrices = [np.empty((rows, dim), dtype=np.float32) for _ in groups]
    ids: list[list[str]] = [[] for _ in groups]
    for found in _iter_groups(folder, groups, parts):
        for (uuids, block), matrix, taken in zip(found, matrices, ids, strict=True):
            if uuids:
                matrix[len(taken):len(taken) + len(uuids)] = block
                taken += uuids
    return [(taken, matrix[: len(taken)]) if taken else ([], np.zeros((0, 0), dtype=np.float32))
            for taken, matrix in zip(ids, matrices, strict=True)]


def parts_fingerprint(parts: list[str], *labels: str) -> str:
    """A digest of verified parts' manifests (their names, sizes and SHA-256s) and ``labels``
    (the index version, the model id): it changes whenever any stored vector could have."""
    digest = hashlib.sha256(json.dumps(labels).encode())
    for part in parts:
        manifest = part_manifest_path(part)
        digest.update(base_name(part).encode() + b"\0" + read_text(manifest).encode() + b"\0")
    return digest.hexdigest()[:32]


def mapped_vectors(parts: list[str], cache: str | os.PathLike, name: str
                   ) -> tuple[list[str], np.ndarray]:
    """The vectors of the verified ``parts`` (each uuid once) as a read-only memory map.

    The first call writes them part by part to ``<cache>/<name>.f32`` (raw float32 rows) and
    ``<name>.json`` (uuids, dim), both atomically, the json last; later calls, from any
    process, map that file: the rows stay on disk and in the page cache, shared, not in each
    process's heap. ``name`` should be a ``parts_fingerprint``, so that changed parts get a
    new file; the other files in ``cache`` (one folder per model) are stale and removed
    (a process still mapping one keeps reading it until it lets go)."""
    folder = Path(cache)
    data, meta = folder / f"{name}.f32", folder / f"{name}.json"
    for _ in range(3):
        info = _complete_cache(data, meta)
        if info is None:
            _write_cache(parts, folder, data, meta)
        try:
            info = info or json.loads(meta.read_text())
            ids, dim = info["uuids"], info["dim"]
            matrix = (np.memmap(data, dtype="<f4", mode="r", shape=(len(ids), dim)) if ids
                      else np.zeros((0, 0), dtype=np.float32))
        except FileNotFoundError:  # removed by a process serving other parts: write it again
            continue
        for old in folder.iterdir():  # stale copies (never another process's temporary)
            if old.name not in (data.name, meta.name) and not old.name.startswith("."):
                old.unlink(missing_ok=True)
        return ids, matrix
    raise RuntimeError(f"the vector cache {name} keeps disappearing from {folder}")


def _write_cache(parts: list[str], folder: Path, data: Path, meta: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    dim = 0
    with atomic_path(data) as temporary, open(temporary, "wb") as handle:
        for uuids, matrix in iter_vectors("", parts=parts):
            ids += uuids
            dim = matrix.shape[1]
            handle.write(np.ascontiguousarray(matrix, dtype="<f4").tobytes())
    write_text_atomic(json.dumps({"dim": dim, "uuids": ids}), meta)


def _complete_cache(data: Path, meta: Path) -> dict | None:
    """The cache's uuids and dim when its data file holds all their rows, else None."""
    try:
        info = json.loads(meta.read_text())
        return info if data.stat().st_size == len(info["uuids"]) * info["dim"] * 4 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
