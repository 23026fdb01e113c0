"""A graph actor-critic for ``clustergym/VMRescheduling-v0``: the same weights plan any cluster size.

The env's observation is padded arrays (:class:`envs.vm_rescheduling.VMReschedulingEnv`). The
network rebuilds the bipartite graph VM <-> NUMA node from ``vm_host`` and the padding masks, for the
whole batch at once with index offsets, keeps only the real nodes, and passes messages both ways
with :class:`torch_geometric.nn.TransformerConv` (VMR2L's "same host" attention: a VM only attends
to the NUMA nodes it sits on, a NUMA node to the VMs on it, and the two NUMA nodes of a host to each
other). Pointer heads turn node embeddings into logits over exactly the env's ``Discrete`` action:

* phase 0 (pick a VM): one score per VM at index ``v``, a stop score at ``n - 1``;
* phase 1 (pick a destination): one score per NUMA node ``(host, placement)`` at ``2 * host +
  placement``, conditioned on the selected VM's embedding (``obs["selected_vm"]``); a VM split over
  both nodes scores a host by the mean of its two nodes' scores, at placement 0.

Everything else is ``MASKED_LOGIT``. No layer's size depends on ``max_vms`` / ``max_hosts``, so a
model saved at one padding loads and runs at another (:func:`load_vm_model`), and
:meth:`VMGraphPolicy.obs_to_tensor` accepts observations of any padding.

Importing this module imports torch_geometric (about 4 s): keep it out of code paths that do not
need the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn
from torch_geometric.nn import TransformerConv

from agents.layers import mlp as _mlp
from envs.vm_rescheduling import GLOBAL_FEATURES, HOST_FEATURES, VM_FEATURES

__all__ = ["MASKED_LOGIT", "VMGraph", "build_graph", "GraphBlock", "masked_mean", "VMGraphEncoding", "VMGraphExtractor",
           "VMPointerHeads", "VMGraphPolicy", "IncrementalPolicy", "load_vm_model"]

MASKED_LOGIT = -1e8
"""sb3-contrib's own masking value. Finite on purpose: ``p * log p`` of a masked action is then
``0 * -1e8 = 0`` in the entropy, where ``-inf`` gives NaN (sb3-contrib #81, #221)."""

_VM = {name: i for i, name in enumerate(VM_FEATURES)}
_HOST = {name: i for i, name in enumerate(HOST_FEATURES)}
_VM_CPU = [_VM["cpu_node0"], _VM["cpu_node1"]]
_VM_MEM = [_VM["mem_node0"], _VM["mem_node1"]]
_VM_FLAGS = [_VM["spans_both_nodes"], _VM["allow_migration"], _VM["selected"]]
_NUMA_OWN = [[_HOST["free_cpu_node0"], _HOST["free_mem_node0"], _HOST["fragment_node0"]],
             [_HOST["free_cpu_node1"], _HOST["free_mem_node1"], _HOST["fragment_node1"]]]
assert _VM_CPU == [0, 1] and _VM_MEM == [2, 3] and _VM_FLAGS == [4, 5, 6] and _NUMA_OWN == [[0, 2, 4], [1, 3, 5]] \
    and _HOST["active"] == 6, "agents.vm.policy_kernels.graph_inputs reads the features at these positions"
_VM_INPUTS = 2 + len(_VM_FLAGS)  # total vCPU, total memory, flags
_NUMA_INPUTS = 2 * len(_NUMA_OWN[0]) + 1  # own node, sibling node, host active
_EDGE_INPUTS = 2  # the VM's vCPU and memory on that NUMA node
_OBS_KEYS = ("vm_features", "host_features", "vm_host", "vm_mask", "host_mask", "selected_vm", "globals")


class VMGraphEncoding(NamedTuple):
    """Node embeddings of a batch of snapshots, real nodes only, with where each came from.

    Shapes (``B`` samples, ``Nv`` real VMs and ``Nn`` real NUMA nodes over the batch, ``d`` hidden):
        vm: (Nv, d). vm_batch, vm_slot: (Nv,) sample and padded VM index of each row.
        numa: (Nn, d). numa_batch, numa_slot: (Nn,) sample and NUMA index ``2 * host + node``.
        numa_sibling: (Nn,) row of the other NUMA node of the same host.
        context: (B, d) global context (FR, budget left, phase, pooled nodes).
        selected: (B, d) the selected VM's embedding (zeros in phase 0).
        selected_split: (B,) the selected VM spans both NUMA nodes.
        picking_destination: (B,) phase 1.
        num_vm_slots, num_host_slots: the padding sizes ``V`` and ``H`` of this batch.
    """

    vm: th.Tensor
    vm_batch: th.Tensor
    vm_slot: th.Tensor
    numa: th.Tensor
    numa_batch: th.Tensor
    numa_slot: th.Tensor
    numa_sibling: th.Tensor
    context: th.Tensor
    selected: th.Tensor
    selected_split: th.Tensor
    picking_destination: th.Tensor
    num_vm_slots: int
    num_host_slots: int

    @property
    def num_actions(self) -> int:
        """The env's ``Discrete`` size for this padding: ``max(V, 2H) + 1``."""
        return max(self.num_vm_slots, 2 * self.num_host_slots) + 1


class VMGraph(NamedTuple):
    """The batched bipartite graph rebuilt from padded observations, real nodes only (see :func:`build_graph`)."""

    x_vm: th.Tensor  # (Nv, _VM_INPUTS)
    x_numa: th.Tensor  # (Nn, _NUMA_INPUTS)
    edge_index: th.Tensor  # (2, E) VM row -> NUMA row
    edge_attr: th.Tensor  # (E, _EDGE_INPUTS)
    vm_batch: th.Tensor
    vm_slot: th.Tensor
    vm_row: th.Tensor  # (B * V,) row of each padded VM slot, -1 for padding
    numa_batch: th.Tensor
    numa_slot: th.Tensor
    numa_row: th.Tensor  # (B * 2H,) row of each padded NUMA slot, -1 for padding
    numa_sibling: th.Tensor


def build_graph(obs: dict[str, th.Tensor]) -> VMGraph:
    """Unpad a batch of observations into one graph, with batched index offsets and no Python loops.

    Args:
        obs: preprocessed (float) observation tensors with a leading batch axis.

    Returns:
        The node inputs, edges and index maps; padded VMs and hosts are dropped, so nothing
        computed later depends on the padding sizes.
    """
    vm_features, host_features = obs["vm_features"], obs["host_features"]
    batch, num_vms = vm_features.shape[:2]
    num_numa = 2 * host_features.shape[1]

    vm_valid = obs["vm_mask"].reshape(batch, num_vms) > 0.5
    numa_valid = (obs["host_mask"].reshape(batch, -1) > 0.5).repeat_interleave(2, dim=1)
    vm_flat, numa_flat = vm_valid.reshape(-1), numa_valid.reshape(-1)
    # Row of each padded slot among the real nodes of the whole batch (the batched offsets).
    vm_row = th.cumsum(vm_flat, 0) - 1
    numa_row = th.cumsum(numa_flat, 0) - 1

    cpu, mem = vm_features[..., _VM_CPU], vm_features[..., _VM_MEM]  # (B, V, 2) per NUMA node of its host
    x_vm = th.cat([cpu.sum(-1, keepdim=True), mem.sum(-1, keepdim=True), vm_features[..., _VM_FLAGS]], dim=-1)
    own = th.stack([host_features[..., _NUMA_OWN[0]], host_features[..., _NUMA_OWN[1]]], dim=2)  # (B, H, 2, 3)
    active = host_features[..., _HOST["active"]][..., None, None].expand(-1, -1, 2, 1)
    # Own node, then sibling: a NUMA node sees the same inputs whichever of the two it is.
    x_numa = th.cat([own, own.flip(2), active], dim=-1).reshape(batch * num_numa, _NUMA_INPUTS)

    uses = (cpu > 0) | (mem > 0)
    uses[..., 0] |= ~uses.any(-1)  # a VM using nothing still belongs to its host
    uses &= vm_valid[..., None]
    b, v, k = uses.nonzero(as_tuple=True)
    host = obs["vm_host"].reshape(batch, num_vms).long().clamp(0, num_numa // 2 - 1)[b, v]
    edge_index = th.stack([vm_row[b * num_vms + v], numa_row[b * num_numa + 2 * host + k]])
    edge_attr = th.stack([cpu[b, v, k], mem[b, v, k]], dim=-1)

    vm_slots = vm_flat.nonzero(as_tuple=True)[0]
    numa_slots = numa_flat.nonzero(as_tuple=True)[0]
    return VMGraph(
        x_vm=x_vm.reshape(batch * num_vms, _VM_INPUTS)[vm_flat],
        x_numa=x_numa[numa_flat],
        edge_index=edge_index,
        edge_attr=edge_attr,
        vm_batch=th.div(vm_slots, num_vms, rounding_mode="floor"),
        vm_slot=vm_slots % num_vms,
        vm_row=th.where(vm_flat, vm_row, th.full_like(vm_row, -1)),
        numa_batch=th.div(numa_slots, num_numa, rounding_mode="floor"),
        numa_slot=numa_slots % num_numa,
        numa_row=th.where(numa_flat, numa_row, th.full_like(numa_row, -1)),
        numa_sibling=numa_row[numa_slots ^ 1],
    )


def masked_mean(x: th.Tensor, index: th.Tensor, size: int) -> th.Tensor:
    """Mean of the rows of ``x`` per sample ``index`` (zeros for a sample with none)."""
    total = x.new_zeros(size, x.shape[-1]).index_add_(0, index, x)
    count = x.new_zeros(size).index_add_(0, index, x.new_ones(index.shape[0]))
    return total / count.clamp(min=1.0)[:, None]


class GraphBlock(nn.Module):
    """One round of messages: VMs -> NUMA nodes, NUMA node <-> sibling, NUMA nodes -> VMs.

    Shapes:
        x_vm: (Nv, d), x_numa: (Nn, d), edge_index: (2, E) VM -> NUMA, edge_attr: (E, 2) -> same shapes.
    """

    def __init__(self, d_hidden: int, num_heads: int, d_ff: int):
        super().__init__()
        if d_hidden % num_heads:
            raise ValueError(f"GraphBlock: d_hidden ({d_hidden}) must be a multiple of num_heads ({num_heads})")
        per_head = d_hidden // num_heads
        self.to_numa = TransformerConv((d_hidden, d_hidden), per_head, heads=num_heads, edge_dim=_EDGE_INPUTS)
        self.to_vm = TransformerConv((d_hidden, d_hidden), per_head, heads=num_heads, edge_dim=_EDGE_INPUTS)
        self.sibling = nn.Linear(2 * d_hidden, d_hidden)
        self.ff_numa = _mlp([d_hidden, d_ff, d_hidden])
        self.ff_vm = _mlp([d_hidden, d_ff, d_hidden])
        self.norm_numa = nn.ModuleList(nn.LayerNorm(d_hidden) for _ in range(2))
        self.norm_vm = nn.ModuleList(nn.LayerNorm(d_hidden) for _ in range(2))

    def forward(self, x_vm, x_numa, edge_index, edge_attr, sibling):
        x_numa = x_numa + self.to_numa((x_vm, x_numa), edge_index, edge_attr)
        x_numa = self.norm_numa[0](x_numa + th.relu(self.sibling(th.cat([x_numa, x_numa[sibling]], dim=-1))))
        x_numa = self.norm_numa[1](x_numa + self.ff_numa(x_numa))
        x_vm = self.norm_vm[0](x_vm + self.to_vm((x_numa, x_vm), edge_index.flip(0), edge_attr))
        x_vm = self.norm_vm[1](x_vm + self.ff_vm(x_vm))
        return x_vm, x_numa


class VMGraphExtractor(BaseFeaturesExtractor):
    """Graph encoder of ``VMRescheduling-v0`` observations; ``forward`` gives the global context.

    :meth:`encode` returns the per-node embeddings the pointer heads need; ``forward`` (what SB3
    calls a features extractor) returns only the ``(B, d_hidden)`` context the critic reads.

    Args:
        observation_space: the env's ``Dict`` space (only its keys and feature widths are used).
        d_hidden: embedding width (VMR2L: 32-64).
        num_heads: attention heads per message-passing layer.
        num_layers: rounds of VM <-> NUMA messages.
        d_ff: width of the feed-forward layer in each round.

    Shapes:
        obs: the env's observation with a batch axis, any padding -> (B, d_hidden).
    """

    def __init__(self, observation_space: spaces.Dict, d_hidden: int = 32, num_heads: int = 2, num_layers: int = 2,
                 d_ff: int = 64):
        missing = [k for k in _OBS_KEYS if k not in getattr(observation_space, "spaces", {})]
        if missing:
            raise ValueError(f"VMGraphExtractor needs a VMRescheduling-v0 Dict observation; missing keys {missing}")
        if observation_space["vm_features"].shape[-1] != len(VM_FEATURES) or \
                observation_space["host_features"].shape[-1] != len(HOST_FEATURES):
            raise ValueError("VMGraphExtractor: feature widths differ from envs.vm_rescheduling's VM/HOST_FEATURES")
        super().__init__(observation_space, features_dim=d_hidden)
        self.embed_vm = _mlp([_VM_INPUTS, d_hidden, d_hidden])
        self.embed_numa = _mlp([_NUMA_INPUTS, d_hidden, d_hidden])
        self.blocks = nn.ModuleList(GraphBlock(d_hidden, num_heads, d_ff) for _ in range(num_layers))
        self.context = _mlp([len(GLOBAL_FEATURES) + 2 * d_hidden, d_hidden, d_hidden])

    def encode(self, obs: dict[str, th.Tensor]) -> VMGraphEncoding:
        """Embeddings of every real VM and NUMA node, the context and the selected VM.

        Args:
            obs: preprocessed observation tensors with a batch axis.
        """
        graph = build_graph(obs)
        return self.finish(obs, graph, *self.embed(graph))

    def embed(self, graph: VMGraph) -> tuple[th.Tensor, th.Tensor]:
        """Node embeddings after message passing.

        Messages only run along VM-NUMA edges and between the two NUMA nodes of a host, so each
        host with its VMs is a separate component: embedding a few hosts alone gives the same rows
        as embedding the whole cluster (:class:`IncrementalPolicy` relies on it).

        Shapes:
            graph.x_vm: (Nv, 5), graph.x_numa: (Nn, 7) -> (Nv, d), (Nn, d).
        """
        x_vm, x_numa = self.embed_vm(graph.x_vm), self.embed_numa(graph.x_numa)
        for block in self.blocks:
            x_vm, x_numa = block(x_vm, x_numa, graph.edge_index, graph.edge_attr, graph.numa_sibling)
        return x_vm, x_numa

    def finish(self, obs: dict[str, th.Tensor], graph: VMGraph, x_vm: th.Tensor, x_numa: th.Tensor) -> VMGraphEncoding:
        """The encoding from node embeddings: global context, selected VM, index maps."""
        batch = obs["vm_features"].shape[0]
        context = self.context(th.cat([
            obs["globals"].reshape(batch, -1),
            masked_mean(x_vm, graph.vm_batch, batch),
            masked_mean(x_numa, graph.numa_batch, batch),
        ], dim=-1))

        num_vms = obs["vm_features"].shape[1]
        selected_vm = obs["selected_vm"].reshape(batch).long()
        picking = selected_vm >= 0
        slot = th.arange(batch, device=selected_vm.device) * num_vms + selected_vm.clamp(0, num_vms - 1)
        row = graph.vm_row[slot]
        picking = picking & (row >= 0)
        # A zero row after the real VMs stands in for "no VM selected".
        padded = th.cat([x_vm, x_vm.new_zeros(1, x_vm.shape[-1])])
        selected = padded[th.where(picking, row, th.full_like(row, x_vm.shape[0]))]
        split = obs["vm_features"][:, :, _VM["spans_both_nodes"]].reshape(-1)[slot] > 0.5
        return VMGraphEncoding(
            vm=x_vm, vm_batch=graph.vm_batch, vm_slot=graph.vm_slot,
            numa=x_numa, numa_batch=graph.numa_batch, numa_slot=graph.numa_slot, numa_sibling=graph.numa_sibling,
            context=context, selected=selected, selected_split=split & picking, picking_destination=picking,
            num_vm_slots=num_vms, num_host_slots=obs["host_features"].shape[1],
        )

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.encode(observations).context


class VMPointerHeads(nn.Module):
    """Logits over the env's phased ``Discrete`` action from node embeddings (pointer-style).

    Args:
        d_hidden: the encoder's embedding width.
        hidden: hidden widths of each scoring MLP.
        activation: activation between hidden layers.

    Shapes:
        encoding: a :class:`VMGraphEncoding` of ``B`` samples; action_mask: (B, n) bool or None
        -> (B, n) with ``n = max(V, 2H) + 1``; invalid-phase, padding and masked entries are
        :data:`MASKED_LOGIT`.
    """

    def __init__(self, d_hidden: int, hidden: list[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.vm_score = _mlp([2 * d_hidden, *hidden, 1], activation)
        self.stop_score = _mlp([d_hidden, *hidden, 1], activation)
        self.destination_score = _mlp([3 * d_hidden, *hidden, 1], activation)

    def output_layers(self) -> list[nn.Linear]:
        """The last layer of each scorer (initialised small, so the first policy is near uniform)."""
        return [self.vm_score[-1], self.stop_score[-1], self.destination_score[-1]]

    def forward(self, encoding: VMGraphEncoding, action_mask: th.Tensor | None = None) -> th.Tensor:
        enc = encoding
        batch, n = enc.context.shape[0], enc.num_actions
        masked = enc.context.new_full((batch, n), MASKED_LOGIT)
        # A batch all in one phase (every planning step) skips the other head.
        any_vm, any_destination = not bool(enc.picking_destination.all()), bool(enc.picking_destination.any())
        pick_vm = pick_destination = masked
        if any_vm:
            vm = self.vm_score(th.cat([enc.vm, enc.context[enc.vm_batch]], dim=-1)).squeeze(-1)
            pick_vm = masked.index_put((enc.vm_batch, enc.vm_slot), vm)
            pick_vm = th.cat([pick_vm[:, :-1], self.stop_score(enc.context)], dim=1)
        if any_destination:
            node = self.destination_score(th.cat(
                [enc.numa, enc.selected[enc.numa_batch], enc.context[enc.numa_batch]], dim=-1)).squeeze(-1)
            # A split VM takes a whole host: score it by both of the host's nodes (placement 0 holds it).
            node = th.where(enc.selected_split[enc.numa_batch], 0.5 * (node + node[enc.numa_sibling]), node)
            pick_destination = masked.index_put((enc.numa_batch, enc.numa_slot), node)

        logits = th.where(enc.picking_destination[:, None], pick_destination, pick_vm)
        if action_mask is not None:
            logits = th.where(action_mask.reshape(batch, n) > 0.5, logits, th.full_like(logits, MASKED_LOGIT))
        return logits


class VMGraphPolicy(MaskableActorCriticPolicy):
    """``MaskablePPO`` actor-critic with :class:`VMGraphExtractor` and :class:`VMPointerHeads`.

    Usage: ``MaskablePPO(VMGraphPolicy, env, policy_kwargs=dict(features_extractor_kwargs=dict(d_hidden=32)))``.
    SB3's fixed-size ``action_net`` is replaced by the pointer heads (``action_net``) and the critic
    reads the graph context (``value_net``), so no parameter depends on the padding. The env's own
    ``obs["action_mask"]`` is applied inside the network as well as the masks MaskablePPO passes,
    so a masked action is never chosen even by a caller that forgets the masks.

    Args:
        observation_space, action_space, lr_schedule: as for :class:`MaskableActorCriticPolicy`.
        net_arch: hidden widths of the heads: a list (both) or ``dict(pi=[...], vf=[...])``;
            default ``dict(pi=[64], vf=[64])``.
        activation_fn: activation of the heads.
        features_extractor_class: the graph encoder (default :class:`VMGraphExtractor`).
        kwargs: the rest of :class:`MaskableActorCriticPolicy`'s arguments.
    """

    any_padding = True
    """Runs on observations of any padding (a planner may size the env to each snapshot)."""

    heads_class: type[nn.Module] = VMPointerHeads
    """The pointer heads (``action_net``), built as ``heads_class(features_dim, pi_widths, activation_fn)``."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 net_arch: list[int] | dict[str, list[int]] | None = None, activation_fn: type[nn.Module] = nn.ReLU,
                 features_extractor_class: type[BaseFeaturesExtractor] = VMGraphExtractor, **kwargs: Any):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"VMGraphPolicy needs the env's Discrete action, got {action_space}")
        super().__init__(observation_space, action_space, lr_schedule, net_arch=net_arch or dict(pi=[64], vf=[64]),
                         activation_fn=activation_fn, features_extractor_class=features_extractor_class, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else dict(pi=self.net_arch, vf=self.net_arch)
        d = self.features_dim
        self.action_net = self.heads_class(d, list(arch.get("pi", [])), self.activation_fn)
        self.value_net = _mlp([d, *arch.get("vf", []), 1], self.activation_fn)
        if self.ortho_init:
            # SB3's gains: sqrt(2) inside, 0.01 on the logits, 1 on the value.
            for module in (self.action_net, self.value_net):
                module.apply(lambda m: self.init_weights(m, gain=np.sqrt(2)))
            for layer in self.action_net.output_layers():
                self.init_weights(layer, gain=0.01)
            self.init_weights(self.value_net[-1], gain=1.0)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    # ------------------------------------------------------------------ the network
    def _preprocess(self, obs: PyTorchObs) -> dict[str, th.Tensor]:
        return preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)

    def _values(self, obs: dict[str, th.Tensor], encoding: VMGraphEncoding) -> th.Tensor:
        context = encoding.context if self.share_features_extractor else self.vf_features_extractor(obs)
        return self.value_net(context)

    def action_logits(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Logits and values of a batch of observations (any padding).

        Shapes:
            obs: the env's observation tensors with a batch axis -> ((B, n), (B, 1)).
        """
        obs = self._preprocess(obs)
        encoding = self.pi_features_extractor.encode(obs)
        return self.action_net(encoding, obs.get("action_mask")), self._values(obs, encoding)

    @staticmethod
    def _distribution(logits: th.Tensor, action_masks: Any = None) -> MaskableCategoricalDistribution:
        # Sized from the logits, not the space the policy was built with: the padding may differ.
        distribution = MaskableCategoricalDistribution(logits.shape[-1]).proba_distribution(logits)
        if action_masks is not None:
            distribution.apply_masking(action_masks)
        return distribution

    def forward(self, obs: PyTorchObs, deterministic: bool = False, action_masks: np.ndarray | None = None):
        logits, values = self.action_logits(obs)
        distribution = self._distribution(logits, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor, action_masks: th.Tensor | None = None):
        logits, values = self.action_logits(obs)
        distribution = self._distribution(logits, action_masks)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs, action_masks: np.ndarray | None = None):
        obs = self._preprocess(obs)
        logits = self.action_net(self.pi_features_extractor.encode(obs), obs.get("action_mask"))
        return self._distribution(logits, action_masks)

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        obs = self._preprocess(obs)
        if self.share_features_extractor:
            return self.value_net(self.features_extractor(obs))
        return self.value_net(self.vf_features_extractor(obs))

    def obs_to_tensor(self, observation: dict[str, np.ndarray]) -> tuple[PyTorchObs, bool]:
        """SB3's conversion without its shape check against the space: any padding is accepted.

        Only the keys and the feature widths must match the space; an observation with one more
        axis than the space is a batch.
        """
        if not isinstance(observation, dict):
            raise ValueError(f"VMGraphPolicy expects the env's Dict observation, got {type(observation).__name__}")
        out, vectorized = {}, False
        for key, space in self.observation_space.spaces.items():
            if key not in observation:
                raise ValueError(f"observation lacks key {key!r}")
            value = np.asarray(observation[key])
            batched = value.ndim == len(space.shape) + 1
            if not batched and value.ndim != len(space.shape):
                raise ValueError(f"observation[{key!r}] has shape {value.shape}; the space's is {space.shape}")
            fixed_width = len(space.shape) == 2 or key in ("globals", "selected_vm")
            if fixed_width and value.shape[-1] != space.shape[-1]:
                raise ValueError(
                    f"observation[{key!r}] has shape {value.shape}; its last axis must be {space.shape[-1]}")
            vectorized = vectorized or batched
            out[key] = value if batched else value[None]
        return obs_as_tensor(out, self.device), vectorized


class IncrementalPolicy:
    """Deterministic inference on one env in numpy, re-encoding only the hosts a step changed.

    The same function as :meth:`VMGraphPolicy.action_logits` (float32; within 1e-5 of it, tested),
    computed for planning speed. Exact, not an approximation: messages never leave a host
    (:meth:`VMGraphExtractor.embed`), so the embeddings of hosts whose rows did not change stay
    valid. Each call diffs the observation with the previous one (no env internals are read),
    re-embeds the changed hosts with their VMs (two after a migration, one after a VM selection),
    then recomputes the context and the pointer heads. The heads' first layers are split by
    input: the node part of each VM's and NUMA node's first-layer activation is cached with its
    embedding, so a call adds the context's part to a cached matrix instead of running the MLP
    over every node. A change of padding or of the masks starts over with a full encode.

    Numpy rather than torch because a decision touches one or two hosts: at that size each
    torch / PyG module call costs more in dispatch than the arithmetic (about 4 ms per decision
    at 279 hosts in torch, profiled, against a few tenths of a ms here).

    Args:
        policy: the :class:`VMGraphPolicy` whose weights are used, copied at construction (build
            a new one after training the policy further).

    Example::

        fast = IncrementalPolicy(model.policy)
        obs, _ = env.reset(options={"snapshot": snapshot})
        while not done:
            obs, _, done, _, _ = env.step(fast.act(obs, env.action_masks()))
    """

    _DIFFED = ("vm_features", "host_features", "vm_host", "vm_mask", "host_mask")

    def __init__(self, policy: VMGraphPolicy):
        extractor: VMGraphExtractor = policy.pi_features_extractor
        self.embed_vm = _numpy_mlp(extractor.embed_vm)
        self.embed_numa = _numpy_mlp(extractor.embed_numa)
        self.blocks = [_KernelBlock(block) for block in extractor.blocks]
        self.context = _numpy_mlp(extractor.context)
        heads: VMPointerHeads = policy.action_net
        self.vm_score = _numpy_mlp(heads.vm_score)
        self.stop_score = _numpy_mlp(heads.stop_score)
        self.destination_score = _numpy_mlp(heads.destination_score)
        self.d = extractor.features_dim
        self._warm_up()
        self.reset()

    def _warm_up(self) -> None:
        """Load (or compile, once per machine) the kernels now, so that no plan's time includes it."""
        vm_features = np.zeros((2, len(VM_FEATURES)), np.float32)
        vm_features[:, _VM_CPU[0]] = 0.1
        self._encode_all({"vm_features": vm_features, "host_features": np.ones((2, len(HOST_FEATURES)), np.float32),
                          "vm_host": np.array([0, 1]), "vm_mask": np.ones(2, np.int8), "host_mask": np.ones(2, np.int8)})
        self._heads({"globals": np.zeros(len(GLOBAL_FEATURES), np.float32), "selected_vm": np.array([-1]),
                     "vm_features": vm_features})
        self._heads({"globals": np.zeros(len(GLOBAL_FEATURES), np.float32), "selected_vm": np.array([0]),
                     "vm_features": vm_features})

    def reset(self) -> None:
        """Forget the cached embeddings (the next call encodes everything)."""
        self._previous: dict[str, np.ndarray] | None = None

    def logits(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's logits for one (unbatched) observation, as :meth:`VMGraphPolicy.action_logits` gives them.

        Shapes:
            obs: the env's observation without a batch axis -> (n,) float32.
        """
        previous = self._previous
        if previous is None or any(previous[k].shape != np.shape(obs[k]) for k in self._DIFFED) or \
                not np.array_equal(previous["vm_mask"], obs["vm_mask"]) or \
                not np.array_equal(previous["host_mask"], obs["host_mask"]):
            self._encode_all(obs)
        else:
            self._update(previous, obs)
        self._previous = {k: np.array(obs[k], copy=True) for k in self._DIFFED}
        return self._heads(obs)

    def act(self, obs: dict[str, np.ndarray], action_mask: np.ndarray | None = None) -> int:
        """The deterministic action: the highest valid logit (what ``predict(deterministic=True)`` picks)."""
        logits = self.logits(obs)
        if action_mask is not None:
            logits = np.where(action_mask, logits, -np.inf)
        return int(np.argmax(logits))

    # ------------------------------------------------------------------ encoding
    def _embed(self, vm_features, host_features, vm_host, vm_valid):
        """Embeddings of the given VMs and hosts' NUMA nodes (rows in the order given; invalid rows are garbage)."""
        from agents.vm.policy_kernels import graph_inputs

        x_vm, x_numa, src, dst, edge_attr = graph_inputs(
            np.ascontiguousarray(vm_features, np.float32), np.ascontiguousarray(host_features, np.float32),
            np.ascontiguousarray(vm_host, np.int64), np.ascontiguousarray(vm_valid, np.bool_))
        x_vm, x_numa = self.embed_vm(x_vm), self.embed_numa(x_numa)
        for block in self.blocks:
            x_vm, x_numa = block(x_vm, x_numa, src, dst, edge_attr)
        return x_vm, x_numa

    def _encode_all(self, obs: dict[str, np.ndarray]) -> None:
        self._vm_valid = np.asarray(obs["vm_mask"]) > 0
        self._numa_valid = np.repeat(np.asarray(obs["host_mask"]) > 0, 2)
        # Means over the real nodes as one product each (padding rows hold garbage, weighted 0).
        self._vm_weight = (self._vm_valid / max(int(self._vm_valid.sum()), 1)).astype(np.float32)
        self._numa_weight = (self._numa_valid / max(int(self._numa_valid.sum()), 1)).astype(np.float32)
        self._x_vm, self._x_numa = self._embed(np.asarray(obs["vm_features"], np.float32),
                                               np.asarray(obs["host_features"], np.float32),
                                               np.asarray(obs["vm_host"]), self._vm_valid)
        self._vm_first = self.vm_score.node_part(self._x_vm, self.d)
        self._numa_first = self.destination_score.node_part(self._x_numa, self.d)

    def _update(self, previous: dict[str, np.ndarray], obs: dict[str, np.ndarray]) -> None:
        real = self._vm_valid
        vm_host, old_host = np.asarray(obs["vm_host"]), previous["vm_host"]
        vm_changed = real & ((np.asarray(obs["vm_features"]) != previous["vm_features"]).any(axis=1)
                             | (vm_host != old_host))
        dirty = (np.asarray(obs["host_features"]) != previous["host_features"]).any(axis=1)
        dirty[vm_host[vm_changed]] = True
        dirty[old_host[vm_changed]] = True
        if not dirty.any():
            return
        hosts = np.flatnonzero(dirty)
        vms = np.flatnonzero(real & dirty[vm_host])
        local = np.full(dirty.shape[0], -1, dtype=np.int64)
        local[hosts] = np.arange(hosts.size)
        x_vm, x_numa = self._embed(np.asarray(obs["vm_features"], np.float32)[vms],
                                   np.asarray(obs["host_features"], np.float32)[hosts], local[vm_host[vms]],
                                   np.ones(vms.size, bool))
        rows = (2 * hosts[:, None] + np.arange(2)).reshape(-1)
        self._x_vm[vms], self._x_numa[rows] = x_vm, x_numa
        self._vm_first[vms] = self.vm_score.node_part(x_vm, self.d)
        self._numa_first[rows] = self.destination_score.node_part(x_numa, self.d)

    # ------------------------------------------------------------------ heads
    def _heads(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        d, vm_valid, numa_valid = self.d, self._vm_valid, self._numa_valid
        num_vms, num_numa = vm_valid.shape[0], numa_valid.shape[0]
        n = max(num_vms, num_numa) + 1
        mean_vm = self._vm_weight @ self._x_vm
        mean_numa = self._numa_weight @ self._x_numa
        context = self.context(np.concatenate([np.asarray(obs["globals"], np.float32), mean_vm, mean_numa])[None])[0]
        logits = np.full(n, MASKED_LOGIT, np.float32)
        selected = int(np.asarray(obs["selected_vm"]).reshape(-1)[0])
        if 0 <= selected < num_vms and vm_valid[selected]:
            w = self.destination_score.weights[0]
            shift = w[:, d: 2 * d] @ self._x_vm[selected] + w[:, 2 * d:] @ context + self.destination_score.biases[0]
            node = self.destination_score.scores(self._numa_first, shift)
            if obs["vm_features"][selected, _VM["spans_both_nodes"]] > 0.5:
                # A split VM takes a whole host: score it by both of the host's nodes (placement 0 holds it).
                node = 0.5 * (node + node.reshape(-1, 2)[:, ::-1].reshape(-1))
            logits[:num_numa] = np.where(numa_valid, node, MASKED_LOGIT)
        else:
            w = self.vm_score.weights[0]
            vm = self.vm_score.scores(self._vm_first, w[:, d:] @ context + self.vm_score.biases[0])
            logits[:num_vms] = np.where(vm_valid, vm, MASKED_LOGIT)
            logits[n - 1] = self.stop_score(context[None])[0, 0]
        mask = obs.get("action_mask")
        if mask is not None:
            logits = np.where(np.asarray(mask) > 0, logits, np.float32(MASKED_LOGIT))
        return logits


class _NumpyMLP:
    """A :func:`agents.layers.mlp` (Linear, ReLU, ..., Linear) in float32: compiled with one hidden layer."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]):
        self.weights, self.biases = weights, biases
        self.transposed = [np.ascontiguousarray(w.T) for w in weights]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(self.weights) == 2:
            from agents.vm.policy_kernels import mlp2

            return mlp2(np.ascontiguousarray(x, np.float32), self.transposed[0], self.biases[0], self.transposed[1],
                        self.biases[1])
        return self.rest(x @ self.transposed[0] + self.biases[0])

    def rest(self, first: np.ndarray) -> np.ndarray:
        """The layers after the first, from the first layer's output (before its activation)."""
        x = first
        for w, b in zip(self.transposed[1:], self.biases[1:]):
            x = np.maximum(x, 0.0) @ w + b
        return x

    def node_part(self, x: np.ndarray, d: int) -> np.ndarray:
        """The first layer's activation from the first ``d`` inputs alone (the node's embedding), per row."""
        from agents.vm.policy_kernels import linear

        part = self.transposed[0][:d]
        return linear(np.ascontiguousarray(x, np.float32), part, np.zeros(part.shape[1], np.float32), False)

    def scores(self, first: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """One output per row of ``first + shift`` (the first layer's cached node part and shared part)."""
        if len(self.weights) == 2 and self.weights[1].shape[0] == 1:
            from agents.vm.policy_kernels import score

            return score(first, np.ascontiguousarray(shift, np.float32), self.transposed[1], self.biases[1])
        return self.rest(first + shift)[:, 0]


def _numpy_mlp(module: nn.Sequential) -> _NumpyMLP:
    linears = [m for m in module if isinstance(m, nn.Linear)]
    if any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in module):
        raise ValueError(f"IncrementalPolicy supports ReLU MLPs only, got {module}")
    return _NumpyMLP([_array(m.weight) for m in linears], [_array(m.bias) for m in linears])


def _array(t: th.Tensor | None) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32).copy()


class _KernelBlock:
    """:class:`GraphBlock` through :func:`agents.vm.policy_kernels.block`, its weights transposed once."""

    def __init__(self, block: GraphBlock):
        weights: list[np.ndarray] = []
        for conv in (block.to_numa, block.to_vm):
            if conv.lin_beta is not None or not conv.concat or conv.lin_edge is None:
                raise ValueError("IncrementalPolicy supports TransformerConv(concat=True, beta=False, edge_dim=...)")
            for lin in (conv.lin_query, conv.lin_key, conv.lin_value):
                weights += [_transposed(lin.weight), _array(lin.bias)]
            weights += [_transposed(conv.lin_edge.weight), _transposed(conv.lin_skip.weight), _array(conv.lin_skip.bias)]
        weights += [_transposed(block.sibling.weight), _array(block.sibling.bias)]
        for ff in (block.ff_numa, block.ff_vm):
            first, second = [m for m in ff if isinstance(m, nn.Linear)]
            weights += [_transposed(first.weight), _array(first.bias), _transposed(second.weight), _array(second.bias)]
        for norm in (*block.norm_numa, *block.norm_vm):
            weights += [_array(norm.weight), _array(norm.bias)]
        self.weights = tuple(weights)
        self.heads = int(block.to_numa.heads)
        self.eps = np.float32(block.norm_numa[0].eps)

    def __call__(self, x_vm, x_numa, src, dst, edge_attr):
        from agents.vm.policy_kernels import block

        return block(x_vm, x_numa, src, dst, edge_attr, self.heads, *self.weights, self.eps)


def _transposed(t: th.Tensor) -> np.ndarray:
    return np.ascontiguousarray(_array(t).T)


def load_vm_model(path: str | Path, env: Any = None, observation_space: spaces.Dict | None = None,
                  action_space: spaces.Discrete | None = None, **kwargs: Any):
    """``MaskablePPO.load`` with the spaces of the env it will run on, whatever padding it was saved at.

    Args:
        path: the ``.zip`` written by ``MaskablePPO.save``.
        env: the env (or VecEnv) to run on; its spaces are used unless given explicitly.
        observation_space, action_space: spaces to build the policy with.
        kwargs: passed to ``MaskablePPO.load`` (e.g. ``device="cpu"``).

    Returns:
        The loaded ``MaskablePPO``.
    """
    from sb3_contrib import MaskablePPO

    observation_space = observation_space or (env.observation_space if env is not None else None)
    action_space = action_space or (env.action_space if env is not None else None)
    custom = dict(kwargs.pop("custom_objects", None) or {})
    if observation_space is not None:
        custom["observation_space"] = observation_space
    if action_space is not None:
        custom["action_space"] = action_space
    return MaskablePPO.load(path, env=env, custom_objects=custom, **kwargs)
