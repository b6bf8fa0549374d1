"""The web page in headless Chromium against a live uvicorn on the demo index."""

import contextlib
import os
import socket
import threading
import time

import pytest
import uvicorn

from imgsearch_pipeline.api.app import create_app

from .test_api import Demo, build_demo, demo_env

CHROMIUM = "/usr/bin/chromium"
# Set to a path (docs/screenshot.png) to keep a screenshot of the page with results.
SCREENSHOT = os.environ.get("IMGSEARCH_SCREENSHOT")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset) -> Demo:
    return Demo(build_demo(tmp_path_factory, sample_dataset))


@contextlib.contextmanager
def _serve(env: dict):
    config = uvicorn.Config(create_app(env), host="127.0.0.1", port=_free_port(),
                            log_level="warning", access_log=False)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield chromium
        chromium.close()


def _tab(browser, url: str, console: list[str]):
    tab = browser.new_page(viewport={"width": 1200, "height": 820})
    tab.on("console", lambda message: console.append(message.text))
    tab.goto(url)
    return tab


@pytest.fixture(scope="module")
def server(demo):
    with _serve(demo_env(demo.home)) as url:
        yield url


CONSOLE: list[str] = []


@pytest.fixture(scope="module")
def page(browser, server):
    tab = _tab(browser, server, CONSOLE)
    yield tab
    tab.close()


def _wait(page, expression: str, timeout: float = 30_000) -> None:
    """Poll a JS expression with evaluate (wait_for_function compiles the predicate with
    ``new Function``, which the page's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def _grid(page, action) -> list[str]:
    """Run ``action`` (a user gesture) and return the grid's uuids once the answer is shown."""
    page.evaluate("document.body.dataset.state = 'waiting'")
    action()
    _wait(page, "document.body.dataset.state === 'done'")
    return page.eval_on_selector_all("#results .hit", "cards => cards.map(c => c.dataset.uuid)")


def test_upload_through_the_page_shows_near_duplicates_first(page, demo, tmp_path):
    query = demo.held_out_with_twins(twins=4)[0]
    picture = tmp_path / "query.jpg"
    picture.write_bytes(demo.image(query))
    _wait(page, "document.getElementById('status').textContent.includes('images')")
    assert "faiss-hnsw" in page.text_content("#status")
    assert page.is_disabled("#text")  # colour-texture has no text side: the page says so

    uuids = _grid(page, lambda: page.set_input_files("#file", str(picture)))
    assert len(uuids) == 20
    leading = 0
    for uuid in uuids:
        if demo.scene(uuid) != demo.scene(query):
            break
        leading += 1
    assert leading >= min(demo.train_per_scene[demo.scene(query)], 20) // 2 >= 1
    # The thumbnails come from GET /images/{uuid}: the first rows must load and paint.
    _wait(page, "[...document.querySelectorAll('#results img')].slice(0, 8)"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
    page.screenshot(path=SCREENSHOT or str(tmp_path / "page.png"))

    # Click the third result: more like it, without itself.
    clicked = uuids[2]
    similar = _grid(page, lambda: page.click(f"#results .hit[data-uuid='{clicked}']"))
    assert page.get_attribute("#results", "data-query") == "similar"
    assert clicked not in similar and demo.scene(similar[0]) == demo.scene(clicked)
    # The page works under its Content-Security-Policy: nothing was blocked.
    assert not [m for m in CONSOLE if "Content Security Policy" in m], CONSOLE


def test_a_rejected_file_shows_the_reason(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not really a picture")
    assert _grid(page, lambda: page.set_input_files("#file", str(bad))) == []
    assert "not an image" in page.text_content("#error")


def test_with_api_keys_the_page_asks_for_one_then_shows_images(browser, demo, tmp_path):
    env = {**demo_env(demo.home), "IMGSEARCH_API_KEYS": "page-key-123"}
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept("page-key-123")

    with _serve(env) as url:
        tab = _tab(browser, url, [])
        tab.on("dialog", answer)
        _wait(tab, "document.getElementById('status').textContent.includes('images')")
        picture = tmp_path / "query.jpg"
        picture.write_bytes(demo.image(sorted(demo.indexed)[0]))
        uuids = _grid(tab, lambda: tab.set_input_files("#file", str(picture)))
        assert len(asked) == 1 and "API key" in asked[0]
        assert len(uuids) == 20
        # Thumbnails load through signed links (an <img> sends no key).
        _wait(tab, "[...document.querySelectorAll('#results img')].slice(0, 4)"
                              ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
        # The key is kept for the tab: a second search asks nothing.
        _grid(tab, lambda: tab.click(f"#results .hit[data-uuid='{uuids[1]}']"))
        assert len(asked) == 1
        tab.close()
