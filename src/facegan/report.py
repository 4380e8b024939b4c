"""One self-contained HTML page of a run: curves, faces, progress, evaluations, config.

Every image is embedded as a base64 data URI, so the single file can be mailed, attached to an
issue or opened years later without the run folder. A section appears only when the run has
what it shows (evaluations, a best checkpoint, ...); without matplotlib the curves are the
Pillow loss curve and the page says how to get the rest.
"""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape
from pathlib import Path

from PIL import Image

from facegan import checkpoint, plots, sample, saved, viz
from facegan.errors import FaceganError
from facegan.fileio import read_json, write_text_atomic

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5em 1.5em .5em 0; vertical-align: top; }
figcaption { color: #555; font-size: .9em; } img { max-width: 100%; }
img.pixel { image-rendering: pixelated; } .note { background: #fff8e1; padding: .5em .8em; }
"""
MIN_FACE_WIDTH = 256  # small grids (16² or 32² faces) are shown scaled up, pixel-sharp


def write_report(run: str | Path, out: str | Path | None = None, log_x: bool = False) -> Path:
    """Write the report of ``run`` to ``out`` (default ``RUN/report.html``); returns its path."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise FaceganError(f"{run} is not a run folder (it has no config.json); give the folder `facegan train --out` wrote")
    return write_text_atomic(Path(out) if out else run / "report.html", render(run, log_x))


def render(run: Path, log_x: bool = False) -> str:
    """The report's HTML text."""
    cfg = run_config(run)
    records = viz.read_metrics(run / "metrics.jsonl")
    sections = [_summary(run, cfg, records), _curves(records, log_x), _faces(run, cfg), _progress(run),
                _evaluations(run, records), _memorization(run), _config(cfg)]
    body = "\n".join(s for s in sections if s)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>facegan report: {escape(run.name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>facegan run <code>{escape(run.name)}</code></h1>\n{body}\n</body>\n</html>\n")


def run_config(run: Path) -> dict:
    """The run's config.json, checked like a checkpoint's config (types, architecture), or one line.

    The result holds every config field (defaults where the file lacks one) plus the file's
    scalar extras (dataset, device, kind, world_size), so the report never meets a missing key.
    """
    try:
        cfg = read_json(run / "config.json")
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise FaceganError(f"{run / 'config.json'} is not a readable run config ({e})") from None
    try:
        parsed = checkpoint.saved_config(cfg.get("kind"), cfg)
    except FaceganError as e:
        raise FaceganError(f"{run / 'config.json'} is not a facegan run config: {e}") from None
    return {**{k: v for k, v in cfg.items() if isinstance(v, (str, int, float, type(None)))}, **parsed.to_dict()}


def _summary(run: Path, cfg: dict, records: list[dict]) -> str:
    train = [r for r in records if "loss_G" in r]
    evals = [r for r in records if "fid" in r]
    vals = [r for r in records if "psnr_val" in r]
    m = cfg.get("model", {})
    if cfg.get("kind") == checkpoint.UPSCALER:
        side = cfg["hr_res"] // m["scale"]
        what = {"upscaler": f"×{m['scale']}: {side}² → {cfg['hr_res']}², width {m['width']}, {m['blocks']} residual blocks"}
    else:
        what = {"preset": cfg.get("preset"), "resolution": f"{m.get('res')}² × {m.get('channels')} channels"}
    rows = {**what, "dataset": cfg.get("dataset", cfg.get("data")), "device": cfg.get("device")}
    if train:
        last = train[-1]
        rows.update({"steps": f"{last['step']:,}", "images seen": f"{last['images']:,}",
                     "training time": f"{last.get('time', math.nan):,.0f} s (last invocation)"})
    if evals:
        best = min(evals, key=lambda r: r["fid"])
        rows["best FID"] = f"{best['fid']:.2f} at step {best['step']:,}"
    if vals:
        rows["held-out PSNR"] = (f"{vals[-1]['psnr_val']:.2f} dB vs bicubic {vals[-1]['psnr_val_bicubic']:.2f} dB "
                                 f"({vals[-1]['val_n']} faces, step {vals[-1]['step']:,})")
    return _section("summary", "Summary", _table(rows))


def _curves(records: list[dict], log_x: bool) -> str:
    if not records:
        return ""
    if plots.available():
        return _section("curves", "Curves", _img(plots.curves_png(records, log_x), "training curves"))
    png = _png(viz.loss_curve_image(records))
    return _section("curves", "Curves", _img(png, "loss curve") +
                    f'<p class="note">{escape(viz.PLOTS_NOTE.removeprefix("note: "))}</p>')


def _faces(run: Path, cfg: dict) -> str:
    """The latest fixed-noise grid beside the same faces from the best-FID checkpoint."""
    figures = []
    grids = viz.step_grids(run)
    if grids:
        step, path = grids[-1]
        what = "rows: input, bicubic, ours, truth" if cfg.get("kind") == checkpoint.UPSCALER else "grid"
        figures.append(_figure(path.read_bytes(), f"latest {what}: step {step:,}", pixel=True))
    best = run / "checkpoints" / checkpoint.BEST
    if best.is_file():
        meta = checkpoint.read_meta(best)
        figures.append(_figure(_best_grid(best, cfg), f"best checkpoint: step {meta['step']:,}, "
                                                      f"FID {meta.get('fid', math.nan):.2f}", pixel=True))
    return _section("faces", "Faces", "".join(figures)) if figures else ""


def _best_grid(best: Path, cfg: dict) -> bytes:
    """PNG bytes of the run's fixed-noise faces drawn by the best checkpoint's generator."""
    rows = math.ceil(math.sqrt(cfg.get("grid", 36)))
    faces = sample.faces(saved.load_generator(best), rows * rows, seed=cfg.get("seed", 0))
    return _png(viz.to_pil(viz.grid(faces, nrow=rows)))


def _progress(run: Path) -> str:
    frames = viz.progress_frames(run)
    if not frames:
        return ""
    gif = viz.encode_gif(frames, fps=4, hold_last_s=2.0)
    return _section("progress", "Progress", _figure(gif, f"{len(frames)} fixed-noise grids, oldest first", "image/gif"))


def _evaluations(run: Path, records: list[dict]) -> str:
    """Tables of `facegan evaluate` results (eval/*/eval.json) and of the periodic evaluations."""
    parts = []
    results = {p.parent.name: r for p in sorted(run.glob("eval/*/eval.json")) if (r := _eval_result(p))}
    if results:
        keys = list(dict.fromkeys(k for r in results.values() for k in r))
        head = "<tr><th>metric</th>" + "".join(f"<th>{escape(n)}</th>" for n in results) + "</tr>"
        body = "".join(f"<tr><th>{escape(k)}</th>" + "".join(_cell(r.get(k, "")) for r in results.values()) + "</tr>"
                       for k in keys)
        parts.append(f"<h3>facegan evaluate</h3>\n<table>{head}{body}</table>")
    periodic = [r for r in records if "fid" in r]
    if periodic:
        cols = list(dict.fromkeys(k for r in periodic for k in r))  # whatever --eval-metrics measured
        head = "<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
        body = "".join("<tr>" + "".join(_cell(r.get(c, "")) for c in cols) + "</tr>" for r in periodic)
        parts.append(f"<h3>periodic evaluations during training</h3>\n<table>{head}{body}</table>")
    return _section("evaluation", "Evaluation", "\n".join(parts)) if parts else ""


def _memorization(run: Path) -> str:
    """Each evaluation's closest generated/training pairs: copies of training faces show here."""
    figures = []
    for path in sorted(run.glob("eval/*/closest_pairs.png")):
        result_path = path.with_name("eval.json")
        mem = _eval_result(result_path).get("mem_fraction")
        mem = mem if isinstance(mem, (int, float)) and not isinstance(mem, bool) else None
        caption = path.parent.name + (f": {mem:.2%} of generated faces flagged as copies" if mem is not None else "")
        figures.append(_figure(path.read_bytes(), caption, pixel=True))
    if not figures:
        return ""
    intro = "<p>The 8 generated faces closest to a training face (Inception features), each beside that face.</p>"
    return _section("memorization", "Memorization", intro + "".join(figures))


def _eval_result(path: Path) -> dict:
    """An eval.json as a dict of its scalar entries; {} for a missing or damaged one (the report goes on)."""
    try:
        result = read_json(path)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str))} if isinstance(result, dict) else {}


def _config(cfg: dict) -> str:
    return _section("config", "Config", _table(_flatten(cfg)))


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level with dotted keys (``model.res``), for a two-column table."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _section(ident: str, title: str, html: str) -> str:
    return f'<section id="{ident}">\n<h2>{title}</h2>\n{html}\n</section>'


def _table(rows: dict) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(str(k))}</th>{_cell(v)}</tr>" for k, v in rows.items()) + "</table>"


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v:,}</td>'
    return f"<td>{escape(json.dumps(v) if isinstance(v, list) else str(v))}</td>"


def _figure(data: bytes, caption: str, mime: str = "image/png", pixel: bool = False) -> str:
    return f"<figure>{_img(data, caption, mime, pixel)}<figcaption>{escape(caption)}</figcaption></figure>"


def _img(data: bytes, alt: str, mime: str = "image/png", pixel: bool = False) -> str:
    """An <img> holding ``data`` itself; ``pixel`` images narrower than MIN_FACE_WIDTH are shown
    scaled up by a whole factor, without blurring."""
    width = ""
    if pixel:
        with Image.open(io.BytesIO(data)) as im:
            w = im.width
        if w < MIN_FACE_WIDTH:
            width = f' width="{w * math.ceil(MIN_FACE_WIDTH / w)}" class="pixel"'
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<img src="{uri}" alt="{escape(alt)}"{width}>'


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
