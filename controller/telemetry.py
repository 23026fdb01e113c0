"""What the controller tells its operators: ``/metrics`` (Prometheus text) and ``/healthz``.

Series (prefix ``clustergym_controller_``): ``decisions_total``, ``holds_total{reason}``,
``replica_changes_total{deployment,direction}``, ``api_errors_total{reason}``,
``query_seconds``, ``inference_seconds``, ``patch_seconds`` (histograms), ``hold`` (1 while
the last period held) with ``last_hold_info{reason}``, ``last_period_timestamp_seconds``.
``/healthz`` answers 200 while the loop has finished a period within three periods (holding
counts: it is alive and says why), 503 otherwise.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    def __init__(self, period_s: float):
        self.period_s = period_s
        self.registry = r = CollectorRegistry()
        p = "clustergym_controller_"
        self.decisions = Counter(p + "decisions", "Periods in which the policy decided", registry=r)
        self.holds = Counter(p + "holds", "Periods held, by reason", ["reason"], registry=r)
        self.changes = Counter(p + "replica_changes", "Replica changes made (or, dry-run, that would be)",
                               ["deployment", "direction"], registry=r)
        self.api_errors = Counter(p + "api_errors", "Kubernetes API calls that failed for good", ["reason"], registry=r)
        self.query_seconds = Histogram(p + "query_seconds", "Prometheus queries per period", buckets=_BUCKETS, registry=r)
        self.inference_seconds = Histogram(p + "inference_seconds", "Policy inference", buckets=_BUCKETS, registry=r)
        self.patch_seconds = Histogram(p + "patch_seconds", "Scale patches per period", buckets=_BUCKETS, registry=r)
        self.holding = Gauge(p + "hold", "1 while the last period held", registry=r)
        self.last_hold = Gauge(p + "last_hold_info", "The last period's hold reason (1)", ["reason"], registry=r)
        self.last_period = Gauge(p + "last_period_timestamp_seconds", "When the last period ended", registry=r)
        self._last_end = time.time()
        self._lock = threading.Lock()

    def period_done(self, hold_reason: str | None) -> None:
        with self._lock:
            self._last_end = time.time()
        self.last_period.set(self._last_end)
        self.last_hold.clear()
        if hold_reason is None:
            self.decisions.inc()
            self.holding.set(0)
        else:
            self.holds.labels(hold_reason).inc()
            self.holding.set(1)
            self.last_hold.labels(hold_reason).set(1)

    def healthy(self) -> bool:
        with self._lock:
            return time.time() - self._last_end <= 3 * self.period_s + 5.0

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Start ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread (port 0: any free)."""
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] == "/metrics":
                    body, status, kind = generate_latest(telemetry.registry), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/healthz":
                    ok = telemetry.healthy()
                    body, status, kind = (b"ok\n" if ok else b"no period finished lately\n"), (200 if ok else 503), "text/plain"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: the controller logs its own periods
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="telemetry", daemon=True).start()
        return server
