"""Open every page of the built smoke book in headless Chromium: no console errors, images load with alt text, links resolve."""

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from companion.publish.book import build
from companion.publish.project import Project

pytestmark = [pytest.mark.smoke, pytest.mark.browser]
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="module")
def site(smoke_project: Project) -> Path:
    """The smoke book, built with warnings as errors."""
    assert build(smoke_project.root) == 0
    return smoke_project.root / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through chromedriver (no browser download)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Chromium is missing: install Debian's chromium and chromium-driver (make test does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def _pages(site: Path) -> list[Path]:
    """Content pages of the site (Sphinx's generated index and search pages excluded)."""
    return sorted(p for p in site.rglob("*.html") if p.name not in {"genindex.html", "search.html"}
                  and "_static" not in p.parts and "_sources" not in p.parts)


def _broken_internal_links(page: Path, hrefs: list[str]) -> list[str]:
    """Links to local files that do not exist."""
    broken = []
    for href in hrefs:
        parsed = urlparse(href)
        if parsed.scheme == "file" and parsed.path:
            target = Path(unquote(parsed.path))
            if not target.exists():
                broken.append(f"{page.name} -> {href}")
    return broken


def _missing_alt(page: Path, images: list[list[str]]) -> list[str]:
    """Images whose alt text is empty or just a file name or path (what notebooks get by default)."""
    bad = []
    for src, alt in images:
        text = alt.strip()
        if not text or re.fullmatch(r"[\w./\\:-]+\.(png|jpe?g|svg|gif)", text) or text == Path(unquote(urlparse(src).path)).name:
            bad.append(f"{page.name}: image {Path(urlparse(src).path).name} has alt {alt!r}")
    return bad


def test_no_progress_bar_reaches_a_page(site: Path) -> None:
    """Progress bars (model conversion, weight loading, sampling, training) stay on stderr, which pages drop."""
    bar = re.compile(r"\d+/\d+ \[[^\]]*(it/s|s/it)\]")
    assert not [page.name for page in _pages(site) if bar.search(page.read_text(encoding="utf-8"))]


def test_every_page_loads_cleanly(site: Path, browser) -> None:
    problems: list[str] = []
    pages = _pages(site)
    assert any(p.name == "claims.html" for p in pages), "the claims page is part of the book"
    for page in pages:
        browser.get(page.as_uri())
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        problems += [f"{page.name}: console error {m}" for m in errors]
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0]);")
        problems += [f"{page.name}: image did not load {src}" for src, ok in images if not ok]
        problems += _missing_alt(page, browser.execute_script(
            "return Array.from(document.images).map(i => [i.src, i.getAttribute('alt') || '']);"))
        hrefs = browser.execute_script("return Array.from(document.links).map(a => a.href);")
        problems += _broken_internal_links(page, hrefs)
    assert not problems, "\n".join(problems)


def test_site_is_ready_for_github_pages_with_repository_buttons(site: Path, browser) -> None:
    assert (site / ".nojekyll").exists(), "GitHub Pages' Jekyll would drop _generated/ and _static/"
    repository = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())["repository"]["url"]
    browser.get((site / "intro.html").as_uri())
    links = browser.execute_script("return Array.from(document.querySelectorAll('a.btn')).map(a => a.href);")
    assert repository in links, "the repository button links to the repository"
    assert any(link.startswith(f"{repository}/issues/new") for link in links), "the issue button opens a new issue"
    browser.get((site / "_generated" / "00_data_and_models.html").as_uri())
    links = browser.execute_script("return Array.from(document.querySelectorAll('a.btn')).map(a => a.href);")
    notebook_links = [link for link in links if link.endswith(".ipynb") or "ipynb" in link]
    assert notebook_links and all("notebooks/00_data_and_models.ipynb" in link for link in notebook_links), notebook_links


def test_screenshots_of_landing_and_claims(site: Path, browser) -> None:
    OUTPUT.mkdir(exist_ok=True)
    for name in ("index", "claims"):
        page = next(site.rglob(f"{name}.html"))
        browser.get(page.as_uri())
        shot = OUTPUT / f"{name}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
