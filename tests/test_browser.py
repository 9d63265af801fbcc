"""Every page of the built book, loaded in headless Chromium as a reader would see it.

Serves `_build/html` (built by the README's first command; if it is missing, the book is built into a temporary
folder) on 127.0.0.1 and drives Chromium over its DevTools protocol. Skips, with the reason, where Chromium or the
book's build tools are not installed (CI machines without them).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "_build" / "screenshots"  # one PNG per page, to look at after the test
WINDOW = (1280, 900)  # a laptop browser window
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Run in each page once it has loaded and MathJax has finished; returns what the test asserts on.
PAGE_REPORT = """
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = [...document.images];
  const wide = [...document.querySelectorAll("div.highlight pre, div.cell_output pre")]
    .filter(pre => pre.scrollWidth > pre.clientWidth + 2)
    .map(pre => pre.textContent.split("\\n").reduce((a, b) => (a.length > b.length ? a : b)).slice(0, 100));
  return JSON.stringify({
    title: document.title,
    figures: document.querySelectorAll("div.cell_output img").length,
    broken_images: images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src),
    maths: document.querySelectorAll(".math").length,
    untypeset_maths: [...document.querySelectorAll(".math")]
      .filter(el => !el.querySelector("mjx-container")).map(el => el.textContent.slice(0, 60)),
    animations: [...document.querySelectorAll("div.animation img")]
      .filter(img => img.naturalWidth > 0).length,
    colab: [...document.querySelectorAll("a[href*='colab.research.google.com']")].map(a => a.href),
    overflowing_blocks: wide,
    page_overflow: document.documentElement.scrollWidth > window.innerWidth + 2,
    wide_elements: [...document.querySelectorAll("main *")]
      .filter(el => !el.closest("mjx-assistive-mml") && el.getBoundingClientRect().width > 0
        && el.getBoundingClientRect().right > window.innerWidth + 2)
      .slice(0, 3).map(el => `${el.tagName.toLowerCase()}.${el.className}: ${el.textContent.slice(0, 60)}`),
  });
})()
"""


def _built_book(tmp_path_factory) -> Path:
    html = ROOT / "_build" / "html"
    if (html / "index.html").is_file():
        return html
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.is_file():
        pytest.skip("no built book (_build/html) and no jupyter-book to build one: run the README's first command")
    out = tmp_path_factory.mktemp("book")
    subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "--builder", "html"],
                   check=True, capture_output=True, timeout=900)
    return out / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, html folder) of the built book served on 127.0.0.1."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the browser test cannot run")
    html = _built_book(tmp_path_factory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", html
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium's DevTools port."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the browser test cannot run")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.skip("Chromium did not start (no DevToolsActivePort after 30 s)")
    yield int(port_file.read_text().split()[0])
    process.kill()
    process.wait()


async def _load(port: int, url: str, screenshot: Path) -> tuple[dict, list[str]]:
    """Open url in a new tab; return the page report and the console errors; save a full-page screenshot."""
    from tornado.websocket import websocket_connect

    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    target = json.loads(urllib.request.urlopen(request, timeout=30).read())
    connection = await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=2**26)
    errors: list[str] = []
    next_id = 0

    async def call(method: str, **params) -> dict:
        nonlocal next_id
        next_id += 1
        my_id = next_id
        connection.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(await connection.read_message())
            if message.get("id") == my_id:
                return message
            _collect(message, errors)

    await call("Runtime.enable")
    await call("Log.enable")
    await call("Page.enable")
    await call("Page.navigate", url=url)  # after enabling the domains, so no message is missed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = json.loads(await asyncio.wait_for(connection.read_message(), 60))
        if message.get("method") == "Page.loadEventFired":
            break
        _collect(message, errors)
    result = await call("Runtime.evaluate", expression=PAGE_REPORT, awaitPromise=True, returnByValue=True)
    if "value" not in result.get("result", {}).get("result", {}):
        raise AssertionError(f"{url}: the page report failed: {result}")
    await asyncio.sleep(0.5)  # late console messages
    metrics = await call("Page.getLayoutMetrics")
    height = min(int(metrics["result"]["cssContentSize"]["height"]), 16000)
    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": WINDOW[0], "height": height, "scale": 1})
    screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
    connection.close()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/json/close/{target['id']}", timeout=30)
    value = result["result"]["result"]["value"]
    # the report is a JSON string; DevTools sometimes hands back the object itself
    return (value if isinstance(value, dict) else json.loads(value)), errors


def _collect(message: dict, errors: list[str]) -> None:
    method, params = message.get("method"), message.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        errors.append(details.get("exception", {}).get("description", details.get("text", "exception")))
    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")


def _pages(html: Path) -> list[str]:
    pages = [p.relative_to(html).as_posix() for p in html.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(("_", "genindex", "search")))


def test_every_page_loads_cleanly(site, browser):
    base, html = site
    pages = _pages(html)
    assert "index.html" in pages and any(p.startswith("notebooks/") for p in pages)
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    problems = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of every page: {SCREENSHOTS}")
    for page in pages:
        screenshot = SCREENSHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")
        try:
            report, errors = asyncio.run(_load(browser, f"{base}/{page}", screenshot))
        except (TypeError, AssertionError, asyncio.TimeoutError):  # a rare DevTools hiccup: once more
            report, errors = asyncio.run(_load(browser, f"{base}/{page}", screenshot))
        # Offline, requests to outside hosts fail; those are the reader's network, not our pages.
        errors = [e for e in errors if ("127.0.0.1" in e or "net::" not in e) and "favicon.ico" not in e]
        if errors:
            problems.append(f"{page}: console errors {errors[:3]}")
        if report["broken_images"]:
            problems.append(f"{page}: images that did not load {report['broken_images'][:3]}")
        if report["untypeset_maths"]:
            problems.append(f"{page}: maths not typeset {report['untypeset_maths'][:3]}")
        if report["overflowing_blocks"]:
            problems.append(f"{page}: {len(report['overflowing_blocks'])} code/output blocks wider than the "
                            f"page, e.g. {report['overflowing_blocks'][:2]}")
        if report["page_overflow"]:
            problems.append(f"{page}: the page scrolls sideways")
        if report["wide_elements"]:
            problems.append(f"{page}: content wider than the window {report['wide_elements']}")
        stem = Path(page).stem
        if stem in chapters:
            expected = f"blob/main/notebooks/{stem}.ipynb"
            if not any(expected in href for href in report["colab"]):
                problems.append(f"{page}: no Colab link to {expected} (found {report['colab'][:2]})")
            if report["figures"] == 0:
                problems.append(f"{page}: a chapter without figures")
            stored = (ROOT / "notebooks" / f"{stem}.ipynb").read_text().count('class=\\"animation\\"')
            if report["animations"] < stored:
                problems.append(f"{page}: {report['animations']} animations showing, {stored} stored")
    assert not problems, "\n".join(problems)
