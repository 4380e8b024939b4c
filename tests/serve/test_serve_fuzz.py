"""`facegan serve` fuzzed from its own OpenAPI schema: no request, valid or not, gets a 5xx.

Schemathesis generates requests for every operation of /openapi.json (generate, interpolate,
upscale, model, healthz, metrics) — bodies that fit the schema and, in negative mode, bodies
that break it (wrong types, out-of-range values, missing or unknown fields, random bytes for
the upload) — and sends them in-process to the app over ASGI, its lifespan (the micro-batcher)
running. A correct server answers each with 2xx or a 4xx that names the problem; any 5xx (an
unhandled exception becomes the app's 500) fails the test with the request that caused it.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (pip install schemathesis)")
pytest.importorskip("fastapi", reason="facegan serve needs the serve extra (pip install 'facegan[serve]')")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.slow  # ≈ 500 generated requests, ≈ 10 s

OPERATIONS = {"GET /healthz", "GET /metrics", "GET /v1/model", "POST /v1/generate", "POST /v1/interpolate",
              "POST /v1/upscale"}


def tiny_app():
    """The service over an untrained 16² generator with a ×2 upscaler: every route works, in milliseconds."""
    import torch

    from conftest import TINY
    from facegan.models.dcgan import Generator
    from facegan.models.srresnet import SRConfig, SRGenerator
    from facegan.sample import render
    from facegan.serve.app import create_app
    from facegan.serve.engine import Model, weights_sha256

    torch.manual_seed(0)
    G = Generator(TINY).eval()
    SR = SRGenerator(SRConfig(scale=2, width=8, blocks=1)).eval()
    model = Model(G=G, render=lambda z: render(G, z, len(z)), runtime="torch", sha256=weights_sha256(G),
                  info={"preset": "tiny"}, card="# card", upscaler=SR)
    return create_app(model)


def tiny_schema():
    app = tiny_app()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # the schema the app serves; starts its lifespan
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=50)
    return schema


schema = tiny_schema()


@pytest.fixture(scope="module", autouse=True)
def _stop_the_app():
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # the app's lifespan stops the micro-batcher's thread


def test_every_route_is_in_the_schema():
    assert {op.ok().label for op in schema.get_all_operations()} == OPERATIONS  # a route missing would go unfuzzed


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case):
    response = case.call(timeout=30)
    assert response.status_code < 500, (f"{case.operation.label} answered {response.status_code}: {response.text[:300]}\n"
                                        f"request: {case.as_curl_command()}")
    case.validate_response(response, checks=[not_a_server_error])
