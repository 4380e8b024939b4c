"""Where a training step's time goes: by kind of operation, and layer by layer against the ceiling.

    python benchmarks/step_profile.py                               # dcgan64, batch 128, --precision auto
    python benchmarks/step_profile.py --precision bf16 --compile    # e.g. on an AMX CPU
    python benchmarks/step_profile.py --preset celeba128 --batch 64 --device cuda

Two tables, for `facegan train`'s own step (`gan_step`: D frozen in G's step, channels_last unless
``--no-channels-last``, the chosen precision's autocast, foreach Adam on CPU / fused on CUDA):

1. **By kind**: torch.profiler's self time of every operator over ``--steps`` steps, summed into
   convolutions forward / backward, batch norm, activations, casts and copies (what autocast
   adds), optimizer, loss and the rest — what a faster step would have to shrink.
2. **By layer**: each convolution of G and D timed alone at the shape it sees in the step, in the
   same layout and precision: forward, and forward + backward (input and weight gradients), as
   GFLOP/s — how close each layer gets to the machine's best convolution rate (train_speed.py
   prints the ceilings). Layers far below the others are where layout or kernel choice loses.

``--compile`` also times the step under torch.compile (compile time excluded). Run on the
machine in question: the numbers in docs/benchmarks.md say which CPU (flags in the header).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from functools import partial

import torch
from torch import nn

from machine import describe, seconds_per_call, sync

from facegan import config
from facegan.device import autocast, pick_device, pick_precision
from facegan.models.dcgan import build
from facegan.train.loop import gan_step, optimizers

KINDS = (  # (label, substrings of operator names), first match wins
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("convolution",)),
    ("batch norm", ("batch_norm",)),
    ("activations", ("relu", "tanh", "sigmoid", "threshold", "leaky")),
    ("casts / copies", ("_to_copy", "copy_", "to_dense", "contiguous", "clone")),
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("loss", ("binary_cross_entropy", "log_sigmoid", "softplus", "mse")),
)


def kind(name: str) -> str:
    low = name.lower()
    return next((label for label, keys in KINDS if any(k in low for k in keys)), "other")


def setup(preset: str, batch: int, device: torch.device, channels_last: bool):
    cfg = config.resolve(preset)
    m = cfg.model
    torch.manual_seed(0)
    G, D = build(m)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(device, memory_format=fmt)
    D.to(device, memory_format=fmt)
    opt_g, opt_d = optimizers(G, D, cfg, device)
    real = (torch.rand(batch, m.channels, m.res, m.res, device=device) * 2 - 1).contiguous(memory_format=fmt)
    z = torch.randn(batch, m.z_dim, device=device)
    targets = (torch.ones(batch, device=device), torch.zeros(batch, device=device))
    return G, D, opt_g, opt_d, real, z, targets


def by_kind(args, device, precision) -> None:
    G, D, opt_g, opt_d, real, z, targets = setup(args.preset, args.batch, device, args.channels_last)
    ac = autocast(device, precision)
    for _ in range(2):
        gan_step(G, D, opt_g, opt_d, real, z, targets, ac)
    sync(device)
    t = time.time()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.steps):
            gan_step(G, D, opt_g, opt_d, real, z, targets, ac)
        sync(device)
    wall = (time.time() - t) / args.steps
    totals: dict[str, float] = defaultdict(float)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for ev in prof.key_averages():
        totals[kind(ev.key)] += getattr(ev, attr) / 1e3 / args.steps  # ms per step
    total = sum(totals.values())
    print(f"\n**By kind** ({args.preset}, batch {args.batch}, {precision}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}; {wall * 1e3:.0f} ms/step under the profiler = "
          f"{args.batch / wall:.1f} img/s)\n\n| kind | ms/step | share |\n|---|---|---|")
    for label, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {ms:.1f} | {ms / total:.0%} |")


def by_layer(args, device, precision) -> None:
    G, D, *_ = setup(args.preset, args.batch, device, args.channels_last)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    shapes: dict[str, tuple[int, ...]] = {}
    layers: dict[str, nn.Module] = {}
    hooks = []
    for net_name, net in (("G", G), ("D", D)):
        for name, mod in net.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                key = f"{net_name}.{name}"
                layers[key] = mod
                hooks.append(mod.register_forward_hook(partial(_record, shapes, key)))
    with torch.no_grad():
        D(G(torch.randn(args.batch, G.cfg.z_dim, device=device)))
    for h in hooks:
        h.remove()
    from torch.utils.flop_counter import FlopCounterMode

    print(f"\n**By layer** (each alone, {precision}, {'channels_last' if args.channels_last else 'NCHW'}, batch "
          f"{args.batch}; fwd+bwd = output, input and weight gradients)\n\n"
          "| layer | kind | input | GFLOP fwd | fwd ms | fwd GFLOP/s | fwd+bwd ms | fwd+bwd GFLOP/s |\n|---|---|---|---|---|---|---|---|")
    ac = autocast(device, precision)
    for key, mod in layers.items():
        shape = shapes[key]
        x = torch.randn(shape, device=device)
        if len(shape) == 4:
            x = x.contiguous(memory_format=fmt)
        x.requires_grad_(True)
        with FlopCounterMode(display=False) as fc, ac:
            mod(x).float().sum().backward()
        flops_all = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc, torch.no_grad(), ac:
            mod(x)
        flops_fwd = fc.get_total_flops()

        def fwd() -> None:
            with torch.no_grad(), ac:
                mod(x)

        def both() -> None:
            with ac:
                y = mod(x)
            y.backward(torch.ones_like(y))

        t_f, t_b = seconds_per_call(fwd, device, args.reps), seconds_per_call(both, device, args.reps)
        print(f"| {key} | {type(mod).__name__} {tuple(mod.weight.shape)} | {shape} | {flops_fwd / 1e9:.2f} | "
              f"{t_f * 1e3:.1f} | {flops_fwd / t_f / 1e9:.0f} | {t_b * 1e3:.1f} | {flops_all / t_b / 1e9:.0f} |", flush=True)


def _record(shapes: dict, key: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Forward hook: the input shape a layer sees (returns None, so the output is untouched)."""
    shapes.setdefault(key, tuple(inputs[0].shape))


def compiled(args, device, precision) -> None:
    G, D, opt_g, opt_d, real, z, targets = setup(args.preset, args.batch, device, args.channels_last)
    ac = autocast(device, precision)
    rows = []
    for label, (g, d) in (("eager", (G, D)), ("torch.compile", (torch.compile(G, dynamic=False), torch.compile(D, dynamic=False)))):
        t0 = time.time()
        for _ in range(2):
            gan_step(g, d, opt_g, opt_d, real, z, targets, ac)
        sync(device)
        warm = time.time() - t0
        rows.append((label, args.batch / seconds_per_call(lambda: gan_step(g, d, opt_g, opt_d, real, z, targets, ac), device, args.steps), warm))
    print(f"\n**torch.compile** ({precision})\n\n| step | img/s | first two steps (s) |\n|---|---|---|")
    for label, rate, warm in rows:
        print(f"| {label} | {rate:.1f} | {warm:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (as `facegan train --precision`)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=3, help="profiled (and compiled) steps")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per layer")
    ap.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    args = ap.parse_args()
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    print(describe(device))
    by_kind(args, device, precision)
    by_layer(args, device, precision)
    if args.compile:
        compiled(args, device, precision)


if __name__ == "__main__":
    main()
