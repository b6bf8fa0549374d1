"""Caption keyword search: the tokens of a caption and an embedded BM25 full-text index,
one file per index version, in two engines with one interface:

- SQLite FTS5 (``write_keyword_index``, ``KeywordIndex``): the standard library, one SQLite
  file, BM25 in 64-bit floats.
- tantivy (``write_tantivy_index``, ``TantivyKeywordIndex``; PyPI ``tantivy``, imported only
  when used): a fifth of FTS5's query time and half its size at 27k captions
  (``benchmarks/keywords.py``), Lucene's BM25 in 32-bit floats.

Tokens are made here, in Python, and the engine only stores and scores them: given text that
is already tokens joined by spaces, FTS5's ``ascii`` tokenizer (every non-ASCII character is
a token character to it, and ``#@_.`` are declared token characters) and tantivy's
whitespace tokenizer give the same tokens back. So both engines, the query, Elasticsearch's
``caption_keywords`` field and the highlighting share one tokenizer, tested without either.

What a caption becomes (``caption_tokens``):

- words: Unicode letters, digits and marks (``_`` joins), NFKC-normalised (full-width and
  ligatures fold), case-folded, with Latin/Greek/Cyrillic diacritics removed: ``Café`` and
  ``cafe`` are one token ``cafe``; Devanagari vowel signs and the like are kept.
- hashtags: ``#SunsetLovers`` gives ``#sunsetlovers`` and the word ``sunsetlovers``; mentions
  ``@nat.geo`` give ``@nat.geo`` and the words ``nat`` and ``geo``. So a query ``#sunset``
  finds only captions tagged ``#sunset``, and a query ``sunset`` finds the word and the tag.
- emoji and other symbols (Unicode ``So``): one token each; a flag (two regional indicators)
  is one token; skin tones, variation selectors and zero-width joiners are dropped.
- scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar): overlapping
  character bigrams of each run, as Lucene's CJK bigram filter does (FTS5's own unicode61
  would index a whole run as one token, so ``東京`` would not find ``東京タワー``; its trigram
  tokenizer cannot match two-character words, the commonest in Chinese and Japanese). A run
  of one character is one token. Thai words are not segmented: bigrams approximate them.

FTS5 scores with ``bm25()`` (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) raised to
1e-6 where it is not positive: SQLite's fts5_aux.c), negated so that lower is better;
``KeywordIndex.search`` gives it back positive, higher is better. A query is the OR of its
distinct tokens, each one quoted as an FTS5 string (tantivy: one term query per token):
user text never reaches a query syntax.
"""

import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import threading
import unicodedata
import weakref
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from .tables import atomic_path

TOKENIZER_VERSION = 1  # bump when caption_tokens changes: old index files then refuse to open
FTS_TABLE = "captions"
FTS_TOKENIZE = "ascii tokenchars '#@_.'"

# Scripts written without spaces between words: indexed as character bigrams.
_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)
# Zero-width characters and variation selectors: dropped without breaking a word.
_IGNORED = ({0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF}
            | set(range(0xFE00, 0xFE10)) | set(range(0xE0100, 0xE01F0)))
_REGIONAL = (0x1F1E6, 0x1F1FF)  # regional indicator letters: two make a flag


def _kind(ch: str) -> str:
    """'w' word character, 'u' unspaced-script character, 'm' combining mark (joins the run
    before it), 'i' ignored (joins too, dropped from the token), 's' symbol (a token alone),
    'r' regional indicator (two make a flag), '#', '@' and '.' themselves, ' ' separator."""
    if ch in "#@.":
        return ch
    category = unicodedata.category(ch)
    if ord(ch) in _IGNORED or category == "Me":  # enclosing marks: the keycap of 1️⃣
        return "i"
    if category[0] == "M":
        return "m"
    if category[0] in "LN":
        code = ord(ch)
        return "u" if any(low <= code <= high for low, high in _UNSPACED) else "w"
    if ch == "_":
        return "w"
    if category == "So":
        return "r" if _REGIONAL[0] <= ord(ch) <= _REGIONAL[1] else "s"
    return " "


class _Kinds(dict):
    """A ``str.translate`` table: code point -> its kind letter, worked out once per character
    (the scan then runs on the string of kinds with regular expressions)."""

    def __missing__(self, code: int) -> str:
        self[code] = kind = _kind(chr(code))
        return kind


class _Folds(dict):
    """A ``str.translate`` table deleting diacritics (U+0300..U+036F after NFD) and ignored
    characters, keeping everything else."""

    def __missing__(self, code: int) -> int | None:
        self[code] = kept = None if 0x300 <= code <= 0x36F or _kind(chr(code)) == "i" else code
        return kept


_KINDS = _Kinds()
_FOLDS = _Folds()
# On the string of kinds: a hashtag, a mention (dots inside a name belong to it), a run of
# word and unspaced-script characters, a flag, a symbol. '#' or '@' inside a word is not one.
_TOKEN = re.compile(r"(?<![wum])(?:(?P<tag>#[wu][wumi]*)|(?P<mention>@[wu][wumi]*(?:\.[wu][wumi]*)*))"
                    r"|(?P<run>[wu][wumi]*)|(?P<symbol>rr?|s)")
_SUBRUN = re.compile(r"w[wmi]*|u[umi]*")  # a run split by script: words, unspaced
_CHAR = re.compile(r"u[mi]*")  # one unspaced character with its marks
_PART = re.compile(r"[wu][wumi]*")  # the words of a hashtag or a mention


@lru_cache(maxsize=1 << 16)
def normalise(word: str) -> str:
    """NFKC, case-folded, Latin/Greek/Cyrillic diacritics (U+0300..U+036F after NFD) removed."""
    if word.isascii():
        return word.lower()
    text = unicodedata.normalize("NFKC", word).casefold()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).translate(_FOLDS))


def _run_tokens(text: str, kinds: str, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """The tokens of a run of word and unspaced-script characters: words whole, unspaced
    sub-runs as bigrams (a mixed run such as ``東京2020`` gives both)."""
    if "u" not in kinds[start:end]:  # the common case: one word
        token = normalise(text[start:end])
        if token:
            yield token, start, end
        return
    for sub in _SUBRUN.finditer(kinds, start, end):
        if kinds[sub.start()] == "w":
            token = normalise(text[sub.start():sub.end()])
            if token:
                yield token, sub.start(), sub.end()
            continue
        chars = [(c.start(), c.end()) for c in _CHAR.finditer(kinds, sub.start(), sub.end())]
        pairs = chars if len(chars) == 1 else [(a[0], b[1]) for a, b in zip(chars, chars[1:], strict=False)]
        for a, b in pairs:
            token = normalise(text[a:b])
            if token:
                yield token, a, b


def token_spans(text: str | None, expand: bool = True) -> Iterator[tuple[str, int, int]]:
    """Each token of ``text`` with the span ``text[start:end]`` it came from, in order (a
    hashtag's word copy and overlapping bigrams have overlapping spans). With ``expand``
    False (a query), a hashtag or a mention gives only its own token, not its words."""
    if not text:
        return
    kinds = text.translate(_KINDS)
    for match in _TOKEN.finditer(kinds):
        start, end = match.span()
        if match.lastgroup in ("tag", "mention"):
            token = text[start] + normalise(text[start + 1:end])
            if len(token) > 1:
                yield token, start, end
            if expand or len(token) == 1:
                for part in _PART.finditer(kinds, start + 1, end):
                    yield from _run_tokens(text, kinds, part.start(), part.end())
        elif match.lastgroup == "run":
            yield from _run_tokens(text, kinds, start, end)
        else:
            yield text[start:end], start, end


def caption_tokens(text: str | None) -> list[str]:
    """The tokens indexed for a caption, in order (see the module's description)."""
    return [token for token, _, _ in token_spans(text)]


def query_tokens(text: str | None) -> list[str]:
    """A query's distinct tokens in order of first appearance (a repeated word counts once).
    A hashtag asks for the tag only: ``#sunset`` finds ``#sunset``, not the word ``sunset``."""
    return list(dict.fromkeys(token for token, _, _ in token_spans(text, expand=False)))


def match_expression(tokens: Iterable[str]) -> str:
    """An FTS5 MATCH expression: the OR of the tokens, each one an FTS5 string (double quotes,
    a quote inside doubled), so that no user text is read as query syntax."""
    return _joined(tokens, " OR ")


def _joined(tokens: Iterable[str], operator: str) -> str:
    quoted = ['"' + token.replace('"', '""') + '"' for token in tokens]
    if not quoted:
        raise ValueError("a keyword query needs at least one token")
    return operator.join(quoted)


def highlight_spans(text: str | None, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Merged, sorted ``(start, end)`` spans of ``text`` whose tokens are among ``terms`` (a hit's
    ``matched_terms``): what the page marks. Offsets index the Python string."""
    wanted = set(terms)
    spans = sorted((start, end) for token, start, end in token_spans(text) if token in wanted)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def highlight_segments(text: str | None, terms: Iterable[str]) -> list[tuple[str, bool]]:
    """``text`` cut into ``(piece, marked)`` segments that join back into it: what the API can
    send for the page to build text nodes and ``<mark>`` elements from, with no offsets (the
    page's JavaScript counts UTF-16 units, Python code points: emoji would shift them)."""
    if not text:
        return []
    segments: list[tuple[str, bool]] = []
    position = 0
    for start, end in highlight_spans(text, terms):
        if start > position:
            segments.append((text[position:start], False))
        segments.append((text[start:end], True))
        position = end
    if position < len(text):
        segments.append((text[position:], False))
    return segments


# -- the index file ----------------------------------------------------------------------

class KeywordHit(NamedTuple):
    uuid: str
    score: float  # BM25, higher is better


def matched_terms(caption: str | None, query: str) -> tuple[str, ...]:
    """The query's tokens that a caption holds, in query order: why a hit was found by its
    words (``highlight_spans(caption, matched_terms(caption, query))`` marks them). Worked
    out from the caption the caller already has: asking FTS5 per token and hit costs four
    times the search."""
    present = set(caption_tokens(caption))
    return tuple(token for token in query_tokens(query) if token in present)


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


# -- the same index in tantivy -------------------------------------------------------------
#
# Measured against FTS5 at 27k captions (benchmarks/keywords.py): a fifth of the query time
# and half the size, because tantivy ranks with block-max WAND where FTS5 scores every match.
# Its BM25 is Lucene's: idf = ln(1 + (N - n + 0.5) / (n + 0.5)), k1 = 1.2, b = 0.75, in 32-bit
# floats, with caption lengths kept exactly up to 40 tokens and coarser beyond (one byte per
# document, as Lucene). The index (a folder of segment files) travels as one uncompressed tar
# file, written atomically like the FTS5 file, and is unpacked into a private temporary folder
# when opened. PyPI ``tantivy`` is imported only here, when this engine is used.

TANTIVY_META = "imgsearch-keywords.json"  # beside tantivy's own meta.json


def _tantivy_schema(tantivy):
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("uuid", stored=True, tokenizer_name="raw")
    builder.add_text_field("split", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("tokens", tokenizer_name="whitespace_only", index_option="freq")
    return builder.build()


def _tantivy_tokenizer(tantivy, index) -> None:
    index.register_tokenizer("whitespace_only",
                             tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())


def write_tantivy_index(path: str | os.PathLike, ids: Sequence[str], captions: Sequence[str | None],
                        splits: Sequence[str | None] | None = None) -> str | os.PathLike:
    """``write_keyword_index`` for tantivy: the same input, one tar file at ``path``. Documents
    go in uuid order on one thread, one commit: one segment (for sets that fit the writer's
    64 MB heap), whose document order, and so the order of equal scores, is the uuid order."""
    import tantivy

    if len(set(ids)) != len(ids):
        raise ValueError("repeated uuids in the keyword index input")
    if len(ids) != len(captions) or (splits is not None and len(splits) != len(ids)):
        raise ValueError("ids, captions and splits must have the same length")
    rows = sorted(zip(ids, captions, splits if splits is not None else [None] * len(ids), strict=True),
                  key=lambda row: row[0])
    with tempfile.TemporaryDirectory(prefix="imgsearch-tantivy-") as folder, atomic_path(path) as temporary:
        schema = _tantivy_schema(tantivy)
        index = tantivy.Index(schema, path=folder)
        _tantivy_tokenizer(tantivy, index)
        writer = index.writer(heap_size=64_000_000, num_threads=1)
        for uuid, caption, split in rows:
            fields = {"uuid": uuid, "tokens": " ".join(caption_tokens(caption))}
            if split is not None:
                fields["split"] = split
            writer.add_document(tantivy.Document(**fields))
        writer.commit()
        writer.wait_merging_threads()
        Path(folder, TANTIVY_META).write_text(json.dumps(
            {"tokenizer_version": TOKENIZER_VERSION, "documents": len(rows)}))
        with tarfile.open(temporary, "w") as tar:
            for name in sorted(os.listdir(folder)):
                if not name.startswith(".tantivy-"):  # the writer's lock files
                    tar.add(os.path.join(folder, name), arcname=name)
    return path


class TantivyKeywordIndex:
    """``KeywordIndex`` over a ``write_tantivy_index`` file: the same searches, tantivy's
    scores. The file is unpacked into a private temporary folder, removed when this object
    goes (or on ``close``). tantivy's searcher is safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        import tantivy

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no keyword index at {self.path}")
        self._folder = tempfile.mkdtemp(prefix="imgsearch-keywords-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        with tarfile.open(self.path) as tar:
            tar.extractall(self._folder, filter="data")
        meta = json.loads(Path(self._folder, TANTIVY_META).read_text())
        if meta.get("tokenizer_version") != TOKENIZER_VERSION:
            self.close()
            raise ValueError(f"keyword index {self.path} was written with tokenizer version "
                             f"{meta.get('tokenizer_version')}; this code reads version "
                             f"{TOKENIZER_VERSION}: rebuild it")
        self._documents = int(meta["documents"])
        self._tantivy = tantivy
        index = tantivy.Index.open(self._folder)
        _tantivy_tokenizer(tantivy, index)
        self._schema = index.schema
        self._searcher = index.searcher()

    def __len__(self) -> int:
        return self._documents

    def search(self, query: str, k: int, offset: int = 0, split: str | None = None,
               require: Sequence[str] = ()) -> list[KeywordHit]:
        """As ``KeywordIndex.search``; the filters are zero-scored clauses, so the scores of
        what they keep do not change."""
        if k < 1 or offset < 0:
            raise ValueError(f"need k >= 1 and offset >= 0, got k={k}, offset={offset}")
        tokens = query_tokens(query)
        if not tokens:
            return []
        t, schema = self._tantivy, self._schema
        combined = t.Query.boolean_query([(t.Occur.Should, t.Query.term_query(schema, "tokens", token))
                                          for token in tokens])
        filters = [t.Query.term_query(schema, "split", split)] if split is not None else []
        filters += [t.Query.term_query(schema, "tokens", token)
                    for token in dict.fromkeys(x for word in require for x in query_tokens(word))]
        if filters:
            combined = t.Query.boolean_query([(t.Occur.Must, combined)] + [
                (t.Occur.Must, t.Query.const_score_query(f, 0.0)) for f in filters])
        hits = self._searcher.search(combined, limit=k, offset=offset, count=False).hits
        return [KeywordHit(self._searcher.doc(address)["uuid"][0], float(score)) for score, address in hits]

    def close(self) -> None:
        self._cleanup()
