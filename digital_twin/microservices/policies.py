"""Non-learning replica policies over the twin's observations (baselines, CLI).

Both read only the declared Prometheus metrics, so they run unchanged against a live cluster.
"""

from __future__ import annotations

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX


def fixed_replicas(observations: np.ndarray, replicas: int | np.ndarray) -> np.ndarray:
    """Always ask for the same replica counts.

    Args:
        observations: (B, S, M) observations (only the shape is used).
        replicas: Scalar or (S,) replica count.

    Returns:
        (B, S) int64 desired replicas.
    """
    b, s, _ = observations.shape
    return np.broadcast_to(np.asarray(replicas, dtype=np.int64), (b, s)).copy()


def hpa_desired(
    observations: np.ndarray,
    cpu_request_per_pod: np.ndarray,
    target_utilisation: float = 0.6,
    tolerance: float = 0.1,
) -> np.ndarray:
    """The core ratio of the Kubernetes HPA rule on CPU: ``ceil(ready x usage / (ready x request) / target)``.

    Within ``tolerance`` of the target the replica count is kept (the controller's default
    0.1). Only the ratio: no stabilisation window, rate limits, readiness or missing-metric
    handling. The full controller rule is :mod:`agents.baselines.k8s_hpa` (used by
    ``evaluate.py``); this one keeps the twin's command line free of the agents package.

    Args:
        observations: (B, S, M) observations.
        cpu_request_per_pod: (S,) cores requested per pod.
        target_utilisation: Target average CPU utilisation of the requests.
        tolerance: Relative dead band around the target.

    Returns:
        (B, S) int64 desired replicas (the twin clips them to the bounds).
    """
    ready = observations[:, :, METRIC_INDEX["replicas_ready"]].astype(np.float64)
    desired_now = observations[:, :, METRIC_INDEX["replicas_desired"]].astype(np.float64)
    usage = observations[:, :, METRIC_INDEX["cpu_usage_cores"]].astype(np.float64)
    utilisation = usage / np.maximum(ready * cpu_request_per_pod, 1e-12)
    ratio = utilisation / target_utilisation
    proposal = np.ceil(np.maximum(ready, 1.0) * ratio)
    keep = (np.abs(ratio - 1.0) <= tolerance) | (ready == 0)
    return np.where(keep, desired_now, proposal).astype(np.int64)
