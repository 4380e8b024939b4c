"""What every benchmark shares: the header line saying which machine a table was measured on,
and the timers (a repeated call, and paths timed in turn, round after round).

Speed on a CPU depends on its vector units more than on anything else here: bf16 math is native
only with AVX512-BF16 or AMX (otherwise oneDNN emulates it, many times slower than fp32), and
fp32 peaks differ 2–4× between AVX2 and AVX-512 parts. So the flags are part of every row.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> tuple[str, list[str]]:
    """(model name, the FLAGS this CPU has) from /proc/cpuinfo; ('unknown', []) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", []
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, [f for f in FLAGS if f in flags]


def describe(device: torch.device) -> str:
    """``# date, torch, CPU (flags, native bf16 or not), threads[, GPU]`` — one markdown comment line."""
    model, flags = cpu_info()
    bf16 = "native bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "bf16 emulated"
    line = (f"# {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, CPU {model} ({os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads; flags: {' '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {bf16})")
    if device.type == "cuda":
        line += f", GPU {torch.cuda.get_device_name(device)}"
    return line


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Mean wall time of ``fn`` over ``reps`` calls, after one warm-up call."""
    fn()
    sync(device)
    t = time.time()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.time() - t) / reps


def interleaved(paths: list[tuple[str, Callable[[], object], int]], device: torch.device, min_s: float,
                min_rounds: int = 3) -> dict[str, list[float]]:
    """items/s of each (label, fn, items) path, the paths run in turn, round after round.

    Interleaving matters on a shared VM, whose speed drifts by ±20 % over minutes: each round
    times every path under the same conditions, so ratios are taken per round. Rounds go on
    until ``min_s`` seconds per path have passed and at least ``min_rounds`` are done.
    """
    for _, fn, _ in paths:  # warm-up
        fn()
    rates: dict[str, list[float]] = {label: [] for label, _, _ in paths}
    t_end = time.time() + min_s * len(paths)
    while time.time() < t_end or len(rates[paths[0][0]]) < min_rounds:
        for label, fn, items in paths:
            t = time.time()
            fn()
            sync(device)
            rates[label].append(items / (time.time() - t))
    return rates
