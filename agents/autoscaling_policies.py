"""Autoscaling policies that drive B twin clusters at once, for evaluation.

Each policy reads what a real autoscaler would read (the twin's Prometheus-named metrics:
CPU usage, Ready replicas, desired replicas) and returns the *desired replica count* per
service; :func:`deltas_for` turns that into the env core's replica changes. The baselines are
the ones in :mod:`agents.baselines` (static, threshold step-scaler, the Kubernetes HPA rule);
a saved SB3 agent acts on the same observations the env gives it.

Shapes: B clusters, S services.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from agents.baselines.autoscaling_references import ThresholdStepScaler
from agents.baselines.k8s_hpa import BatchedHPAState, HPABehavior, batched_hpa_recommend
from digital_twin.microservices.metrics import METRIC_INDEX
from envs.microservice_autoscaling import MicroserviceCore, batched_observation


class AutoscalingPolicy(Protocol):
    """Reset per batch of episodes; then one decision per 15 s control step."""

    name: str

    def reset(self, core: MicroserviceCore) -> None: ...

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        """(B, S) desired replicas."""
        ...


def cpu_utilization_percent(core: MicroserviceCore) -> tuple[np.ndarray, np.ndarray]:
    """What the HPA's metrics client computes: ``100 * usage / (ready pods * CPU request)``.

    Returns:
        ``(utilization (B, S), ready pods (B, S))``; utilization is 0 where no pod is Ready.
    """
    raw = core.raw_obs
    ready = np.rint(raw[:, :, METRIC_INDEX["replicas_ready"]]).astype(np.int64)
    usage = raw[:, :, METRIC_INDEX["cpu_usage_cores"]].astype(np.float64)
    request = core.topology.cpu_request[None, :] * np.maximum(ready, 1)
    return np.where(ready > 0, 100.0 * usage / request, 0.0), ready


def deltas_for(core: MicroserviceCore, desired: np.ndarray) -> np.ndarray:
    """Replica changes that take each service from its current desired count to ``desired``."""
    return np.clip(desired, core.low, core.high) - core.desired


class StaticPolicy:
    """Fixed replicas per service (clipped to each service's bounds), whatever the load."""

    def __init__(self, replicas: int):
        self.replicas = int(replicas)
        self.name = "static"

    def reset(self, core: MicroserviceCore) -> None:
        pass

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        return np.broadcast_to(np.clip(self.replicas, core.low, core.high), core.desired.shape)


class ThresholdPolicy:
    """:class:`~agents.baselines.autoscaling_references.ThresholdStepScaler` per service and cluster."""

    def __init__(self, up: float = 80.0, down: float = 30.0, step: int = 1, cooldown_s: float = 60.0):
        self.args = (up, down, step, cooldown_s)
        self.name = "threshold"

    def reset(self, core: MicroserviceCore) -> None:
        up, down, step, cooldown = self.args
        b, s = core.desired.shape
        self.scalers = [[ThresholdStepScaler(up, down, step, cooldown, int(core.low[j]), int(core.high[j]))
                         for j in range(s)] for _ in range(b)]

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        util, ready = cpu_utilization_percent(core)
        current = core.desired
        out = np.empty_like(current)
        # A scalar controller per (cluster, service): evaluation only, B x S is small.
        for b, row in enumerate(self.scalers):
            for s, scaler in enumerate(row):
                u = float(util[b, s]) if ready[b, s] > 0 else None
                out[b, s] = scaler.recommend_from_utilization(now_s, int(current[b, s]), u).desired_replicas
        return out


class KubernetesHPAPolicy:
    """The Kubernetes HPA rule on CPU utilisation, one HPA per service, batched.

    Args:
        target_utilization: ``averageUtilization`` target, percent of the CPU request.
        behavior: ``None`` for an HPA written without ``spec.behavior`` (Kubernetes' default:
            the legacy path, scale-up capped at max(2x, 4), a 300 s scale-down window);
            ``HPABehavior()`` for the documented ``behavior`` defaults.
    """

    def __init__(self, target_utilization: int = 60, behavior: HPABehavior | None = None, name: str = "k8s_hpa"):
        self.target, self.behavior, self.name = int(target_utilization), behavior, name

    def reset(self, core: MicroserviceCore) -> None:
        b, s = core.desired.shape
        self.state = BatchedHPAState.empty(b, s)

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        util, ready = cpu_utilization_percent(core)
        decision = batched_hpa_recommend(
            self.state, now_s, core.desired, ready, util, self.target, core.low, core.high, behavior=self.behavior)
        return decision.desired_replicas


class AgentPolicy:
    """A saved SB3 model (``PPO`` or ``MaskablePPO``) trained on MicroserviceAutoscaling-v0."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"agent model not found: {self.path}")
        from sb3_contrib import MaskablePPO
        from stable_baselines3 import PPO

        try:
            self.model, self.masked = MaskablePPO.load(self.path, device="cpu"), True
        except (ValueError, KeyError, TypeError):
            self.model, self.masked = PPO.load(self.path, device="cpu"), False
        self.name = f"agent:{self.path.stem}"

    def reset(self, core: MicroserviceCore) -> None:
        pass

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        obs = batched_observation(core)
        kwargs = {"action_masks": obs["action_mask"]} if self.masked else {}
        actions, _ = self.model.predict(obs, deterministic=True, **kwargs)
        return core.desired + core.deltas[np.asarray(actions, dtype=np.int64)]


def make_policy(spec: str, static_replicas: int = 5, hpa_target: int = 60) -> AutoscalingPolicy:
    """A policy from its name: ``static``, ``threshold``, ``k8s_hpa``, ``k8s_hpa_behavior`` or ``agent:PATH``."""
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
    raise ValueError(f"unknown autoscaling policy {spec!r}; choose static, threshold, k8s_hpa, k8s_hpa_behavior or agent:PATH")
