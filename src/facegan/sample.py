"""Faces from a trained generator: PNG files with a manifest, grids, latent walks, and the Python API.

Every face is addressed by (seed, index): its latent depends on nothing else (see
:func:`facegan.models.dcgan.latents`), and G runs in eval mode, so any face in a manifest can
be regenerated alone, years later, with ``facegan generate RUN --seed S --start I -n 1``. The
truncation trick keeps that: a truncated latent depends only on (seed, index, ψ).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegan import checks, viz
from facegan.device import autocast
from facegan.dist import Dist
from facegan.errors import FaceganError
from facegan.fileio import sweep_stale, write_text_atomic
from facegan.models.dcgan import Generator, latents, to_uint8
from facegan.models.srresnet import SRGenerator

STRIP_MAX = 10  # frames per row of a walk's .png strip

Waypoint = int | tuple[int, int]
"""A face a walk passes through: a seed (its face 0) or a (seed, index) pair."""


def face_file(seed: int, index: int, ext: str = "png") -> str:
    """The file name of face (seed, index) wherever faces are written one per file (folders, zips)."""
    return f"seed{seed}-{index:06d}.{ext}"


@dataclass
class Written:
    """What :func:`generate_from` wrote: the grid file, or the folder of faces with its manifest."""

    path: Path
    size: int  # the side of each face, after upscaling
    manifest: Path | None = None


def check_options(seed: int, start: int = 0, rows: int = 6, truncation: float | None = None, grid: str | Path | None = None,
                  out: str | Path | None = None) -> None:
    """`facegan generate`'s options, checked before any slow work (and before ``--nproc`` starts ranks)."""
    checks.seed("--seed", seed)
    checks.integer("--start", start, 0, checks.SEED_MAX)
    checks.integer("--rows", rows, 1, 64)
    checks.truncation("--truncation", truncation)
    if grid is not None:
        checks.output_file("--grid", grid, "grid.png")
    if out is not None:
        checks.output_dir("--out", out)


def generate_from(source: str | Path, n: int = 64, seed: int = 0, start: int = 0, out: str | Path | None = None,
                  grid: str | Path | None = None, rows: int = 6, batch: int = 256, device: str = "auto", ema: bool = True,
                  truncation: float | None = None, upscale: str | Path | None = None, precision: str = "fp32",
                  workers: int | None = None) -> Written | None:
    """`facegan generate`: ``n`` faces of the saved model ``source`` (optionally through the upscaler
    ``upscale``) as PNG files with a manifest in ``out`` (default MODEL_HOME/generated/seedS), or a
    rows×rows ``grid``. With several ranks the files are shared out; None on ranks other than 0."""
    from facegan import saved
    from facegan.device import sampling_precision
    from facegan.dist import session

    check_options(seed, start, rows, truncation, grid, out)
    with session(device) as d:
        precision = sampling_precision(precision, d.device)
        model = saved.open(source)
        G = model.generator(d.device, ema)
        sr = saved.load_upscaler(upscale, device=d.device) if upscale is not None else None
        size = G.cfg.res * (sr.cfg.scale if sr is not None else 1)
        if grid is not None:
            path = write_grid(G, grid, rows=rows, seed=seed, truncation=truncation, upscaler=sr, precision=precision) \
                if d.is_main else None
            return Written(path, size) if d.is_main else None
        folder = Path(out) if out is not None else \
            model.home / "generated" / (f"seed{seed}" + (f"-x{sr.cfg.scale}" if sr is not None else ""))
        manifest = generate(G, folder, n, seed=seed, start=start, batch_size=batch, truncation=truncation, upscaler=sr,
                            precision=precision, workers=workers, dist=d)
    return Written(folder, size, manifest) if d.is_main else None


def generate(G: Generator, out_dir: str | Path, n: int, seed: int = 0, start: int = 0,
             batch_size: int = 256, progress: bool = True, truncation: float | None = None,
             upscaler: SRGenerator | None = None, precision: str = "fp32", workers: int | None = None,
             dist: Dist | None = None) -> Path:
    """Write faces start..start+n−1 of ``seed`` as PNGs plus ``manifest.json``; returns the manifest.

    Streams batch by batch, so memory stays bounded for any n, and encodes the PNGs on
    ``workers`` threads (default: one per core; see :class:`facegan.viz.ImageWriter`). The
    manifest records ``truncation`` (null when off), which regenerating a face needs as much as
    its (seed, index), the ``upscale`` factor when an upscaler enlarged the faces (the DCGAN→SR
    pipeline), and ``precision`` when it is not the bit-reproducible fp32 default.

    With several ranks (``dist``), the batches are dealt round-robin over them — each batch the
    one a single process renders, so the files are byte-identical — and rank 0 writes the manifest
    once every rank is done.
    """
    dist = dist or Dist()
    rank, world = dist.rank, dist.world
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)  # the PNGs below are written without a sweep each (durable=False)
    names = [face_file(seed, start + k) for k in range(n)]
    mine = list(range(0, n, batch_size))[rank::world]
    on_cpu = next(G.parameters()).device.type == "cpu"

    def write_mine() -> None:
        with viz.ImageWriter(workers, overlap=not on_cpu) as writer, \
                tqdm(total=sum(min(batch_size, n - s) for s in mine), unit="face", disable=not progress or rank != 0,
                     dynamic_ncols=True) as bar:
            for s in mine:
                m = min(batch_size, n - s)
                imgs = faces(G, m, seed=seed, start=start + s, batch_size=m, truncation=truncation, upscaler=upscaler,
                             precision=precision)
                writer.write(imgs, [out / name for name in names[s:s + m]])
                bar.update(m)

    dist.on_main(write_mine, who=True)  # every rank its share; all learn if one failed
    manifest = {"z_dim": G.cfg.z_dim, "res": G.cfg.res * (upscaler.cfg.scale if upscaler is not None else 1),
                "generator_res": G.cfg.res, "upscale": upscaler.cfg.scale if upscaler is not None else None,
                "truncation": truncation}
    if precision != "fp32":
        manifest["precision"] = precision
    manifest["images"] = [{"file": name, "seed": seed, "index": start + k} for k, name in enumerate(names)]
    path = out / "manifest.json"
    return write_text_atomic(path, json.dumps(manifest, indent=1)) if rank == 0 else path


def write_grid(G: Generator, path: str | Path, rows: int = 6, seed: int = 0, truncation: float | None = None,
               upscaler: SRGenerator | None = None, precision: str = "fp32") -> Path:
    """A rows×rows grid of faces 0..rows²−1 of ``seed`` (the training run's fixed-noise faces)."""
    imgs = faces(G, rows * rows, seed=seed, truncation=truncation, upscaler=upscaler, precision=precision)
    return viz.save_grid(imgs, path, nrow=rows)


def faces(G: Generator, n: int, seed: int = 0, start: int = 0, batch_size: int = 256,
          truncation: float | None = None, upscaler: SRGenerator | None = None, precision: str = "fp32") -> np.ndarray:
    """Faces start..start+n−1 of ``seed`` as uint8 (n, res, res, C), truncated at ψ = ``truncation``,
    enlarged by ``upscaler`` when given (then (n, res·scale, res·scale, C)).

    ``precision="bf16"`` runs G (and the upscaler) under bf16 autocast: faster where the hardware
    has bf16, and close to but not bit-equal with the fp32 faces, differing between machines.
    """
    if upscaler is not None and upscaler.cfg.channels != G.cfg.channels:
        raise FaceganError(f"the upscaler takes {upscaler.cfg.channels}-channel images, this generator makes {G.cfg.channels}-channel ones")
    with autocast(next(G.parameters()).device, precision):
        if truncation is None:
            imgs = G.sample(n, seed=seed, start=start, batch_size=batch_size)
        else:
            imgs = render(G, truncated_latents(n, G.cfg.z_dim, seed, start, truncation), batch_size)
        return upscaler.upscale(imgs, min(batch_size, 64)) if upscaler is not None else imgs


@torch.no_grad()
def render(G: Generator, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Faces of the latents ``z`` (n, z_dim) as uint8 (n, res, res, C).

    In eval mode, as :meth:`Generator.sample`, so a face does not depend on its batch; the
    module's mode is restored afterwards.
    """
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = np.empty((len(z), G.cfg.res, G.cfg.res, G.cfg.channels), np.uint8)
    try:
        for s in range(0, len(z), batch_size):
            out[s : s + batch_size] = to_uint8(G(z[s : s + batch_size].to(device)))
    finally:
        G.train(was_training)
    return out


def truncated_latents(n: int, z_dim: int, seed: int, start: int = 0, truncation: float | None = None) -> torch.Tensor:
    """Latents start..start+n−1 of ``seed``, each component with |z_i| > ψ redrawn within [−ψ, ψ].

    This is BigGAN's truncation trick. A DCGAN has no mapping network: its input is the
    Gaussian itself, so ψ is a threshold in standard deviations, not StyleGAN's 0–1 blend
    towards a mean latent. Smaller ψ gives more typical, cleaner but less varied faces: ψ = 2
    redraws about 5 % of the components, ψ = 1 about 32 %, ψ = 0.5 about 62 %. ``None`` is off
    (plain :func:`~facegan.models.dcgan.latents`); there is no ψ value that means off.

    Components within ψ keep their values, so a face changes gradually as ψ shrinks. The
    redraws come from the normal truncated to [−ψ, ψ] (inverse CDF: one draw each, however
    small ψ), with a generator seeded by (seed, index) alone: the face depends only on
    (seed, index, ψ), never on the batch or on n.
    """
    z = latents(n, z_dim, seed, start)
    if checks.truncation("truncation", truncation) is None:
        return z
    g = torch.Generator()
    lo = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
    for k in range(n):
        far = z[k].abs() > truncation
        if far.any():
            g.manual_seed(_redraw_seed(seed, start + k))
            u = torch.rand(int(far.sum()), generator=g, dtype=torch.float64)
            z[k, far] = torch.special.ndtri(lo + u * (1 - 2 * lo)).clamp(-truncation, truncation).float()
    return z


def _redraw_seed(seed: int, index: int) -> int:
    """The truncation redraws' seed for face (seed, index): a hash, unrelated to the latent's own stream."""
    digest = hashlib.blake2b(f"facegan-truncation:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Points at fractions ``t`` along the great-circle arc from ``a`` to ``b``, shape (len(t), z_dim).

    Gaussian latents of many dimensions lie near the sphere of radius √z_dim. The straight line
    between two of them cuts inside it (its midpoint has about 1/√2 of their norm), where G
    saw no inputs in training, so a linear walk fades through washed-out faces; the arc keeps
    the endpoints' radius (White 2016, "Sampling generative networks"). Nearly parallel
    endpoints, where arc and line coincide, use the line.
    """
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
    a64, b64 = a.double(), b.double()
    omega = torch.arccos((a64 @ b64 / (a64.norm() * b64.norm())).clamp(-1, 1))
    if torch.sin(omega) < 1e-6:
        return lerp(a, b, t)
    return ((torch.sin((1 - t) * omega) * a64 + torch.sin(t * omega) * b64) / torch.sin(omega)).to(a.dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Points at fractions ``t`` along the straight line from ``a`` to ``b``, shape (len(t), z_dim)."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
    return ((1 - t) * a.double() + t * b.double()).to(a.dtype)


def walk_latents(z_dim: int, seeds: Sequence[Waypoint], frames: int, linear: bool = False, loop: bool = True,
                 truncation: float | None = None) -> torch.Tensor:
    """``frames`` latents walking through the faces of ``seeds`` (each a seed s, meaning face (s, 0),
    or a (seed, index) pair), in order.

    Frames are evenly spaced along the whole path. With ``loop`` the path returns to the first
    face and the last frame stops one step short of it, so a looping video repeats no frame;
    without, the walk ends exactly on the last seed's face.
    """
    _at_least_two(frames, "frames")
    ends = _waypoints(z_dim, seeds, loop, truncation)
    segments = len(ends) - 1
    denom = frames if loop else frames - 1
    mix = lerp if linear else slerp
    out = []
    for k in range(frames):
        u = k * segments / denom
        i = min(int(u), segments - 1)
        out.append(mix(ends[i], ends[i + 1], u - i)[0])
    return torch.stack(out)


def strip_latents(z_dim: int, seeds: Sequence[Waypoint], per_row: int, linear: bool = False, loop: bool = True,
                  truncation: float | None = None) -> torch.Tensor:
    """One row of ``per_row`` evenly spaced latents per segment of the walk, both ends included."""
    _at_least_two(per_row, "frames")
    ends = _waypoints(z_dim, seeds, loop, truncation)
    mix = lerp if linear else slerp
    t = torch.linspace(0, 1, per_row, dtype=torch.float64)
    return torch.cat([mix(a, b, t) for a, b in zip(ends[:-1], ends[1:])])


def write_walk(G: Generator, path: str | Path, seeds: Sequence[int], frames: int = 60, linear: bool = False,
               loop: bool = True, fps: float = 20.0, truncation: float | None = None, batch_size: int = 256) -> Path:
    """A latent walk through the faces of ``seeds``: ``.gif`` / ``.mp4`` animation, or ``.png`` strip.

    The strip has one row per segment of the walk with min(frames, STRIP_MAX) faces each, so a
    printed page shows the whole morph. An .mp4 needs imageio-ffmpeg, checked before any rendering.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4", ".png"):
        raise FaceganError(f"--out must end in .gif, .mp4 or .png (a strip of frames), not {path.name!r}")
    if suffix == ".mp4":
        viz.require_video()
    z_dim = G.cfg.z_dim
    if suffix == ".png":
        per_row = min(frames, STRIP_MAX)
        z = strip_latents(z_dim, seeds, per_row, linear, loop, truncation)
        return viz.save_grid(render(G, z, batch_size), path, nrow=per_row)
    z = walk_latents(z_dim, seeds, frames, linear, loop, truncation)
    return viz.save_animation([viz.to_pil(face) for face in render(G, z, batch_size)], path, fps)


def _waypoints(z_dim: int, seeds: Sequence[Waypoint], loop: bool, truncation: float | None) -> list[torch.Tensor]:
    """The latents of the waypoint faces ((s, 0) for a bare seed s), and the first again when the walk loops."""
    if len(seeds) < 2:
        raise FaceganError(f"a walk needs at least two seeds, e.g. --seeds 3,17,42 (got {len(seeds)})")
    pairs = [(w, 0) if isinstance(w, int) else tuple(w) for w in seeds]
    ends = [truncated_latents(1, z_dim, s, i, truncation)[0] for s, i in pairs]
    return ends + ends[:1] if loop else ends


def _at_least_two(n: int, what: str) -> None:
    if n < 2:
        raise FaceganError(f"a walk needs at least 2 {what}, not {n}")
