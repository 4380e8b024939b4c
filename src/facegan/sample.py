"""Faces from a trained generator: PNG files with a manifest, grids, and the Python API.

Every face is addressed by (seed, index): its latent depends on nothing else (see
:func:`facegan.models.dcgan.latents`), and G runs in eval mode, so any face in a manifest can
be regenerated alone, years later, with ``facegan generate RUN --seed S --start I -n 1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from facegan import checkpoint, viz
from facegan.fileio import write_text_atomic
from facegan.models.dcgan import Generator, ModelConfig


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Generator:
    """The generator of a checkpoint file or run folder (latest checkpoint), in eval mode.

    Runs trained with ``--ema`` hold two generators; ``ema`` picks the averaged one (the better
    faces, and what the run's grids and periodic FID showed), ``ema=False`` the raw one.

    Reads safetensors only: loading a checkpoint can never execute code. The weights are put in
    channels_last layout, 7–12 % faster at batch 256 on the CPU (docs/benchmarks.md).
    """
    tensors, meta = checkpoint.load(path)
    G = Generator(ModelConfig.from_dict(meta["config"]["model"]))
    G.load_state_dict(checkpoint.module_state(tensors, "G_ema" if ema and any(k.startswith("G_ema.") for k in tensors) else "G"))
    return G.to(device, memory_format=torch.channels_last).eval()


def generate(G: Generator, out_dir: str | Path, n: int, seed: int = 0, start: int = 0,
             batch_size: int = 256, progress: bool = True) -> Path:
    """Write faces start..start+n−1 of ``seed`` as PNGs plus ``manifest.json``; returns the manifest.

    Streams batch by batch, so memory stays bounded for any n.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    with tqdm(total=n, unit="face", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, n, batch_size):
            m = min(batch_size, n - s)
            imgs = G.sample(m, seed=seed, start=start + s, batch_size=m)
            for k in range(m):
                idx = start + s + k
                name = f"seed{seed}-{idx:06d}.png"
                viz.save_image(imgs[k], out / name)
                entries.append({"file": name, "seed": seed, "index": idx})
            bar.update(m)
    return write_text_atomic(out / "manifest.json",
                             json.dumps({"z_dim": G.cfg.z_dim, "res": G.cfg.res, "images": entries}, indent=1))


def write_grid(G: Generator, path: str | Path, rows: int = 6, seed: int = 0) -> Path:
    """A rows×rows grid of faces 0..rows²−1 of ``seed`` (the training run's fixed-noise faces)."""
    return viz.save_grid(G.sample(rows * rows, seed=seed), path, nrow=rows)
