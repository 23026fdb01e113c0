"""A service-graph policy for ``clustergym/MicroserviceAutoscaling-v0``: message passing over the call graph.

The env observes a matrix of per-service metrics and the application's call graph (``adjacency``:
mean calls from row service to column service per request; ``edge_index``: the call edges). This
module turns that into scaling decisions with weights that do not depend on the topology:

1. **Node inputs** (per service): its normalised metrics (14), the episode's progress, whether it is
   an entry (no caller), and ``log1p`` of its *visits per entry request* (how many times one
   request that enters the application reaches it: ``v = e + A^T v`` over the call graph).
2. **Edges both ways**: each call edge ``caller -> callee`` is used forward (the callee hears its
   callers: the load coming) and backward (the caller hears its callees: the bottleneck behind
   it), with edge features ``[log1p(calls per request), forward, backward]``.
3. **Message passing** (:class:`CallGraphConv`, a PyG ``MessagePassing``): ``layers`` rounds of
   ``h_i <- h_i + act(W_root h_i + mean_j W_msg [h_j, e_ji])`` on one batched graph (the batch's
   graphs stacked with index offsets, never a Python loop over them).
4. **Heads**: per-service logits over the D replica deltas from ``[h_s, context]`` (the same
   weights for every service), and the value from ``context`` = mean and max of the ``h_s``.

So one set of weights runs on chain4, Online Boutique or a user's topology YAML: build the policy
for the other env (its spaces) and load the state dict (:func:`load_autoscaling_model` does it).
Relabelling the services permutes the logits the same way (tested).

The features are laid out flat, ``(B, S * H + 2H)``: the S node embeddings then the context, so
SB3's actor-critic flow (features -> ``action_net`` / ``value_net``) is kept unchanged and
sb3-contrib's masked MultiDiscrete distribution applies the env's masks at the replica bounds.

Importing this module imports torch_geometric (about 4 s): the env and the twin never do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch_geometric.nn import MessagePassing

from agents.layers import mlp as _mlp

__all__ = ["CallGraphConv", "ServiceGraphExtractor", "PerServiceHead", "ContextValueHead", "ServiceGraphPolicy",
           "node_inputs", "call_graph", "call_depth", "check_call_depth", "MAX_CALL_DEPTH"]

_EDGE_INPUTS = 3  # log1p(calls per request), forward, backward

MAX_CALL_DEPTH = 32
"""The longest call chain (in hops from an entry) whose visit counts :func:`node_inputs` gets
exactly; a deeper topology is refused by :func:`check_call_depth`."""


def node_inputs(metrics: th.Tensor, adjacency: th.Tensor, progress: th.Tensor) -> th.Tensor:
    """Per-service inputs: metrics, progress, is-entry, log1p(visits per entry request).

    Shapes: metrics (B, S, M), adjacency (B, S, S), progress (B, 1) -> (B, S, M + 3).
    """
    b, s, _ = metrics.shape
    entry = (adjacency.sum(dim=1) == 0).to(metrics.dtype)  # no caller
    visits = entry
    # v = e + A^T v: one request from the entry reaches each service this many times. The call
    # graph is acyclic (the twin refuses cycles), so depth + 1 rounds reach the fixed point and
    # further rounds change no bit. A fixed count, not S, keeps the number of services out of the
    # traced graph: the ONNX export takes any S.
    for _ in range(MAX_CALL_DEPTH + 1):
        visits = entry + th.bmm(adjacency.transpose(1, 2), visits.unsqueeze(-1)).squeeze(-1)
    return th.cat([metrics, progress.unsqueeze(1).expand(b, s, 1), entry.unsqueeze(-1),
                   th.log1p(visits).unsqueeze(-1)], dim=-1)


def call_depth(calls: np.ndarray) -> int:
    """Hops of the longest call chain of an acyclic (S, S) call matrix (0 for a single service)."""
    calls = np.asarray(calls) > 0
    depth = np.zeros(len(calls), dtype=np.int64)
    for _ in range(len(calls)):
        depth = np.maximum(depth, ((depth[:, None] + 1) * calls).max(axis=0, initial=0))
    return int(depth.max(initial=0))


def check_call_depth(calls: np.ndarray, where: str) -> None:
    """Raise ValueError if the call graph is deeper than :data:`MAX_CALL_DEPTH` hops."""
    if (depth := call_depth(calls)) > MAX_CALL_DEPTH:
        raise ValueError(f"{where}: the call graph is {depth} hops deep; the service-graph policy "
                         f"handles up to {MAX_CALL_DEPTH}")


def call_graph(edge_index: th.Tensor, adjacency: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The batch's call graphs as one graph with edges both ways.

    Args:
        edge_index: (B, 2, E) caller / callee per call edge (float after SB3's preprocessing).
        adjacency: (B, S, S) calls per request.

    Returns:
        ``(edge_index (2, 2 B E) long, edge_attr (2 B E, 3))`` over the B x S stacked services.
    """
    b, s, _ = adjacency.shape
    e = edge_index.shape[-1]
    local = edge_index.round().long()  # (B, 2, E)
    src, dst = local[:, 0], local[:, 1]
    calls = adjacency[th.arange(b, device=adjacency.device)[:, None], src, dst]  # (B, E)
    offset = (th.arange(b, device=adjacency.device) * s)[:, None]
    src, dst = (src + offset).reshape(-1), (dst + offset).reshape(-1)
    weight = th.log1p(calls).reshape(-1, 1)
    ones, zeros = th.ones_like(weight), th.zeros_like(weight)
    index = th.stack([th.cat([src, dst]), th.cat([dst, src])])  # forward: caller -> callee; then back
    attr = th.cat([th.cat([weight, ones, zeros], dim=1), th.cat([weight, zeros, ones], dim=1)])
    return index, attr


class CallGraphConv(MessagePassing):
    """``h_i' = W_root h_i + mean_{j -> i} W_msg [h_j, e_ji]`` (a GraphConv with edge features).

    Args:
        channels: width of the node embeddings (in and out: the layer is used residually).
        edge_dim: width of the edge features.
    """

    def __init__(self, channels: int, edge_dim: int = _EDGE_INPUTS):
        super().__init__(aggr="mean")
        self.root = nn.Linear(channels, channels)
        self.msg = nn.Linear(channels + edge_dim, channels)

    def forward(self, x: th.Tensor, edge_index: th.Tensor, edge_attr: th.Tensor) -> th.Tensor:
        return self.root(x) + self.propagate(edge_index, x=x, edge_attr=edge_attr)

    def message(self, x_j: th.Tensor, edge_attr: th.Tensor) -> th.Tensor:
        return self.msg(th.cat([x_j, edge_attr], dim=-1))


class ServiceGraphExtractor(BaseFeaturesExtractor):
    """The call-graph encoder (SB3 ``BaseFeaturesExtractor``): observations -> ``(B, S * H + 2H)``.

    Args:
        observation_space: the env's Dict space (``metrics``, ``adjacency``, ``edge_index``, ``progress``).
        hidden: H, the width of node embeddings.
        layers: rounds of message passing (the call graph's depth is a good choice: 3 covers
            Online Boutique's entry -> checkout -> leaf paths).
    """

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 3):
        s, m = observation_space["metrics"].shape
        super().__init__(observation_space, features_dim=s * hidden + 2 * hidden)
        self.hidden = hidden
        self.embed = _mlp([m + 3, hidden, hidden])
        self.convs = nn.ModuleList(CallGraphConv(hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        metrics, adjacency = observations["metrics"], observations["adjacency"]
        b, s, _ = metrics.shape
        h = self.embed(node_inputs(metrics, adjacency, observations["progress"])).reshape(b * s, self.hidden)
        edge_index, edge_attr = call_graph(observations["edge_index"], adjacency)
        for conv, norm in zip(self.convs, self.norms):
            h = norm(h + th.relu(conv(h, edge_index, edge_attr)))
        nodes = h.reshape(b, s, self.hidden)
        context = th.cat([nodes.mean(dim=1), nodes.amax(dim=1)], dim=-1)
        return th.cat([nodes.reshape(b, s * self.hidden), context], dim=-1)


class PerServiceHead(nn.Module):
    """Logits of the D deltas of every service from ``[h_s, context]``, one MLP shared by all services.

    Shapes: features (B, S * H + 2H) -> logits (B, S * D), service-major (as the env's mask).
    """

    def __init__(self, hidden: int, num_deltas: int, net_arch: list[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.hidden = hidden
        self.net = _mlp([3 * hidden, *net_arch, num_deltas], activation)

    def forward(self, features: th.Tensor) -> th.Tensor:
        b, h = features.shape[0], self.hidden
        s = (features.shape[1] - 2 * h) // h
        nodes = features[:, : s * h].reshape(b, s, h)
        context = features[:, s * h:].unsqueeze(1).expand(b, s, 2 * h)
        return self.net(th.cat([nodes, context], dim=-1)).reshape(b, -1)


class ContextValueHead(nn.Module):
    """The state value from the pooled context. Shapes: features (B, S * H + 2H) -> (B, 1)."""

    def __init__(self, hidden: int, net_arch: list[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.hidden = hidden
        self.net = _mlp([2 * hidden, *net_arch, 1], activation)

    def forward(self, features: th.Tensor) -> th.Tensor:
        return self.net(features[:, -2 * self.hidden:])


class ServiceGraphPolicy(MaskableActorCriticPolicy):
    """``MaskablePPO`` actor-critic with :class:`ServiceGraphExtractor` and per-service heads.

    Usage: ``MaskablePPO(ServiceGraphPolicy, env, policy_kwargs=dict(hidden=64, layers=3))``. SB3's
    flat ``action_net`` and ``value_net`` are replaced by :class:`PerServiceHead` and
    :class:`ContextValueHead`; ``mlp_extractor`` is the identity. No parameter depends on the
    number of services or edges.

    Args:
        observation_space, action_space, lr_schedule: as for :class:`MaskableActorCriticPolicy`
            (the action space is the env's ``MultiDiscrete([D] * S)``).
        hidden: width of node embeddings. layers: message-passing rounds.
        net_arch: hidden widths of the heads: a list (both) or ``dict(pi=[...], vf=[...])``;
            default ``dict(pi=[64], vf=[64])``.
        activation_fn: activation of the heads.
        kwargs: the rest of :class:`MaskableActorCriticPolicy`'s arguments.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.MultiDiscrete, lr_schedule: Schedule,
                 hidden: int = 64, layers: int = 3, net_arch: list[int] | dict[str, list[int]] | None = None,
                 activation_fn: type[nn.Module] = nn.ReLU, **kwargs: Any):
        if not isinstance(action_space, spaces.MultiDiscrete) or len(set(action_space.nvec.tolist())) != 1:
            raise ValueError(f"ServiceGraphPolicy needs the env's MultiDiscrete([D] * S) action, got {action_space}")
        self._heads = net_arch if isinstance(net_arch, dict) else (
            dict(pi=list(net_arch), vf=list(net_arch)) if net_arch is not None else dict(pi=[64], vf=[64]))
        self.hidden = hidden
        kwargs.setdefault("features_extractor_kwargs", {})
        kwargs["features_extractor_kwargs"] = dict(kwargs["features_extractor_kwargs"], hidden=hidden, layers=layers)
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], activation_fn=activation_fn,
                         features_extractor_class=ServiceGraphExtractor, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()  # net_arch [] : the identity
        d = int(self.action_space.nvec[0])
        self.action_net = PerServiceHead(self.hidden, d, self._heads.get("pi", []), self.activation_fn)
        self.value_net = ContextValueHead(self.hidden, self._heads.get("vf", []), self.activation_fn)
        if self.ortho_init:
            # SB3's gains: sqrt(2) inside, 0.01 on the logits, 1 on the value.
            for module in (self.features_extractor, self.action_net, self.value_net):
                module.apply(lambda m: self.init_weights(m, gain=np.sqrt(2)))
            self.init_weights(self.action_net.net[-1], gain=0.01)
            self.init_weights(self.value_net.net[-1], gain=1.0)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden=self.hidden, layers=len(self.features_extractor.convs), net_arch=self._heads)
        data["features_extractor_kwargs"] = {k: v for k, v in data["features_extractor_kwargs"].items()
                                             if k not in ("hidden", "layers")}
        data.pop("features_extractor_class", None)
        return data
