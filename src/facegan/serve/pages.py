"""The two HTML pages of the service: the web studio (``/``) and the API reference (``/docs``).

Both are self-contained: no CDN, no font or script fetched from anywhere, so they work on a
machine with no internet. FastAPI's own /docs loads Swagger UI from a CDN; ours is rendered
here from the same OpenAPI schema (``/openapi.json``).
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib.resources import files
from typing import Any


@cache
def studio() -> str:
    return files("facegan.serve").joinpath("studio.html").read_text(encoding="utf-8")


EXAMPLES = {
    "/v1/generate": """curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' \\
  -d '{"seed": 7, "n": 16, "as": "grid"}' -o faces.png""",
    "/v1/interpolate": """curl -s localhost:8000/v1/interpolate -H 'Content-Type: application/json' \\
  -d '{"seeds": [3, 17, 42], "frames": 60, "loop": true}' -o walk.gif""",
    "/v1/upscale": """curl -s localhost:8000/v1/upscale -H 'Content-Type: image/png' --data-binary @face.png -o big.png""",
    "/v1/model": "curl -s localhost:8000/v1/model",
}


def api_docs(spec: dict[str, Any]) -> str:
    """Every route of ``spec`` with its summary, body fields (type, default, bounds, description) and a curl example."""
    parts = [f"<h1>{html.escape(spec['info']['title'])} API</h1>",
             f"<p>{html.escape(spec['info'].get('description', ''))} Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
             "With an API key, send it as <code>X-API-Key: KEY</code>. Errors are JSON: <code>{\"error\": \"one line\"}</code>.</p>"]
    schemas = spec.get("components", {}).get("schemas", {})
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2><p>{html.escape(op.get('summary', ''))}</p>")
            body = op.get("requestBody", {}).get("content", {})
            js = body.get("application/json", {}).get("schema")
            if js:
                parts.append(_fields(_resolve(js, schemas), schemas))
            elif body:
                parts.append(f"<p>Body: {', '.join(html.escape(k) for k in body)}</p>")
            if path in EXAMPLES:
                parts.append(f"<pre>{html.escape(EXAMPLES[path])}</pre>")
    style = ("body{font:15px/1.5 system-ui,sans-serif;max-width:920px;margin:24px auto;padding:0 16px;color:#1d2330}"
             "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e3e6ec;padding:4px 6px;text-align:left;"
             "vertical-align:top;font-size:14px}pre{background:#f3f4f7;padding:8px;overflow:auto}h2{margin-top:28px;font-size:17px}")
    return f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>facegan API</title><style>{style}</style></head>" \
           f"<body>{''.join(parts)}</body></html>"


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else schema


def _fields(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    rows = ["<table><tr><th>field</th><th>type</th><th>default</th><th>bounds</th><th>what</th></tr>"]
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(prop, schemas)
        kinds = [_resolve(p, schemas) for p in prop.get("anyOf", [prop])]
        kind = " | ".join(_kind(k) for k in kinds)
        bounds = ", ".join(f"{k} {prop_k}" for k, prop_k in _bounds(kinds))
        default = json.dumps(prop["default"]) if "default" in prop else "required"
        rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(kind)}</td><td><code>{html.escape(default)}</code></td>"
                    f"<td>{html.escape(bounds)}</td><td>{html.escape(prop.get('description', ''))}</td></tr>")
    return "".join(rows) + "</table>"


def _kind(s: dict[str, Any]) -> str:
    if "enum" in s:
        return " | ".join(json.dumps(v) for v in s["enum"])
    if s.get("type") == "array":
        return f"list of {_kind(s.get('items', {}))}"
    return str(s.get("type", "object"))


def _bounds(kinds: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    names = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<", "minItems": "items ≥",
             "maxItems": "items ≤"}
    out = []
    for k in kinds:
        for key, sym in names.items():
            if key in k:
                out.append((sym, k[key]))
            if key in k.get("items", {}):
                out.append((sym, k["items"][key]))
    return out
