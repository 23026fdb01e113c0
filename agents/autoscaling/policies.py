"""The autoscaling policy interface, and the adapters of the HPA rule and of saved agents to it.

A *policy* drives B clusters at once. Each one reads what a real autoscaler would read (the
twin's Prometheus-named metrics: CPU usage, Ready replicas, desired replicas) and returns the
*desired replica count* per service; :func:`deltas_for` turns that into the env core's
replica changes. The static and threshold rules are in :mod:`agents.autoscaling.references`,
the Kubernetes rule itself in :mod:`agents.autoscaling.k8s_hpa`; a saved SB3 agent acts on the
same observations the env gives it.

Shapes: B clusters, S services, M metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agents.autoscaling.k8s_hpa import BatchedHPAState, HPABehavior, batched_hpa_recommend
from digital_twin.microservices.metrics import METRIC_INDEX
from digital_twin.microservices.topology import Topology

if TYPE_CHECKING:
    from envs.microservice import MicroserviceCore


class ClusterView(Protocol):
    """What a rule-based policy reads of B clusters; :class:`~envs.microservice.MicroserviceCore` is one.

    Attributes:
        raw_obs: (B, S, M) float32 un-normalised observations, columns in
            :data:`~digital_twin.microservices.metrics.METRIC_NAMES` order.
        topology: The services (their CPU request per pod is read).
        low: (S,) int64 minimum replicas.
        high: (S,) int64 maximum replicas.
        desired: (B, S) int64 desired replicas now (``spec.replicas``).
    """

    raw_obs: np.ndarray
    topology: Topology
    low: np.ndarray
    high: np.ndarray
    desired: np.ndarray


class AutoscalingPolicy(Protocol):
    """Reset per batch of episodes; then one decision per control step."""

    name: str

    def reset(self, core: ClusterView) -> None: ...

    def desired_replicas(self, core: ClusterView, now_s: float) -> np.ndarray:
        """(B, S) desired replicas at time ``now_s`` (seconds since the episode start)."""
        ...


def cpu_utilization_percent(core: ClusterView) -> tuple[np.ndarray, np.ndarray]:
    """What the HPA's metrics client computes: ``100 * usage / (ready pods * CPU request)``.

    Returns:
        ``(utilization (B, S), ready pods (B, S))``; utilization is 0 where no pod is Ready.
    """
    raw = core.raw_obs
    ready = np.rint(raw[:, :, METRIC_INDEX["replicas_ready"]]).astype(np.int64)
    usage = raw[:, :, METRIC_INDEX["cpu_usage_cores"]].astype(np.float64)
    request = core.topology.cpu_request[None, :] * np.maximum(ready, 1)
    return np.where(ready > 0, 100.0 * usage / request, 0.0), ready


def hpa_pod_groups(core: ClusterView) -> dict[str, np.ndarray]:
    """The HPA controller's view of each service's pods (``groupPods``), from the twin's metrics.

    * ready: ``replicas_ready`` (their CPU is ``cpu_usage_cores``: only Ready pods serve);
    * unready: Pending pods (``replicas_pending``) plus the bound pods that are neither Ready
      nor in back-off, i.e. starting (``cpu_requests_cores`` / request, less Ready, Pending and
      back-off; capped by ``replicas_desired``, which leaves out pods still terminating);
    * missing: pods in CrashLoopBackOff (``replicas_crashloop``): their container is not
      running, so the metrics API returns no sample for them.

    Returns:
        ``{"ready", "unready", "missing"}`` (B, S) int64 counts, ``"usage_milli"`` (B, S) float64
        summed CPU of the Ready pods and ``"request_milli"`` (S,) float64 CPU request per pod.
    """
    raw = core.raw_obs
    col = METRIC_INDEX
    count = lambda name: np.rint(raw[:, :, col[name]]).astype(np.int64)  # noqa: E731
    ready, pending, crashloop = count("replicas_ready"), count("replicas_pending"), count("replicas_crashloop")
    request = core.topology.cpu_request.astype(np.float64)
    bound = np.rint(raw[:, :, col["cpu_requests_cores"]] / request[None, :]).astype(np.int64)
    live = np.minimum(bound, count("replicas_desired"))
    starting = np.maximum(live - ready - pending - crashloop, 0)
    return {"ready": ready, "unready": pending + starting, "missing": crashloop,
            "usage_milli": 1000.0 * raw[:, :, col["cpu_usage_cores"]].astype(np.float64),
            "request_milli": 1000.0 * request}


def deltas_for(core: ClusterView, desired: np.ndarray) -> np.ndarray:
    """Replica changes that take each service from its current desired count to ``desired``."""
    return np.clip(desired, core.low, core.high) - core.desired


HPA_NOT_MODELLED = (
    "the HPA groups pods as Go's controller does from the twin's counts (Pending and starting pods unready, "
    "CrashLoopBackOff pods without a sample); the twin reports no readiness times, so a pod Ready for under one "
    "15 s metric window within 5 min of its start counts as ready (Go sets it aside), and pods on a lost node "
    "count as unready (Go: missing, 100% of their request on a scale-down)")
"""What :class:`KubernetesHPAPolicy` cannot take from the twin's metrics, in one line (for reports)."""


class KubernetesHPAPolicy:
    """The Kubernetes HPA rule on CPU utilisation, one HPA per service, batched.

    Each service's pods are grouped as the controller's ``groupPods`` does, from the counts the
    twin's metrics give (:func:`hpa_pod_groups`): Ready pods' samples count; Pending and
    starting pods are unready (0% of their request on a scale-up, left out otherwise); pods in
    CrashLoopBackOff report no sample (missing: 100% on a scale-down, 0% on a scale-up).

    What the twin's metrics do not say, and so is not modelled:

    * readiness times: Go also sets aside a pod inside the CPU initialisation period (5 min
      from its start) whose sample began before it turned Ready (within one metric window,
      15 s); here every Ready pod counts as ready;
    * pods on a lost node (still counted until evicted): they report no sample, so Go treats
      them as missing; here they are indistinguishable from starting pods and count as unready
      (the same on a scale-up; on a scale-down Go would count them at 100% of their request);
    * per-pod samples: usage is the service total in millicores, not per-pod values each
      rounded up to a millicore.

    Args:
        target_utilization: ``averageUtilization`` target, integer percent of the CPU request.
        behavior: ``None`` for an HPA written without ``spec.behavior`` (Kubernetes' default:
            the legacy path, scale-up capped at max(2x, 4), a 300 s scale-down window);
            ``HPABehavior()`` for the documented ``behavior`` defaults.
        name: Label in reports.
    """

    def __init__(self, target_utilization: int = 60, behavior: HPABehavior | None = None, name: str = "k8s_hpa"):
        self.target, self.behavior, self.name = int(target_utilization), behavior, name

    def reset(self, core: ClusterView) -> None:
        b, s = core.desired.shape
        self.state = BatchedHPAState.empty(b, s)

    def desired_replicas(self, core: ClusterView, now_s: float) -> np.ndarray:
        pods = hpa_pod_groups(core)
        decision = batched_hpa_recommend(
            self.state, now_s, core.desired, pods["ready"], None, self.target, core.low, core.high,
            behavior=self.behavior, unready_pods=pods["unready"], missing_pods=pods["missing"],
            usage_milli=pods["usage_milli"], request_milli=pods["request_milli"])
        return decision.desired_replicas


class ModelPolicy:
    """An SB3 model (``PPO`` or ``MaskablePPO``) trained on MicroserviceAutoscaling-v0, in memory.

    Unlike the rules it needs the env core itself (:class:`~envs.microservice.MicroserviceCore`):
    it acts deterministically on the env's normalised observations and action deltas, masked at
    the replica bounds when the model takes masks.

    Args:
        model: the SB3 model. name: label in reports. masked: pass the env's masks to ``predict``.
    """

    def __init__(self, model, name: str = "agent", masked: bool = True):
        self.model, self.name, self.masked = model, name, masked

    def reset(self, core: MicroserviceCore) -> None:
        from agents.autoscaling.graph import ServiceGraphPolicy

        if isinstance(self.model.policy, ServiceGraphPolicy):
            # No weight of the graph policy depends on the topology: give SB3 this topology's
            # spaces, or its shape check refuses the observations of any other one.
            from envs.microservice.spaces import MaskedMultiDiscrete, single_observation_space

            space = single_observation_space(core)
            action = MaskedMultiDiscrete([core.num_deltas] * core.num_services)
            for holder in (self.model, self.model.policy):
                holder.observation_space, holder.action_space = space, action
            self.model.policy.action_dist.action_dims = [core.num_deltas] * core.num_services

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        from envs.microservice import batched_observation

        obs = batched_observation(core)
        kwargs = {"action_masks": obs["action_mask"].astype(bool)} if self.masked else {}
        actions, _ = self.model.predict(obs, deterministic=True, **kwargs)
        return core.desired + core.deltas[np.asarray(actions, dtype=np.int64)]


class AgentPolicy(ModelPolicy):
    """A saved SB3 model (``PPO`` or ``MaskablePPO``) trained on MicroserviceAutoscaling-v0 (:class:`ModelPolicy`).

    Args:
        path: The ``.zip`` SB3 saved, or a folder holding ``model.zip``: a model folder (``best/``,
            ``last/``, a shipped ``models/autoscaling/<name>``) or a run folder (its ``best/``, else
            its ``last/``).

    Raises:
        FileNotFoundError: No such file, or no model.zip in the folder, its best/ or last/.
    """

    def __init__(self, path: str | Path):
        from agents.model_files import resolve_model_path

        self.path = resolve_model_path(path)
        # Torch and SB3 load only when an agent is asked for.
        from sb3_contrib import MaskablePPO
        from stable_baselines3 import PPO

        try:
            model, masked = MaskablePPO.load(self.path, device="cpu"), True
        except (ValueError, KeyError, TypeError):
            model, masked = PPO.load(self.path, device="cpu"), False
        # train.py saves every model as <run>/best|last/model.zip: name it by the run and the folder.
        parts = self.path.with_suffix("").parts
        super().__init__(model, "agent:" + ("/".join(parts[-3:-1]) if self.path.name == "model.zip" and len(parts) >= 3
                                            else self.path.stem), masked)
