"""Autoscaling policies: each returns desired replicas per service for B clusters.

* :mod:`~agents.autoscaling.k8s_hpa` -- the Kubernetes HPA rule, ported from the controller's
  Go source (one module per Go file, plus a ``[B, S]`` batched form).
* :mod:`~agents.autoscaling.references` -- the static and threshold step-scaling rules.
* :mod:`~agents.autoscaling.policies` -- the :class:`AutoscalingPolicy` interface,
  :func:`deltas_for`, and the HPA and saved-agent adapters.
* :mod:`~agents.autoscaling.mpc` -- the model-predictive reference (``mpc``): the twin rolled
  forward over candidate replica plans every step.
* :mod:`~agents.autoscaling.tuning` -- the HPA with its target tuned on a config's train split
  (``k8s_hpa_tuned``).
* :mod:`~agents.autoscaling.registry` -- :func:`make_policy` by name (:data:`POLICY_NAMES`,
  ``k8s_hpa@TARGET``, ``agent:PATH``).

Names are imported on first use (PEP 562), so ``import agents.autoscaling`` imports nothing
heavy; torch and SB3 load only for an ``agent:`` policy.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "POLICY_NAMES": "registry",
    "make_policy": "registry",
    "AgentPolicy": "policies",
    "AutoscalingPolicy": "policies",
    "ClusterView": "policies",
    "KubernetesHPAPolicy": "policies",
    "cpu_utilization_percent": "policies",
    "deltas_for": "policies",
    "ScalingDecision": "references",
    "StaticPolicy": "references",
    "StaticReplicas": "references",
    "ThresholdPolicy": "references",
    "ThresholdStepScaler": "references",
    "ModelPredictivePolicy": "mpc",
    "TunedHPAPolicy": "tuning",
    "tune_hpa_target": "tuning",
    "HorizontalPodAutoscaler": "k8s_hpa",
    "batched_hpa_recommend": "k8s_hpa",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
