"""`facegan serve`: the REST service and web studio (facegan.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facegan import checks
from facegan.cli.app import app
from facegan.errors import FaceganError
from facegan.identity import SAME_PERSON, check_privacy
from facegan.serve.limits import Limits

SERVE_HELP = """Serve a trained generator over HTTP: a REST API and a web studio (needs facegan\\[serve]).

\b
Routes:
  GET  /                 the web studio: browse seeds, open and download faces, interpolate
  POST /v1/generate      faces by seed: {"seed": 7, "n": 16} or {"seeds": [3, 9]}; "truncation",
                         "format" png|webp|jpeg, "as" json|grid|zip, "upscale"; names model sha256 and (seed, index);
                         "filter" face|private keeps only single faces (private: nobody from training)
  POST /v1/interpolate   a walk: {"seeds": [3, 17, 42], "frames": 60} → gif | mp4 | png strip | json frames
  POST /v1/upscale       an uploaded image (body or multipart field "image") → upscaled PNG (needs an upscaler)
  GET  /v1/model         sha256, architecture, recipe, measured FID/KID, model card, limits
  GET  /healthz          liveness (never needs the API key)
  GET  /metrics          Prometheus: requests by route and status, latency, batch sizes, queue depth
  GET  /docs             the API reference (offline); /openapi.json the schema

Concurrent generate requests are micro-batched into one forward pass; a full queue answers 503 with
Retry-After. Binds 127.0.0.1 unless --host says otherwise. Ctrl-C stops cleanly.
"""


@app.command(help=SERVE_HELP)
def serve(
    source: Path = typer.Argument(..., help="Run folder (latest checkpoint), checkpoint file or model folder (facegan export)."),
    upscaler: Optional[Path] = typer.Option(None, "--upscaler", help="Upscaler run or model folder for /v1/upscale and \"upscale\": true "
                                            "(default: the model folder's own upscaler, if it ships one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 opens it to the network (warned)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, named in the first log line)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch (eager) or onnx (ONNX Runtime; needs facegan[onnx])."),
    device: str = typer.Option("auto", "--device", help="auto (cuda → mps → cpu), cpu, cuda, mps (the torch runtime)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FACEGAN_API_KEY", show_envvar=True,
                                          help="Require this key (header X-API-Key, Bearer token, or a browser's Basic password) on every route but /healthz."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow browser pages from this origin to call the API (repeatable; none by default)."),
    max_n: int = typer.Option(Limits.max_n, "--max-n", help="Most faces per generate request."),
    max_frames: int = typer.Option(Limits.max_frames, "--max-frames", help="Most frames per interpolate request."),
    max_batch: int = typer.Option(Limits.max_batch, "--max-batch", help="Most faces per forward pass (micro-batching)."),
    max_wait_ms: float = typer.Option(Limits.max_wait_ms, "--max-wait-ms", help="How long a request waits for others to share its forward pass."),
    max_queue: int = typer.Option(Limits.max_queue, "--max-queue", help="Faces waiting for the generator before requests get 503."),
    max_upload_mb: float = typer.Option(Limits.max_upload_mb, "--max-upload-mb", help="Largest /v1/upscale upload, MiB."),
    max_upscales: int = typer.Option(Limits.max_upscales, "--max-upscales", help="Upscale jobs running or waiting before 503 (each holds its image in memory)."),
    max_connections: int = typer.Option(1024, "--max-connections", help="Open connections before new ones get 503."),
    privacy_check: bool = typer.Option(False, "--privacy-check", help="Load the training photos' identities at start, so generate "
                                       "requests can ask for \"filter\": \"private\" (nobody from the training photos; needs facegan[anonymize])."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="--privacy-check: the training photos, where the model's own record of them is not on this machine."),
    privacy: float = typer.Option(SAME_PERSON, "--privacy", help="--privacy-check: the identity distance to every training face a face needs (dlib's same-person threshold)."),
) -> None:
    from facegan.serve.run import serve as run_serve

    checks.integer("--port", port, 0, 65535)
    checks.integer("--max-connections", max_connections, 1, 1_000_000)
    check_privacy(privacy)
    if not privacy_check and (train_data is not None or privacy != SAME_PERSON):
        raise FaceganError("--train-data and --privacy go with --privacy-check (they set up \"filter\": \"private\")")
    limits = Limits(max_n=max_n, max_frames=max_frames, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                    max_upload_mb=max_upload_mb, max_upscales=max_upscales).check()
    run_serve(source, upscaler, host=host, port=port, runtime=runtime, device=device, limits=limits, api_key=api_key or None,
              cors_origins=tuple(cors_origin), max_connections=max_connections, privacy_check=privacy_check,
              train_data=train_data, privacy=privacy)
