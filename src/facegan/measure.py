"""`facegan evaluate` as one library call: how good a saved model is, measured offline.

Three things can be measured, and this is where the choice between them lives (not in the CLI):
- a GAN run or checkpoint: ``n`` of its faces against its training data (or ``data``), with the
  registered set metrics (FID, KID, precision/recall, density/coverage, memorization by default;
  the face-space ones on request);
- two image sets (``real`` and ``fake``): the same metrics between them;
- an upscaler run: PSNR and SSIM of its results on its own held-out split, beside bicubic's.

With several ranks (torchrun, or ``--nproc``) the work is shared and every rank gets the same
numbers; rank 0 writes ``eval.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facegan import checks, metrics, saved
from facegan.data.prepare import check_res, resolve_dataset
from facegan.dist import session
from facegan.errors import FaceganError
from facegan.metrics import inception
from facegan.metrics.evaluate import Evaluator, write_json
from facegan.upscale import evaluate_heldout


@dataclass
class Evaluation:
    result: dict[str, float]
    written: Path | None  # eval.json (rank 0 only)


def choose(source: str | Path | None, real: str | None, fake: str | None, names: str | None, res: int = 64,
           seed: int = 0, backend: str = "torch", out: str | Path | None = None) -> tuple[saved.Saved | None, list[str]]:
    """Every option checked before any slow work (and before ``--nproc`` starts ranks): the model to
    measure (None for two image sets) and the metrics, the kind's defaults when ``names`` is None."""
    inception.check_backend(backend)
    checks.seed("--seed", seed)
    check_res(res)
    if out is not None:
        checks.output_dir("--out", out)
    if source is None and (real is None or fake is None):
        raise FaceganError("give a run folder/checkpoint, or both --real and --fake")
    model = saved.open(source) if source is not None else None
    upscaler = model is not None and model.kind == saved.UPSCALER
    chosen = metrics.parse(names) if names else list(metrics.PAIRED if upscaler else metrics.DEFAULTS)
    paired = [m for m in chosen if metrics.METRICS[m].pairs]
    if upscaler and len(paired) != len(chosen):
        raise FaceganError(f"{source} is an upscaler run: it is measured with {', '.join(metrics.PAIRED)}")
    if not upscaler and paired:
        raise FaceganError(f"{', '.join(paired)} measure an upscaler against its held-out originals; give an upscaler run")
    return model, chosen


def evaluate(source: str | Path | None = None, data: str | None = None, real: str | None = None, fake: str | None = None,
             n: int = 10_000, n_real: int | None = None, names: str | None = None, res: int = 64, seed: int = 0,
             weights: str | Path | None = None, batch: int = 64, device: str = "auto", backend: str = "torch",
             out: str | Path | None = None, ema: bool = True) -> Evaluation:
    """Measure ``source`` (a GAN run, checkpoint or model folder, or an upscaler run), or ``fake``
    against ``real``; ``names`` a comma list of registered metrics (default: the kind's defaults)."""
    model, chosen = choose(source, real, fake, names, res, seed, backend, out)
    with session(device) as d:
        common = dict(n_real=n_real, weights=weights, batch=batch, backend=backend, dist=d)
        if model is None:
            out_dir = Path(out or "eval")
            ev = Evaluator(real, res, device=d.device, **common)
            result = ev.of_images(fake, chosen, out_dir=out_dir if d.is_main else None, seed=seed)
        elif model.kind == saved.UPSCALER:
            cfg = model.config
            out_dir = Path(out or model.home / "eval" / model.checkpoint.stem)
            SR = model.upscaler(d.device)
            prepared = d.first_then_rest(lambda: resolve_dataset(data or cfg.data, cfg.hr_res, SR.cfg.channels, progress=d.is_main))
            result = {"step": float(model.info["step"]), **evaluate_heldout(SR, prepared, cfg.holdout, n, batch, tuple(chosen))}
        else:
            G = model.generator(d.device, ema)
            out_dir = Path(out or model.home / "eval" / (model.checkpoint.stem if model.checkpoint else "model"))
            ev = Evaluator(data if data is not None else model.data, G.cfg.res, G.cfg.channels, device=d.device, **common)
            step = {"step": float(model.info["step"])}
            result = {**step, **ev.of_generator(G, n, chosen, seed=seed, out_dir=out_dir if d.is_main else None)}
        written = write_json(result, out_dir / "eval.json") if d.is_main else None
    return Evaluation(result, written)
