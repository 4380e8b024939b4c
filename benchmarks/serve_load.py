"""Load on `facegan serve`: 10,000 requests, 20 % of them invalid, from a separate client process.

    python benchmarks/serve_load.py                     # dcgan64, 10,000 requests, 16 at a time
    python benchmarks/serve_load.py --requests 2000 --concurrency 32

The server runs in its own process (`python -m facegan serve`, default limits) on loopback; this
script is the client: asyncio + httpx, ``--concurrency`` requests in flight at all times. The
mix, drawn with a fixed seed:

    valid (80 %)   generate {seed, n ∈ 1, 2, 4} as json (65 %), interpolate 8 frames gif (10 %),
                   upscale a 64² PNG (5 %)
    invalid (20 %) bad JSON, n too large, negative seeds, uploads over the 10 MiB limit (5 % each)

Pass/fail, printed: no 5xx at all; every invalid request answered 4xx; every valid one 2xx (503
"busy" would be counted and shown); server RSS growth from after a warm-up to the end < 100 MB.
Also latency p50/p99 (valid requests), requests/s and faces/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch
from machine import describe
from served import Server, model_folder

from facegan import viz

KINDS = [("generate", 65), ("interpolate", 10), ("upscale", 5), ("bad_json", 5), ("n_too_large", 5), ("negative_seed", 5),
         ("oversized_upload", 5)]
INVALID = {"bad_json", "n_too_large", "negative_seed", "oversized_upload"}


def plan(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    names, weights = zip(*KINDS)
    out = []
    for kind in rng.choices(names, weights, k=n):
        args = {"seed": rng.randrange(2**32), "n": rng.choice((1, 2, 4))}
        out.append((kind, args))
    return out


async def one(client: httpx.AsyncClient, kind: str, a: dict, face_png: bytes, oversized: bytes) -> tuple[int, float, int]:
    """(status, seconds, faces delivered) of one request."""
    t = time.perf_counter()
    faces = 0
    if kind == "generate":
        r = await client.post("/v1/generate", json={"seed": a["seed"], "n": a["n"]})
        faces = a["n"] if r.status_code == 200 else 0
    elif kind == "interpolate":
        r = await client.post("/v1/interpolate", json={"seeds": [a["seed"], a["seed"] ^ 1], "frames": 8})
        faces = 8 if r.status_code == 200 else 0
    elif kind == "upscale":
        r = await client.post("/v1/upscale", content=face_png, headers={"content-type": "image/png"})
    elif kind == "bad_json":
        r = await client.post("/v1/generate", content=b'{"seed": 1, "n": ', headers={"content-type": "application/json"})
    elif kind == "n_too_large":
        r = await client.post("/v1/generate", json={"seed": a["seed"], "n": 65 + a["n"]})
    elif kind == "negative_seed":
        r = await client.post("/v1/generate", json={"seeds": [a["seed"], -1 - a["seed"] % 1000]})
    else:
        try:
            r = await client.post("/v1/upscale", content=oversized, headers={"content-type": "image/png"})
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            return -1, time.perf_counter() - t, 0  # the server closed the socket instead of answering
    return r.status_code, time.perf_counter() - t, faces


async def drive(url: str, jobs: list[tuple[str, dict]], concurrency: int) -> list[tuple[str, int, float, int]]:
    face_png = viz.encode_png((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    oversized = b"\x89PNG" + b"\0" * (10 << 20)
    results: list[tuple[str, int, float, int]] = []
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                kind, a = queue.get_nowait()
                status, seconds, faces = await one(client, kind, a, face_png, oversized)
                results.append((kind, status, seconds, faces))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dcgan64")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runtime", default="torch", choices=("torch", "onnx"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="facegan-load-") as tmp:
        folder = model_folder(Path(tmp) / "model", args.preset, onnx=args.runtime == "onnx")
        server = Server(folder, "--runtime", args.runtime)
        try:
            asyncio.run(drive(server.url, plan(200, seed=1), args.concurrency))  # warm-up: allocator, caches, thread pool
            rss0 = server.rss_mb()
            jobs, results, trail = plan(args.requests), [], []
            t = time.perf_counter()
            for part in range(5):  # RSS after each fifth: a leak keeps climbing, caches level off
                results += asyncio.run(drive(server.url, jobs[part * len(jobs) // 5:(part + 1) * len(jobs) // 5], args.concurrency))
                trail.append(server.rss_mb())
            wall = time.perf_counter() - t
            rss1 = trail[-1]
        finally:
            code = server.stop()
        log_lines = sum(1 for line in server.log_path.read_text().splitlines() if " ms" in line)
    by_kind = Counter((k, s) for k, s, _, _ in results)
    fivexx = sum(n for (_, s), n in by_kind.items() if s >= 500 or s == -1)
    invalid_not_4xx = sum(n for (k, s), n in by_kind.items() if k in INVALID and not 400 <= s < 500)
    valid_not_2xx = sum(n for (k, s), n in by_kind.items() if k not in INVALID and not 200 <= s < 300)
    lat = sorted(sec for k, _, sec, _ in results if k not in INVALID)
    faces = sum(f for *_, f in results)
    print(describe(torch.device("cpu")))
    print(f"# python benchmarks/serve_load.py --preset {args.preset} --requests {args.requests} --concurrency {args.concurrency} "
          f"--runtime {args.runtime}")
    print("\n| kind | status: count |\n|---|---|")
    for kind, _ in KINDS:
        print(f"| {kind} | " + ", ".join(f"{s}: {n}" for (k, s), n in sorted(by_kind.items()) if k == kind) + " |")
    print("\n| requests | wall s | req/s | faces/s | p50 ms | p99 ms | 5xx or dropped | invalid not 4xx | valid not 2xx | "
          "RSS MiB before → after | growth | server exit | log lines |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    q = statistics.quantiles(lat, n=100)
    print(f"| {len(results):,} | {wall:.1f} | {len(results) / wall:.1f} | {faces / wall:.1f} | {statistics.median(lat) * 1000:.0f} | "
          f"{q[98] * 1000:.0f} | {fivexx} | {invalid_not_4xx} | {valid_not_2xx} | {rss0:.0f} → {rss1:.0f} | {rss1 - rss0:+.0f} MiB "
          f"({'PASS' if rss1 - rss0 < 100 else 'FAIL'}) | {code} | {log_lines:,} |")
    print(f"\nRSS MiB after each fifth of the requests: {' → '.join(f'{r:.0f}' for r in trail)}")
    ok = fivexx == 0 and invalid_not_4xx == 0 and valid_not_2xx == 0 and rss1 - rss0 < 100
    print(f"\n{'PASS' if ok else 'FAIL'}: 0 5xx, every invalid request 4xx, every valid one 2xx, RSS growth < 100 MB")


if __name__ == "__main__":
    main()
