"""Start the service: check every option, load the model, bind the socket, then hand it to uvicorn.

Binding here (not inside uvicorn) turns "address already in use" into one error line before
anything is served, and lets ``--port 0`` pick a free port that the first log line names.
Ctrl-C (or SIGTERM) lets uvicorn finish the requests in flight, then the app's lifespan stops
the batcher, the log says "stopped" and the command exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

from facegan.errors import FaceganError
from facegan.identity import SAME_PERSON
from facegan.serve.limits import Limits

ALL_INTERFACES = ("0.0.0.0", "::", "")
log = logging.getLogger("facegan.serve")


def require_extra() -> None:
    """A one-line error naming the extra when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise FaceganError(f"facegan serve needs: pip install 'facegan[serve]' (missing {e.name})") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = "is in use; pick another with --port (or --port 0 for any free one)" if e.errno == 98 else f"cannot be bound ({e.strerror})"
        raise FaceganError(f"{host}:{port} {why}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell a user who opens the service to the network, or None on a loopback-only bind."""
    if host not in ALL_INTERFACES:
        return None
    return (f"warning: listening on all interfaces ({host or '0.0.0.0'}): anyone who can reach this machine can use the service"
            + ("" if api_key else "; give --api-key (or $FACEGAN_API_KEY) to require a key"))


def serve(source: str | Path, upscaler: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          runtime: str = "torch", device: str = "auto", limits: Limits = Limits(), api_key: str | None = None,
          cors_origins: tuple[str, ...] = (), max_connections: int = 1024, privacy_check: bool = False,
          train_data: str | Path | None = None, privacy: float = SAME_PERSON) -> None:
    """Serve ``source`` until interrupted; ``privacy_check`` loads the training identities that
    ``"filter": "private"`` needs (serve/filters.py) before the socket is served."""
    require_extra()
    limits.check()
    import uvicorn

    from facegan.device import pick_device
    from facegan.serve.app import create_app
    from facegan.serve.engine import load_model
    from facegan.serve.filters import Filters

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    sock = bind(host, port)
    filters = Filters.load(source, train_data, privacy) if privacy_check else None
    model = load_model(source, upscaler, runtime, pick_device(device))
    try:
        app = create_app(model, limits, api_key=api_key, cors_origins=cors_origins, filters=filters)
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        if (warning := exposure_warning(host, api_key)) is not None:
            log.warning(warning)
        a = model.G.cfg
        log.info("serving %s (%d² faces, z = %d, %s, sha256 %s…) on http://%s:%d — studio at /, API at /docs; Ctrl-C stops",
                 model.info.get("preset") or "model", a.res, a.z_dim, model.runtime, model.sha256[:12], url_host, bound_port)
        config = uvicorn.Config(app, log_level="warning", access_log=False, limit_concurrency=max_connections,
                                timeout_graceful_shutdown=10, lifespan="on")
        # uvicorn finishes the requests in flight on SIGINT/SIGTERM, then re-raises the signal: both end here
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        log.info("stopped")
    finally:
        sock.close()
        model.close()
