"""`facegan report`: one self-contained HTML page whose every image is embedded and loads in a browser."""

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facegan import checkpoint, plots
from facegan.cli import app
from facegan.errors import FaceganError
from facegan.report import write_report
from facegan.train.loop import train

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class _Page(HTMLParser):
    """The section ids and <img> sources of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append(a["src"])


def _decode(src: str) -> Image.Image:
    m = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", src)
    assert m, src[:60]
    im = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    assert im.format.lower() == m.group(1)
    im.load()  # a truncated or corrupt image fails here
    return im


@pytest.fixture
def evaluated_run(tiny_cfg):
    """A trained tiny run plus what evaluation leaves: FID log lines, a best checkpoint, eval/…/ files."""
    run = train(tiny_cfg, progress=False).run
    tensors, meta = checkpoint.load(run)  # the latest checkpoint stands in for the best one
    checkpoint.save_best(run, meta["step"], tensors, {**meta, "fid": 123.4})
    with open(run / "metrics.jsonl", "a") as f:
        for step, fid in ((4, 200.0), (8, 123.4)):
            f.write(json.dumps({"step": step, "images": 16 * step, "fid": fid, "kid_mean": 0.1, "kid_std": 0.01,
                                "eval_n": 10}) + "\n")
    ev = run / "eval" / "ckpt-00000008"
    ev.mkdir(parents=True)
    (ev / "eval.json").write_text(json.dumps({"step": 8.0, "fid": 123.4, "kid_mean": 0.1, "precision": 0.5,
                                              "recall": 0.25, "mem_fraction": 0.02}))
    Image.new("RGB", (80, 40), "red").save(ev / "closest_pairs.png")
    return run


@pytest.mark.slow
def test_report_has_every_section_with_embedded_images(evaluated_run, tmp_path):
    result = CliRunner().invoke(app, ["report", str(evaluated_run), "--out", str(tmp_path / "r.html"), "--log-x"])
    assert result.exit_code == 0, (result.output, result.exception)
    text = (tmp_path / "r.html").read_text()
    page = _Page(text)
    assert page.sections == ["summary", "curves", "faces", "progress", "evaluation", "memorization", "config"]
    curves, latest, best, progress, pairs = (_decode(src) for src in page.images)
    assert curves.size == (960, 900)  # losses, D outputs, FID
    assert latest.size == best.size == (38, 38)
    # best.safetensors is the step-8 checkpoint here, so it draws the step-8 grid's faces
    assert np.abs(np.asarray(best).astype(int) - np.asarray(latest)).max() <= 1
    assert progress.format == "GIF" and progress.n_frames == 2  # the grids of steps 4 and 8
    assert pairs.size == (80, 40)
    for needle in ("FID 123.40", "mem_fraction", "2.00% of generated faces", "model.res", "periodic evaluations"):
        assert needle in text
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")  # nothing fetched, nothing run


def test_report_without_matplotlib_or_evaluations(tiny_cfg, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    run = train(tiny_cfg, progress=False).run
    page = _Page((path := write_report(run)).read_text())
    assert path == run / "report.html"
    assert page.sections == ["summary", "curves", "faces", "progress", "config"]
    assert [_decode(src).size[0] for src in page.images][:2] == [720, 38]  # the Pillow loss curve, the grid
    assert "pip install &#x27;facegan[plots]&#x27;" in path.read_text()
    with pytest.raises(FaceganError, match="not a run folder"):
        write_report(run / "samples")


def _browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


@pytest.mark.skipif(_browser() is None, reason=f"no headless browser on PATH ({', '.join(BROWSERS)})")
def test_every_report_image_loads_in_headless_chromium(evaluated_run, tmp_path):
    """The browser is the judge: it counts the images it decoded, after a deliberately broken one
    is added to prove the count can fail."""
    text = write_report(evaluated_run).read_text()
    total = len(_Page(text).images)
    probe = ('<img src="data:image/png;base64,AAAA" alt="broken on purpose">'
             "<script>window.addEventListener('load', () => { const all = [...document.images];"
             " document.title = 'images:' + all.filter(i => i.complete && i.naturalWidth > 0).length"
             " + '/' + all.length; });</script>")
    page = tmp_path / "probe.html"
    page.write_text(text.replace("</body>", probe + "</body>"))
    out = subprocess.run([_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", out.stdout)
    assert title, out.stderr[-2000:]
    assert total == 5 and title.group(1) == f"images:{total}/{total + 1}"
