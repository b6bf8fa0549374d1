"""Reading the posts table written by the ``posts`` asset."""

import pyarrow.compute as pc
import pyarrow.parquet as pq


def uuids_of_split(path: str, split: str) -> set[str]:
    table = pq.read_table(path, columns=["uuid", "split"])
    return set(table.filter(pc.equal(table.column("split"), split)).column("uuid").to_pylist())


def display_fields(path: str) -> dict[str, dict]:
    """uuid -> {caption, split, shard} for documents in an index."""
    names = pq.read_schema(path).names
    columns = [c for c in ("uuid", "caption", "split", "shard") if c in names]
    rows = pq.read_table(path, columns=columns).to_pylist()
    return {row["uuid"]: row for row in rows}
