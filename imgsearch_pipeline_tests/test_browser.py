"""The web page and the API reference in headless Chromium against a live uvicorn.

Every page runs offline (requests to any host but the test server are refused and
recorded) and under a strict Content-Security-Policy (no inline script or style), and a
test fails if the page tried the network or broke the policy. What the page shows is
compared with what the API answers for the same search.

IMGSEARCH_WRITE_SCREENSHOTS=1 writes the screenshots under docs/ (light, dark, phone, and
hybrid search in light and dark).
"""

import contextlib
import json
import os
import re
import socket
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn

from imgsearch_pipeline.api.app import create_app

from . import test_api
from .test_api import build_demo, demo_env

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[1] / "docs"
WRITE_SCREENSHOTS = os.environ.get("IMGSEARCH_WRITE_SCREENSHOTS") == "1"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
FOLD = 0.97  # the page's "Fold near-identical" threshold

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning",
                            access_log=False)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


demo = test_api.demo  # the demo index of test_api.py, as a fixture


@pytest.fixture(scope="module")
def server(demo):
    with serve(create_app(demo_env(demo.home))) as url:
        yield url


@pytest.fixture(scope="module")
def text_server(tmp_path_factory, sample_dataset, tiny_siglip):
    """The same data indexed with a (tiny) SigLIP, which has a text tower."""
    home = build_demo(tmp_path_factory, sample_dataset, "siglip", model=str(tiny_siglip))
    with serve(create_app(demo_env(home, "siglip", str(tiny_siglip)))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield chromium
        chromium.close()


class Tab:
    """A fresh browser context: offline but for 127.0.0.1, strict CSP on every document."""

    def __init__(self, browser, **options):
        self.context = browser.new_context(viewport={"width": 1200, "height": 820},
                                           accept_downloads=True, **options)
        self.outside: list[str] = []
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _route(self, route):
        request = route.request
        if urlsplit(request.url).hostname not in ("127.0.0.1", None):
            self.outside.append(request.url)
            route.abort()
        elif request.resource_type == "document":
            response = route.fetch()
            route.fulfill(response=response,
                          headers={**response.headers, "content-security-policy": CSP})
        else:
            route.continue_()

    def _console(self, message):
        if "Content Security Policy" in message.text:
            self.problems.append(message.text)

    def close(self):
        self.context.close()
        assert self.outside == [], f"the page reached outside: {self.outside}"
        assert self.problems == []


@pytest.fixture
def tab(browser):
    opened = Tab(browser)
    yield opened
    opened.close()


@pytest.fixture
def page(tab):
    return tab.page


def wait_done(page) -> list[str]:
    page.wait_for_function("() => document.body.dataset.state === 'done'")
    return grid(page)


def grid(page) -> list[str]:
    return page.eval_on_selector_all("#results .hit:not(.folded-hit)",
                                     "cards => cards.map(c => c.dataset.uuid)")


def act(page, action) -> list[str]:
    """Run ``action`` (a user gesture) and return the grid's uuids once the answer is shown."""
    page.evaluate("document.body.dataset.state = 'waiting'")
    action()
    return wait_done(page)


def open_page(page, url: str) -> list[str]:
    page.goto(url)
    return wait_done(page)


def address(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def api(server: str, path: str, **params) -> dict:
    response = httpx.get(f"{server}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def api_upload(server: str, data: bytes, **params) -> dict:
    response = httpx.post(f"{server}/search", params=params, timeout=30,
                          files={"image": ("query.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def uuids(body: dict) -> list[str]:
    return [hit["uuid"] for hit in body["hits"]]


def cards(page) -> list[dict]:
    """What each card of the grid shows: its score, found-by badge, caption and marked words."""
    return page.eval_on_selector_all("#results .hit:not(.folded-hit)", """cards => cards.map(c => ({
        uuid: c.dataset.uuid, score: c.querySelector('.value').textContent,
        found_by: c.querySelector('.found').textContent,
        caption: c.querySelector('.caption').textContent,
        marks: [...c.querySelectorAll('.caption mark')].map(m => m.textContent)}))""")


def as_shown(hit: dict) -> dict:
    """What a card should show for ``hit`` of an API answer."""
    score = (f"{hit['score']:.3f}" if hit["score"] is not None
             else f"BM25 {hit['keyword_score']:.2f}")
    return {"uuid": hit["uuid"], "score": score, "found_by": hit["found_by"],
            "caption": hit["caption"] or "",
            "marks": [segment["text"] for segment in hit["highlight"] if segment["mark"]]}


def colour_tag(demo, post: str) -> str:
    """The second hashtag of a demo caption without its '#', e.g. 'pink' of '#brownStripes #pink'."""
    return [word[1:] for word in demo.posts[post]["caption"].split() if word.startswith("#")][1]


def save(page) -> dict:
    with page.expect_download() as download:
        page.click("#download")
    return json.loads(Path(download.value.path()).read_text())


# -- picture search ----------------------------------------------------------------------


def test_upload_through_the_page_shows_near_duplicates_first(page, server, demo, tmp_path):
    query = demo.held_out_with_twins(twins=4)[0]
    picture = tmp_path / "query.jpg"
    picture.write_bytes(demo.image(query))
    open_page(page, server)
    page.wait_for_function("() => document.getElementById('status').textContent.includes('images')")
    assert "faiss-hnsw" in page.text_content("#status")
    # colour-texture has no text tower: no mode switch, words match captions, the page says so
    assert page.is_hidden("#mode") and "captions only" in page.text_content("#mode-hint")
    assert page.is_enabled("#text")

    shown = act(page, lambda: page.set_input_files("#file", str(picture)))
    assert shown == uuids(api_upload(server, demo.image(query), k=20))
    leading = 0
    for uuid in shown:
        if demo.scene(uuid) != demo.scene(query):
            break
        leading += 1
    assert leading >= min(demo.train_per_scene[demo.scene(query)], 20) // 2 >= 1
    # The thumbnails come from GET /images/{uuid}: the first rows must load and paint.
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].slice(0, 8)"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
    assert page.is_visible("#preview")
    assert address(page) == {"picture": ["1"]}  # a marker: the picture itself stays in the tab

    # Click the third result: more like it, without itself, and the address says which.
    clicked = shown[2]
    similar = act(page, lambda: page.click(f"#results .hit[data-uuid='{clicked}'] img"))
    assert address(page) == {"like": [clicked]}
    assert similar == uuids(api(server, f"/images/{clicked}/similar", k=20))
    assert clicked not in similar and demo.scene(similar[0]) == demo.scene(clicked)


def test_a_rejected_file_shows_the_reason_and_no_broken_preview(page, server, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not really a picture")
    open_page(page, server)
    assert act(page, lambda: page.set_input_files("#file", str(bad))) == []
    assert "not an image" in page.text_content("#error")
    assert page.is_hidden("#preview") and page.is_visible("#drop-hint")


def test_option_changes_rerun_the_picture_held_in_memory(page, server, demo, tmp_path):
    query = demo.held_out_with_twins(twins=3)[1]
    data = demo.image(query)
    picture = tmp_path / "mine.jpg"
    picture.write_bytes(data)
    open_page(page, server)
    uploads = []
    page.on("request", lambda r: uploads.append(r) if r.method == "POST" else None)
    first = act(page, lambda: page.set_input_files("#file", str(picture)))
    assert len(first) == 20

    fewer = act(page, lambda: page.select_option("#k", "10"))
    assert fewer == first[:10] == uuids(api_upload(server, data, k=10))
    assert address(page) == {"picture": ["1"], "k": ["10"]}
    folded = act(page, lambda: page.check("#collapse"))
    assert folded == uuids(api_upload(server, data, k=10, collapse=FOLD))
    assert address(page) == {"picture": ["1"], "k": ["10"], "fold": ["1"]}
    word = demo.posts[query]["caption"].split()[1]
    captioned = act(page, lambda: (page.fill("#caption", word), page.press("#caption", "Enter")))
    assert captioned == uuids(api_upload(server, data, k=10, collapse=FOLD, caption=word))
    assert len(uploads) == 4  # each change posted the held picture again; nobody re-picked it

    # Back undoes the last change, with the picture still in memory.
    assert act(page, page.go_back) == folded
    assert page.input_value("#caption") == ""

    # A reload loses the picture on purpose: the page asks for it again.
    assert act(page, page.reload) == []
    assert "pick it again" in page.text_content("#notice")
    assert page.is_hidden("#tools") and page.is_hidden("#more") and page.is_hidden("#preview")
    assert address(page) == {"picture": ["1"], "k": ["10"], "fold": ["1"]}
    assert page.is_checked("#collapse") and page.input_value("#k") == "10"


def test_back_reruns_a_picture_search_after_more_like_this(page, server, demo, tmp_path):
    picture = tmp_path / "q.jpg"
    picture.write_bytes(demo.image(demo.held_out_with_twins()[2]))
    open_page(page, server)
    first = act(page, lambda: page.set_input_files("#file", str(picture)))
    act(page, lambda: page.click(f"#results .hit[data-uuid='{first[4]}'] img"))
    assert act(page, page.go_back) == first
    assert address(page) == {"picture": ["1"]} and page.is_visible("#preview")


def test_paste_a_picture(page, server, demo):
    data = demo.image(demo.held_out_with_twins()[3])
    open_page(page, server)
    shown = act(page, lambda: page.evaluate("""bytes => {
        const file = new File([new Uint8Array(bytes)], "image.png", {type: "image/jpeg"});
        const clipboard = new DataTransfer();
        clipboard.items.add(file);
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: clipboard}));
    }""", list(data)))
    assert shown == uuids(api_upload(server, data, k=20))
    assert "pasted picture" in page.text_content("#query-label")


def test_keyboard_opens_the_picker_with_a_visible_focus(page, server, demo, tmp_path):
    # Intercept file choosers from the start: turning interception on is asynchronous, and
    # a chooser opened before it is on would never be reported.
    page.on("filechooser", lambda chooser: None)
    open_page(page, server)
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "drop":
            break
    assert page.evaluate("document.activeElement.id") == "drop"
    outline = page.eval_on_selector("#drop", "e => getComputedStyle(e).outlineStyle")
    assert outline not in ("", "none")
    for key, post in (("Enter", sorted(demo.indexed)[0]), (" ", sorted(demo.indexed)[1])):
        picture = tmp_path / f"{post}.jpg"
        picture.write_bytes(demo.image(post))
        page.focus("#drop")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press(key)
        assert not chooser.value.is_multiple()
        shown = act(page, partial(chooser.value.set_files, str(picture)))
        assert shown[0] == post  # an indexed picture finds itself first


# -- more like this, deep links, paging ----------------------------------------------------


def test_deep_link_back_and_forward(page, server, demo, browser):
    post = demo.held_out_with_twins()[0]
    link = f"{server}/?like={post}&k=10"
    first = open_page(page, link)
    assert first == uuids(api(server, f"/images/{post}/similar", k=10))
    assert page.input_value("#k") == "10"

    second = act(page, lambda: page.click(f"#results .hit[data-uuid='{first[3]}'] img"))
    assert address(page) == {"like": [first[3]], "k": ["10"]}
    assert act(page, page.go_back) == first and address(page) == {"like": [post], "k": ["10"]}
    assert act(page, page.go_forward) == second

    # The same link in another browser context shows the same search.
    other = Tab(browser)
    try:
        assert open_page(other.page, link) == first
    finally:
        other.close()


def test_more_results_pages_to_the_end(page, server, demo):
    post = sorted(demo.indexed)[5]
    first = open_page(page, f"{server}/?like={post}&k=10")
    two_pages = act(page, lambda: page.click("#more"))
    assert two_pages[:10] == first
    assert two_pages == uuids(api(server, f"/images/{post}/similar", k=20))
    assert page.text_content("#results .hit:nth-child(20) .rank") == "#20"

    shown = open_page(page, f"{server}/?like={post}&k=100")
    while page.is_visible("#more"):
        shown = act(page, lambda: page.click("#more"))
    assert len(shown) == len(set(shown)) == len(demo.indexed) - 1
    assert set(shown) == demo.indexed - {post}


def test_a_folded_group_expands(page, server, demo):
    post = demo.held_out_with_twins(twins=3)[0]
    open_page(page, f"{server}/?like={post}&k=10&fold=1")
    assert page.is_checked("#collapse")
    body = api(server, f"/images/{post}/similar", k=10, collapse=FOLD)
    groups = [hit for hit in body["hits"] if hit["folded"]]
    assert groups, "the demo has near-identical copies to fold"
    group = groups[0]
    button = page.locator(f"#results .hit[data-uuid='{group['uuid']}'] button.fold")
    assert button.text_content() == f"+{len(group['folded'])} near-identical"
    button.click()
    assert button.get_attribute("aria-expanded") == "true"
    members = page.eval_on_selector_all(
        f"#results .folded-hit[data-folded-into='{group['uuid']}']",
        "cards => cards.map(c => c.dataset.uuid)")
    assert members == [twin["uuid"] for twin in group["folded"]]
    # They sit right after their group's card.
    order = page.eval_on_selector_all("#results .hit", "cards => cards.map(c => c.dataset.uuid)")
    start = order.index(group["uuid"]) + 1
    assert order[start:start + len(members)] == members
    button.click()
    assert page.locator("#results .folded-hit").count() == 0


def test_results_download_as_json(page, server, demo):
    post = sorted(demo.indexed)[7]
    shown = open_page(page, f"{server}/?like={post}&k=10")
    act(page, lambda: page.click("#more"))
    with page.expect_download() as download:
        page.click("#download")
    record = json.loads(Path(download.value.path()).read_text())
    assert [hit["uuid"] for hit in record["hits"]] == grid(page)
    assert record["hits"][:10] == api(server, f"/images/{post}/similar", k=10)["hits"]
    assert record["search"]["like"] == post and record["search"]["kind"] == "similar"
    assert len(shown) == 10 and len(record["hits"]) == 20


# -- text search ---------------------------------------------------------------------------


def test_text_search_deep_link_and_back(page, text_server):
    words = "a photo of a red circle"
    first = open_page(page, f"{text_server}/?q={words.replace(' ', '+')}&k=7")
    assert first == uuids(api(text_server, "/search", text=words, k=7))
    assert page.input_value("#text") == words and page.input_value("#k") == "7"
    assert page.is_checked("#mode input[value=hybrid]") and page.is_visible("#mode")

    def search(text):
        page.fill("#text", text)
        page.press("#text", "Enter")

    second = act(page, lambda: search("green stripes"))
    assert second == uuids(api(text_server, "/search", text="green stripes", k=7))
    assert address(page) == {"q": ["green stripes"], "k": ["7"]}
    assert act(page, page.go_back) == first
    assert page.input_value("#text") == words

    # The mode is an option of the address: switching re-runs, Back/Forward and links repeat it.
    keyword = act(page, lambda: page.click("#mode input[value=keyword] + span"))
    assert keyword == uuids(api(text_server, "/search", text=words, k=7, mode="keyword"))
    assert address(page) == {"q": [words], "k": ["7"], "mode": ["keyword"]}
    semantic = act(page, lambda: page.click("#mode input[value=semantic] + span"))
    assert semantic == uuids(api(text_server, "/search", text=words, k=7, mode="semantic"))
    assert act(page, page.go_back) == keyword and page.is_checked("#mode input[value=keyword]")
    assert act(page, page.go_back) == first and page.is_checked("#mode input[value=hybrid]")
    assert act(page, page.go_forward) == keyword and page.is_checked("#mode input[value=keyword]")
    assert "keyword" in page.text_content("#query-label")
    assert open_page(page, f"{text_server}/?q=green+stripes&mode=semantic") == uuids(
        api(text_server, "/search", text="green stripes", k=20, mode="semantic"))
    assert page.is_checked("#mode input[value=semantic]")


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "semantic"])
def test_word_search_shows_the_api_answer_with_highlights_and_badges(page, text_server, mode):
    words = "red circle"
    body = api(text_server, "/search", text=words, k=12, mode=mode)
    assert body["mode"] == mode and body["note"] is None
    open_page(page, f"{text_server}/?q=red+circle&k=12&mode={mode}")
    assert cards(page) == [as_shown(hit) for hit in body["hits"]]
    if mode != "semantic":
        assert page.locator("#results .caption mark").count() > 0
    assert page.is_hidden("#notice")
    assert f"· {mode}:" in page.text_content("#query-label")

    record = save(page)
    assert record["mode"] == record["search"]["mode"] == mode
    assert record["fusion"] == body["fusion"] and record["note"] is None
    assert (record["fusion"] is not None) == (mode == "hybrid")
    assert record["hits"] == body["hits"]


def test_picture_with_words_searches_both(page, server, demo, tmp_path):
    query = demo.held_out_with_twins(twins=4)[0]
    data = demo.image(query)
    picture = tmp_path / "mine.jpg"
    picture.write_bytes(data)
    words = colour_tag(demo, query)
    open_page(page, server)
    posts = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)

    # Words typed, then a picture picked: both go in one POST (the words as a form field).
    page.fill("#text", words)
    shown = act(page, lambda: page.set_input_files("#file", str(picture)))
    body = api_upload(server, data, k=20, text=words)
    assert body["mode"] == "hybrid" and {h["found_by"] for h in body["hits"]} >= {"both"}
    assert cards(page) == [as_shown(hit) for hit in body["hits"]]
    assert shown == uuids(body)
    assert page.locator("#results .caption mark").count() > 0
    assert address(page) == {"picture": ["1"], "q": [words]}  # the words, never the picture
    label = page.text_content("#query-label")
    assert f"with the words “{words}”" in label and "· hybrid:" in label
    assert page.text_content("#text-go") == "Search with words" and page.is_visible("#clear-picture")
    assert len(posts) == 1 and "text=" not in posts[0].url
    assert b'name="text"' in posts[0].post_data_buffer and words.encode() in posts[0].post_data_buffer
    record = save(page)
    assert record["mode"] == "hybrid" and record["fusion"] == body["fusion"]
    assert record["search"]["kind"] == "picture" and record["search"]["text"] == words
    assert record["address"] is None

    # Words cleared: the held picture alone; typed again: both again.
    alone = act(page, lambda: (page.fill("#text", ""), page.press("#text", "Enter")))
    assert alone == uuids(api_upload(server, data, k=20))
    assert address(page) == {"picture": ["1"]} and "· semantic:" in page.text_content("#query-label")
    again = act(page, lambda: (page.fill("#text", words), page.press("#text", "Enter")))
    assert again == shown and len(posts) == 3

    # The picture removed: the words alone, matched against captions (no text tower here).
    keyword = act(page, lambda: page.click("#clear-picture"))
    answer = api(server, "/search", text=words, k=20)
    assert answer["mode"] == "keyword" and "no text tower" in answer["note"]
    assert cards(page) == [as_shown(hit) for hit in answer["hits"]]
    assert keyword == uuids(answer) and all(c["found_by"] == "words" for c in cards(page))
    assert all(c["score"].startswith("BM25 ") for c in cards(page))  # score is null: BM25 shown
    assert "keyword search" in page.text_content("#notice") and page.is_visible("#notice")
    assert address(page) == {"q": [words]} and page.is_hidden("#preview")
    assert page.is_hidden("#clear-picture") and page.text_content("#text-go") == "Search"
    record = save(page)
    assert record["mode"] == "keyword" and record["note"] == answer["note"]
    assert record["search"]["mode"] == "hybrid"  # asked for; the answer says what was done
    assert len(posts) == 3

    # A reload keeps the words and asks for the picture again.
    act(page, page.go_back)
    assert act(page, page.reload) == [] and "pick it again" in page.text_content("#notice")
    assert page.input_value("#text") == words


def test_min_similarity_cuts_the_list(page, server, demo):
    post = sorted(demo.indexed)[5]
    full = api(server, f"/images/{post}/similar", k=20)["hits"]
    cut = f"{full[8]['score'] - 0.0001:.4f}"
    body = api(server, f"/images/{post}/similar", k=20, min_score=cut)
    assert 0 < len(body["hits"]) < 20 and body["min_score"] == float(cut)
    assert open_page(page, f"{server}/?like={post}") == uuids(api(server, f"/images/{post}/similar", k=20))
    shown = act(page, lambda: (page.fill("#min", cut), page.press("#min", "Enter")))
    assert shown == uuids(body)
    assert address(page) == {"like": [post], "min": [str(float(cut))]}
    assert save(page)["min_score"] == float(cut)
    assert open_page(page, page.url) == shown and page.input_value("#min") == str(float(cut))


# -- API keys ------------------------------------------------------------------------------


def test_with_api_keys_the_page_asks_for_one_then_shows_images(browser, demo, tmp_path):
    env = {**demo_env(demo.home), "IMGSEARCH_API_KEYS": "page-key-123"}
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept("page-key-123")

    with serve(create_app(env)) as url:
        tab = Tab(browser)
        try:
            page = tab.page
            page.on("dialog", answer)
            open_page(page, url)
            picture = tmp_path / "query.jpg"
            picture.write_bytes(demo.image(sorted(demo.indexed)[0]))
            shown = act(page, partial(page.set_input_files, "#file", str(picture)))
            assert len(asked) == 1 and "API key" in asked[0]
            assert len(shown) == 20
            # Thumbnails load through signed links (an <img> sends no key).
            page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                                   ".slice(0, 4).every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=10_000)
            # The key is kept for the tab: more like this and its next page ask nothing, and the
            # preview of the clicked post comes through its signed link.
            act(page, lambda: page.click(f"#results .hit[data-uuid='{shown[1]}'] img"))
            act(page, lambda: page.click("#more"))
            assert len(asked) == 1 and len(grid(page)) == 40
            page.wait_for_function("() => !document.getElementById('preview').hidden")
        finally:
            tab.close()


# -- the API reference ---------------------------------------------------------------------


def test_docs_render_with_no_network(page, server):
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    summaries = page.eval_on_selector_all(".opblock-summary-path", "e => e.map(x => x.textContent)")
    assert {"/search", "/images/{uuid}/similar", "/metrics"} <= {s.replace("\u200b", "")
                                                                for s in summaries}
    page.click("#operations-default-search_by_image_search_post .opblock-summary")
    page.wait_for_selector("#operations-default-search_by_image_search_post tr[data-param-name='offset']")


# -- screenshots for the docs --------------------------------------------------------------


def test_screenshots_light_dark_and_phone(browser, server, demo, tmp_path):
    query = demo.held_out_with_twins(twins=4)[0]
    picture = tmp_path / "query.jpg"
    picture.write_bytes(demo.image(query))
    folder = DOCS if WRITE_SCREENSHOTS else tmp_path
    shots = {"screenshot.png": ({"width": 1200, "height": 820}, "light"),
             "screenshot-dark.png": ({"width": 1200, "height": 820}, "dark"),
             "screenshot-phone.png": ({"width": 390, "height": 844}, "light")}
    for name, (viewport, scheme) in shots.items():
        tab = Tab(browser, color_scheme=scheme)
        try:
            page = tab.page
            page.set_viewport_size(viewport)
            open_page(page, f"{server}/?k=20&fold=1")
            shown = act(page, partial(page.set_input_files, "#file", str(picture)))
            assert shown
            page.wait_for_function("() => [...document.querySelectorAll('#results img')].slice(0, 8)"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
            background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
            dark = sum(int(c) for c in re.findall(r"\d+", background)[:3]) < 200
            assert dark == (scheme == "dark"), background
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], "the page scrolls sideways"
            page.screenshot(path=str(folder / name))
        finally:
            tab.close()


def test_screenshots_hybrid_light_and_dark(browser, server, demo, tmp_path):
    """A picture with the words of its colour hashtag: marked words and all three badges."""
    query = demo.held_out_with_twins(twins=4)[0]
    picture = tmp_path / "query.jpg"
    picture.write_bytes(demo.image(query))
    words = colour_tag(demo, query)
    folder = DOCS if WRITE_SCREENSHOTS else tmp_path
    for name, scheme in (("screenshot-hybrid.png", "light"), ("screenshot-hybrid-dark.png", "dark")):
        tab = Tab(browser, color_scheme=scheme)
        try:
            page = tab.page
            page.set_viewport_size({"width": 1200, "height": 1000})  # two rows of cards
            open_page(page, f"{server}/?k=20&fold=1")
            page.fill("#text", words)
            act(page, partial(page.set_input_files, "#file", str(picture)))
            page.wait_for_function("() => [...document.querySelectorAll('#results img')].slice(0, 12)"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
            shown = cards(page)
            assert {card["found_by"] for card in shown[:12]} == {"picture", "words", "both"}
            assert all(card["marks"] for card in shown if card["found_by"] != "picture")
            mark = page.eval_on_selector("#results mark", "m => getComputedStyle(m).backgroundColor")
            assert mark not in ("", "rgba(0, 0, 0, 0)")
            page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
            page.screenshot(path=str(folder / name))
        finally:
            tab.close()

