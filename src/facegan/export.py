"""Model folders: a trained generator packed to be handed on (``facegan export RUN --out DIR``).

A run folder holds everything needed to *continue training* (both nets, both Adams, every random
state). A model folder holds what a user of the faces needs, in the layout people know from the
Hugging Face hub:

    DIR/config.json          format, architecture, preset, recipe, images seen, measured FID/KID
    DIR/model.safetensors    the generator users see (the EMA one when the run keeps it), fp32
    DIR/README.md            the model card: data, budget, recipe, metrics, samples, licence caveat
    DIR/samples.png          a 6×6 grid of faces 0..35 of seed 0
    DIR/upscaler.safetensors with --upscaler: the ×2/×4 face upscaler
    DIR/model.onnx           with --onnx: z (batch, z_dim) → images (batch, C, res, res) in [−1, 1]

Reading one back is facegan.saved's (``saved.open``, and so ``load_generator``, ``generate``,
``interpolate``): JSON and safetensors only, checked against the architecture before use: never code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from facegan import checkpoint, metrics, saved, viz
from facegan.errors import FaceganError
from facegan.fileio import write_text_atomic
from facegan.models.dcgan import Generator
from facegan.models.srresnet import SRGenerator
from facegan.onnx_export import save_onnx
from facegan.sample import write_grid
from facegan.saved import CARD, CONFIG, FORMAT, ONNX, SAMPLES, UPSCALER_WEIGHTS, WEIGHTS


def export(source: str | Path, out: str | Path, upscaler: str | Path | None = None, onnx: bool = False,
           ema: bool = True) -> Path:
    """Write the model folder of a run (its latest checkpoint) or checkpoint file; returns ``out``."""
    model = saved.open(source)
    if model.is_model_folder:
        raise FaceganError(f"{source} is already a model folder; export the run it came from")
    if model.kind == saved.UPSCALER:
        raise FaceganError(f"{source} is an upscaler run; export the GAN run and give this one as --upscaler")
    G = model.generator(ema=ema).float().to(memory_format=torch.contiguous_format)
    SR = saved.load_upscaler(upscaler) if upscaler is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = describe(model, G, SR, ema)
    checkpoint.write_atomic(out / WEIGHTS, G.state_dict(), info)  # streamed, fsynced, renamed; finite only
    if SR is not None:
        checkpoint.write_atomic(out / UPSCALER_WEIGHTS, SR.state_dict(), {"format": FORMAT, "architecture": SR.cfg.to_dict()})
    write_grid(G, out / SAMPLES, rows=6, seed=0)
    if onnx:
        export_onnx(G, out / ONNX)
    for name, wanted in ((ONNX, onnx), (UPSCALER_WEIGHTS, SR is not None)):  # an earlier export's extras would be stale
        if not wanted:
            (out / name).unlink(missing_ok=True)
    write_text_atomic(out / CONFIG, json.dumps({**info, "onnx": ONNX if onnx else None}, indent=2))
    write_text_atomic(out / CARD, model_card(info, onnx))
    return out


def describe(model: saved.Saved, G: Generator, SR: SRGenerator | None, ema: bool = True) -> dict[str, Any]:
    """What a model folder's config.json says about the generator ``G`` loaded from the run or checkpoint
    ``model`` (also what ``facegan serve`` reports for a run it serves directly)."""
    meta, cfg = model.info, model.info["config"]
    return {"format": FORMAT, "architecture": G.cfg.to_dict(), "preset": cfg.get("preset"), "recipe": cfg.get("recipe"),
            "generator": "G_ema" if ema and model.has_ema else "G", "step": meta["step"], "images": meta["images"],
            "data": cfg.get("data"), "seed": cfg.get("seed"), "metrics": _metrics(model.home, meta["step"]),
            "upscaler": SR.cfg.to_dict() if SR is not None else None, "source": str(model.checkpoint),
            "torch": torch.__version__}


def _metrics(run: Path, step: int) -> dict[str, float]:
    """The run's last periodic evaluation at or before ``step`` (metrics.jsonl), if it made any: the keys
    its registered metrics report (FID, KID by default)."""
    evals = [r for r in viz.read_metrics(run / "metrics.jsonl") if "fid" in r and r.get("step", math.inf) <= step]
    if not evals:
        return {}
    last = evals[-1]
    return {k: last[k] for k in ("step", *metrics.keys(list(metrics.METRICS)), "eval_n") if k in last}


def export_onnx(G: Generator, path: Path) -> None:
    """G as ONNX: z (batch, z_dim) → images (batch, C, res, res) in [−1, 1], dynamic batch."""
    try:
        import onnxscript  # noqa: F401 - the exporter's dependency
    except ImportError:
        raise FaceganError("--onnx needs: pip install 'facegan[onnx]' (onnxruntime and onnxscript)") from None
    cpu = Generator(G.cfg)
    cpu.load_state_dict(G.state_dict())
    save_onnx(cpu.eval(), torch.zeros(2, G.cfg.z_dim), path, "z", "images")


def model_card(info: dict[str, Any], onnx: bool) -> str:
    """README.md of a model folder: what it is, what it saw, how good it measured, and the caveat."""
    a, m = info["architecture"], info.get("metrics") or {}
    quality = (f"FID {m['fid']:.2f}, KID {m.get('kid_mean', float('nan')):.4f} ± {m.get('kid_std', float('nan')):.4f} "
               f"({m.get('eval_n', '?')} generated faces vs the training data, at step {m.get('step')})"
               if "fid" in m else "not measured during training; run `facegan evaluate` on the run for FID/KID, "
               "precision/recall and memorization")
    sr = info.get("upscaler")
    sr_text = f"×{sr['scale']} SRResNet (upscaler.safetensors)" if sr else "none"
    onnx_text = "model.onnx: z (batch, z_dim) → images (batch, C, H, W) in [−1, 1]" if onnx else "not exported"
    lines = [
        f"# facegan face generator: {info.get('preset') or 'custom'} ({a['res']}×{a['res']}, z = {a['z_dim']})", "",
        "A DCGAN-family generator trained with facegan. Every face is addressed by "
        "(seed, index): the same pair always gives the same face.", "",
        "![36 faces of seed 0](samples.png)", "",
        "| | |", "|---|---|",
        f"| architecture | {a['res']}² {'RGB' if a['channels'] == 3 else 'grayscale'}, z = {a['z_dim']}, G widths {a['g_width']}…{a['width_cap']} |",
        f"| recipe | {info.get('recipe')} (preset {info.get('preset')}) |",
        f"| generator | {'EMA of G (G_ema)' if info.get('generator') == 'G_ema' else 'G'} |",
        f"| training data | `{info.get('data')}` |",
        f"| images seen | {info.get('images'):,} ({info.get('step'):,} steps) |",
        f"| quality | {quality} |",
        f"| upscaler | {sr_text} |",
        f"| ONNX | {onnx_text} |", "",
        "## Use", "",
        "```python", "import facegan", "G = facegan.load_generator('THIS_FOLDER')", "faces = G.sample(16, seed=0)  # uint8 (16, H, W, C)", "```", "",
        "or `facegan generate THIS_FOLDER -n 64`, `facegan interpolate THIS_FOLDER --seeds 1,2,3`.", "",
        "## Data and licence caveat", "",
        "This model learned from the training data named above. Face datasets (CelebA, FFHQ, 140k-faces, "
        "your own photos) carry their own licences and the rights of the people in them: CelebA and FFHQ, "
        "for instance, are for non-commercial research only. Generated faces can resemble training "
        "faces; check memorization (`facegan evaluate --metrics mem`) before publishing them, and do not "
        "use them to impersonate or deceive. The weights inherit the terms of the data they were trained on.", "",
    ]
    return "\n".join(lines)
