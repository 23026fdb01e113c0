"""Tests for the reference autoscalers (agents/autoscaling/references.py)."""

from __future__ import annotations

import pytest

from agents.autoscaling import HorizontalPodAutoscaler, StaticReplicas, ThresholdStepScaler
from agents.autoscaling.k8s_hpa import PodMetricSample
from agents.autoscaling.references import ScalingDecision, average_utilization_percent


def pods_at(percent: float, count: int, request: int = 1000) -> list[PodMetricSample]:
    """``count`` ready pods each using ``percent`` of a ``request`` millicore request."""
    return [PodMetricSample(f"p{i}", round(percent * request / 100), request) for i in range(count)]


def scaler(**overrides) -> ThresholdStepScaler:
    settings = dict(up_threshold=70, down_threshold=30, step=2, cooldown_s=60, min_replicas=1, max_replicas=10)
    settings.update(overrides)
    return ThresholdStepScaler(**settings)


class TestStaticReplicas:
    def test_returns_the_fixed_count_whatever_the_load(self):
        static = StaticReplicas(4)
        assert static.recommend(0.0, 1, pods_at(500, 1)) == ScalingDecision(4, "Static")
        assert static.recommend(10.0, 9, None).desired_replicas == 4

    def test_rejects_negative_counts(self):
        with pytest.raises(ValueError):
            StaticReplicas(-1)


class TestAverageUtilization:
    def test_pools_usage_over_requests(self):
        # (200 + 900) / (1000 + 1000) = 55%; pooled, not the mean of per-pod percentages.
        pods = [PodMetricSample("a", 200, 1000), PodMetricSample("b", 900, 1000)]
        assert average_utilization_percent(pods) == pytest.approx(55.0)
        pods = [PodMetricSample("a", 200, 500), PodMetricSample("b", 900, 1500)]
        assert average_utilization_percent(pods) == pytest.approx(55.0)  # per-pod mean would be 50%

    def test_only_serving_pods_count(self):
        pods = pods_at(50, 2) + [
            PodMetricSample("unready", 1000, 1000, ready=False),
            PodMetricSample("pending", None, 1000, phase="Pending"),
            PodMetricSample("terminating", 1000, 1000, deleted=True),
            PodMetricSample("no-sample", None, 1000),
            PodMetricSample("no-request", 1000, None),
        ]
        assert average_utilization_percent(pods) == pytest.approx(50.0)
        assert average_utilization_percent([]) is None


class TestThresholdStepScaler:
    def test_steps_up_above_the_upper_threshold(self):
        decision = scaler().recommend(0.0, 3, pods_at(80, 3))
        assert (decision.desired_replicas, decision.reason) == (5, "AboveThreshold")
        assert decision.utilization_percent == pytest.approx(80.0)

    def test_steps_down_below_the_lower_threshold(self):
        assert scaler().recommend(0.0, 5, pods_at(20, 5)) == ScalingDecision(3, "BelowThreshold", 20.0)

    def test_holds_inside_the_band_and_on_the_thresholds(self):
        assert scaler().recommend(0.0, 4, pods_at(50, 4)).reason == "WithinBand"
        assert scaler().recommend(0.0, 4, pods_at(70, 4)).desired_replicas == 4  # strict ">"
        assert scaler().recommend(0.0, 4, pods_at(30, 4)).desired_replicas == 4  # strict "<"

    def test_cooldown_after_a_change(self):
        step_scaler = scaler()
        assert step_scaler.recommend(0.0, 3, pods_at(90, 3)).desired_replicas == 5
        held = step_scaler.recommend(59.0, 5, pods_at(90, 5))
        assert (held.desired_replicas, held.reason) == (5, "CoolingDown")
        assert step_scaler.recommend(60.0, 5, pods_at(90, 5)).desired_replicas == 7
        step_scaler.reset()
        assert step_scaler.recommend(61.0, 7, pods_at(10, 7)).desired_replicas == 5

    def test_holding_does_not_restart_the_cooldown(self):
        step_scaler = scaler()
        step_scaler.recommend(0.0, 3, pods_at(90, 3))
        step_scaler.recommend(30.0, 5, pods_at(50, 5))  # within band at 30 s
        assert step_scaler.recommend(60.0, 5, pods_at(90, 5)).desired_replicas == 7

    def test_steps_stop_at_the_bounds(self):
        assert scaler().recommend(0.0, 9, pods_at(95, 9)).desired_replicas == 10  # 9 + 2 capped
        at_max = scaler().recommend(0.0, 10, pods_at(95, 10))
        assert (at_max.desired_replicas, at_max.reason) == (10, "AtMaxReplicas")
        assert scaler().recommend(0.0, 2, pods_at(5, 2)).desired_replicas == 1
        assert scaler().recommend(0.0, 1, pods_at(5, 1)).reason == "AtMinReplicas"

    def test_out_of_range_counts_are_corrected_even_during_cooldown(self):
        step_scaler = scaler()
        step_scaler.recommend(0.0, 3, pods_at(90, 3))
        assert step_scaler.recommend(1.0, 14, pods_at(50, 14)) == ScalingDecision(10, "TooManyReplicas", 50.0)
        assert step_scaler.recommend(2.0, 0, []).desired_replicas == 1

    def test_no_metrics_holds(self):
        decision = scaler().recommend(0.0, 4, {"cpu": []})
        assert (decision.desired_replicas, decision.reason) == (4, "NoMetrics")
        assert scaler().recommend(0.0, 4, {"memory": pods_at(90, 4)}).reason == "NoMetrics"

    def test_reads_its_metric_from_a_mapping(self):
        decision = scaler(metric="memory").recommend(0.0, 3, {"cpu": pods_at(10, 3), "memory": pods_at(90, 3)})
        assert decision.desired_replicas == 5

    @pytest.mark.parametrize(
        "overrides",
        [dict(up_threshold=30, down_threshold=30), dict(step=0), dict(cooldown_s=-1),
         dict(min_replicas=5, max_replicas=4)],
    )
    def test_rejects_inconsistent_settings(self, overrides):
        with pytest.raises(ValueError):
            scaler(**overrides)


def test_all_autoscalers_share_the_recommend_shape():
    pods = pods_at(90, 3)
    for autoscaler in (StaticReplicas(3), scaler(), HorizontalPodAutoscaler(max_replicas=10)):
        decision = autoscaler.recommend(0.0, 3, {"cpu": pods})
        assert isinstance(decision.desired_replicas, int) and isinstance(decision.reason, str)
