"""The built book, checked in a real browser: Debian's chromium driven by Playwright.

`make test` builds the book at smoke scale into build/smoke-book first (offline, as a fresh clone would) and
names it in GPT2LAB_SITE; this test serves that site on 127.0.0.1 and opens every page the table of contents
lists (read from book/_toc.yml, so new chapters are checked without editing this file) in a 1280 px window.
Every page must fit its text column (no output block or table running past it or hidden behind a scroll bar)
and show every figure at a size where its smallest text (gpt2lab.base.figures.MIN_PT) stays readable.
A screenshot of every page goes to build/screenshots/.

With GPT2LAB_SITE set (make test), a missing site or browser fails the test. Run bare (`pytest -m "not slow"`
on a fresh clone, before any build), the tests that need a built site are skipped, saying so.
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
SITE_NAMED = bool(os.environ.get("GPT2LAB_SITE"))  # make test names the site it has just built
SITE = Path(os.environ.get("GPT2LAB_SITE") or ROOT / "build" / "smoke-book" / "_build" / "html")
WINDOW = 1280  # CSS px: a laptop's browser window
READABLE_PX = 9.0  # the smallest text height (CSS px) a figure may show
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


def _need_site():
    """Fail when make test named a site that is not there; skip, saying why, when nothing has been built."""
    if (SITE / "index.html").is_file():
        return
    if SITE_NAMED:
        pytest.fail(f"no built site at {SITE} (GPT2LAB_SITE): the smoke book build did not produce it", pytrace=False)
    pytest.skip(f"the site is not built here ({SITE}): `make test` builds it (make smoke-book) and runs this test")


@pytest.fixture(scope="module")
def site():
    _need_site()
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
        self.context = browser.new_context(viewport={"width": WINDOW, "height": 900})
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
    _need_site()
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


# Everything in the article that could run past the text column: printed output, code, tables, and any box
# that scrolls sideways (a table or output hidden behind a scroll bar is cut off too). Figures: each image's
# rendered width against its natural width, and its dpi, give the size its smallest text is shown at.
_LAYOUT = """() => {
  const article = document.querySelector('main article') || document.querySelector('main');
  const column = article.getBoundingClientRect();
  const describe = el => (el.closest('.cell') ? 'cell ' + (Array.from(document.querySelectorAll('.cell')).indexOf(el.closest('.cell')) + 1) + ': ' : '')
      + el.tagName.toLowerCase() + ' "' + (el.innerText || el.alt || '').trim().replace(/\\s+/g, ' ').slice(0, 60) + '"';
  const wide = [];
  for (const el of article.querySelectorAll('pre, table, .cell_output, .cell_output .output, .highlight, img')) {
    if (el.closest('mjx-container')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.right > column.right + 1 || r.left < column.left - 1)
      wide.push(`${describe(el)} is ${Math.round(r.width)} px wide, past the ${Math.round(column.width)} px column`);
    else if (el.scrollWidth > el.clientWidth + 1 && el.tagName !== 'IMG')
      wide.push(getComputedStyle(el).overflowX === 'visible'
        ? `${describe(el)} runs ${el.scrollWidth - el.clientWidth} px past its box, past the ${Math.round(column.width)} px column`
        : `${describe(el)} hides ${el.scrollWidth - el.clientWidth} px behind a scroll bar`);
  }
  const images = Array.from(article.querySelectorAll('.cell_output img')).map(img => ({
      src: img.currentSrc || img.src, natural: img.naturalWidth, shown: img.getBoundingClientRect().width}));
  return {column: column.width, wide, images};
}"""


def _png_dpi(site_url: str, src: str) -> float | None:
    """The dpi recorded in a figure's PNG (matplotlib writes it), read from the built site's files."""
    from PIL import Image

    path = SITE / urlparse(src).path.removeprefix(urlparse(site_url).path)
    if not path.is_file():
        return None
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    return float(dpi[0]) if dpi else None


def _smallest_text_px(natural: float, shown: float, dpi: float) -> float:
    """How tall the figure style's smallest text (MIN_PT at `dpi`) is on the page, in CSS px."""
    from gpt2lab.base import figures

    return figures.MIN_PT * dpi / 72 * shown / natural


def test_every_page_fits_its_column_and_its_figures_read_at_1280px(site, browser):
    """No output block or table wider than the text column or hidden behind a scroll bar; every figure shown
    large enough that its smallest text (figures.MIN_PT at the PNG's dpi, scaled as the page scales the image)
    is at least READABLE_PX. Saves a full-page screenshot of every page to build/screenshots/."""
    from gpt2lab.base import figures

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    problems, images, columns = [], 0, []
    for doc in toc_pages():
        visit = Visit(browser, urljoin(site, f"{doc}.html"))
        try:
            page = visit.page
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=15000)
            layout = page.evaluate(_LAYOUT)
            columns.append(layout["column"])
            problems += [f"{doc}: {w}" for w in layout["wide"]]
            for img in layout["images"]:
                images += 1
                dpi = _png_dpi(site, img["src"]) or figures.DPI
                smallest = _smallest_text_px(img["natural"], img["shown"], dpi)
                if smallest < READABLE_PX:
                    problems.append(f"{doc}: figure {Path(urlparse(img['src']).path).name} is {img['natural']} px "
                                    f"wide shown at {img['shown']:.0f} px: its {figures.MIN_PT:g} pt text reads at "
                                    f"{smallest:.1f} px (under {READABLE_PX:g})")
            shot = SCREENSHOTS / f"{doc.replace('/', '_')}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
        finally:
            visit.close()
    assert not problems, "\n".join(problems)
    assert images > 0 and min(columns) > 500, (images, columns)  # the checks saw figures, in a real column


def test_the_layout_check_fails_on_a_wide_table_and_a_shrunk_figure(browser, tmp_path):
    """The check above, on a page made to break it: it must see both faults (a check that cannot fail is none)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 3), dpi=100)
    ax.plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    (tmp_path / "wide.png").write_bytes(buf.getvalue())
    cells = "".join(f"<td>{'x' * 40}</td>" for _ in range(8))
    (tmp_path / "page.html").write_text(
        "<html><body style='margin:0'><main><article style='width:700px'>"
        "<div class='cell'><div class='cell_output'><div class='output' style='overflow-x:auto'>"
        f"<table style='white-space:nowrap'><tr>{cells}</tr></table></div></div></div>"
        "<div class='cell'><div class='cell_output'><img src='wide.png' style='max-width:100%'></div></div>"
        "<pre>" + "y" * 200 + "</pre></article></main></body></html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    visit = Visit(browser, f"http://127.0.0.1:{server.server_address[1]}/page.html")
    try:
        visit.page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=15000)
        layout = visit.page.evaluate(_LAYOUT)
    finally:
        visit.close()
        server.shutdown()
        server.server_close()
    assert any("behind a scroll bar" in w and "table" not in w for w in layout["wide"]), layout["wide"]
    assert any(w.startswith("pre") and "past the 700 px column" in w for w in layout["wide"]), layout["wide"]
    (img,) = layout["images"]
    assert img["natural"] == 1400 and 690 <= img["shown"] <= 700  # 9 pt at 100 dpi shown at half: about 6 px
    assert _smallest_text_px(img["natural"], img["shown"], 100) < READABLE_PX <= _smallest_text_px(700, 700, 100)
