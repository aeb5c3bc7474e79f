"""The report's index.html and the search page, rendered in a real headless browser (Debian's
chromium, see tests/browser.py) as a person would use them: nothing fails to load, the console
stays clean, every image decodes, the page fits a laptop's width, and it is not blank. Skipped,
with the reason, where chromium is not installed; CI (.ci/run) installs it."""
from __future__ import annotations

import threading

import pytest
from browser import WIDTH, Browser, chromium_path, is_blank
from demo_run import shared_demo_run
from PIL import Image

from hyp2 import gallery, serve
from hyp2.codes import load_codes
from hyp2.data import DataOptions, build_dataset
from hyp2.hasher import load_hasher
from hyp2.plots import GalleryOptions
from hyp2.report import build_report

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(chromium_path() is None,
                                 reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")]
TOP = 6


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = shared_demo_run(tmp_path_factory)
    db = load_codes(run.codes)
    service = serve.SearchService(load_hasher(run.checkpoint), db, gallery.ImageSource.for_codes(db), top=TOP)
    srv = serve.make_server(service)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fits_laptop(browser: Browser) -> bool:
    return browser.evaluate("document.documentElement.scrollWidth") <= WIDTH


@pytest.mark.slow
def test_report_page_loads_everything_offline(browser, tmp_path_factory, tmp_path):
    runs = [shared_demo_run(tmp_path_factory), shared_demo_run(tmp_path_factory, bits=32, seed=1)]
    out = tmp_path / "report"
    build_report([r.json for r in runs], out, tsne=False, formats=("png",), gallery=GalleryOptions(queries=2, top=4))
    page = browser.open((out / "index.html").as_uri())
    assert page.problems == []
    assert all(url.startswith(("file:", "data:")) for url in page.requests)
    assert browser.evaluate("document.images.length") == 3 + 2 * 2 * 5  # 3 figures, 2 queries x 2 runs x 5
    assert browser.broken_images() == []
    assert browser.evaluate("document.querySelectorAll('.thumb.ok, .thumb.bad').length") == 2 * 2 * 4
    assert fits_laptop(browser)
    assert not is_blank(browser.screenshot(full_page=False))
    assert not is_blank(browser.screenshot())


@pytest.mark.slow
def test_search_page_upload_click_and_bad_upload(browser, server, tmp_path):
    page = browser.open(server.url)
    assert page.problems == [] and browser.broken_images() == []
    assert browser.evaluate("document.images.length") == serve.PICKS
    assert fits_laptop(browser) and not is_blank(browser.screenshot(full_page=False))

    # upload a picture, as a user choosing a file and pressing Search
    query = tmp_path / "my photo.png"
    data = build_dataset("demo", DataOptions(image_size=32))
    data.query.load(3).resize((96, 96), Image.NEAREST).save(query)
    browser.set_file("input[type=file]", str(query))
    page = browser.submit("document.querySelector('form.upload').submit()")
    assert page.problems == [] and browser.broken_images() == []
    assert browser.evaluate("document.querySelector('h2 code').textContent") == "my photo.png"
    assert browser.evaluate("document.querySelectorAll('.thumb.hit img').length") == TOP
    assert not is_blank(browser.screenshot(full_page=False))

    # click the first result: it becomes the query, with relevance frames
    first = browser.evaluate("document.querySelector('.thumb.hit a').getAttribute('href')")
    page = browser.submit("document.querySelector('.thumb.hit a').click()")
    assert page.problems == [] and browser.broken_images() == []
    ident = first.split("id=")[1].split("&")[0].replace("%2F", "/")
    assert browser.evaluate("document.querySelector('h2 code').textContent") == ident
    assert browser.evaluate("document.querySelectorAll('.thumb.ok img, .thumb.bad img').length") == TOP

    # a file that is not an image: a clear message on the page, and the server goes on serving
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    browser.open(server.url)
    browser.set_file("input[type=file]", str(bad))
    page = browser.submit("document.querySelector('form.upload').submit()")
    # the page's own answer is the only thing that "failed": status 400, as the browser logs it
    assert page.problems == ["HTTP 400: " + server.url + "search", "browser log: Failed to load resource: the "
                             "server responded with a status of 400 (Bad Request)"]
    assert "not an image the page can read" in browser.evaluate("document.querySelector('.message').textContent")
    assert browser.broken_images() == []
    assert browser.open(server.url).problems == []


def test_the_checks_see_what_a_person_would(browser, tmp_path):
    """A page with a missing image, a console error and a script error fails every check; an empty
    page is blank: the checks above could fail."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><title>x</title><img src='missing.png'>"
                      "<script>console.error('boom'); undefinedFunction();</script>")
    page = browser.open(broken.as_uri())
    assert any("ERR_FILE_NOT_FOUND" in p for p in page.problems)
    assert "console error: boom" in page.problems
    assert any(p.startswith("script error:") for p in page.problems)
    assert browser.broken_images() == [(tmp_path / "missing.png").as_uri()]
    empty = tmp_path / "empty.html"
    empty.write_text("<!DOCTYPE html><title>empty</title>")
    assert browser.open(empty.as_uri()).problems == []
    assert is_blank(browser.screenshot(full_page=False))


@pytest.mark.slow
def test_a_busy_server_answers_the_form_with_a_page_that_says_so(browser, server, tmp_path, monkeypatch):
    """An upload that finds the decode budget full: after its wait, the start page with the message
    (503), rendered cleanly; once the budget is free the same upload is answered."""
    query = tmp_path / "q.png"
    Image.new("RGB", (48, 48), (20, 160, 90)).save(query)
    monkeypatch.setattr(server.service, "budget_wait", 0.2)
    pixels = server.service.pixels
    with pixels.hold(pixels.capacity, wait=0):
        browser.open(server.url)
        browser.set_file("input[type=file]", str(query))
        page = browser.submit("document.querySelector('form.upload').submit()")
    assert page.problems == ["HTTP 503: " + server.url + "search", "browser log: Failed to load resource: the "
                             "server responded with a status of 503 (Service Unavailable)"]
    assert "the server is busy with other uploads" in browser.evaluate("document.querySelector('.message').textContent")
    assert browser.broken_images() == [] and fits_laptop(browser)
    browser.set_file("input[type=file]", str(query))
    page = browser.submit("document.querySelector('form.upload').submit()")
    assert page.problems == [] and browser.evaluate("document.querySelectorAll('.thumb.hit img').length") == TOP
