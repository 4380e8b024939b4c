"""What the service benchmarks share: a model folder to serve, a `facegan serve` process, its memory.

The model is a freshly initialised generator of a preset (speed does not depend on training;
a fresh G draws noise, which PNG-compresses worse than faces, so encoding costs a little more
than with a trained one) packed as a model folder, with a fresh ×2 upscaler and model.onnx.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from facegan import config, export, saved
from facegan.models.dcgan import Generator
from facegan.models.srresnet import SRConfig, SRGenerator

SRC = str(Path(__file__).resolve().parents[1] / "src")


def model_folder(out: Path, preset: str = "dcgan64", onnx: bool = True) -> Path:
    """A model folder of a fresh ``preset`` generator (seeded, so every run serves the same weights)."""
    torch.manual_seed(0)
    arch = config.resolve(preset).model
    G = Generator(arch).eval()
    SR = SRGenerator(SRConfig(scale=2)).eval()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(out / saved.WEIGHTS))
    save_file({k: v.contiguous() for k, v in SR.state_dict().items()}, str(out / saved.UPSCALER_WEIGHTS))
    info = {"format": saved.FORMAT, "architecture": arch.to_dict(), "preset": preset, "recipe": "fresh weights (benchmark)",
            "generator": "G", "step": 0, "images": 0, "data": None, "metrics": {}, "upscaler": SR.cfg.to_dict(),
            "onnx": saved.ONNX if onnx else None}
    if onnx:
        export.export_onnx(G, out / saved.ONNX)
    (out / saved.CONFIG).write_text(json.dumps(info, indent=2))
    return out


class Server:
    """``python -m facegan serve FOLDER --port 0 ARGS…`` in its own process; ``url`` once it listens."""

    def __init__(self, folder: Path, *args: str, log: Path | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log_path = log or folder / "server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "facegan", "serve", str(folder), "--port", "0", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            m = re.search(r"on (http://[\d.]+:\d+)", self.log_path.read_text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("the server did not start within 120 s")

    def rss_mb(self) -> float:
        """The server's resident memory now, MiB (Linux /proc)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code
