"""The simple autoscaling rules that put the learned policies and the HPA in context.

* :class:`StaticReplicas` -- a fixed replica count (the over- or under-provisioned extremes).
* :class:`ThresholdStepScaler` -- the classic rule-based scaler of cloud providers' "step
  scaling": add ``step`` replicas above an upper utilisation threshold, remove ``step`` below
  a lower one, then wait ``cooldown_s``.

Both expose the same ``recommend(now_s, current_replicas, pods_by_metric)`` call as
:class:`agents.autoscaling.k8s_hpa.HorizontalPodAutoscaler` and return an object with
``desired_replicas`` and ``reason``, so an evaluation loop can swap them freely.
:class:`StaticPolicy` and :class:`ThresholdPolicy` run the same rules over B clusters as
:class:`~agents.autoscaling.policies.AutoscalingPolicy` objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agents.autoscaling.k8s_hpa import PodMetricSample, PodsByMetric
from agents.autoscaling.policies import ClusterView, cpu_utilization_percent


@dataclass(frozen=True)
class ScalingDecision:
    """A reference scaler's answer.

    Attributes:
        desired_replicas: Replica count to apply.
        reason: Why, in CamelCase like the HPA's reasons.
        utilization_percent: The utilisation the decision was based on, if any.
    """

    desired_replicas: int
    reason: str
    utilization_percent: float | None = None


class StaticReplicas:
    """Always the same replica count, whatever the load.

    Args:
        replicas: The count to keep.

    Raises:
        ValueError: Negative count.
    """

    def __init__(self, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be non-negative, got {replicas}")
        self.replicas = int(replicas)

    def __repr__(self) -> str:
        return f"StaticReplicas(replicas={self.replicas})"

    def recommend(self, now_s: float, current_replicas: int, pods_by_metric: PodsByMetric = None) -> ScalingDecision:
        """Return the fixed count.

        Args:
            now_s: Ignored; kept for the common signature.
            current_replicas: Ignored.
            pods_by_metric: Ignored.

        Returns:
            ``ScalingDecision(replicas, "Static")``.
        """
        del now_s, current_replicas, pods_by_metric
        return ScalingDecision(self.replicas, "Static")


def average_utilization_percent(pods: Sequence[PodMetricSample]) -> float | None:
    """Average utilisation of the pods that serve traffic, in percent of their requests.

    Only running, ready, non-terminating pods with both a sample and a request count: the
    signal a simple threshold rule would read from a monitoring system.

    Args:
        pods: The target's pods.

    Returns:
        ``100 * sum(usage) / sum(request)``, or ``None`` when no pod qualifies.
    """
    usage = 0
    request = 0
    for pod in pods:
        if pod.deleted or pod.phase != "Running" or pod.ready is not True:
            continue
        if pod.usage_milli is None or pod.request_milli is None:
            continue
        usage += pod.usage_milli
        request += pod.request_milli
    if request <= 0:
        return None
    return 100.0 * usage / request


class ThresholdStepScaler:
    """Step scaling on average utilisation with a cooldown.

    Above ``up_threshold`` add ``step`` replicas, below ``down_threshold`` remove ``step``,
    always within ``[min_replicas, max_replicas]``; after any change, hold for ``cooldown_s``
    so the new pods show up in the metric before the next step. A current count outside the
    bounds is brought back at once.

    Args:
        up_threshold: Utilisation (percent of request) above which to scale up.
        down_threshold: Utilisation below which to scale down; below ``up_threshold``.
        step: Replicas added or removed per action.
        cooldown_s: Seconds to wait after a change.
        min_replicas: Lower bound.
        max_replicas: Upper bound.
        metric: Key of the pod list in ``pods_by_metric``.

    Raises:
        ValueError: Inconsistent thresholds or bounds.
    """

    def __init__(
        self,
        up_threshold: float,
        down_threshold: float,
        step: int = 1,
        cooldown_s: float = 60.0,
        min_replicas: int = 1,
        max_replicas: int = 10,
        metric: str = "cpu",
    ) -> None:
        if not down_threshold < up_threshold:
            raise ValueError(f"need down_threshold < up_threshold, got {down_threshold} >= {up_threshold}")
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be non-negative, got {cooldown_s}")
        if not 0 <= min_replicas <= max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")
        self.up_threshold = float(up_threshold)
        self.down_threshold = float(down_threshold)
        self.step = int(step)
        self.cooldown_s = float(cooldown_s)
        self.min_replicas = int(min_replicas)
        self.max_replicas = int(max_replicas)
        self.metric = metric
        self.last_scale_time_s: float | None = None

    def __repr__(self) -> str:
        return (
            f"ThresholdStepScaler(up_threshold={self.up_threshold}, down_threshold={self.down_threshold}, "
            f"step={self.step}, cooldown_s={self.cooldown_s}, min_replicas={self.min_replicas}, "
            f"max_replicas={self.max_replicas})"
        )

    def reset(self) -> None:
        """Forget the last scaling time (start of a new episode)."""
        self.last_scale_time_s = None

    def recommend(self, now_s: float, current_replicas: int, pods_by_metric: PodsByMetric = None) -> ScalingDecision:
        """Decide from the pods' samples.

        Args:
            now_s: Current time in seconds.
            current_replicas: Current replica count.
            pods_by_metric: Metric name -> pods, or a bare pod list; the ``metric`` entry is used.

        Returns:
            The decision; without usable samples the count is held (``"NoMetrics"``) unless
            it is out of bounds.
        """
        if pods_by_metric is None:
            pods: Sequence[PodMetricSample] = ()
        elif isinstance(pods_by_metric, Mapping):
            pods = pods_by_metric.get(self.metric) or ()
        else:
            pods = pods_by_metric
        return self.recommend_from_utilization(now_s, current_replicas, average_utilization_percent(pods))

    def recommend_from_utilization(
        self, now_s: float, current_replicas: int, utilization_percent: float | None
    ) -> ScalingDecision:
        """Decide from an average utilisation computed elsewhere (e.g. by a simulator).

        Args:
            now_s: Current time in seconds.
            current_replicas: Current replica count.
            utilization_percent: Average utilisation in percent of request, or ``None``.

        Returns:
            The decision.
        """
        current_replicas = int(current_replicas)
        if current_replicas < self.min_replicas:
            return self._scale(now_s, self.min_replicas, "TooFewReplicas", utilization_percent)
        if current_replicas > self.max_replicas:
            return self._scale(now_s, self.max_replicas, "TooManyReplicas", utilization_percent)
        if utilization_percent is None:
            return ScalingDecision(current_replicas, "NoMetrics", None)
        if utilization_percent > self.up_threshold:
            direction, target = "AboveThreshold", min(current_replicas + self.step, self.max_replicas)
        elif utilization_percent < self.down_threshold:
            direction, target = "BelowThreshold", max(current_replicas - self.step, self.min_replicas)
        else:
            return ScalingDecision(current_replicas, "WithinBand", utilization_percent)
        if target == current_replicas:
            # Already at the bound in that direction: nothing to do, and no cooldown to start.
            bound_reason = "AtMaxReplicas" if direction == "AboveThreshold" else "AtMinReplicas"
            return ScalingDecision(current_replicas, bound_reason, utilization_percent)
        if self.last_scale_time_s is not None and now_s - self.last_scale_time_s < self.cooldown_s:
            return ScalingDecision(current_replicas, "CoolingDown", utilization_percent)
        return self._scale(now_s, target, direction, utilization_percent)

    def _scale(self, now_s: float, replicas: int, reason: str, utilization_percent: float | None) -> ScalingDecision:
        """Record a change (starting the cooldown) and return it."""
        self.last_scale_time_s = now_s
        return ScalingDecision(replicas, reason, utilization_percent)


# ---------------------------------------------------------------------------------------
# The same rules over B clusters (AutoscalingPolicy objects)
# ---------------------------------------------------------------------------------------


class StaticPolicy:
    """:class:`StaticReplicas` for every service of B clusters, clipped to each service's bounds.

    Args:
        replicas: The count to keep.

    Raises:
        ValueError: Negative count.
    """

    def __init__(self, replicas: int):
        self.rule = StaticReplicas(replicas)
        self.name = "static"

    def reset(self, core: ClusterView) -> None:
        pass

    def desired_replicas(self, core: ClusterView, now_s: float) -> np.ndarray:
        return np.broadcast_to(np.clip(self.rule.replicas, core.low, core.high), core.desired.shape)


class ThresholdPolicy:
    """:class:`ThresholdStepScaler` per service and cluster.

    Args:
        up: Utilisation (percent of request) above which to scale up.
        down: Utilisation below which to scale down.
        step: Replicas added or removed per action.
        cooldown_s: Seconds to wait after a change.
    """

    def __init__(self, up: float = 80.0, down: float = 30.0, step: int = 1, cooldown_s: float = 60.0):
        self.args = (up, down, step, cooldown_s)
        self.name = "threshold"

    def reset(self, core: ClusterView) -> None:
        up, down, step, cooldown = self.args
        b, s = core.desired.shape
        self.scalers = [[ThresholdStepScaler(up, down, step, cooldown, int(core.low[j]), int(core.high[j]))
                         for j in range(s)] for _ in range(b)]

    def desired_replicas(self, core: ClusterView, now_s: float) -> np.ndarray:
        util, ready = cpu_utilization_percent(core)
        current = core.desired
        out = np.empty_like(current)
        # A scalar controller per (cluster, service): evaluation only, B x S is small.
        for b, row in enumerate(self.scalers):
            for s, scaler in enumerate(row):
                u = float(util[b, s]) if ready[b, s] > 0 else None
                out[b, s] = scaler.recommend_from_utilization(now_s, int(current[b, s]), u).desired_replicas
        return out
