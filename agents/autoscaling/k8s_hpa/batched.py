"""The HPA rule vectorised over ``[B, S]`` (environments x services), for simulators.

:func:`batched_hpa_recommend` covers what a simulator produces: one CPU-utilisation metric,
and per target the *counts* of pods in each of Go's groups (ready, unready, missing) with the
ready pods' summed usage, all pods of a target requesting the same CPU. From those counts it
applies ``GetResourceReplicas``' corrections for unready and missing pods exactly as
:func:`~agents.autoscaling.k8s_hpa.replica_calculator.get_resource_replicas` does (Go's
integer percent, the fill values, the direction checks). The history lives in a
:class:`BatchedHPAState` of fixed-size arrays that reproduce the Go slices of
:class:`~agents.autoscaling.k8s_hpa.horizontal.HPAState` slot by slot, so both paths agree
exactly (tested against :class:`~agents.autoscaling.k8s_hpa.horizontal.HorizontalPodAutoscaler`
on random pods of every group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.autoscaling.k8s_hpa.api import HPABehavior, HPAScalingRules
from agents.autoscaling.k8s_hpa.config import HPAControllerConfig
from agents.autoscaling.k8s_hpa.defaults import set_defaults_behavior
from agents.autoscaling.k8s_hpa.horizontal import (
    INT32_MAX,
    INT32_MIN,
    REASON_CODES,
    REASONS,
    get_longest_policy_period,
    tolerances_for_hpa,
)


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
        select, start = (np.maximum, INT32_MIN) if widest_up else (np.minimum, INT32_MAX)
    else:
        select, start = (np.minimum, INT32_MAX) if widest_up else (np.maximum, INT32_MIN)
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


def _resource_replicas(
    current: np.ndarray,
    ready: np.ndarray,
    unready: np.ndarray,
    missing: np.ndarray,
    utilization: np.ndarray,
    usage: np.ndarray,
    request: np.ndarray,
    target: np.ndarray,
    tolerances,
) -> np.ndarray:
    """``GetResourceReplicas`` (:func:`~agents.autoscaling.k8s_hpa.replica_calculator.get_resource_replicas`)
    on pod counts, every pod of a row requesting ``request``: ``utilization`` is the ready pods'
    integer percent, ``usage`` their summed usage (for the corrections). Rows without a ready pod
    keep ``current`` (the caller reports them as failed).

    Go keeps quantities as integers; the float64 arithmetic here is exact for integer inputs below
    2**53, and each truncation (``floor``) follows a single correctly rounded division, which lands
    on the integer Go computes.
    """
    r = ready.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = utilization / target
        within = ((1.0 - tolerances.scale_down) <= ratio) & (ratio <= (1.0 + tolerances.scale_up))
        up_with_unready = (unready > 0) & (ratio > 1.0)
        simple = ~up_with_unready & (missing == 0)
        plain = np.where(within, current, np.ceil(ratio * r))

        # Missing pods: at max(100%, target) of their request on a scale-down, 0 on a scale-up,
        # left out at a ratio of exactly 1; unready pods at 0 on a scale-up.
        fill = np.where(ratio < 1.0, np.floor(request * np.maximum(100, target) / 100.0), 0.0)
        counted_missing = np.where(ratio != 1.0, missing, 0)
        counted_unready = np.where(up_with_unready, unready, 0)
        counted = r + counted_missing + counted_unready
        new_ratio = np.floor((usage + counted_missing * fill) * 100.0 / (counted * request)) / target
        keep = (((1.0 - tolerances.scale_down) <= new_ratio) & (new_ratio <= (1.0 + tolerances.scale_up))
                | ((ratio < 1.0) & (new_ratio > 1.0)) | ((ratio > 1.0) & (new_ratio < 1.0)))
        new_replicas = np.ceil(new_ratio * counted)
        keep |= ((new_ratio < 1.0) & (new_replicas > current)) | ((new_ratio > 1.0) & (new_replicas < current))
        corrected = np.where(keep, current, new_replicas)
        proposal = np.where(simple, plain, corrected)
    return np.where(ready > 0, proposal, current).astype(np.int64)


def batched_hpa_recommend(
    state: BatchedHPAState,
    now_s: float | np.ndarray,
    current_replicas: np.ndarray,
    ready_pods: np.ndarray,
    utilization_percent: np.ndarray | None,
    target_utilization: np.ndarray | int,
    min_replicas: np.ndarray | int,
    max_replicas: np.ndarray | int,
    behavior: HPABehavior | None = None,
    config: HPAControllerConfig | None = None,
    *,
    unready_pods: np.ndarray | int = 0,
    missing_pods: np.ndarray | int = 0,
    usage_milli: np.ndarray | None = None,
    request_milli: np.ndarray | float | None = None,
) -> BatchedHPADecision:
    """One reconcile of ``B x S`` CPU-utilisation HPAs at once, for a simulator.

    Equals :meth:`HorizontalPodAutoscaler.recommend` (same desired count, same reason, same
    history) for an HPA with one ``ResourceMetricSpec("cpu", target)`` whose pods all request
    the same CPU, given how many fall in each of ``groupPods``' groups:

    * ``ready_pods``: samples that count (Go's ``readyPodCount``: Running, Ready and, within
      the CPU initialisation period, sampled wholly after turning Ready);
    * ``unready_pods``: set aside as unready (Pending, not Ready, or sampled too early); on a
      scale-up they count at 0% of their request;
    * ``missing_pods``: Running but without a sample; they count at ``max(100%, target)`` on a
      scale-down and 0% on a scale-up.

    Terminating and failed pods are ignored by Go and are simply not counted. That covers the
    ``reconcileAutoscaler`` branches (scaling disabled at 0, out-of-range counts, no usable
    sample), the tolerance, the ``ceil`` rule and Go's corrections for unready and missing
    pods, both normalisations and the history. Rows with no ready pods behave like the
    controller without a usable sample: no change, reason ``FailedGetResourceMetric``.

    The ready pods' CPU comes either as ``utilization_percent`` (which fixes the request at
    100 milli-units, so the percent is the usage) or, exactly as Go's integer arithmetic sees
    it, as ``usage_milli`` (summed over the ready pods) and ``request_milli`` (per pod).

    Shapes:
        ``B`` environments, ``S`` services; every array argument broadcasts to ``(B, S)``.

    Args:
        state: History, updated in place.
        now_s: Reconcile time (scalar or broadcastable array).
        current_replicas: Current ``spec.replicas``.
        ready_pods: Pods whose samples count (Go's ``readyPodCount``).
        utilization_percent: ``100 * sum(usage) / sum(request)`` over those pods; it is
            truncated to an integer percent as the controller does. ``None`` with ``usage_milli``.
        target_utilization: Target percent, positive.
        min_replicas: ``spec.minReplicas``.
        max_replicas: ``spec.maxReplicas``.
        behavior: One ``spec.behavior`` shared by all rows (``None``: behaviour-less HPAs).
        config: Controller settings.
        unready_pods: Pods set aside as unready (see above).
        missing_pods: Pods without a sample (see above).
        usage_milli: Summed CPU usage of the ready pods, millicores (instead of ``utilization_percent``).
        request_milli: CPU request of one pod, millicores (with ``usage_milli``).

    Returns:
        Desired counts and reason codes. Rescales are recorded in ``state``.

    Raises:
        HistoryCapacityError: A history buffer overflowed.
        ValueError: Non-positive targets or requests, negative utilisation or pod counts, or
            both or neither of ``utilization_percent`` and ``usage_milli``.
    """
    config = config or HPAControllerConfig()
    behavior = set_defaults_behavior(behavior)
    shape = state.rec_len.shape

    def as_rows(values: np.ndarray | float, dtype: type) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=dtype), shape)

    now = as_rows(now_s, np.float64)
    current = as_rows(current_replicas, np.int64)
    ready = as_rows(ready_pods, np.int64)
    unready = as_rows(unready_pods, np.int64)
    missing = as_rows(missing_pods, np.int64)
    target = as_rows(target_utilization, np.int64)
    min_r = as_rows(min_replicas, np.int64)
    max_r = as_rows(max_replicas, np.int64)
    if (utilization_percent is None) == (usage_milli is None):
        raise ValueError("give utilization_percent or usage_milli (with request_milli), not both or neither")
    if usage_milli is None:
        # A request of 100 milli-units makes the percent the usage: 100 * (u * ready) / (ready * 100) = u.
        percent = as_rows(utilization_percent, np.float64)
        if np.any(percent < 0):
            raise ValueError("utilization_percent must be non-negative")
        request = as_rows(100.0, np.float64)
        usage = percent * ready
        utilization = np.floor(percent)
    else:
        if request_milli is None:
            raise ValueError("usage_milli needs request_milli (the CPU request of one pod, millicores)")
        usage = as_rows(usage_milli, np.float64)
        request = as_rows(request_milli, np.float64)
        if np.any(usage < 0):
            raise ValueError("usage_milli must be non-negative")
        if np.any(request <= 0):
            raise ValueError("request_milli must be positive")
        with np.errstate(divide="ignore", invalid="ignore"):
            # GetResourceUtilizationRatio: Go truncates total * 100 / requests to an integer percent.
            utilization = np.where(ready > 0, np.floor(usage * 100.0 / (ready * request)), 0.0)
    if np.any(target <= 0):
        raise ValueError("target_utilization must be positive")
    if np.any(ready < 0) or np.any(unready < 0) or np.any(missing < 0):
        raise ValueError("pod counts must be non-negative")

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

    # GetResourceReplicas: integer utilisation, tolerance, ceil(ratio * pods), unready / missing pods.
    tolerances = tolerances_for_hpa(behavior, config)
    proposal = _resource_replicas(current, ready, unready, missing, utilization, usage, request, target, tolerances)
    prenormalized = np.maximum(proposal, 0)

    slot = np.arange(state.rec_value.shape[-1])
    valid = slot < state.rec_len[..., None]
    if behavior is None:
        # normalizeDesiredReplicas: max over the downscale window (cutoff inclusive).
        cutoff = (now - config.downscale_stabilization_window_s)[..., None]
        old = valid & (state.rec_time < cutoff)
        counted = valid & ~old
        recent_max = np.where(counted, state.rec_value, INT32_MIN).max(-1)
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
            prenormalized, np.where(valid & (state.rec_time > up_cutoff), state.rec_value, INT32_MAX).min(-1)
        )
        down_recommendation = np.maximum(
            prenormalized, np.where(valid & (state.rec_time > down_cutoff), state.rec_value, INT32_MIN).max(-1)
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
