"""The Kubernetes HorizontalPodAutoscaler rule, ported from the controller's Go source.

This is a line-by-line port of the decision logic in ``kubernetes/kubernetes``,
``pkg/controller/podautoscaler`` (``replica_calculator.go``, ``horizontal.go``,
``metrics/utilization.go``) and of the API defaults in ``pkg/apis/autoscaling/v2/defaults.go``.
Every public function names the Go function it mirrors; where Go behaves surprisingly the
port keeps the surprise and a comment says so. It knows nothing about the digital twin or a
live cluster: callers describe pods with :class:`PodMetricSample` and get a replica count back.

Two entry points:

* :class:`HorizontalPodAutoscaler` -- one HPA object (one scale target). ``recommend`` runs
  one reconcile (``reconcileAutoscaler``): pod grouping, the per-metric replica calculation,
  the maximum over metrics, min/max clamps, stabilisation windows and ``behavior`` rate
  policies, with the history kept in an :class:`HPAState`.
* :func:`batched_hpa_recommend` -- the same rule vectorised over ``[B, S]`` (environments x
  services) for the simple case a simulator produces: one CPU-utilisation metric, every pod
  ready and reporting. History lives in a :class:`BatchedHPAState` of fixed-size arrays that
  reproduce the Go slices slot by slot, so both entry points agree exactly (tested).

What is ported: ``Resource`` metrics (``averageUtilization`` or ``averageValue`` targets) and
``Pods`` metrics (``averageValue``). ``Object``, ``External`` and ``ContainerResource`` sources
are not; neither is the selector bookkeeping nor status/event writing.

Units: times are seconds (float), resource quantities are Kubernetes milli-units (integers;
millicores for CPU), utilisation targets are integer percent of the request.

Example:
    >>> hpa = HorizontalPodAutoscaler(max_replicas=10, metrics=[ResourceMetricSpec("cpu", 50)])
    >>> pods = [PodMetricSample(f"p{i}", usage_milli=900, request_milli=1000) for i in range(2)]
    >>> decision = hpa.recommend(now_s=0.0, current_replicas=2, pods_by_metric={"cpu": pods})
    >>> decision.desired_replicas, decision.reason
    (4, 'DesiredWithinRange')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

# ---------------------------------------------------------------------------------------
# Constants and defaults (with the Go source they come from)
# ---------------------------------------------------------------------------------------

#: kube-controller-manager defaults (``pkg/controller/podautoscaler/config/v1alpha1/defaults.go``).
DEFAULT_TOLERANCE = 0.1
DEFAULT_CPU_INITIALIZATION_PERIOD_S = 300.0
DEFAULT_INITIAL_READINESS_DELAY_S = 30.0
DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S = 300.0
DEFAULT_SYNC_PERIOD_S = 15.0
#: ``autoscaling.DefaultCPUUtilization``: the metric an HPA gets when it lists none.
DEFAULT_CPU_UTILIZATION_PERCENT = 80
#: ``scaleUpLimitFactor`` / ``scaleUpLimitMinimum`` in ``horizontal.go`` (behaviour-less HPAs only).
LEGACY_SCALE_UP_LIMIT_FACTOR = 2.0
LEGACY_SCALE_UP_LIMIT_MINIMUM = 4.0
#: Window metrics-server reports with a CPU sample (its resolution); callers should pass
#: what their metrics source reports. Only the CPU initialisation check reads it.
DEFAULT_METRIC_WINDOW_S = 15.0
#: Go's zero ``time.Time`` plays "long ago" in pod fixtures. Any finite instant far before a
#: simulation's start compares the same way (a zero start time plus a delay is still after a
#: zero transition time, which ``-inf`` would not reproduce).
LONG_AGO_S = -1.0e9

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
PolicyType = Literal["Pods", "Percent"]

#: Reason vocabulary of :attr:`HPADecision.reason`; ``batched_hpa_recommend`` returns indices
#: into this tuple. All strings are the controller's own condition reasons.
REASONS: tuple[str, ...] = (
    "DesiredWithinRange",
    "ScaleUpStabilized",
    "ScaleDownStabilized",
    "ScaleUpLimit",
    "ScaleDownLimit",
    "TooManyReplicas",
    "TooFewReplicas",
    "ScalingDisabled",
    "FailedGetResourceMetric",
    "FailedGetPodsMetric",
)
REASON_CODES: dict[str, int] = {reason: code for code, reason in enumerate(REASONS)}


def _go_int_div(numerator: int, denominator: int) -> int:
    """Integer division that truncates toward zero, as Go's ``/`` on integers does."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


# ---------------------------------------------------------------------------------------
# Inputs: pods and their metric samples
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodMetricSample:
    """One pod of the scale target, as the HPA sees it: pod status plus one metric sample.

    It merges what the controller reads from the pod lister (phase, Ready condition, start
    time, deletion timestamp, requests) with the metrics API sample for the same pod.

    Attributes:
        name: Pod name; unique within one list.
        usage_milli: The metric sample in milli-units (millicores for CPU), or ``None`` when
            the metrics API returned nothing for this pod (a "missing" pod).
        request_milli: Sum of the containers' requests for the metric's resource, in
            milli-units. Needed by utilisation targets only; ``None`` means a container has
            no request, which makes a utilisation metric fail as in Kubernetes.
        phase: ``status.phase``.
        ready: Status of the pod's ``Ready`` condition; ``None`` when the pod has none.
        start_time_s: ``status.startTime``; ``None`` when the kubelet has not set it.
        ready_transition_time_s: ``lastTransitionTime`` of the ``Ready`` condition.
        metric_timestamp_s: End of the sample's window; ``None`` means "sampled at the
            reconcile time".
        metric_window_s: Length of the window the sample was averaged over.
        deleted: ``metadata.deletionTimestamp`` is set (pod terminating).
    """

    name: str
    usage_milli: int | None
    request_milli: int | None = None
    phase: PodPhase = "Running"
    ready: bool | None = True
    start_time_s: float | None = LONG_AGO_S
    ready_transition_time_s: float = LONG_AGO_S
    metric_timestamp_s: float | None = None
    metric_window_s: float = DEFAULT_METRIC_WINDOW_S
    deleted: bool = False

    def __post_init__(self) -> None:
        # resource.Quantity.MilliValue rounds fractional milli-values up; do the same so
        # float inputs from a simulator land where the real controller would put them.
        for name in ("usage_milli", "request_milli"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, int):
                object.__setattr__(self, name, math.ceil(value))
        if self.phase not in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            raise ValueError(f"pod {self.name!r}: unknown phase {self.phase!r}")


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
    current_utilization = _go_int_div(metrics_total * 100, requests_total)
    return current_utilization / target_utilization, current_utilization, _go_int_div(metrics_total, entries)


def get_metric_usage_ratio(metrics: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    """Usage/target ratio for an average-value target (``GetMetricUsageRatio``, utilization.go).

    Args:
        metrics: Pod name -> sample in milli-units.
        target_usage: Target average value in milli-units.

    Returns:
        ``(usage_ratio, current_average_usage_milli)``; the average is truncated like Go's.
    """
    current_usage = _go_int_div(sum(metrics.values()), len(metrics))
    return current_usage / target_usage, current_usage


# ---------------------------------------------------------------------------------------
# Per-metric replica calculation (replica_calculator.go)
# ---------------------------------------------------------------------------------------


class MetricComputationError(Exception):
    """A metric could not produce a replica count (the Go functions' ``err`` return)."""


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
                metrics[name] = _go_int_div(requests[name] * fallback_utilization, 100)
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


# ---------------------------------------------------------------------------------------
# HPA spec: metrics and behavior (autoscaling/v2 types and their API defaults)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceMetricSpec:
    """A ``Resource`` metric source: a per-pod resource (``cpu``, ``memory``) averaged over pods.

    Exactly one target is set, as API validation requires.

    Attributes:
        name: Resource name; also the key of this metric in ``pods_by_metric``.
        target_average_utilization: Target percent of the pods' requests.
        target_average_value_milli: Target average usage per pod, milli-units.
    """

    name: str = "cpu"
    target_average_utilization: int | None = None
    target_average_value_milli: int | None = None

    def __post_init__(self) -> None:
        if (self.target_average_utilization is None) == (self.target_average_value_milli is None):
            raise ValueError(f"ResourceMetricSpec({self.name!r}): set exactly one target")
        target = self.target_average_utilization or self.target_average_value_milli
        if target is None or target <= 0:
            raise ValueError(f"ResourceMetricSpec({self.name!r}): target must be positive")

    @property
    def failure_reason(self) -> str:
        """The ``ScalingActive=False`` reason the controller sets when this metric fails."""
        return "FailedGetResourceMetric"


@dataclass(frozen=True)
class PodsMetricSpec:
    """A ``Pods`` metric source: a custom per-pod metric (e.g. requests per second).

    Attributes:
        name: Metric name; also the key of this metric in ``pods_by_metric``.
        target_average_value_milli: Target average per pod, milli-units (``1000`` = 1 rps).
    """

    name: str
    target_average_value_milli: int

    def __post_init__(self) -> None:
        if self.target_average_value_milli <= 0:
            raise ValueError(f"PodsMetricSpec({self.name!r}): target must be positive")

    @property
    def failure_reason(self) -> str:
        """The ``ScalingActive=False`` reason the controller sets when this metric fails."""
        return "FailedGetPodsMetric"


MetricSpec = Union[ResourceMetricSpec, PodsMetricSpec]


@dataclass(frozen=True)
class HPAScalingPolicy:
    """One rate policy (``HPAScalingPolicy``): at most ``value`` pods or percent per period.

    Attributes:
        type: ``"Pods"`` or ``"Percent"``.
        value: Pods or percent allowed per period; positive.
        period_seconds: Length of the sliding period, 1..1800 s.
    """

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        # The API server's validation (pkg/apis/autoscaling/validation) enforces these.
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"policy type must be Pods or Percent, got {self.type!r}")
        if self.value <= 0:
            raise ValueError("policy value must be positive")
        if not 0 < self.period_seconds <= 1800:
            raise ValueError("policy period must be in (0, 1800] seconds")


@dataclass(frozen=True)
class HPAScalingRules:
    """Scaling rules for one direction (``HPAScalingRules``). ``None`` fields take defaults.

    Attributes:
        stabilization_window_seconds: Window over past recommendations, 0..3600 s.
        select_policy: ``"Max"`` (largest change), ``"Min"`` or ``"Disabled"``.
        policies: Rate policies; ``None`` means the defaults (an explicit tuple replaces them).
        tolerance: Per-direction tolerance (``HPAConfigurableTolerance`` feature, alpha since
            Kubernetes 1.33); ``None`` means the controller's ``--horizontal-pod-autoscaler-tolerance``.
    """

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[HPAScalingPolicy, ...] | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.policies is not None:
            object.__setattr__(self, "policies", tuple(self.policies))
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError("stabilization window must be in [0, 3600] seconds")
        if self.select_policy not in (None, "Max", "Min", "Disabled"):
            raise ValueError(f"unknown select policy {self.select_policy!r}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError("tolerance must be non-negative")


@dataclass(frozen=True)
class HPABehavior:
    """``spec.behavior``; an empty ``HPABehavior()`` gets every default filled in."""

    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


#: ``defaultHPAScaleUpRules`` (pkg/apis/autoscaling/v2/defaults.go): no stabilisation, and per
#: 15 s the larger of +4 pods and +100%.
DEFAULT_SCALE_UP_RULES = HPAScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=(HPAScalingPolicy("Pods", 4, 15), HPAScalingPolicy("Percent", 100, 15)),
)
#: ``defaultHPAScaleDownRules``: up to -100% per 15 s. Its window stays ``None`` on purpose: the
#: controller fills it from ``--horizontal-pod-autoscaler-downscale-stabilization`` (300 s).
DEFAULT_SCALE_DOWN_RULES = HPAScalingRules(
    stabilization_window_seconds=None,
    select_policy="Max",
    policies=(HPAScalingPolicy("Percent", 100, 15),),
)


def _copy_hpa_scaling_rules(source: HPAScalingRules | None, defaults: HPAScalingRules) -> HPAScalingRules:
    """Fill unset fields from defaults (``copyHPAScalingRules``, autoscaling/v2/defaults.go)."""
    if source is None:
        return defaults
    return HPAScalingRules(
        stabilization_window_seconds=(
            defaults.stabilization_window_seconds
            if source.stabilization_window_seconds is None
            else source.stabilization_window_seconds
        ),
        select_policy=defaults.select_policy if source.select_policy is None else source.select_policy,
        policies=defaults.policies if source.policies is None else source.policies,
        tolerance=defaults.tolerance if source.tolerance is None else source.tolerance,
    )


def generate_hpa_scale_up_rules(rules: HPAScalingRules | None) -> HPAScalingRules:
    """Scale-up rules with every unset field defaulted (``GenerateHPAScaleUpRules``).

    Args:
        rules: User rules, or ``None``.

    Returns:
        Fully populated rules.
    """
    return _copy_hpa_scaling_rules(rules, DEFAULT_SCALE_UP_RULES)


def generate_hpa_scale_down_rules(rules: HPAScalingRules | None) -> HPAScalingRules:
    """Scale-down rules with unset fields defaulted, except the window (``GenerateHPAScaleDownRules``).

    Args:
        rules: User rules, or ``None``.

    Returns:
        Populated rules; ``stabilization_window_seconds`` may stay ``None`` (see
        :data:`DEFAULT_SCALE_DOWN_RULES`).
    """
    return _copy_hpa_scaling_rules(rules, DEFAULT_SCALE_DOWN_RULES)


def set_defaults_behavior(behavior: HPABehavior | None) -> HPABehavior | None:
    """API-server defaulting of ``spec.behavior`` (``SetDefaults_HorizontalPodAutoscalerBehavior``).

    Only a non-nil behavior is filled in. An HPA created without ``behavior`` keeps ``nil``,
    and the controller then runs the older, behaviour-less normalisation
    (:func:`normalize_desired_replicas`), not the default policies.

    Args:
        behavior: User behavior, or ``None``.

    Returns:
        ``None``, or a behavior with both directions populated.
    """
    if behavior is None:
        return None
    return HPABehavior(
        scale_up=generate_hpa_scale_up_rules(behavior.scale_up),
        scale_down=generate_hpa_scale_down_rules(behavior.scale_down),
    )


@dataclass(frozen=True)
class HPAControllerConfig:
    """kube-controller-manager settings that shape HPA decisions (``HPAControllerConfiguration``).

    Attributes:
        tolerance: ``--horizontal-pod-autoscaler-tolerance``.
        cpu_initialization_period_s: ``--horizontal-pod-autoscaler-cpu-initialization-period``.
        initial_readiness_delay_s: ``--horizontal-pod-autoscaler-initial-readiness-delay``.
        downscale_stabilization_window_s: ``--horizontal-pod-autoscaler-downscale-stabilization``;
            used by behaviour-less HPAs and as the default scale-down window.
        legacy_scale_up_limit_factor: ``scaleUpLimitFactor`` (a package variable in Go; its
            unit tests set it to 8). Behaviour-less HPAs only.
        legacy_scale_up_limit_minimum: ``scaleUpLimitMinimum``. Behaviour-less HPAs only.
    """

    tolerance: float = DEFAULT_TOLERANCE
    cpu_initialization_period_s: float = DEFAULT_CPU_INITIALIZATION_PERIOD_S
    initial_readiness_delay_s: float = DEFAULT_INITIAL_READINESS_DELAY_S
    downscale_stabilization_window_s: float = DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S
    legacy_scale_up_limit_factor: float = LEGACY_SCALE_UP_LIMIT_FACTOR
    legacy_scale_up_limit_minimum: float = LEGACY_SCALE_UP_LIMIT_MINIMUM

    def __post_init__(self) -> None:
        for name in ("tolerance", "cpu_initialization_period_s", "initial_readiness_delay_s",
                     "downscale_stabilization_window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative")


def tolerances_for_hpa(behavior: HPABehavior | None, config: HPAControllerConfig) -> Tolerances:
    """Per-HPA tolerances (``tolerancesForHpa``, horizontal.go): rule tolerance or controller default.

    Args:
        behavior: The (defaulted) behavior, or ``None``.
        config: Controller settings.

    Returns:
        The tolerance band.
    """
    scale_down = scale_up = config.tolerance
    if behavior is not None:
        if behavior.scale_down is not None and behavior.scale_down.tolerance is not None:
            scale_down = behavior.scale_down.tolerance
        if behavior.scale_up is not None and behavior.scale_up.tolerance is not None:
            scale_up = behavior.scale_up.tolerance
    return Tolerances(scale_down=scale_down, scale_up=scale_up)


# ---------------------------------------------------------------------------------------
# History and normalisation (horizontal.go)
# ---------------------------------------------------------------------------------------


@dataclass
class TimestampedRecommendation:
    """An unstabilised recommendation and when it was made (``timestampedRecommendation``)."""

    recommendation: int
    timestamp_s: float


@dataclass
class TimestampedScaleEvent:
    """A past rescale (``timestampedScaleEvent``): replicas added or removed (non-negative)."""

    replica_change: int
    timestamp_s: float
    outdated: bool = False


@dataclass
class HPAState:
    """Controller memory for one HPA: the per-key maps of ``HorizontalController``.

    The lists are kept exactly as Go keeps its slices (entries are reused in place, never
    deleted), so list lengths can be compared with the Go tests.

    Attributes:
        recommendations: Past unstabilised recommendations; ``None`` until the first reconcile
            (Go's nil slice), which records the current replica count as a first entry.
        scale_up_events: Past scale-ups (behavior HPAs only).
        scale_down_events: Past scale-downs (behavior HPAs only).
    """

    recommendations: list[TimestampedRecommendation] | None = None
    scale_up_events: list[TimestampedScaleEvent] = field(default_factory=list)
    scale_down_events: list[TimestampedScaleEvent] = field(default_factory=list)


def record_initial_recommendation(state: HPAState, current_replicas: int, now_s: float) -> None:
    """Seed the history with the current count on first sight (``recordInitialRecommendation``).

    This is why a freshly started controller never scales down during its first
    stabilisation window: the current count stays in the window.

    Args:
        state: History to update.
        current_replicas: ``scale.spec.replicas``.
        now_s: Reconcile time.
    """
    if state.recommendations is None:
        state.recommendations = [TimestampedRecommendation(current_replicas, now_s)]


def stabilize_recommendation(
    state: HPAState, now_s: float, prenormalized_desired_replicas: int, window_s: float
) -> int:
    """Max over recent recommendations, then record the new one (``stabilizeRecommendation``).

    Used by HPAs without ``behavior``. A sample exactly at the cutoff still counts here
    (Go tests ``Before(cutoff)``), unlike in :func:`stabilize_recommendation_with_behaviors`.

    Args:
        state: History; the new recommendation replaces the last expired entry or is appended.
        now_s: Reconcile time.
        prenormalized_desired_replicas: The metrics' recommendation.
        window_s: ``--horizontal-pod-autoscaler-downscale-stabilization``.

    Returns:
        The stabilised recommendation.
    """
    if state.recommendations is None:
        state.recommendations = []
    max_recommendation = prenormalized_desired_replicas
    old_sample_index = -1
    cutoff = now_s - window_s
    for index, rec in enumerate(state.recommendations):
        if rec.timestamp_s < cutoff:
            old_sample_index = index
        elif rec.recommendation > max_recommendation:
            max_recommendation = rec.recommendation
    new_rec = TimestampedRecommendation(prenormalized_desired_replicas, now_s)
    if old_sample_index >= 0:
        state.recommendations[old_sample_index] = new_rec
    else:
        state.recommendations.append(new_rec)
    return max_recommendation


def calculate_scale_up_limit(current_replicas: int, config: HPAControllerConfig | None = None) -> int:
    """Largest allowed count for behaviour-less HPAs (``calculateScaleUpLimit``).

    Args:
        current_replicas: Current count.
        config: Supplies the factor (2) and minimum (4).

    Returns:
        ``int(max(factor * current, minimum))``.
    """
    config = config or HPAControllerConfig()
    return int(max(config.legacy_scale_up_limit_factor * current_replicas, config.legacy_scale_up_limit_minimum))


def convert_desired_replicas_with_rules(
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    config: HPAControllerConfig | None = None,
) -> tuple[int, str]:
    """Clamp for behaviour-less HPAs (``convertDesiredReplicasWithRules``, horizontal.go).

    Args:
        current_replicas: Current count.
        desired_replicas: Stabilised recommendation.
        min_replicas: ``spec.minReplicas``.
        max_replicas: ``spec.maxReplicas``.
        config: Supplies the scale-up limit constants.

    Returns:
        ``(replicas, ScalingLimited reason)``.
    """
    scale_up_limit = calculate_scale_up_limit(current_replicas, config)
    if max_replicas > scale_up_limit:
        maximum_allowed, limiting_reason = scale_up_limit, "ScaleUpLimit"
    else:
        maximum_allowed, limiting_reason = max_replicas, "TooManyReplicas"
    if desired_replicas < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired_replicas > maximum_allowed:
        return maximum_allowed, limiting_reason
    return desired_replicas, "DesiredWithinRange"


@dataclass(frozen=True)
class NormalizationArg:
    """Everything the behavior normalisation needs (``NormalizationArg``, horizontal.go).

    Attributes:
        scale_up_rules: Populated scale-up rules.
        scale_down_rules: Populated scale-down rules with a window set.
        min_replicas: ``spec.minReplicas``.
        max_replicas: ``spec.maxReplicas``.
        current_replicas: Current count.
        desired_replicas: Recommendation being normalised.
    """

    scale_up_rules: HPAScalingRules
    scale_down_rules: HPAScalingRules
    min_replicas: int
    max_replicas: int
    current_replicas: int
    desired_replicas: int


def stabilize_recommendation_with_behaviors(state: HPAState, now_s: float, args: NormalizationArg) -> tuple[int, str]:
    """Stabilise within both windows, then record (``stabilizeRecommendationWithBehaviors``).

    The result is the current count pushed up to the minimum recommendation of the scale-up
    window and down to the maximum of the scale-down window, so the HPA only moves when every
    recommendation in a window agrees on the direction.

    Args:
        state: History; the new (unstabilised) recommendation replaces the last entry older
            than both windows, or is appended.
        now_s: Reconcile time.
        args: Normalisation inputs; windows come from the rules.

    Returns:
        ``(stabilised recommendation, reason to report if it differs from the input)``.
    """
    if state.recommendations is None:
        state.recommendations = []
    up_recommendation = args.desired_replicas
    up_cutoff = now_s - args.scale_up_rules.stabilization_window_seconds
    down_recommendation = args.desired_replicas
    down_cutoff = now_s - args.scale_down_rules.stabilization_window_seconds
    old_sample_index = -1
    for index, rec in enumerate(state.recommendations):
        if rec.timestamp_s > up_cutoff:
            up_recommendation = min(rec.recommendation, up_recommendation)
        if rec.timestamp_s > down_cutoff:
            down_recommendation = max(rec.recommendation, down_recommendation)
        if rec.timestamp_s < up_cutoff and rec.timestamp_s < down_cutoff:
            old_sample_index = index

    recommendation = args.current_replicas
    if recommendation < up_recommendation:
        recommendation = up_recommendation
    if recommendation > down_recommendation:
        recommendation = down_recommendation

    new_rec = TimestampedRecommendation(args.desired_replicas, now_s)
    if old_sample_index >= 0:
        state.recommendations[old_sample_index] = new_rec
    else:
        state.recommendations.append(new_rec)

    reason = "ScaleUpStabilized" if args.desired_replicas >= args.current_replicas else "ScaleDownStabilized"
    return recommendation, reason


def get_replicas_change_per_period(
    period_seconds: float, scale_events: Sequence[TimestampedScaleEvent], now_s: float
) -> int:
    """Replicas changed by events strictly inside the last period (``getReplicasChangePerPeriod``).

    Args:
        period_seconds: Policy period.
        scale_events: Events of one direction.
        now_s: Reconcile time.

    Returns:
        Sum of their replica changes.
    """
    cutoff = now_s - period_seconds
    return sum(event.replica_change for event in scale_events if event.timestamp_s > cutoff)


def calculate_scale_up_limit_with_scaling_rules(
    current_replicas: int,
    scale_up_events: Sequence[TimestampedScaleEvent],
    scale_down_events: Sequence[TimestampedScaleEvent],
    rules: HPAScalingRules,
    now_s: float,
) -> int:
    """Largest count the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``).

    Each policy starts from the count at the beginning of its period (current minus what was
    added plus what was removed within it), so changes already made use up the budget.

    Args:
        current_replicas: Current count.
        scale_up_events: Past scale-ups.
        scale_down_events: Past scale-downs.
        rules: Populated scale-up rules.
        now_s: Reconcile time.

    Returns:
        The limit; may be below ``current_replicas`` (the caller raises it to current).
    """
    if rules.select_policy == "Disabled":
        return current_replicas
    if rules.select_policy == "Min":
        result, select = _INT32_MAX, min  # the smallest increase is the smallest limit
    else:
        result, select = _INT32_MIN, max
    for policy in rules.policies or ():
        added = get_replicas_change_per_period(policy.period_seconds, scale_up_events, now_s)
        deleted = get_replicas_change_per_period(policy.period_seconds, scale_down_events, now_s)
        period_start_replicas = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start_replicas + policy.value
        else:
            # Rounded up so that a small target can always grow by at least one pod.
            proposed = math.ceil(period_start_replicas * (1 + policy.value / 100))
        result = select(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    current_replicas: int,
    scale_up_events: Sequence[TimestampedScaleEvent],
    scale_down_events: Sequence[TimestampedScaleEvent],
    rules: HPAScalingRules,
    now_s: float,
) -> int:
    """Smallest count the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``).

    Args:
        current_replicas: Current count.
        scale_up_events: Past scale-ups.
        scale_down_events: Past scale-downs.
        rules: Populated scale-down rules.
        now_s: Reconcile time.

    Returns:
        The limit; may exceed ``current_replicas`` (the caller lowers it to current).
    """
    if rules.select_policy == "Disabled":
        return current_replicas
    if rules.select_policy == "Min":
        result, select = _INT32_MIN, max  # the smallest decrease is the largest limit
    else:
        result, select = _INT32_MAX, min
    for policy in rules.policies or ():
        added = get_replicas_change_per_period(policy.period_seconds, scale_up_events, now_s)
        deleted = get_replicas_change_per_period(policy.period_seconds, scale_down_events, now_s)
        period_start_replicas = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start_replicas - policy.value
        else:
            # int32(float) in Go truncates toward zero, as int() does.
            proposed = int(period_start_replicas * (1 - policy.value / 100))
        result = select(result, proposed)
    return result


def convert_desired_replicas_with_behavior_rate(
    state: HPAState, now_s: float, args: NormalizationArg
) -> tuple[int, str]:
    """Apply rate policies and min/max (``convertDesiredReplicasWithBehaviorRate``, horizontal.go).

    Args:
        state: Supplies the scale events.
        now_s: Reconcile time.
        args: Normalisation inputs (``desired_replicas`` is the stabilised recommendation).

    Returns:
        ``(replicas, ScalingLimited reason)``.
    """
    if args.desired_replicas > args.current_replicas:
        scale_up_limit = calculate_scale_up_limit_with_scaling_rules(
            args.current_replicas, state.scale_up_events, state.scale_down_events, args.scale_up_rules, now_s
        )
        # Events made under an older, looser policy can push the limit below current; never
        # scale down on the way up, wait until those events leave the period.
        scale_up_limit = max(scale_up_limit, args.current_replicas)
        if args.max_replicas > scale_up_limit:
            maximum_allowed, reason = scale_up_limit, "ScaleUpLimit"
        else:
            maximum_allowed, reason = args.max_replicas, "TooManyReplicas"
        if args.desired_replicas > maximum_allowed:
            return maximum_allowed, reason
    elif args.desired_replicas < args.current_replicas:
        scale_down_limit = calculate_scale_down_limit_with_behaviors(
            args.current_replicas, state.scale_up_events, state.scale_down_events, args.scale_down_rules, now_s
        )
        scale_down_limit = min(scale_down_limit, args.current_replicas)
        if args.min_replicas < scale_down_limit:
            minimum_allowed, reason = scale_down_limit, "ScaleDownLimit"
        else:
            minimum_allowed, reason = args.min_replicas, "TooFewReplicas"
        if args.desired_replicas < minimum_allowed:
            return minimum_allowed, reason
    return args.desired_replicas, "DesiredWithinRange"


def get_longest_policy_period(rules: HPAScalingRules) -> int:
    """Longest policy period of a direction (``getLongestPolicyPeriod``)."""
    return max((policy.period_seconds for policy in rules.policies or ()), default=0)


def mark_scale_events_outdated(
    scale_events: Sequence[TimestampedScaleEvent], longest_policy_period: float, now_s: float
) -> None:
    """Flag events older than every policy period for reuse (``markScaleEventsOutdated``)."""
    cutoff = now_s - longest_policy_period
    for event in scale_events:
        if event.timestamp_s < cutoff:
            event.outdated = True


def store_scale_event(
    state: HPAState, behavior: HPABehavior | None, now_s: float, prev_replicas: int, new_replicas: int
) -> None:
    """Remember a rescale for the rate policies (``storeScaleEvent``, horizontal.go).

    Behaviour-less HPAs store nothing. Otherwise the new event replaces the last event older
    than that direction's longest policy period, or is appended.

    Args:
        state: History to update.
        behavior: The HPA's defaulted behavior, or ``None``.
        now_s: Time of the rescale.
        prev_replicas: Count before.
        new_replicas: Count after.
    """
    if behavior is None:
        return
    if new_replicas > prev_replicas:
        events, rules, change = state.scale_up_events, behavior.scale_up, new_replicas - prev_replicas
    else:
        events, rules, change = state.scale_down_events, behavior.scale_down, prev_replicas - new_replicas
    mark_scale_events_outdated(events, get_longest_policy_period(rules), now_s)
    old_sample_index = -1
    for index, event in enumerate(events):
        if event.outdated:
            old_sample_index = index
    new_event = TimestampedScaleEvent(change, now_s, False)
    if old_sample_index >= 0:
        events[old_sample_index] = new_event
    else:
        events.append(new_event)


# ---------------------------------------------------------------------------------------
# The HPA object
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HPACondition:
    """One status condition the reconcile set (type, status, reason), without the message."""

    type: Literal["AbleToScale", "ScalingActive", "ScalingLimited"]
    status: bool
    reason: str


@dataclass
class HPADecision:
    """Result of one :meth:`HorizontalPodAutoscaler.recommend` call.

    Attributes:
        desired_replicas: Replica count to apply (``status.desiredReplicas``).
        reason: One condition reason summing the decision (see :data:`REASONS`): the
            ``ScalingActive=False`` reason if the HPA could not act, else the
            ``ScalingLimited`` reason if a limit bound, else ``ScaleUpStabilized`` /
            ``ScaleDownStabilized`` if a window held the count, else ``DesiredWithinRange``.
            When the current count was outside ``[min, max]`` it is ``TooManyReplicas`` /
            ``TooFewReplicas`` (Go only writes an event in that case).
        conditions: Conditions this reconcile set, by type.
        prenormalized_replicas: Maximum over the metrics' proposals, before stabilisation and
            limits; ``None`` when the metrics were not evaluated.
        metric_proposals: Per-metric proposals, or the error for metrics that failed.
        rescale_reason: The ``SuccessfulRescale`` event's reason text; ``""`` if no rescale.
    """

    desired_replicas: int
    reason: str
    conditions: dict[str, HPACondition]
    prenormalized_replicas: int | None = None
    metric_proposals: dict[str, MetricProposal | MetricComputationError] = field(default_factory=dict)
    rescale_reason: str = ""


def _summary_reason(able_to_scale_reason: str, limited: bool, limited_reason: str) -> str:
    """The one-word summary shared by the per-target and batched paths."""
    if limited:
        return limited_reason
    if able_to_scale_reason in ("ScaleUpStabilized", "ScaleDownStabilized"):
        return able_to_scale_reason
    return "DesiredWithinRange"


PodsByMetric = Union[Mapping[str, Union[Sequence[PodMetricSample], None]], Sequence[PodMetricSample], None]


class HorizontalPodAutoscaler:
    """One HPA object and the controller's memory of it.

    Mirrors ``HorizontalController.reconcileAutoscaler`` for a single target. Call
    :meth:`recommend` once per sync period (15 s by default in Kubernetes) and apply the
    returned count; the call records the rescale as done, as the controller does right after
    updating the scale subresource.

    Args:
        max_replicas: ``spec.maxReplicas``.
        min_replicas: ``spec.minReplicas`` (default 1; 0 needs the ``HPAScaleToZero`` gate).
        metrics: ``spec.metrics``; default one CPU target of 80%, as the API server fills in.
        behavior: ``spec.behavior``. ``None`` (the Kubernetes default) selects the
            behaviour-less normalisation; ``HPABehavior()`` gets the default policies.
        config: Controller settings.
        state: History to continue from; a fresh one by default.

    Raises:
        ValueError: Invalid replica bounds or metrics.
    """

    def __init__(
        self,
        max_replicas: int,
        min_replicas: int = 1,
        metrics: Sequence[MetricSpec] | None = None,
        behavior: HPABehavior | None = None,
        config: HPAControllerConfig | None = None,
        state: HPAState | None = None,
    ) -> None:
        if max_replicas < 1 or min_replicas < 0 or min_replicas > max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas and max >= 1, got {min_replicas}, {max_replicas}")
        self.max_replicas = int(max_replicas)
        self.min_replicas = int(min_replicas)
        if not metrics:
            metrics = (ResourceMetricSpec("cpu", target_average_utilization=DEFAULT_CPU_UTILIZATION_PERCENT),)
        self.metrics: tuple[MetricSpec, ...] = tuple(metrics)
        self.behavior = set_defaults_behavior(behavior)
        self.config = config or HPAControllerConfig()
        self.state = state if state is not None else HPAState()
        self.tolerances = tolerances_for_hpa(self.behavior, self.config)

    def __repr__(self) -> str:
        return (
            f"HorizontalPodAutoscaler(min_replicas={self.min_replicas}, max_replicas={self.max_replicas}, "
            f"metrics={self.metrics!r}, behavior={self.behavior!r})"
        )

    def _normalize_inputs(
        self, pods_by_metric: PodsByMetric
    ) -> Mapping[str, Sequence[PodMetricSample] | None]:
        """Accept a bare pod list when the HPA has a single metric."""
        if pods_by_metric is None:
            return {}
        if isinstance(pods_by_metric, Mapping):
            return pods_by_metric
        if len(self.metrics) != 1:
            raise ValueError("pass a mapping metric name -> pods when the HPA has several metrics")
        return {self.metrics[0].name: pods_by_metric}

    def compute_replicas_for_metric(
        self, metric: MetricSpec, current_replicas: int, pods: Sequence[PodMetricSample] | None, now_s: float
    ) -> MetricProposal:
        """One metric's proposal (``computeReplicasForMetric`` and the ``computeStatusFor*`` helpers).

        Args:
            metric: The metric spec.
            current_replicas: ``scale.spec.replicas``.
            pods: Pods with this metric's samples; ``None`` means the metrics API failed.
            now_s: Reconcile time.

        Returns:
            The proposal.

        Raises:
            MetricComputationError: The metric cannot be evaluated.
        """
        if pods is None:
            raise MetricComputationError(f"unable to get metric {metric.name}")
        common = (pods, self.tolerances, now_s, self.config.cpu_initialization_period_s,
                  self.config.initial_readiness_delay_s)
        if isinstance(metric, ResourceMetricSpec):
            if metric.target_average_value_milli is not None:
                return calc_plain_metric_replicas(
                    current_replicas, metric.target_average_value_milli, metric.name, *common
                )
            return get_resource_replicas(current_replicas, metric.target_average_utilization, metric.name, *common)
        proposal = calc_plain_metric_replicas(current_replicas, metric.target_average_value_milli, "", *common)
        return MetricProposal(**{**proposal.__dict__, "metric_name": f"pods metric {metric.name}"})

    def compute_replicas_for_metrics(
        self, current_replicas: int, pods_by_metric: Mapping[str, Sequence[PodMetricSample] | None], now_s: float
    ) -> tuple[int, str, dict[str, MetricProposal | MetricComputationError], str | None]:
        """Maximum over the metrics, with Go's invalid-metric rule (``computeReplicasForMetrics``).

        If every metric failed, or some failed and the valid ones ask for fewer replicas than
        now, the HPA does nothing (``-1``): a broken metric may never cause a scale-down.

        Args:
            current_replicas: ``scale.spec.replicas``.
            pods_by_metric: Metric name -> pods with that metric's samples.
            now_s: Reconcile time.

        Returns:
            ``(replicas or -1, name of the deciding metric, per-metric results, reason of the
            first failed metric or None)``.
        """
        replicas = 0
        metric_name = ""
        results: dict[str, MetricProposal | MetricComputationError] = {}
        invalid_count = 0
        first_invalid_reason: str | None = None
        for metric in self.metrics:
            try:
                proposal = self.compute_replicas_for_metric(
                    metric, current_replicas, pods_by_metric.get(metric.name), now_s
                )
            except MetricComputationError as error:
                results[metric.name] = error
                if invalid_count == 0:
                    first_invalid_reason = metric.failure_reason
                invalid_count += 1
                continue
            results[metric.name] = proposal
            if replicas == 0 or proposal.replicas > replicas:
                replicas = proposal.replicas
                metric_name = proposal.metric_name
        if invalid_count >= len(self.metrics) or (invalid_count > 0 and replicas < current_replicas):
            return -1, "", results, first_invalid_reason
        return replicas, metric_name, results, first_invalid_reason

    def normalize_desired_replicas(
        self, now_s: float, current_replicas: int, prenormalized_desired_replicas: int
    ) -> tuple[int, dict[str, HPACondition]]:
        """Stabilise and clamp without ``behavior`` (``normalizeDesiredReplicas``, horizontal.go).

        Args:
            now_s: Reconcile time.
            current_replicas: Current count.
            prenormalized_desired_replicas: Maximum over the metrics.

        Returns:
            ``(replicas, conditions set)``.
        """
        stabilized = stabilize_recommendation(
            self.state, now_s, prenormalized_desired_replicas, self.config.downscale_stabilization_window_s
        )
        able_reason = "ScaleDownStabilized" if stabilized != prenormalized_desired_replicas else "ReadyForNewScale"
        desired, limited_reason = convert_desired_replicas_with_rules(
            current_replicas, stabilized, self.min_replicas, self.max_replicas, self.config
        )
        return desired, {
            "AbleToScale": HPACondition("AbleToScale", True, able_reason),
            "ScalingLimited": HPACondition("ScalingLimited", desired != stabilized, limited_reason),
        }

    def normalize_desired_replicas_with_behaviors(
        self, now_s: float, current_replicas: int, prenormalized_desired_replicas: int
    ) -> tuple[int, dict[str, HPACondition]]:
        """Stabilise, then rate-limit (``normalizeDesiredReplicasWithBehaviors``, horizontal.go).

        Args:
            now_s: Reconcile time.
            current_replicas: Current count.
            prenormalized_desired_replicas: Maximum over the metrics.

        Returns:
            ``(replicas, conditions set)``.
        """
        scale_down_rules = self.behavior.scale_down
        if scale_down_rules.stabilization_window_seconds is None:
            # maybeInitScaleDownStabilizationWindow: the controller flag fills the gap.
            scale_down_rules = HPAScalingRules(
                stabilization_window_seconds=int(self.config.downscale_stabilization_window_s),
                select_policy=scale_down_rules.select_policy,
                policies=scale_down_rules.policies,
                tolerance=scale_down_rules.tolerance,
            )
        args = NormalizationArg(
            scale_up_rules=self.behavior.scale_up,
            scale_down_rules=scale_down_rules,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            current_replicas=current_replicas,
            desired_replicas=prenormalized_desired_replicas,
        )
        stabilized, stabilized_reason = stabilize_recommendation_with_behaviors(self.state, now_s, args)
        able_reason = stabilized_reason if stabilized != prenormalized_desired_replicas else "ReadyForNewScale"
        args = NormalizationArg(**{**args.__dict__, "desired_replicas": stabilized})
        desired, limited_reason = convert_desired_replicas_with_behavior_rate(self.state, now_s, args)
        return desired, {
            "AbleToScale": HPACondition("AbleToScale", True, able_reason),
            "ScalingLimited": HPACondition("ScalingLimited", desired != stabilized, limited_reason),
        }

    def recommend(self, now_s: float, current_replicas: int, pods_by_metric: PodsByMetric = None) -> HPADecision:
        """Run one reconcile (``reconcileAutoscaler``, horizontal.go) and return the decision.

        Args:
            now_s: Reconcile time in seconds; must not go backwards between calls.
            current_replicas: ``scale.spec.replicas`` of the target.
            pods_by_metric: Metric name -> the target's pods with that metric's samples
                (``None`` for a metric whose fetch failed); a bare list when the HPA has one
                metric.

        Returns:
            The decision. When ``desired_replicas != current_replicas`` the rescale has been
            recorded in :attr:`state` for the rate policies.
        """
        current_replicas = int(current_replicas)
        pods_by_metric = self._normalize_inputs(pods_by_metric)
        record_initial_recommendation(self.state, current_replicas, now_s)
        conditions: dict[str, HPACondition] = {}
        prenormalized: int | None = None
        results: dict[str, MetricProposal | MetricComputationError] = {}

        if current_replicas == 0 and self.min_replicas != 0:
            # A target scaled to zero by hand is left alone until someone scales it up.
            condition = HPACondition("ScalingActive", False, "ScalingDisabled")
            return HPADecision(current_replicas, condition.reason, {condition.type: condition})
        if current_replicas > self.max_replicas:
            desired, reason = self.max_replicas, "TooManyReplicas"
            rescale_reason = "Current number of replicas above Spec.MaxReplicas"
        elif current_replicas < self.min_replicas:
            desired, reason = self.min_replicas, "TooFewReplicas"
            rescale_reason = "Current number of replicas below Spec.MinReplicas"
        else:
            metric_replicas, metric_name, results, invalid_reason = self.compute_replicas_for_metrics(
                current_replicas, pods_by_metric, now_s
            )
            if metric_replicas == -1:
                condition = HPACondition("ScalingActive", False, invalid_reason or "FailedGetResourceMetric")
                return HPADecision(current_replicas, condition.reason, {condition.type: condition},
                                   metric_proposals=results)
            conditions["ScalingActive"] = HPACondition("ScalingActive", True, "ValidMetricFound")
            prenormalized = max(metric_replicas, 0)
            rescale_reason = ""
            if prenormalized > current_replicas:
                rescale_reason = f"{metric_name} above target"
            elif prenormalized < current_replicas:
                rescale_reason = "All metrics below target"
            if self.behavior is None:
                desired, normalization_conditions = self.normalize_desired_replicas(
                    now_s, current_replicas, prenormalized
                )
            else:
                desired, normalization_conditions = self.normalize_desired_replicas_with_behaviors(
                    now_s, current_replicas, prenormalized
                )
            conditions.update(normalization_conditions)
            limited = conditions["ScalingLimited"]
            reason = _summary_reason(conditions["AbleToScale"].reason, limited.status, limited.reason)

        if desired != current_replicas:
            store_scale_event(self.state, self.behavior, now_s, current_replicas, desired)
        else:
            rescale_reason = ""
        return HPADecision(desired, reason, conditions, prenormalized, results, rescale_reason)


# ---------------------------------------------------------------------------------------
# Batched version for simulators
# ---------------------------------------------------------------------------------------


class HistoryCapacityError(RuntimeError):
    """A batched history buffer is full; raise its capacity."""


@dataclass
class BatchedHPAState:
    """History of many HPAs (environments x services) as fixed-size arrays.

    Each ``[b, s]`` row reproduces the Go slices of one HPA slot by slot: ``*_len`` is the
    slice length, entries beyond it are unused. Go reuses expired entries, so a length stays
    below (entries inside the longest window) + 1; at a 15 s sync period and the default 300 s
    window that is 21. A full buffer raises :class:`HistoryCapacityError` instead of
    silently dropping history.

    Shapes:
        - ``rec_value``, ``rec_time``: ``(B, S, R)`` recommendations and their times.
        - ``up_change``, ``up_time``, ``up_outdated`` and the ``down_*`` triple: ``(B, S, E)``.
        - ``rec_len``, ``up_len``, ``down_len``: ``(B, S)``.
    """

    rec_value: np.ndarray
    rec_time: np.ndarray
    rec_len: np.ndarray
    up_change: np.ndarray
    up_time: np.ndarray
    up_outdated: np.ndarray
    up_len: np.ndarray
    down_change: np.ndarray
    down_time: np.ndarray
    down_outdated: np.ndarray
    down_len: np.ndarray

    @classmethod
    def empty(
        cls, batch_size: int, num_services: int, recommendation_capacity: int = 32, event_capacity: int = 32
    ) -> BatchedHPAState:
        """A state with no history (every HPA as never reconciled).

        Args:
            batch_size: ``B``, number of environments.
            num_services: ``S``, scale targets per environment.
            recommendation_capacity: ``R``.
            event_capacity: ``E``, per direction.

        Returns:
            The state.
        """
        rows = (batch_size, num_services)
        return cls(
            rec_value=np.zeros((*rows, recommendation_capacity), np.int64),
            rec_time=np.zeros((*rows, recommendation_capacity), np.float64),
            rec_len=np.zeros(rows, np.int64),
            up_change=np.zeros((*rows, event_capacity), np.int64),
            up_time=np.zeros((*rows, event_capacity), np.float64),
            up_outdated=np.zeros((*rows, event_capacity), bool),
            up_len=np.zeros(rows, np.int64),
            down_change=np.zeros((*rows, event_capacity), np.int64),
            down_time=np.zeros((*rows, event_capacity), np.float64),
            down_outdated=np.zeros((*rows, event_capacity), bool),
            down_len=np.zeros(rows, np.int64),
        )

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the history of some HPAs (e.g. environments being reset).

        Args:
            mask: Boolean ``(B,)`` or ``(B, S)``; ``None`` resets everything.
        """
        if mask is None:
            mask = np.ones(self.rec_len.shape, bool)
        mask = np.broadcast_to(np.asarray(mask, bool).reshape(np.shape(mask) + (1,) * (2 - np.ndim(mask))),
                               self.rec_len.shape)
        for length in (self.rec_len, self.up_len, self.down_len):
            length[mask] = 0
        self.up_outdated[mask] = False
        self.down_outdated[mask] = False


@dataclass
class BatchedHPADecision:
    """Output of :func:`batched_hpa_recommend`.

    Shapes:
        - ``desired_replicas``: ``(B, S)`` int64.
        - ``reason_code``: ``(B, S)`` int8, indices into :data:`REASONS`.
    """

    desired_replicas: np.ndarray
    reason_code: np.ndarray

    def reasons(self) -> np.ndarray:
        """The reason strings, shape ``(B, S)``."""
        return np.asarray(REASONS, dtype=object)[self.reason_code]


def _last_true_index(mask: np.ndarray) -> np.ndarray:
    """Index of the last True along the last axis, or -1 where there is none."""
    size = mask.shape[-1]
    last = size - 1 - np.argmax(mask[..., ::-1], axis=-1)
    return np.where(mask.any(axis=-1), last, -1)


def _write_slot(
    arrays: Sequence[tuple[np.ndarray, np.ndarray]],
    length: np.ndarray,
    reuse_index: np.ndarray,
    mask: np.ndarray,
    what: str,
) -> None:
    """Replace the reusable entry or append, like the Go slices (rows in ``mask`` only)."""
    write_index = np.where(reuse_index >= 0, reuse_index, length)
    capacity = arrays[0][0].shape[-1]
    if np.any(mask & (write_index >= capacity)):
        raise HistoryCapacityError(
            f"{what} history is full ({capacity} entries); create BatchedHPAState with a larger capacity"
        )
    rows = np.nonzero(mask)
    slots = rows + (write_index[rows],)
    for target, values in arrays:
        target[slots] = values[rows]
    length[rows] = np.maximum(length[rows], write_index[rows] + 1)


def _batched_policy_limit(
    rules: HPAScalingRules,
    current: np.ndarray,
    now: np.ndarray,
    state: BatchedHPAState,
    scale_up: bool,
) -> np.ndarray:
    """Vectorised :func:`calculate_scale_up_limit_with_scaling_rules` / scale-down twin."""
    if rules.select_policy == "Disabled":
        return current.copy()
    widest_up = rules.select_policy != "Min"
    if scale_up:
        select, start = (np.maximum, _INT32_MIN) if widest_up else (np.minimum, _INT32_MAX)
    else:
        select, start = (np.minimum, _INT32_MAX) if widest_up else (np.maximum, _INT32_MIN)
    result = np.full(current.shape, start, np.int64)
    up_valid = np.arange(state.up_change.shape[-1]) < state.up_len[..., None]
    down_valid = np.arange(state.down_change.shape[-1]) < state.down_len[..., None]
    for policy in rules.policies or ():
        cutoff = (now - policy.period_seconds)[..., None]
        added = np.where(up_valid & (state.up_time > cutoff), state.up_change, 0).sum(-1)
        deleted = np.where(down_valid & (state.down_time > cutoff), state.down_change, 0).sum(-1)
        period_start = current - added + deleted
        if policy.type == "Pods":
            proposed = period_start + policy.value if scale_up else period_start - policy.value
        elif scale_up:
            proposed = np.ceil(period_start * (1 + policy.value / 100)).astype(np.int64)
        else:
            proposed = np.trunc(period_start * (1 - policy.value / 100)).astype(np.int64)
        result = select(result, proposed)
    return result


def batched_hpa_recommend(
    state: BatchedHPAState,
    now_s: float | np.ndarray,
    current_replicas: np.ndarray,
    ready_pods: np.ndarray,
    utilization_percent: np.ndarray,
    target_utilization: np.ndarray | int,
    min_replicas: np.ndarray | int,
    max_replicas: np.ndarray | int,
    behavior: HPABehavior | None = None,
    config: HPAControllerConfig | None = None,
) -> BatchedHPADecision:
    """One reconcile of ``B x S`` CPU-utilisation HPAs at once, for a simulator.

    Equals :meth:`HorizontalPodAutoscaler.recommend` (same desired count, same reason) for an
    HPA with one ``ResourceMetricSpec("cpu", target)`` whose pods are all running, ready and
    past initialisation, all reporting a sample. That covers the ``reconcileAutoscaler``
    branches (scaling disabled at 0, out-of-range counts, no pods), the tolerance, the
    ``ceil`` rule, both normalisations and the history. Rows with no ready pods behave like
    the controller with an empty pod list: no change, reason ``FailedGetResourceMetric``.

    Shapes:
        ``B`` environments, ``S`` services; every array argument broadcasts to ``(B, S)``.

    Args:
        state: History, updated in place.
        now_s: Reconcile time (scalar or broadcastable array).
        current_replicas: Current ``spec.replicas``.
        ready_pods: Pods whose samples count (Go's ``readyPodCount``).
        utilization_percent: ``100 * sum(usage) / sum(request)`` over those pods; it is
            truncated to an integer percent as the controller does.
        target_utilization: Target percent, positive.
        min_replicas: ``spec.minReplicas``.
        max_replicas: ``spec.maxReplicas``.
        behavior: One ``spec.behavior`` shared by all rows (``None``: behaviour-less HPAs).
        config: Controller settings.

    Returns:
        Desired counts and reason codes. Rescales are recorded in ``state``.

    Raises:
        HistoryCapacityError: A history buffer overflowed.
        ValueError: Non-positive targets or negative utilisation.
    """
    config = config or HPAControllerConfig()
    behavior = set_defaults_behavior(behavior)
    shape = state.rec_len.shape

    def as_rows(values: np.ndarray | float, dtype: type) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=dtype), shape)

    now = as_rows(now_s, np.float64)
    current = as_rows(current_replicas, np.int64)
    ready = as_rows(ready_pods, np.int64)
    utilization = as_rows(utilization_percent, np.float64)
    target = as_rows(target_utilization, np.int64)
    min_r = as_rows(min_replicas, np.int64)
    max_r = as_rows(max_replicas, np.int64)
    if np.any(target <= 0):
        raise ValueError("target_utilization must be positive")
    if np.any(utilization < 0):
        raise ValueError("utilization_percent must be non-negative")

    # recordInitialRecommendation: a never-seen HPA starts its history with the current count.
    first_sight = state.rec_len == 0
    state.rec_value[..., 0] = np.where(first_sight, current, state.rec_value[..., 0])
    state.rec_time[..., 0] = np.where(first_sight, now, state.rec_time[..., 0])
    state.rec_len[first_sight] = 1

    desired = current.copy()
    reason = np.zeros(shape, np.int8)
    disabled = (current == 0) & (min_r != 0)
    above = ~disabled & (current > max_r)
    below = ~disabled & ~above & (current < min_r)
    in_range = ~(disabled | above | below)
    no_pods = in_range & (ready <= 0)
    active = in_range & ~no_pods
    reason[disabled] = REASON_CODES["ScalingDisabled"]
    desired[above] = max_r[above]
    reason[above] = REASON_CODES["TooManyReplicas"]
    desired[below] = min_r[below]
    reason[below] = REASON_CODES["TooFewReplicas"]
    reason[no_pods] = REASON_CODES["FailedGetResourceMetric"]

    # GetResourceReplicas, simple branch: integer utilisation, tolerance, ceil(ratio * ready).
    tolerances = tolerances_for_hpa(behavior, config)
    ratio = np.floor(utilization) / target
    within = ((1.0 - tolerances.scale_down) <= ratio) & (ratio <= (1.0 + tolerances.scale_up))
    proposal = np.where(within, current, np.ceil(ratio * ready)).astype(np.int64)
    prenormalized = np.maximum(proposal, 0)

    slot = np.arange(state.rec_value.shape[-1])
    valid = slot < state.rec_len[..., None]
    if behavior is None:
        # normalizeDesiredReplicas: max over the downscale window (cutoff inclusive).
        cutoff = (now - config.downscale_stabilization_window_s)[..., None]
        old = valid & (state.rec_time < cutoff)
        counted = valid & ~old
        recent_max = np.where(counted, state.rec_value, _INT32_MIN).max(-1)
        stabilized = np.maximum(prenormalized, recent_max)
        _write_slot([(state.rec_value, prenormalized), (state.rec_time, now)], state.rec_len,
                    _last_true_index(old), active, "recommendation")
        able_stabilized = stabilized != prenormalized
        able_code = np.full(shape, REASON_CODES["ScaleDownStabilized"], np.int8)
        scale_up_limit = np.trunc(np.maximum(config.legacy_scale_up_limit_factor * current,
                                             config.legacy_scale_up_limit_minimum)).astype(np.int64)
        cap_is_rate = max_r > scale_up_limit
        maximum_allowed = np.where(cap_is_rate, scale_up_limit, max_r)
        too_few = stabilized < min_r
        too_many = ~too_few & (stabilized > maximum_allowed)
        normalized = np.where(too_few, min_r, np.where(too_many, maximum_allowed, stabilized))
        limited_code = np.where(too_few, REASON_CODES["TooFewReplicas"],
                                np.where(cap_is_rate, REASON_CODES["ScaleUpLimit"], REASON_CODES["TooManyReplicas"]))
    else:
        # normalizeDesiredReplicasWithBehaviors: stabilise within both windows ...
        up_rules = behavior.scale_up
        down_rules = behavior.scale_down
        down_window = down_rules.stabilization_window_seconds
        if down_window is None:
            down_window = int(config.downscale_stabilization_window_s)
        up_cutoff = (now - up_rules.stabilization_window_seconds)[..., None]
        down_cutoff = (now - down_window)[..., None]
        up_recommendation = np.minimum(
            prenormalized, np.where(valid & (state.rec_time > up_cutoff), state.rec_value, _INT32_MAX).min(-1)
        )
        down_recommendation = np.maximum(
            prenormalized, np.where(valid & (state.rec_time > down_cutoff), state.rec_value, _INT32_MIN).max(-1)
        )
        stabilized = np.minimum(np.maximum(current, up_recommendation), down_recommendation)
        old = valid & (state.rec_time < up_cutoff) & (state.rec_time < down_cutoff)
        _write_slot([(state.rec_value, prenormalized), (state.rec_time, now)], state.rec_len,
                    _last_true_index(old), active, "recommendation")
        able_stabilized = stabilized != prenormalized
        able_code = np.where(prenormalized >= current, REASON_CODES["ScaleUpStabilized"],
                             REASON_CODES["ScaleDownStabilized"]).astype(np.int8)
        # ... then the rate policies and min/max.
        going_up = stabilized > current
        going_down = stabilized < current
        up_limit = np.maximum(_batched_policy_limit(up_rules, current, now, state, scale_up=True), current)
        up_is_rate = max_r > up_limit
        maximum_allowed = np.where(up_is_rate, up_limit, max_r)
        down_limit = np.minimum(_batched_policy_limit(down_rules, current, now, state, scale_up=False), current)
        down_is_rate = min_r < down_limit
        minimum_allowed = np.where(down_is_rate, down_limit, min_r)
        capped_up = going_up & (stabilized > maximum_allowed)
        capped_down = going_down & (stabilized < minimum_allowed)
        normalized = np.where(capped_up, maximum_allowed, np.where(capped_down, minimum_allowed, stabilized))
        limited_code = np.where(
            going_up,
            np.where(up_is_rate, REASON_CODES["ScaleUpLimit"], REASON_CODES["TooManyReplicas"]),
            np.where(down_is_rate, REASON_CODES["ScaleDownLimit"], REASON_CODES["TooFewReplicas"]),
        )

    limited = normalized != stabilized
    summary = np.where(limited, limited_code, np.where(able_stabilized, able_code, REASON_CODES["DesiredWithinRange"]))
    desired = np.where(active, normalized, desired)
    reason = np.where(active, summary, reason).astype(np.int8)

    if behavior is not None:
        # storeScaleEvent, for every row that rescales (out-of-range rows included).
        for direction, rules in (("up", behavior.scale_up), ("down", behavior.scale_down)):
            rescaled = desired > current if direction == "up" else desired < current
            change = np.abs(desired - current)
            times = getattr(state, f"{direction}_time")
            outdated = getattr(state, f"{direction}_outdated")
            length = getattr(state, f"{direction}_len")
            event_valid = np.arange(times.shape[-1]) < length[..., None]
            cutoff = (now - get_longest_policy_period(rules))[..., None]
            outdated |= rescaled[..., None] & event_valid & (times < cutoff)
            _write_slot(
                [(getattr(state, f"{direction}_change"), change), (times, now), (outdated, np.zeros(shape, bool))],
                length, _last_true_index(event_valid & outdated), rescaled, f"scale-{direction} event",
            )
    return BatchedHPADecision(desired_replicas=desired.astype(np.int64), reason_code=reason)
