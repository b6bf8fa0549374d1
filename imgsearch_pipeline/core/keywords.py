"""Caption keyword search: the tokens of a caption, and the BM25 full-text index written
with each index version of the embedded backend (tantivy: PyPI ``tantivy``, imported only
when used; Lucene's BM25 in 32-bit floats). tantivy was chosen over SQLite's FTS5 on
measurement: a fifth of FTS5's query time and half its size at 27k captions
(``benchmarks/keywords.py``, which keeps the FTS5 engine for that comparison).

Tokens are made here, in Python, and the engine only stores and scores them: given text that
is already tokens joined by spaces, tantivy's whitespace tokenizer gives the same tokens
back. So the index, the query, Elasticsearch's ``caption_keywords`` field and the
highlighting share one tokenizer, tested without any engine.

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
  character bigrams of each run, as Lucene's CJK bigram filter does (a Unicode word
  tokenizer would index a whole run as one token, so ``東京`` would not find ``東京タワー``; a
  trigram tokenizer cannot match two-character words, the commonest in Chinese and
  Japanese). A run of one character is one token. Thai words are not segmented: bigrams
  approximate them.

A query is the OR of its distinct tokens, one term query each: user text never reaches a
query syntax.
"""

import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import unicodedata
import weakref
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .tables import atomic_path

TOKENIZER_VERSION = 1  # bump when caption_tokens changes: old index files then refuse to open

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
    out from the caption the caller already has: asking the engine per token and hit costs
    several times the search."""
    present = set(caption_tokens(caption))
    return tuple(token for token in query_tokens(query) if token in present)


# -- the index, in tantivy ------------------------------------------------------------------
#
# tantivy ranks with block-max WAND (FTS5 scores every match: why it is faster). Its BM25 is
# Lucene's: idf = ln(1 + (N - n + 0.5) / (n + 0.5)), k1 = 1.2, b = 0.75, in 32-bit floats,
# with caption lengths kept exactly up to 40 tokens and coarser beyond (one byte per
# document, as Lucene). The index (a folder of segment files) travels as one uncompressed tar
# file, written atomically (built in a temporary file, then renamed or uploaded over the
# target), and is unpacked into a private temporary folder when opened.

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
    """Write the caption index of one index version to ``path`` (a local file or an ``s3://``
    URI), whole or not at all: one tar file. A caption of None is a document with no tokens
    (found by no keyword query). Documents go in uuid order on one thread, one commit: one
    segment (for sets that fit the writer's 64 MB heap), whose document order, and so the
    order of equal scores, is the uuid order."""
    return _write_tantivy(path, None, ids, captions, splits, ())


def extend_tantivy_index(base: str | os.PathLike, path: str | os.PathLike, ids: Sequence[str],
                         captions: Sequence[str | None], splits: Sequence[str | None] | None = None,
                         removed: Iterable[str] = ()) -> str | os.PathLike:
    """A new index file at ``path``: the one at ``base`` minus the ``removed`` uuids, plus the
    given documents, in one commit. Only the new captions are tokenised (the base's segments
    are copied as they are): it costs what changed. As in Lucene, a removed document counts in
    the term statistics until its segment is merged, so scores may differ slightly from a
    fresh build's; it is never returned."""
    return _write_tantivy(path, base, ids, captions, splits, removed)


def _write_tantivy(path: str | os.PathLike, base: str | os.PathLike | None, ids: Sequence[str],
                   captions: Sequence[str | None], splits: Sequence[str | None] | None,
                   removed: Iterable[str]) -> str | os.PathLike:
    import tantivy

    if len(set(ids)) != len(ids):
        raise ValueError("repeated uuids in the keyword index input")
    if len(ids) != len(captions) or (splits is not None and len(splits) != len(ids)):
        raise ValueError("ids, captions and splits must have the same length")
    rows = sorted(zip(ids, captions, splits if splits is not None else [None] * len(ids), strict=True),
                  key=lambda row: row[0])
    with tempfile.TemporaryDirectory(prefix="imgsearch-tantivy-") as folder, atomic_path(path) as temporary:
        documents = 0
        if base is None:
            index = tantivy.Index(_tantivy_schema(tantivy), path=folder)
        else:
            documents = _unpack(base, folder)
            index = tantivy.Index.open(folder)
        _tantivy_tokenizer(tantivy, index)
        writer = index.writer(heap_size=64_000_000, num_threads=1)
        for uuid in dict.fromkeys(removed):  # deletes first: a removed uuid may come back
            documents -= 1
            writer.delete_documents_by_term("uuid", uuid)
        for uuid, caption, split in rows:
            fields = {"uuid": uuid, "tokens": " ".join(caption_tokens(caption))}
            if split is not None:
                fields["split"] = split
            writer.add_document(tantivy.Document(**fields))
        writer.commit()
        writer.wait_merging_threads()
        Path(folder, TANTIVY_META).write_text(json.dumps(
            {"tokenizer_version": TOKENIZER_VERSION, "documents": documents + len(rows)}))
        with tarfile.open(temporary, "w") as tar:
            for name in sorted(os.listdir(folder)):
                if not name.startswith(".tantivy-"):  # the writer's lock files
                    tar.add(os.path.join(folder, name), arcname=name)
    return path


def _unpack(path: str | os.PathLike, folder: str) -> int:
    """Unpack an index file into ``folder``; its document count (ValueError when it was
    written with other tokens: its terms would not match this code's queries)."""
    with tarfile.open(path) as tar:
        tar.extractall(folder, filter="data")
    meta = json.loads(Path(folder, TANTIVY_META).read_text())
    if meta.get("tokenizer_version") != TOKENIZER_VERSION:
        raise ValueError(f"keyword index {path} was written with tokenizer version "
                         f"{meta.get('tokenizer_version')}; this code reads version "
                         f"{TOKENIZER_VERSION}: rebuild it")
    return int(meta["documents"])


class TantivyKeywordIndex:
    """Read-only BM25 search over a ``write_tantivy_index`` file. The file is unpacked into a
    private temporary folder, removed when this object goes (or on ``close``). tantivy's
    searcher is safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        import tantivy

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no keyword index at {self.path}")
        self._folder = tempfile.mkdtemp(prefix="imgsearch-keywords-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        try:
            self._documents = _unpack(self.path, self._folder)
        except BaseException:
            self.close()
            raise
        self._tantivy = tantivy
        index = tantivy.Index.open(self._folder)
        _tantivy_tokenizer(tantivy, index)
        self._schema = index.schema
        self._searcher = index.searcher()
        self._uuids: list[str] | None = None
        self._first = np.zeros(0, np.int64)
        self._uuids_lock = threading.Lock()

    def _table(self) -> tuple[list[str], np.ndarray]:
        """Each document's uuid by its ordinal (its segment's first ordinal plus its number
        there), and each segment's first ordinal; read once: a stored-field read per hit costs
        as much as the search itself for the fusion window's 100 hits."""
        with self._uuids_lock:
            if self._uuids is None:
                everything = self._searcher.search(self._tantivy.Query.all_query(),
                                                   limit=max(1, self._searcher.num_docs), count=False)
                at: dict[int, dict[int, str]] = {}
                for _, a in everything.hits:
                    at.setdefault(a.segment_ord, {})[a.doc] = self._searcher.doc(a)["uuid"][0]
                uuids: list[str] = []
                first: list[int] = []
                for segment in range(max(at, default=-1) + 1):
                    docs = at.get(segment, {})
                    first.append(len(uuids))
                    # Deleted documents (an incremental version's removals) are never hits: "".
                    uuids += [docs.get(d, "") for d in range(max(docs, default=-1) + 1)]
                self._uuids, self._first = uuids, np.asarray(first, dtype=np.int64)
            return self._uuids, self._first

    def uuids_by_ordinal(self) -> list[str]:
        """Each document's uuid at its ordinal (``search_ordinals``); "" for a deleted one."""
        return self._table()[0]

    def __len__(self) -> int:
        return self._documents

    def search(self, query: str, k: int, offset: int = 0, split: str | None = None,
               require: Sequence[str] = ()) -> list[KeywordHit]:
        """``search_ordinals`` as hits, each with its uuid."""
        ordinals, scores = self.search_ordinals(query, k, offset, split, require)
        uuids = self.uuids_by_ordinal()
        return [KeywordHit(uuids[o], score) for o, score in zip(ordinals.tolist(), scores, strict=True)]

    def search_ordinals(self, query: str, k: int, offset: int = 0, split: str | None = None,
                        require: Sequence[str] = ()) -> tuple[np.ndarray, list[float]]:
        """The ordinals (``uuids_by_ordinal``) and BM25 scores of the ``k`` best captions for
        ``query`` after the first ``offset``, best first: numbers, not uuids, so that a caller
        can map them to its own rows in one step (hybrid search reads the window whole).
        ``split`` keeps that split only; ``require`` (the caption filter's words) keeps
        captions holding every token of every one of them: zero-scored clauses, so the scores
        of what they keep do not change. A query without tokens finds nothing. Which terms
        each hit matched: ``matched_terms`` on its caption."""
        if k < 1 or offset < 0:
            raise ValueError(f"need k >= 1 and offset >= 0, got k={k}, offset={offset}")
        tokens = query_tokens(query)
        if not tokens:
            return np.zeros(0, np.int64), []
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
        first = self._table()[1]
        ordinals = (first[np.fromiter((a.segment_ord for _, a in hits), np.int64, len(hits))]
                    + np.fromiter((a.doc for _, a in hits), np.int64, len(hits)))
        return ordinals, [score for score, _ in hits]

    def close(self) -> None:
        self._cleanup()
