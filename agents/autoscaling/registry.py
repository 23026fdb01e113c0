"""Autoscaling policies by name: the one list ``evaluate.py`` and the twin's CLI choose from.

Built-in names are :data:`POLICY_NAMES`; ``agent:PATH`` loads a saved SB3 agent (torch is
imported only then).
"""

from __future__ import annotations

from agents.autoscaling.k8s_hpa import HPABehavior
from agents.autoscaling.policies import AgentPolicy, AutoscalingPolicy, KubernetesHPAPolicy
from agents.autoscaling.references import StaticPolicy, ThresholdPolicy

#: The non-learned policies, in the order reports list them.
POLICY_NAMES: tuple[str, ...] = ("static", "threshold", "k8s_hpa", "k8s_hpa_behavior")


def make_policy(spec: str, static_replicas: int = 5, hpa_target: int = 60) -> AutoscalingPolicy:
    """A policy from its name.

    Args:
        spec: One of :data:`POLICY_NAMES`, or ``agent:PATH`` for a saved SB3 agent.
        static_replicas: Replicas per service of ``static``.
        hpa_target: CPU ``averageUtilization`` target of ``k8s_hpa`` / ``k8s_hpa_behavior``,
            integer percent of the request (the Kubernetes unit).

    Returns:
        A fresh policy (call its ``reset`` before the first decision).

    Raises:
        ValueError: Unknown name.
        FileNotFoundError: ``agent:PATH`` names no file.
    """
    if spec.startswith("agent:"):
        return AgentPolicy(spec.split(":", 1)[1])
    if spec == "static":
        return StaticPolicy(static_replicas)
    if spec == "threshold":
        return ThresholdPolicy()
    if spec == "k8s_hpa":
        return KubernetesHPAPolicy(hpa_target)
    if spec == "k8s_hpa_behavior":
        return KubernetesHPAPolicy(hpa_target, HPABehavior(), name="k8s_hpa_behavior")
    raise ValueError(f"unknown autoscaling policy {spec!r}; choose {', '.join(POLICY_NAMES)} or agent:PATH")
