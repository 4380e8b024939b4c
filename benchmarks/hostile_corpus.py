"""Run facegan against a large hostile corpus — every case a real process — and count what went wrong.

    python benchmarks/hostile_corpus.py                          # 1,200 files, 120 checkpoints: ~6 min on 2 cores
    python benchmarks/hostile_corpus.py --files 200 --checkpoints 30 --kills 2   # a quick look

The corpus is generated into a temporary folder by the same code the reliability tests use
(tests/hostile.py): corrupted images in every format, the special files a real folder can hold
(dangling links, link loops, FIFOs, a link to /dev/zero, 65 MB sparse files, strips, bombs),
zips with encrypted / deflate64 / bomb / bad-CRC members, doctored checkpoints (named cases,
random byte flips, random header edits, lying tensor tables), bad option values, SIGKILLs at
random moments of ``prepare`` and ``train`` (EMA on), and a file-size limit mid-run.

For each category it prints: cases; processes started; crashes (an exit code outside the
allowed set, or death by a signal we did not send); tracebacks; failures that were not exactly
one ``error:`` line; leaks (temporary files left once the next run has swept, processes alive
after their case); inputs not accounted for (a file neither packed nor named as skipped); and the
largest peak RSS of one process. "Done" for issue #14 is 0 crashes, 0 tracebacks and 0 leaks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile-input generators shared with the tests
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from hostile import (BAD_VALUES, FORMATS, checkpoint_variants, flip_bytes, good_image, hostile_zip,  # noqa: E402
                     mutate, safetensors_bytes, special_files)
from machine import describe  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), "FACEGAN_DEBUG": ""}
PROGRESS = re.compile(r"\[\d\d:\d\d|\d%\|")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    rss_mb: float
    leaked: int  # processes of this case still alive after it ended
    signalled: bool = False


@dataclass
class Tally:
    cases: int = 0
    processes: int = 0
    crashes: int = 0
    tracebacks: int = 0
    not_one_line: int = 0
    leaks: int = 0
    unaccounted: int = 0
    rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, o: Outcome, allowed: set[int], what: str, expect_error: bool = False) -> None:
        self.processes += 1
        self.rss_mb = max(self.rss_mb, o.rss_mb)
        self.leaks += o.leaked
        if "Traceback" in o.stderr:
            self.tracebacks += 1
            self._note(what, o)
        if o.signalled or o.code not in allowed:
            self.crashes += 1
            self._note(what, o)
        elif o.code != 0 or expect_error:
            lines = [x for x in re.split(r"[\r\n]", o.stderr) if x.strip() and not PROGRESS.search(x)
                     and not x.startswith(("warning: ", "skipped "))]
            if not (len(lines) == 1 and lines[0].startswith("error: ")):
                self.not_one_line += 1
                self._note(what, o)

    def _note(self, what: str, o: Outcome) -> None:
        if len(self.notes) < 5:
            tail = " | ".join(o.stderr.strip().splitlines()[-2:])[:300]
            self.notes.append(f"{what}: exit {o.code}: {tail}")


# Peak RSS is read through this tiny parent: a child forked from the benchmark itself would report
# the benchmark's own RSS (Linux carries the pre-exec high-water mark into the child's ru_maxrss).
PEAK = ("import os, resource, subprocess, sys\n"
        "code = subprocess.call(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
        "sys.exit(code if code >= 0 else 128 - code)\n")


def run(args: list[object], cwd: Path, timeout: float = 300, preexec=None) -> Outcome:
    """One facegan process: exit code, output, its own peak RSS, and any process of it left alive afterwards."""
    tag = uuid.uuid4().hex
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        proc = subprocess.Popen([sys.executable, "-c", PEAK, rss.name, sys.executable, "-m", "facegan", *map(str, args)],
                                cwd=cwd, env={**ENV, "FACEGAN_CASE": tag}, stdout=out, stderr=err, text=True,
                                preexec_fn=preexec, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        peak_kb = float(rss.read() or 0)
    leaked = _kill_tagged(tag, grace_s=5.0)
    out.seek(0), err.seek(0)
    signalled = code > 128 and code - 128 in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL, signal.SIGFPE)
    return Outcome(code, out.read(), err.read(), peak_kb / 1024, leaked, signalled)


def _tagged(tag: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"FACEGAN_CASE={tag}".encode() in (entry / "environ").read_bytes().split(b"\0") and \
                        (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return pids


def _kill_tagged(tag: str, grace_s: float) -> int:
    """Processes of a finished (or killed) case still alive after ``grace_s``: counted, then killed."""
    deadline = time.time() + grace_s
    while (alive := _tagged(tag)) and time.time() < deadline:
        time.sleep(0.2)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(alive)


def temporaries(folder: Path) -> int:
    """Temporary files left in ``folder``: ours (``.NAME.HOST-PID-XXXX.tmp``) or any library's ``.tmpXXXX``."""
    return sum(1 for p in folder.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".tmp"))


# ---- the corpus ---------------------------------------------------------------------------------

def image_folder(folder: Path, n: int, rng: random.Random) -> int:
    """``n`` entries: mostly corrupted images of every format, plus every kind of special file."""
    specials = 0
    k = 0
    while specials + k < n:
        if k % 40 == 0:
            specials += len(special_files(folder / f"special{k // 40}", rng))
        fmt = rng.choice(FORMATS)
        data = good_image(rng, fmt, (rng.randint(16, 96), rng.randint(16, 96)))
        sub = folder / f"batch{k // 100}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{k:05d}.{fmt.lower()}").write_bytes(mutate(data, rng) if rng.random() < 0.85 else data)
        k += 1
    return specials + k


def checkpoint_corpus(valid: Path, n: int, rng: random.Random) -> dict[str, bytes]:
    """Named doctored variants, then random byte flips, header edits and lying tensor tables, ``n`` in all."""
    tensors = load_file(str(valid))
    with safe_open(str(valid), "pt") as f:
        meta = json.loads(f.metadata()["facegan"])
    cases = {name: data for name, (data, _) in checkpoint_variants(tensors, meta).items()}
    raw = valid.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    table = json.loads(raw[8 : 8 + header_len])
    paths = [("config", k) for k in meta["config"]] + [("config", "model", k) for k in meta["config"]["model"]]
    paths += [(k,) for k in meta]
    junk = [None, True, -1, 0, 2**70, 1e308, float("nan"), "x", [], {}, [1, 2], {"a": 1}]
    i = 0
    while len(cases) < n:
        kind = i % 3
        if kind == 0:
            cases[f"flip {i}"] = flip_bytes(raw, rng, rng.randint(1, 64))
        elif kind == 1:
            doctored = json.loads(json.dumps(meta))
            path = rng.choice(paths)
            node = doctored
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = rng.choice(junk)
            cases[f"header {'.'.join(path)} {i}"] = safetensors_bytes(tensors, doctored)
        else:
            name = rng.choice(sorted(k for k in table if k != "__metadata__"))
            lied = {**table, name: {"dtype": rng.choice(["F32", "F64", "I64", "U8", "XX"]),
                                    "shape": [rng.randint(0, 9) for _ in range(rng.randint(0, 4))],
                                    "data_offsets": sorted([rng.randint(0, 1 << 40), rng.randint(0, 1 << 40)])}}
            body = json.dumps(lied).encode()
            cases[f"table {name} {i}"] = struct.pack("<Q", len(body)) + body + raw[8 + header_len :]
        i += 1
    return cases


# ---- the categories -----------------------------------------------------------------------------

def files_category(work: Path, n: int, rng: random.Random, upscaler: Path) -> Tally:
    t = Tally()
    folder = work / "photos"
    total = image_folder(folder, n, rng)
    t.cases = total
    o = run(["prepare", folder, "--res", "32", "--out", work / "photos.npy", "--workers", "2"], work)
    t.add(o, {0}, "prepare photos")
    if o.code == 0:
        manifest = json.loads((work / "photos.npy.json").read_text())
        t.unaccounted += total - manifest["count"] - manifest["skipped_count"]
    o = run(["upscale", folder, "--model", upscaler, "--out", work / "up"], work)
    t.add(o, {0}, "upscale photos")
    written = sum(1 for _ in (work / "up").rglob("*.png")) if (work / "up").exists() else 0
    t.unaccounted += total - written - sum(1 for line in o.stderr.splitlines() if line.startswith("skipped "))
    t.add(run(["train", folder, "--preset", "quick", "--batch", "8", "--max-images", "16", "--out", work / "run",
               "--no-progress"], work), {0}, "train on photos")
    t.leaks += temporaries(work)
    return t


def zips_category(work: Path, n_zips: int, rng: random.Random) -> Tally:
    t = Tally()
    for z in range(n_zips):
        path = work / f"z{z}.zip"
        bad = hostile_zip(path, rng)
        t.cases += len(bad) + 4
        o = run(["prepare", path, "--res", "32", "--out", work / f"z{z}.npy"], work)
        t.add(o, {0}, f"zip {z}")
        if o.code == 0:
            m = json.loads((work / f"z{z}.npy.json").read_text())
            t.unaccounted += len(bad) + 4 - m["count"] - m["skipped_count"]
    t.leaks += temporaries(work)
    return t


def lone_special_category(work: Path, rng: random.Random, jobs: int) -> Tally:
    t = Tally()
    names = list(special_files(work / "probe", rng))
    shutil.rmtree(work / "probe")

    def one(name: str) -> Outcome:
        folder = work / name.replace(".", "_")
        made = special_files(folder, random.Random(7))
        for other in made:
            if other != name:
                (folder / other).unlink()
        return run(["prepare", folder, "--res", "32", "--out", work / f"{folder.name}.npy"], work, timeout=120)

    with ThreadPoolExecutor(jobs) as pool:
        for name, o in zip(names, pool.map(one, names)):
            t.cases += 1
            t.add(o, {2}, name, expect_error=True)
    t.leaks += temporaries(work)
    return t


def checkpoints_category(work: Path, cases: dict[str, bytes], jobs: int, command: str) -> Tally:
    t = Tally(cases=len(cases))
    allowed = {"generate": {0, 2}, "resume": {0, 2, 3}, "upscale": {2}}[command]

    def one(item: tuple[int, tuple[str, bytes]]) -> Outcome:
        i, (_, data) = item
        run_dir = work / f"c{i}"
        ck = run_dir / "checkpoints" / "ckpt-00000002.safetensors"
        ck.parent.mkdir(parents=True, exist_ok=True)
        ck.write_bytes(data)
        args = {"generate": ["generate", ck, "--grid", run_dir / "g.png"],
                "resume": ["train", "--resume", run_dir, "--max-images", "64", "--no-progress"],
                "upscale": ["upscale", work, "--model", ck, "--out", run_dir / "up"]}[command]
        return run(args, work, timeout=120)

    with ThreadPoolExecutor(jobs) as pool:
        for (name, _), o in zip(cases.items(), pool.map(one, enumerate(cases.items()))):
            t.add(o, allowed, name)
    t.leaks += temporaries(work)
    return t


def values_category(work: Path, valid: Path, jobs: int) -> Tally:
    t = Tally(cases=len(BAD_VALUES))
    (work / "afile").write_text("x")

    def one(case: tuple[list[str], str]) -> Outcome:
        args = [a.format(tmp=work, ckpt=valid) for a in case[0]]
        return run(args, work, timeout=120)

    with ThreadPoolExecutor(jobs) as pool:
        for (args, needle), o in zip(BAD_VALUES, pool.map(one, BAD_VALUES)):
            t.add(o, {2}, " ".join(args), expect_error=True)
            if needle not in o.stderr:
                t.notes.append(f"{' '.join(args)}: expected {needle!r}")
    t.leaks += temporaries(work)
    return t


def kills_category(work: Path, kills: int, rng: random.Random) -> Tally:
    """SIGKILL ``prepare`` (2 workers) and ``train --recipe b16-ema`` at random moments; then let them finish."""
    t = Tally()
    photos = work / "photos"
    photos.mkdir()
    jpegs = [good_image(rng, "JPEG", (640, 640)) for _ in range(4)]
    for i in range(800):
        (photos / f"p{i:03d}.jpg").write_bytes(jpegs[i % 4])
    jobs = [("prepare", ["prepare", photos, "--res", "256", "--out", work / "p.npy", "--workers", "2"], (0.3, 2.5)),
            ("train", ["train", "procedural:256", "--preset", "quick", "--recipe", "b16-ema", "--out", work / "run",
                       "--max-images", str(16 * 60), "--ckpt-every", "5", "--no-progress"], (1.0, 4.0))]
    for what, args, (lo, hi) in jobs:
        for k in range(kills):
            t.cases += 1
            tag = uuid.uuid4().hex
            resume = what == "train" and any((work / "run" / "checkpoints").glob("ckpt-*.safetensors"))
            argv = ["train", "--resume", work / "run", "--max-images", str(16 * 60), "--no-progress"] if resume else args
            proc = subprocess.Popen([sys.executable, "-m", "facegan", *map(str, argv)], cwd=work,
                                    env={**ENV, "FACEGAN_CASE": tag}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(lo, hi))
            proc.kill()
            _, err = proc.communicate()
            t.processes += 1
            t.leaks += _kill_tagged(tag, grace_s=5.0)  # decode workers must die with their parent
            if b"Traceback" in err:
                t.tracebacks += 1
        resume = what == "train" and any((work / "run" / "checkpoints").glob("ckpt-*.safetensors"))
        finish = ["train", "--resume", work / "run", "--max-images", str(16 * 60), "--no-progress"] if resume else args
        t.add(run(finish, work), {0}, f"{what} after kills")
        t.leaks += temporaries(work)  # the finishing run swept every killed writer's temporary
    return t


def disk_category(work: Path) -> Tally:
    """A write refused by the OS mid-run (ulimit -f → EFBIG), then a resume once the limit is gone."""
    t = Tally(cases=1)
    run_dir = work / "run"
    base = ["train", "procedural:256", "--preset", "quick", "--batch", "16", "--ckpt-every", "2", "--no-progress"]
    t.add(run([*base, "--out", run_dir, "--max-images", "32"], work), {0}, "first run")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    o = run(["train", "--resume", run_dir, "--max-images", "64", "--no-progress"], work, preexec=limit)
    t.add(o, {2}, "resume under ulimit -f 1 MB", expect_error=True)
    if "is intact" not in o.stderr:
        t.notes.append("the disk error did not name the intact checkpoint")
    t.leaks += temporaries(work)
    t.add(run(["train", "--resume", run_dir, "--max-images", "64", "--no-progress"], work), {0}, "resume after")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1200, help="entries in the hostile image folder (≥ 1,000 for issue #14)")
    ap.add_argument("--checkpoints", type=int, default=120, help="doctored checkpoints (≥ 100 for issue #14)")
    ap.add_argument("--zips", type=int, default=5)
    ap.add_argument("--kills", type=int, default=4, help="SIGKILLs of prepare and of train each")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (each is its own process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(describe(torch.device("cpu")))
    t0 = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="facegan-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["FACEGAN_CACHE"] = ENV["FACEGAN_CACHE"] = str(work / "cache")
    try:
        base = work / "base"
        base.mkdir()
        gan, sr = base / "gan", base / "sr"
        for argv in (["train", "procedural:64", "--preset", "quick", "--batch", "16", "--max-images", "32", "--out", gan,
                      "--no-progress"],
                     ["train-sr", "procedural:64", "--hr-res", "32", "--scale", "2", "--width", "8", "--blocks", "1",
                      "--max-images", "16", "--out", sr, "--no-progress"]):
            o = run(argv, base)
            if o.code:
                sys.exit(f"could not make the base models: {o.stderr}")
        valid = sorted((gan / "checkpoints").glob("ckpt-*.safetensors"))[-1]
        ckpts = checkpoint_corpus(valid, args.checkpoints, rng)
        named = dict(list(ckpts.items())[:28])
        results: dict[str, Tally] = {}
        steps = [
            ("image files: prepare, upscale, train", lambda w: files_category(w, args.files, rng, sr)),
            ("zip members", lambda w: zips_category(w, args.zips, rng)),
            ("a special file alone", lambda w: lone_special_category(w, rng, args.jobs)),
            ("checkpoints: generate", lambda w: checkpoints_category(w, ckpts, args.jobs, "generate")),
            ("checkpoints: train --resume", lambda w: checkpoints_category(w, named, args.jobs, "resume")),
            ("checkpoints: upscale --model", lambda w: checkpoints_category(w, named, args.jobs, "upscale")),
            ("bad option values", lambda w: values_category(w, valid, args.jobs)),
            ("SIGKILL prepare / train (EMA)", lambda w: kills_category(w, args.kills, rng)),
            ("write refused mid-run (ulimit -f)", disk_category),
        ]
        for name, fn in steps:
            folder = work / re.sub(r"\W+", "-", name)
            folder.mkdir()
            started = time.time()
            results[name] = fn(folder)
            print(f"  {name}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
        total = Tally()
        print(f"# hostile corpus, seed {args.seed}, {time.time() - t0:.0f} s wall, {args.jobs} cases at once\n")
        print("| category | cases | processes | crashes | tracebacks | not one line | leaks | unaccounted | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r.cases:,} | {r.processes} | {r.crashes} | {r.tracebacks} | {r.not_one_line} | {r.leaks} | "
                  f"{r.unaccounted} | {r.rss_mb:.0f} |")
            for f in ("cases", "processes", "crashes", "tracebacks", "not_one_line", "leaks", "unaccounted"):
                setattr(total, f, getattr(total, f) + getattr(r, f))
            total.rss_mb = max(total.rss_mb, r.rss_mb)
        print(f"| **all** | **{total.cases:,}** | {total.processes} | **{total.crashes}** | **{total.tracebacks}** | "
              f"{total.not_one_line} | **{total.leaks}** | {total.unaccounted} | {total.rss_mb:.0f} |")
        notes = [n for r in results.values() for n in r.notes]
        for n in notes[:20]:
            print(f"- {n}")
        sys.exit(1 if total.crashes + total.tracebacks + total.leaks else 0)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
