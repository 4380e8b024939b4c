"""The routes of ``facegan serve``: a FastAPI app over one :class:`~facegan.serve.engine.Model`.

Every generated face goes through the micro-batcher (:mod:`facegan.serve.batcher`); a face's
latent depends only on (seed, index, ψ) (:func:`facegan.sample.truncated_latents`) and G runs
in eval mode, so a face's bytes are the same alone or inside a batch of 64, whatever else is in
flight. Encoding images runs in the thread pool, off the event loop.
"""


import asyncio
import base64
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from facegan import viz
from facegan.checks import SEED_MAX
from facegan.data.images import BadImage, decode_image
from facegan.errors import FaceganError
from facegan.sample import STRIP_MAX, face_file, strip_latents, truncated_latents, walk_latents
from facegan.serve import pages
from facegan.serve.batcher import Batcher, QueueFull
from facegan.serve.engine import Model
from facegan.serve.filters import TRIES_PER_FACE, Filters
from facegan.serve.gate import Gate
from facegan.serve.limits import MAX_JSON_BYTES, Limits
from facegan.serve.schemas import request_models
from facegan.serve.stats import Stats
from facegan.upscale import upscale_image

log = logging.getLogger("facegan.serve")

MEDIA = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg", "gif": "image/gif", "mp4": "video/mp4",
         "zip": "application/zip"}
RETRY_AFTER_S = 1
WORKER_THREADS = max(4, 2 * (os.cpu_count() or 1))  # threads for encoding and uploads
PNG_LEVEL = 1  # encoding at level 6 cost 2.3 ms per 64² face against G's ≈4 ms: the API's largest overhead
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same faces give the same zip bytes


class ErrorBody(BaseModel):
    """Every refusal and failure: one line in ``error``; for 422 the field-level list in ``detail``."""

    error: str
    detail: list[dict[str, Any]] | None = None


def create_app(model: Model, limits: Limits = Limits(), api_key: str | None = None,
               cors_origins: tuple[str, ...] = (), filters: Filters | None = None) -> FastAPI:
    """The service for ``model``; the micro-batcher starts with the app and stops with it. ``filters``
    holds the training identities for ``"filter": "private"`` (Filters.load); without, only "face" works."""
    limits.check()
    filters = filters or Filters()
    GenerateRequest, InterpolateRequest = request_models(limits)
    G = model.G
    state: dict[str, Any] = {"upscales": 0}
    upscale_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # encoding threads beyond the cores only add malloc arenas (RSS) and contention: anyio's default is 40
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        batcher = Batcher(model.render, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue, stats.batch)
        await run_in_threadpool(batcher.warm_up, G.cfg.z_dim)
        state["batcher"] = batcher
        try:
            yield
        finally:
            state["batcher"].close()
            filters.close()

    errors = {code: {"model": ErrorBody, "description": what} for code, what in (
        (401, "the API key is missing or wrong"), (413, "the body or image is over the limits"),
        (422, "the request is invalid: 'error' names the field"), (503, "the queue is full: retry after Retry-After seconds"))}
    app = FastAPI(title="facegan", version="1", docs_url=None, redoc_url=None, lifespan=lifespan, responses=errors,
                  description="Faces from a trained facegan generator. Each face is addressed by (seed, index).")
    stats = Stats({"facegan_queue_faces": ("Faces waiting for the generator.", lambda: state["batcher"].depth if "batcher" in state else 0),
                   "facegan_queue_capacity_faces": ("Faces the queue holds before 503.", lambda: limits.max_queue),
                   "facegan_upscales_in_flight": ("Upscale jobs running or waiting.", lambda: state["upscales"])})

    # -- errors: one line in "error", the field-level list in "detail" -------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": f"the body is not valid JSON ({(first.get('ctx') or {}).get('error', 'decode error')})",
                                 "detail": detail}, 422)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return JSONResponse({"error": f"{where}: {msg}", "detail": detail}, 422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"error": f"server busy: {exc}; retry in {RETRY_AFTER_S} s"}, 503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(FaceganError)
    async def _user(request: Request, exc: FaceganError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, 500)

    # -- the work -------------------------------------------------------------------------------------------
    async def render(z: torch.Tensor) -> np.ndarray:
        return await asyncio.wrap_future(state["batcher"].submit(z))

    @asynccontextmanager
    async def upscale_slot() -> AsyncIterator[None]:
        """One of max_upscales places for an upscale job, taken before its upload is read: 503 when none is free."""
        if model.upscaler is None:
            raise HTTPException(400, "this server has no upscaler (start it with --upscaler SR_RUN)")
        if state["upscales"] >= limits.max_upscales:
            raise QueueFull(f"{state['upscales']} upscale jobs are in flight (at most {limits.max_upscales})")
        state["upscales"] += 1
        try:
            yield
        finally:
            state["upscales"] -= 1

    async def enlarge(images: list[np.ndarray]) -> list[np.ndarray]:
        """Images through the upscaler, one job at a time (inside an upscale_slot)."""
        def run() -> list[np.ndarray]:
            if len(images) > 1 and len({img.shape for img in images}) == 1:  # generated faces: one batched pass
                return list(model.upscaler.upscale(np.stack(images), 16))
            return [upscale_image(model.upscaler, img) for img in images]

        async with upscale_lock:
            return await run_in_threadpool(run)

    def headers(faces: list[tuple[int, int]] | None = None, rejected: list[dict[str, Any]] | None = None) -> dict[str, str]:
        h = {"X-Facegan-Model": model.sha256, "X-Facegan-Runtime": model.runtime}
        if faces is not None:
            h["X-Facegan-Faces"] = ",".join(f"{s}:{i}" for s, i in faces)
        if rejected is not None:  # a filtered grid or zip: which faces were left out, and why
            h["X-Facegan-Rejected"] = ",".join(f"{r['seed']}:{r['index']}:{r['reason']}" for r in rejected)
        return h

    # -- routes ---------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def studio() -> HTMLResponse:
        return HTMLResponse(pages.studio())

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(pages.api_docs(app.openapi()))

    @app.get("/healthz", summary="Liveness: 200 while the generator's worker runs (no API key needed)")
    async def healthz() -> JSONResponse:
        alive = "batcher" in state and state["batcher"].alive
        return JSONResponse({"status": "ok" if alive else "down"}, 200 if alive else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format: requests, latency, batch sizes, queue")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(stats.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model", summary="The model: sha256, architecture, recipe, measured metrics, model card, limits")
    async def model_info() -> dict[str, Any]:
        return {"sha256": model.sha256, "runtime": model.runtime, "config": model.info, "metrics": model.info.get("metrics") or {},
                "card": model.card, "limits": limits.to_dict(), "upscale": model.upscaler.cfg.scale if model.upscaler else None,
                "video": viz.video_available(), "z_dim": G.cfg.z_dim, "res": G.cfg.res, "channels": G.cfg.channels}

    @app.post("/v1/generate", summary="Faces by seed, as JSON (base64 per face), one grid image, or a zip",
              responses={200: {"content": {MEDIA[k]: {} for k in ("png", "webp", "jpeg", "zip")}}})
    async def generate(req: GenerateRequest) -> Response:  # type: ignore[valid-type]
        faces = req.faces()
        rejected: list[dict[str, Any]] | None = None
        if req.filter == "none":
            z = await run_in_threadpool(_latents, faces, G.cfg.z_dim, req.truncation)
            imgs = list(await render(z))
        else:
            faces, imgs, rejected = await filtered(req, faces)
        if req.upscale:
            async with upscale_slot():
                imgs = await enlarge(imgs)
        if req.as_ == "grid":
            body = await run_in_threadpool(lambda: encode(viz.grid(np.stack(imgs)), req.format))
            return Response(body, media_type=MEDIA[req.format], headers=headers(faces, rejected))
        encoded = await run_in_threadpool(lambda: [encode(img, req.format) for img in imgs])
        if req.as_ == "zip":
            manifest = {"model": model.sha256, "truncation": req.truncation, "format": req.format,
                        "faces": [{"file": _name(s, i, req.format), "seed": s, "index": i} for s, i in faces]}
            if rejected is not None:
                manifest["filter"], manifest["rejected"] = req.filter, rejected
            body = await run_in_threadpool(_zip, [(_name(s, i, req.format), b) for (s, i), b in zip(faces, encoded)], manifest)
            return Response(body, media_type=MEDIA["zip"], headers={**headers(faces, rejected),
                                                                     "Content-Disposition": 'attachment; filename="faces.zip"'})
        h, w = imgs[0].shape[:2]
        body = {"model": model.sha256, "runtime": model.runtime, "truncation": req.truncation,
                "format": req.format, "width": w, "height": h,
                "faces": [{"seed": s, "index": i, "image": base64.b64encode(b).decode()} for (s, i), b in zip(faces, encoded)]}
        if rejected is not None:
            body["filter"], body["rejected"] = req.filter, rejected
        return JSONResponse(body, headers=headers())

    async def filtered(req: Any, asked: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[np.ndarray], list[dict[str, Any]]]:
        """The faces of a filtered request that pass, and the rejected ones with their reasons (serve/filters.py)."""
        if req.seeds is not None:
            batches = [asked]
        else:
            tries = TRIES_PER_FACE * req.n
            batches = [[(req.seed, req.start + k) for k in range(s, min(s + req.n, tries)) if req.start + k <= SEED_MAX]
                       for s in range(0, tries, req.n)]
        faces, imgs, rejected = [], [], []
        async with filters.slot():
            sieve = await run_in_threadpool(filters.sieve, req.filter)
            for batch in batches:
                if not batch or len(faces) == len(asked):
                    break
                z = await run_in_threadpool(_latents, batch, G.cfg.z_dim, req.truncation)
                out = await render(z)
                for (s, i), img, v in zip(batch, out, await filters.sift(sieve, out, len(asked) - len(faces))):
                    if v.reason is not None:
                        rejected.append({"seed": s, "index": i, "reason": v.reason})
                    else:
                        faces.append((s, i))
                        imgs.append(img)
        if not faces:
            reasons = ", ".join(sorted({r["reason"].replace("_", " ") for r in rejected}))
            raise HTTPException(422, f"none of the {len(rejected)} faces tried passed the {req.filter!r} filter ({reasons})")
        return faces, imgs, rejected

    @app.post("/v1/interpolate", summary="A walk between faces: GIF, MP4, PNG strip, or JSON frames",
              responses={200: {"content": {MEDIA[k]: {} for k in ("gif", "mp4", "png")}}})
    async def interpolate(req: InterpolateRequest) -> Response:  # type: ignore[valid-type]
        if req.format == "mp4" and not viz.video_available():
            raise HTTPException(400, "mp4 needs the video extra on the server (pip install 'facegan[video]'); ask for gif")
        ends = req.waypoints()
        linear = req.mode == "linear"
        if req.format == "png":
            per_row = min(req.frames, STRIP_MAX)
            z = strip_latents(G.cfg.z_dim, ends, per_row, linear, req.loop, req.truncation)
        else:
            z = walk_latents(G.cfg.z_dim, ends, req.frames, linear, req.loop, req.truncation)
        if len(z) > limits.max_frames:
            raise HTTPException(422, f"that strip has {len(z)} faces, over the {limits.max_frames} frames allowed; fewer seeds or frames")
        frames = await render(z)
        if req.format == "png":
            body = await run_in_threadpool(lambda: encode(viz.grid(frames, nrow=per_row), "png"))
        elif req.format == "json":
            encoded = await run_in_threadpool(lambda: [encode(f, "png") for f in frames])
            return JSONResponse({"model": model.sha256, "frames": [base64.b64encode(b).decode() for b in encoded]}, headers=headers())
        elif req.format == "gif":
            body = await run_in_threadpool(lambda: viz.encode_gif([viz.to_pil(f) for f in frames], req.fps))
        else:
            body = await run_in_threadpool(_mp4, frames, req.fps)
        return Response(body, media_type=MEDIA[req.format], headers=headers())

    @app.post("/v1/upscale", summary="Upscale an uploaded image (the body, or a multipart field 'image') to PNG",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                                     "properties": {"image": {"type": "string", "format": "binary"}}}}}}},
              responses={200: {"content": {"image/png": {}}}})
    async def upscale(request: Request) -> Response:
        async with upscale_slot():
            data = await _upload(request)
            img = await run_in_threadpool(_decode_upload, data, model.upscaler.cfg.channels, model.upscaler.cfg.scale, limits)
            (up,) = await enlarge([img])
        return Response(await run_in_threadpool(encode, up, "png"), media_type="image/png", headers=headers())

    known = frozenset(r.path for r in app.routes)

    def body_cap(path: str) -> int:
        return limits.max_upload_bytes if path == "/v1/upscale" else MAX_JSON_BYTES

    app.add_middleware(Gate, stats=stats, api_key=api_key, body_cap=body_cap, known=known)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    return app


def encode(img: np.ndarray, fmt: str) -> bytes:
    """An image as the service sends it: PNG at zlib level 1 (a quarter of level 6's time, 20 % larger)."""
    return viz.encode_image(img, fmt, png_level=PNG_LEVEL)


def _latents(faces: list[tuple[int, int]], z_dim: int, truncation: float | None) -> torch.Tensor:
    """Each face's latent from its (seed, index) alone; runs of one seed are made in one call."""
    out, k = [], 0
    while k < len(faces):
        s, i = faces[k]
        run = 1
        while k + run < len(faces) and faces[k + run] == (s, i + run):
            run += 1
        out.append(truncated_latents(run, z_dim, s, i, truncation))
        k += run
    return torch.cat(out)


def _name(seed: int, index: int, fmt: str) -> str:
    return face_file(seed, index, "jpg" if fmt == "jpeg" else fmt)


def _zip(files: list[tuple[str, bytes]], manifest: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # the images are compressed already
        for name, data in [*files, ("manifest.json", json.dumps(manifest, indent=1).encode())]:
            zf.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)
    return buf.getvalue()


def _mp4(frames: np.ndarray, fps: float) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="facegan-mp4-") as tmp:
        path = viz.save_animation([viz.to_pil(f) for f in frames], Path(tmp) / "walk.mp4", fps)
        return path.read_bytes()


async def _upload(request: Request) -> bytes:
    """The uploaded image's bytes: the body itself, or the multipart field "image" (the Gate caps the size)."""
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return body
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=8).parse()
    except MultiPartException as e:
        raise HTTPException(422, f"not a readable multipart upload: {e.message}") from None
    part = form.get("image")
    if part is None or isinstance(part, str):
        raise HTTPException(422, "the multipart upload needs a file field named 'image'")
    try:
        return await part.read()
    finally:
        await form.close()


def _decode_upload(data: bytes, channels: int, scale: int, limits: Limits) -> np.ndarray:
    """The uploaded bytes as a uint8 image, refusing (before decoding) more pixels than the limits allow."""
    from PIL import Image

    if not data:
        raise HTTPException(422, "the upload is empty: send the image as the body or as multipart field 'image'")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
    except Image.DecompressionBombError as e:  # Pillow's own refusal, far beyond our limit
        raise HTTPException(413, f"image refused as a decompression bomb ({e})") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types on bad bytes; decode_image below names the problem
        w = h = 0
    if w * h > limits.max_upload_pixels:
        raise HTTPException(413, f"image of {w}×{h} pixels is over the {limits.max_upload_pixels:,} allowed")
    if w * h * scale * scale > limits.max_upscaled_pixels:
        side = math.isqrt(limits.max_upscaled_pixels // (scale * scale))
        raise HTTPException(413, f"{w}×{h} upscaled ×{scale} would be over {limits.max_upscaled_pixels:,} pixels; "
                                 f"send at most about {side}×{side}")
    try:
        return decode_image(data, channels)
    except BadImage as e:
        raise HTTPException(422, f"not a usable image: {e}") from None
