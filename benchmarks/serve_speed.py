"""Faces/s through `facegan serve` against the generator called directly, for torch and ONNX Runtime.

    python benchmarks/serve_speed.py                     # dcgan64, 2,560 faces per row
    python benchmarks/serve_speed.py --faces 5120 --concurrency 8 --n 16

Rows, one run, one after another (nothing else running):
- raw torch: ``G.sample`` in this process, batch 64 (per-face seeded latents, eval mode, uint8 out)
- raw onnx: the same latents through ONNX Runtime (the model folder's model.onnx), batch 64
- API torch / API onnx: `facegan serve --runtime …` in its own process; this process keeps
  ``--concurrency`` requests of ``--n`` faces in flight (as json: base64 PNG per face), so the
  micro-batcher merges them into passes of up to 64. Includes HTTP, JSON, PNG encoding, and
  this client's own CPU time on the same cores.
"of raw" compares each API row with its runtime's raw row; the target is ≥ 70 %.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import httpx
import torch
from machine import describe
from served import Server, model_folder

from facegan.models.dcgan import latents
from facegan.serve.engine import load_model


def raw(folder: Path, runtime: str, faces: int, batch: int = 64) -> float:
    """Faces/s of the bare render path (latents made per face, as the service makes them)."""
    m = load_model(folder, runtime=runtime)
    z_dim = m.G.cfg.z_dim
    if runtime == "torch":
        m.G.sample(batch, seed=99, batch_size=batch)  # warm-up
        t = time.perf_counter()
        m.G.sample(faces, seed=1, batch_size=batch)
    else:
        m.render(latents(batch, z_dim, 99))
        t = time.perf_counter()
        for s in range(0, faces, batch):
            m.render(latents(min(batch, faces - s), z_dim, 1, s))
    return faces / (time.perf_counter() - t)


async def api(url: str, faces: int, n: int, concurrency: int) -> float:
    todo = list(range(0, faces, n))
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async def warm() -> None:
            await client.post("/v1/generate", json={"seed": 99, "n": n})

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        t = time.perf_counter()

        async def worker() -> None:
            while todo:
                start = todo.pop()
                r = await client.post("/v1/generate", json={"seed": 1, "start": start, "n": n})
                r.raise_for_status()
                assert len(r.json()["faces"]) == n

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return faces / (time.perf_counter() - t)


def mean_batch(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    total = float(re.search(r"^facegan_batch_faces_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^facegan_batch_faces_count (\S+)", text, re.M).group(1))
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--faces", type=int, default=2560)
    ap.add_argument("--n", type=int, default=16, help="faces per request")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="facegan-speed-") as tmp:
        folder = model_folder(Path(tmp) / "model", args.preset)
        raws = {rt: raw(folder, rt, args.faces) for rt in ("torch", "onnx")}
        for rt in ("torch", "onnx"):
            rows.append((f"raw {rt}", raws[rt], "", "64"))
        for rt in ("torch", "onnx"):
            server = Server(folder, "--runtime", rt)
            try:
                rate = asyncio.run(api(server.url, args.faces, args.n, args.concurrency))
                batch = mean_batch(server.url)
            finally:
                server.stop()
            rows.append((f"API {rt}", rate, f"{rate / raws[rt]:.0%}", f"{batch:.1f}"))
    print(describe(torch.device("cpu")))
    print(f"# python benchmarks/serve_speed.py --preset {args.preset} --faces {args.faces} --n {args.n} --concurrency {args.concurrency}")
    print("\n| path | faces/s | of raw | mean faces per forward pass |\n|---|---|---|---|")
    for name, rate, of, batch in rows:
        print(f"| {name} | {rate:.1f} | {of} | {batch} |")


if __name__ == "__main__":
    main()
