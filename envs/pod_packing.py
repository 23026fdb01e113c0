"""``clustergym/PodPacking-v0``: re-place running pods so that Pending high-priority pods fit, within a disruption budget.

A thin Gymnasium shell over the pod twin (:mod:`digital_twin.pods`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.pods.default_scheduler import DefaultScheduler, schedule
from digital_twin.pods import PodCluster, ScenarioGenerator

POD_FEATURES = ("cpu", "memory", "tier", "running", "pending", "displaced", "selected")
NODE_FEATURES = ("free_cpu", "free_memory", "cpu_capacity", "memory_capacity")
GLOBAL_FEATURES = ("budget_left", "phase", "pending_share")
PHASE_PICK_POD, PHASE_PICK_NODE = 0, 1


class PodPackingEnv(gym.Env[dict[str, np.ndarray], int]):
    """Re-place pods on Kubernetes nodes after the default scheduler left some Pending.

    ## Description
    Each episode is a "Priority Matters" scenario (:class:`~digital_twin.pods.ScenarioGenerator`)
    after the Kubernetes default scheduler (:func:`agents.pods.schedule`) placed what it could:
    some pods are Pending although a re-placement of the running ones might fit them. The agent
    binds Pending pods, moves running pods and evicts them, each change checked by the twin; moves
    and evictions spend a disruption budget.

    ## Action Space
    ``Discrete(n)`` with ``n = max(max_pods, max_nodes + 1) + 1``, read in two phases (as the VM env):

    * phase 0, pick a pod: action ``i < max_pods`` selects pod ``i``; action ``n - 1`` stops.
    * phase 1, act on it: action ``j < max_nodes`` binds the selected Pending pod to node ``j`` or
      moves the selected running pod there; action ``max_nodes`` evicts it.

    ``action_masks()`` (bool) and ``obs["action_mask"]`` (int8) are exact: in phase 0 the pods
    with at least one valid phase-1 action, and stop; in phase 1 the nodes the pod fits on now
    (not its own), and eviction for a running pod; moves and evictions only while budget is left.

    ## Observation Space
    A ``Dict`` of padded arrays (a pod-node bipartite graph, the VM graph policy's shape):

    | key | shape | dtype | meaning |
    |---|---|---|---|
    | ``pod_features`` | (max_pods, 7) | float32 | :data:`POD_FEATURES`: requests / largest node capacity, tier (0 lowest .. 1 highest), running, Pending, off its starting node, selected |
    | ``node_features`` | (max_nodes, 4) | float32 | :data:`NODE_FEATURES`: free and allocatable CPU / memory / largest node capacity |
    | ``pod_node`` | (max_pods,) | int64 | node of each pod, -1 Pending or padding |
    | ``pod_mask`` / ``node_mask`` | (max_pods,) / (max_nodes,) | int8 | 1 for real entries |
    | ``selected_pod`` | (1,) | int64 | pod picked in phase 0, -1 in phase 0 |
    | ``globals`` | (3,) | float32 | :data:`GLOBAL_FEATURES`: share of budget left, phase, share of pods Pending |
    | ``action_mask`` | (n,) | int8 | valid actions now |

    ## Rewards
    ``sum_t w_t * (change of placed pods of tier t) - disruption_weight * (change of disruption)``,
    tiers weighted ``w_t = 2 ** rank`` (rank 0 the lowest tier), disruption over the pods running at
    reset as "Priority Matters" counts it: 0 on its starting node, 1 Pending, 2 on another node.
    Worked example (two tiers, weight 0.5): evicting a low pod (-1 placed low, disruption +1)
    gives ``-1 - 0.5 = -1.5``; binding the Pending high pod into its room then gives ``+2``.
    Phase 0 steps give 0. An invalid action under ``"penalty"`` gives ``-invalid_action_penalty``.

    ## Starting State
    A scenario with at least one Pending pod, drawn from ``self.np_random``, phase 0.

    ## Episode End
    *Termination*: stop is chosen, or no pod has a valid action. *Truncation*: never by the env itself.

    ## Arguments
    * ``generator``: the scenario source (default :class:`~digital_twin.pods.ScenarioGenerator`).
    * ``max_nodes``, ``max_pods``: padding (default 32 and 256, the generator's largest).
    * ``budget``: moves + evictions allowed per episode (default 10).
    * ``disruption_weight``: the reward's weight of one unit of disruption (default 0.5).
    * ``invalid_action``: ``"raise"`` (``ValueError``, state unchanged) or ``"penalty"`` (state
      unchanged, reward ``-invalid_action_penalty``, ``info["invalid_action"] = True``).

    ## Info
    ``placed_by_tier``, ``pending``, ``disruption``, ``budget_left``, ``phase``, ``tiers``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, generator: ScenarioGenerator | None = None, max_nodes: int = 32, max_pods: int = 256,
                 budget: int = 10, disruption_weight: float = 0.5, invalid_action: str = "raise",
                 invalid_action_penalty: float = 1.0) -> None:
        if invalid_action not in ("raise", "penalty"):
            raise ValueError(f"invalid_action {invalid_action!r}: choose 'raise' or 'penalty'")
        if budget < 0 or max_nodes < 1 or max_pods < 1:
            raise ValueError("budget must be >= 0 and max_nodes, max_pods >= 1")
        self.generator = generator or ScenarioGenerator()
        self.max_nodes, self.max_pods, self.budget = int(max_nodes), int(max_pods), int(budget)
        self.disruption_weight, self.invalid_action = float(disruption_weight), invalid_action
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.n_actions = max(self.max_pods, self.max_nodes + 1) + 1
        self.stop_action = self.n_actions - 1
        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.Dict({
            "pod_features": spaces.Box(0.0, 1.0, (self.max_pods, len(POD_FEATURES)), np.float32),
            "node_features": spaces.Box(0.0, 1.0, (self.max_nodes, len(NODE_FEATURES)), np.float32),
            "pod_node": spaces.Box(-1, self.max_nodes - 1, (self.max_pods,), np.int64),
            "pod_mask": spaces.Box(0, 1, (self.max_pods,), np.int8),
            "node_mask": spaces.Box(0, 1, (self.max_nodes,), np.int8),
            "selected_pod": spaces.Box(-1, self.max_pods - 1, (1,), np.int64),
            "globals": spaces.Box(0.0, 1.0, (len(GLOBAL_FEATURES),), np.float32),
            "action_mask": spaces.Box(0, 1, (self.n_actions,), np.int8),
        })
        self.cluster: PodCluster | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        for _ in range(1000):
            cluster, _ = self.generator(self.np_random)
            if cluster.num_nodes > self.max_nodes or cluster.num_pods > self.max_pods:
                raise ValueError(f"scenario of {cluster.num_nodes} nodes / {cluster.num_pods} pods exceeds the padding "
                                 f"max_nodes={self.max_nodes}, max_pods={self.max_pods}")
            if schedule(cluster, DefaultScheduler()):
                break
        else:
            raise RuntimeError("no scenario with Pending pods in 1000 draws")
        cluster.reset_counters()
        self.cluster = cluster
        self.start_node = cluster.pod_node.copy()
        tiers = np.asarray(cluster.tiers)[::-1]                       # lowest first
        rank = np.searchsorted(tiers, cluster.pod_priority)
        self.pod_weight = 2.0 ** rank
        self.pod_tier = rank / max(len(tiers) - 1, 1)
        self.scale = float(max(cluster.cpu_capacity.max(), cluster.memory_capacity.max()))
        self.budget_left, self.phase, self.selected = self.budget, PHASE_PICK_POD, -1
        self.value = self._value()
        return self._obs(), self._info()

    def _disruption(self) -> int:
        run = self.start_node >= 0
        now = self.cluster.pod_node
        return int((run & (now < 0)).sum() + 2 * (run & (now >= 0) & (now != self.start_node)).sum())

    def _value(self) -> float:
        return float(self.pod_weight[self.cluster.pod_node >= 0].sum() - self.disruption_weight * self._disruption())

    # ------------------------------------------------------------------ masks
    def _node_mask(self, pod: int) -> np.ndarray:
        """(max_nodes + 1,) bool: valid phase-1 actions for ``pod``."""
        c = self.cluster
        out = np.zeros(self.max_nodes + 1, dtype=bool)
        running = c.pod_node[pod] >= 0
        if running and self.budget_left <= 0:
            return out
        fits = c.fits(pod)
        if running:
            fits[c.pod_node[pod]] = False
        out[:c.num_nodes] = fits
        out[self.max_nodes] = running
        return out

    def _pod_mask(self) -> np.ndarray:
        """(max_pods,) bool: pods with a valid phase-1 action."""
        c = self.cluster
        out = np.zeros(self.max_pods, dtype=bool)
        fits = c.fits_all()                                            # (P, N)
        pending = c.pod_node < 0
        out[:c.num_pods] = pending & fits.any(axis=1)
        if self.budget_left > 0:
            out[:c.num_pods] |= ~pending                                # a running pod can always be evicted
        return out

    def action_masks(self) -> np.ndarray:
        """(n,) bool: the valid actions of the current phase (for ``sb3_contrib.MaskablePPO``)."""
        mask = np.zeros(self.n_actions, dtype=bool)
        if self.phase == PHASE_PICK_POD:
            mask[:self.max_pods] = self._pod_mask()
            mask[self.stop_action] = True
        else:
            mask[:self.max_nodes + 1] = self._node_mask(self.selected)
        return mask

    # ------------------------------------------------------------------ step
    def step(self, action: int):
        assert self.cluster is not None, "call reset() before step()"
        action = int(action)
        mask = self.action_masks()
        if not 0 <= action < self.n_actions or not mask[action]:
            reason = f"action {action} is not valid in phase {self.phase} (see action_masks())"
            if self.invalid_action == "raise":
                raise ValueError(reason)
            info = self._info()
            info.update(invalid_action=True, invalid_action_reason=reason)
            return self._obs(), -self.invalid_action_penalty, False, False, info
        if self.phase == PHASE_PICK_POD:
            if action == self.stop_action:
                return self._obs(), 0.0, True, False, self._info()
            self.phase, self.selected = PHASE_PICK_NODE, action
            return self._obs(), 0.0, False, False, self._info()
        pod, c = self.selected, self.cluster
        if action == self.max_nodes:
            c.evict(pod)
            self.budget_left -= 1
        elif c.pod_node[pod] >= 0:
            c.move(pod, action)
            self.budget_left -= 1
        else:
            c.bind(pod, action)
        self.phase, self.selected = PHASE_PICK_POD, -1
        value = self._value()
        reward, self.value = value - self.value, value
        terminated = not self._pod_mask().any()
        # Truncation is left to a TimeLimit wrapper (register(max_episode_steps=...)).
        return self._obs(), float(reward), terminated, False, self._info()

    # ------------------------------------------------------------------ observation
    def _obs(self) -> dict[str, np.ndarray]:
        c = self.cluster
        p, n = c.num_pods, c.num_nodes
        pods = np.zeros((self.max_pods, len(POD_FEATURES)), dtype=np.float32)
        pods[:p, 0] = c.pod_cpu / self.scale
        pods[:p, 1] = c.pod_memory / self.scale
        pods[:p, 2] = self.pod_tier
        pods[:p, 3] = c.pod_node >= 0
        pods[:p, 4] = c.pod_node < 0
        pods[:p, 5] = (self.start_node >= 0) & (c.pod_node != self.start_node)
        if self.selected >= 0:
            pods[self.selected, 6] = 1.0
        nodes = np.zeros((self.max_nodes, len(NODE_FEATURES)), dtype=np.float32)
        nodes[:n] = np.stack([c.cpu_free, c.memory_free, c.cpu_capacity, c.memory_capacity], axis=1) / self.scale
        pod_node = np.full(self.max_pods, -1, dtype=np.int64)
        pod_node[:p] = c.pod_node
        return {
            "pod_features": np.clip(pods, 0.0, 1.0), "node_features": np.clip(nodes, 0.0, 1.0), "pod_node": pod_node,
            "pod_mask": (np.arange(self.max_pods) < p).astype(np.int8),
            "node_mask": (np.arange(self.max_nodes) < n).astype(np.int8),
            "selected_pod": np.array([self.selected], dtype=np.int64),
            "globals": np.array([self.budget_left / self.budget if self.budget else 0.0, float(self.phase),
                                 float((c.pod_node < 0).mean())], dtype=np.float32),
            "action_mask": self.action_masks().astype(np.int8),
        }

    def _info(self) -> dict[str, Any]:
        c = self.cluster
        return {"placed_by_tier": c.placed_by_tier(), "tiers": c.tiers, "pending": int((c.pod_node < 0).sum()),
                "disruption": self._disruption(), "budget_left": self.budget_left, "phase": self.phase}
