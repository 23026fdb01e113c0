"""Baseline autoscalers: the real Kubernetes HPA rule and simple references.

Names are imported on first use, so ``import agents.baselines`` stays cheap (numpy only,
no torch) for the controller and the digital twins.

* :mod:`agents.baselines.k8s_hpa` -- :class:`HorizontalPodAutoscaler`, a port of the
  Kubernetes controller's decision logic, and :func:`batched_hpa_recommend` for simulators.
* :mod:`agents.baselines.autoscaling_references` -- :class:`StaticReplicas` and
  :class:`ThresholdStepScaler`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BatchedHPADecision": "k8s_hpa",
    "BatchedHPAState": "k8s_hpa",
    "HPABehavior": "k8s_hpa",
    "HPAControllerConfig": "k8s_hpa",
    "HPADecision": "k8s_hpa",
    "HPAScalingPolicy": "k8s_hpa",
    "HPAScalingRules": "k8s_hpa",
    "HPAState": "k8s_hpa",
    "HorizontalPodAutoscaler": "k8s_hpa",
    "PodMetricSample": "k8s_hpa",
    "PodsMetricSpec": "k8s_hpa",
    "ResourceMetricSpec": "k8s_hpa",
    "batched_hpa_recommend": "k8s_hpa",
    "ScalingDecision": "autoscaling_references",
    "StaticReplicas": "autoscaling_references",
    "ThresholdStepScaler": "autoscaling_references",
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
