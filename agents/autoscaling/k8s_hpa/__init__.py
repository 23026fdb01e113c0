"""The Kubernetes HorizontalPodAutoscaler rule, ported from the controller's Go source.

This is a line-by-line port of the decision logic in ``kubernetes/kubernetes``,
``pkg/controller/podautoscaler`` and of the API defaults in ``pkg/apis/autoscaling/v2``, one
module per Go file:

* :mod:`.api` -- the inputs (:class:`PodMetricSample`) and the ``autoscaling/v2`` spec types
  (metrics, ``behavior``), with the API server's validation.
* :mod:`.defaults` -- API defaulting of ``spec.behavior`` (``v2/defaults.go``).
* :mod:`.config` -- the controller's flags (``config/v1alpha1/defaults.go``).
* :mod:`.utilization` -- usage ratios (``metrics/utilization.go``).
* :mod:`.replica_calculator` -- pod grouping and one metric's proposal (``replica_calculator.go``).
* :mod:`.horizontal` -- the reconcile of one HPA, its history and normalisation (``horizontal.go``).
* :mod:`.batched` -- the same rule vectorised over ``[B, S]`` for simulators (no Go counterpart).

Every public function names the Go function it mirrors; where Go behaves surprisingly the
port keeps the surprise and a comment says so. It knows nothing about the digital twin or a
live cluster: callers describe pods with :class:`PodMetricSample` and get a replica count back.

Two entry points:

* :class:`HorizontalPodAutoscaler` -- one HPA object (one scale target). ``recommend`` runs
  one reconcile (``reconcileAutoscaler``): pod grouping, the per-metric replica calculation,
  the maximum over metrics, min/max clamps, stabilisation windows and ``behavior`` rate
  policies, with the history kept in an :class:`HPAState`.
* :func:`batched_hpa_recommend` -- the same rule vectorised over ``[B, S]`` (environments x
  services) for what a simulator produces: one CPU-utilisation metric, pods of equal requests
  given as the counts of Go's groups (ready, unready, missing) with the ready pods' usage.
  History lives in a :class:`BatchedHPAState` of fixed-size arrays that reproduce the Go slices
  slot by slot, so both entry points agree exactly (tested on random pods of every group).

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

from agents.autoscaling.k8s_hpa.api import (
    DEFAULT_METRIC_WINDOW_S,
    LONG_AGO_S,
    HPABehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricComputationError,
    MetricSpec,
    PodMetricSample,
    PodPhase,
    PodsByMetric,
    PodsMetricSpec,
    PolicyType,
    ResourceMetricSpec,
    SelectPolicy,
)
from agents.autoscaling.k8s_hpa.batched import (
    BatchedHPADecision,
    BatchedHPAState,
    HistoryCapacityError,
    batched_hpa_recommend,
)
from agents.autoscaling.k8s_hpa.config import (
    DEFAULT_CPU_INITIALIZATION_PERIOD_S,
    DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S,
    DEFAULT_INITIAL_READINESS_DELAY_S,
    DEFAULT_SYNC_PERIOD_S,
    DEFAULT_TOLERANCE,
    LEGACY_SCALE_UP_LIMIT_FACTOR,
    LEGACY_SCALE_UP_LIMIT_MINIMUM,
    HPAControllerConfig,
)
from agents.autoscaling.k8s_hpa.defaults import (
    DEFAULT_CPU_UTILIZATION_PERCENT,
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    generate_hpa_scale_down_rules,
    generate_hpa_scale_up_rules,
    set_defaults_behavior,
)
from agents.autoscaling.k8s_hpa.horizontal import (
    REASON_CODES,
    REASONS,
    HorizontalPodAutoscaler,
    HPACondition,
    HPADecision,
    HPAState,
    NormalizationArg,
    TimestampedRecommendation,
    TimestampedScaleEvent,
    calculate_scale_down_limit_with_behaviors,
    calculate_scale_up_limit,
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    get_longest_policy_period,
    get_replicas_change_per_period,
    mark_scale_events_outdated,
    record_initial_recommendation,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
    tolerances_for_hpa,
)
from agents.autoscaling.k8s_hpa.replica_calculator import (
    MetricProposal,
    PodGroups,
    Tolerances,
    calc_plain_metric_replicas,
    calculate_requests,
    get_resource_replicas,
    group_pods,
)
from agents.autoscaling.k8s_hpa.utilization import get_metric_usage_ratio, get_resource_utilization_ratio

__all__ = [
    "DEFAULT_CPU_INITIALIZATION_PERIOD_S",
    "DEFAULT_CPU_UTILIZATION_PERCENT",
    "DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S",
    "DEFAULT_INITIAL_READINESS_DELAY_S",
    "DEFAULT_METRIC_WINDOW_S",
    "DEFAULT_SCALE_DOWN_RULES",
    "DEFAULT_SCALE_UP_RULES",
    "DEFAULT_SYNC_PERIOD_S",
    "DEFAULT_TOLERANCE",
    "LEGACY_SCALE_UP_LIMIT_FACTOR",
    "LEGACY_SCALE_UP_LIMIT_MINIMUM",
    "LONG_AGO_S",
    "REASONS",
    "REASON_CODES",
    "BatchedHPADecision",
    "BatchedHPAState",
    "HPABehavior",
    "HPACondition",
    "HPAControllerConfig",
    "HPADecision",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HPAState",
    "HistoryCapacityError",
    "HorizontalPodAutoscaler",
    "MetricComputationError",
    "MetricProposal",
    "MetricSpec",
    "NormalizationArg",
    "PodGroups",
    "PodMetricSample",
    "PodPhase",
    "PodsByMetric",
    "PodsMetricSpec",
    "PolicyType",
    "ResourceMetricSpec",
    "SelectPolicy",
    "TimestampedRecommendation",
    "TimestampedScaleEvent",
    "Tolerances",
    "batched_hpa_recommend",
    "calc_plain_metric_replicas",
    "calculate_requests",
    "calculate_scale_down_limit_with_behaviors",
    "calculate_scale_up_limit",
    "calculate_scale_up_limit_with_scaling_rules",
    "convert_desired_replicas_with_behavior_rate",
    "convert_desired_replicas_with_rules",
    "generate_hpa_scale_down_rules",
    "generate_hpa_scale_up_rules",
    "get_longest_policy_period",
    "get_metric_usage_ratio",
    "get_replicas_change_per_period",
    "get_resource_replicas",
    "get_resource_utilization_ratio",
    "group_pods",
    "mark_scale_events_outdated",
    "record_initial_recommendation",
    "set_defaults_behavior",
    "stabilize_recommendation",
    "stabilize_recommendation_with_behaviors",
    "store_scale_event",
    "tolerances_for_hpa",
]
