"""The service's counters in the Prometheus text format (``GET /metrics``), with no client library.

Three families: requests by (method, route, status) with a latency histogram per route, the
sizes of the generator's forward passes (how well micro-batching works), and gauges of the
queue. Routes are the app's route templates, never raw paths, so a scan of random URLs adds
one "unmatched" series, not one per URL.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cum = [], 0
        for le, c in zip([*map(_num, self.buckets), "+Inf"], self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cum}')
        brace = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{brace} {_num(self.total)}", f"{name}_count{brace} {self.n}"]


class Stats:
    """Thread-safe counters; ``gauges`` are read when /metrics is asked for."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._batches = _Histogram(BATCH_BUCKETS)
        self._faces = 0
        self._gauges = gauges

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._latency.setdefault(route, _Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def batch(self, faces: int) -> None:
        with self._lock:
            self._batches.observe(faces)
            self._faces += faces

    def text(self) -> str:
        with self._lock:
            lines = ["# HELP facegan_requests_total HTTP requests answered, by method, route and status.",
                     "# TYPE facegan_requests_total counter"]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f'facegan_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {n}')
            lines += ["# HELP facegan_request_duration_seconds Time from request to response, by route.",
                      "# TYPE facegan_request_duration_seconds histogram"]
            for route, h in sorted(self._latency.items()):
                lines += h.lines("facegan_request_duration_seconds", f'route="{_esc(route)}"')
            lines += ["# HELP facegan_batch_faces Faces per generator forward pass (micro-batching).",
                      "# TYPE facegan_batch_faces histogram", *self._batches.lines("facegan_batch_faces", ""),
                      "# HELP facegan_faces_total Faces the generator rendered.", "# TYPE facegan_faces_total counter",
                      f"facegan_faces_total {self._faces}"]
        for name, (help_text, read) in self._gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_num(read())}"]
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
