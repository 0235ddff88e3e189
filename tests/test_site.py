"""The built book, checked in a real browser: Debian's chromium driven by Playwright.

`make test` builds the book at smoke scale into build/smoke-book first; this test serves that site on
127.0.0.1 and opens every page the table of contents lists (read from book/_toc.yml, so new chapters are
checked without editing this file). It fails, never skips, when the site or the browser is missing.
Screenshots of the landing page and one chapter go to build/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("GPT2LAB_SITE", ROOT / "build" / "smoke-book" / "_build" / "html"))
SCREENSHOTS = ROOT / "build" / "screenshots"
INSTALL_BROWSER = "apt-get install chromium (Debian, as root), or set GPT2LAB_CHROMIUM to a Chromium binary"


def toc_pages(toc_file: Path = ROOT / "book" / "_toc.yml") -> list[str]:
    """Every document in the table of contents, in reading order (root first), as paths without suffix."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key))

    for key in ("chapters", "parts"):
        walk(toc.get(key))
    return pages


def _chromium() -> str:
    path = os.environ.get("GPT2LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(f"no Chromium to drive: {INSTALL_BROWSER}", pytrace=False)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site at {SITE}: `make test` builds it (GPT2LAB_SCALE=smoke jupyter-book build ... "
                    "--path-output build/smoke-book) before running the tests", pytrace=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (in the dev extra: make install)", pytrace=False)
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


class Visit:
    """One page load with every request and console error recorded; off-machine requests are refused."""

    def __init__(self, browser, url: str):
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        self.response = self.page.goto(url, wait_until="load")
        # MathJax 3 typesets after load: wait until it says it is done (pages without math have no MathJax).
        # A redirect page (index.html) navigates on: wait for the page it lands on.
        for _ in range(3):
            try:
                self.page.wait_for_load_state("load")
                self.page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
                break
            except Exception as e:  # noqa: BLE001 - only "context destroyed by a navigation" is retried
                if "navigation" not in str(e):
                    raise

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        if urlparse(url).scheme in ("data", "blob") or urlparse(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    def off_machine(self) -> list[str]:
        return [u for u in self.requests if urlparse(u).scheme not in ("data", "blob")
                and urlparse(u).hostname != "127.0.0.1"]

    def close(self):
        self.context.close()


# Text of the page body outside code, where unrendered TeX would show: $$, \( or \[ left by MathJax.
_PROSE_TEXT = """() => {
  const main = document.querySelector('main') || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, .highlight, mjx-container').forEach(e => e.remove());
  return copy.textContent;
}"""

_IMAGES = """() => Array.from(document.images).map(img => ({src: img.currentSrc || img.src,
                                                          ok: img.complete && img.naturalWidth > 0}))"""


def test_no_page_loads_a_script_or_stylesheet_from_another_host():
    """Static check of every built page (the browser test below sees only the pages in the toc)."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site at {SITE}: `make test` builds it first", pytrace=False)
    tag = re.compile(r"<(script|link|img|iframe)\b[^>]*?\b(src|href)=[\"']((?:https?:)?//[^\"']+)", re.I)
    remote = {}
    for page in SITE.rglob("*.html"):
        for match in tag.finditer(page.read_text(encoding="utf-8", errors="replace")):
            if match.group(1).lower() == "link" and "stylesheet" not in match.group(0).lower() \
                    and "preload" not in match.group(0).lower() and "icon" not in match.group(0).lower():
                continue  # <link rel="next"/"canonical"> to another page is not a request
            remote.setdefault(str(page.relative_to(SITE)), []).append(match.group(3))
    assert not remote, remote


def test_toc_lists_pages_that_exist():
    pages = toc_pages()
    assert len(pages) >= 2 and len(set(pages)) == len(pages)
    missing = [p for p in pages if not any((ROOT / f"{p}{s}").is_file() for s in (".md", ".ipynb"))]
    assert not missing, f"in book/_toc.yml but not in the repository: {missing}"


def test_every_page_loads_offline_with_figures_and_math(site, browser):
    problems, pages_with_math, figures = [], 0, 0
    for doc in toc_pages():
        visit = Visit(browser, urljoin(site, f"{doc}.html"))
        try:
            page = visit.page
            if visit.response is None or visit.response.status != 200:
                problems.append(f"{doc}: HTTP {visit.response and visit.response.status}")
            if not page.locator("main h1").count():
                problems.append(f"{doc}: no title")
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=15000)
            for img in page.evaluate(_IMAGES):
                figures += 1
                if not img["ok"]:
                    problems.append(f"{doc}: figure did not load: {img['src']}")
            math = page.locator(".math").count()
            if math:
                pages_with_math += 1
                typeset = page.locator(".math mjx-container").count()
                if typeset < math:
                    problems.append(f"{doc}: {math - typeset} of {math} formulas not typeset")
                text = page.evaluate(_PROSE_TEXT)
                raw = [t for t in ("$$", "\\(", "\\[") if t in text]
                if raw:
                    problems.append(f"{doc}: raw TeX {raw} left in the page")
            problems += [f"{doc}: request off the machine: {u}" for u in visit.off_machine()]
            problems += [f"{doc}: {e}" for e in visit.errors]
        finally:
            visit.close()
    assert not problems, "\n".join(problems)
    assert figures > 0, "no page has a figure: the figure check checked nothing"
    assert pages_with_math > 0, "no page has math: the MathJax check checked nothing"


def test_landing_page_leads_to_the_introduction(site, browser):
    visit = Visit(browser, site)
    try:
        visit.page.wait_for_url(f"**/{toc_pages()[0]}.html", timeout=15000)
        assert visit.page.locator("main h1").count() >= 1
        assert not visit.off_machine() and not visit.errors, visit.off_machine() + visit.errors
    finally:
        visit.close()


def test_sidebar_lists_the_chapters_in_toc_order(site, browser):
    visit = Visit(browser, urljoin(site, f"{toc_pages()[0]}.html"))
    try:
        hrefs = visit.page.eval_on_selector_all(".bd-sidebar-primary nav.bd-links a.reference.internal",
                                                "links => links.map(a => a.href)")
    finally:
        visit.close()
    listed = [urlparse(h).path.lstrip("/").removesuffix(".html") for h in hrefs]
    assert listed == toc_pages()  # the introduction first (home_page_in_navbar), then every chapter in order


def test_every_notebook_page_offers_its_ipynb(site, browser):
    """The download button links the page's .ipynb, and that file is a notebook with the page's cells."""
    checked = 0
    for doc in toc_pages():
        if not (ROOT / f"{doc}.md").read_text(encoding="utf-8").count("```{code-cell}"):
            continue  # a plain Markdown page has no notebook to offer
        visit = Visit(browser, urljoin(site, f"{doc}.html"))
        try:
            links = visit.page.eval_on_selector_all(".dropdown-download-buttons a", "links => links.map(a => a.href)")
            ipynb = [h for h in links if h.endswith(".ipynb")]
            assert ipynb, f"{doc}: no .ipynb in the download menu ({links})"
            response = visit.page.request.get(ipynb[0])
            assert response.status == 200, f"{doc}: {ipynb[0]} -> HTTP {response.status}"
            notebook = json.loads(response.body())
            code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
            assert len(code) == (ROOT / f"{doc}.md").read_text(encoding="utf-8").count("```{code-cell}")
            checked += 1
        finally:
            visit.close()
    assert checked > 0


def test_screenshots_of_the_landing_page_and_a_chapter(site, browser):
    """build/screenshots/landing.png (the introduction, sidebar included), chapter.png (a chapter with math,
    scrolled to its first formula), and results.png when the results page is in the book."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chapters = [d for d in toc_pages()[1:] if d.startswith("notebooks/")]
    with_math = [d for d in chapters if "$$" in (ROOT / f"{d}.md").read_text(encoding="utf-8")]
    shots = [("landing", toc_pages()[0], None), ("chapter", (with_math or chapters)[0], "div.math")]
    shots += [("results", d, "img") for d in toc_pages() if d.endswith("/results")]
    for name, doc, scroll_to in shots:
        visit = Visit(browser, urljoin(site, f"{doc}.html"))
        try:
            if scroll_to and visit.page.locator(f"main {scroll_to}").count():
                visit.page.locator(f"main {scroll_to}").first.scroll_into_view_if_needed()
            path = SCREENSHOTS / f"{name}.png"
            visit.page.screenshot(path=str(path), full_page=False)
            assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        finally:
            visit.close()
