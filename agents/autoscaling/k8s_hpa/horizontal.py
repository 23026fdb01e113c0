"""The HPA controller's reconcile for one target (``pkg/controller/podautoscaler/horizontal.go``).

:class:`HorizontalPodAutoscaler` runs ``reconcileAutoscaler``: the per-metric proposals
(:mod:`~agents.autoscaling.k8s_hpa.replica_calculator`), the maximum over metrics, min/max
clamps, the stabilisation windows and the ``behavior`` rate policies, with the controller's
memory of past recommendations and rescales kept in an :class:`HPAState`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agents.autoscaling.k8s_hpa.api import (
    HPABehavior,
    HPAScalingRules,
    MetricComputationError,
    MetricSpec,
    PodMetricSample,
    PodsByMetric,
    ResourceMetricSpec,
)
from agents.autoscaling.k8s_hpa.config import HPAControllerConfig
from agents.autoscaling.k8s_hpa.defaults import DEFAULT_CPU_UTILIZATION_PERCENT, set_defaults_behavior
from agents.autoscaling.k8s_hpa.replica_calculator import (
    MetricProposal,
    Tolerances,
    calc_plain_metric_replicas,
    get_resource_replicas,
)

#: Go's ``math.MinInt32`` / ``math.MaxInt32``: start values of the min/max folds over replica counts.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


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
# History and normalisation
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
        result, select = INT32_MAX, min  # the smallest increase is the smallest limit
    else:
        result, select = INT32_MIN, max
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
        result, select = INT32_MIN, max  # the smallest decrease is the largest limit
    else:
        result, select = INT32_MAX, min
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
