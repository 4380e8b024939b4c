"""Does a finished many-rank run exit 0 on every rank, every time? (issue #27)

    python benchmarks/dist_exit.py [--resumes 50] [--ranks 2] [--launcher nproc|torchrun]

One fresh run of the `quick` preset, then RESUMES resumes of it, each adding one short budget and
run to its end through ``facegan train --nproc N`` (or ``torchrun --standalone``). A resume counts
as clean when the launcher exits 0 within TIMEOUT_S and no rank printed "terminate called" (the
C++ abort seen at interpreter shutdown before the fix). Run it alone: it is the exits under real
timing that matter. Prints one table row; the failures, if any, with the end of their stderr.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

STEP_IMAGES = 640  # each invocation adds 10 steps of batch 64
TIMEOUT_S = 180  # one invocation takes ≈7 s on 2 cores; longer is a hang


def command(launcher: str, ranks: int, args: list[str]) -> list[str]:
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m", "facegan", *args]
    return [sys.executable, "-m", "facegan", *args, "--nproc", str(ranks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resumes", type=int, default=50)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--launcher", choices=("nproc", "torchrun"), default="nproc")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    print(describe(torch.device("cpu")))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        fresh = ["train", "--preset", "quick", "--batch", "64", "--device", "cpu", "--no-progress", "--out", str(run)]
        failures: list[tuple[int, int, str]] = []
        t0 = time.time()
        for i in range(a.resumes + 1):
            args = fresh if i == 0 else ["train", "--resume", str(run), "--no-progress"]
            try:
                p = subprocess.run(command(a.launcher, a.ranks, [*args, "--max-images", str(STEP_IMAGES * (i + 1))]),
                                   capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired as e:  # a rank hung at exit: a failure too (the launcher is killed)
                err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
                failures.append((i, -9, f"hung: no exit after {TIMEOUT_S} s; {err[-200:]}"))
                continue
            if p.returncode != 0 or "terminate called" in p.stderr:
                failures.append((i, p.returncode, p.stderr.strip()[-300:]))
        seconds = time.time() - t0
    resumes_failed = sum(1 for i, _, _ in failures if i > 0)
    print("| launcher | ranks | fresh run | resumes | clean resumes | failed | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {a.launcher} | {a.ranks} | {'exit 0' if not any(i == 0 for i, _, _ in failures) else 'FAILED'} | {a.resumes} "
          f"| {a.resumes - resumes_failed} | {resumes_failed} | {seconds:.0f} |")
    for i, code, err in failures:
        print(f"  invocation {i}: exit {code}: {err!r}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
