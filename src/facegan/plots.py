"""Training curves with matplotlib: losses raw and smoothed, D's outputs, FID over images.

matplotlib is the optional extra ``facegan[plots]``: it is imported only inside the drawing
function, so training and generation never need it. Figures are drawn on the Agg canvas
directly, without pyplot, so nothing opens a window or touches global plotting state.
"""

from __future__ import annotations

import importlib.util
import io
import math

PANEL = (960, 300)  # pixels per panel: the figure is 960 wide, 300 high per panel
DPI = 100


def available() -> bool:
    """Whether matplotlib is importable (checked without importing it: that takes a second)."""
    return importlib.util.find_spec("matplotlib") is not None


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average, debiased as TensorBoard's: early points are not pulled to 0.

    GAN losses are noisy enough that the trend is invisible in the raw line; the smoothed line
    shows it while the raw one, drawn faintly behind, still shows the spread. The default
    ``weight`` averages over about 1/20 of the points, so a short run and a long one look
    alike (and a run of ≤ 20 log lines is left as it is).
    """
    if weight is None:
        weight = max(0.0, 1 - 20 / max(len(values), 1))
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def curves_png(records: list[dict], log_x: bool = False) -> bytes:
    """PNG bytes of the run's curves against images seen: one panel each for the losses, the
    mean D outputs (GAN runs), FID when the run was evaluated periodically, and held-out PSNR
    against bicubic for upscaler runs.

    ``log_x`` puts images seen on a log axis, which spreads out the fast changes of the first
    few thousand images. The size is fixed (PANEL per panel) so pages can lay it out in advance.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if "loss_G" in r]  # GAN and upscaler runs both log loss_G
    evals = [r for r in records if "fid" in r]
    vals = [r for r in records if "psnr_val" in r]
    panels = ([_losses] + ([_d_outputs] if any("D_x" in r for r in train) else []) + ([_fid] if evals else [])
              + ([_psnr] if vals else []))
    data = {_fid: evals, _psnr: vals}
    height = PANEL[1] * len(panels)
    fig = Figure(figsize=(PANEL[0] / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed pixel margins: an automatic layout engine doubled the drawing time
    fig.subplots_adjust(left=0.07, right=0.985, bottom=45 / height, top=1 - 28 / height, hspace=0.22)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]  # one images-seen axis for all
    for ax, draw in zip(axes, panels):
        draw(ax, data.get(draw, train))
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("images seen")
    if log_x:
        axes[-1].set_xscale("log")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _raw_and_smoothed(ax, records: list[dict], key: str, label: str, colour: str) -> None:
    """One series: the raw values faint, their smoothed trend solid."""
    pts = [(r["images"], r[key]) for r in records if math.isfinite(r.get(key, math.nan))]
    if not pts:
        return
    xs, ys = zip(*pts)
    ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=1)
    ax.plot(xs, smooth(list(ys)), color=colour, linewidth=2, label=f"{label} (smoothed)")


def _losses(ax, records: list[dict]) -> None:
    _raw_and_smoothed(ax, records, "loss_D", "loss D", "tab:red")
    _raw_and_smoothed(ax, records, "loss_G", "loss G", "tab:blue")
    ax.set_title("losses (faint: raw)")
    ax.legend(loc="best")


def _d_outputs(ax, records: list[dict]) -> None:
    _raw_and_smoothed(ax, records, "D_x", "D(x), real", "tab:green")
    _raw_and_smoothed(ax, records, "D_G_z", "D(G(z)), fake", "tab:orange")
    ax.set_title("mean D output (probability for bce, raw score for hinge/ls)")
    ax.legend(loc="best")


def _fid(ax, evals: list[dict]) -> None:
    xs, ys = [r["images"] for r in evals], [r["fid"] for r in evals]
    ax.plot(xs, ys, "o-", color="tab:purple", label="FID")
    best = min(range(len(ys)), key=ys.__getitem__)
    ax.plot([xs[best]], [ys[best]], "*", color="gold", markersize=16, markeredgecolor="black",
            label=f"best {ys[best]:.2f}")
    ax.set_title("FID of the periodic evaluations (lower is better)")
    ax.legend(loc="best")


def _psnr(ax, vals: list[dict]) -> None:
    xs = [r["images"] for r in vals]
    ax.plot(xs, [r["psnr_val"] for r in vals], "o-", color="tab:purple", label="upscaler")
    ax.plot(xs, [r["psnr_val_bicubic"] for r in vals], "--", color="tab:gray", label="bicubic")
    ax.set_title(f"PSNR on {vals[-1]['val_n']} held-out faces, dB (higher is better)")
    ax.legend(loc="best")
