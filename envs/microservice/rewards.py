"""Rewards of the microservice autoscaling environments: the global reward and mission terms.

Everything here is a pure function of one twin step's outputs (``info`` and raw observations of
:func:`digital_twin.microservices.dynamics.step`) over B clusters; the single-agent env, the
vector env and the PettingZoo env all call it, so the three agree by construction.

**Global reward** (single agent, vector env, and the shared part of every PettingZoo agent)::

    r = -(w_slo * slo + w_drop * drop + w_cost * cost)

=========  ===================================================================================
term       meaning (per 15 s step, per cluster)
=========  ===================================================================================
``slo``    1 if the step violated the topology's SLO (end-to-end p95 latency above
           ``slo.latency_p95_seconds`` or end-to-end error rate above ``slo.error_rate``),
           else 0. Summed over an episode and times ``step_seconds``: SLO-violation seconds.
``drop``   End-to-end error rate: share of the requests entering the application (real and
           attack) that failed somewhere on their path (queue full, caller timeout, no Ready
           endpoint, OOM-killed pod), in [0, 1].
``cost``   Pod-seconds bound to nodes this step (Starting, Ready, CrashLoopBackOff and
           Terminating pods) divided by the most the application may hold
           (``sum_s max_replicas_s x step_seconds``), in [0, 1].
=========  ===================================================================================

Defaults ``w_slo = 1, w_drop = 1, w_cost = 0.5``: one violated step costs more than running every
service at its maximum for a step, so the best policy keeps the SLO first and then spends as
few pods as it can.

**Mission terms** (PettingZoo agents; each is a "badness" >= 0 over the agent's *scope*, a
set of services; a mission reward is ``-sum_k w_k x term_k``):

=============  ===============================================================================
term           meaning
=============  ===============================================================================
``slo``        the global ``slo`` term (scope ignored)
``e2e_error``  the global ``drop`` term (scope ignored)
``drop``       requests dropped at the scope's services / requests that arrived there
``cost``       pod-seconds of the scope / (its services' ``max_replicas`` x step_seconds)
``unready``    1 - Ready pods / desired pods over the scope (crash-looping, Pending, starting
               or lost pods), in [0, 1]
``throttle``   mean ``cpu_throttled_ratio`` over the scope, in [0, 1]
``latency``    max over the scope of ``max(p95_s / SLO p95 - 1, 0)`` (inclusive p95 of each
               service against the end-to-end SLO), in [0, timeout / SLO - 1]
=============  ===============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX

MISSION_TERMS: tuple[str, ...] = ("slo", "e2e_error", "drop", "cost", "unready", "throttle", "latency")

_READY = METRIC_INDEX["replicas_ready"]
_DESIRED = METRIC_INDEX["replicas_desired"]
_THROTTLED = METRIC_INDEX["cpu_throttled_ratio"]
_P95 = METRIC_INDEX["latency_p95_seconds"]


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the global reward ``r = -(slo * v + drop * e + cost * c)``.

    Attributes:
        slo: Per step that violates the SLO.
        drop: Per unit of end-to-end error rate (share of entry requests failed).
        cost: Per unit of pod-seconds over the maximum the application may hold.
    """

    slo: float = 1.0
    drop: float = 1.0
    cost: float = 0.5

    @classmethod
    def from_dict(cls, doc: dict | None, source: str = "<reward>") -> "RewardWeights":
        doc = dict(doc or {})
        unknown = set(doc) - {"slo", "drop", "cost"}
        if unknown:
            raise ValueError(f"{source}: key 'reward.{sorted(unknown)[0]}': unknown; expected slo, drop, cost")
        for key, value in doc.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{source}: key 'reward.{key}': expected a finite number >= 0, got {value!r}")
        return cls(**{k: float(v) for k, v in doc.items()})


@dataclass(frozen=True)
class RewardConstants:
    """Per-topology constants the terms need (built once by the env core).

    Attributes:
        step_seconds: Control-step length.
        entry_index: Position of the entry service.
        max_replicas: (S,) replica caps the env enforces.
        slo_latency_p95: End-to-end p95 SLO, seconds.
        timeout: (S,) service timeouts, seconds (bound of the ``latency`` term).
    """

    step_seconds: float
    entry_index: int
    max_replicas: np.ndarray
    slo_latency_p95: float
    timeout: np.ndarray


def global_terms(info: dict[str, np.ndarray], consts: RewardConstants) -> dict[str, np.ndarray]:
    """The three terms of the global reward and the raw quantities behind them.

    Args:
        info: One twin step's info (arrays with a leading batch axis B).
        consts: From the env core.

    Returns:
        Dict of (B,) float64 arrays: ``slo``, ``drop``, ``cost`` (the terms) and raw
        ``pod_seconds``, ``failed_requests``, ``entry_requests``, ``dropped_requests``.

    Shapes: info arrays (B,) or (B, S) -> (B,).
    """
    pod_seconds = info["allocated_pod_seconds"].sum(axis=1)
    entry_requests = info["arrived"][:, consts.entry_index]
    return {
        "slo": info["slo_violated"].astype(np.float64),
        "drop": info["e2e_error_rate"].astype(np.float64),
        "cost": pod_seconds / (float(consts.max_replicas.sum()) * consts.step_seconds),
        "pod_seconds": pod_seconds,
        "failed_requests": info["e2e_error_rate"] * entry_requests,
        "entry_requests": entry_requests,
        "dropped_requests": info["dropped"].sum(axis=1),
    }


def global_reward(terms: dict[str, np.ndarray], weights: RewardWeights) -> np.ndarray:
    """``-(w_slo * slo + w_drop * drop + w_cost * cost)``, shape (B,) float64."""
    return -(weights.slo * terms["slo"] + weights.drop * terms["drop"] + weights.cost * terms["cost"])


def mission_terms(
    info: dict[str, np.ndarray],
    raw_obs: np.ndarray,
    scopes: np.ndarray,
    consts: RewardConstants,
) -> dict[str, np.ndarray]:
    """All mission terms for A scopes at once.

    Args:
        info: One twin step's info (leading batch axis B).
        raw_obs: (B, S, M) the twin's observations (unnormalised).
        scopes: (A, S) bool, the services each agent answers for.
        consts: From the env core.

    Returns:
        Dict of (B, A) float64 arrays, one per name in :data:`MISSION_TERMS`.
    """
    scope = scopes.astype(np.float64).T  # (S, A)
    b, a = raw_obs.shape[0], scopes.shape[0]
    tiny = 1e-12
    arrived = info["arrived"] @ scope
    dropped = info["dropped"] @ scope
    max_pod_seconds = (consts.max_replicas @ scope) * consts.step_seconds
    desired = raw_obs[:, :, _DESIRED].astype(np.float64) @ scope
    ready = raw_obs[:, :, _READY].astype(np.float64) @ scope
    throttled = raw_obs[:, :, _THROTTLED].astype(np.float64) @ scope / np.maximum(scope.sum(axis=0), 1.0)
    excess = np.maximum(raw_obs[:, :, _P95].astype(np.float64) / consts.slo_latency_p95 - 1.0, 0.0)  # (B, S)
    latency = np.where(scopes[None, :, :], excess[:, None, :], 0.0).max(axis=2)
    return {
        "slo": np.repeat(info["slo_violated"].astype(np.float64)[:, None], a, axis=1),
        "e2e_error": np.repeat(info["e2e_error_rate"].astype(np.float64)[:, None], a, axis=1),
        "drop": np.where(arrived > tiny, dropped / np.maximum(arrived, tiny), 0.0),
        "cost": (info["allocated_pod_seconds"] @ scope) / np.maximum(max_pod_seconds, tiny),
        "unready": np.where(desired > 0, np.clip(1.0 - ready / np.maximum(desired, tiny), 0.0, 1.0), 0.0),
        "throttle": np.broadcast_to(throttled, (b, a)).copy(),
        "latency": latency,
    }


def mission_rewards(terms: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``-sum_k weights[a, k] x terms[k][:, a]``.

    Args:
        terms: From :func:`mission_terms`, (B, A) arrays.
        weights: (A, len(MISSION_TERMS)) weights, columns in :data:`MISSION_TERMS` order.

    Returns:
        (B, A) float64 mission rewards (<= 0).
    """
    stacked = np.stack([terms[name] for name in MISSION_TERMS], axis=2)  # (B, A, K)
    return -(stacked * weights[None]).sum(axis=2)
