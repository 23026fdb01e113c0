"""Autoscaling policies by name: the one list ``evaluate.py`` and the twin's CLI choose from.

Built-in names are :data:`POLICY_NAMES`; ``k8s_hpa@TARGET`` / ``k8s_hpa_behavior@TARGET`` set the
HPA's CPU target in the name (e.g. ``k8s_hpa@70``, reported under that name); ``agent:PATH`` loads
a saved SB3 agent (torch is imported only then).

``mpc`` (:class:`~agents.autoscaling.mpc.ModelPredictivePolicy`) and ``k8s_hpa_tuned`` without a
``config`` (:class:`~agents.autoscaling.tuning.TunedHPAPolicy`) need the env core itself
(:class:`~envs.microservice.MicroserviceCore`), as ``agent:PATH`` does, not only a
:class:`~agents.autoscaling.policies.ClusterView`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agents.autoscaling.k8s_hpa import HPABehavior
from agents.autoscaling.policies import AgentPolicy, AutoscalingPolicy, KubernetesHPAPolicy
from agents.autoscaling.references import StaticPolicy, ThresholdPolicy

if TYPE_CHECKING:
    from envs.microservice import MicroserviceConfig

#: The non-learned policies, in the order reports list them.
POLICY_NAMES: tuple[str, ...] = ("static", "threshold", "k8s_hpa", "k8s_hpa_behavior", "k8s_hpa_tuned", "mpc")

#: Names that take ``@TARGET``.
TARGETED_NAMES: tuple[str, ...] = ("k8s_hpa", "k8s_hpa_behavior")


def _target(spec: str) -> tuple[str, int | None]:
    """``"k8s_hpa@70"`` -> ``("k8s_hpa", 70)``; a name without ``@`` -> ``(name, None)``."""
    base, sep, value = spec.partition("@")
    if not sep:
        return spec, None
    if base not in TARGETED_NAMES or not value.isdigit() or int(value) <= 0:
        raise ValueError(f"unknown autoscaling policy {spec!r}; NAME@TARGET takes {' or '.join(TARGETED_NAMES)} "
                         f"and a positive integer percent, e.g. k8s_hpa@70")
    return base, int(value)


def make_policy(spec: str, static_replicas: int = 5, hpa_target: int = 60,
                config: MicroserviceConfig | str | Path | None = None) -> AutoscalingPolicy:
    """A policy from its name.

    Args:
        spec: One of :data:`POLICY_NAMES`, ``k8s_hpa@TARGET`` / ``k8s_hpa_behavior@TARGET``, or
            ``agent:PATH`` for a saved SB3 agent.
        static_replicas: Replicas per service of ``static``.
        hpa_target: CPU ``averageUtilization`` target of ``k8s_hpa`` / ``k8s_hpa_behavior``,
            integer percent of the request (the Kubernetes unit); ``@TARGET`` overrides it.
        config: The config ``k8s_hpa_tuned`` is tuned for, now (on its train split; cached).
            Without it the policy tunes at its first ``reset`` for the core's config. The other
            names ignore it.

    Returns:
        A fresh policy (call its ``reset`` before the first decision).

    Raises:
        ValueError: Unknown name.
        FileNotFoundError: ``agent:PATH`` names no file.
    """
    if spec.startswith("agent:"):
        return AgentPolicy(spec.split(":", 1)[1])
    base, target = _target(spec)
    if spec == "static":
        return StaticPolicy(static_replicas)
    if spec == "threshold":
        return ThresholdPolicy()
    if base == "k8s_hpa":
        return KubernetesHPAPolicy(hpa_target if target is None else target, name=spec)
    if base == "k8s_hpa_behavior":
        return KubernetesHPAPolicy(hpa_target if target is None else target, HPABehavior(), name=spec)
    if spec == "k8s_hpa_tuned":
        from agents.autoscaling.tuning import TunedHPAPolicy

        return TunedHPAPolicy(config)
    if spec == "mpc":
        from agents.autoscaling.mpc import ModelPredictivePolicy

        return ModelPredictivePolicy()
    raise ValueError(f"unknown autoscaling policy {spec!r}; choose {', '.join(POLICY_NAMES)}, "
                     f"k8s_hpa@TARGET or agent:PATH")
