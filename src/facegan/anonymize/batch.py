"""``facegan anonymize INPUT --out DIR``: a photo, a folder of photos or a video in, the anonymized
copies and one ``audit.json`` out.

Outputs keep the input's names (a folder's structure too) and formats (JPEG at quality 95;
a video becomes H.264 ``.mp4``). A file that cannot be read is skipped and named, in the audit
and on stderr; a photo with no face is copied as it is and listed with ``faces: []``. Nothing
is written for an input whose anonymization failed: each output is renamed into place only
once complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan import checks
from facegan.anonymize import align, detect, video
from facegan.anonymize.pipeline import MODES, Anonymizer, Record
from facegan.anonymize.replace import BLENDS, STARTS, STEPS, Replacer
from facegan.data.images import decode_image
from facegan.data.sources import IMAGE_EXTENSIONS, read_photo
from facegan.errors import FaceganError
from facegan.fileio import atomic_path, write_text_atomic

AUDIT = "audit.json"


def build(model: str | Path | None, upscaler: str | Path | None = None, detector: str = detect.DEFAULT_DETECTOR,
          mode: str = MODES[0], seed: int = 0, steps: int = STEPS, starts: int = STARTS, blend: str = BLENDS[0],
          device: str = "cpu", upsample: int = 1, ema: bool = True,
          template: np.ndarray | None = None) -> tuple[Anonymizer, dict]:
    """The anonymizer for these options, and what the audit says about its set-up.
    ``model`` may be None only for ``--mode blur|pixelate``. ``template`` (3, 2) skips measuring
    the model's framing (:func:`align.measure_template`, a second or two) when it is known."""
    from facegan import saved

    find = detect.detector(detector, upsample)  # fails here, before any model loads, when the extra is missing
    setup: dict = {"detector": detector, "mode": mode, "seed": seed, "model": None if model is None else str(model)}
    replacer = None
    if mode in ("auto", "replace"):
        if model is None:
            raise FaceganError(f"--mode {mode} paints generated faces: give the generator with --model RUN")
        G = saved.load_generator(model, device=device, ema=ema)
        sr = None
        if upscaler is not None:
            sr = saved.load_upscaler(upscaler, device=device)
        template, source = align.measure_template(G) if template is None else (np.asarray(template), "given")
        replacer = Replacer(G, template, upscaler=sr, steps=steps, starts=starts, blend=blend)
        setup.update(upscaler=None if upscaler is None else str(upscaler), steps=steps, starts=starts, blend=blend, mixes=list(replacer.mixes),
                     template=np.round(template, 4).tolist(), template_source=source)
    return Anonymizer(find, replacer, mode=mode, seed=seed), setup


def run(src: str | Path, out: str | Path, model: str | Path | None, upscaler: str | Path | None = None,
        detector: str = detect.DEFAULT_DETECTOR, mode: str = MODES[0], seed: int = 0, steps: int = STEPS,
        starts: int = STARTS, blend: str = BLENDS[0], device: str = "auto", upsample: int = 1) -> tuple[dict, Path]:
    """`facegan anonymize`: the options and paths checked before any model loads (an output inside
    the input would overwrite or re-read the originals), then every input anonymized into ``out``;
    (the audit, the output folder)."""
    from facegan.device import pick_device

    src = Path(src)
    checks.seed("--seed", seed)
    checks.integer("--steps", steps, 1, 10_000)
    checks.integer("--starts", starts, 1, 64)
    checks.integer("--upsample", upsample, 0, 3)
    if not src.exists():
        raise FaceganError(f"input not found: {src}")
    folder = checks.output_dir("--out", out)
    if folder.resolve() == src.resolve() or (src.is_dir() and src.resolve() in folder.resolve().parents):
        raise FaceganError("--out must not be the input folder or inside it (the originals would be overwritten or re-read)")
    anon, setup = build(model, upscaler, detector=detector, mode=mode, seed=seed, steps=steps, starts=starts, blend=blend,
                        device=str(pick_device(device)), upsample=upsample)
    return anonymize_path(anon, src, folder, setup), folder


def inputs(src: Path) -> list[Path]:
    """The photo or video ``src``, or every photo and video under the folder ``src`` (recursively, sorted)."""
    exts = IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if p.suffix.lower() in exts and not p.is_dir())
    if src.exists():
        return [src]
    raise FaceganError(f"input not found: {src}")


def anonymize_path(anon: Anonymizer, src: str | Path, out_dir: str | Path, setup: dict | None = None,
                   progress: bool = True) -> dict:
    """Anonymize a photo, a folder or a video into ``out_dir``; returns the audit (also written to
    ``out_dir/audit.json``). A single input that cannot be read is an error; in a folder it is skipped."""
    src, out_dir = Path(src), Path(out_dir)
    files = inputs(src)
    if not files:
        raise FaceganError(f"no photos or videos in {src}")
    audit: dict = {**(setup or {}), "input": str(src), "files": [], "skipped": []}
    t0 = time.perf_counter()
    for k, f in enumerate(tqdm(files, unit="file", disable=not progress or len(files) == 1, dynamic_ncols=True)):
        rel = f.relative_to(src) if src.is_dir() else Path(f.name)
        try:
            entry = _one(anon, f, out_dir / rel, k, progress)
        except FaceganError as e:
            if not src.is_dir():
                raise
            audit["skipped"].append({"file": str(rel), "why": str(e)})
            continue
        audit["files"].append({"file": str(rel), **entry})
    audit["seconds"] = round(time.perf_counter() - t0, 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / AUDIT, json.dumps(audit, indent=1))
    return audit


def _one(anon: Anonymizer, f: Path, dst: Path, k: int, progress: bool) -> dict:
    """Anonymize one file into ``dst``; its audit entry."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if video.is_video(f):
        dst = dst.with_suffix(".mp4")
        records, frames = video.anonymize_video(anon, f, dst, progress)
        return {"output": dst.name, "frames": frames, "faces": [r.audit() for r in records], **_counts(records)}
    img = read_photo(f, decode_image)
    out, records = anon.image(img, keys=(k,))
    _save(out, dst)
    return {"output": dst.name, "size": [img.shape[1], img.shape[0]], "faces": [r.audit() for r in records], **_counts(records)}


def _counts(records: list[Record]) -> dict:
    methods = [r.method for r in records]
    return {m: methods.count(m) for m in ("replace", "pixelate", "blur") if m in methods}


def _save(img: np.ndarray, dst: Path) -> None:
    """Write in the destination's own format (JPEG quality 95, WebP quality 95, else lossless), atomically."""
    from PIL import Image

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF"}.get(dst.suffix.lower(), "PNG")
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(dst) as tmp:
        Image.fromarray(img).save(tmp, format=fmt, **extra)
