"""Reading the policy's metrics from Prometheus' HTTP API, or saying why they cannot be used.

One instant query per (metric, service), rendered from the PromQL templates in the policy's
metadata, evaluated at one common time so the observation is one instant of the cluster. The
result is either the (S, M) raw array or a :class:`Hold` naming what was wrong: Prometheus down
or erroring, a series missing (except metrics whose empty result means 0), a NaN, or samples
older than two scrape intervals (the scrape or the exporter stopped). The controller never acts
on a partial observation.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests


@dataclass(frozen=True)
class Hold:
    """Why no decision is made this period.

    Attributes:
        reason: A short label (the ``reason`` label of the controller's hold counter).
        detail: One line for the log.
    """

    reason: str
    detail: str


class QueryError(RuntimeError):
    """Prometheus did not answer a query (unreachable, timeout, HTTP or PromQL error)."""


class PrometheusClient:
    """Instant queries against ``url`` (``/api/v1/query``).

    Args:
        url: Prometheus' base URL, e.g. ``http://prometheus:9090``.
        timeout_s: Per-request timeout.
        workers: Queries in flight at once.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, workers: int = 8):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql")

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        """``[(labels, value)]`` of an instant vector (or a scalar as one unlabelled sample) at time ``at``."""
        try:
            response = self.session.get(f"{self.url}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"},
                                        timeout=self.timeout_s)
        except requests.RequestException as err:
            raise QueryError(f"Prometheus at {self.url} unreachable: {type(err).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus at {self.url}: HTTP {response.status_code}, not JSON") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(f"Prometheus at {self.url}: HTTP {response.status_code} {body.get('errorType', '')}: "
                             f"{body.get('error', '')} (query {expr})")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise QueryError(f"query {expr} returned a {data['resultType']}, not an instant vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_many(self, exprs: list[str], at: float) -> list[list[tuple[dict[str, str], float]]]:
        return list(self.pool.map(lambda e: self.query(e, at), exprs))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.session.close()


@dataclass
class MetricReader:
    """The policy's metrics of one application, read at one instant.

    Args:
        client: The Prometheus client.
        metadata: The policy's ``policy.json``.
        namespace: The application's namespace (the templates' ``{namespace}``).
        window: The ``rate`` window (the templates' ``{window}``), e.g. ``1m``: at least four
            scrape intervals.
        max_age_s: Samples older than this (two scrape intervals) are stale.
    """

    client: PrometheusClient
    metadata: dict[str, Any]
    namespace: str
    window: str
    max_age_s: float

    def __post_init__(self) -> None:
        obs = self.metadata["observation"]
        self.services = list(obs["services"])
        self.metrics = obs["metrics"]
        fmt = dict(namespace=self.namespace, window=self.window)
        self.exprs = [m["promql"].format(service=s, **fmt) for m in self.metrics for s in self.services]
        self.freshness = [obs["freshness_promql"].format(service=s, **fmt) for s in self.services]

    def read(self, at: float | None = None) -> tuple[np.ndarray | Hold, float]:
        """``(raw (S, M) float64 or Hold, seconds the queries took)`` at time ``at`` (default now)."""
        at = time.time() if at is None else at
        started = time.perf_counter()
        try:
            results = self.client.query_many(self.freshness + self.exprs, at)
        except QueryError as err:
            return Hold("prometheus_unavailable", str(err)), time.perf_counter() - started
        elapsed = time.perf_counter() - started
        s = len(self.services)
        for service, result in zip(self.services, results[:s]):
            if not result:
                return Hold("metric_missing", f"no samples of {service}: {self.freshness[self.services.index(service)]} "
                                              "is empty"), elapsed
            age = at - max(v for _, v in result)
            if age > self.max_age_s:
                return Hold("metric_stale", f"newest sample of {service} is {age:.1f} s old "
                                            f"(more than {self.max_age_s:g} s: two scrape intervals)"), elapsed
        raw = np.zeros((s, len(self.metrics)), dtype=np.float64)
        for k, result in enumerate(results[s:]):
            j, i = divmod(k, s)
            metric, service = self.metrics[j], self.services[i]
            if not result:
                if metric["absent_is_zero"]:
                    continue
                return Hold("metric_missing", f"{metric['name']} of {service}: empty result"), elapsed
            if len(result) > 1:
                return Hold("metric_ambiguous", f"{metric['name']} of {service}: {len(result)} series, one expected"), elapsed
            value = result[0][1]
            if not math.isfinite(value):
                return Hold("metric_nan", f"{metric['name']} of {service} is {value}"), elapsed
            raw[i, j] = value
        return raw, elapsed
