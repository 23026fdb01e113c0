"""Per-metric replica calculation (``pkg/controller/podautoscaler/replica_calculator.go``).

Pods are grouped into ready, unready, missing and ignored (:func:`group_pods`), then one
metric proposes ``ceil(ready pods x usage ratio)`` replicas unless the ratio is within the
tolerance, with Go's corrections for missing and unready pods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agents.autoscaling.k8s_hpa.api import MetricComputationError, PodMetricSample
from agents.autoscaling.k8s_hpa.config import (
    DEFAULT_CPU_INITIALIZATION_PERIOD_S,
    DEFAULT_INITIAL_READINESS_DELAY_S,
    DEFAULT_TOLERANCE,
)
from agents.autoscaling.k8s_hpa.utilization import go_int_div, get_metric_usage_ratio, get_resource_utilization_ratio


@dataclass(frozen=True)
class PodGroups:
    """Output of :func:`group_pods` (``groupPods``): how each pod's sample is treated."""

    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Sequence[PodMetricSample],
    resource: str,
    now_s: float,
    cpu_initialization_period_s: float,
    delay_of_initial_readiness_status_s: float,
) -> PodGroups:
    """Sort pods into ready, unready, missing and ignored (``groupPods``, replica_calculator.go).

    Order of the checks matters and follows Go: terminating or failed pods are ignored;
    pending pods are unready; then pods without a sample are missing (even if not ready);
    the readiness checks only run for the ``cpu`` resource, for any other metric every
    running pod with a sample counts as ready.

    Args:
        pods: The scale target's pods.
        resource: Resource name of the metric (``"cpu"``, ``"memory"``), or ``""`` for a
            ``Pods`` metric.
        now_s: Reconcile time.
        cpu_initialization_period_s: ``--horizontal-pod-autoscaler-cpu-initialization-period``.
        delay_of_initial_readiness_status_s: ``--horizontal-pod-autoscaler-initial-readiness-delay``.

    Returns:
        The groups; ready pods are only counted.

    Raises:
        ValueError: Two pods share a name (Go keys samples by pod name).
    """
    if len({pod.name for pod in pods}) != len(pods):
        raise ValueError("pod names must be unique within one target")
    ready_count = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleted or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        if pod.usage_milli is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            if pod.ready is None or pod.start_time_s is None:
                is_unready = True
            else:
                metric_timestamp_s = now_s if pod.metric_timestamp_s is None else pod.metric_timestamp_s
                if pod.start_time_s + cpu_initialization_period_s > now_s:
                    # Still initialising: CPU is often high at start-up, so only trust a
                    # sample taken entirely after the pod last changed readiness.
                    is_unready = (not pod.ready) or (
                        metric_timestamp_s < pod.ready_transition_time_s + pod.metric_window_s
                    )
                else:
                    # Past initialisation: drop the sample only if the pod has never been
                    # ready (its last transition came within the initial readiness delay).
                    is_unready = (not pod.ready) and (
                        pod.start_time_s + delay_of_initial_readiness_status_s > pod.ready_transition_time_s
                    )
            if is_unready:
                unready.add(pod.name)
                continue
        ready_count += 1
    return PodGroups(ready_count, frozenset(unready), frozenset(missing), frozenset(ignored))


def calculate_requests(pods: Sequence[PodMetricSample], resource: str) -> dict[str, int]:
    """Per-pod requests for a resource (``calculateRequests``, replica_calculator.go).

    Args:
        pods: All pods of the target, including ignored ones (Go computes requests over the
            whole pod list, so a terminating pod without a request still fails the metric).
        resource: Resource name, used in the error message.

    Returns:
        Pod name -> request in milli-units.

    Raises:
        MetricComputationError: A pod has no request for the resource.
    """
    requests: dict[str, int] = {}
    for pod in pods:
        if pod.request_milli is None:
            raise MetricComputationError(f"missing request for {resource} in Pod {pod.name}")
        requests[pod.name] = pod.request_milli
    return requests


@dataclass(frozen=True)
class Tolerances:
    """Scale-down / scale-up tolerance band (``Tolerances``, replica_calculator.go)."""

    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, usage_ratio: float) -> bool:
        """Whether a usage ratio is close enough to 1 to keep the replica count (``isWithin``).

        Args:
            usage_ratio: Current / target.

        Returns:
            ``1 - scale_down <= usage_ratio <= 1 + scale_up`` (both ends inclusive).
        """
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True)
class MetricProposal:
    """One metric's replica proposal and the statistics the HPA status would report.

    Attributes:
        replicas: Proposed replica count.
        metric_name: The controller's description of the metric (used in event reasons).
        utilization_percent: Current utilisation (utilisation targets only), integer percent.
        average_value_milli: Current average value per counted pod, milli-units.
        ready_pod_count: Pods whose samples counted.
        unready_pod_count: Pods set aside as unready.
        missing_pod_count: Pods without a sample.
        ignored_pod_count: Terminating or failed pods.
    """

    replicas: int
    metric_name: str
    utilization_percent: int | None
    average_value_milli: int
    ready_pod_count: int
    unready_pod_count: int
    missing_pod_count: int
    ignored_pod_count: int


def get_resource_replicas(
    current_replicas: int,
    target_utilization: int,
    resource: str,
    pods: Sequence[PodMetricSample],
    tolerances: Tolerances,
    now_s: float,
    cpu_initialization_period_s: float = DEFAULT_CPU_INITIALIZATION_PERIOD_S,
    delay_of_initial_readiness_status_s: float = DEFAULT_INITIAL_READINESS_DELAY_S,
) -> MetricProposal:
    """Replicas for a utilisation target (``GetResourceReplicas``, replica_calculator.go).

    ``desired = ceil(ready pods x utilisation / target)`` unless the ratio is within the
    tolerance. With missing or (on a scale-up) unready pods, the ratio is recomputed with
    missing pods at ``max(100%, target)`` of their request on a scale-down and 0% on a
    scale-up, unready pods at 0% on a scale-up; the current count is kept if that recomputed
    ratio is within tolerance or points the other way, or if the resulting count would move
    against the ratio.

    Args:
        current_replicas: ``scale.spec.replicas``.
        target_utilization: Target percent of request.
        resource: Resource name (``"cpu"`` enables the readiness checks).
        pods: The target's pods with their samples of this resource.
        tolerances: Tolerance band.
        now_s: Reconcile time.
        cpu_initialization_period_s: See :func:`group_pods`.
        delay_of_initial_readiness_status_s: See :func:`group_pods`.

    Returns:
        The proposal.

    Raises:
        MetricComputationError: No pods, no usable samples, or a missing request.
    """
    if not pods:
        raise MetricComputationError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, resource, now_s, cpu_initialization_period_s, delay_of_initial_readiness_status_s)
    set_aside = groups.ignored | groups.unready
    metrics = {p.name: p.usage_milli for p in pods if p.usage_milli is not None and p.name not in set_aside}
    if not metrics:
        raise MetricComputationError("did not receive metrics for targeted pods (pods might be unready)")
    requests = calculate_requests(pods, resource)
    usage_ratio, utilization, raw_utilization = get_resource_utilization_ratio(metrics, requests, target_utilization)

    def proposal(replicas: int) -> MetricProposal:
        return MetricProposal(
            replicas=replicas,
            metric_name=f"{resource} resource utilization (percentage of request)",
            utilization_percent=utilization,
            average_value_milli=raw_utilization,
            ready_pod_count=groups.ready_count,
            unready_pod_count=len(groups.unready),
            missing_pod_count=len(groups.missing),
            ignored_pod_count=len(groups.ignored),
        )

    scale_up_with_unready = len(groups.unready) > 0 and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(usage_ratio):
            return proposal(current_replicas)
        return proposal(math.ceil(usage_ratio * groups.ready_count))

    if groups.missing:
        if usage_ratio < 1.0:
            # A pod that reports nothing might be busy: on a scale-down assume it uses its
            # whole request, or the target when the target is above 100%, so it never pushes
            # the average further down.
            fallback_utilization = max(100, target_utilization)
            for name in groups.missing:
                metrics[name] = go_int_div(requests[name] * fallback_utilization, 100)
        elif usage_ratio > 1.0:
            for name in groups.missing:
                metrics[name] = 0
    if scale_up_with_unready:
        # Unready pods will soon take load: count them as idle so a scale-up is not inflated.
        for name in groups.unready:
            metrics[name] = 0

    new_usage_ratio, _, _ = get_resource_utilization_ratio(metrics, requests, target_utilization)
    if (
        tolerances.is_within(new_usage_ratio)
        or (usage_ratio < 1.0 and new_usage_ratio > 1.0)
        or (usage_ratio > 1.0 and new_usage_ratio < 1.0)
    ):
        return proposal(current_replicas)
    new_replicas = math.ceil(new_usage_ratio * len(metrics))
    if (new_usage_ratio < 1.0 and new_replicas > current_replicas) or (
        new_usage_ratio > 1.0 and new_replicas < current_replicas
    ):
        return proposal(current_replicas)
    return proposal(new_replicas)


def calc_plain_metric_replicas(
    current_replicas: int,
    target_usage_milli: int,
    resource: str,
    pods: Sequence[PodMetricSample],
    tolerances: Tolerances,
    now_s: float,
    cpu_initialization_period_s: float = DEFAULT_CPU_INITIALIZATION_PERIOD_S,
    delay_of_initial_readiness_status_s: float = DEFAULT_INITIAL_READINESS_DELAY_S,
) -> MetricProposal:
    """Replicas for an average-value target (``calcPlainMetricReplicas``, replica_calculator.go).

    Serves ``GetRawResourceReplicas`` (a ``Resource`` metric with ``averageValue``; pass its
    resource name) and ``GetMetricReplicas`` (a ``Pods`` metric; pass ``resource=""``, which
    skips the CPU readiness checks). Same structure as :func:`get_resource_replicas`, except
    that missing pods count as exactly the target on a scale-down.

    Args:
        current_replicas: ``scale.spec.replicas``.
        target_usage_milli: Target average value per pod, milli-units.
        resource: Resource name, or ``""`` for a ``Pods`` metric.
        pods: The target's pods with their samples.
        tolerances: Tolerance band.
        now_s: Reconcile time.
        cpu_initialization_period_s: See :func:`group_pods`.
        delay_of_initial_readiness_status_s: See :func:`group_pods`.

    Returns:
        The proposal.

    Raises:
        MetricComputationError: No pods or no usable samples.
    """
    if not pods:
        raise MetricComputationError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, resource, now_s, cpu_initialization_period_s, delay_of_initial_readiness_status_s)
    set_aside = groups.ignored | groups.unready
    metrics = {p.name: p.usage_milli for p in pods if p.usage_milli is not None and p.name not in set_aside}
    if not metrics:
        raise MetricComputationError("did not receive metrics for targeted pods (pods might be unready)")
    usage_ratio, usage = get_metric_usage_ratio(metrics, target_usage_milli)

    def proposal(replicas: int) -> MetricProposal:
        return MetricProposal(
            replicas=replicas,
            metric_name=f"{resource} resource" if resource else "",
            utilization_percent=None,
            average_value_milli=usage,
            ready_pod_count=groups.ready_count,
            unready_pod_count=len(groups.unready),
            missing_pod_count=len(groups.missing),
            ignored_pod_count=len(groups.ignored),
        )

    scale_up_with_unready = len(groups.unready) > 0 and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(usage_ratio):
            return proposal(current_replicas)
        return proposal(math.ceil(usage_ratio * groups.ready_count))

    if groups.missing:
        if usage_ratio < 1.0:
            for name in groups.missing:
                metrics[name] = target_usage_milli
        elif usage_ratio > 1.0:
            for name in groups.missing:
                metrics[name] = 0
    if scale_up_with_unready:
        for name in groups.unready:
            metrics[name] = 0

    new_usage_ratio, _ = get_metric_usage_ratio(metrics, target_usage_milli)
    if (
        tolerances.is_within(new_usage_ratio)
        or (usage_ratio < 1.0 and new_usage_ratio > 1.0)
        or (usage_ratio > 1.0 and new_usage_ratio < 1.0)
    ):
        return proposal(current_replicas)
    new_replicas = math.ceil(new_usage_ratio * len(metrics))
    if (new_usage_ratio < 1.0 and new_replicas > current_replicas) or (
        new_usage_ratio > 1.0 and new_replicas < current_replicas
    ):
        return proposal(current_replicas)
    return proposal(new_replicas)
