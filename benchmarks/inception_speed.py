"""FID Inception feature speed, per backend, against this machine's fp32 ceiling — and proof of equal numbers.

    python benchmarks/inception_speed.py                         # 64² AAF faces (procedural if absent), ≈4 min
    python benchmarks/inception_speed.py --check 500             # + features and FID of 2×500 faces per backend
    python benchmarks/inception_speed.py --device cuda --batch 256

Rows: `inception.extract` as `facegan evaluate` calls it (uint8 64² faces in, TF resize to 299²,
features out), for each backend: ``torchscript`` (the weights file as shipped: what facegan
0.1.0 ran, at its batch 64), ``torch`` (folded batch norms, channels_last, CPU chunks of 8) and
``onnxruntime`` (when installed). The backends run in turn, round after round, so the drift of
a shared VM hits all of them alike. GFLOP/img is FlopCounterMode's count (multiply-add = 2);
the ceilings are the best fp32 rates measured here: a 2048² matmul, a 1×1 convolution with
1024 channels (a pure GEMM in oneDNN) and Inception's largest 3×3 convolution.

``--check N`` computes features of 2N faces with every backend and prints the largest
difference from the TorchScript's (relative to its largest feature) and FID(first N, last N)
per backend: the evidence that the faster paths compute the same numbers.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from machine import describe, interleaved, seconds_per_call

from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.device import pick_device
from facegan.metrics import fid, inception, inception_onnx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-aaf-128.zip"


def faces64(n: int) -> np.ndarray:
    """n evenly spaced 64² faces: AAF when ../shared/data has it, else procedural."""
    src = str(SHARED) if SHARED.is_file() else f"procedural:{max(n, 1024)}"
    data = open_prepared(resolve_dataset(src, 64, progress=False)).images
    return np.asarray(data[inception.subset_indices(len(data), n)])


def ceilings(device: torch.device) -> dict[str, float]:
    """GFLOP/s of the fastest fp32 operations measured here (forward only)."""
    def rate(fn, flops: float) -> float:
        return flops / seconds_per_call(fn, device, 5) / 1e9

    cl = torch.channels_last
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    x1 = torch.randn(8, 1024, 32, 32, device=device).contiguous(memory_format=cl)
    w1 = torch.randn(1024, 1024, 1, 1, device=device).contiguous(memory_format=cl)
    x3 = torch.randn(8, 80, 73, 73, device=device).contiguous(memory_format=cl)
    w3 = torch.randn(192, 80, 3, 3, device=device).contiguous(memory_format=cl)
    with torch.inference_mode():
        return {"matmul fp32 2048²": rate(lambda: a @ b, 2 * 2048**3),
                "conv fp32 1×1 1024→1024, 32², batch 8": rate(lambda: F.conv2d(x1, w1), 2 * 8 * 1024 * 1024 * 32 * 32),
                "conv fp32 3×3 80→192, 73², batch 8 (Inception conv_4)": rate(lambda: F.conv2d(x3, w3),
                                                                            2 * 8 * 192 * 80 * 9 * 71 * 71)}


def fid_of(feats: np.ndarray, n: int) -> float:
    """FID between the first n and the last n feature rows."""
    return fid.frechet_distance(*fid.stats(feats[:n]), *fid.stats(feats[n:]))


def inception_flops(net: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(torch.zeros(1, 3, 299, 299, device=next(net.parameters()).device))
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("-n", type=int, default=64, help="images per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="images per extract() call (today's and 0.1.0's default)")
    ap.add_argument("--check", type=int, default=0, metavar="N", help="also compare features and FID on 2N faces")
    args = ap.parse_args()
    device = pick_device(args.device)
    print(describe(device))
    backends = ["torchscript", "torch"] + (["onnxruntime"] if device.type == "cpu" and inception_onnx.available() else [])
    nets = {b: inception.InceptionFeatures(device=device, backend=b) for b in backends}
    flops = inception_flops(nets["torch"].run) / 1e9
    ceil = ceilings(device)
    print("\n| ceiling | GFLOP/s |\n|---|---|")
    for k, v in ceil.items():
        print(f"| {k} | {v:.1f} |")
    top = max(ceil.values())

    imgs = faces64(args.n)
    def features(net: inception.InceptionFeatures):
        return lambda: [net(imgs[s:s + args.batch]).cpu() for s in range(0, len(imgs), args.batch)]

    rates = interleaved([(b, features(net), len(imgs)) for b, net in nets.items()], device, 0, args.rounds)
    print("\n| backend | img/s median (min–max) | vs torchscript | GFLOP/img | GFLOP/s | of best ceiling |\n|---|---|---|---|---|---|")
    base = rates["torchscript"]
    for b, r in rates.items():
        speedup = statistics.median(x / y for x, y in zip(r, base))
        med = statistics.median(r)
        print(f"| {b} | {med:.2f} ({min(r):.2f}–{max(r):.2f}) | {speedup:.2f}× | {flops:.2f} | {med * flops:.1f} "
              f"| {med * flops / top:.0%} |", flush=True)

    if args.check:
        both = faces64(2 * args.check)
        feats = {b: inception.extract(both, args.batch, device, progress=False, backend=b) for b in backends}
        ref = feats["torchscript"]
        ref_fid = fid_of(ref, args.check)
        print(f"\n| backend | max feature difference / max feature | FID({args.check} vs {args.check} faces) "
              f"| FID difference |\n|---|---|---|---|")
        for b, f in feats.items():
            d = float(np.abs(f - ref).max() / np.abs(ref).max())
            v = fid_of(f, args.check)
            print(f"| {b} | {d:.1e} | {v:.4f} | {abs(v - ref_fid) / ref_fid:.1e} |")


if __name__ == "__main__":
    main()
