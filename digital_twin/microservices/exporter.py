"""The twin's metrics as a Prometheus target: the series the declared PromQL reads.

:class:`TwinExporter` serves, for one cluster of the twin, the kube-state-metrics, cAdvisor and
Istio/Envoy series that :data:`~digital_twin.microservices.metrics.METRICS` queries, built so
that each template evaluates to the twin's value of the last step: gauges carry the value;
counters grow linearly at the value's rate from the moment it is published (so ``rate()`` over a
window inside the step returns it); ratios are two counters in that ratio; the latency histogram
is shaped so that ``histogram_quantile`` at 0.50, 0.95 and 0.99 returns the twin's p50, p95 and
p99. With it a real Prometheus and an online controller run against the twin ("twin in the
loop"). Each sample carries its own timestamp (the exposition format's), so ``rate()`` sees exact
straight lines; Prometheus writes no staleness marker for such samples, which is why a
controller checks the age of the newest sample (:data:`~digital_twin.microservices.metrics.FRESHNESS_PROMQL`).

**The histogram.** Buckets are a fixed geometric grid (ratio 1.02, 0.01 ms to 120 s); the shares at
their edges are set so that the interpolation ``histogram_quantile`` makes returns each quantile
(:func:`histogram_shares`). Exact wherever consecutive quantiles are over 4% apart; closer ones
(in the twin: all three pinned at the timeout) come out up to 4% high, which the env's
normalisation clips back to the timeout.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS

_EDGES_MS = 0.01 * 1.02 ** np.arange(int(np.log(120_000 / 0.01) / np.log(1.02)) + 2)  # 0.01 ms to 120 s
_QUANTILES = (("latency_p50_seconds", 0.50), ("latency_p95_seconds", 0.95), ("latency_p99_seconds", 0.99))
_HISTOGRAM_RATE = 100.0  # observations per second behind the histogram (its shape is what counts)
_CFS_PERIODS = 10.0  # CFS periods per second (100 ms each)
_COUNTER_START = 1.0e6  # counters start high: rate() never extrapolates them back to zero


_MIN_RATIO = 1.02 ** 2 * (1 + 1e-9)  # two buckets: quantiles this far apart never share a bucket edge


def histogram_shares(quantiles: list[tuple[float, float]], edges: np.ndarray = _EDGES_MS) -> np.ndarray:
    """Cumulative share at each bucket edge such that interpolating it returns the quantiles.

    ``histogram_quantile(q)`` finds the bucket ``(lo, hi]`` holding rank q and returns
    ``lo + (hi - lo) (q - F(lo)) / (F(hi) - F(lo))``. Within each quantile's bucket the shares lie
    on a line through ``(value, q)`` (slope: 0.01 per bucket), so the interpolation returns the
    value. Interpolation cannot put two quantiles within one bucket of each other, so a quantile
    closer than two buckets (4%) above the one below it is raised to that distance first: the only
    case where a value comes out inexact (in the twin: quantiles all pinned at the timeout, which
    the env's normalisation clips back). Other edges are interpolated.

    Args:
        quantiles: ``[(value, q)]``, values (ms) and q in (0, 1) both ascending, q at least 0.02 apart.
        edges: Bucket upper bounds (ms), ascending.

    Returns:
        (len(edges),) non-decreasing shares in [0, 1]; the ``+Inf`` bucket holds 1.
    """
    eps = 0.01
    n = len(edges)
    at, share = [-1.0], [0.0]
    floor = 0.0
    for v, q in quantiles:
        v = min(max(v, floor), edges[-1])
        floor = v * _MIN_RATIO
        i = int(np.searchsorted(edges, v, side="left"))  # bucket (edges[i-1], edges[i]]
        lo = edges[i - 1] if i > 0 else 0.0
        f = (v - lo) / (edges[i] - lo)
        if i > 0:
            at.append(i - 1.0)
            share.append(q - eps * f)
        at.append(float(i))
        share.append(q + eps * (1.0 - f))
    if at[-1] < n - 1:
        at.append(n - 1.0)
        share.append(1.0)
    return np.clip(np.interp(np.arange(n), at, share), 0.0, 1.0)


class TwinExporter:
    """Serves one twin cluster's last step on ``http://host:port/metrics``.

    Args:
        services: The topology's service names (Deployment names).
        namespace: The namespace the series say they are in.
        host, port: Where to listen (port 0: any free port; see :attr:`port`).
    """

    def __init__(self, services: list[str], namespace: str = "default", host: str = "127.0.0.1", port: int = 0):
        self.services, self.namespace = list(services), namespace
        self.pods = [f"{s}-5c9d8f7b6-x{i:04d}" for i, s in enumerate(self.services)]  # {service}-<hash>-<id>
        s = len(self.services)
        self._lock = threading.Lock()
        self._raw = np.zeros((s, NUM_METRICS))
        self._since = time.time()
        self._counters = {key: np.full(s, _COUNTER_START) for key in ("cpu", "throttled", "periods", "ok", "err")}
        self._buckets = np.full((s, len(_EDGES_MS) + 1), _COUNTER_START)
        self._rates = {key: np.zeros(s) for key in self._counters}
        self._bucket_rates = np.zeros_like(self._buckets)
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = exporter.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the scraper gave up or stopped
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="twin-exporter", daemon=True)
        self._thread.start()

    def publish(self, raw: np.ndarray, at: float | None = None) -> None:
        """From time ``at`` (default now) on, serve the step whose raw observation is ``raw`` (S, M)."""
        at = time.time() if at is None else at
        raw = np.asarray(raw, dtype=np.float64)
        col = METRIC_INDEX
        with self._lock:
            self._advance(at)
            self._raw = raw.copy()
            rate, err = raw[:, col["request_rate"]], raw[:, col["error_rate"]]
            self._rates = {"cpu": raw[:, col["cpu_usage_cores"]],
                           "throttled": _CFS_PERIODS * raw[:, col["cpu_throttled_ratio"]],
                           "periods": np.full(len(raw), _CFS_PERIODS),
                           "ok": rate * (1.0 - err), "err": rate * err}
            shares = np.stack([histogram_shares([(1000.0 * raw[i, col[name]], q) for name, q in _QUANTILES])
                               for i in range(len(raw))])
            self._bucket_rates = _HISTOGRAM_RATE * np.concatenate([shares, np.ones((len(raw), 1))], axis=1)

    def _advance(self, at: float) -> None:
        dt = at - self._since
        for key in self._counters:
            self._counters[key] = self._counters[key] + self._rates[key] * dt
        self._buckets = self._buckets + self._bucket_rates * dt
        self._since = at

    def exposition(self, at: float | None = None) -> str:
        """The text format of every series now (each sample timestamped)."""
        at_ms = int((time.time() if at is None else at) * 1000)
        t = at_ms / 1000.0
        with self._lock:
            dt = t - self._since
            counters = {k: self._counters[k] + self._rates[k] * dt for k in self._counters}
            buckets = self._buckets + self._bucket_rates * dt
            raw = self._raw
        col, ns, lines = METRIC_INDEX, self.namespace, []

        def add(name, labels, value):
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {float(value)!r} {at_ms}")

        for i, (svc, pod) in enumerate(zip(self.services, self.pods)):
            p = {"namespace": ns, "pod": pod}
            c = dict(p, container="app")
            d = {"destination_workload_namespace": ns, "destination_workload": svc, "reporter": "destination"}
            add("kube_deployment_spec_replicas", {"namespace": ns, "deployment": svc}, raw[i, col["replicas_desired"]])
            add("kube_deployment_status_replicas_ready", {"namespace": ns, "deployment": svc},
                raw[i, col["replicas_ready"]])
            add("kube_pod_status_phase", dict(p, phase="Pending"), raw[i, col["replicas_pending"]])
            add("kube_pod_container_status_waiting_reason", dict(c, reason="CrashLoopBackOff"),
                raw[i, col["replicas_crashloop"]])
            add("container_cpu_usage_seconds_total", c, counters["cpu"][i])
            add("kube_pod_container_resource_requests", dict(c, resource="cpu"), raw[i, col["cpu_requests_cores"]])
            add("container_cpu_cfs_throttled_periods_total", c, counters["throttled"][i])
            add("container_cpu_cfs_periods_total", c, counters["periods"][i])
            add("container_memory_working_set_bytes", c, raw[i, col["memory_working_set_bytes"]])
            add("istio_requests_total", dict(d, response_code="200"), counters["ok"][i])
            add("istio_requests_total", dict(d, response_code="503"), counters["err"][i])
            for k, edge in enumerate(_EDGES_MS):
                add("istio_request_duration_milliseconds_bucket", dict(d, le=repr(float(edge))), buckets[i, k])
            add("istio_request_duration_milliseconds_bucket", dict(d, le="+Inf"), buckets[i, -1])
            add("envoy_cluster_upstream_rq_pending_active",
                {"namespace": ns, "cluster_name": f"outbound|80||{svc}.{ns}.svc.cluster.local"},
                raw[i, col["pending_requests"]])
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
