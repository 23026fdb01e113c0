"""The VM graph actor-critic (:mod:`agents.vm.policy`) on ``clustergym/PodPacking-v0``: a small adapter.

``PodPacking-v0`` has the VM env's shape: a padded bipartite graph (pods on nodes as VMs on
hosts) and a phased ``Discrete`` action (pick a pod or stop, then act on it). But
:class:`~agents.vm.policy.VMGraphPolicy` cannot take it with only its feature sizes changed:

* its extractor reads the VM env's keys (``vm_features``, ``host_features``, ``vm_host``,
  ``vm_mask``, ``host_mask``, ``selected_vm``) and refuses any other space;
* its input widths are module constants, read at fixed feature positions (vCPU and memory per
  NUMA node, the split flag), not sizes taken from the space;
* each host is two NUMA nodes with a sibling link, where a pod's node is one graph node;
* its phase-1 logits sit at ``2 * host + placement`` in ``max(V, 2H) + 1`` actions, where the pod
  env's are node ``j`` at ``j``, eviction at ``max_nodes``, in ``max(P, N + 1) + 1`` actions.

So this module keeps what carries over unchanged: the message-passing round
(:class:`agents.vm.policy.GraphBlock`: ``TransformerConv`` pod -> node and node -> pod with the pod's
CPU and memory as edge features; its sibling step gets each node as its own sibling, as there are
no NUMA pairs), :data:`~agents.vm.policy.MASKED_LOGIT`, and all of :class:`VMGraphPolicy`'s
``MaskablePPO`` plumbing (logits sized from the observation, the env's ``action_mask`` applied in
the network, any padding). New here: the graph built from the pod observation, an extractor whose
input widths come from the observation space, and pointer heads with an eviction score.

Usage: ``MaskablePPO(PodGraphPolicy, env, policy_kwargs=dict(features_extractor_kwargs=dict(d_hidden=32)))``.
Importing it imports torch_geometric (about 4 s).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from agents.layers import mlp as _mlp
from agents.vm.policy import MASKED_LOGIT, VMGraphPolicy, GraphBlock, masked_mean
from envs.pod_packing import POD_FEATURES

__all__ = ["MASKED_LOGIT", "PodGraphEncoding", "PodGraphExtractor", "PodPointerHeads", "PodGraphPolicy"]

_OBS_KEYS = ("pod_features", "node_features", "pod_node", "pod_mask", "node_mask", "selected_pod", "globals")
_EDGE = [POD_FEATURES.index("cpu"), POD_FEATURES.index("memory")]
"""The pod's requests as the features of its edge to the node it runs on (the VM block's two)."""


class PodGraphEncoding(NamedTuple):
    """Embeddings of a batch of pod observations, real pods and nodes only.

    Shapes (``B`` samples, ``Np`` real pods and ``Nn`` real nodes over the batch, ``d`` hidden):
        pod: (Np, d); pod_batch, pod_slot: (Np,). node: (Nn, d); node_batch, node_slot: (Nn,).
        context: (B, d). selected: (B, d) the selected pod's embedding (zeros in phase 0).
        picking_node: (B,) phase 1. num_pod_slots, num_node_slots: the padding ``P`` and ``N``.
    """

    pod: th.Tensor
    pod_batch: th.Tensor
    pod_slot: th.Tensor
    node: th.Tensor
    node_batch: th.Tensor
    node_slot: th.Tensor
    context: th.Tensor
    selected: th.Tensor
    picking_node: th.Tensor
    num_pod_slots: int
    num_node_slots: int

    @property
    def num_actions(self) -> int:
        """The env's ``Discrete`` size for this padding: ``max(P, N + 1) + 1``."""
        return max(self.num_pod_slots, self.num_node_slots + 1) + 1


class PodGraphExtractor(BaseFeaturesExtractor):
    """Graph encoder of ``PodPacking-v0`` observations; ``forward`` gives the ``(B, d_hidden)`` context.

    The pod and node input widths are the observation space's; edges join each running pod to
    its node. Arguments as :class:`agents.vm.policy.VMGraphExtractor`'s.
    """

    def __init__(self, observation_space: spaces.Dict, d_hidden: int = 32, num_heads: int = 2, num_layers: int = 2,
                 d_ff: int = 64):
        missing = [k for k in _OBS_KEYS if k not in getattr(observation_space, "spaces", {})]
        if missing:
            raise ValueError(f"PodGraphExtractor needs a PodPacking-v0 Dict observation; missing keys {missing}")
        super().__init__(observation_space, features_dim=d_hidden)
        pod_inputs = observation_space["pod_features"].shape[-1]
        node_inputs = observation_space["node_features"].shape[-1]
        self.embed_pod = _mlp([pod_inputs, d_hidden, d_hidden])
        self.embed_node = _mlp([node_inputs, d_hidden, d_hidden])
        self.blocks = nn.ModuleList(GraphBlock(d_hidden, num_heads, d_ff) for _ in range(num_layers))
        self.context = _mlp([observation_space["globals"].shape[-1] + 2 * d_hidden, d_hidden, d_hidden])

    def encode(self, obs: dict[str, th.Tensor]) -> PodGraphEncoding:
        """Unpad the batch into one graph (batched index offsets, no Python loop), pass messages, pool.

        Args:
            obs: preprocessed (float) observation tensors with a batch axis, any padding.
        """
        pods, nodes = obs["pod_features"], obs["node_features"]
        batch, num_pods, num_nodes = pods.shape[0], pods.shape[1], nodes.shape[1]
        pod_flat = (obs["pod_mask"].reshape(batch, num_pods) > 0.5).reshape(-1)
        node_flat = (obs["node_mask"].reshape(batch, num_nodes) > 0.5).reshape(-1)
        pod_row, node_row = th.cumsum(pod_flat, 0) - 1, th.cumsum(node_flat, 0) - 1
        pod_slots, node_slots = pod_flat.nonzero(as_tuple=True)[0], node_flat.nonzero(as_tuple=True)[0]

        where = obs["pod_node"].reshape(batch, num_pods).round().long()             # -1: Pending or padding
        b, p = ((where >= 0) & pod_flat.reshape(batch, num_pods)).nonzero(as_tuple=True)
        edge_index = th.stack([pod_row[b * num_pods + p], node_row[b * num_nodes + where[b, p]]])
        edge_attr = pods[b, p][:, _EDGE]

        x_pod = self.embed_pod(pods.reshape(batch * num_pods, -1)[pod_flat])
        x_node = self.embed_node(nodes.reshape(batch * num_nodes, -1)[node_flat])
        itself = th.arange(x_node.shape[0], device=x_node.device)                    # no NUMA siblings
        for block in self.blocks:
            x_pod, x_node = block(x_pod, x_node, edge_index, edge_attr, itself)

        pod_batch = th.div(pod_slots, num_pods, rounding_mode="floor")
        node_batch = th.div(node_slots, num_nodes, rounding_mode="floor")
        context = self.context(th.cat([obs["globals"].reshape(batch, -1), masked_mean(x_pod, pod_batch, batch),
                                       masked_mean(x_node, node_batch, batch)], dim=-1))
        selected_pod = obs["selected_pod"].reshape(batch).round().long()
        slot = th.arange(batch, device=selected_pod.device) * num_pods + selected_pod.clamp(0, num_pods - 1)
        row = th.where(pod_flat[slot], pod_row[slot], th.full_like(slot, -1))
        picking = (selected_pod >= 0) & (row >= 0)
        padded = th.cat([x_pod, x_pod.new_zeros(1, x_pod.shape[-1])])               # the zero row: none selected
        selected = padded[th.where(picking, row, th.full_like(row, x_pod.shape[0]))]
        return PodGraphEncoding(pod=x_pod, pod_batch=pod_batch, pod_slot=pod_slots % num_pods, node=x_node,
                                node_batch=node_batch, node_slot=node_slots % num_nodes, context=context,
                                selected=selected, picking_node=picking, num_pod_slots=num_pods,
                                num_node_slots=num_nodes)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.encode(observations).context


class PodPointerHeads(nn.Module):
    """Logits over ``PodPacking-v0``'s phased action from the embeddings (pointer-style).

    Phase 0: one score per real pod at its index, a stop score at ``n - 1``. Phase 1: one score per
    real node ``j`` at ``j`` and an eviction score at ``N``, each conditioned on the selected pod.
    Everything else, and whatever ``action_mask`` forbids, is :data:`MASKED_LOGIT`.

    Shapes:
        encoding of ``B`` samples; action_mask: (B, n) or None -> (B, n), ``n = max(P, N + 1) + 1``.
    """

    def __init__(self, d_hidden: int, hidden: list[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.pod_score = _mlp([2 * d_hidden, *hidden, 1], activation)
        self.stop_score = _mlp([d_hidden, *hidden, 1], activation)
        self.node_score = _mlp([3 * d_hidden, *hidden, 1], activation)
        self.evict_score = _mlp([2 * d_hidden, *hidden, 1], activation)

    def output_layers(self) -> list[nn.Linear]:
        """The last layer of each scorer (initialised small, so the first policy is near uniform)."""
        return [self.pod_score[-1], self.stop_score[-1], self.node_score[-1], self.evict_score[-1]]

    def forward(self, encoding: PodGraphEncoding, action_mask: th.Tensor | None = None) -> th.Tensor:
        enc = encoding
        batch, n = enc.context.shape[0], enc.num_actions
        masked = enc.context.new_full((batch, n), MASKED_LOGIT)
        pick_pod = masked.index_put((enc.pod_batch, enc.pod_slot),
                                    self.pod_score(th.cat([enc.pod, enc.context[enc.pod_batch]], -1)).squeeze(-1))
        pick_pod = th.cat([pick_pod[:, :-1], self.stop_score(enc.context)], dim=1)
        node = self.node_score(th.cat([enc.node, enc.selected[enc.node_batch], enc.context[enc.node_batch]], -1))
        pick_node = masked.index_put((enc.node_batch, enc.node_slot), node.squeeze(-1))
        evict = self.evict_score(th.cat([enc.selected, enc.context], -1))
        pick_node = th.cat([pick_node[:, :enc.num_node_slots], evict, pick_node[:, enc.num_node_slots + 1:]], dim=1)
        logits = th.where(enc.picking_node[:, None], pick_node, pick_pod)
        if action_mask is not None:
            logits = th.where(action_mask.reshape(batch, n) > 0.5, logits, th.full_like(logits, MASKED_LOGIT))
        return logits


class PodGraphPolicy(VMGraphPolicy):
    """:class:`agents.vm.policy.VMGraphPolicy` with :class:`PodGraphExtractor` and :class:`PodPointerHeads`.

    Everything but the network is the VM policy's: the masked distribution sized from the
    logits, the env's ``obs["action_mask"]`` applied inside the network, observations of any
    padding (no layer depends on ``max_pods`` / ``max_nodes``).
    """

    heads_class = PodPointerHeads

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 features_extractor_class: type[BaseFeaturesExtractor] = PodGraphExtractor, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule,
                         features_extractor_class=features_extractor_class, **kwargs)
