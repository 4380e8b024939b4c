"""``facegan serve``: a trained generator as a REST service with a web studio (needs ``facegan[serve]``).

    engine.py   the model to serve (run, checkpoint or model folder; torch or ONNX Runtime) and its sha256
    batcher.py  micro-batching of concurrent requests into one forward pass, behind a bounded queue
    limits.py   every bound (n, frames, queue, uploads), checked before the model loads
    schemas.py  the request bodies: what is refused with 4xx, before any work
    gate.py     API key, body-size cap, one log line and the metrics for every request
    stats.py    the Prometheus counters of /metrics
    app.py      the routes
    pages.py    the studio page (studio.html) and the offline /docs page
    run.py      starting uvicorn on a checked socket; Ctrl-C stops cleanly
"""
