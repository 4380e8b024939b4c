"""The web studio of `facegan serve`, end to end: a real server process, driven in headless Chromium.

A tiny model is trained and exported once; `python -m facegan serve MODEL --port 0` runs as a user
starts it, and Playwright clicks through the studio: the grid, new faces, grid size, ψ, the
viewer and its PNG download, the A → B walk, a bad seed's error. Every page also checks that the
studio fetched nothing from any host but its own server and threw no JavaScript error. Ctrl-C
(SIGINT) must stop the server with exit code 0 after it logs "stopped".
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import TINY
from test_cli import SRC

pytest.importorskip("fastapi", reason="facegan serve needs the serve extra (pip install 'facegan[serve]')")
pytest.importorskip("uvicorn", reason="facegan serve needs the serve extra (pip install 'facegan[serve]')")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package")
httpx = pytest.importorskip("httpx", reason="the browser tests need httpx")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
if CHROMIUM is None:
    pytest.skip("no Chromium to drive (looked for `chromium` on PATH and /usr/bin/chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow  # a training run, server processes and a browser: ≈ 30 s

from playwright.sync_api import expect  # noqa: E402
from PIL import Image  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
URL_LINE = re.compile(r"serving .* on (http://\S+?) — studio at /")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TIMEOUT_MS = 15_000


class Server:
    """`python -m facegan serve MODEL --port 0` as a subprocess; its stderr is read (and kept) as it comes."""

    def __init__(self, model: Path, **env: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "facegan", "serve", str(model), "--port", "0"],
                                     env={**os.environ, "PYTHONPATH": SRC, **env}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        self._url = threading.Event()
        self.url = ""
        # drained all along: every request logs a line, and a full pipe would block the server
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._url.wait(90) or not self.url:
            self.proc.kill()
            self._reader.join(5)
            raise AssertionError("the server printed no URL line:\n" + self.log)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if not self.url and (m := URL_LINE.search(line)):
                self.url = m.group(1)
                self._url.set()
        self._url.set()  # the process ended (without a URL line, if self.url is empty)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit code (the process is killed after 15 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the server was still running 15 s after SIGINT:\n" + self.log[-3000:]) from None
        self._reader.join(5)
        return rc

    def assert_stops_cleanly(self) -> None:
        rc = self.stop()
        assert rc == 0, f"exit code {rc} after SIGINT:\n{self.log[-3000:]}"
        assert any(line.rstrip().endswith("stopped") for line in self.lines), self.log[-3000:]
        assert "Traceback" not in self.log, self.log[-3000:]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model folder: 6 training steps of 16² nets on procedural faces, exported (≈ 2 s)."""
    from facegan import export
    from facegan.config import TrainConfig
    from facegan.train.loop import train

    tmp = tmp_path_factory.mktemp("studio")
    cfg = TrainConfig(preset="tiny", data="procedural:128", out=str(tmp / "run"), batch=16, max_images=16 * 6, log_every=2,
                      sample_every=4, ckpt_every=4, keep=2, grid=4, model=TINY, ema_kimg=0.05, eval_every=0)
    with pytest.MonkeyPatch.context() as mp:  # conftest's _cache is per test; this fixture runs before it
        mp.setenv("FACEGAN_CACHE", str(tmp / "cache"))
        train(cfg, progress=False)
    return export.export(cfg.out, tmp / "model")


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir)
    yield s
    s.assert_stops_cleanly()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watch:
    """What a page did: every http(s) request it made and every JavaScript error it threw."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", self._console)

    def _console(self, message) -> None:
        # a 4xx the test asked for (or /favicon.ico's 404) is logged as "Failed to load resource": not a script error
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def check(self) -> None:
        foreign = [u for u in self.urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                   and urlsplit(u).hostname not in LOCAL_HOSTS]
        assert not foreign, f"the studio fetched from other hosts: {foreign}"
        assert not self.errors, f"JavaScript errors: {self.errors}"


def open_studio(browser, url: str, **context_args):
    context = browser.new_context(**context_args)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = Watch(page)
    page.goto(url + "/")
    return context, page, watch


@pytest.fixture
def studio(browser, server):
    """The studio page, loaded; after the test, no foreign request and no JavaScript error."""
    context, page, watch = open_studio(browser, server.url)
    wait_for_faces(page, 36)
    yield page
    broken = broken_images(page)
    context.close()
    watch.check()
    assert not broken, f"broken images on the page: {broken}"


def wait_for_faces(page, n: int) -> list[str]:
    """Wait until the grid holds ``n`` faces that all decoded as images; their src (data URLs)."""
    expect(page.locator("#faces button")).to_have_count(n)
    page.wait_for_function("""(n) => { const imgs = [...document.querySelectorAll('#faces img')];
        return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0); }""", arg=n)
    return page.eval_on_selector_all("#faces img", "imgs => imgs.map((i) => i.src)")


def broken_images(page) -> list[str]:
    """The shown images that have nothing to show (no src, or a src that failed to decode): what a
    browser draws as a broken-image icon with its alt text."""
    return page.eval_on_selector_all("img", """imgs => imgs.filter((i) => i.offsetParent !== null
        && (!i.getAttribute('src') || (i.complete && i.naturalWidth === 0))).map((i) => i.id || i.alt)""")


def face_sizes(page) -> set[tuple[int, int]]:
    return {tuple(s) for s in page.eval_on_selector_all("#faces img", "imgs => imgs.map((i) => [i.naturalWidth, i.naturalHeight])")}


def test_the_studio_shows_the_model_and_a_6x6_grid_of_faces(studio, server):
    info = httpx.get(server.url + "/v1/model", timeout=10).json()
    line = studio.inner_text("#model")
    for part in ("tiny 16²", "z = 8", "96 images seen", "torch", "model " + info["sha256"][:12]):
        assert part in line, line
    srcs = wait_for_faces(studio, 36)
    assert len(set(srcs)) == 36 and all(s.startswith("data:image/png;base64,") for s in srcs)  # 36 different faces
    assert face_sizes(studio) == {(16, 16)}
    buttons = studio.locator("#faces button")
    assert [(buttons.nth(k).get_attribute("data-seed"), buttons.nth(k).get_attribute("data-index")) for k in (0, 35)] == \
        [("0", "0"), ("0", "35")]
    assert studio.input_value("#seed") == "0" and studio.input_value("#grid") == "6"
    assert "96 (6 steps)" in studio.text_content("#card")  # the model card of the folder
    expect(studio.locator("#error")).to_be_hidden()
    expect(studio.locator("#upscale-box")).to_be_hidden()  # this model folder has no upscaler
    expect(studio.locator("#viewer")).to_be_hidden()


def test_new_faces_changes_the_seed_and_the_faces(studio):
    before = wait_for_faces(studio, 36)
    studio.click("#new")
    expect(studio.locator("#seed")).not_to_have_value("0")
    seed = studio.input_value("#seed")
    assert seed.isdigit() and 0 <= int(seed) < 2**32
    expect(studio.locator("#faces button").first).to_have_attribute("data-seed", seed)
    after = wait_for_faces(studio, 36)
    assert not set(after) & set(before)

    studio.fill("#seed", "0")  # Enter in the seed box shows that seed's faces again, the same bytes
    studio.press("#seed", "Enter")
    expect(studio.locator("#faces button").first).to_have_attribute("data-seed", "0")
    assert wait_for_faces(studio, 36) == before


def test_an_8x8_grid_has_64_faces(studio):
    studio.select_option("#grid", "8")
    srcs = wait_for_faces(studio, 64)
    assert len(set(srcs)) == 64
    assert studio.locator("#faces button").nth(63).get_attribute("data-index") == "63"
    studio.select_option("#grid", "4")
    wait_for_faces(studio, 16)


def test_truncation_changes_the_faces(studio):
    before = wait_for_faces(studio, 36)
    studio.check("#psi-on")
    expect(studio.locator("#psi-value")).to_have_text("ψ = 1.5")
    studio.wait_for_function("(old) => document.querySelector('#faces img').src !== old", arg=before[0])
    truncated = wait_for_faces(studio, 36)
    assert truncated != before
    studio.uncheck("#psi-on")
    expect(studio.locator("#psi-value")).to_have_text("off")
    studio.wait_for_function("(old) => document.querySelector('#faces img').src === old", arg=before[0])
    assert wait_for_faces(studio, 36) == before


def test_a_clicked_face_opens_large_and_downloads_as_a_png(studio, tmp_path):
    face = studio.locator("#faces button").nth(7)
    src = face.locator("img").get_attribute("src")
    face.click()
    expect(studio.locator("#viewer")).to_be_visible()
    expect(studio.locator("#viewer-title")).to_have_text("Face (seed 0, index 7)")
    expect(studio.locator("#big")).to_have_attribute("src", src)
    studio.wait_for_function("() => document.querySelector('#big').naturalWidth > 0")
    with studio.expect_download() as d:
        studio.click("#download button")
    download = d.value
    assert download.suggested_filename == "seed0-000007.png"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.size == (16, 16) and img.mode == "RGB"


def test_faces_set_as_a_and_b_give_a_walk_to_scrub(studio):
    scrub = studio.locator("#scrub")
    expect(scrub).to_be_disabled()
    expect(studio.locator("#walk-frame")).to_be_hidden()  # no empty frame before there is a walk
    expect(studio.locator("#walk-gif")).to_be_hidden()
    expect(studio.locator("#a-slot")).to_be_visible()  # empty placeholders, not broken images, until faces are picked
    expect(studio.locator("#a-img")).to_be_hidden()
    assert broken_images(studio) == []
    studio.locator("#faces button").nth(0).click()
    studio.click("#set-a")
    expect(studio.locator("#faces button").nth(0)).to_have_class(re.compile(r"\ba\b"))
    expect(studio.locator("#a-img")).to_be_visible()
    expect(studio.locator("#a-slot")).to_be_hidden()
    expect(studio.locator("#b-slot")).to_be_visible()
    expect(scrub).to_be_disabled()  # one face is no walk yet
    studio.locator("#faces button").nth(5).click()
    studio.click("#set-b")
    expect(studio.locator("#faces button").nth(5)).to_have_class(re.compile(r"\bb\b"))
    expect(scrub).to_be_enabled()
    expect(studio.locator("#walk-frame")).to_be_visible()
    assert scrub.get_attribute("max") == "23" and scrub.input_value() == "0"
    first = studio.get_attribute("#walk-frame", "src")
    assert first.startswith("data:image/png;base64,")
    scrub.focus()
    studio.keyboard.press("End")  # the slider to the last frame, as a keyboard user moves it
    expect(scrub).to_have_value("23")
    expect(studio.locator("#walk-frame")).not_to_have_attribute("src", first)
    last = studio.get_attribute("#walk-frame", "src")
    scrub.fill("12")
    expect(studio.locator("#walk-frame")).not_to_have_attribute("src", last)
    studio.wait_for_function("() => document.querySelector('#walk-frame').naturalWidth === 16")
    expect(studio.locator("#pair-text")).to_have_text("drag the slider")
    expect(studio.locator("#walk-gif")).to_be_visible()  # the looping GIF, fetched after the frames
    assert studio.get_attribute("#walk-gif", "href").startswith("blob:")
    expect(studio.locator("#error")).to_be_hidden()


def test_a_bad_seed_shows_the_apis_error_and_keeps_the_faces(studio):
    before = wait_for_faces(studio, 36)
    studio.fill("#seed", "-1")
    studio.click("#show")
    error = studio.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("seed")
    assert "422" in error.inner_text()
    assert wait_for_faces(studio, 36) == before
    studio.fill("#seed", "3")  # a good seed clears the error
    studio.click("#show")
    expect(error).to_be_hidden()
    expect(studio.locator("#faces button").first).to_have_attribute("data-seed", "3")


def test_the_studio_talks_only_to_its_own_server(browser, server):
    context, page, watch = open_studio(browser, server.url)
    try:
        wait_for_faces(page, 36)
        page.locator("#faces button").nth(1).click()
        page.click("#set-a")
        page.locator("#faces button").nth(2).click()
        page.click("#set-b")
        expect(page.locator("#walk-gif")).to_be_visible()
    finally:
        context.close()
    paths = {urlsplit(u).path for u in watch.urls if u.startswith("http")}
    assert {"/", "/v1/model", "/v1/generate", "/v1/interpolate"} <= paths, paths
    watch.check()


def test_with_an_api_key_the_browser_signs_in_and_plain_requests_are_refused(browser, model_dir):
    keyed = Server(model_dir, FACEGAN_API_KEY="k")
    try:
        assert httpx.get(keyed.url + "/v1/model", timeout=10).status_code == 401
        assert httpx.get(keyed.url + "/", timeout=10).status_code == 401
        assert httpx.get(keyed.url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(keyed.url + "/v1/model", headers={"X-API-Key": "k"}, timeout=10).status_code == 200
        context, page, watch = open_studio(browser, keyed.url, http_credentials={"username": "x", "password": "k"})
        try:
            srcs = wait_for_faces(page, 36)
            assert len(set(srcs)) == 36 and face_sizes(page) == {(16, 16)}
            assert "tiny 16²" in page.inner_text("#model")
            expect(page.locator("#error")).to_be_hidden()
        finally:
            context.close()
        watch.check()
        wrong, page, _ = open_studio(browser, keyed.url, http_credentials={"username": "x", "password": "nope"})
        try:
            expect(page.locator("#faces button")).to_have_count(0)
        finally:
            wrong.close()
    finally:
        keyed.assert_stops_cleanly()

