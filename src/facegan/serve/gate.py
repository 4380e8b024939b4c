"""What every request passes first: the API key, the body-size cap, then one log line and the counters.

A plain ASGI middleware (no BaseHTTPMiddleware), outermost in the app, so it sees every request —
unknown paths, /docs and errors included — and can refuse an oversized body while it streams in,
before it is held in memory: a declared Content-Length over the cap is refused at once, an
undeclared (chunked) one as soon as the bytes read pass it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException

from facegan.serve.stats import Stats

log = logging.getLogger("facegan.serve")

OPEN_PATHS = ("/healthz",)  # no key needed: load balancers and container health checks probe it
REALM = 'Basic realm="facegan", charset="UTF-8"'

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Gate:
    """Auth, body cap, access log and request metrics around ``app``."""

    def __init__(self, app: Callable, stats: Stats, api_key: str | None, body_cap: Callable[[str], int],
                 known: frozenset[str] = frozenset()) -> None:
        self.app, self.stats, self.body_cap, self.known = app, stats, body_cap, known  # known: the app's route paths
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]

        async def send_seen(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await _reply(send_seen, *refusal)
                return
            await self.app(scope, self._capped(scope, receive), send_seen)
        finally:
            route = getattr(scope.get("route"), "path", None) or (scope["path"] if scope["path"] in self.known else "unmatched")
            ms = (time.perf_counter() - t0) * 1000
            self.stats.request(scope["method"], route, status[0] or 500, ms / 1000)
            log.info("%s %s %d %.1f ms", scope["method"], scope["path"][:200], status[0] or 500, ms)

    def _refuse(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) when the request is refused before the app sees it."""
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        if self.key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
            return 401, "this server needs its API key: header X-API-Key: KEY (or Authorization: Bearer KEY)", \
                {"www-authenticate": REALM}
        cap = self.body_cap(scope["path"])
        declared = headers.get("content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > cap):
            return 413, f"request body over {_size(cap)}", {}
        return None

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        """The key in X-API-Key, as a Bearer token, or as the password of HTTP Basic (what a browser sends)."""
        given = headers.get("x-api-key")
        auth = headers.get("authorization", b"")
        scheme, _, value = auth.partition(b" ")
        if given is None and scheme.lower() == b"bearer":
            given = value.strip()
        elif given is None and scheme.lower() == b"basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        return given is not None and hmac.compare_digest(given, self.key)

    def _capped(self, scope: Scope, receive: Receive) -> Receive:
        cap, seen = self.body_cap(scope["path"]), [0]

        async def capped() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > cap:
                    raise HTTPException(413, f"request body over {_size(cap)}")
            return message

        return capped


async def _reply(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"
