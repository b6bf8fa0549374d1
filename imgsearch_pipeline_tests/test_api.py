"""The search API on a demo index built in the test session (colour-texture, and tiny SigLIP)."""

import collections
import io
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.service import collapse_near_duplicates
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.api.upload import BadUpload, upload_from_body
from imgsearch_pipeline.core.images import load_rgb
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources.embedders import ColorTextureModel
from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, Hit

from .pipeline import materialize_all, pipeline_resources

PROJECT = Path(__file__).resolve().parents[1]
SOURCE_SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".js", ".css", ".html", ".txt")
_BUILT: dict[tuple[str, str], Path] = {}


def build_demo(tmp_path_factory, dataset: Path, embedder: str = "color-texture",
               model: str | None = None) -> Path:
    """Materialise the graph once per (dataset, embedder) for the session; returns the home."""
    key = (str(dataset), embedder)
    if key not in _BUILT:
        home = tmp_path_factory.mktemp(f"api-{embedder}") / "var"
        assert materialize_all(pipeline_resources(home, dataset, embedder, model=model)).success
        _BUILT[key] = home
    return _BUILT[key]


def demo_env(home: Path, embedder: str = "color-texture", model: str | None = None) -> dict:
    env = {"IMGSEARCH_HOME": str(home), "IMGSEARCH_EMBEDDER": embedder}
    return {**env, "IMGSEARCH_MODEL": model} if model else env


class Demo:
    """The demo index's posts: scenes (near-duplicate groups), splits and image bytes."""

    def __init__(self, home: Path):
        self.home = home
        self.posts = {p["uuid"]: p for p in pq.read_table(home / "tables/posts.parquet").to_pylist()}
        self.store = LocalObjectStore(root=str(home / "objects"))
        self.indexed = {p for p, row in self.posts.items() if row["split"] == "train"}
        self.train_per_scene = collections.Counter(self.posts[u]["scene"] for u in self.indexed)

    def image(self, uuid: str) -> bytes:
        return self.store.get(self.posts[uuid]["key"])

    def scene(self, uuid: str) -> int:
        return self.posts[uuid]["scene"]

    def held_out_with_twins(self, twins: int = 3) -> list[str]:
        """Test-split posts (not in the index) whose scene has ``twins``+ indexed copies."""
        return [u for u, row in self.posts.items()
                if row["split"] == "test" and self.train_per_scene[row["scene"]] >= twins]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset) -> Demo:
    return Demo(build_demo(tmp_path_factory, sample_dataset))


@pytest.fixture(scope="module")
def client(demo):
    with TestClient(create_app(demo_env(demo.home))) as test_client:
        yield test_client


def upload(client, data: bytes, query: str = "", **kwargs):
    return client.post(f"/search{query}", files={"image": ("query.jpg", data, "image/jpeg")},
                       **kwargs)


def leading_same_scene(demo: Demo, query: str, hits: list[dict]) -> int:
    """How many hits in a row, from the first, show the query's scene."""
    run = 0
    for hit in hits:
        if demo.scene(hit["uuid"]) != demo.scene(query):
            break
        run += 1
    return run


# -- health, schema -----------------------------------------------------------------------


def test_health_describes_the_live_index(client, demo):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["index_loaded"]
    assert body["documents"] == len(demo.indexed)
    live = FaissHnswIndex(root=str(demo.home / "index")).live_version()
    assert body["index_version"] == body["live_version"] == live
    assert body["model_id"] == ColorTextureModel.model_id
    assert body["backend"] == "faiss-hnsw"
    assert body["text_search"] is False


def test_openapi_schema_documents_every_route(client):
    schema = client.get("/openapi.json").json()
    assert {"/search", "/images/{uuid}", "/images/{uuid}/similar", "/health"} <= set(schema["paths"])
    upload_body = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    assert {"SearchResponse", "SearchHit", "Health", "ErrorResponse"} <= set(schema["components"]["schemas"])
    responses = schema["paths"]["/search"]["post"]["responses"]
    assert {"200", "413", "422"} <= set(responses)


def test_web_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert client.get("/static/app.js").status_code == 200


# -- search by image ----------------------------------------------------------------------


def test_upload_ranks_near_duplicates_first(client, demo):
    queries = demo.held_out_with_twins()
    assert queries, "the sample data should hold test posts with indexed near-duplicates"
    for query in queries:
        response = upload(client, demo.image(query), "?k=10")
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        assert len(hits) == 10
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert query not in {h["uuid"] for h in hits}  # held out: not in the index
        # The first hit is always a near-duplicate, and most of the scene's copies lead.
        twins = min(demo.train_per_scene[demo.scene(query)], 10)
        assert leading_same_scene(demo, query, hits) >= max(1, twins // 2), (query, hits)


def test_indexed_image_finds_itself_first(client, demo):
    query = sorted(demo.indexed)[0]
    hit = upload(client, demo.image(query)).json()["hits"][0]
    assert hit["uuid"] == query and hit["score"] == pytest.approx(1.0, abs=1e-4)
    assert hit["caption"] == demo.posts[query]["caption"]
    assert hit["image_url"] == f"/images/{query}"  # relative: never built from the Host header


def test_raw_image_body_gives_the_same_answer(client, demo):
    data = demo.image(demo.held_out_with_twins()[0])
    multipart = upload(client, data).json()["hits"]
    raw = client.post("/search", content=data, headers={"content-type": "image/jpeg"}).json()["hits"]
    assert multipart == raw


def test_server_timing_separates_embedding_from_search(client, demo):
    response = upload(client, demo.image(sorted(demo.indexed)[0]))
    stages = response.json()["timings_ms"]
    assert set(stages) == {"decode", "embed", "search"}
    assert all(value >= 0 for value in stages.values())
    assert "embed;dur=" in response.headers["server-timing"]


@pytest.mark.parametrize("query", ["?k=0", "?k=101", "?k=ten", "?num_candidates=0",
                                   "?num_candidates=5000", "?collapse=1.5", "?split=dev"])
def test_bad_parameters_give_422_with_a_message(client, demo, query):
    response = upload(client, demo.image(sorted(demo.indexed)[0]), query)
    assert response.status_code == 422
    assert response.json()["message"]


def test_num_candidates_below_k_is_raised_to_k(client, demo):
    # The schema cannot state "num_candidates >= k", so the server does not refuse it.
    data = demo.image(sorted(demo.indexed)[0])
    assert len(upload(client, data, "?k=5&num_candidates=4").json()["hits"]) == 5


def test_k_bounds(client, demo):
    data = demo.image(sorted(demo.indexed)[0])
    assert len(upload(client, data, "?k=1").json()["hits"]) == 1
    assert len(upload(client, data, "?k=100&num_candidates=200").json()["hits"]) == 100


def test_caption_filter_applies_inside_the_search(client, demo):
    query = demo.held_out_with_twins()[0]
    word = demo.posts[query]["caption"].split()[1]  # the shape, e.g. "rings"
    hits = upload(client, demo.image(query), f"?k=20&caption={word}").json()["hits"]
    matching = sum(word in (demo.posts[u]["caption"] or "") for u in demo.indexed)
    assert len(hits) == min(20, matching)
    assert all(word in h["caption"].lower() for h in hits)
    none = upload(client, demo.image(query), "?caption=nosuchword").json()["hits"]
    assert none == []


def test_collapse_folds_near_identical_hits(client, demo):
    ids, matrix = read_vectors(Layout.at(demo.home).embeddings(ColorTextureModel.model_id))
    vector = dict(zip(ids, matrix, strict=True))
    query = demo.held_out_with_twins()[0]
    plain = upload(client, demo.image(query), "?k=10").json()["hits"]
    folded = upload(client, demo.image(query), "?k=10&collapse=0.95").json()["hits"]
    assert len(folded) == 10
    assert sum(h["duplicates"] for h in folded) > 0
    assert len({h["uuid"] for h in folded} & {h["uuid"] for h in plain}) < 10
    kept = [vector[h["uuid"]] for h in folded]
    for i in range(len(kept)):
        for j in range(i):
            assert float(kept[i] @ kept[j]) <= 0.95


def test_collapse_keeps_the_best_of_each_group():
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.999, 0.0447]), "c": np.array([0.0, 1.0])}
    hits = [Hit("a", 0.9), Hit("b", 0.89), Hit("c", 0.5), Hit("d", 0.4)]
    kept = collapse_near_duplicates(hits, vectors.get, 0.98)
    assert [(r.hit.uuid, r.duplicates) for r in kept] == [("a", 1), ("c", 0), ("d", 0)]


# -- text search --------------------------------------------------------------------------


def test_text_search_without_a_text_tower_is_keyword_search_and_says_so(client):
    for mode in (None, "hybrid", "semantic", "keyword"):
        params = {"text": "red circle", **({"mode": mode} if mode else {})}
        response = client.get("/search", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mode"] == "keyword" and body["fusion"] is None
        assert (body["note"] is None) == (mode == "keyword")
        if body["note"]:
            assert "no text tower" in body["note"] and "keyword" in body["note"]
        assert body["hits"] and body["num_candidates"] == 0
        for hit in body["hits"]:  # found by its words, no vector compared
            assert hit["found_by"] == "words" and hit["score"] is None
            assert hit["keyword_score"] > 0 and hit["matched_terms"]
            assert set(hit["matched_terms"]) <= {"red", "circle"}
            assert "".join(s["text"] for s in hit["highlight"]) == hit["caption"]
            marked = {s["text"].lower() for s in hit["highlight"] if s["mark"]}
            assert marked == set(hit["matched_terms"])


def test_keyword_search_keeps_the_caption_filter_and_pages_and_a_hashtag_finds_its_tag(client, demo):
    tag = next(w for w in demo.posts[sorted(demo.indexed)[0]]["caption"].split() if w.startswith("#"))
    tagged = client.get("/search", params={"text": tag, "mode": "keyword", "k": 100}).json()
    expected = {u for u in demo.indexed if tag in demo.posts[u]["caption"].split()}
    assert {h["uuid"] for h in tagged["hits"]} == expected
    assert all(h["matched_terms"] == [tag.lower()] for h in tagged["hits"])
    words = client.get("/search", params={"text": tag[1:], "mode": "keyword", "k": 100}).json()
    assert expected <= {h["uuid"] for h in words["hits"]}  # the word finds the tag too
    word = client.get("/search", params={"text": "red", "mode": "keyword", "k": 100,
                                         "caption": "circle"}).json()
    assert word["hits"] and all("circle" in h["caption"].lower() and "red" in h["matched_terms"]
                                for h in word["hits"])
    first = client.get("/search", params={"text": "red", "mode": "keyword", "k": 5}).json()
    second = client.get("/search", params={"text": "red", "mode": "keyword", "k": 5,
                                           "offset": first["next_offset"]}).json()
    both = client.get("/search", params={"text": "red", "mode": "keyword", "k": 10}).json()
    assert [h["uuid"] for h in first["hits"] + second["hits"]] == [h["uuid"] for h in both["hits"]]


def test_the_fusion_settings_are_in_the_schema_and_end_the_hybrid_list(demo):
    env = {**demo_env(demo.home), "IMGSEARCH_API_RRF_WINDOW": "12",
           "IMGSEARCH_API_RRF_RANK_CONSTANT": "5"}
    with TestClient(create_app(env)) as small:
        schema = small.get("/openapi.json").json()
        (mode,) = [p for p in schema["paths"]["/search"]["get"]["parameters"] if p["name"] == "mode"]
        assert mode["schema"]["x-rrf"] == {"rank_constant": 5, "window": 12}
        assert "rank constant 5" in mode["description"] and "no text tower" in mode["description"]
        query = sorted(demo.indexed)[2]
        pages, offset = [], 0
        while offset is not None:
            body = upload(small, demo.image(query), f"?text=blue&k=5&offset={offset}").json()
            assert body["fusion"] == {"rank_constant": 5, "window": 12}
            pages.append(body["hits"])
            offset = body["next_offset"]
        assert [len(page) for page in pages] == [5, 5, 2]  # the list ends at the window
        scores = [h["rrf_score"] for page in pages for h in page]
        assert scores == sorted(scores, reverse=True) and scores[0] <= 2 / 6


def test_text_search_needs_text(client):
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"text": "   "}).status_code == 422


# -- more like this, images ---------------------------------------------------------------


def test_similar_ranks_the_scene_first_and_leaves_the_post_out(client, demo):
    for query in demo.held_out_with_twins()[:5]:
        response = client.get(f"/images/{query}/similar", params={"k": 5})
        assert response.status_code == 200
        hits = response.json()["hits"]
        assert query not in {h["uuid"] for h in hits}
        assert leading_same_scene(demo, query, hits) >= 1
    indexed = sorted(demo.indexed)[0]
    hits = client.get(f"/images/{indexed}/similar", params={"k": 5}).json()["hits"]
    assert len(hits) == 5 and indexed not in {h["uuid"] for h in hits}


def test_image_bytes_and_content_type(client, demo):
    uuid = sorted(demo.indexed)[0]
    response = client.get(f"/images/{uuid}")
    assert response.status_code == 200
    assert response.content == demo.image(uuid)
    assert response.headers["content-type"] == demo.posts[uuid]["content_type"]


def test_image_redirects_when_the_store_gives_a_url(client, demo, monkeypatch):
    monkeypatch.setattr(LocalObjectStore, "url", lambda self, key: f"https://bucket.example/{key}?sig=1")
    uuid = sorted(demo.indexed)[0]
    response = client.get(f"/images/{uuid}", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"https://bucket.example/{demo.posts[uuid]['key']}?sig=1"


@pytest.mark.parametrize("path", [
    "/images/not-a-uuid", "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e",
    "/images/6F1C3A52-4D0E-5B8A-9C47-2E5D8F0A1B63", "/images/x/similar",
    "/images/00000000-0000-0000-0000-000000000000",
    "/images/00000000-0000-0000-0000-000000000000/similar",
])
def test_bad_or_unknown_uuids_are_404_or_422(client, path):
    response = client.get(path)
    assert response.status_code in (404, 422)
    assert response.json()["message"]


# -- bad uploads --------------------------------------------------------------------------


def _png(size: tuple[int, int], mode: str = "RGB", noise: bool = False) -> bytes:
    if noise:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), np.uint8))
    else:
        image = Image.new(mode, size)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello, this is text", "not an image"),
    (_png((20_000, 20_000), mode="1"), "pixels"),  # 400 Mpx in a few kB: a decompression bomb
])
def test_unusable_images_are_rejected_with_the_reason(client, data, reason):
    response = upload(client, data)
    assert response.status_code == 422
    assert reason in response.json()["message"]


def test_truncated_image_is_rejected(client, demo):
    data = demo.image(sorted(demo.indexed)[0])
    response = upload(client, data[: len(data) // 2])
    assert response.status_code == 422 and "image rejected" in response.json()["message"]


@pytest.mark.parametrize("body, content_type", [
    (b"x", "text/plain"),
    (b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
    (b"garbage without boundaries", "multipart/form-data; boundary=b"),
    (b"x", "multipart/form-data"),
])
def test_malformed_requests_are_400(client, body, content_type):
    response = client.post("/search", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["message"]


def test_multipart_parsing_finds_the_image_field():
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--xy\r\nz\r\n--xyz--\r\n")
    assert upload_from_body(body, "multipart/form-data; boundary=xyz").image == b"\x89PNG\r\n--xy\r\nz"
    with pytest.raises(BadUpload):
        upload_from_body(body, "multipart/form-data; boundary=other")


def test_a_picture_with_words_is_a_hybrid_search_and_the_words_may_come_as_a_form_field(client, demo):
    query = sorted(demo.indexed)[5]
    plain = upload(client, demo.image(query)).json()
    assert plain["mode"] == "semantic" and plain["fusion"] is None
    assert all(h["found_by"] == "picture" for h in plain["hits"])
    as_parameter = upload(client, demo.image(query), "?text=blue%20square").json()
    as_field = client.post("/search", files={"image": ("q.jpg", demo.image(query), "image/jpeg")},
                           data={"text": "blue square"}).json()
    for body in (as_parameter, as_field):
        assert body["mode"] == "hybrid" and body["query"] == "image"
        own = next(h for h in body["hits"] if h["uuid"] == query)  # first of the kNN
        assert own["found_by"] in ("picture", "both") and own["score"] == pytest.approx(1.0, abs=1e-3)
        assert {h["found_by"] for h in body["hits"]} <= {"picture", "words", "both"}
        assert any(h["found_by"] != "picture" for h in body["hits"])
        for hit in body["hits"]:
            assert -1.0 <= hit["score"] <= 1.0
            if hit["found_by"] != "picture":
                assert hit["keyword_score"] > 0 and set(hit["matched_terms"]) <= {"blue", "square"}
    assert [h["uuid"] for h in as_parameter["hits"]] == [h["uuid"] for h in as_field["hits"]]


def test_min_score_drops_pictures_below_the_cutoff(client, demo):
    query = sorted(demo.indexed)[5]
    everything = upload(client, demo.image(query), "?k=50").json()["hits"]
    scores = [h["score"] for h in everything]
    cutoff = (scores[4] + scores[5]) / 2  # between the 5th and the 6th hit
    body = upload(client, demo.image(query), f"?k=50&min_score={cutoff}").json()
    assert body["min_score"] == pytest.approx(cutoff)
    assert [h["uuid"] for h in body["hits"]] == [h["uuid"] for h in everything[:5]]
    assert body["next_offset"] is None
    # In hybrid search the cutoff thins the pictures' ranking only: words still find posts.
    hybrid = upload(client, demo.image(query), f"?k=50&min_score={cutoff}&text=blue").json()
    pictures = [h for h in hybrid["hits"] if h["found_by"] in ("picture", "both")]
    assert all(h["score"] >= cutoff for h in pictures)
    assert any(h["found_by"] == "words" for h in hybrid["hits"])
    assert upload(client, demo.image(query), "?min_score=1.5").status_code == 422


def test_upload_over_the_limit_is_413(demo):
    settings = ApiSettings(max_upload_bytes=20_000)
    with TestClient(create_app(demo_env(demo.home), settings)) as small:
        data = _png((300, 300), noise=True)
        assert len(data) > 20_000
        response = upload(small, data)
        assert response.status_code == 413 and "20,000" in response.json()["message"]
        # The cap counts received bytes, not only a declared Content-Length.
        raw = small.post("/search", content=iter([data]), headers={"content-type": "image/png"})
        assert raw.status_code == 413


def test_no_index_gives_503_with_the_reason(tmp_path):
    with TestClient(create_app(demo_env(tmp_path / "empty"))) as empty:
        health = empty.get("/health")
        assert health.status_code == 503 and "no live index" in health.json()["message"]
        response = upload(empty, _png((8, 8)))
        assert response.status_code == 503 and "no live index" in response.json()["message"]


def test_wrong_embedder_for_the_index_is_explained(demo):
    env = {**demo_env(demo.home), "IMGSEARCH_EMBEDDER": "siglip", "IMGSEARCH_MODEL": "/nonexistent"}
    with TestClient(create_app(env)) as wrong:
        assert wrong.get("/health").status_code == 503
        message = wrong.get("/health").json()["message"]
        assert "embedding model could not be loaded" in message and "IMGSEARCH_MODEL" in message
        assert "/nonexistent" not in message  # no server paths in answers


# -- concurrency, confidentiality ---------------------------------------------------------


def test_concurrent_requests_get_the_same_answers(client, demo):
    queries = demo.held_out_with_twins()[:8] * 3
    expected = {q: upload(client, demo.image(q)).json()["hits"] for q in set(queries)}

    def patiently(query: str) -> tuple[str, list]:
        # 12 at once exceed the queue (2 running + 8 waiting): a refused one retries as told.
        while (response := upload(client, demo.image(query))).status_code == 503:
            time.sleep(float(response.headers["retry-after"]) / 20)
        return query, response.json()["hits"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(patiently, queries))
    assert all(hits == expected[q] for q, hits in answers)


def _files_under(*roots: Path) -> set[str]:
    found = set()
    for root in roots:
        for folder, _, names in os.walk(root):
            if "/.git" in folder or "__pycache__" in folder or "/.pytest_cache" in folder:
                continue
            found.update(os.path.join(folder, n) for n in names)
    return found


class WriteAudit:
    """Records every file opened for writing (builtin open, os.open, tempfile) while on."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | getattr(os, "O_TMPFILE", 0)

    def __init__(self):
        self.on = False
        self.opened: list[str] = []
        sys.addaudithook(self._hook)  # cannot be removed: it stays idle once off

    def _hook(self, event: str, args: tuple) -> None:
        if not self.on or event not in ("open", "tempfile.mkstemp", "tempfile.mkdtemp"):
            return
        if event != "open":
            self.opened.append(f"{event} {args}")
            return
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & self.WRITE_FLAGS)
        if writing:
            self.opened.append(f"open {path!r} mode={mode} flags={flags}")


def test_uploads_leave_no_trace_on_disk_or_in_logs(client, demo, caplog, tmp_path, monkeypatch):
    queries = demo.held_out_with_twins()[:10]
    images = [demo.image(q) for q in queries] + [_png((700, 700), noise=True)]  # > 1 MB part
    assert len(images[-1]) > 1024 * 1024  # Starlette's form parser would spool this to disk
    model = ColorTextureModel()
    vectors = [model.encode_images([load_rgb(data)])[0] for data in images]
    scratch = tmp_path / "tmp"  # the process's temp dir for this test: it must stay empty
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = _files_under(PROJECT, demo.home)
    audit = WriteAudit()
    caplog.set_level(logging.DEBUG)
    audit.on = True
    try:
        for _ in range(3):
            for data in images:
                assert upload(client, data).status_code == 200
                assert client.post("/search", content=data,
                                   headers={"content-type": "image/png"}).status_code == 200
    finally:
        audit.on = False
    assert audit.opened == []
    assert _files_under(scratch, demo.home) == {f for f in before if f.startswith(str(demo.home))}
    # Source files an editor may save in the working tree meanwhile are not the app's doing.
    new = {f for f in _files_under(PROJECT) - before if not f.endswith(SOURCE_SUFFIXES)}
    assert new == set()
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for data, vector in zip(images, vectors, strict=True):
        assert data[100:132].hex() not in logged and repr(data[100:132]) not in logged
        for value in vector[:8]:
            if abs(value) > 1e-3:
                assert f"{value:.5f}" not in logged and repr(float(value))[:8] not in logged


# -- text search with a tiny SigLIP -------------------------------------------------------


@pytest.fixture(scope="module")
def siglip_client(tmp_path_factory, sample_dataset, tiny_siglip):
    home = build_demo(tmp_path_factory, sample_dataset, "siglip", model=str(tiny_siglip))
    with TestClient(create_app(demo_env(home, "siglip", str(tiny_siglip)))) as test_client:
        yield test_client, Demo(home)


def test_text_search_with_siglip(siglip_client):
    client, demo = siglip_client
    assert client.get("/health").json()["text_search"] is True
    response = client.get("/search", params={"text": "a photo of a red circle", "k": 7,
                                             "mode": "semantic"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "text" and len(body["hits"]) == 7 and body["mode"] == "semantic"
    assert all(h["found_by"] == "picture" and h["keyword_score"] is None for h in body["hits"])
    assert all(h["uuid"] in demo.indexed for h in body["hits"])
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    other = client.get("/search", params={"text": "stripes", "k": 7}).json()["hits"]
    assert [h["uuid"] for h in other] != [h["uuid"] for h in body["hits"]]


def _reference_rrf(rankings: list[list[str]], rank_constant: int, window: int) -> list[str]:
    """RRF written out from its definition (Cormack et al. 2009), for the test only."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, uuid in enumerate(ranking[:window], start=1):
            scores[uuid] = scores.get(uuid, 0.0) + 1.0 / (rank_constant + rank)
    return sorted(scores, key=lambda u: -scores[u])


def test_hybrid_text_search_fuses_the_semantic_and_the_keyword_rankings(siglip_client):
    client, demo = siglip_client
    text, depth = "red circle", {"num_candidates": 1000}
    pictures = client.get("/search", params={"text": text, "mode": "semantic", "k": 100, **depth}).json()
    words = client.get("/search", params={"text": text, "mode": "keyword", "k": 100}).json()
    assert words["mode"] == "keyword" and words["hits"]
    assert all(set(h["matched_terms"]) <= {"red", "circle"} and h["matched_terms"]
               for h in words["hits"])
    body = client.get("/search", params={"text": text, "k": 20, **depth}).json()  # hybrid: the default
    assert body["mode"] == "hybrid" and body["fusion"] == {"rank_constant": 60, "window": 100}
    expected = _reference_rrf([[h["uuid"] for h in pictures["hits"]],
                               [h["uuid"] for h in words["hits"]]], 60, 100)
    hits = body["hits"]
    fused = [h["rrf_score"] for h in hits]
    assert fused == sorted(fused, reverse=True)
    picture_rank = {h["uuid"]: i + 1 for i, h in enumerate(pictures["hits"])}
    word_rank = {h["uuid"]: i + 1 for i, h in enumerate(words["hits"])}
    for hit in hits:
        ranks = [r for r in (picture_rank.get(hit["uuid"]), word_rank.get(hit["uuid"])) if r]
        assert hit["rrf_score"] == pytest.approx(sum(1.0 / (60 + r) for r in ranks), abs=1e-12)
        expected_by = {(True, True): "both", (True, False): "picture", (False, True): "words"}[
            (hit["uuid"] in picture_rank, hit["uuid"] in word_rank)]
        assert hit["found_by"] == expected_by
        if hit["uuid"] in word_rank:
            assert hit["matched_terms"] and any(seg["mark"] for seg in hit["highlight"])
        assert -1.0 <= hit["score"] <= 1.0  # every hit says how close its picture is
    # The reference's first 20, in its order but for hits of equal fused score.
    reference = {u: round(sum(1.0 / (60 + r) for r in (picture_rank.get(u), word_rank.get(u)) if r), 12)
                 for u in expected}
    assert [reference[u] for u in expected[:20]] == [round(h["rrf_score"], 12) for h in hits]
    cut = reference[expected[19]]
    assert {h["uuid"] for h in hits if round(h["rrf_score"], 12) > cut} == \
        {u for u in expected[:20] if reference[u] > cut}


def test_image_search_with_siglip_finds_the_image_itself(siglip_client):
    client, demo = siglip_client
    query = sorted(demo.indexed)[3]
    hit = upload(client, demo.image(query)).json()["hits"][0]
    assert hit["uuid"] == query and hit["score"] == pytest.approx(1.0, abs=1e-3)
