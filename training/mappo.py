"""MAPPO and IPPO on the multi-agent HPA (``microservice_autoscaling_v0``), one file, top to bottom.

``algorithm: mappo`` / ``ippo`` of a ``problem: autoscaling`` config. Both are parameter-shared
PPO over the agents of one layout (``mappo.layout``: ``roles`` or ``per_service``) of
:class:`~envs.microservice.multi_agent.MultiAgentView`, ``n_envs`` clusters stepped together;
they differ in one flag, what the critic sees (``centralised``):

* **MAPPO** (Yu et al. 2022, arXiv 2103.01955; marlbenchmark/on-policy): a centralised critic on
  the global ``state()`` (every service's metrics and the episode progress), plus the agent's
  scope flags and role one-hot (an agent-specific global state, cheaply).
* **IPPO**: the critic sees only the agent's own observation (for ``per_service``: its own row and
  its call-graph neighbours'). It is the reference MAPPO must beat.

Read top to bottom:

1. **Networks.** :class:`ServiceRows` is an MLP over each service row, then one round of messages
   on the call graph (mean over callees, mean over callers, mean over all services) and a second
   MLP: no weight depends on the number of services S, so a trained actor runs on any topology.
   :class:`Actor` (shared by every agent) turns each row into logits of the D action deltas; a
   ``roles`` agent acts on every row (``MultiDiscrete([D] * S)``), a ``per_service`` agent on its
   own (its other rows allow only the zero delta, so they have probability one and no entropy).
   Unavailable actions get logit -1e8 (masked logits). Inputs per row: the observation's metrics,
   ``visible``, ``controlled`` and progress, plus the role one-hot (``roles``; a ``per_service``
   agent is known by its ``controlled`` row). :class:`Critic` pools the rows (mean and max) into one
   value. :class:`ValueNorm` is marlbenchmark's running mean / variance of the returns (beta
   0.99999, debiased); the critic predicts normalised returns (``mappo.value_norm``).
2. **Rollout** (:func:`collect_rollout`): ``ppo.n_steps`` steps of every cluster; the actions of all
   agents are sampled from their masked distributions and merged by the layout's rule. Windows end
   by truncation only, never by termination: where a cluster's window ends, the value of its final
   observation is kept for bootstrapping, and the cluster is reset (the others play on).
3. **GAE** (:func:`compute_advantages`, gamma ``ppo.gamma``, lambda ``ppo.gae_lambda``) on each
   agent's own reward (``shared_reward_weight x global + mission``), bootstrapping from V(final
   observation) at window ends and from V(last observation) at the rollout's end.
4. **Update** (:func:`ppo_update`): ``ppo.n_epochs`` epochs of ``mappo.n_minibatches`` minibatches
   over every (step, cluster, agent) sample; advantages normalised over the batch; clipped
   surrogate (``ppo.clip_range``); the value loss is Huber (``mappo.huber_delta``) on normalised
   returns, clipped around the **old** value prediction (``old + clip(new - old, -eps, eps)``, the
   max of the clipped and unclipped errors; clipping around the target, as some single-file
   versions do, disables it); entropy bonus ``ppo.ent_coef``, value weight ``ppo.vf_coef``; actor
   and critic gradients clipped separately at ``ppo.max_grad_norm`` (as marlbenchmark's two
   optimisers do); Adam at ``ppo.learning_rate`` (eps 1e-5); optional early stop on ``ppo.target_kl``.
   ValueNorm is updated once per update, with the batch's returns, before the epochs.
5. **Evaluation** every ``eval.every_timesteps``: the actor as an
   :class:`~agents.autoscaling.AutoscalingPolicy` (:class:`MAPPOPolicy`: each agent's median move,
   deterministic; the mode would misread a scale-up spread over +1 and +2) and the Kubernetes HPA
   on fixed train-split windows, through :func:`evaluation.autoscaling.evaluate_autoscaling`
   (:class:`training.autoscaling_ppo.TrainSplitEvaluation`: same ``eval.csv`` columns as
   ``algorithm: ppo``). ``best/`` keeps the highest mean episode return (the env's global reward).
6. **Nothing is lost**: the run folder of :mod:`training.runs`; at every rollout boundary the whole
   state (networks, optimiser, value normaliser, the clusters mid-episode, every RNG, counters) is
   captured and written to ``checkpoint/`` every ``checkpoint.every_updates`` updates. SIGINT /
   SIGTERM end the rollout and write the last boundary's state; ``--resume`` repeats exactly what
   the uninterrupted run did from there (same parameters and evaluation rows, checked by the tests).

``best/`` and ``last/`` hold ``model.pt`` (state dicts of the actor, critic and value normaliser)
and ``metadata.json``; :func:`load_mappo_policy` loads either as an autoscaling policy.

Config keys read: ``env_config``, ``env``, ``algorithm``, ``policy.hidden`` (default 64), the
``ppo`` section but ``batch_size``, the ``mappo`` section, ``n_envs``, ``total_timesteps`` (cluster
steps over the B clusters; agent-steps are A times as many), ``seed``, ``torch_threads``, ``eval``,
``checkpoint``.

Shapes: T rollout steps, B clusters, A agents, S services, M metrics, D deltas, N = T x B x A samples.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.model_files import resolve_model_path
from digital_twin.cli import read_yaml
from digital_twin.resources import resolve_path
from envs.microservice.config import AgentsConfig, config_from_dict
from envs.microservice.core import MicroserviceCore
from envs.microservice.multi_agent import MultiAgentView, merge_proposals
from training.autoscaling_ppo import EVAL_FIELDS, TrainSplitEvaluation, env_config
from training.maskable_ppo import _Stop, capture_rngs, restore_rngs
from training.runs import MODEL_FORMAT, CheckpointError, git_commit, library_versions, read_checkpoint, \
    space_signature, write_checkpoint

ENV_ID = "microservice_autoscaling_v0"
MASKED_LOGIT = -1e8
"""Logit of an unavailable action (finite: no NaN in softmax or entropy; sb3-contrib's value)."""
DEFAULT_HIDDEN = 64
ACTIONS = ("median", "mode", "sample")
"""How :class:`MAPPOPolicy` turns an agent's distribution into one move."""


# ---------------------------------------------------------------------- 1. networks
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ServiceRows(nn.Module):
    """Per-service embeddings: an MLP per row, one round of call-graph messages, a second MLP.

    Args:
        in_dim: Features per row.
        hidden: Width H.

    Shapes:
        x (N, S, in_dim), adj (S, S) float 0/1 (``adj[i, j]``: i calls j) -> (N, S, H).
    """

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Sequential(layer_init(nn.Linear(in_dim, hidden)), nn.ReLU(),
                                   layer_init(nn.Linear(hidden, hidden)), nn.ReLU())
        self.mix = nn.Sequential(layer_init(nn.Linear(4 * hidden, hidden)), nn.ReLU())

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        callees = torch.einsum("ij,njh->nih", adj / adj.sum(1, keepdim=True).clamp(min=1.0), h)
        callers = torch.einsum("ij,njh->nih", adj.T / adj.sum(0)[:, None].clamp(min=1.0), h)
        context = h.mean(1, keepdim=True).expand_as(h)
        return self.mix(torch.cat([h, callees, callers, context], dim=-1))


class Actor(nn.Module):
    """The shared actor: per service row, logits of the D deltas (masked before use).

    Args:
        in_dim: Features per row (M + 3 observation columns + role features).
        hidden: Width.
        num_deltas: D.

    Shapes:
        x (N, S, in_dim), adj (S, S) -> logits (N, S, D).
    """

    def __init__(self, in_dim: int, hidden: int, num_deltas: int):
        super().__init__()
        self.kwargs = {"in_dim": in_dim, "hidden": hidden, "num_deltas": num_deltas}
        self.rows = ServiceRows(in_dim, hidden)
        self.head = layer_init(nn.Linear(hidden, num_deltas), std=0.01)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.head(self.rows(x, adj))


class Critic(nn.Module):
    """The value of an agent's input rows: per-row embeddings pooled (mean and max), then an MLP.

    Shapes:
        x (N, S, in_dim), adj (S, S) -> values (N,).
    """

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.kwargs = {"in_dim": in_dim, "hidden": hidden}
        self.rows = ServiceRows(in_dim, hidden)
        self.head = nn.Sequential(layer_init(nn.Linear(2 * hidden, hidden)), nn.ReLU(),
                                  layer_init(nn.Linear(hidden, 1), std=1.0))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        z = self.rows(x, adj)
        return self.head(torch.cat([z.mean(1), z.amax(1)], dim=-1)).squeeze(-1)


class ValueNorm(nn.Module):
    """Running mean and variance of the value targets (marlbenchmark ``utils/valuenorm.py``).

    Exponential averages with weight ``beta`` on the old value, debiased (as Adam's moments); the
    variance is floored at 1e-2. Disabled (``enabled=False``), both maps are the identity.
    """

    def __init__(self, enabled: bool = True, beta: float = 0.99999, epsilon: float = 1e-5):
        super().__init__()
        self.enabled, self.beta, self.epsilon = enabled, beta, epsilon
        for name in ("running_mean", "running_mean_sq", "debiasing_term"):
            self.register_buffer(name, torch.zeros(1, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        w = self.beta
        self.running_mean.mul_(w).add_(x.mean() * (1.0 - w))
        self.running_mean_sq.mul_(w).add_((x ** 2).mean() * (1.0 - w))
        self.debiasing_term.mul_(w).add_(1.0 - w)

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        debias = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean ** 2).clamp(min=1e-2)
        return mean, var.sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean, std = self._mean_std()
        return ((x - mean) / std).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean, std = self._mean_std()
        return (x * std + mean).to(x.dtype)


class MAPPOAgent(nn.Module):
    """Actor, critic and value normaliser, with CleanRL's two methods.

    Shapes:
        x (N, S, Fa) actor rows, critic_x (N, S, Fc), mask (N, S, D) bool, action (N, S) delta
        indices, adj (S, S); log-probabilities, entropies and values (N,) (summed over the rows).
    """

    def __init__(self, actor_dim: int, critic_dim: int, hidden: int, num_deltas: int, value_norm: bool):
        super().__init__()
        self.actor = Actor(actor_dim, hidden, num_deltas)
        self.critic = Critic(critic_dim, hidden)
        self.value_norm = ValueNorm(value_norm)

    def get_value(self, critic_x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Normalised values (N,)."""
        return self.critic(critic_x, adj)

    def get_action_and_value(self, x, mask, critic_x, adj, action=None):
        """``(action, log_prob, entropy, normalised value)``; samples ``action`` when None."""
        logits = self.actor(x, adj).masked_fill(~mask, MASKED_LOGIT)
        dist = torch.distributions.Categorical(logits=logits, validate_args=False)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(1), dist.entropy().sum(1), self.critic(critic_x, adj)


# ---------------------------------------------------------------------- 2. inputs of the networks
def role_features(view: MultiAgentView) -> np.ndarray:
    """(A, K) features naming each agent: the role one-hot (``roles``); none for ``per_service``
    (K = 0: its ``controlled`` column names the agent, on any topology)."""
    if view.layout == "roles":
        return np.eye(view.num_agents, dtype=np.float32)
    return np.zeros((view.num_agents, 0), dtype=np.float32)


def network_inputs(view: MultiAgentView, roles: np.ndarray, centralised: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the actor and critic see now, for every cluster and agent.

    Returns:
        ``(x (B, A, S, M + 3 + K), critic_x (B, A, S, Fc), mask (B, A, S, D) bool)``: the actor
        reads the observation's first M + 3 columns (metrics where visible, visible, controlled,
        progress) and the role features; the centralised critic reads the global state's metrics
        and progress, the agent's ``controlled`` flag and its role features (Fc = M + 2 + K); the
        IPPO critic reads what the actor reads.
    """
    core = view.core
    m = core.num_metrics
    obs = view.observations()
    b, a, s, _ = obs.shape
    feats = np.broadcast_to(roles[None, :, None, :], (b, a, s, roles.shape[1]))
    x = np.concatenate([obs[..., :m + 3], feats], axis=-1)
    if centralised:
        state = np.broadcast_to(view.state()[:, None, :, :m + 1], (b, a, s, m + 1))
        controlled = np.broadcast_to(view.scope[None, :, :, None], (b, a, s, 1)).astype(np.float32)
        critic_x = np.concatenate([state, controlled, feats], axis=-1)
    else:
        critic_x = x
    return x, critic_x, view.action_masks()


def input_dims(num_metrics: int, num_role_features: int, centralised: bool) -> tuple[int, int]:
    """``(actor row features, critic row features)`` of :func:`network_inputs`."""
    actor = num_metrics + 3 + num_role_features
    return actor, (num_metrics + 2 + num_role_features) if centralised else actor


def adjacency(core: MicroserviceCore) -> torch.Tensor:
    """(S, S) float32 0/1: the static call graph (``adj[i, j]``: i calls j)."""
    return torch.as_tensor((core.calls > 0).astype(np.float32))


def flat(a: np.ndarray) -> torch.Tensor:
    """(B, A, ...) numpy -> (B * A, ...) tensor."""
    return torch.as_tensor(np.ascontiguousarray(a)).reshape(-1, *a.shape[2:])


# ---------------------------------------------------------------------- 3. the actor as an autoscaling policy
class MAPPOPolicy:
    """A trained actor as an :class:`~agents.autoscaling.AutoscalingPolicy`: every agent's move
    under its mask (by default the median of its distribution), merged by the layout's rule.

    Runs on any topology with the same ``action_deltas`` (and, for ``roles``, the roles it was
    trained with: their scopes are resolved on the new topology).

    Args:
        actor: The trained :class:`Actor`.
        layout: ``roles`` or ``per_service``.
        agents: The multi-agent settings it was trained with (its roles).
        action_deltas: The deltas its logits mean.
        name: Label in reports.
        action: How an agent's distribution over its allowed deltas becomes one move: ``"median"``
            (default) the median delta, ``"mode"`` the most likely one, ``"sample"`` a draw from a
            generator of its own, seeded with ``seed`` at every ``reset`` (training's global RNGs
            stay untouched). The deltas are ordered, and the mode misreads a policy that spreads
            its scale-up over +1 and +2: with P(0) = 0.4, P(+1) = P(+2) = 0.3 it never scales
            up, the median scales up by 1. Median and mode are always allowed moves.
        seed: See ``action``.
    """

    def __init__(self, actor: Actor, layout: str, agents: AgentsConfig, action_deltas: tuple[int, ...],
                 name: str = "agent:mappo", action: str = "median", seed: int = 0):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        self.actor, self.layout, self.agents, self.name = actor, layout, agents, name
        self.action_deltas = tuple(int(d) for d in action_deltas)
        self.action, self.seed = action, seed
        self._by_value = torch.as_tensor(np.argsort(self.action_deltas, kind="stable"))

    def reset(self, core: MicroserviceCore) -> None:
        if tuple(core.deltas.tolist()) != self.action_deltas:
            raise ValueError(f"{self.name}: trained with action_deltas {list(self.action_deltas)}, "
                             f"this config has {core.deltas.tolist()}")
        self.view = MultiAgentView(core, self.layout, self.agents)
        self.roles = role_features(self.view)
        self.adj = adjacency(core)
        self.generator = torch.Generator().manual_seed(self.seed)

    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        x, _, mask = network_inputs(self.view, self.roles, centralised=False)
        b, a, s = mask.shape[:3]
        with torch.no_grad():
            logits = self.actor(flat(x), self.adj).masked_fill(~flat(mask), MASKED_LOGIT)
        probs = torch.softmax(logits, -1)
        if self.action == "sample":
            indices = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=self.generator)
        elif self.action == "mode":
            indices = probs.argmax(-1)
        else:  # the median delta: the first (by value) whose cumulative probability reaches one half
            k = (probs[..., self._by_value].cumsum(-1) < 0.5).sum(-1).clamp(max=probs.shape[-1] - 1)
            indices = self._by_value[k]
        indices = indices.numpy().reshape(b, a, s)
        self.last_proposals, _ = self.view.proposals(indices)  # what evaluate.py --explain reads
        merged, _ = merge_proposals(self.last_proposals)
        return core.desired + merged

    @property
    def agent_names(self) -> list[str]:
        """The agents whose proposals :attr:`last_proposals` holds, (B, A, S) replica deltas."""
        return self.view.agent_names

    @property
    def agent_scope(self) -> np.ndarray:
        """(A, S) bool: the services each agent may change."""
        return self.view.scope


def _model_file(path: str | Path) -> Path:
    """``model.pt`` of a run folder (best/, else last/), of a model folder, or the file itself."""
    try:
        model = resolve_model_path(resolve_path(path), "model.pt")
    except FileNotFoundError:
        model = None
    if model is None or model.name != "model.pt":
        raise FileNotFoundError(f"{path}: no MAPPO / IPPO model (model.pt) there, nor in best/ or last/")
    return model


def load_mappo_policy(path: str | Path, name: str | None = None, action: str = "median", seed: int = 0) -> MAPPOPolicy:
    """A saved MAPPO / IPPO actor (``best/`` or ``last/`` of a run, its ``model.pt``, or a run
    folder: best/ first) as an autoscaling policy.

    Raises:
        FileNotFoundError: no ``model.pt`` there.
        ValueError: its ``metadata.json`` is not a MAPPO / IPPO model's.
    """
    model = _model_file(path)
    meta = json.loads((model.parent / "metadata.json").read_text())
    if meta.get("env_id") != ENV_ID or meta.get("algorithm") not in ("mappo", "ippo"):
        raise ValueError(f"{model.parent / 'metadata.json'}: not a MAPPO / IPPO model")
    actor = Actor(**meta["actor"])
    actor.load_state_dict(torch.load(model, map_location="cpu", weights_only=True)["actor"])
    agents = config_from_dict({"agents": meta["agents"], "action_deltas": meta["action_deltas"]}).agents
    run = model.parent.parent if model.parent.name in ("best", "last") else model.parent
    return MAPPOPolicy(actor, meta["layout"], agents, tuple(meta["action_deltas"]), name or f"agent:{run.name}",
                       action, seed)


# ---------------------------------------------------------------------- 4. learner, rollout, GAE, update
@dataclass
class Learner:
    """Everything training changes: what a checkpoint holds (with the RNG states)."""

    view: MultiAgentView          # the B clusters mid-episode
    rng: np.random.Generator      # the clusters' only randomness
    agent: MAPPOAgent
    optimizer: torch.optim.Optimizer
    centralised: bool
    num_timesteps: int = 0        # cluster steps
    updates: int = 0
    episode_return: np.ndarray = None  # (B,) global return of each cluster's episode so far (zeros)
    finished_returns: list = field(default_factory=list)  # of the episodes finished since the last log

    def __post_init__(self) -> None:
        if self.episode_return is None:
            self.episode_return = np.zeros(self.view.core.num_clusters)

    @property
    def num_agents(self) -> int:
        return self.view.num_agents


def make_learner(config: dict[str, Any]) -> Learner:
    """A fresh learner for the config (seeded: same config, same run)."""
    torch.manual_seed(config["seed"])
    rng = np.random.default_rng(config["seed"])
    core = MicroserviceCore(env_config(config), num_clusters=config["n_envs"], split="train")
    view = MultiAgentView(core, config["mappo"]["layout"])
    centralised = config["algorithm"] == "mappo"
    actor_dim, critic_dim = input_dims(core.num_metrics, role_features(view).shape[1], centralised)
    agent = MAPPOAgent(actor_dim, critic_dim, int(config["policy"].get("hidden", DEFAULT_HIDDEN)), core.num_deltas,
                       config["mappo"]["value_norm"])
    optimizer = torch.optim.Adam(agent.parameters(), lr=config["ppo"]["learning_rate"], eps=1e-5)
    view.reset(rng)
    return Learner(view, rng, agent, optimizer, centralised)


@dataclass
class Rollout:
    """``ppo.n_steps`` steps of every cluster and agent (tensors; leading axes (T, B, A))."""

    x: torch.Tensor             # (T, B, A, S, Fa) actor rows
    critic_x: torch.Tensor      # (T, B, A, S, Fc)
    mask: torch.Tensor          # (T, B, A, S, D) bool
    action: torch.Tensor        # (T, B, A, S) delta indices
    log_prob: torch.Tensor      # (T, B, A)
    value: torch.Tensor         # (T, B, A) denormalised V(s_t)
    reward: torch.Tensor        # (T, B, A)
    done: torch.Tensor          # (T, B) window ended after step t (truncation)
    final_value: torch.Tensor   # (T, B, A) denormalised V(final observation) where done, else 0
    last_value: torch.Tensor    # (B, A) denormalised V(observation after the last step)


def collect_rollout(learner: Learner, n_steps: int, on_step: Callable[[], bool] | None = None) -> Rollout | None:
    """Play ``n_steps`` steps of every cluster (see the module docstring, 2).

    Args:
        on_step: Called after each step; returning False abandons the rollout (returns None).
    """
    view, agent = learner.view, learner.agent
    roles = role_features(view)
    adj = adjacency(view.core)
    b, a = view.core.num_clusters, view.num_agents
    buf: dict[str, list] = {k: [] for k in ("x", "critic_x", "mask", "action", "log_prob", "value", "reward", "done",
                                            "final_value")}
    for _ in range(n_steps):
        x, critic_x, mask = network_inputs(view, roles, learner.centralised)
        with torch.no_grad():
            action, log_prob, _, value = agent.get_action_and_value(flat(x), flat(mask), flat(critic_x), adj)
        indices = action.numpy().reshape(b, a, -1)
        result = view.step(indices, learner.rng)
        final_value = torch.zeros(b, a)
        if result.truncated.any():
            # The window ended (truncation, not termination): bootstrap from the final observation.
            _, final_x, _ = network_inputs(view, roles, learner.centralised)
            with torch.no_grad():
                v = agent.value_norm.denormalize(agent.get_value(flat(final_x), adj)).reshape(b, a)
            final_value = torch.where(torch.as_tensor(result.truncated)[:, None], v, 0.0)
        learner.episode_return += result.reward
        learner.finished_returns.extend(learner.episode_return[result.truncated].tolist())
        learner.episode_return[result.truncated] = 0.0
        if result.truncated.any():
            view.reset(learner.rng, mask=result.truncated)
        for key, item in (("x", x), ("critic_x", critic_x), ("mask", mask)):
            buf[key].append(torch.as_tensor(np.ascontiguousarray(item)))
        buf["action"].append(action.reshape(b, a, -1))
        buf["log_prob"].append(log_prob.reshape(b, a))
        buf["value"].append(agent.value_norm.denormalize(value).reshape(b, a))
        buf["reward"].append(torch.as_tensor(result.rewards, dtype=torch.float32))
        buf["done"].append(torch.as_tensor(result.truncated))
        buf["final_value"].append(final_value)
        learner.num_timesteps += b
        if on_step is not None and not on_step():
            return None
    _, critic_x, _ = network_inputs(view, roles, learner.centralised)
    with torch.no_grad():
        last_value = agent.value_norm.denormalize(agent.get_value(flat(critic_x), adj)).reshape(b, a)
    return Rollout(**{k: torch.stack(v) for k, v in buf.items()}, last_value=last_value)


def compute_advantages(r: Rollout, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the rollout; ``(advantages, returns)``, each (T, B, A).

    The next value of step t is V(final observation) where the window ended after t, else
    V(s_{t+1}) (V(last observation) at the rollout's end); the lambda trace stops at a window end.
    """
    steps = r.reward.shape[0]
    advantages = torch.zeros_like(r.reward)
    last_gae = torch.zeros_like(r.last_value)
    for t in reversed(range(steps)):
        next_value = r.last_value if t == steps - 1 else r.value[t + 1]
        done = r.done[t][:, None]
        next_value = torch.where(done, r.final_value[t], next_value)
        delta = r.reward[t] + gamma * next_value - r.value[t]
        last_gae = delta + gamma * gae_lambda * (~done).float() * last_gae
        advantages[t] = last_gae
    return advantages, advantages + r.value


def clipped_value_loss(value: torch.Tensor, old: torch.Tensor, target: torch.Tensor, clip: float, delta: float) -> torch.Tensor:
    """Mean of ``max(huber(value - target), huber(old + clip(value - old, -clip, clip) - target))``.

    Clipped around the **old** prediction ``old`` (what the critic said when acting): the new
    value may not move further than ``clip`` from it to lower the loss. (Clipping around the
    target instead, as some single-file versions do, leaves the loss unclipped.)
    """
    clipped = old + (value - old).clamp(-clip, clip)
    return torch.max(F.huber_loss(value, target, reduction="none", delta=delta),
                     F.huber_loss(clipped, target, reduction="none", delta=delta)).mean()


def ppo_update(learner: Learner, r: Rollout, ppo: dict[str, Any], mappo: dict[str, Any]) -> dict[str, float]:
    """The PPO epochs on one rollout (see the module docstring, 4); returns the last minibatch's losses."""
    agent, optimizer = learner.agent, learner.optimizer
    adj = adjacency(learner.view.core)
    advantages, returns = compute_advantages(r, ppo["gamma"], ppo["gae_lambda"])
    s = r.x.shape[3]
    b_x, b_cx = r.x.reshape(-1, s, r.x.shape[-1]), r.critic_x.reshape(-1, s, r.critic_x.shape[-1])
    b_mask, b_action = r.mask.reshape(-1, s, r.mask.shape[-1]), r.action.reshape(-1, s)
    b_log_prob, b_adv, b_returns, b_values = r.log_prob.reshape(-1), advantages.reshape(-1), returns.reshape(-1), r.value.reshape(-1)
    b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
    agent.value_norm.update(b_returns)
    b_target = agent.value_norm.normalize(b_returns)   # what the critic should predict
    b_old = agent.value_norm.normalize(b_values)       # what it predicted when acting (same scale)
    n = b_x.shape[0]
    size = int(np.ceil(n / mappo["n_minibatches"]))
    clip, delta = ppo["clip_range"], mappo["huber_delta"]
    for _ in range(ppo["n_epochs"]):
        order = torch.randperm(n)
        for start in range(0, n, size):
            mb = order[start:start + size]
            _, log_prob, entropy, value = agent.get_action_and_value(b_x[mb], b_mask[mb], b_cx[mb], adj, b_action[mb])
            log_ratio = log_prob - b_log_prob[mb]
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
            adv = b_adv[mb]
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
            value_loss = clipped_value_loss(value, b_old[mb], b_target[mb], clip, delta)
            entropy_loss = entropy.mean()
            loss = policy_loss - ppo["ent_coef"] * entropy_loss + ppo["vf_coef"] * value_loss
            optimizer.zero_grad()
            loss.backward()
            actor_norm = nn.utils.clip_grad_norm_(agent.actor.parameters(), ppo["max_grad_norm"])
            critic_norm = nn.utils.clip_grad_norm_(agent.critic.parameters(), ppo["max_grad_norm"])
            optimizer.step()
        if ppo["target_kl"] is not None and approx_kl > ppo["target_kl"]:
            break
    learner.updates += 1
    return {"losses/policy_loss": policy_loss.item(), "losses/value_loss": value_loss.item(),
            "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
            "losses/clip_fraction": clip_fraction.item(), "losses/actor_grad_norm": float(actor_norm),
            "losses/critic_grad_norm": float(critic_norm)}


# ---------------------------------------------------------------------- 5. evaluation, model folders, checkpoints
def as_policy(learner: Learner, config: dict[str, Any]) -> MAPPOPolicy:
    view = learner.view
    return MAPPOPolicy(learner.agent.actor, view.layout, view.agents_config, tuple(view.core.deltas.tolist()),
                       name=f"agent:{config['algorithm']}")


Evaluation = TrainSplitEvaluation  # it plays any autoscaling policy: the actor here, an SB3 model there


def spaces_signature(config: dict[str, Any]) -> dict[str, str]:
    """One agent's observation and action spaces and the state space, as the PettingZoo env has them."""
    from envs.microservice.parallel import MicroserviceAutoscalingParallelEnv

    par = MicroserviceAutoscalingParallelEnv(config=env_config(config), layout=config["mappo"]["layout"])
    agent = par.possible_agents[0]
    return {"observation_space": space_signature(par.observation_space(agent)),
            "action_space": space_signature(par.action_space(agent)), "state_space": space_signature(par.state_space)}


def model_metadata(config: dict[str, Any], learner: Learner, extra: dict[str, Any]) -> dict[str, Any]:
    """What ``best/`` and ``last/`` need to be reloaded anywhere (:func:`load_mappo_policy`)."""
    view, agent = learner.view, learner.agent
    agents = view.agents_config
    return {
        "env_id": ENV_ID, "algorithm": config["algorithm"], "layout": view.layout, "centralised_critic": learner.centralised,
        "agent_names": view.agent_names, "action_deltas": view.core.deltas.tolist(),
        "agents": {"layout": agents.layout, "shared_reward_weight": agents.shared_reward_weight,
                   "per_service_mission": dict(agents.per_service_mission),
                   "roles": {r.name: {"services": list(r.services) if isinstance(r.services, tuple) else r.services,
                                      "moves": list(r.moves), "mission": dict(r.mission)} for r in agents.roles}},
        "actor": agent.actor.kwargs, "critic": agent.critic.kwargs, "policy": config["policy"],
        "env_config": read_yaml(resolve_path(config["env_config"])), "env_config_path": config["env_config"],
        "env_overrides": config["env"], **spaces_signature(config),
        "training_config": config, "num_timesteps": learner.num_timesteps, "last_eval": extra.get("last_eval"),
        "selection_split": "train", "versions": library_versions(), "git_commit": git_commit(),
    }


def save_policy(folder: Path, learner: Learner, metadata: dict[str, Any]) -> Path:
    """``folder/model.pt`` (actor, critic, value normaliser state dicts) and ``folder/metadata.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    agent = learner.agent
    torch.save({"actor": agent.actor.state_dict(), "critic": agent.critic.state_dict(),
                "value_norm": agent.value_norm.state_dict()}, folder / "model.pt")
    (folder / "metadata.json").write_text(json.dumps(dict(metadata, format=MODEL_FORMAT), indent=2, default=str))
    return folder / "model.pt"


def capture_state(learner: Learner, extra: dict[str, Any]) -> dict[str, bytes]:
    """The training state at a rollout boundary, as checkpoint files (bytes now: training goes on)."""
    buffer = io.BytesIO()
    torch.save({"agent": learner.agent.state_dict(), "optimizer": learner.optimizer.state_dict()}, buffer)
    state = {"view": learner.view, "rng": learner.rng, "num_timesteps": learner.num_timesteps,
             "updates": learner.updates, "episode_return": learner.episode_return,
             "finished_returns": learner.finished_returns, "rngs": capture_rngs(), "extra": extra}
    return {"model.pt": buffer.getvalue(), "state.pkl": pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)}


def restore_state(paths: dict[str, Path], config: dict[str, Any]) -> tuple[Learner, dict[str, Any]]:
    """Rebuild the learner from checkpoint files; returns ``(learner, extra)``."""
    learner = make_learner(dict(config, n_envs=1))  # the networks and optimiser, then their states
    try:
        state = pickle.loads(paths["state.pkl"].read_bytes())
        weights = torch.load(paths["model.pt"], map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file means the same thing to the user
        raise CheckpointError(f"{paths['state.pkl'].parent}: cannot be read ({exc.__class__.__name__})") from None
    learner.agent.load_state_dict(weights["agent"])
    learner.optimizer.load_state_dict(weights["optimizer"])
    learner.view, learner.rng = state["view"], state["rng"]
    learner.num_timesteps, learner.updates = state["num_timesteps"], state["updates"]
    learner.episode_return, learner.finished_returns = state["episode_return"], state["finished_returns"]
    restore_rngs(state["rngs"])
    return learner, state["extra"]


def checkpoint_expectations(config: dict[str, Any], run_info: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint of this run must say about itself to be resumed."""
    return {"run_id": run_info["run_id"], "env_id": ENV_ID, "algorithm": config["algorithm"],
            **spaces_signature(config)}


# ---------------------------------------------------------------------- 6. the training loop
def train(config: dict[str, Any], run_dir: Path, run_info: dict[str, Any], resume: bool, progress: bool = True) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; returns a summary (see the module docstring)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    torch.set_num_threads(config["torch_threads"])
    expect = checkpoint_expectations(config, run_info)
    if resume:
        paths, _ = read_checkpoint(run_dir, expect)
        learner, extra = restore_state(paths, config)
    else:
        learner = make_learner(config)
        extra = {"last_eval_timesteps": None, "best_score": None, "last_eval": None}
    writer = SummaryWriter(str(run_dir / "tb"))
    evaluation = Evaluation(config)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    total, n_steps = config["total_timesteps"], config["ppo"]["n_steps"]
    bar = tqdm(total=total, initial=learner.num_timesteps, desc=config["algorithm"], unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    restored_at = learner.num_timesteps if resume else None
    boundary: dict[str, Any] = {}  # the last rollout boundary's state: files and manifest

    def evaluate_now() -> None:
        figures = evaluation(as_policy(learner, config))
        extra["last_eval_timesteps"] = learner.num_timesteps
        extra["last_eval"] = dict(figures, timesteps=learner.num_timesteps)
        eval_csv = run_dir / "eval.csv"
        new_file = not eval_csv.exists()
        with eval_csv.open("a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=EVAL_FIELDS, extrasaction="ignore")
            if new_file:
                out.writeheader()
            out.writerow({"timesteps": learner.num_timesteps, "updates": learner.updates, **figures})
        for key in ("episode_return", "slo_violation_minutes", "pod_hours"):
            writer.add_scalar(f"eval/{key}", figures[key], learner.num_timesteps)
        if extra["best_score"] is None or figures["episode_return"] > extra["best_score"]:
            extra["best_score"] = figures["episode_return"]
            save_policy(run_dir / "best", learner, model_metadata(config, learner, extra))
        bar.set_postfix_str(f"eval return {figures['episode_return']:.2f} (HPA {figures['hpa_episode_return']:.2f}), "
                            f"SLO {figures['slo_violation_minutes']:.1f} min (HPA {figures['hpa_slo_violation_minutes']:.1f})")

    def at_boundary() -> None:
        """After an update (or at the start), before the next rollout."""
        restored = learner.num_timesteps == restored_at  # already evaluated and written before the stop
        if not restored:
            since = learner.num_timesteps - (extra["last_eval_timesteps"] or 0)
            if since >= config["eval"]["every_timesteps"]:
                evaluate_now()
        boundary["files"] = capture_state(learner, extra)
        boundary["manifest"] = dict(expect, num_timesteps=learner.num_timesteps, updates=learner.updates)
        if not restored and learner.updates % config["checkpoint"]["every_updates"] == 0:
            write_checkpoint(run_dir, boundary["files"], boundary["manifest"])

    def on_step() -> bool:
        bar.update(learner.view.core.num_clusters)
        return stop.signal is None

    interrupted = False
    try:
        while learner.num_timesteps < total:
            at_boundary()
            started = time.perf_counter()
            rollout = collect_rollout(learner, n_steps, on_step)
            if rollout is None:
                interrupted = True
                break
            stats = ppo_update(learner, rollout, config["ppo"], config["mappo"])
            step = learner.num_timesteps
            for key, value in stats.items():
                writer.add_scalar(key, value, step)
            if learner.finished_returns:
                writer.add_scalar("charts/episode_return", float(np.mean(learner.finished_returns)), step)
                learner.finished_returns.clear()
            agent_steps = n_steps * learner.view.core.num_clusters * learner.num_agents
            writer.add_scalar("charts/agent_steps_per_second", agent_steps / (time.perf_counter() - started), step)
        if interrupted:
            write_checkpoint(run_dir, boundary["files"], boundary["manifest"])
        else:
            if learner.num_timesteps != extra["last_eval_timesteps"]:
                evaluate_now()
            write_checkpoint(run_dir, capture_state(learner, extra),
                             dict(expect, num_timesteps=learner.num_timesteps, updates=learner.updates))
            save_policy(run_dir / "last", learner, model_metadata(config, learner, extra))
    finally:
        bar.close()
        writer.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    # When interrupted, the run continues from the boundary checkpoint, not from where the step stopped.
    steps = boundary["manifest"]["num_timesteps"] if interrupted else learner.num_timesteps
    return {"interrupted": interrupted, "signal": stop.signal, "num_timesteps": steps, "last_eval": extra["last_eval"],
            "best_score": extra["best_score"], "split": "train"}


# ---------------------------------------------------------------------- 7. throughput
def benchmark_agent_steps_per_second(algorithm: str, layout: str, env_config_path: str, steps: int, n_envs: int,
                                     n_steps: int = 128, n_epochs: int = 5) -> float:
    """Agent-steps per second of training from scratch (rollouts and updates, no evaluation).

    An agent-step is one agent's decision: a cluster step of the ``roles`` layout is A of them.
    Runs ``ceil(steps / (n_steps x n_envs))`` rollouts of ``n_steps`` and their updates (the
    MAPPO defaults otherwise: one minibatch, hidden 64), one torch thread.
    """
    from training.config import DEFAULTS

    torch.set_num_threads(1)
    config = dict(DEFAULTS, problem="autoscaling", algorithm=algorithm, env_config=env_config_path, env={},
                  policy={"hidden": DEFAULT_HIDDEN}, n_envs=n_envs, mappo=dict(DEFAULTS["mappo"], layout=layout),
                  ppo=dict(DEFAULTS["ppo"], n_steps=n_steps, n_epochs=n_epochs, clip_range=0.2, ent_coef=0.01,
                           max_grad_norm=10.0, learning_rate=5e-4))
    learner = make_learner(config)
    start = time.perf_counter()
    while learner.num_timesteps < steps:
        ppo_update(learner, collect_rollout(learner, n_steps), config["ppo"], config["mappo"])
    return learner.num_timesteps * learner.num_agents / (time.perf_counter() - start)
