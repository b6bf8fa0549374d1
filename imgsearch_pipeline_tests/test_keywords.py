"""Caption keyword search: the tokens of Instagram-like captions; the project's tantivy index's
ranking checked against Lucene's BM25 written out in numpy, and the benchmark's FTS5 engine
(``benchmarks/fts5.py``, what tantivy was compared with) against an independent BM25
(rank_bm25, with FTS5's constants and idf)."""

import math
import os
import random
import sqlite3
import threading

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from benchmarks import fts5
from imgsearch_pipeline.core import keywords as kw

# -- tokens ----------------------------------------------------------------------------

def test_hashtags_mentions_emoji_accents_and_other_scripts_get_tokens():
    assert kw.caption_tokens("Golden hour 🌅 #Sunset #beachLife @nat.geo") == [
        "golden", "hour", "🌅", "#sunset", "sunset", "#beachlife", "beachlife",
        "@nat.geo", "nat", "geo"]
    # Accents fold (composed or combining), case folds, full-width and ligatures fold.
    assert kw.caption_tokens("Café CAFÉ cafe\u0301 Ｔｏｋｙｏ ﬁne") == ["cafe"] * 3 + ["tokyo", "fine"]
    # Non-Latin scripts written with spaces stay words, their vowel signs kept.
    assert kw.caption_tokens("नमस्ते दुनिया Привет") == ["नमस्ते", "दुनिया", "привет"]
    # Scripts written without spaces become overlapping bigrams (a lone character: itself).
    assert kw.caption_tokens("東京タワー 猫") == ["東京", "京タ", "タワ", "ワー", "猫"]
    # Half-width katakana folds to full width; a mixed run splits by script.
    assert kw.caption_tokens("ｶﾀｶﾅ 東京2020") == ["カタ", "タカ", "カナ", "東京", "2020"]
    # A flag is one token; skin tones, variation selectors and the keycap are dropped.
    assert kw.caption_tokens("🇫🇷 👍🏽 ❤️ 1️⃣") == ["🇫🇷", "👍", "❤", "1"]
    # Not hashtags or mentions: inside a word, an e-mail address, a trailing dot.
    assert kw.caption_tokens("C# me@x.com ##tag @user.") == ["c", "me", "x", "com", "#tag", "tag",
                                                             "@user", "user"]
    assert kw.caption_tokens(None) == kw.caption_tokens("") == kw.caption_tokens(" .,!? ") == []


def test_a_hashtag_query_asks_for_the_tag_and_a_word_query_for_both():
    assert kw.query_tokens("#Sunset sunset SUNSET") == ["#sunset", "sunset"]
    assert kw.query_tokens("@nat.geo") == ["@nat.geo"]


def test_highlight_spans_point_into_the_original_caption():
    caption = "Sunset at the #sunset café, CAFÉ!"
    spans = kw.highlight_spans(caption, ["sunset", "cafe"])
    assert [caption[a:b] for a, b in spans] == ["Sunset", "sunset", "café", "CAFÉ"]
    assert [caption[a:b] for a, b in kw.highlight_spans(caption, ["#sunset"])] == ["#sunset"]
    segments = kw.highlight_segments("🌅 Café at #sunset", ["cafe", "#sunset"])
    assert segments == [("🌅 ", False), ("Café", True), (" at ", False), ("#sunset", True)]
    assert "".join(piece for piece, _ in segments) == "🌅 Café at #sunset"
    assert kw.highlight_segments(None, ["a"]) == [] and kw.highlight_segments("x", []) == [("x", False)]
    # Overlapping bigrams merge into one span.
    assert [("東京タワー"[a:b]) for a, b in kw.highlight_spans("東京タワー", ["東京", "京タ"])] == ["東京タ"]


def test_match_expressions_quote_every_token():
    assert fts5.match_expression(['a"b', "near"]) == '"a""b" OR "near"'
    with pytest.raises(ValueError, match="at least one token"):
        fts5.match_expression([])


# -- the index -------------------------------------------------------------------------

POSTS = {
    "p1": "Sunset at the beach #sunset #beachlife",
    "p2": "A sunset walk",
    "p3": "#Sunset 🌅 with @nat.geo",
    "p4": "Café au lait in Paris",
    "p5": "cafe crème, PARIS",
    "p6": "東京タワーの夜景 #東京",
    "p7": None,
    "p8": "京都の紅葉",
}


def engine(name: str):
    """(writer, reader) of an engine: the project's tantivy, or the benchmark's FTS5."""
    if name == "tantivy":
        return kw.write_tantivy_index, kw.TantivyKeywordIndex
    return fts5.write_keyword_index, fts5.KeywordIndex


@pytest.fixture(params=["fts5", "tantivy"])
def engine_name(request):
    return request.param


@pytest.fixture
def index(tmp_path, engine_name):
    write, read = engine(engine_name)
    path = tmp_path / "keywords.index"
    splits = ["train" if i % 2 else "test" for i in range(len(POSTS))]
    write(path, list(POSTS), list(POSTS.values()), splits)
    return read(path)


def found(hits) -> list[str]:
    return [hit.uuid for hit in hits]


def test_hashtag_accent_and_cjk_queries(index):
    # "#sunset" finds only the tagged posts; "sunset" finds the word and the tag.
    assert sorted(found(index.search("#sunset", 10))) == ["p1", "p3"]
    assert sorted(found(index.search("sunset", 10))) == ["p1", "p2", "p3"]
    tagged = {hit.uuid: kw.matched_terms(POSTS[hit.uuid], "#sunset sunset")
              for hit in index.search("#sunset sunset", 10)}
    assert tagged == {"p1": ("#sunset", "sunset"), "p3": ("#sunset", "sunset"), "p2": ("sunset",)}
    assert kw.matched_terms(None, "sunset") == ()
    # Accents and case do not matter, either way round.
    assert sorted(found(index.search("CAFÉ", 10))) == sorted(found(index.search("cafe", 10))) == ["p4", "p5"]
    # A two-character word finds the longer run it is part of; mentions and emoji are words.
    assert found(index.search("東京", 10)) == ["p6"]
    assert found(index.search("紅葉", 10)) == ["p8"]
    assert found(index.search("@nat.geo", 10)) == found(index.search("🌅", 10)) == ["p3"]
    assert index.search("nothing-like-it", 10) == [] and index.search("  ", 10) == []


def test_fts5_unicode61_alone_would_not_segment_cjk():
    # Why the bigrams: FTS5's unicode61 indexes a run of ideographs and kana as one token,
    # so a word inside the run is not found (this documents SQLite's behaviour).
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'unicode61 remove_diacritics 2')")
    db.execute("INSERT INTO t VALUES ('東京タワーの夜景'), ('café')")
    assert db.execute("SELECT count(*) FROM t WHERE t MATCH '\"東京\"'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM t WHERE t MATCH '\"東京タワーの夜景\"'").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM t WHERE t MATCH '\"cafe\"'").fetchone() == (1,)


@pytest.mark.parametrize("query", [
    '"', '""', '"sunset', "sunset*", "NEAR(sunset beach)", "sunset AND", "OR", "NOT sunset",
    "-sunset", "tokens:sunset", "uuid:p1", "^sunset", "(sunset", "sunset)", "'; DROP TABLE captions; --",
    "{tokens} : sunset", "\x00sunset", "+sunset", "sunset + beach",
])
def test_query_syntax_in_user_text_is_only_words(index, query):
    hits = index.search(query, 10)  # never a syntax error
    expected = {hit.uuid for token in kw.query_tokens(query) for hit in index.search(token, 10)}
    assert set(found(hits)) == expected


def test_split_filter_required_words_and_paging(index):
    everything = index.search("sunset paris cafe 東京", 20)
    assert len(everything) == 6
    pages = [hit for offset in range(0, 6, 2) for hit in index.search("sunset paris cafe 東京", 2, offset)]
    assert pages == everything
    assert index.search("sunset paris cafe 東京", 5, offset=6) == []
    splits = {uuid: "train" if i % 2 else "test" for i, uuid in enumerate(POSTS)}
    assert found(index.search("sunset paris cafe", 10, split="train")) == [
        h.uuid for h in index.search("sunset paris cafe", 10) if splits[h.uuid] == "train"]
    # Required words filter without changing the scores of what is left.
    kept = index.search("sunset cafe", 10, require=["beach"])
    assert found(kept) == ["p1"]
    assert kept[0].score == next(h.score for h in index.search("sunset cafe", 10) if h.uuid == "p1")
    with pytest.raises(ValueError):
        index.search("sunset", 0)


def test_write_is_atomic_and_refuses_bad_input(tmp_path, engine_name):
    write, read = engine(engine_name)
    path = tmp_path / "v1" / "keywords.index"
    write(path, ["a"], ["old caption"])

    class Failing(list):
        def __iter__(self):
            yield "new caption"
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write(path, ["a", "b"], Failing(["x", "y"]))
    assert os.listdir(path.parent) == ["keywords.index"]  # no temporary left behind
    assert found(read(path).search("old", 5)) == ["a"]
    with pytest.raises(ValueError, match="repeated uuids"):
        write(path, ["a", "a"], ["x", "y"])
    with pytest.raises(ValueError, match="same length"):
        write(path, ["a", "b"], ["x"])


def test_an_index_of_another_tokenizer_version_is_refused(tmp_path):
    path = tmp_path / "keywords.sqlite"
    fts5.write_keyword_index(path, ["a"], ["caption"])
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {kw.TOKENIZER_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="rebuild"):
        fts5.KeywordIndex(path)
    with pytest.raises(FileNotFoundError):
        fts5.KeywordIndex(tmp_path / "missing.sqlite")


def test_searches_from_many_threads(index):
    expected = index.search("sunset cafe", 10)
    answers, errors = [], []

    def run():
        try:
            for _ in range(20):
                answers.append(index.search("sunset cafe", 10))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 80 and all(answer == expected for answer in answers)


# -- ranking against an independent BM25 -----------------------------------------------

WORDS = ["sunset", "beach", "coffee", "paris", "dog", "cat", "mountain", "snow", "city", "night",
         "friends", "food", "love", "summer", "travel", "art", "music", "flowers", "sea", "sky",
         "café", "Zürich", "naïve", "東京", "夜景", "🌅", "☕", "🐶", "❤️"]


def generated_captions(n: int, seed: int = 7) -> dict[str, str | None]:
    """Captions of 1..25 words drawn Zipf-like from a small vocabulary (so that common words
    are in more than half the captions: FTS5's idf floor is exercised), with hashtags,
    mentions, repeated words and a few empty captions."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    captions: dict[str, str | None] = {}
    for i in range(n):
        if i % 97 == 0:
            captions[f"u{i:05d}"] = None
            continue
        words = rng.choices(WORDS, weights, k=rng.randint(1, 25))
        words = [f"#{w}" if rng.random() < 0.15 else w for w in words]
        if rng.random() < 0.1:
            words.append(f"@friend.{rng.randint(1, 9)}")
        captions[f"u{i:05d}"] = " ".join(words)
    return captions


def reference_ranking(corpus: list[list[str]], ids: list[str], query: list[str]) -> list[tuple[str, float]]:
    """rank_bm25's Okapi BM25 with FTS5's constants and idf: k1 = 1.2, b = 0.75 and
    idf = ln((N - n + 0.5) / (n + 0.5)), raised to 1e-6 where it is not positive (SQLite's
    fts5_aux.c; rank_bm25's own floor is epsilon * the mean idf, so it is replaced)."""
    bm25 = BM25Okapi(corpus, k1=1.2, b=0.75)
    n_docs = len(corpus)
    for term in query:
        hits = sum(1 for doc in corpus if term in doc)
        idf = math.log((n_docs - hits + 0.5) / (hits + 0.5))
        bm25.idf[term] = idf if idf > 0 else 1e-6
    scores = bm25.get_scores(query)
    matching = [i for i, doc in enumerate(corpus) if any(term in doc for term in query)]
    return sorted(((ids[i], float(scores[i])) for i in matching), key=lambda x: (-x[1], x[0]))


def test_keyword_ranking_is_the_reference_bm25_ranking(tmp_path):
    captions = generated_captions(3000)
    ids = list(captions)
    path = tmp_path / "keywords.sqlite"
    fts5.write_keyword_index(path, ids, list(captions.values()))
    index = fts5.KeywordIndex(path)
    corpus = [kw.caption_tokens(c) for c in captions.values()]
    rng = random.Random(11)
    queries = ["sunset", "#sunset", "zurich", "東京 夜景", "☕ coffee", "dog cat sea", "@friend.3",
               "Naïve art music", "love #love", "snow mountain city night"]
    queries += [" ".join(rng.sample(WORDS, rng.randint(1, 4))) for _ in range(30)]
    compared = 0
    for query in queries:
        tokens = kw.query_tokens(query)
        expected = reference_ranking(corpus, ids, tokens)
        got = index.search(query, len(ids))
        assert [h.uuid for h in got] == [uuid for uuid, _ in expected], query
        for hit, (_, score) in zip(got, expected, strict=True):
            assert hit.score == pytest.approx(score, rel=1e-9, abs=1e-15)
        compared += len(got)
    assert compared > 20_000  # the comparison covered most of the set, not a few hits


def lucene_reference_ranking(corpus: list[list[str]], ids: list[str],
                             query: list[str]) -> list[tuple[str, float]]:
    """Lucene's BM25 as tantivy documents it, written out here in 32-bit floats: idf =
    ln(1 + (N - n + 0.5) / (n + 0.5)), weight = idf * (1 + k1), k1 = 1.2, b = 0.75, the mean
    length in float32, each term's part weight * tf / (tf + k1 * (1 - b + b * len / mean)),
    summed in query order. Exact for captions of at most 40 tokens (longer lengths are
    stored coarsely, one byte a document)."""
    f32 = np.float32
    mean = f32(sum(map(len, corpus))) / f32(len(corpus))
    lengths = np.array([len(doc) for doc in corpus], dtype=np.float32)
    scores = np.zeros(len(corpus), dtype=np.float32)
    matched = np.zeros(len(corpus), dtype=bool)
    for term in query:
        tf = np.array([doc.count(term) for doc in corpus], dtype=np.float32)
        hits = int((tf > 0).sum())
        if not hits:
            continue
        idf = f32(math.log(1.0 + float((f32(len(corpus) - hits) + f32(0.5)) / (f32(hits) + f32(0.5)))))
        norm = f32(1.2) * (f32(1.0) - f32(0.75) + f32(0.75) * lengths / mean)
        part = (idf * f32(2.2)) * (tf / (tf + norm))
        scores = np.where(tf > 0, scores + part, scores)
        matched |= tf > 0
    return sorted(((ids[i], float(scores[i])) for i in np.flatnonzero(matched)), key=lambda x: (-x[1], x[0]))


def test_tantivy_ranking_is_the_reference_lucene_bm25_ranking(tmp_path):
    captions = generated_captions(3000)
    ids = sorted(captions)
    path = tmp_path / "keywords.tar"
    kw.write_tantivy_index(path, ids, [captions[u] for u in ids])
    index = kw.TantivyKeywordIndex(path)
    corpus = [kw.caption_tokens(captions[u]) for u in ids]
    assert max(map(len, corpus)) <= 40  # lengths stored exactly: the reference is exact
    rng = random.Random(11)
    queries = ["sunset", "#sunset", "zurich", "東京 夜景", "☕ coffee", "dog cat sea", "@friend.3",
               "Naïve art music", "love #love", "snow mountain city night"]
    queries += [" ".join(rng.sample(WORDS, rng.randint(1, 4))) for _ in range(30)]
    compared = 0
    for query in queries:
        expected = lucene_reference_ranking(corpus, ids, kw.query_tokens(query))
        got = index.search(query, len(ids))
        assert [h.uuid for h in got] == [uuid for uuid, _ in expected], query
        # Scores to float32 precision (tantivy's logarithm and division order differ a little).
        assert [h.score for h in got] == pytest.approx([score for _, score in expected], rel=1e-6)
        compared += len(got)
    assert compared > 20_000
