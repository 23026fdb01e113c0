"""Usage ratios from metric samples (``pkg/controller/podautoscaler/metrics/utilization.go``).

Go's integer arithmetic is kept: utilisation and averages truncate toward zero.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents.autoscaling.k8s_hpa.api import MetricComputationError


def go_int_div(numerator: int, denominator: int) -> int:
    """Integer division that truncates toward zero, as Go's ``/`` on integers does."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def get_resource_utilization_ratio(
    metrics: Mapping[str, int], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """Usage/target ratio for a utilisation target (``GetResourceUtilizationRatio``, utilization.go).

    The current utilisation is an *integer* percent (Go truncates ``total*100/requests``);
    the ratio is computed from that truncated value, which matters near the tolerance edge.

    Args:
        metrics: Pod name -> usage, for the pods that count.
        requests: Pod name -> request; samples of pods without one are skipped.
        target_utilization: Target percent of request.

    Returns:
        ``(usage_ratio, current_utilization_percent, raw_average_usage_milli)``.

    Raises:
        MetricComputationError: No sample matched a pod with a request, or their requests
            sum to zero.
    """
    metrics_total = 0
    requests_total = 0
    entries = 0
    for pod_name, value in metrics.items():
        if pod_name not in requests:
            continue
        metrics_total += value
        requests_total += requests[pod_name]
        entries += 1
    if requests_total == 0:
        raise MetricComputationError("no metrics returned matched known pods")
    current_utilization = go_int_div(metrics_total * 100, requests_total)
    return current_utilization / target_utilization, current_utilization, go_int_div(metrics_total, entries)


def get_metric_usage_ratio(metrics: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    """Usage/target ratio for an average-value target (``GetMetricUsageRatio``, utilization.go).

    Args:
        metrics: Pod name -> sample in milli-units.
        target_usage: Target average value in milli-units.

    Returns:
        ``(usage_ratio, current_average_usage_milli)``; the average is truncated like Go's.
    """
    current_usage = go_int_div(sum(metrics.values()), len(metrics))
    return current_usage / target_usage, current_usage
