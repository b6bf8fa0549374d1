"""The small values assets hand to each other: where a table is, what it holds, and how
to read it. Locations come from ``core.layout.Layout``; readers need nothing else."""

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .core.tables import read_schema, read_table


@dataclass(frozen=True)
class ShardInventory:
    """Readable shards (path, rows, fingerprint) and the unreadable ones with reasons."""

    location: str
    shards: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)


@dataclass(frozen=True)
class PostsTable:
    """The posts table (one row per distinct image) and its quarantine of rejected rows."""

    path: str
    rejects_path: str
    posts: int
    train: int
    test: int
    duplicates: int
    rejected: int

    def read(self, columns: list[str]) -> pa.Table:
        return read_table(self.path, columns=columns)

    def uuids(self, split: str) -> set[str]:
        table = self.read(["uuid", "split"])
        return set(table.filter(pc.equal(table.column("split"), split)).column("uuid").to_pylist())

    def display_fields(self, only: set[str] | None = None) -> dict[str, dict]:
        """uuid -> {caption, split, shard} for documents in an index (those in ``only``:
        an incremental version reads the fields of its new documents, not of all)."""
        names = read_schema(self.path).names
        columns = [c for c in ("uuid", "caption", "split", "shard") if c in names]
        table = self.read(columns)
        if only is not None:
            table = table.filter(pc.is_in(table.column("uuid"), pa.array(sorted(only), pa.string())))
        return {row["uuid"]: row for row in table.to_pylist()}


@dataclass(frozen=True)
class ImageObjects:
    stored: int
    uploaded: int
    already_there: int


@dataclass(frozen=True)
class EmbeddingSet:
    folder: str
    model_id: str
    dim: int
    count: int
    train: int
    test: int


@dataclass(frozen=True)
class IndexBuild:
    version: str
    backend: str
    count: int
    dim: int
    params: dict
    action: str = "full"  # or "incremental": ``base`` plus ``added``, minus ``removed``
    base: str | None = None
    added: int = 0
    removed: int = 0


@dataclass(frozen=True)
class GroundTruth:
    """The exact top-k table, and beside it the corpus it was computed against (train uuids
    and their parts: what the next run diffs, and what recall_report times exact search on)."""

    path: str
    k: int
    queries: int
    corpus: int
    corpus_path: str = ""
    model_id: str = ""
