"""Files written atomically: a crash never leaves a half-written file that a run trusts."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_table_atomic(table: pa.Table, path: str | Path) -> Path:
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return Path(path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def part_files(folder: str | Path) -> list[Path]:
    """The ``part-*.parquet`` files of a folder, in name order."""
    return sorted(Path(folder).glob("part-*.parquet"))

