"""The observed metric set of the microservice twin, declared once.

Every control step the twin emits, per service, what a real cluster's Prometheus would hold
(kube-state-metrics, cAdvisor and Istio/Envoy series). The list below is the single source of
truth for three consumers:

* the twin, which writes observations as a ``[B, services, metrics]`` array in this order;
* the environments, which observe that array (and use :data:`METRIC_INDEX` to pick columns);
* the online controller, which queries a live Prometheus with :func:`promql` for the same
  names, so a policy trained on the twin sees the same quantities on a real cluster.

PromQL templates take ``{service}``, ``{namespace}`` and ``{window}`` (a range such as ``1m``).
Pods of a Deployment are matched by the ``{service}-<hash>-<id>`` naming convention.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One observed per-service metric.

    Attributes:
        name: Stable identifier used by the twin, the envs and the controller.
        promql: PromQL template with ``{service}``, ``{namespace}`` and ``{window}`` fields.
        unit: Unit of the value the twin emits (and the query returns).
        description: What the value means, in one line.
        absent_is_zero: An empty query result means 0, not a missing metric: the series exist only
            while there is something to count (kube-state-metrics exports a pod's waiting reason
            only while it waits; a service with no pod Pending has no Pending series to sum).
            An online controller holds on any other empty result.
    """

    name: str
    promql: str
    unit: str
    description: str
    absent_is_zero: bool = False


_POD = 'namespace="{namespace}", pod=~"{service}-[a-z0-9]+-[a-z0-9]+"'
_DEST = 'destination_workload_namespace="{namespace}", destination_workload="{service}", reporter="destination"'

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "replicas_desired",
        'kube_deployment_spec_replicas{{namespace="{namespace}", deployment="{service}"}}',
        "pods",
        "Replica count the Deployment asks for (the last action, clipped to the bounds).",
    ),
    MetricSpec(
        "replicas_ready",
        'kube_deployment_status_replicas_ready{{namespace="{namespace}", deployment="{service}"}}',
        "pods",
        "Pods Ready (in the Service endpoints) at the end of the step.",
    ),
    MetricSpec(
        "replicas_pending",
        'sum(kube_pod_status_phase{{' + _POD + ', phase="Pending"}})',
        "pods",
        "Pods Pending: created but not bound to a node (no node has room for their requests).",
        absent_is_zero=True,
    ),
    MetricSpec(
        "replicas_crashloop",
        'sum(kube_pod_container_status_waiting_reason{{' + _POD + ', reason="CrashLoopBackOff"}})',
        "pods",
        "Pods waiting in CrashLoopBackOff.",
        absent_is_zero=True,
    ),
    MetricSpec(
        "cpu_usage_cores",
        'sum(rate(container_cpu_usage_seconds_total{{' + _POD + ', container!=""}}[{window}]))',
        "cores",
        "CPU used by the service's containers, averaged over the step.",
    ),
    MetricSpec(
        "cpu_requests_cores",
        'sum(kube_pod_container_resource_requests{{' + _POD + ', resource="cpu"}})',
        "cores",
        "CPU requested by the service's scheduled pods (what the HPA utilisation divides by).",
    ),
    MetricSpec(
        "cpu_throttled_ratio",
        'sum(rate(container_cpu_cfs_throttled_periods_total{{' + _POD + '}}[{window}]))'
        ' / sum(rate(container_cpu_cfs_periods_total{{' + _POD + '}}[{window}]))',
        "ratio",
        "Share of CFS periods in which the containers hit their CPU limit (or lost CPU to contention).",
    ),
    MetricSpec(
        "memory_working_set_bytes",
        'sum(container_memory_working_set_bytes{{' + _POD + ', container!=""}})',
        "bytes",
        "Working-set memory of the service's running containers at the end of the step.",
    ),
    MetricSpec(
        "request_rate",
        'sum(rate(istio_requests_total{{' + _DEST + '}}[{window}]))',
        "requests/s",
        "Requests arriving at the service (calls from upstream plus entry load).",
    ),
    MetricSpec(
        "error_rate",
        'sum(rate(istio_requests_total{{' + _DEST + ', response_code=~"5.."}}[{window}]))'
        ' / sum(rate(istio_requests_total{{' + _DEST + '}}[{window}]))',
        "ratio",
        "Share of the service's requests that failed (dropped: queue full, timeout, no endpoint).",
    ),
    MetricSpec(
        "latency_p50_seconds",
        'histogram_quantile(0.50, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{'
        + _DEST + '}}[{window}]))) / 1000',
        "seconds",
        "Median latency of the service's requests, including its downstream calls.",
    ),
    MetricSpec(
        "latency_p95_seconds",
        'histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{'
        + _DEST + '}}[{window}]))) / 1000',
        "seconds",
        "95th-percentile latency of the service's requests, including its downstream calls.",
    ),
    MetricSpec(
        "latency_p99_seconds",
        'histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{'
        + _DEST + '}}[{window}]))) / 1000',
        "seconds",
        "99th-percentile latency of the service's requests, including its downstream calls.",
    ),
    MetricSpec(
        "pending_requests",
        'sum(envoy_cluster_upstream_rq_pending_active{{namespace="{namespace}",'
        ' cluster_name=~"outbound\\\\|.*\\\\|\\\\|{service}\\\\..*"}})',
        "requests",
        "Requests queued for the service (backlog carried to the next step), summed over callers.",
        absent_is_zero=True,
    ),
)

FRESHNESS_PROMQL = 'timestamp(kube_deployment_spec_replicas{{namespace="{namespace}", deployment="{service}"}})'
"""When the newest sample of a service was scraped (seconds since the epoch): an online controller
holds when it is older than two scrape intervals (the exporter or the scrape has stopped)."""

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
METRIC_INDEX: dict[str, int] = {name: i for i, name in enumerate(METRIC_NAMES)}
NUM_METRICS: int = len(METRICS)


def promql(metric: str, service: str, namespace: str = "default", window: str = "1m") -> str:
    """Render the PromQL query for one metric of one service.

    Args:
        metric: A name from :data:`METRIC_NAMES`.
        service: Deployment / workload name (e.g. ``"frontend"``).
        namespace: Kubernetes namespace of the application.
        window: Range-vector window for ``rate`` (e.g. ``"1m"``; at least 4 scrape intervals).

    Returns:
        The query string.

    Raises:
        KeyError: If ``metric`` is not declared, naming the known metrics.
    """
    if metric not in METRIC_INDEX:
        raise KeyError(f"unknown metric {metric!r}; known metrics: {', '.join(METRIC_NAMES)}")
    return METRICS[METRIC_INDEX[metric]].promql.format(service=service, namespace=namespace, window=window)
