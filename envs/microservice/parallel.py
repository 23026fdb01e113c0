"""``microservice_autoscaling_v0``: the multi-agent HPA over the microservice twin (PettingZoo).

The PettingZoo name keeps the ``_v0`` suffix (PettingZoo's convention for an env version, as
Gymnasium's ``-v0``); the module is :mod:`envs.microservice.parallel`.

| | |
|---|---|
| Import | ``from envs.microservice import parallel_env`` (or ``envs.microservice.parallel``) |
| API | ``parallel_env(...)`` (native ``ParallelEnv``), ``env(...)`` / ``raw_env(...)`` (AEC) |
| Agents | ``per_service``: one per service (S; Online Boutique 11); ``roles``: one per role (default 3) |
| Action | ``per_service``: ``Discrete(D)``; ``roles``: ``MultiDiscrete([D] * S)`` (index into ``action_deltas``) |
| Observation | ``{"observation": (S, M + 3 + S) float32, "action_mask": int8}`` |
| State | ``(S, M + 1 + S)`` float32 |

The same core as the single-agent env (:class:`~envs.microservice.core.MicroserviceCore`,
B = 1): config, windows, splits, scenarios and the global reward are those of
``clustergym/MicroserviceAutoscaling-v0``; this module splits observations, actions and rewards
per agent. The layout comes from the config's ``agents.layout`` (or the ``layout`` argument).
Every multi-agent rule below (layouts, observations, masks, merge, rewards, state) lives in
:class:`~envs.microservice.multi_agent.MultiAgentView`, batched over B clusters; this env is that
view with B = 1 behind the PettingZoo API (MAPPO, ``training/mappo.py``, trains on the same view).

**Observation** of each agent, one row per service (in the topology's order):

| columns | meaning |
|---|---|
| ``0 .. M-1`` | the service's normalised metrics (as in the single-agent env); zeros where not visible |
| ``M`` | ``visible``: 1 where the agent sees the row's metrics |
| ``M+1`` | ``controlled``: 1 where the agent may change the service's replicas |
| ``M+2`` | episode progress in [0, 1] (same in every row) |
| ``M+3 .. M+2+S`` | mean calls from the row's service to each service (the static call graph) |

**Layouts.**

* ``per_service``: agent ``<service>`` sees its own row and its call-graph neighbours' (callers
  and callees), controls only its own replicas (``Discrete(D)``, mask ``(D,)``), and gets
  ``shared x global reward + mission`` with its mission terms (default ``drop 0.5, cost 0.25``)
  over its own service. One agent per service: no conflicts.
* ``roles`` (the HPA multi-agent-system design: a resilience goal split into
  failure-specific sub-goals). Every role sees every row; its action is a delta per service
  (``MultiDiscrete([D] * S)``, flat mask ``(S * D,)`` service-major, as sb3-contrib concatenates);
  the mask allows on services outside its scope only 0, and on its scope only its moves
  (and bounds). Defaults (``DEFAULT_ROLES``):

  | role | scope | moves | mission (over its scope) |
  |---|---|---|---|
  | ``ddos_manager`` | entry tier: the entry and the services it calls | 0, +1, +2 | ``drop``: requests dropped / arrived |
  | ``availability_manager`` | all services | 0, +1, +2 | ``slo`` (violated step) + ``unready`` (1 - Ready / desired) |
  | ``resource_manager`` | all services | -2 .. +2 | ``cost`` (pod-seconds share) + 0.5 ``throttle`` (CPU throttled ratio) |

  **Merge rule** for one service: 0 is an abstention; if any role proposes a scale-up, the
  largest scale-up is applied (availability before cost); otherwise the largest scale-down;
  otherwise nothing. A service where one role scales up and another down counts as a
  conflict (``info["conflicts"]``). A move outside a role's mask is ignored (an abstention,
  counted in ``info["invalid_moves"]``); moves past a replica bound are clipped, as in the
  single-agent env.

**Rewards** per agent: ``shared_reward_weight x r + mission`` where ``r`` is the global reward
of the single-agent env and ``mission = -sum_k w_k x term_k`` (:mod:`envs.microservice.rewards`).
**Infos** per agent: the single-agent env's raw terms, plus ``mission_reward``,
``mission_<term>`` for its weighted terms, ``applied_delta`` (what the merged action did to
its controlled services, (S,) int64), ``invalid_moves`` and ``conflicts``.
**Episode end**: every agent is truncated when the trace window ends; ``agents`` empties.
``state()`` gives the global state for centralised critics: all metrics, progress, call graph.

Example:
    >>> from envs.microservice import parallel_env
    >>> par = parallel_env(config="online_boutique_failures")
    >>> obs, infos = par.reset(seed=0)
    >>> par.agents
    ['ddos_manager', 'availability_manager', 'resource_manager']
    >>> obs["ddos_manager"]["observation"].shape, par.state().shape
    ((11, 28), (11, 26))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle, seeding
from pettingzoo import ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec

from envs.microservice.config import LAYOUTS, MicroserviceConfig, load_config
from envs.microservice.core import MicroserviceCore
from envs.microservice.multi_agent import MultiAgentStep, MultiAgentView
from envs.microservice.multi_agent import merge_proposals as _merge_batched
from envs.microservice.rewards import MISSION_TERMS
from envs.microservice.spaces import MaskedMultiDiscrete


def merge_proposals(proposals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The role layout's merge rule: scale-up wins (largest), else the largest scale-down.

    Args:
        proposals: (A, S) int replica deltas proposed by A agents (0 = abstain).

    Returns:
        ``(merged (S,) int64, conflict (S,) bool)``; conflict where one agent proposed up and
        another down. (:func:`envs.microservice.multi_agent.merge_proposals` takes any leading axes.)
    """
    return _merge_batched(proposals)


class MicroserviceAutoscalingParallelEnv(ParallelEnv, EzPickle):
    """Multi-agent microservice autoscaling (see the module docstring).

    Args:
        config: Built-in name, YAML path, mapping or :class:`MicroserviceConfig`.
        split: ``"train"`` / ``"held_out"`` (default: the config's).
        layout: ``"per_service"`` or ``"roles"`` (default: the config's ``agents.layout``).
        render_mode: ``"ansi"`` or None.
        **overrides: Top-level config keys.
    """

    metadata = {"name": "microservice_autoscaling_v0", "render_modes": ["ansi"], "render_fps": 4,
                "is_parallelizable": True}

    def __init__(
        self,
        config: str | Path | dict | MicroserviceConfig | None = None,
        split: str | None = None,
        layout: str | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        EzPickle.__init__(self, config, split, layout, render_mode, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        cfg = load_config(config, **overrides)
        if layout is not None:
            if layout not in LAYOUTS:
                raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
            cfg = dataclasses.replace(cfg, agents=dataclasses.replace(cfg.agents, layout=layout))
        self.config = cfg
        self.layout = cfg.agents.layout
        self.render_mode = render_mode
        self.core = core = MicroserviceCore(cfg, num_clusters=1, split=split)
        self.view = view = MultiAgentView(core, self.layout)
        names = view.agent_names
        self.possible_agents = names[:]
        self.agents: list[str] = []
        self._index = {name: i for i, name in enumerate(names)}
        # Built once, one object per agent: PettingZoo's API test asserts the methods below return
        # the same object on every call (and an lru-cached method would keep every env alive).
        self.observation_spaces: dict[str, spaces.Dict] = {
            agent: spaces.Dict({"observation": spaces.Box(0.0, view.obs_high, dtype=np.float32),
                                "action_mask": spaces.Box(0, 1, (view.mask_size,), np.int8)})
            for agent in names}
        s, d = core.num_services, core.num_deltas
        self.action_spaces: dict[str, spaces.Space] = {
            agent: spaces.Discrete(d) if self.layout == "per_service" else MaskedMultiDiscrete(np.full(s, d, dtype=np.int64))
            for agent in names}
        self.state_space = spaces.Box(0.0, view.state_high, dtype=np.float32)
        self.np_random: np.random.Generator | None = None
        self._last_infos: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Dict:
        """``{"observation": (S, M + 3 + S) float32, "action_mask": int8}`` (the same object each call)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """``Discrete(D)`` (``per_service``) or ``MultiDiscrete([D] * S)`` (``roles``); the same object each call."""
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode (as the single-agent env; same ``options``)."""
        if seed is not None or self.np_random is None:
            self.np_random, _ = seeding.np_random(seed)
        info = self.view.reset(self.np_random, options=options)
        self.agents = self.possible_agents[:]
        self._infos(info, None)
        return self._observations(), self._last_infos

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("call reset() before step() (the episode has ended)")
        view = self.view
        layout_actions = np.full((1, view.num_agents) + (() if self.layout == "per_service" else (self.core.num_services,)),
                                 view.zero_index, dtype=np.int64)
        for agent, action in actions.items():
            if agent not in self._index:
                raise ValueError(f"unknown agent {agent!r}; agents: {self.possible_agents}")
            if not self.action_space(agent).contains(np.asarray(action) if self.layout == "roles" else action):
                raise ValueError(f"action {action!r} of {agent} outside {self.action_space(agent)}")
            layout_actions[0, self._index[agent]] = action
        result = view.step(view.indices_from(layout_actions), self.np_random)
        infos = self._infos(result.info, result)
        rewards = {agent: float(result.rewards[0, self._index[agent]]) for agent in self.agents}
        done = bool(result.truncated[0])
        observations = self._observations()
        terminations = {agent: False for agent in self.agents}
        truncations = {agent: done for agent in self.agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Global state (S, M + 1 + S) float32: all metrics, progress, call graph."""
        return self.view.state()[0]

    def action_masks(self, agent: str) -> np.ndarray:
        """The agent's mask as bool (``obs[agent]["action_mask"]``)."""
        return self.view.layout_masks()[0, self._index[agent]]

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.core.state is None:
            return None
        reps = " ".join(f"{n}={r}" for n, r in zip(self.core.service_names, self.core.desired[0].tolist()))
        first = next(iter(self._last_infos.values()), {})
        return (f"step {first.get('step')}/{self.core.window_steps} p95 {first.get('e2e_latency_p95', 0):.3f} s "
                f"{'SLO VIOLATED' if first.get('slo_violated') else 'SLO ok'} | {reps}")

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ per-agent dicts of the view's arrays
    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        obs = self.view.observations()[0]  # (A, S, F)
        masks = self.view.layout_masks()[0].astype(np.int8)
        return {agent: {"observation": obs[self._index[agent]], "action_mask": masks[self._index[agent]]}
                for agent in self.agents}

    def _infos(self, info: dict[str, np.ndarray], result: MultiAgentStep | None) -> dict[str, dict[str, Any]]:
        """Per-agent infos: the cluster's, plus the agent's mission terms and moves (zeros at reset)."""
        view = self.view
        shared = {key: value[0].item() for key, value in info.items()}
        shared["scenario"] = self.core.variant_names[shared["scenario"]]
        shared["conflicts"] = int(result.conflicts[0]) if result is not None else 0
        out = {}
        for agent in self.agents:
            i = self._index[agent]
            entry = dict(shared)
            entry["mission_reward"] = float(result.mission[0, i]) if result is not None else 0.0
            if result is not None:
                for k, term in enumerate(MISSION_TERMS):
                    if view.mission_weights[i, k] > 0:
                        entry[f"mission_{term}"] = float(result.terms[term][0, i])
            applied = result.applied[0] if result is not None else np.zeros(self.core.num_services, dtype=np.int64)
            entry["applied_delta"] = np.where(view.scope[i], applied, 0).astype(np.int64)
            entry["invalid_moves"] = int(result.invalid[0, i]) if result is not None else 0
            out[agent] = entry
        self._last_infos = out
        return out


def parallel_env(**kwargs: Any) -> MicroserviceAutoscalingParallelEnv:
    """The native ``ParallelEnv`` (see :class:`MicroserviceAutoscalingParallelEnv` for arguments)."""
    return MicroserviceAutoscalingParallelEnv(**kwargs)


def raw_env(**kwargs: Any):
    """The AEC version, converted from the parallel env (no wrappers)."""
    return parallel_to_aec(parallel_env(**kwargs))


def env(**kwargs: Any):
    """The AEC version with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))
