"""Inputs and spec types of the HPA port: pods with their samples, metrics, ``behavior``.

``PodMetricSample`` stands for what the controller reads about one pod (pod lister plus the
metrics API); the spec dataclasses mirror the ``autoscaling/v2`` types of
``pkg/apis/autoscaling/types.go`` and check what the API server's validation
(``pkg/apis/autoscaling/validation``) would refuse. Their defaults live in
:mod:`agents.autoscaling.k8s_hpa.defaults`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
PolicyType = Literal["Pods", "Percent"]


#: Window metrics-server reports with a CPU sample (its resolution); callers should pass
#: what their metrics source reports. Only the CPU initialisation check reads it.
DEFAULT_METRIC_WINDOW_S = 15.0
#: Go's zero ``time.Time`` plays "long ago" in pod fixtures. Any finite instant far before a
#: simulation's start compares the same way (a zero start time plus a delay is still after a
#: zero transition time, which ``-inf`` would not reproduce).
LONG_AGO_S = -1.0e9


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


#: Metric name -> pods with that metric's samples (``None``: the fetch failed), or a bare pod
#: list for an HPA with one metric.
PodsByMetric = Union[Mapping[str, Union[Sequence[PodMetricSample], None]], Sequence[PodMetricSample], None]


class MetricComputationError(Exception):
    """A metric could not produce a replica count (the Go functions' ``err`` return)."""


# ---------------------------------------------------------------------------------------
# HPA spec: metrics and behavior (autoscaling/v2 types)
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
