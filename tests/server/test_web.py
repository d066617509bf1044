"""The web page of `dsocr serve`, driven in headless Chromium against a real server on the tiny checkpoint.

No mocks: a `python -m dsocr serve` subprocess, the page's real JavaScript, real uploads, real results.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(f"headless browser test: needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

STATIC = Path(__file__).resolve().parents[2] / "dsocr" / "server" / "static"
API_KEY = "web-test-key"
FORMATS = ("md", "json", "html", "zip")


# --- the server -------------------------------------------------------------------------------------

class RunningServer:
    def __init__(self, model: Path, data_dir: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / f"server-{port}.log"
        args = [sys.executable, "-m", "dsocr", "serve", "--model", str(model), "--host", "127.0.0.1", "--port",
                str(port), "--data-dir", str(data_dir), "--max-tokens", "16", *extra]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.monotonic() + 120
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/ready", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server was not ready within 120 s: {self.tail()}")

    def requests(self) -> list[str]:
        """The paths of the requests the server has logged so far."""
        paths = []
        for line in self.log.read_text(errors="replace").splitlines():
            start = line.find('{"event": "request"')
            if start >= 0:
                paths.append(json.loads(line[start:])["path"])
        return paths

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture
def start(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def start_server(*extra: str) -> RunningServer:
        servers.append(RunningServer(tiny_checkpoint, tmp_path / f"data-{len(servers)}", *extra))
        return servers[-1]

    yield start_server
    for server in servers:
        server.stop()


# --- the browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield browser
    finally:
        browser.quit()


def wait_for(browser: Any, condition: Callable[[Any], Any], timeout: float, what: str) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition, message=f"waiting for {what}")


def severe(browser: Any) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def row_for(browser: Any, job_id: str) -> WebElement | None:
    rows = browser.find_elements(By.CSS_SELECTOR, f'#jobs tbody tr[data-id="{job_id}"]')
    return rows[0] if rows else None


def wait_done(browser: Any, job_id: str, server: RunningServer) -> WebElement:
    def done(b: Any) -> WebElement | bool:
        row = row_for(b, job_id)
        if row is None:
            return False
        status = row.get_attribute("data-status")
        if status in ("failed", "cancelled"):
            raise AssertionError(f"job {job_id} {status}: {row.text}\n{server.tail()}")
        return row if status == "done" else False

    return wait_for(browser, done, 180, f"job {job_id} to be done")


def page_images_loaded(browser: Any) -> list[int]:
    """Scroll each page into view (images load lazily) and return the images' natural widths."""
    return browser.execute_script("""
        const images = [...document.querySelectorAll('#pages .page-image img')];
        images.forEach((img) => img.scrollIntoView({block: 'center'}));
        return images.map((img) => (img.complete && img.getAttribute('src')) ? img.naturalWidth : 0);
    """)


def make_png() -> bytes:
    image = Image.new("RGB", (320, 200), "white")
    ImageDraw.Draw(image).text((20, 20), "dsocr", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_pdf(path: Path) -> Path:
    pages = []
    for number, colour in ((1, "white"), (2, "#f4f0e0")):
        image = Image.new("RGB", (420, 594), colour)
        draw = ImageDraw.Draw(image)
        draw.text((40, 40), f"Page {number}: dsocr web test", fill="black")
        draw.rectangle((40, 100, 380, 300), outline="black", width=3)
        pages.append(image)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72.0)
    return path


# --- tests --------------------------------------------------------------------------------------------

def test_vendored_katex_is_complete_and_small() -> None:
    katex = STATIC / "vendor" / "katex"
    css = (katex / "katex.min.css").read_text()
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert len(fonts) >= 20
    assert {p.relative_to(katex).as_posix() for p in (katex / "fonts").iterdir()} == fonts
    for name in ("LICENSE", "katex.min.js", "contrib/auto-render.min.js"):
        assert (katex / name).is_file()
    assert sum(p.stat().st_size for p in katex.rglob("*") if p.is_file()) < 1.5 * 2**20
    html = (STATIC / "index.html").read_text()
    assert "//cdn" not in html and "https://" not in html  # offline: everything from this server


@pytest.mark.slow
def test_upload_progress_and_result_view(driver: Any, start: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = start()
    pdf = make_pdf(tmp_path / "two pages.pdf")
    driver.get(server.url + "/")
    wait_for(driver, lambda b: b.execute_script("return document.readyState") == "complete", 30, "the page")
    driver.get_log("browser")  # start the console check from here
    # the drop zone is the file input's label, and the input itself takes keyboard focus
    assert driver.find_element(By.ID, "dropzone").get_attribute("for") == "file"
    assert driver.execute_script("const f = document.getElementById('file'); f.focus();"
                                 "return document.activeElement === f && f.labels.length > 0")

    driver.find_element(By.ID, "file").send_keys(str(pdf))
    row = wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]"), 60,
                   "the uploaded job's row")[0]
    job_id = row.get_attribute("data-id")
    assert job_id.startswith("doc_")
    assert "two pages.pdf" in row.text
    assert "accepted" in driver.find_element(By.ID, "uploads").text

    row = wait_done(driver, job_id, server)
    progress = row.find_element(By.CSS_SELECTOR, "td.progress progress")
    assert progress.get_attribute("max") == "2" and progress.get_attribute("value") == "2"
    assert "2 / 2" in row.text
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "done"
    wait_for(driver, lambda b: "done" in b.find_element(By.ID, "status").text, 10, "the done announcement")
    assert driver.find_element(By.ID, "status").get_attribute("aria-live") == "polite"

    # the same file with the same options again: the server answers with the existing job, no new row
    driver.find_element(By.ID, "file").send_keys(str(pdf))
    wait_for(driver, lambda b: "already uploaded" in b.find_element(By.CSS_SELECTOR, "#uploads li").text, 30,
             "the duplicate upload's answer")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 1

    row.find_element(By.XPATH, ".//button[normalize-space()='Open']").click()
    articles = wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "#pages article.page-view"), 30,
                        "the page views")
    assert len(articles) == 2
    assert driver.execute_script("return location.hash") == "#" + job_id
    assert driver.find_element(By.ID, "doc-title").text == "two pages.pdf"

    widths = wait_for(driver, lambda b: (w := page_images_loaded(b)) and all(w) and w, 30, "both page images")
    assert len(widths) == 2
    for image in driver.find_elements(By.CSS_SELECTOR, "#pages .page-image img"):
        assert image.is_displayed()
        assert f"/v1/documents/{job_id}/pages/" in image.get_attribute("src")

    sections = driver.find_elements(By.CSS_SELECTOR, "#pages .rendered section.page")
    assert [s.get_attribute("id") for s in sections] == ["page-1", "page-2"]
    assert all(s.is_displayed() for s in sections)

    # a page that is not ok says so, with its reason, next to its result
    result = httpx.get(f"{server.url}/v1/documents/{job_id}/result", params={"format": "json"}).json()
    for page, article in zip(result["pages"], articles):
        assert article.get_attribute("data-status") == page["status"]
        problems = article.find_elements(By.CSS_SELECTOR, ".page-problem")
        if page["status"] == "ok":
            assert not problems
        else:
            assert problems and problems[0].is_displayed()
            assert page["status"] in problems[0].text and page["reason"] in problems[0].text

    # math: every math span of the result is typeset, and the vendored KaTeX works under the page's CSP
    assert driver.execute_script("return document.querySelectorAll('.rendered .math:not(:has(.katex))')"
                                 ".length") == 0
    typeset = driver.execute_script(r"""
        const probe = document.createElement('div');
        probe.textContent = 'x \\(x^2 + \\frac{a}{b}\\) and \\[\\sum_i x_i\\]';
        document.getElementById('pages').append(probe);
        renderMathInElement(probe, {delimiters: [{left: '\\[', right: '\\]', display: true},
                                                 {left: '\\(', right: '\\)', display: false}]});
        const out = [probe.querySelectorAll('.katex').length, probe.querySelectorAll('.katex-display').length,
                     probe.querySelectorAll('.katex-error').length];
        return document.fonts.ready.then(() => { probe.remove(); return out; });
    """)
    assert typeset == [2, 1, 0]

    links = {a.get_attribute("data-format"): a.get_attribute("href")
             for a in driver.find_elements(By.CSS_SELECTOR, "#doc-downloads a")}
    assert links == {f: f"{server.url}/v1/documents/{job_id}/result?format={f}" for f in FORMATS}
    for url in links.values():
        assert httpx.get(url).status_code == 200

    # nothing keeps asking about a finished job: no stream, no polling
    before = len(server.requests())
    time.sleep(3)
    assert server.requests()[before:] == []

    driver.find_element(By.ID, "back").click()
    wait_for(driver, lambda b: b.find_element(By.ID, "list-view").is_displayed(), 10, "the list")
    assert not driver.find_element(By.ID, "doc-view").is_displayed()

    errors = severe(driver)
    assert not errors, errors


@pytest.mark.slow
def test_api_key_prompt_then_listing(driver: Any, start: Callable[..., RunningServer]) -> None:
    server = start("--api-key", API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    image = make_png()
    created = httpx.post(server.url + "/v1/documents", headers=auth, files={"file": ("scan.png", image, "image/png")})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert httpx.get(server.url + "/v1/documents").status_code == 401

    driver.get(server.url + "/")
    driver.get_log("browser")  # only this test's console
    message = driver.find_element(By.ID, "auth-message")
    wait_for(driver, lambda _b: message.is_displayed(), 30, "the 401 message")
    assert "API key" in message.text and "401" in message.text
    assert row_for(driver, job_id) is None

    key = driver.find_element(By.ID, "api-key")
    assert driver.find_element(By.CSS_SELECTOR, "label[for='api-key']").text == "API key"
    key.send_keys(API_KEY)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, lambda b: row_for(b, job_id) is not None, 30, "the job listed with the key")
    assert not message.is_displayed()
    assert driver.execute_script("return localStorage.getItem('dsocr.apiKey')") == API_KEY

    # with a key, images and downloads go through fetch() with the header
    row = wait_done(driver, job_id, server)
    row.find_element(By.XPATH, ".//button[normalize-space()='Open']").click()
    widths = wait_for(driver, lambda b: (w := page_images_loaded(b)) and all(w) and w, 30, "the page image")
    assert len(widths) == 1
    assert driver.find_element(By.CSS_SELECTOR, "#pages .page-image img").get_attribute("src").startswith("blob:")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#pages .rendered section.page")) == 1

    # delete, confirmed in the browser's dialog
    driver.find_element(By.ID, "back").click()
    row = wait_for(driver, lambda b: row_for(b, job_id), 10, "the list")
    row.find_element(By.XPATH, ".//button[normalize-space()='Delete']").click()
    wait_for(driver, lambda b: b.switch_to.alert, 10, "the confirmation").accept()
    wait_for(driver, lambda b: row_for(b, job_id) is None, 10, "the row to go")
    assert httpx.get(f"{server.url}/v1/documents/{job_id}", headers=auth).status_code == 404

    unexpected = [e for e in severe(driver) if "401" not in e["message"]]
    assert not unexpected, unexpected

