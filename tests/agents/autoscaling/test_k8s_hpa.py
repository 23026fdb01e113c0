"""Tests for the Kubernetes HPA port (agents/autoscaling/k8s_hpa/).

Three kinds of tests:

* Ports of the Go unit tests in ``kubernetes/kubernetes`` ``pkg/controller/podautoscaler``
  (``replica_calculator_test.go``, ``horizontal_test.go``); each test or case keeps the Go
  name, inputs and expected outputs. The Go fixtures are rebuilt by the ``*_pods`` helpers
  below (two containers per pod, zero times, one-minute metric windows).
* Hand-computed cases, one group per rule of the spec, with the arithmetic in comments.
* Agreement of the batched helper with the per-target class on random inputs (hypothesis).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.autoscaling.k8s_hpa import (
    LONG_AGO_S,
    REASONS,
    BatchedHPAState,
    HistoryCapacityError,
    HorizontalPodAutoscaler,
    HPABehavior,
    HPACondition,
    HPAControllerConfig,
    HPAScalingPolicy,
    HPAScalingRules,
    HPAState,
    MetricComputationError,
    NormalizationArg,
    PodMetricSample,
    PodsMetricSpec,
    ResourceMetricSpec,
    TimestampedRecommendation,
    TimestampedScaleEvent,
    Tolerances,
    batched_hpa_recommend,
    calc_plain_metric_replicas,
    calculate_scale_down_limit_with_behaviors,
    calculate_scale_up_limit,
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    generate_hpa_scale_down_rules,
    generate_hpa_scale_up_rules,
    get_replicas_change_per_period,
    get_resource_replicas,
    group_pods,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)

NOW = 10_000.0
#: Go's zero time.Time in fixtures.
ZERO = LONG_AGO_S
#: hotCPUCreationTime / coolCPUCreationTime in horizontal_test.go.
HOT = NOW
COOL = NOW - 180.0
#: defaultTestingTolerance, defaultTestingCPUInitializationPeriod (2 min),
#: defaultTestingDelayOfInitialReadinessStatus (10 s) in replica_calculator.go.
GO_TEST_TOLERANCES = Tolerances(0.1, 0.1)
GO_TEST_CPU_INIT_S = 120.0
GO_TEST_READINESS_DELAY_S = 10.0
#: horizontal_test.go's init() raises scaleUpLimitFactor to 8 "so we don't accidentally run into it".
GO_TEST_CONFIG = HPAControllerConfig(
    cpu_initialization_period_s=GO_TEST_CPU_INIT_S,
    initial_readiness_delay_s=GO_TEST_READINESS_DELAY_S,
    legacy_scale_up_limit_factor=8.0,
)
T, F = True, False
R, P, FAILED = "Running", "Pending", "Failed"


# ---------------------------------------------------------------------------------------
# Fixture builders mirroring the Go test harnesses
# ---------------------------------------------------------------------------------------


def replica_calc_pods(
    current_replicas: int,
    requests: tuple[int, ...] = (),
    levels: tuple[int, ...] = (),
    readiness: tuple[bool, ...] | None = None,
    start_times: tuple[float, ...] | None = None,
    phases: tuple[str, ...] | None = None,
    deleted: tuple[bool, ...] | None = None,
    containers: int = 2,
) -> list[PodMetricSample]:
    """Pods as ``replicaCalcTestCase.prepareTestClientSet`` builds them.

    Each pod has two containers with the same request and usage (``makePodMetricLevels``),
    a Ready condition with zero transition time, and a sample with zero timestamp and a
    one-minute window. ``containers=1`` is for custom metrics (one value per pod).
    """
    count = max(current_replicas, len(phases or ()))
    pods = []
    for i in range(count):
        pods.append(
            PodMetricSample(
                name=f"test-pod-{i}",
                usage_milli=containers * levels[i] if i < len(levels) else None,
                request_milli=containers * requests[i] if i < len(requests) else None,
                phase=phases[i] if phases else "Running",
                ready=readiness[i] if readiness and i < len(readiness) else True,
                start_time_s=start_times[i] if start_times else ZERO,
                ready_transition_time_s=ZERO,
                metric_timestamp_s=ZERO,
                metric_window_s=60.0,
                deleted=deleted[i] if deleted else False,
            )
        )
    return pods


def controller_pods(
    count: int,
    levels: tuple[int, ...],
    requests: tuple[int, ...] | None = None,
    readiness: tuple[bool, ...] | None = None,
    start_times: tuple[float, ...] | None = None,
) -> list[PodMetricSample]:
    """Pods as ``testCase.prepareTestClient`` in horizontal_test.go builds them.

    The request and each reported level are split over two containers with integer
    division (so a level of 95 becomes 2 x 47 = 94); the Ready condition changed at the
    pod's start time; samples are taken now with a one-minute window.
    """
    if requests is not None:
        count = len(requests)
    pods = []
    for i in range(count):
        request = requests[i] if requests is not None else 1000
        start = start_times[i] if start_times else ZERO
        pods.append(
            PodMetricSample(
                name=f"test-pod-{i}",
                usage_milli=2 * (levels[i] // 2) if i < len(levels) else None,
                request_milli=2 * (request // 2),
                ready=readiness[i] if readiness else True,
                start_time_s=start,
                ready_transition_time_s=start,
                metric_timestamp_s=NOW,
                metric_window_s=60.0,
            )
        )
    return pods


def generate_scaling_rules(
    pods: int, pods_period: int, percent: int, percent_period: int, window: int
) -> HPAScalingRules:
    """``generateScalingRules`` in horizontal_test.go."""
    policies = []
    if pods:
        policies.append(HPAScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(HPAScalingPolicy("Percent", percent, percent_period))
    return HPAScalingRules(stabilization_window_seconds=window, select_policy="Max", policies=tuple(policies))


def generate_events_uniform_distribution(raw_events: list[int], period_seconds: int) -> list[TimestampedScaleEvent]:
    """``generateEventsUniformDistribution``: events centred in equal segments of the period.

    Go converts the offset with ``time.Duration(float)`` before multiplying by a second,
    which truncates it to whole seconds.
    """
    segment = period_seconds / len(raw_events)
    events = []
    for index, change in enumerate(raw_events):
        offset = int(period_seconds - segment * (index + 1) + segment / 2)
        events.append(TimestampedScaleEvent(change, NOW - offset))
    return events


# ---------------------------------------------------------------------------------------
# replica_calculator_test.go: TestGroupPods
# ---------------------------------------------------------------------------------------


def _pod(name: str, **kwargs) -> PodMetricSample:
    kwargs.setdefault("usage_milli", None)
    kwargs.setdefault("phase", "Succeeded")
    kwargs.setdefault("ready", None)
    kwargs.setdefault("start_time_s", None)
    return PodMetricSample(name=name, **kwargs)


GROUP_PODS_CASES = [
    ("void", [], "cpu", 0, set(), set(), set()),
    (
        "count in a ready pod - memory",
        [_pod("bentham", usage_milli=1, metric_timestamp_s=NOW, metric_window_s=60)],
        "memory", 1, set(), set(), set(),
    ),
    (
        "unready a pod without ready condition - CPU",
        [_pod("lucretius", usage_milli=1, start_time_s=NOW, metric_timestamp_s=ZERO)],
        "cpu", 0, {"lucretius"}, set(), set(),
    ),
    (
        "count in a ready pod with fresh metrics during initialization period - CPU",
        [_pod("bentham", usage_milli=1, start_time_s=NOW - 60, ready=True, ready_transition_time_s=NOW - 30,
              metric_timestamp_s=NOW, metric_window_s=30)],
        "cpu", 1, set(), set(), set(),
    ),
    (
        "unready a ready pod without fresh metrics during initialization period - CPU",
        [_pod("bentham", usage_milli=1, start_time_s=NOW - 60, ready=True, ready_transition_time_s=NOW - 30,
              metric_timestamp_s=NOW, metric_window_s=60)],
        "cpu", 0, {"bentham"}, set(), set(),
    ),
    (
        "unready an unready pod during initialization period - CPU",
        [_pod("lucretius", usage_milli=1, start_time_s=NOW - 600, ready=False, ready_transition_time_s=NOW - 594,
              metric_timestamp_s=ZERO)],
        "cpu", 0, {"lucretius"}, set(), set(),
    ),
    (
        "count in a ready pod without fresh metrics after initialization period - CPU",
        [_pod("bentham", usage_milli=1, start_time_s=NOW - 180, ready=True, ready_transition_time_s=NOW - 180,
              metric_timestamp_s=NOW - 120, metric_window_s=60)],
        "cpu", 1, set(), set(), set(),
    ),
    (
        "count in an unready pod that was ready after initialization period - CPU",
        [_pod("lucretius", usage_milli=1, start_time_s=NOW - 600, ready=False, ready_transition_time_s=NOW - 540,
              metric_timestamp_s=ZERO)],
        "cpu", 1, set(), set(), set(),
    ),
    (
        "unready pod that has never been ready after initialization period - CPU",
        [_pod("lucretius", usage_milli=1, start_time_s=NOW - 600, ready=False, ready_transition_time_s=NOW - 590,
              metric_timestamp_s=ZERO)],
        "cpu", 1, set(), set(), set(),
    ),
    (
        "a missing pod",
        [_pod("epicurus", start_time_s=NOW - 180)],
        "cpu", 0, set(), {"epicurus"}, set(),
    ),
    (
        "several pods",
        [
            _pod("lucretius", usage_milli=1, start_time_s=NOW, metric_timestamp_s=ZERO),
            _pod("niccolo", usage_milli=1, start_time_s=NOW - 180, ready=True, ready_transition_time_s=NOW - 180,
                 metric_timestamp_s=ZERO),
            _pod("epicurus", start_time_s=NOW - 180),
        ],
        "cpu", 1, {"lucretius"}, {"epicurus"}, set(),
    ),
    ("pending pods are unreadied", [_pod("unscheduled", phase="Pending")], "cpu", 0, {"unscheduled"}, set(), set()),
    (
        "ignore pods with deletion timestamps",
        [_pod("deleted", phase="Pending", usage_milli=1, deleted=True)],
        "cpu", 0, set(), set(), {"deleted"},
    ),
    (
        "ignore pods in a failed state",
        [_pod("failed", phase="Failed", usage_milli=1)],
        "cpu", 0, set(), set(), {"failed"},
    ),
]


@pytest.mark.parametrize(
    "pods, resource, ready_count, unready, missing, ignored",
    [case[1:] for case in GROUP_PODS_CASES],
    ids=[case[0] for case in GROUP_PODS_CASES],
)
def test_go_TestGroupPods(pods, resource, ready_count, unready, missing, ignored):
    groups = group_pods(pods, resource, NOW, GO_TEST_CPU_INIT_S, GO_TEST_READINESS_DELAY_S)
    assert groups.ready_count == ready_count
    assert groups.unready == unready
    assert groups.missing == missing
    assert groups.ignored == ignored


# ---------------------------------------------------------------------------------------
# replica_calculator_test.go: GetResourceReplicas cases
# ---------------------------------------------------------------------------------------

ONE_CPU = 1000
# (Go test, current, expected replicas, per-container requests, per-container levels, target %,
#  expected utilisation %, expected raw average, fixture extras)
RESOURCE_CASES = [
    ("TestReplicaCalcScaleUp", 3, 5, (ONE_CPU,) * 3, (300, 500, 700), 30, 50, 2 * 500, {}),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, 4, (ONE_CPU,) * 3, (300, 500, 700), 30, 60, 2 * 600,
     {"readiness": (F, T, T)}),
    ("TestReplicaCalcScaleUpHotCpuLessScale", 3, 4, (ONE_CPU,) * 3, (300, 500, 700), 30, 60, 2 * 600,
     {"start_times": (HOT, COOL, COOL)}),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, 3, (ONE_CPU,) * 3, (400, 500, 700), 30, 40, 2 * 400,
     {"readiness": (T, F, F)}),
    ("TestReplicaCalcScaleHotCpuNoScale", 3, 3, (ONE_CPU,) * 3, (400, 500, 700), 30, 40, 2 * 400,
     {"readiness": (T, F, F), "start_times": (COOL, HOT, HOT)}),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, 4, (ONE_CPU,) * 4, (500, 700), 30, 60, 2 * 600,
     {"readiness": (T, T, F, F), "phases": (R, R, FAILED, FAILED)}),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, 4, (ONE_CPU,) * 4, (500, 700), 30, 60, 2 * 600,
     {"readiness": (T, T, F, F), "phases": (R,) * 4, "deleted": (F, F, T, T)}),
    ("TestReplicaCalcScaleDown", 5, 3, (ONE_CPU,) * 5, (100, 300, 500, 250, 250), 50, 28, 2 * 280, {}),
    ("TestReplicaCalcScaleDownExcludeUnreadyPods", 5, 2, (ONE_CPU,) * 5, (100, 300, 500, 250, 250), 50, 30,
     2 * 300, {"readiness": (T, T, T, F, F)}),
    ("TestReplicaCalcScaleDownExcludeUnscheduledPods", 5, 1, (ONE_CPU,) * 5, (100,), 50, 10, 2 * 100,
     {"readiness": (T, F, F, F, F), "phases": (R, P, P, P, P)}),
    ("TestReplicaCalcScaleDownIgnoreHotCpuPods", 5, 2, (ONE_CPU,) * 5, (100, 300, 500, 250, 250), 50, 30, 2 * 300,
     {"start_times": (COOL, COOL, COOL, HOT, HOT)}),
    ("TestReplicaCalcScaleDownIgnoresFailedPods", 5, 3, (ONE_CPU,) * 7, (100, 300, 500, 250, 250), 50, 28, 2 * 280,
     {"readiness": (T,) * 5 + (F, F), "phases": (R,) * 5 + (FAILED, FAILED)}),
    ("TestReplicaCalcScaleDownIgnoresDeletionPods", 5, 3, (ONE_CPU,) * 7, (100, 300, 500, 250, 250), 50, 28,
     2 * 280, {"readiness": (T,) * 5 + (F, F), "phases": (R,) * 7, "deleted": (F,) * 5 + (T, T)}),
    ("TestReplicaCalcTolerance", 3, 3, (900, 1000, 1100), (1010, 1030, 1020), 100, 102, 2 * 1020, {}),
    ("TestReplicaCalcMissingMetrics", 4, 3, (ONE_CPU,) * 4, (400, 95), 100, 24, 495, {}),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, 2, (ONE_CPU,) * 2, (1000,), 100, 100, 2 * 1000, {}),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, 2, (ONE_CPU,) * 2, (1900,), 100, 190, 2 * 1900, {}),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, 2, (ONE_CPU,) * 2, (600,), 100, 60, 2 * 600, {}),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, 3, (ONE_CPU,) * 3, (100, 450), 50, 45, 2 * 450,
     {"readiness": (F, T, T)}),
    ("TestReplicaCalcMissingMetricsHotCpuNoChange", 3, 3, (ONE_CPU,) * 3, (100, 450), 50, 45, 2 * 450,
     {"start_times": (HOT, COOL, COOL)}),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, 4, (ONE_CPU,) * 3, (100, 2000), 50, 200, 2 * 2000,
     {"readiness": (F, T, T)}),
    ("TestReplicaCalcMissingMetricsHotCpuScaleUp", 3, 4, (ONE_CPU,) * 3, (100, 2000), 50, 200, 2 * 2000,
     {"readiness": (F, T, T), "start_times": (HOT, COOL, COOL)}),
    ("TestReplicaCalcMissingMetricsUnreadyScaleDown", 4, 3, (ONE_CPU,) * 4, (100, 100, 100), 50, 10, 2 * 100,
     {"readiness": (F, T, T, T)}),
    ("TestReplicaCalcMissingMetricsScaleDownTargetOver100", 4, 2, (1000, 1000, 2000, 2000), (200, 100, 100), 300,
     6, 2 * 100, {"readiness": (F, T, T, T)}),
    ("TestReplicaCalcDuringRollingUpdateWithMaxSurge", 2, 2, (ONE_CPU,) * 3, (100, 100), 50, 10, 2 * 100,
     {"phases": (R, R, R)}),
]


@pytest.mark.parametrize(
    "current, expected, requests, levels, target, expected_utilization, expected_raw, extras",
    [case[1:] for case in RESOURCE_CASES],
    ids=[case[0] for case in RESOURCE_CASES],
)
def test_go_replica_calc_resource(current, expected, requests, levels, target, expected_utilization, expected_raw,
                                  extras):
    pods = replica_calc_pods(current, requests, levels, **extras)
    proposal = get_resource_replicas(
        current, target, "cpu", pods, GO_TEST_TOLERANCES, NOW, GO_TEST_CPU_INIT_S, GO_TEST_READINESS_DELAY_S
    )
    assert proposal.replicas == expected
    assert proposal.utilization_percent == expected_utilization
    assert proposal.average_value_milli == expected_raw


# (Go test, current, expected, per-pod levels, target, expected usage, fixture extras)
PODS_METRIC_CASES = [
    ("TestReplicaCalcScaleUpCM", 3, 4, (20000, 10000, 30000), 15000, 20000, {}),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale", 3, 6, (50000, 10000, 30000), 15000, 30000,
     {"readiness": (T, T, F), "start_times": (COOL, COOL, HOT)}),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown", 3, 7, (50000, 15000, 30000), 15000, 31666,
     {"readiness": (F, T, F), "start_times": (HOT, COOL, HOT)}),
    ("TestReplicaCalcScaleUpCMExternalNoLabels", 1, 2, (8600,), 4400, 8600, {}),
    ("TestReplicaCalcScaleDownCM", 5, 3, (12000,) * 5, 20000, 12000, {}),
    ("TestReplicaCalcToleranceCM", 3, 3, (20000, 21000, 21000), 20000, 20666, {}),
    ("TestPlainMetricReplicaCalcMissingMetricsNoChangeEq", 5, 5, (20000, 19000, 21000), 20000, 20000, {}),
    ("TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM", 2, 2, (10000, 10000), 17000, 10000, {"phases": (R, R, R)}),
]


@pytest.mark.parametrize(
    "current, expected, levels, target, expected_usage, extras",
    [case[1:] for case in PODS_METRIC_CASES],
    ids=[case[0] for case in PODS_METRIC_CASES],
)
def test_go_replica_calc_pods_metric(current, expected, levels, target, expected_usage, extras):
    pods = replica_calc_pods(current, levels=levels, containers=1, **extras)
    proposal = calc_plain_metric_replicas(
        current, target, "", pods, GO_TEST_TOLERANCES, NOW, GO_TEST_CPU_INIT_S, GO_TEST_READINESS_DELAY_S
    )
    assert proposal.replicas == expected
    assert proposal.average_value_milli == expected_usage


def test_go_TestReplicaCalcEmptyCPURequest():
    pods = replica_calc_pods(1, requests=(), levels=(200,))
    with pytest.raises(MetricComputationError, match="missing request for"):
        get_resource_replicas(1, 100, "cpu", pods, GO_TEST_TOLERANCES, NOW)


def test_go_TestReplicaCalcEmptyMetrics():
    # Go fails in the metrics client; here every pod is "missing", which fails the same way.
    pods = replica_calc_pods(4, requests=(ONE_CPU,) * 3)
    with pytest.raises(MetricComputationError, match="did not receive metrics"):
        get_resource_replicas(4, 100, "cpu", pods, GO_TEST_TOLERANCES, NOW)


def test_go_TestReplicaCalcComputedToleranceAlgImplementation():
    start_pods = 10
    total_used = start_pods * 150
    total_requested = 2 * total_used
    requested_to_used = float(total_requested // total_used)
    per_pod_requested = total_requested // start_pods
    target = abs(1 / (requested_to_used * (1 - 0.1))) + 0.01
    final_cpu_percent_target = int(target * 100)
    resources_used_ratio = total_used / (total_requested * target)
    final_pods = math.ceil(resources_used_ratio * start_pods)
    requests = tuple(per_pod_requested + d for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0))
    levels = (total_used // 10,) * 10
    pods = replica_calc_pods(start_pods, requests, levels)

    proposal = get_resource_replicas(start_pods, final_cpu_percent_target, "cpu", pods, GO_TEST_TOLERANCES, NOW)
    assert proposal.replicas == final_pods == 9
    assert proposal.utilization_percent == total_used * 100 // total_requested

    # "Now, we test that no scaling happens if we are in a very close margin to the tolerance."
    target = abs(1 / (requested_to_used * (1 - 0.1))) + 0.004
    proposal = get_resource_replicas(start_pods, int(target * 100), "cpu", pods, GO_TEST_TOLERANCES, NOW)
    assert proposal.replicas == start_pods


# ---------------------------------------------------------------------------------------
# horizontal_test.go: normalisation units
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, desired, min_r, max_r, expected, condition",
    [
        (5, 7, 3, 8, 7, "DesiredWithinRange"),
        (3, 1, 2, 8, 2, "TooFewReplicas"),
        (1, 0, 0, 10, 0, "DesiredWithinRange"),
        (20, 1000, 1, 10, 10, "TooManyReplicas"),
        (3, 1000, 1, 2000, calculate_scale_up_limit(3), "ScaleUpLimit"),
    ],
)
def test_go_TestConvertDesiredReplicasWithRules(current, desired, min_r, max_r, expected, condition):
    assert convert_desired_replicas_with_rules(current, desired, min_r, max_r) == (expected, condition)


def test_calculate_scale_up_limit_is_twice_current_or_four():
    assert [calculate_scale_up_limit(n) for n in (0, 1, 2, 3, 10)] == [4, 4, 4, 6, 20]


def test_go_TestCalculateScaleUpLimitWithScalingRules():
    rules = HPAScalingRules(300, "Min", (HPAScalingPolicy("Pods", 2, 60), HPAScalingPolicy("Percent", 50, 60)))
    assert calculate_scale_up_limit_with_scaling_rules(1, [], [], rules, NOW) == 2


def test_go_TestCalculateScaleDownLimitWithBehaviors():
    rules = HPAScalingRules(300, "Min", (HPAScalingPolicy("Pods", 2, 60), HPAScalingPolicy("Percent", 50, 60)))
    assert calculate_scale_down_limit_with_behaviors(5, [], [], rules, NOW) == 3


@pytest.mark.parametrize(
    "recommendations, prenormalized, expected, expected_log_length",
    [
        pytest.param([], 5, 5, 1, id="empty log"),
        pytest.param([(4, -120), (5, -60)], 3, 5, 3, id="stabilize"),
        pytest.param([(1, -120), (2, -60)], 3, 3, 3, id="no stabilize"),
        pytest.param([(10, -600), (9, -540)], 3, 3, 2, id="no stabilize - old recommendations"),
        pytest.param([(10, -600), (4, -60), (5, -120), (9, -540)], 3, 5, 4, id="stabilize - old recommendations"),
    ],
)
def test_go_TestNormalizeDesiredReplicas(recommendations, prenormalized, expected, expected_log_length):
    state = HPAState([TimestampedRecommendation(value, NOW + offset) for value, offset in recommendations])
    assert stabilize_recommendation(state, NOW, prenormalized, 300.0) == expected
    assert len(state.recommendations) == expected_log_length


UP_EVENTS_1_5_9 = [1, 5, 9]
SCALING_WITH_RULES_CASES = [
    # (name, up events, down events, min, max, up rules, down rules, current, desired, expected, condition)
    ("prenormalized desired replicas within range", None, None, 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", None, None, 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("prenormalized desired replicas within range when minReplicas is 0", None, None, 0, 10, None, None, 1, 0, 0,
     "DesiredWithinRange"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", None, None, 1, 10, None, None, 20, 1000, 10,
     "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", None, None, 100, 150, None, None, 100, 1000,
     150, "TooManyReplicas"),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", None, None, 1, 2000,
     generate_scaling_rules(0, 0, 1, 60, 0), None, 3, 1000, 4, "ScaleUpLimit"),
    # Skipped in Go through its testThis flag; it passes here, so it is kept.
    ("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies", None, None, 3,
     2000, None, generate_scaling_rules(20, 60, 0, 0, 0), 1000, 3, 980, "ScaleDownLimit"),
    ("scaleUp with default behavior", None, None, 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", None, None, 1, 1000,
     generate_scaling_rules(100, 60, 100, 60, 0), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", None, None, 1, 1000,
     generate_scaling_rules(2, 60, 100, 60, 0), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", None, None, 1, 1000,
     generate_scaling_rules(100, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy", None, None, 1, 1000,
     generate_scaling_rules(10000, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with pod policy limitation", None, None, 1, 1000, generate_scaling_rules(30, 60, 0, 0, 0), None, 10,
     50, 40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", None, None, 1, 1000, generate_scaling_rules(0, 0, 200, 60, 0), None,
     10, 50, 30, "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", None, None, 1, 1000, None,
     generate_scaling_rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", None, None, 1, 1000, None,
     generate_scaling_rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy", None, None, 1, 1000, None,
     generate_scaling_rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", None, None, 5, 1000, None,
     generate_scaling_rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", None, None, 1, 1000, None, generate_scaling_rules(5, 60, 0, 0, 300), 10,
     2, 5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", None, None, 1, 1000, None,
     generate_scaling_rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", UP_EVENTS_1_5_9, None, 1, 200,
     generate_scaling_rules(300, 60, 0, 0, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy and events", UP_EVENTS_1_5_9, None, 1, 200,
     generate_scaling_rules(0, 0, 10000, 60, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
     UP_EVENTS_1_5_9, None, 1, 1000, generate_scaling_rules(5, 120, 0, 0, 0), None, 100, 500, 100, "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", UP_EVENTS_1_5_9, None, 1, 1000,
     generate_scaling_rules(150, 120, 0, 0, 0), None, 100, 500, 235, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up events", UP_EVENTS_1_5_9, None, 1, 1000,
     generate_scaling_rules(0, 0, 200, 120, 0), None, 100, 500, 255, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up and down events", [4], [2], 1, 1000,
     generate_scaling_rules(0, 0, 300, 300, 0), None, 6, 24, 16, "ScaleUpLimit"),
    ("scaleDown with default policy and previous events", None, UP_EVENTS_1_5_9, 1, 1000, None, None, 10, 5, 5,
     "DesiredWithinRange"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", None,
     UP_EVENTS_1_5_9, 1, 1000, None, generate_scaling_rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large pod policy and previous events", None, UP_EVENTS_1_5_9,
     5, 1000, None, generate_scaling_rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy and previous events", None,
     UP_EVENTS_1_5_9, 5, 1000, None, generate_scaling_rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation and previous events", None, UP_EVENTS_1_5_9, 1, 1000, None,
     generate_scaling_rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation and previous events", None, [2, 4, 6], 1, 1000, None,
     generate_scaling_rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"),
    ("scaleDown with percent policy and previous scale up and down events", [2], [4], 1, 1000, None,
     generate_scaling_rules(0, 0, 50, 180, 0), 10, 1, 6, "ScaleDownLimit"),
    ("scaleDown with previous events preventing further scale down", None, [10, 10, 10], 1, 1000, None,
     generate_scaling_rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"),
    ("scaleDown with with previous events still allowing more scale down", None, [10, 10, 10], 1, 1000, None,
     generate_scaling_rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for up", [8, 12, 9, 11], None, 1, 1000,
     generate_scaling_rules(1000, 60, 0, 0, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for up",
     [8, 12, 9, 11], None, 1, 1000, generate_scaling_rules(1000, 120, 100, 60, 0), None, 100, 200, 200,
     "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for up", [8, 12, 9, 11],
     None, 1, 1000, generate_scaling_rules(1000, 30, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for down", None, [8, 12, 9, 11], 1, 1000, None,
     generate_scaling_rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for down", None,
     [8, 12, 9, 11], 1, 1000, None, generate_scaling_rules(1000, 120, 100, 60, 300), 100, 5, 5,
     "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for down", None,
     [8, 12, 9, 11], 1, 1000, None, generate_scaling_rules(1000, 30, 100, 60, 300), 100, 5, 5,
     "DesiredWithinRange"),
]


@pytest.mark.parametrize(
    "up_events, down_events, min_r, max_r, up_rules, down_rules, current, desired, expected, condition",
    [case[1:] for case in SCALING_WITH_RULES_CASES],
    ids=[case[0] for case in SCALING_WITH_RULES_CASES],
)
def test_go_TestScalingWithRules(up_events, down_events, min_r, max_r, up_rules, down_rules, current, desired,
                                 expected, condition):
    state = HPAState(
        scale_up_events=generate_events_uniform_distribution(up_events, 120) if up_events else [],
        scale_down_events=generate_events_uniform_distribution(down_events, 120) if down_events else [],
    )
    args = NormalizationArg(
        scale_up_rules=generate_hpa_scale_up_rules(up_rules),
        scale_down_rules=generate_hpa_scale_down_rules(down_rules),
        min_replicas=min_r,
        max_replicas=max_r,
        current_replicas=current,
        desired_replicas=desired,
    )
    assert convert_desired_replicas_with_behavior_rate(state, NOW, args) == (expected, condition)


STORE_SCALE_EVENTS_CASES = [
    # (name, previous events as (change, age_s), rules, expected events as (change, outdated), expected change/60 s)
    ("empty entries with default behavior", [], None, [], 0),
    ("empty entries with two-policy-behavior", [], generate_scaling_rules(10, 60, 100, 60, 0), [(5, F)], 0),
    ("one outdated entry to be kept untouched without behavior", [(7, 61)], None, [(7, F)], 0),
    ("one outdated entry to be replaced with behavior", [(7, 61)], generate_scaling_rules(10, 60, 100, 60, 0),
     [(5, F)], 0),
    ("one actual entry to be not touched with behavior", [(7, 58)], generate_scaling_rules(10, 60, 100, 60, 0),
     [(7, F), (5, F)], 7),
    ("two entries, one of them to be replaced", [(7, 61), (6, 59)], generate_scaling_rules(10, 60, 0, 0, 0),
     [(5, F), (6, F)], 6),
    ("replace one entry, use policies with different periods", [(8, 29), (6, 59), (7, 61), (9, 61)],
     generate_scaling_rules(10, 60, 100, 30, 0), [(8, F), (6, F), (7, T), (5, F)], 14),
    ("two entries, both actual", [(7, 58), (6, 59)], generate_scaling_rules(10, 120, 100, 30, 0),
     [(7, F), (6, F), (5, F)], 13),
]


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize(
    "previous, rules, expected_events, expected_change",
    [case[1:] for case in STORE_SCALE_EVENTS_CASES],
    ids=[case[0] for case in STORE_SCALE_EVENTS_CASES],
)
def test_go_TestStoreScaleEvents(direction, previous, rules, expected_events, expected_change):
    events = [TimestampedScaleEvent(change, NOW - age) for change, age in previous]
    state = HPAState(**{f"scale_{direction}_events": events})
    assert get_replicas_change_per_period(60, events, NOW) == expected_change
    behavior = None
    if rules is not None:
        behavior = HPABehavior(**{f"scale_{direction}": rules})
        behavior = HPABehavior(generate_hpa_scale_up_rules(behavior.scale_up),
                               generate_hpa_scale_down_rules(behavior.scale_down))
    new_replicas = 10 + 5 if direction == "up" else 10 - 5
    store_scale_event(state, behavior, NOW, 10, new_replicas)
    stored = getattr(state, f"scale_{direction}_events")
    assert [(event.replica_change, event.outdated) for event in stored] == expected_events


NORMALIZE_WITH_BEHAVIOR_CASES = [
    # (name, recommendations as (value, age_s), current, desired, expected, stored values or None, up win, down win)
    ("empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0),
    ("simple scale down stabilization", [(4, 120), (5, 60)], 100, 3, 5, [4, 5, 3], 0, 180),
    ("simple scale up stabilization", [(4, 120), (5, 60)], 1, 7, 4, [4, 5, 7], 300, 0),
    ("no scale down stabilization", [(1, 120), (2, 60)], 100, 3, 3, [1, 2, 3], 300, 0),
    ("no scale up stabilization", [(4, 120), (5, 60)], 1, 3, 3, [4, 5, 3], 0, 300),
    ("no scale down stabilization, reuse recommendation element", [(10, 600), (9, 540)], 100, 3, 3, [10, 3], 0, 0),
    ("no scale up stabilization, reuse recommendation element", [(10, 600), (9, 540)], 1, 100, 100, [10, 100], 0,
     0),
    ("scale down stabilization, reuse one of obsolete recommendation element",
     [(10, 600), (4, 60), (5, 120), (9, 540)], 100, 3, 5, [10, 4, 5, 3], 0, 180),
    ("scale up stabilization, reuse one of obsolete recommendation element",
     [(10, 6000), (6, 60), (5, 120), (9, 180)], 1, 100, 5, [100, 6, 5, 9], 300, 0),
    ("scale up and down stabilization, do not scale up when prenormalized rec goes down", [(2, 6000), (3, 180)], 2,
     1, 2, None, 300, 300),
    ("scale up and down stabilization, do not scale down when prenormalized rec goes up", [(2, 6000), (1, 180)], 2,
     3, 2, None, 300, 300),
]


@pytest.mark.parametrize(
    "recommendations, current, desired, expected, stored, up_window, down_window",
    [case[1:] for case in NORMALIZE_WITH_BEHAVIOR_CASES],
    ids=[case[0] for case in NORMALIZE_WITH_BEHAVIOR_CASES],
)
def test_go_TestNormalizeDesiredReplicasWithBehavior(recommendations, current, desired, expected, stored, up_window,
                                                     down_window):
    state = HPAState([TimestampedRecommendation(value, NOW - age) for value, age in recommendations])
    args = NormalizationArg(
        scale_up_rules=HPAScalingRules(stabilization_window_seconds=up_window),
        scale_down_rules=HPAScalingRules(stabilization_window_seconds=down_window),
        min_replicas=1, max_replicas=1000, current_replicas=current, desired_replicas=desired,
    )
    replicas, _ = stabilize_recommendation_with_behaviors(state, NOW, args)
    assert replicas == expected
    if stored is not None:
        assert [rec.recommendation for rec in state.recommendations] == stored


# ---------------------------------------------------------------------------------------
# horizontal_test.go: whole reconciles
# ---------------------------------------------------------------------------------------

CONTROLLER_CASES = [
    # (Go test, min, max, spec replicas, target %, levels, requests, readiness, up rules, recommendations,
    #  expected replicas, expected reason, expected conditions subset)
    ("TestScaleUp", 2, 6, 3, 30, (300, 500, 700), (1000,) * 3, None, None, None, 5, "DesiredWithinRange", {}),
    ("TestScaleUpUnreadyLessScale", 2, 6, 3, 30, (300, 500, 700), (1000,) * 3, (F, T, T), None, None, 4,
     "DesiredWithinRange", {}),
    ("TestScaleDown", 2, 6, 5, 50, (100, 300, 500, 250, 250), (1000,) * 5, None, None, [], 3, "DesiredWithinRange",
     {}),
    ("TestScaleDownStabilizeInitialSize", 2, 6, 5, 50, (100, 300, 500, 250, 250), (1000,) * 5, None, None, None, 5,
     "ScaleDownStabilized", {"AbleToScale": "ScaleDownStabilized"}),
    ("TestTolerance", 1, 5, 3, 100, (1010, 1030, 1020), (900, 1000, 1100), None, None, None, 3, "DesiredWithinRange",
     {"AbleToScale": "ReadyForNewScale"}),
    ("TestMinReplicas", 2, 5, 3, 90, (10, 95, 10), (900, 1000, 1100), None, None, [], 2, "TooFewReplicas",
     {"ScalingLimited": "TooFewReplicas"}),
    ("TestZeroMinReplicasDesiredZero", 0, 5, 3, 90, (0, 0, 0), (900, 1000, 1100), None, None, [], 0,
     "DesiredWithinRange", {"ScalingLimited": "DesiredWithinRange"}),
    ("TestMinReplicasDesiredZero", 2, 5, 3, 90, (0, 0, 0), (900, 1000, 1100), None, None, [], 2, "TooFewReplicas",
     {"ScalingLimited": "TooFewReplicas"}),
    ("TestZeroReplicas", 3, 5, 0, 90, (), (), None, None, None, 0, "ScalingDisabled",
     {"ScalingActive": "ScalingDisabled"}),
    ("TestTooFewReplicas", 3, 5, 2, 90, (), (), None, None, None, 3, "TooFewReplicas", {}),
    ("TestTooManyReplicas", 3, 5, 10, 90, (), (), None, None, None, 5, "TooManyReplicas", {}),
    ("TestScaleDownRCImmediately", 2, 5, 6, 50, (8000, 9500, 1000), (900, 1000, 1100), None, None, None, 5,
     "TooManyReplicas", {}),
    ("TestMaxReplicas", 2, 5, 3, 90, (8000, 9500, 1000), (900, 1000, 1100), None, None, None, 5, "TooManyReplicas",
     {"ScalingLimited": "TooManyReplicas"}),
    ("TestUpscaleCap", 1, 100, 3, 10, (100, 200, 300), (100,) * 3, None, generate_scaling_rules(0, 0, 700, 60, 0),
     None, 24, "ScaleUpLimit", {"ScalingLimited": "ScaleUpLimit"}),
    ("TestUpscaleCapGreaterThanMaxReplicas", 1, 20, 3, 10, (100, 200, 300), (100,) * 3, None,
     generate_scaling_rules(0, 0, 700, 60, 0), None, 20, "TooManyReplicas", {"ScalingLimited": "TooManyReplicas"}),
    ("TestMoreReplicasThanSpecNoScale", 1, 8, 4, 50, (500,) * 5, (1000,) * 5, None, None, None, 4,
     "DesiredWithinRange", {"AbleToScale": "ReadyForNewScale"}),
    ("TestMissingReports", 1, 5, 4, 50, (200,), (200,), None, None, [], 2, "DesiredWithinRange", {}),
    ("TestEventCreated", 1, 5, 1, 50, (200,), (200,), None, None, None, 2, "DesiredWithinRange", {}),
    ("TestMissingMetrics", 2, 6, 4, 100, (400, 95), (1000,) * 4, None, None, [], 3, "DesiredWithinRange", {}),
]


@pytest.mark.parametrize(
    "min_r, max_r, spec, target, levels, requests, readiness, up_rules, recommendations, expected, reason, conds",
    [case[1:] for case in CONTROLLER_CASES],
    ids=[case[0] for case in CONTROLLER_CASES],
)
def test_go_controller_reconcile(min_r, max_r, spec, target, levels, requests, readiness, up_rules, recommendations,
                                 expected, reason, conds):
    behavior = HPABehavior(scale_up=up_rules) if up_rules is not None else None
    state = HPAState(recommendations=None if recommendations is None else list(recommendations))
    hpa = HorizontalPodAutoscaler(max_r, min_r, [ResourceMetricSpec("cpu", target)], behavior, GO_TEST_CONFIG, state)
    pods = controller_pods(spec, levels, requests, readiness)
    decision = hpa.recommend(NOW, spec, {"cpu": pods})
    assert decision.desired_replicas == expected
    assert decision.reason == reason
    for condition_type, condition_reason in conds.items():
        assert decision.conditions[condition_type].reason == condition_reason


def test_go_TestNoScaleDownOneMetricEmpty():
    # Go's failing metric is an External one (TestNoScaleDownOneMetricInvalid uses an unknown type);
    # a Pods metric whose fetch failed exercises the same computeReplicasForMetrics rule.
    hpa = HorizontalPodAutoscaler(6, 2, [ResourceMetricSpec("cpu", 50), PodsMetricSpec("qps", 1000)],
                                  config=GO_TEST_CONFIG, state=HPAState(recommendations=[]))
    pods = controller_pods(5, (100, 300, 500, 250, 250))
    decision = hpa.recommend(NOW, 5, {"cpu": pods, "qps": None})
    assert decision.desired_replicas == 5
    assert decision.reason == "FailedGetPodsMetric"
    assert decision.conditions["ScalingActive"] == HPACondition("ScalingActive", False, "FailedGetPodsMetric")
    assert hpa.state.recommendations == []  # Go returns before normalising: nothing recorded


def test_go_TestScaleUpOneMetricEmpty():
    hpa = HorizontalPodAutoscaler(6, 2, [ResourceMetricSpec("cpu", 30), PodsMetricSpec("qps", 1000)],
                                  config=GO_TEST_CONFIG)
    decision = hpa.recommend(NOW, 3, {"cpu": controller_pods(3, (300, 400, 500)), "qps": None})
    assert decision.desired_replicas == 4
    assert decision.conditions["ScalingActive"].reason == "ValidMetricFound"
    assert isinstance(decision.metric_proposals["qps"], MetricComputationError)


def test_go_TestScaleUpBothMetricsEmpty():
    hpa = HorizontalPodAutoscaler(6, 2, [PodsMetricSpec("qps", 1000)], config=GO_TEST_CONFIG)
    decision = hpa.recommend(NOW, 3, {"qps": None})
    assert decision.desired_replicas == 3
    assert not decision.conditions["ScalingActive"].status


# ---------------------------------------------------------------------------------------
# Hand-computed cases, one group per rule
# ---------------------------------------------------------------------------------------


def ready_pods(usages: list[int | None], request: int = 1000, **kwargs) -> list[PodMetricSample]:
    """Long-running, ready pods with the given samples."""
    return [PodMetricSample(f"p{i}", usage, request, **kwargs) for i, usage in enumerate(usages)]


def resource_replicas(current: int, target: int, pods: list[PodMetricSample], tolerances=Tolerances()) -> int:
    return get_resource_replicas(current, target, "cpu", pods, tolerances, NOW).replicas


class TestDesiredEqualsCeilReadyTimesRatio:
    def test_ceil_of_ready_pods_times_ratio(self):
        # 3 pods at 70% against 50%: ratio 1.4, ceil(3 * 1.4) = ceil(4.2) = 5.
        assert resource_replicas(3, 50, ready_pods([700, 700, 700])) == 5

    def test_utilisation_is_truncated_to_whole_percent_before_the_ratio(self):
        # 1109 m of 1000 m is 110.9% -> 110% -> ratio 1.10, inside the band: no change. With the
        # exact 110.9% the ratio 1.109 would have been outside.
        assert resource_replicas(4, 100, ready_pods([1109] * 4)) == 4
        assert resource_replicas(4, 100, ready_pods([1110, 1110, 1110, 1114])) == 5  # 111% -> ceil(4.44)

    def test_tolerance_band_is_inclusive(self):
        # Ratios 1.10 and 0.90 are inside the 0.1 band; 1.11 and 0.89 are outside.
        assert resource_replicas(10, 100, ready_pods([1100] * 10)) == 10
        assert resource_replicas(10, 100, ready_pods([900] * 10)) == 10
        assert resource_replicas(10, 100, ready_pods([1110] * 10)) == 12  # ceil(11.1)
        assert resource_replicas(10, 100, ready_pods([890] * 10)) == 9  # ceil(8.9)

    def test_asymmetric_tolerances(self):
        # Scale-up tolerance 0.5: 140% against 100% stays; scale-down tolerance 0: 95% goes down.
        tolerances = Tolerances(scale_down=0.0, scale_up=0.5)
        assert resource_replicas(4, 100, ready_pods([1400] * 4), tolerances) == 4
        assert resource_replicas(20, 100, ready_pods([950] * 20), tolerances) == 19  # ceil(20 * 0.95)
        assert resource_replicas(20, 100, ready_pods([950] * 20)) == 20  # inside the default band

    def test_pods_metric_average_value(self):
        # 3 pods at 3, 4, 5 rps against 2 rps: average 4 rps, ratio 2, 6 pods.
        pods = ready_pods([3000, 4000, 5000], request=None)
        assert calc_plain_metric_replicas(3, 2000, "", pods, Tolerances(), NOW).replicas == 6


class TestMissingPods:
    def test_missing_pods_count_as_full_request_on_scale_down(self):
        # Ready: 200 m + 200 m of 2000 m = 20% vs 50% -> scale-down. The missing pod counts as
        # 1000 m: 1400/3000 = 46% -> ratio 0.92, inside the band: keep 3.
        assert resource_replicas(3, 50, ready_pods([200, 200, None])) == 3
        # Without the missing pod it would have been ceil(2 * 0.4) = 1.
        assert resource_replicas(2, 50, ready_pods([200, 200])) == 1

    def test_missing_pods_count_as_zero_on_scale_up(self):
        # Ready pod at 200% vs 100% -> 2.0. Missing pod at 0%: 2000/2000 = 100% -> 1.0, inside
        # the band -> keep 3 (ignoring it would give ceil(1 * 2) = 2).
        assert resource_replicas(3, 100, ready_pods([2000, None])) == 3
        # Ready pod at 300%: 3000/2000 = 150% -> ceil(1.5 * 2) = 3 (at 100% it would be 4).
        assert resource_replicas(2, 100, ready_pods([3000, None])) == 3

    def test_missing_pod_fallback_uses_target_above_100_percent(self):
        # Target 200%: ready pods at 50% -> ratio 0.25. Missing pod at max(100, 200) = 200% of
        # 1000 m: (500 + 2000) / 2000 = 125% -> 0.625 -> ceil(0.625 * 2) = 2 (of 3 current).
        assert resource_replicas(3, 200, ready_pods([500, None])) == 2

    def test_no_scale_when_recomputed_ratio_flips_direction(self):
        # Ready pod at 94% vs 90% -> 1.044 (up). Three missing pods at 0%: 940/4000 = 23%
        # -> 0.255 (down): the direction flipped, keep 4 (not ceil(0.255 * 4) = 2).
        assert resource_replicas(4, 90, ready_pods([940, None, None, None])) == 4

    def test_no_scale_when_count_would_move_against_the_ratio(self):
        # Rolling update with surge: spec 2, 3 pods at 50% + 1 missing, target 100.
        # 0.5 -> missing at 100%: 2500/4000 = 62% -> ceil(0.62 * 4) = 3 > 2 although ratio < 1.
        assert resource_replicas(2, 100, ready_pods([500, 500, 500, None])) == 2


class TestUnreadyPods:
    def test_unready_pods_count_as_zero_on_scale_up_only(self):
        # Ready pod at 100% vs 50% (ratio 2); the unready one counts 0%: 1000/2000 = 50% -> ratio
        # 1.0 inside the band -> keep 3. Ignoring it: ceil(1 * 2) = 2; using its sample: 4.
        pods = ready_pods([1000]) + [PodMetricSample("u", 1000, 1000, ready=False)]
        assert resource_replicas(3, 50, pods) == 3

    def test_unready_pods_are_dropped_on_scale_down(self):
        # Ready pod at 10% vs 50% -> ceil(0.2 * 1) = 1; the unready pod's 90% sample is ignored.
        pods = ready_pods([100]) + [PodMetricSample("u", 900, 1000, ready=False)]
        assert resource_replicas(2, 50, pods) == 1

    def test_pending_pods_are_unready(self):
        pods = ready_pods([2000]) + [PodMetricSample("pending", None, 1000, phase="Pending")]
        # 200% vs 100% with the pending pod at 0%: 2000/2000 = 100% -> keep 3 (not missing,
        # which would also give 0% here, and not ignored, which would give 2).
        assert resource_replicas(3, 100, pods) == 3
        groups = group_pods(pods, "cpu", NOW, 300.0, 30.0)
        assert groups.unready == {"pending"} and not groups.missing

    def test_failed_and_terminating_pods_are_ignored_even_on_scale_up(self):
        # Only the ready pod counts: 200% vs 100% -> ceil(2 * 1) = 2; the failed and deleting pods
        # are not filled in as 0% (they would have pulled the ratio to 0.67).
        pods = ready_pods([2000]) + [
            PodMetricSample("failed", 0, 1000, phase="Failed"),
            PodMetricSample("deleting", 0, 1000, deleted=True),
        ]
        assert resource_replicas(3, 100, pods) == 2

    def test_readiness_is_only_checked_for_cpu(self):
        pods = [PodMetricSample("a", 2000, 1000, ready=False), PodMetricSample("b", 2000, 1000, ready=False)]
        proposal = get_resource_replicas(2, 100, "memory", pods, Tolerances(), NOW)
        assert proposal.replicas == 4 and proposal.unready_pod_count == 0


class TestCpuInitialisation:
    """cpuInitializationPeriod 300 s, initial readiness delay 30 s (controller defaults)."""

    def group(self, pod: PodMetricSample):
        return group_pods([pod], "cpu", NOW, 300.0, 30.0)

    def test_fresh_sample_of_starting_pod_counts(self):
        # Started 100 s ago, ready since 60 s ago, sample window 15 s ending now: 60 >= 15.
        pod = PodMetricSample("a", 900, 1000, start_time_s=NOW - 100, ready_transition_time_s=NOW - 60)
        assert self.group(pod).ready_count == 1

    def test_sample_overlapping_readiness_change_is_dropped(self):
        # Became ready 10 s ago; the 15 s window started before that.
        pod = PodMetricSample("a", 900, 1000, start_time_s=NOW - 100, ready_transition_time_s=NOW - 10)
        assert self.group(pod).unready == {"a"}

    def test_unready_after_init_counts_if_it_was_ready_before(self):
        # Past init; last transition (to not ready) came 200 s after start > 30 s delay.
        pod = PodMetricSample("a", 900, 1000, ready=False, start_time_s=NOW - 400, ready_transition_time_s=NOW - 200)
        assert self.group(pod).ready_count == 1

    def test_unready_after_init_that_never_became_ready_is_dropped(self):
        pod = PodMetricSample("a", 900, 1000, ready=False, start_time_s=NOW - 400, ready_transition_time_s=NOW - 390)
        assert self.group(pod).unready == {"a"}

    def test_pod_without_start_time_is_unready(self):
        assert self.group(PodMetricSample("a", 900, 1000, start_time_s=None)).unready == {"a"}


def cpu_hpa(max_replicas=20, min_replicas=1, target=50, behavior=None, **kwargs) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(max_replicas, min_replicas, [ResourceMetricSpec("cpu", target)], behavior, **kwargs)


def at_utilisation(percent: int, count: int) -> list[PodMetricSample]:
    """``count`` ready pods at ``percent`` of a 1000 m request."""
    return ready_pods([10 * percent] * count)


class TestClampsAndDisabledScaling:
    def test_scaling_disabled_at_zero_replicas(self):
        decision = cpu_hpa().recommend(NOW, 0, at_utilisation(500, 1))
        assert (decision.desired_replicas, decision.reason) == (0, "ScalingDisabled")

    def test_zero_replicas_allowed_when_min_is_zero(self):
        # minReplicas 0 (HPAScaleToZero): no longer "disabled", but with no pods the metric fails.
        decision = cpu_hpa(min_replicas=0).recommend(NOW, 0, [])
        assert (decision.desired_replicas, decision.reason) == (0, "FailedGetResourceMetric")

    def test_out_of_range_counts_move_to_the_bound_without_metrics(self):
        assert cpu_hpa(max_replicas=5).recommend(NOW, 9, None).desired_replicas == 5
        assert cpu_hpa(min_replicas=3).recommend(NOW, 1, None).desired_replicas == 3

    def test_max_clamp(self):
        decision = cpu_hpa(max_replicas=5, behavior=HPABehavior()).recommend(NOW, 4, at_utilisation(100, 4))
        assert (decision.desired_replicas, decision.reason) == (5, "TooManyReplicas")  # 8 wanted


class TestSeveralMetrics:
    def test_maximum_over_metrics(self):
        hpa = HorizontalPodAutoscaler(20, 1, [ResourceMetricSpec("cpu", 50), PodsMetricSpec("rps", 1000)])
        pods_cpu = at_utilisation(75, 4)  # ceil(4 * 1.5) = 6
        pods_rps = ready_pods([2000] * 4, request=None)  # ceil(4 * 2) = 8
        decision = hpa.recommend(NOW, 4, {"cpu": pods_cpu, "rps": pods_rps})
        assert decision.prenormalized_replicas == 8
        assert decision.desired_replicas == 8
        assert decision.rescale_reason == "pods metric rps above target"

    def test_invalid_metric_blocks_scale_down_but_not_scale_up(self):
        hpa = HorizontalPodAutoscaler(20, 1, [ResourceMetricSpec("cpu", 50), PodsMetricSpec("rps", 1000)],
                                      state=HPAState(recommendations=[]))
        assert hpa.recommend(NOW, 4, {"cpu": at_utilisation(10, 4), "rps": None}).desired_replicas == 4
        assert hpa.recommend(NOW + 15, 4, {"cpu": at_utilisation(100, 4), "rps": None}).desired_replicas == 8

    def test_resource_average_value_target(self):
        hpa = HorizontalPodAutoscaler(20, 1, [ResourceMetricSpec("memory", target_average_value_milli=500)])
        decision = hpa.recommend(NOW, 2, ready_pods([1000, 1000], request=None))
        assert decision.desired_replicas == 4
        assert decision.metric_proposals["memory"].metric_name == "memory resource"


class TestBehaviorDefaults:
    def test_defaults_match_kubernetes(self):
        up = generate_hpa_scale_up_rules(None)
        down = generate_hpa_scale_down_rules(None)
        assert up == HPAScalingRules(0, "Max", (HPAScalingPolicy("Pods", 4, 15), HPAScalingPolicy("Percent", 100, 15)))
        assert down == HPAScalingRules(None, "Max", (HPAScalingPolicy("Percent", 100, 15),))

    def test_partial_rules_keep_user_fields(self):
        rules = generate_hpa_scale_down_rules(HPAScalingRules(stabilization_window_seconds=60))
        assert rules.stabilization_window_seconds == 60
        assert rules.policies == (HPAScalingPolicy("Percent", 100, 15),)

    def test_default_scale_up_rate_four_pods_or_double_per_15_s(self):
        hpa = cpu_hpa(max_replicas=100, behavior=HPABehavior())
        # 1 pod at 500% vs 50%: wants 10; limit max(1 + 4, ceil(1 * 2)) = 5.
        decision = hpa.recommend(NOW, 1, at_utilisation(500, 1))
        assert (decision.desired_replicas, decision.reason) == (5, "ScaleUpLimit")
        # 5 s later the 15 s period still contains +4: start 1 -> limit 5 again.
        decision = hpa.recommend(NOW + 5, 5, at_utilisation(500, 5))
        assert (decision.desired_replicas, decision.reason) == (5, "ScaleUpLimit")
        # After 15 s: start 5 -> limit max(9, 10) = 10.
        decision = hpa.recommend(NOW + 20, 5, at_utilisation(500, 5))
        assert (decision.desired_replicas, decision.reason) == (10, "ScaleUpLimit")

    def test_scale_down_waits_for_the_300_s_window(self):
        hpa = cpu_hpa(behavior=HPABehavior(), state=HPAState(recommendations=[]))
        assert hpa.recommend(NOW, 4, at_utilisation(100, 4)).desired_replicas == 8
        # Load drops: the recommendation of 8 (made at NOW) holds the count for 300 s.
        for t in (15, 150, 299):
            decision = hpa.recommend(NOW + t, 8, at_utilisation(10, 8))
            assert (decision.desired_replicas, decision.reason) == (8, "ScaleDownStabilized")
        # At exactly 300 s the sample is on the cutoff, which the behavior path excludes; the
        # 100%/15 s policy allows the whole drop to ceil(8 * 0.2) = 2.
        decision = hpa.recommend(NOW + 300, 8, at_utilisation(10, 8))
        assert decision.desired_replicas == 2

    def test_scale_up_stabilization_window(self):
        behavior = HPABehavior(scale_up=HPAScalingRules(stabilization_window_seconds=60))
        hpa = cpu_hpa(behavior=behavior, state=HPAState(recommendations=[]))
        assert hpa.recommend(NOW, 4, at_utilisation(50, 4)).desired_replicas == 4
        # A spike 30 s later: the minimum over the last 60 s is still 4.
        decision = hpa.recommend(NOW + 30, 4, at_utilisation(100, 4))
        assert (decision.desired_replicas, decision.reason) == (4, "ScaleUpStabilized")
        # At NOW + 91 the window (NOW + 31, NOW + 91] holds no calm sample any more.
        assert hpa.recommend(NOW + 91, 4, at_utilisation(100, 4)).desired_replicas == 8

    def test_select_policy_min_and_disabled(self):
        rules = HPAScalingRules(select_policy="Min")  # default policies: +4 pods or +100%
        hpa = cpu_hpa(max_replicas=100, behavior=HPABehavior(scale_up=rules))
        # 10 pods wanting 100: Max would allow 20; Min allows min(14, 20) = 14.
        assert hpa.recommend(NOW, 10, at_utilisation(500, 10)).desired_replicas == 14
        hpa = cpu_hpa(behavior=HPABehavior(scale_down=HPAScalingRules(select_policy="Disabled")),
                      state=HPAState(recommendations=[]))
        decision = hpa.recommend(NOW, 10, at_utilisation(5, 10))
        assert (decision.desired_replicas, decision.reason) == (10, "ScaleDownLimit")

    def test_scale_down_percent_policy_truncates(self):
        # 50% per 60 s from 7 pods: int(7 * 0.5) = 3, not 4.
        rules = HPAScalingRules(stabilization_window_seconds=0, policies=(HPAScalingPolicy("Percent", 50, 60),))
        hpa = cpu_hpa(behavior=HPABehavior(scale_down=rules))
        decision = hpa.recommend(NOW, 7, at_utilisation(5, 7))
        assert (decision.desired_replicas, decision.reason) == (3, "ScaleDownLimit")

    def test_per_direction_tolerance(self):
        behavior = HPABehavior(scale_up=HPAScalingRules(tolerance=0.5))
        hpa = cpu_hpa(behavior=behavior)
        # 70% vs 50% is a ratio of 1.4: inside a 0.5 scale-up tolerance.
        assert hpa.recommend(NOW, 4, at_utilisation(70, 4)).desired_replicas == 4


class TestBehaviourlessHpa:
    """An HPA without spec.behavior runs normalizeDesiredReplicas, not the default policies."""

    def test_scale_up_limited_to_double_or_four(self):
        hpa = cpu_hpa(max_replicas=100)
        decision = hpa.recommend(NOW, 3, at_utilisation(500, 3))
        assert (decision.desired_replicas, decision.reason) == (6, "ScaleUpLimit")  # max(2 * 3, 4)
        # No event memory: the next reconcile may double again right away.
        assert hpa.recommend(NOW + 1, 6, at_utilisation(500, 6)).desired_replicas == 12

    def test_stale_high_recommendation_can_raise_the_count(self):
        # Go's stabilizeRecommendation returns the max of recent recommendations even when it
        # exceeds the current count; convertDesiredReplicasWithRules then lets it through.
        state = HPAState([TimestampedRecommendation(8, NOW - 60)])
        hpa = cpu_hpa(state=state)
        decision = hpa.recommend(NOW, 5, at_utilisation(30, 5))  # metrics alone: ceil(5 * 0.6) = 3
        assert (decision.desired_replicas, decision.reason) == (8, "ScaleDownStabilized")
        # The behavior path keeps the current count instead.
        state = HPAState([TimestampedRecommendation(8, NOW - 60)])
        decision = cpu_hpa(behavior=HPABehavior(), state=state).recommend(NOW, 5, at_utilisation(30, 5))
        assert decision.desired_replicas == 5

    def test_sample_on_the_cutoff_still_counts(self):
        state = HPAState([TimestampedRecommendation(8, NOW - 300)])
        assert stabilize_recommendation(state, NOW, 2, 300.0) == 8
        state = HPAState([TimestampedRecommendation(8, NOW - 300.5)])
        assert stabilize_recommendation(state, NOW, 2, 300.0) == 2


def test_events_exactly_one_period_old_no_longer_count():
    events = [TimestampedScaleEvent(3, NOW - 15), TimestampedScaleEvent(2, NOW - 14.5)]
    assert get_replicas_change_per_period(15, events, NOW) == 2


def test_reused_scale_down_slot_drops_history_a_longer_scale_up_period_would_see():
    # storeScaleEvent reuses scale-down slots older than the longest *scale-down* period (15 s
    # by default), although a scale-up policy may look back further (here 300 s). Go forgets
    # the first -5 and so does the port: the period starts at 4 + 1 = 5 pods, not 4 + 6 = 10.
    behavior = HPABehavior(
        scale_up=generate_hpa_scale_up_rules(generate_scaling_rules(0, 0, 100, 300, 0)),
        scale_down=generate_hpa_scale_down_rules(None),
    )
    state = HPAState()
    store_scale_event(state, behavior, NOW, 10, 5)
    store_scale_event(state, behavior, NOW + 100, 5, 4)
    assert [(e.replica_change, e.timestamp_s) for e in state.scale_down_events] == [(1, NOW + 100)]
    limit = calculate_scale_up_limit_with_scaling_rules(4, state.scale_up_events, state.scale_down_events,
                                                        behavior.scale_up, NOW + 110)
    assert limit == 10


def test_decision_records_rescale_events_for_behavior_hpas():
    hpa = cpu_hpa(behavior=HPABehavior())
    hpa.recommend(NOW, 2, at_utilisation(100, 2))
    assert [(e.replica_change, e.timestamp_s) for e in hpa.state.scale_up_events] == [(2, NOW)]
    assert cpu_hpa().state.scale_up_events == []


def test_float_samples_round_up_like_quantity_milli_value():
    assert PodMetricSample("a", usage_milli=10.2, request_milli=99.5).usage_milli == 11
    with pytest.raises(ValueError):
        PodMetricSample("a", 1, phase="Crashing")


def test_module_docstring_example_runs():
    import doctest

    import agents.autoscaling.k8s_hpa as module

    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0  # the example lives in the package docstring: it must be found


def test_duplicate_pod_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        group_pods(ready_pods([1, 2]) + ready_pods([3]), "cpu", NOW, 300.0, 30.0)


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        ResourceMetricSpec("cpu")
    with pytest.raises(ValueError):
        ResourceMetricSpec("cpu", 50, 500)
    with pytest.raises(ValueError):
        HPAScalingPolicy("Pods", 4, 0)
    with pytest.raises(ValueError):
        HorizontalPodAutoscaler(max_replicas=2, min_replicas=3)
    two_metrics = HorizontalPodAutoscaler(5, 1, [ResourceMetricSpec("cpu", 50), PodsMetricSpec("a", 1)])
    with pytest.raises(ValueError, match="mapping"):
        two_metrics.recommend(NOW, 1, [])


# ---------------------------------------------------------------------------------------
# Batched helper vs the per-target class
# ---------------------------------------------------------------------------------------

POLICY = st.builds(
    HPAScalingPolicy,
    type=st.sampled_from(["Pods", "Percent"]),
    value=st.sampled_from([1, 2, 4, 10, 50, 100, 300]),
    period_seconds=st.sampled_from([15, 30, 60, 120]),
)
RULES = st.one_of(
    st.none(),
    st.builds(
        HPAScalingRules,
        stabilization_window_seconds=st.one_of(st.none(), st.sampled_from([0, 15, 30, 60, 300])),
        select_policy=st.one_of(st.none(), st.sampled_from(["Max", "Min", "Disabled"])),
        policies=st.one_of(st.none(), st.lists(POLICY, min_size=1, max_size=3).map(tuple)),
        tolerance=st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.2])),
    ),
)
BEHAVIOR = st.one_of(st.none(), st.builds(HPABehavior, scale_up=RULES, scale_down=RULES))


def pods_for(utilization_percent: int, fraction: int, count: int) -> list[PodMetricSample]:
    """``count`` ready pods whose pooled utilisation is ``utilization_percent`` + a fraction < 1."""
    usages = [10 * utilization_percent] * count
    if count:
        usages[0] += fraction  # adds fraction / (10 * count) percent, below one percent
    return ready_pods(usages)


def assert_batched_matches_scalar(data, batched, hpas, state, now, current, pods) -> np.ndarray:
    """The batched decision equals each per-target HPA's (count, reason, history); returns the next
    counts: the decision applied and, now and then, something else moving one count (a human, a crash)."""
    batch, services = current.shape
    for b in range(batch):
        for s in range(services):
            single = hpas[b][s].recommend(now, int(current[b, s]), pods[b][s])
            assert batched.desired_replicas[b, s] == single.desired_replicas, (b, s, pods[b][s])
            assert REASONS[batched.reason_code[b, s]] == single.reason
            assert_same_history(state, b, s, hpas[b][s].state)
    current = batched.desired_replicas.copy()
    if data.draw(st.booleans()):
        b, s = data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, services - 1))
        current[b, s] = data.draw(st.integers(0, 15))
    return current


def assert_same_history(state: BatchedHPAState, b: int, s: int, single: HPAState) -> None:
    """The batched arrays hold the Go slices of the per-target state, slot by slot."""
    length = state.rec_len[b, s]
    assert [(r.recommendation, r.timestamp_s) for r in single.recommendations or []] == list(
        zip(state.rec_value[b, s, :length].tolist(), state.rec_time[b, s, :length].tolist()))
    for direction in ("up", "down"):
        length = getattr(state, f"{direction}_len")[b, s]
        batched_events = zip(getattr(state, f"{direction}_change")[b, s, :length].tolist(),
                             getattr(state, f"{direction}_time")[b, s, :length].tolist(),
                             getattr(state, f"{direction}_outdated")[b, s, :length].tolist())
        single_events = [(e.replica_change, e.timestamp_s, e.outdated)
                         for e in getattr(single, f"scale_{direction}_events")]
        assert single_events == list(batched_events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), behavior=BEHAVIOR)
def test_batched_agrees_with_per_target_class(data, behavior):
    batch, services = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    shape = (batch, services)
    min_r = np.array(data.draw(st.lists(st.integers(0, 3), min_size=batch * services, max_size=batch * services)))
    spread = np.array(data.draw(st.lists(st.integers(0, 10), min_size=batch * services, max_size=batch * services)))
    min_r = min_r.reshape(shape)
    max_r = np.maximum(min_r, 1) + spread.reshape(shape)
    target = np.array(data.draw(st.lists(st.sampled_from([30, 50, 80, 100]), min_size=batch * services,
                                         max_size=batch * services))).reshape(shape)
    hpas = [[cpu_hpa(int(max_r[b, s]), int(min_r[b, s]), int(target[b, s]), behavior) for s in range(services)]
            for b in range(batch)]
    state = BatchedHPAState.empty(batch, services)
    current = np.array(data.draw(st.lists(st.integers(0, 12), min_size=batch * services,
                                          max_size=batch * services))).reshape(shape)
    now = 0.0
    for _ in range(data.draw(st.integers(1, 12))):
        now += data.draw(st.sampled_from([1.0, 5.0, 15.0, 15.0, 30.0, 60.0, 301.0]))
        cells = batch * services
        utilization = np.array(data.draw(st.lists(st.integers(0, 400), min_size=cells, max_size=cells))).reshape(shape)
        fraction = np.array(data.draw(st.lists(st.integers(0, 9), min_size=cells, max_size=cells))).reshape(shape)
        ready = np.array(data.draw(st.lists(st.integers(0, 8), min_size=cells, max_size=cells))).reshape(shape)
        pods = [[pods_for(int(utilization[b, s]), int(fraction[b, s]), int(ready[b, s])) for s in range(services)]
                for b in range(batch)]
        pooled = np.array([[100.0 * sum(p.usage_milli for p in row) / (1000 * len(row)) if row else 0.0
                            for row in env] for env in pods])
        batched = batched_hpa_recommend(state, now, current, ready, pooled, target, min_r, max_r, behavior)
        current = assert_batched_matches_scalar(data, batched, hpas, state, now, current, pods)


@pytest.mark.parametrize("behavior", [None, HPABehavior()], ids=["behaviourless", "default-behavior"])
def test_batched_long_run_matches_and_history_stays_bounded(behavior):
    rng = np.random.default_rng(0)
    batch, services = 3, 4
    state = BatchedHPAState.empty(batch, services)
    hpas = [[cpu_hpa(30, 1, 60, behavior) for _ in range(services)] for _ in range(batch)]
    current = np.full((batch, services), 3)
    for step in range(200):
        now = 15.0 * step
        load = 50 + 45 * np.sin(step / 15.0 + np.arange(services)) + rng.normal(0, 5, (batch, services))
        per_pod = np.clip(np.round(load * 3 / current.clip(1) * 10) / 10, 0, 400)  # total load spread over pods
        utilization = np.floor(per_pod).astype(int)
        batched = batched_hpa_recommend(state, now, current, current, utilization, 60, 1, 30, behavior)
        for b in range(batch):
            for s in range(services):
                single = hpas[b][s].recommend(now, int(current[b, s]),
                                              pods_for(int(utilization[b, s]), 0, int(current[b, s])))
                assert batched.desired_replicas[b, s] == single.desired_replicas
        current = batched.desired_replicas
    assert state.rec_len.max() <= 22  # 300 s / 15 s + the reused slot + the initial entry


def test_batched_history_overflow_raises():
    # The first call stores the initial entry and its own; every call within 300 s adds one.
    state = BatchedHPAState.empty(1, 1, recommendation_capacity=3)
    for t in range(2):
        batched_hpa_recommend(state, float(t), 2, 2, 50, 50, 1, 10)
    assert state.rec_len.tolist() == [[3]]
    with pytest.raises(HistoryCapacityError):
        batched_hpa_recommend(state, 2.0, 2, 2, 50, 50, 1, 10)


def test_batched_reset_forgets_history():
    state = BatchedHPAState.empty(2, 1)
    first = batched_hpa_recommend(state, 0.0, 4, 4, 100, 50, 1, 100, HPABehavior())
    assert first.desired_replicas.tolist() == [[8], [8]]
    state.reset(np.array([True, False]))
    assert state.rec_len.tolist() == [[0], [2]] and state.up_len.tolist() == [[0], [1]]
    # One second later both are at 8 pods and 500%. Env 1 still remembers its +4 within the
    # 15 s period (start 4 -> limit max(4 + 4, 2 * 4) = 8); env 0 starts afresh (limit 16).
    second = batched_hpa_recommend(state, 1.0, 8, 8, 500, 50, 1, 100, HPABehavior())
    assert second.desired_replicas.tolist() == [[16], [8]]
    assert second.reasons().tolist() == [["ScaleUpLimit"], ["ScaleUpLimit"]]
