"""Per-agent views of B clusters: the multi-agent rules of ``microservice_autoscaling_v0``, batched.

:class:`MultiAgentView` is the one home of every multi-agent rule (see
:mod:`envs.microservice.parallel` for their description): the layouts (each agent's scope,
visible rows, allowed moves and mission weights), per-agent observations, action masks, the merge
of the agents' proposals, per-agent rewards and the global ``state()``. It holds no Gym code and
works on all B clusters of a :class:`~envs.microservice.core.MicroserviceCore` at once (no
per-cluster loops): the PettingZoo env is this view with B = 1, MAPPO (``training/mappo.py``)
trains on it with B clusters, and a trained actor drives it as an autoscaling policy.

Actions are given in one form for both layouts: ``(B, A, S)`` indices into ``core.deltas``, one
per agent and service. A ``per_service`` agent's PettingZoo action is its own row's index (the
other rows are the zero delta: :meth:`MultiAgentView.indices_from`); a ``roles`` agent's
``MultiDiscrete`` action is its whole row of indices. :meth:`MultiAgentView.action_masks` gives
the masks in the same form, ``(B, A, S, D)``: rows outside an agent's scope allow only the zero
delta, so a policy over every row of every agent gives those rows probability one.

Shapes: B clusters, A agents, S services, M metrics, D deltas, F = M + 3 + S observation columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from digital_twin.microservices.topology import Topology
from envs.microservice.config import LAYOUTS, AgentsConfig, RoleSpec
from envs.microservice.core import MicroserviceCore
from envs.microservice.rewards import MISSION_TERMS, mission_rewards, mission_terms


def merge_proposals(proposals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The merge rule: scale-up wins (largest), else the largest scale-down, else nothing.

    Args:
        proposals: (..., A, S) int replica deltas proposed by A agents (0 = abstain), any leading axes.

    Returns:
        ``(merged (..., S) int64, conflict (..., S) bool)``; conflict where one agent proposed up
        and another down.
    """
    up = np.maximum(proposals.max(axis=-2), 0)
    down = np.minimum(proposals.min(axis=-2), 0)
    return np.where(up > 0, up, down).astype(np.int64), (up > 0) & (down < 0)


def role_scope(topology: Topology, role: RoleSpec) -> np.ndarray:
    """(S,) bool: the services ``role`` may change (``all``, ``entry``, ``entry_tier`` or named)."""
    if role.services == "all":
        return np.ones(topology.num_services, dtype=bool)
    scope = np.zeros(topology.num_services, dtype=bool)
    if role.services in ("entry", "entry_tier"):
        scope[topology.entry_index] = True
        if role.services == "entry_tier":
            scope |= topology.calls[topology.entry_index] > 0
        return scope
    for svc in role.services:
        scope[topology.index(svc)] = True
    return scope


@dataclass(frozen=True)
class MultiAgentStep:
    """What one step of B clusters gives every agent.

    Attributes:
        rewards: (B, A) float64 ``shared_reward_weight x reward + mission``.
        reward: (B,) float64 global reward (the single-agent env's).
        truncated: (B,) bool: the cluster's window ended (the core keeps it until reset).
        info: The core's (B,) info arrays (:data:`~envs.microservice.core.INFO_KEYS`).
        mission: (B, A) float64 mission rewards (<= 0).
        terms: Mission terms, name -> (B, A) float64.
        applied: (B, S) int64 what the merged action changed (after the bounds' clip).
        invalid: (B, A) int64 moves outside the agent's scope or moves, ignored.
        conflicts: (B,) int64 services where one agent proposed up and another down.
    """

    rewards: np.ndarray
    reward: np.ndarray
    truncated: np.ndarray
    info: dict[str, np.ndarray]
    mission: np.ndarray
    terms: dict[str, np.ndarray]
    applied: np.ndarray
    invalid: np.ndarray
    conflicts: np.ndarray


class MultiAgentView:
    """The agents of one layout over the B clusters of ``core`` (see the module docstring).

    Args:
        core: The clusters (any B).
        layout: ``"per_service"`` or ``"roles"`` (default: the config's ``agents.layout``).
        agents: Multi-agent settings replacing the config's (e.g. the roles a policy was trained with).

    Attributes:
        agent_names: A agent ids (services for ``per_service``, role names for ``roles``).
        scope: (A, S) bool services each agent may change (and its mission terms cover).
        visible: (A, S) bool rows whose metrics each agent sees.
        moves: (A, D) bool deltas each agent may use on its scope.
        mission_weights: (A, K) mission-term weights, columns in :data:`MISSION_TERMS` order.
        obs_high: (S, F) float32 upper bounds of an observation (lower bounds are 0).
        state_high: (S, M + 1 + S) float32 upper bounds of :meth:`state`.
        mask_size: Length of one agent's PettingZoo mask (D or S x D).
    """

    def __init__(self, core: MicroserviceCore, layout: str | None = None, agents: AgentsConfig | None = None):
        agents = agents or core.config.agents
        layout = layout or agents.layout
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.core, self.layout, self.agents_config = core, layout, dataclasses.replace(agents, layout=layout)
        s, m, d = core.num_services, core.num_metrics, core.num_deltas
        calls = core.topology.calls > 0
        deltas = core.deltas.tolist()
        if layout == "per_service":
            names = list(core.service_names)
            scope = np.eye(s, dtype=bool)
            visible = scope | calls | calls.T  # itself, its callees and its callers
            moves = np.ones((s, d), dtype=bool)
            weights = np.array([[agents.per_service_mission.get(t, 0.0) for t in MISSION_TERMS]] * s)
        else:
            names = [r.name for r in agents.roles]
            scope = np.stack([role_scope(core.topology, r) for r in agents.roles])
            visible = np.ones_like(scope)
            moves = np.array([[delta in r.moves for delta in deltas] for r in agents.roles])
            weights = np.array([[r.mission.get(t, 0.0) for t in MISSION_TERMS] for r in agents.roles])
        self.agent_names: list[str] = names
        self.num_agents = len(names)
        self.scope, self.visible, self.moves, self.mission_weights = scope, visible, moves, weights
        self.zero_index = int(np.flatnonzero(core.deltas == 0)[0])
        self.feature_dim = m + 3 + s
        self.mask_size = d if layout == "per_service" else s * d
        # Bounds, the same for every agent: metrics, 3 flags, call counts.
        self.obs_high = np.concatenate([core.obs_high, np.ones((s, 3), np.float32),
                                        np.full((s, s), max(float(core.calls.max()), 1.0), np.float32)], axis=1)
        self.state_high = np.concatenate([core.obs_high, np.ones((s, 1), np.float32), self.obs_high[:, m + 3:]], axis=1)
        # (A, S, D): what scope and moves allow, before the replica bounds; the zero delta always.
        self._allowed = scope[:, :, None] & moves[:, None, :]
        self._allowed[:, :, self.zero_index] = True

    # ------------------------------------------------------------------ episodes
    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None, options: dict | None = None):
        """Start new episodes on the clusters in ``mask`` (default all): :meth:`MicroserviceCore.reset`."""
        return self.core.reset(rng, mask=mask, options=options)

    # ------------------------------------------------------------------ per-agent views
    def observations(self) -> np.ndarray:
        """(B, A, S, F) float32: per row the metrics (zeros where not visible), ``visible``,
        ``controlled``, episode progress, and the row's calls to every service."""
        core = self.core
        b, s, m = core.num_clusters, core.num_services, core.num_metrics
        base = np.empty((b, s, self.feature_dim), dtype=np.float32)
        base[:, :, :m] = core.metrics
        base[:, :, m + 2] = core.progress[:, None]
        base[:, :, m + 3:] = core.calls
        obs = np.repeat(base[:, None], self.num_agents, axis=1)  # (B, A, S, F)
        obs[:, :, :, :m] *= self.visible[None, :, :, None]
        obs[:, :, :, m] = self.visible
        obs[:, :, :, m + 1] = self.scope
        return obs

    def action_masks(self) -> np.ndarray:
        """(B, A, S, D) bool: the replica bounds x the agent's scope and moves; the zero delta always."""
        bounds = self.core.action_mask()  # (B, S, D)
        allowed = bounds[:, None] & self._allowed[None]
        allowed[..., self.zero_index] = True
        return allowed

    def layout_masks(self) -> np.ndarray:
        """(B, A, mask_size) bool, the PettingZoo masks: the own row (``per_service``) or every row
        flattened service-major (``roles``, as sb3-contrib concatenates ``MultiDiscrete`` masks)."""
        full = self.action_masks()
        if self.layout == "per_service":
            agents = np.arange(self.num_agents)
            return full[:, agents, agents]
        return full.reshape(full.shape[0], self.num_agents, -1)

    def indices_from(self, actions: np.ndarray) -> np.ndarray:
        """(B, A, S) delta indices from the layout's actions: (B, A) own-row indices for
        ``per_service`` (the other rows abstain), (B, A, S) for ``roles`` (returned as they are)."""
        actions = np.asarray(actions, dtype=np.int64)
        if self.layout == "roles":
            return actions
        b, a = actions.shape
        idx = np.full((b, a, self.core.num_services), self.zero_index, dtype=np.int64)
        idx[:, np.arange(a), np.arange(a)] = actions
        return idx

    def state(self) -> np.ndarray:
        """(B, S, M + 1 + S) float32 global state: all metrics, progress, call graph."""
        core = self.core
        b, s = core.num_clusters, core.num_services
        return np.concatenate([core.metrics, np.broadcast_to(core.progress[:, None, None], (b, s, 1)),
                               np.broadcast_to(core.calls, (b, s, s))], axis=2)

    # ------------------------------------------------------------------ acting
    def merge(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The replica changes the agents' actions make, and what was ignored.

        A move outside the agent's scope or moves is an abstention (counted as invalid); moves
        past a replica bound stay (the core clips them).

        Args:
            indices: (B, A, S) delta indices.

        Returns:
            ``(merged (B, S) int64, conflict (B, S) bool, invalid (B, A) int64)``.
        """
        valid, invalid = self.proposals(indices)
        merged, conflict = merge_proposals(valid)
        return merged, conflict, invalid

    def proposals(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each agent proposes, before the merge: a move outside its scope or moves abstains.

        Args:
            indices: (B, A, S) delta indices.

        Returns:
            ``(proposed (B, A, S) int64 replica deltas, invalid (B, A) int64 moves ignored)``.
        """
        proposed = self.core.deltas[indices]  # (B, A, S)
        agents = np.arange(self.num_agents)[None, :, None]
        services = np.arange(self.core.num_services)[None, None, :]
        allowed = self._allowed[agents, services, indices]
        invalid = ((proposed != 0) & ~allowed).sum(axis=2)
        return np.where(allowed, proposed, 0), invalid

    def step(self, indices: np.ndarray, rng: np.random.Generator) -> MultiAgentStep:
        """Merge the agents' actions, step every cluster, and reward every agent.

        Args:
            indices: (B, A, S) delta indices (:meth:`indices_from` turns layout actions into them).
            rng: The only source of randomness.
        """
        core = self.core
        merged, conflict, invalid = self.merge(indices)
        before = core.desired.copy()
        reward, truncated, info = core.step(merged, rng)
        twin_info, raw_obs = core.last_step_data()
        terms = mission_terms(twin_info, raw_obs, self.scope, core.reward_consts)  # (B, A) each
        mission = mission_rewards(terms, self.mission_weights)
        rewards = self.agents_config.shared_reward_weight * reward[:, None] + mission
        return MultiAgentStep(rewards, reward, truncated, info, mission, terms, core.desired - before, invalid,
                              conflict.sum(axis=1))
