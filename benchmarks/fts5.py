"""SQLite FTS5 as a caption keyword engine: the engine ``benchmarks/keywords.py`` compares
tantivy with (the project chose tantivy on that measurement). The standard library, one
SQLite file per index, BM25 in 64-bit floats, over the project's own tokens
(``core.keywords.caption_tokens``): given tokens joined by spaces, FTS5's ``ascii`` tokenizer
(every non-ASCII character is a token character to it, and ``#@_.`` are declared token
characters) gives the same tokens back.

FTS5 scores with ``bm25()`` (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) raised to
1e-6 where it is not positive: SQLite's fts5_aux.c), negated so that lower is better;
``KeywordIndex.search`` gives it back positive, higher is better. A query is the OR of its
distinct tokens, each one quoted as an FTS5 string: user text never reaches a query syntax.
"""

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from imgsearch_pipeline.core.keywords import TOKENIZER_VERSION, KeywordHit, caption_tokens, query_tokens
from imgsearch_pipeline.core.tables import atomic_path

FTS_TABLE = "captions"
FTS_TOKENIZE = "ascii tokenchars '#@_.'"


def match_expression(tokens: Iterable[str]) -> str:
    """An FTS5 MATCH expression: the OR of the tokens, each one an FTS5 string (double quotes,
    a quote inside doubled), so that no user text is read as query syntax."""
    return _joined(tokens, " OR ")


def _joined(tokens: Iterable[str], operator: str) -> str:
    quoted = ['"' + token.replace('"', '""') + '"' for token in tokens]
    if not quoted:
        raise ValueError("a keyword query needs at least one token")
    return operator.join(quoted)


# The file: a contentless FTS5 table (the index and each caption's length, which bm25()
# needs, but not the text: a third of the size) and the documents' uuid and split. Documents
# are numbered in uuid order, so that ordering ties by rowid is ordering them by uuid.
_SCHEMA = f"""
    PRAGMA journal_mode = OFF;
    PRAGMA synchronous = OFF;
    PRAGMA user_version = {TOKENIZER_VERSION};
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE docs (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, split TEXT);
    CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(tokens, content = '', tokenize = "{FTS_TOKENIZE}");
"""


def _build(connection: sqlite3.Connection, ids: Sequence[str], captions: Sequence[str | None],
           splits: Sequence[str | None]) -> None:
    connection.executescript(_SCHEMA)
    rows = sorted(zip(ids, captions, splits, strict=True), key=lambda row: row[0])
    with connection:
        for number, (uuid, caption, split) in enumerate(rows, start=1):
            connection.execute("INSERT INTO docs VALUES (?, ?, ?)", (number, uuid, split))
            connection.execute(f"INSERT INTO {FTS_TABLE} (rowid, tokens) VALUES (?, ?)",
                               (number, " ".join(caption_tokens(caption))))
        # One b-tree segment instead of many: faster queries, a smaller file.
        connection.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('optimize')")
        connection.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("tokenizer_version", str(TOKENIZER_VERSION)), ("documents", str(len(rows)))])
    connection.execute("VACUUM")


def write_keyword_index(path: str | os.PathLike, ids: Sequence[str], captions: Sequence[str | None],
                        splits: Sequence[str | None] | None = None) -> str | os.PathLike:
    """Write the caption index of one index version to ``path`` (a local file or an ``s3://``
    URI), whole or not at all: built in a temporary file, then renamed (or uploaded) over it.
    A caption of None is a document with no tokens (found by no keyword query)."""
    if len(set(ids)) != len(ids):
        raise ValueError("repeated uuids in the keyword index input")
    if len(ids) != len(captions) or (splits is not None and len(splits) != len(ids)):
        raise ValueError("ids, captions and splits must have the same length")
    with atomic_path(path) as temporary:
        connection = sqlite3.connect(temporary)
        try:
            _build(connection, ids, captions, splits if splits is not None else [None] * len(ids))
        finally:
            connection.close()
    return path


class KeywordIndex:
    """Read-only BM25 search over one version's caption index file (local: an ``s3://``
    index is downloaded beside the version's other files first). One SQLite connection per
    thread, opened immutable: a version's file never changes once written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no keyword index at {self.path}")
        self._local = threading.local()
        version = self._connection().execute("PRAGMA user_version").fetchone()[0]
        if version != TOKENIZER_VERSION:
            raise ValueError(f"keyword index {self.path} was written with tokenizer version "
                             f"{version}; this code reads version {TOKENIZER_VERSION}: rebuild it")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
            connection = sqlite3.connect(uri, uri=True)
            self._local.connection = connection
        return connection

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT value FROM meta WHERE key = 'documents'").fetchone()[0])

    def search(self, query: str, k: int, offset: int = 0, split: str | None = None,
               require: Sequence[str] = ()) -> list[KeywordHit]:
        """The ``k`` best captions for ``query`` after the first ``offset``, best first; ties
        in score go to the smaller uuid. ``split`` keeps that split only; ``require`` (the
        caption filter's words) keeps captions holding every token of every one of them,
        without changing the scores. A query without tokens finds nothing. Which terms each
        hit matched: ``matched_terms`` on its caption."""
        if k < 1 or offset < 0:
            raise ValueError(f"need k >= 1 and offset >= 0, got k={k}, offset={offset}")
        tokens = query_tokens(query)
        if not tokens:
            return []
        # FTS5's rank (bm25() by default) in the inner query, which orders and cuts before
        # anything else is read: several times faster than ordering the joined rows.
        inner = f"SELECT {FTS_TABLE}.rowid AS id, rank AS s FROM {FTS_TABLE}"
        where = f" WHERE {FTS_TABLE} MATCH ?"
        params: list[object] = [match_expression(tokens)]
        if split is not None:
            inner += f" JOIN docs ON docs.id = {FTS_TABLE}.rowid"
            where += " AND docs.split = ?"
            params.append(split)
        required = list(dict.fromkeys(t for word in require for t in query_tokens(word)))
        if required:
            # A second MATCH in a sub-query filters without adding its terms to the score.
            where += f" AND {FTS_TABLE}.rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?)"
            params.append(_joined(required, " AND "))
        sql = (f"SELECT docs.id, docs.uuid, r.s FROM ({inner}{where} ORDER BY s, id LIMIT ? OFFSET ?) r "
               "JOIN docs ON docs.id = r.id ORDER BY r.s, r.id")
        rows = self._connection().execute(sql, [*params, k, offset]).fetchall()
        return [KeywordHit(uuid, -float(score)) for _, uuid, score in rows]

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
