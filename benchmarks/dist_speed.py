"""Throughput of one process vs several ranks on this machine, and the cost of the DDP wrapper.

    python benchmarks/dist_speed.py [--preset dcgan64] [--batch 64] [--images 4000] [--ranks 2] [--device cpu|cuda]

Rows (training img/s from the run's own metrics.jsonl, the first two log lines dropped as warm-up):
  1 process          all cores in one process (the default)
  N ranks (--nproc)  torchrun on this machine, gloo on the CPU (NCCL on GPUs), cores shared out
and, in this process, the mean step time of ``gan_step`` on plain modules vs DDP-wrapped ones in a
one-rank process group: the wrapper's own overhead, with no peer to wait for. On a 2-core CPU,
2 ranks cannot be faster than one process that already uses both cores: they split the same
cores and add a gradient all-reduce per step. The point of many ranks is many devices.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegan.config import resolve  # noqa: E402
from facegan.device import pick_device  # noqa: E402
from facegan.models.dcgan import build  # noqa: E402
from facegan.train import loss  # noqa: E402
from facegan.train.loop import gan_step, optimizers  # noqa: E402


def cpu_flags() -> str:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "?"
    return ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none"


def train_rate(preset: str, batch: int, images: int, ranks: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "facegan", "train", "procedural:2048", "--preset", preset, "--recipe", "classic",
               "--batch", str(batch), "--max-images", str(images), "--out", str(out), "--no-progress", "--log-every", "5",
               "--sample-every", "1000000", "--ckpt-every", "1000000", "--device", device]
        if ranks > 1:
            cmd += ["--nproc", str(ranks)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [r["img_per_s"] for r in recs if "img_per_s" in r][2:]
        return sum(rates) / len(rates)


def wrapper_overhead(preset: str, batch: int, device: torch.device, steps: int = 30) -> tuple[float, float]:
    """Mean ms per gan_step: plain modules, then DDP modules in a 1-rank group (gloo; NCCL on CUDA)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    cfg = resolve(preset, recipe="classic", batch=batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = []
    for wrapped in (False, True):
        torch.manual_seed(0)
        G, D = (net.to(device) for net in build(cfg.model))
        opt_g, opt_d = optimizers(G, D, cfg, device)
        ids = [device.index or 0] if device.type == "cuda" else None
        Gr, Dr = (DDP(G, device_ids=ids, broadcast_buffers=False), DDP(D, device_ids=ids, broadcast_buffers=False)) if wrapped else (G, D)
        gen = torch.Generator(device).manual_seed(1)
        real = torch.rand(batch, cfg.model.channels, cfg.model.res, cfg.model.res, device=device) * 2 - 1
        times = []
        for i in range(steps + 3):
            z = torch.randn(batch, cfg.model.z_dim, generator=gen, device=device)
            sync()
            t = time.perf_counter()
            gan_step(Gr, Dr, opt_g, opt_d, real, z, loss.d_targets(batch, gen, device), D_frozen=D)
            sync()
            if i >= 3:
                times.append(time.perf_counter() - t)
        out.append(1000 * sum(times) / len(times))
    dist.destroy_process_group()
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per rank)")
    a = ap.parse_args()
    device = pick_device(a.device)
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, CPU flags {cpu_flags()}, torch {torch.__version__}, "
          f"preset {a.preset}, global batch {a.batch}, {a.images} images per run, fp32 or bf16 per --precision auto")
    one = train_rate(a.preset, a.batch, a.images, 1, a.device)
    many = train_rate(a.preset, a.batch, a.images, a.ranks, a.device)
    print(f"| {'setup':<34} | {'img/s':>7} | {'vs 1 process':>12} |")
    print(f"| {'-' * 34} | {'-' * 7} | {'-' * 12} |")
    print(f"| {'1 process':<34} | {one:>7.1f} | {'1.00×':>12} |")
    print(f"| {f'{a.ranks} ranks (--nproc {a.ranks}, gloo)':<34} | {many:>7.1f} | {many / one:>11.2f}× |")
    plain, wrapped = wrapper_overhead(a.preset, a.batch, device)
    print(f"\ngan_step on {device}, 1 rank, fp32, batch {a.batch}: plain {plain:.1f} ms, DDP-wrapped {wrapped:.1f} ms "
          f"({100 * (wrapped / plain - 1):+.1f} %)")


if __name__ == "__main__":
    main()
