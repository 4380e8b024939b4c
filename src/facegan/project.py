"""GAN inversion (``facegan project``): the latent whose face best matches a photo's face.

After stylegan2-ada's projector, adapted to a DCGAN, which has no mapping network: the search
runs in z itself, from ``starts`` random latents at once (one batch), and keeps the best.

1. the target is the photo framed as the training data was (``crop``, then resized to G's size);
2. each step renders every start's face and scores it against the target with
   - pixel: mean squared difference in [−1, 1],
   - low resolution: the same at 1/4 size (the overall shape, colour and lighting), and
   - features: the mean squared difference of the frozen FID Inception stem's maps (edges and
     texture; the same network the metrics and the upscaler's loss use, so nothing is downloaded),
   plus a prior that keeps ‖z‖²/z_dim near 1, where G saw its training latents;
3. Adam moves the latents, with the learning rate ramped up over the first 5 % of steps and
   down (cosine) over the last 25 %, and noise added to z that fades out by 75 % of the steps
   (the projector's way to leave poor basins early);
4. the start with the lowest loss at the end wins.

"How close can this model get to this person?" is answered beside a scale: the distance from
the fitted face to the target, in the 32² pixel space of the memorization metric, next to the
median distance from a training face to its nearest other training face in the same space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegan import checks, viz
from facegan.data.images import load_image
from facegan.data.sources import read_photo
from facegan.errors import FaceganError
from facegan.models.dcgan import Generator, latents, to_uint8

WEIGHTS = {"pixel": 1.0, "lowres": 1.0, "feature": 0.5, "prior": 0.01}  # the terms' weights (all losses are MSEs)
FRAMES = 60  # snapshots for the optimisation video


@dataclass
class Projection:
    """What :func:`project` found: the best latent, its face, and how the search went."""

    z: torch.Tensor  # (z_dim,)
    face: np.ndarray  # uint8 (res, res, C)
    target: np.ndarray  # uint8 (res, res, C)
    start: int  # which of the random starts won
    losses: list[dict[str, float]] = field(default_factory=list)  # per step, of the start that won
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 (res, 2·res, C): target | fit, over the steps


def target_from_photo(photo: str | Path, res: int, channels: int = 3, crop: str = "center") -> np.ndarray:
    """The photo as G sees faces: cropped the way ``prepare`` crops training data, resized to res²."""
    return read_photo(photo, lambda data: load_image(data, res, channels, crop=crop, min_size=1))


def project(G: Generator, target: np.ndarray, steps: int = 300, starts: int = 8, seed: int = 0, lr: float = 0.05,
            features: torch.nn.Module | None = None, weights: dict[str, float] | None = None,
            progress: bool = True, init: torch.Tensor | None = None, frames: bool = True) -> Projection:
    """Find the latent whose face best matches ``target`` (uint8 (res, res, C) at G's size).

    ``features`` is the frozen network of the feature term (default: the FID Inception stem);
    ``weights={"feature": 0}`` runs without it. ``init`` (k, z_dim) starts the search from those
    latents instead of ``starts`` random ones (a video's face, warm-started from the last frame's
    fit); ``frames=False`` skips the video snapshots. Deterministic for a seed on one machine.
    """
    from tqdm import tqdm

    checks.integer("--steps", steps, 1, 100_000)
    checks.integer("--starts", starts, 1, 1024)
    w = {**WEIGHTS, **(weights or {})}
    res, c = G.cfg.res, G.cfg.channels
    if target.shape != (res, res, c):
        raise FaceganError(f"the target is {target.shape}, this generator makes {(res, res, c)} faces")
    device = next(G.parameters()).device
    G = G.eval().requires_grad_(False)
    if w["feature"] > 0 and features is None:
        from facegan.metrics.inception import InceptionFeatures

        features = InceptionFeatures(device=device).stem()  # needs the FID weights of the metrics extra
    t = torch.from_numpy(np.array(target)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    t_low = F.adaptive_avg_pool2d(t, max(1, res // 4))
    t_feat = features(_rgb(t)) if w["feature"] > 0 else None

    z0 = latents(starts, G.cfg.z_dim, seed) if init is None else init.detach().reshape(-1, G.cfg.z_dim).cpu()
    starts = len(z0)
    z = z0.to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    every = max(1, steps // FRAMES)
    history: list[list[dict[str, float]]] = [[] for _ in range(starts)]
    snapshots: list[torch.Tensor] = []  # every start's latent as the video saw it; the winner's frames are drawn at the end

    def terms_of(x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each start's distance terms to the target (the loss without the prior)."""
        out = {"pixel": (x - t).pow(2).mean((1, 2, 3)),
               "lowres": (F.adaptive_avg_pool2d(x, t_low.shape[-1]) - t_low).pow(2).mean((1, 2, 3))}
        if t_feat is not None:
            out["feature"] = (features(_rgb(x)) - t_feat).pow(2).mean((1, 2, 3))
        return out

    for step in tqdm(range(steps), unit="step", disable=not progress, dynamic_ncols=True):
        # learning rate: ramp up over 5 %, cosine down over the last 25 %; latent noise fading out by 75 %
        u = step / steps
        rate = lr * min(1.0, u / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - u) / 0.25)))
        for group in opt.param_groups:
            group["lr"] = max(rate, lr * 1e-3)
        noise = 0.05 * max(0.0, 1 - u / 0.75) ** 2
        zn = z + noise * torch.randn(z.shape, generator=gen).to(device)
        terms = {**terms_of(G(zn)), "prior": (z.pow(2).mean(1) - 1).pow(2)}
        loss = sum(w[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        values = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        for i in range(starts):
            history[i].append({"step": step, **{k: float(v[i]) for k, v in values.items()}})
        if frames and (step % every == 0 or step == steps - 1):
            snapshots.append(zn.detach().clone())
    with torch.no_grad():  # the winner by the distance terms, without the search noise
        x = G(z)
        best = int(sum(w[k] * v for k, v in terms_of(x).items()).argmin())
        face = to_uint8(x[best:best + 1])[0]
        fits = to_uint8(G(torch.stack([zs[best] for zs in snapshots]))) if snapshots else []
    video = [np.concatenate([target, f], axis=1) for f in (*fits, face)]
    return Projection(z=z[best].detach().cpu(), face=face, target=np.array(target), start=best, losses=history[best],
                      frames=video)


FEATURE_MIN_RES = 64  # the Inception stem's strided convolutions and pooling need this much input


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """Faces as the feature net takes them: 3 channels, enlarged (bilinear) to at least FEATURE_MIN_RES²."""
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if x.shape[-1] < FEATURE_MIN_RES:
        x = F.interpolate(x, size=(FEATURE_MIN_RES, FEATURE_MIN_RES), mode="bilinear", align_corners=False)
    return x


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two faces in the memorization metric's pixel space (≤ 32², 0…255 values)."""
    from facegan.metrics.memorization import pixels

    pa, pb = pixels(a[None]), pixels(b[None])
    return float(np.linalg.norm(pa - pb))


def nn_scale(images: np.ndarray, n: int = 1000, seed: int = 0) -> float:
    """Median distance from a training face to its nearest other training face (same space as :func:`distance`)."""
    from facegan.metrics.memorization import pixels
    from facegan.metrics.prdc import kth_neighbour_distances

    idx = np.sort(np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False))
    return float(np.median(kth_neighbour_distances(pixels(np.asarray(images[idx])), 1)))


def write(p: Projection, out: str | Path, meta: dict[str, object], fps: float = 20.0) -> list[Path]:
    """fitted.png, target.png, latent.safetensors (z and how it was found), loss.json, loss.png and
    progress.gif (+ progress.mp4 with the video extra) into ``out``; returns the files."""
    import json

    from facegan.checkpoint import write_atomic
    from facegan.fileio import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [viz.save_image(p.face, out / "fitted.png"), viz.save_image(p.target, out / "target.png")]
    write_atomic(out / "latent.safetensors", {"z": p.z[None]}, meta)  # streamed, fsynced, renamed; meta under "facegan"
    files.append(out / "latent.safetensors")
    files.append(write_text_atomic(out / "loss.json", json.dumps(p.losses)))
    series = {"loss": (31, 119, 180), "pixel": (214, 39, 40), "lowres": (44, 160, 44), "feature": (148, 103, 189)}
    files.append(viz.loss_curve(p.losses, out / "loss.png", series={k: v for k, v in series.items() if k in p.losses[0]},
                                x_key="step"))
    frames = [viz.to_pil(f) for f in p.frames]
    files.append(viz.save_animation(frames, out / "progress.gif", fps, hold_last_s=1.0))
    if viz.video_available():
        files.append(viz.save_animation(frames, out / "progress.mp4", fps, hold_last_s=1.0))
    return files


def load_latent(path: str | Path) -> torch.Tensor:
    """The latent (1, z_dim) of a latent.safetensors that ``facegan project`` wrote."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        z = load_file(str(path))["z"]
    except (SafetensorError, OSError, KeyError) as e:
        raise FaceganError(f"{path} is not a facegan latent file ({type(e).__name__}: {e})") from None
    if z.ndim != 2 or z.shape[0] != 1 or not torch.isfinite(z).all():
        raise FaceganError(f"{path}: expected one finite latent (1, z_dim), got {tuple(z.shape)}")
    return z


def training_scale(source: str | Path, res: int, channels: int, n: int = 1000) -> tuple[float | None, str]:
    """(median real-to-real nearest-neighbour distance of the model's training faces, their source),
    or (None, why not) when the data the model names cannot be found here."""
    from facegan import saved
    from facegan.data.prepare import open_prepared, resolve_dataset

    data = saved.open(source).data
    if not data:
        return None, "the model does not name its training data"
    try:
        return nn_scale(open_prepared(resolve_dataset(data, res, channels, progress=False)).images, n), str(data)
    except FaceganError as e:
        return None, f"its training data {data} is not available here ({e})"


@dataclass
class Fit:
    """What :func:`fit_photo` found and wrote: the projection, its folder, how close it got
    (``distance`` in 32² pixel space) against the model's own nearest-neighbour ``scale`` of
    training faces (None, with ``about`` saying why, where the training data is not here), and,
    with ``crop="align"``, the face it aligned (``found``)."""

    result: Projection
    folder: Path
    distance: float
    scale: float | None
    about: str
    found: str | None = None


def fit_photo(photo: str | Path, model: str | Path, steps: int = 300, starts: int = 8, seed: int = 0,
              out: str | Path | None = None, crop: str = "center", features: bool = True, device: str = "auto",
              ema: bool = True) -> Fit:
    """`facegan project`: the options checked, the photo framed (``crop``: a crop of
    facegan.data.images, or "align": found and aligned by its landmarks to the model's framing),
    the latent searched, and everything written to ``out`` (default MODEL/projections/PHOTO_NAME)."""
    from facegan import saved
    from facegan.data.images import CROPS
    from facegan.device import pick_device

    photo = Path(photo)
    checks.integer("--steps", steps, 1, 100_000)
    checks.integer("--starts", starts, 1, 1024)
    checks.seed("--seed", seed)
    if crop not in (*CROPS, "align"):
        raise FaceganError(f"--crop must be one of {', '.join(CROPS)}, align, not {crop!r}")
    model_ = saved.open(model)
    folder = checks.output_dir("--out", out or model_.home / "projections" / photo.stem)
    G = model_.generator(pick_device(device), ema)
    found = None
    if crop == "align":
        from facegan.anonymize.align import face_target
        from facegan.data.images import decode_image

        target, found = face_target(read_photo(photo, decode_image), G)
    else:
        target = target_from_photo(photo, G.cfg.res, G.cfg.channels, crop)
    result = project(G, target, steps=steps, starts=starts, seed=seed, weights=None if features else {"feature": 0.0})
    d = distance(result.face, result.target)
    scale, about = training_scale(model, G.cfg.res, G.cfg.channels)
    meta = {"photo": str(photo), "model": str(model), "steps": steps, "starts": starts, "seed": seed, "start": result.start,
            "crop": crop, "loss": result.losses[-1]["loss"], "distance": d, "nn_scale": scale}
    write(result, folder, meta)
    return Fit(result, folder, d, scale, about, found)
