"""Export a VM-rescheduling graph policy to ONNX: any number of VMs and hosts, one file.

    python train.py export models/vm_rescheduling/graph_bc -o vm_policy.onnx

writes ``vm_policy.onnx`` and ``vm_policy.json`` (format ``clustergym-policy/1``, problem
``vm_rescheduling``). The graph's inputs are the env's observation keys
(:class:`envs.vm_rescheduling.VMReschedulingEnv`, with a batch axis), padded to any ``V`` VMs and
``H`` hosts; ``action_mask`` has ``n = max(V, 2H) + 1`` entries:

=================  ================  =======  ==============================================
input              shape             dtype    meaning
=================  ================  =======  ==============================================
``vm_features``    (B, V, 7)         float32  ``VM_FEATURES``
``host_features``  (B, H, 7)         float32  ``HOST_FEATURES``
``vm_host``        (B, V)            int64    host of each VM
``vm_mask``        (B, V)            int8     1 for real VMs
``host_mask``      (B, H)            int8     1 for real hosts
``selected_vm``    (B, 1)            int64    the VM picked in phase 0, -1 in phase 0
``globals``        (B, 5)            float32  ``GLOBAL_FEATURES``
``action_mask``    (B, n)            int8     valid actions now
=================  ================  =======  ==============================================

Outputs: ``action`` (B,) int64, the deterministic action (argmax of the masked logits, what
``predict(deterministic=True)`` picks), and ``logits`` (B, n) float32, ``-1e8`` where masked.

**Why a dense rewrite.** :func:`agents.vm.policy.build_graph` drops padded VMs and unused NUMA
edges with ``nonzero`` (data-dependent shapes) and the pointer heads branch on the phase in
Python; neither exports to a graph with dynamic axes. :class:`VMActor` computes the same function
with static shapes: every VM has its two possible edges (one per NUMA node of its host), and an
edge that does not exist joins a dummy VM to a dummy NUMA node appended after the real ones.
Attention in :class:`~torch_geometric.nn.TransformerConv` normalises over each target's incoming
edges, so the real nodes receive exactly the messages of the unpadded graph and the dummies'
rows are dropped. Both heads are always computed and the phase selects one. The weights are the
trained policy's own modules (the encoder's MLPs and message-passing blocks, the pointer heads),
not copies; ``tests/training/test_export_vm.py`` checks actions and logits against the in-gym
policy on held-out snapshots.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.model_files import MODEL_FILES, resolve_model_path
from training.export import FORMAT, MASKED_LOGIT, OPSET, _io_spec, provenance

INPUTS = ("vm_features", "host_features", "vm_host", "vm_mask", "host_mask", "selected_vm", "globals", "action_mask")
VM_ENV_ID = "clustergym/VMRescheduling-v0"


class VMActor(nn.Module):
    """:class:`agents.vm.policy.VMGraphPolicy`'s deterministic actor with static shapes (module docstring).

    Shapes: the env's observation keys with a batch axis (any ``V``, ``H``) ->
    ``(action (B,) int64, logits (B, n) float32)``.
    """

    def __init__(self, policy):
        super().__init__()
        from agents.vm import policy as vm_policy

        if not isinstance(policy, vm_policy.VMGraphPolicy):
            raise ValueError(f"the ONNX export takes the VM graph policy (VMGraphPolicy), got {type(policy).__name__}; "
                             "a fixed-padding MultiInputPolicy has no size-agnostic graph to export")
        self.extractor = policy.pi_features_extractor
        self.heads = policy.action_net
        self.vm_cpu, self.vm_mem, self.vm_flags = vm_policy._VM_CPU, vm_policy._VM_MEM, vm_policy._VM_FLAGS
        self.numa_own = vm_policy._NUMA_OWN
        self.active = vm_policy._HOST["active"]
        self.split = vm_policy._VM["spans_both_nodes"]

    def forward(self, vm_features, host_features, vm_host, vm_mask, host_mask, selected_vm, globals, action_mask):
        b, v, _ = vm_features.shape
        h = host_features.shape[1]
        n_numa = 2 * h
        vm_valid = vm_mask > 0  # (B, V)
        numa_valid = (host_mask > 0).repeat_interleave(2, dim=1)  # (B, 2H)

        cpu, mem = vm_features[..., self.vm_cpu], vm_features[..., self.vm_mem]  # (B, V, 2)
        x_vm = torch.cat([cpu.sum(-1, keepdim=True), mem.sum(-1, keepdim=True), vm_features[..., self.vm_flags]], -1)
        own = torch.stack([host_features[..., self.numa_own[0]], host_features[..., self.numa_own[1]]], dim=2)
        active = host_features[..., self.active][..., None, None].expand(-1, -1, 2, 1)
        x_numa = torch.cat([own, own.flip(2), active], dim=-1).reshape(b * n_numa, -1)
        x_vm = x_vm.reshape(b * v, -1)
        # One dummy VM and one dummy NUMA node after the real ones: the end points of absent edges.
        x_vm = torch.cat([x_vm, x_vm.new_zeros(1, x_vm.shape[1])])
        x_numa = torch.cat([x_numa, x_numa.new_zeros(1, x_numa.shape[1])])

        uses = (cpu > 0) | (mem > 0)
        node0 = uses[..., 0] | ~uses.any(-1)  # a VM using nothing still belongs to its host
        uses = torch.stack([node0, uses[..., 1]], dim=-1) & vm_valid[..., None]  # (B, V, 2)
        host = vm_host.long().clamp(0, h - 1)
        batch = torch.arange(b)[:, None, None]
        src = (batch * v + torch.arange(v)[None, :, None]).expand(b, v, 2)
        dst = batch * n_numa + 2 * host[..., None] + torch.arange(2)[None, None, :]
        src = torch.where(uses, src, torch.full_like(src, b * v)).reshape(-1)
        dst = torch.where(uses, dst, torch.full_like(dst, b * n_numa)).reshape(-1)
        edge_index = torch.stack([src, dst])
        edge_attr = torch.stack([cpu, mem], dim=-1).reshape(-1, 2)
        rows = torch.arange(b * n_numa)
        sibling = torch.cat([rows ^ 1, torch.full((1,), b * n_numa, dtype=rows.dtype)])

        x_vm, x_numa = self.extractor.embed_vm(x_vm), self.extractor.embed_numa(x_numa)
        for block in self.extractor.blocks:
            x_vm, x_numa = block(x_vm, x_numa, edge_index, edge_attr, sibling)
        d = x_vm.shape[-1]
        x_vm = x_vm[: b * v].reshape(b, v, d)
        x_numa = x_numa[: b * n_numa].reshape(b, n_numa, d)

        def mean(x, valid):
            count = valid.sum(1, keepdim=True).to(x.dtype).clamp(min=1.0)
            return (x * valid[..., None].to(x.dtype)).sum(1) / count

        context = self.extractor.context(torch.cat([globals, mean(x_vm, vm_valid), mean(x_numa, numa_valid)], -1))

        selected = selected_vm.reshape(b).long()
        slot = selected.clamp(0, v - 1)
        picking = (selected >= 0) & torch.gather(vm_valid, 1, slot[:, None])[:, 0]
        chosen = torch.gather(x_vm, 1, slot[:, None, None].expand(b, 1, d))[:, 0] * picking[:, None].to(x_vm.dtype)
        split = (torch.gather(vm_features[..., self.split], 1, slot[:, None])[:, 0] > 0.5) & picking

        n = action_mask.shape[1]
        masked = torch.full((b, n), MASKED_LOGIT, dtype=x_vm.dtype)
        vm_score = self.heads.vm_score(torch.cat([x_vm, context[:, None].expand(b, v, d)], -1)).squeeze(-1)
        vm_score = torch.where(vm_valid, vm_score, torch.full_like(vm_score, MASKED_LOGIT))
        pick_vm = masked.scatter(1, torch.arange(v)[None].expand(b, v), vm_score)
        stop = self.heads.stop_score(context)  # (B, 1)
        pick_vm = pick_vm.scatter(1, torch.full((b, 1), n - 1, dtype=torch.long), stop)

        node = self.heads.destination_score(torch.cat(
            [x_numa, chosen[:, None].expand(b, n_numa, d), context[:, None].expand(b, n_numa, d)], -1)).squeeze(-1)
        # A split VM takes a whole host: score it by both of the host's nodes (placement 0 holds it).
        node_sibling = node.reshape(b, h, 2).flip(-1).reshape(b, n_numa)
        node = torch.where(split[:, None], 0.5 * (node + node_sibling), node)
        node = torch.where(numa_valid, node, torch.full_like(node, MASKED_LOGIT))
        pick_destination = masked.scatter(1, torch.arange(n_numa)[None].expand(b, n_numa), node)

        logits = torch.where(picking[:, None], pick_destination, pick_vm)
        logits = torch.where(action_mask > 0, logits, torch.full_like(logits, MASKED_LOGIT))
        return logits.argmax(-1), logits


def load_vm_actor(model_path: str | Path) -> tuple[VMActor, Any, dict[str, Any], Path]:
    """``(actor, MaskablePPO model, metadata, model file)`` of a saved VM graph policy."""
    from sb3_contrib import MaskablePPO

    path = resolve_model_path(model_path, MODEL_FILES)
    meta_file = path.parent / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if meta.get("env_id") != VM_ENV_ID:
        raise ValueError(f"{path}: not a VM-rescheduling model of train.py (metadata env_id {meta.get('env_id')!r})")
    try:
        model = MaskablePPO.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 -- a zip that is not a model fails in many ways
        raise ValueError(f"{path}: not a saved MaskablePPO model ({exc.__class__.__name__}: {exc})") from None
    model.policy.set_training_mode(False)
    return VMActor(model.policy).eval(), model, meta, path


def example_inputs(num_vms: int = 6, num_hosts: int = 4, batch: int = 2) -> dict[str, torch.Tensor]:
    """A small valid observation batch to trace the export with (the axes are dynamic)."""
    rng = np.random.default_rng(0)
    n = max(num_vms, 2 * num_hosts) + 1
    vm_features = rng.uniform(0, 0.5, (batch, num_vms, 7)).astype(np.float32)
    vm_features[..., 1] = 0.0
    vm_features[..., 3] = 0.0
    vm_features[..., 4:7] = 0.0
    mask = np.zeros((batch, n), np.int8)
    mask[:, :num_vms] = 1
    mask[:, -1] = 1
    return {
        "vm_features": torch.as_tensor(vm_features),
        "host_features": torch.as_tensor(rng.uniform(0, 1, (batch, num_hosts, 7)).astype(np.float32)),
        "vm_host": torch.as_tensor(rng.integers(0, num_hosts, (batch, num_vms))),
        "vm_mask": torch.ones((batch, num_vms), dtype=torch.int8),
        "host_mask": torch.ones((batch, num_hosts), dtype=torch.int8),
        "selected_vm": torch.full((batch, 1), -1, dtype=torch.int64),
        "globals": torch.as_tensor(rng.uniform(0, 1, (batch, 5)).astype(np.float32)),
        "action_mask": torch.as_tensor(mask),
    }


def observation_spec() -> dict[str, Any]:
    """How the inputs are built from a cluster snapshot (the env's rules, restated for a controller)."""
    from envs.vm_rescheduling import GLOBAL_FEATURES, HOST_FEATURES, VM_FEATURES

    return {
        "vm_features": list(VM_FEATURES), "host_features": list(HOST_FEATURES), "globals": list(GLOBAL_FEATURES),
        "order": "clusters side by side in the snapshot's order; hosts and VMs in each cluster's order",
        "scales": "vCPU and memory features are divided by the snapshot's largest NUMA node (vCPU, MB); "
                  "fragment_node = (free vCPU mod 16) / 16",
        "rules": "controller.vm.fleet.Fleet.observation (tests/controller/test_vm_fleet.py checks it against "
                 "envs.vm_rescheduling.VMReschedulingEnv)",
    }


def action_spec() -> dict[str, Any]:
    return {
        "n": "max(V, 2 * H) + 1",
        "phase_0": "action v < V migrates VM v next; action n - 1 stops the plan",
        "phase_1": "action 2 * host + placement: the destination host and NUMA node (placement 0 for a VM "
                   "split over both nodes)",
        "outputs": {"action": "(B,) int64: the masked argmax", "logits": "(B, n) masked logits (-1e8 where masked)"},
    }


def export_vm_model(model_path: str | Path, out: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export a saved VM graph policy to ``out`` (ONNX) and ``out.with_suffix('.json')``."""
    from torch.export import Dim

    actor, model, meta, path = load_vm_actor(model_path)
    out = Path(out)
    inputs = example_inputs()
    batch, vms, hosts, actions = Dim("batch"), Dim("vms", min=2), Dim("hosts", min=2), Dim("actions", min=3)
    shapes = {"vm_features": {0: batch, 1: vms}, "host_features": {0: batch, 1: hosts}, "vm_host": {0: batch, 1: vms},
              "vm_mask": {0: batch, 1: vms}, "host_mask": {0: batch, 1: hosts}, "selected_vm": {0: batch},
              "globals": {0: batch}, "action_mask": {0: batch, 1: actions}}
    started = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(actor, tuple(inputs[k] for k in INPUTS), dynamo=True, opset_version=opset,
                                    input_names=list(INPUTS), output_names=["action", "logits"],
                                    dynamic_shapes={k: shapes[k] for k in INPUTS}, external_data=False, verbose=False)
        program.save(str(out), external_data=False)
    env = meta.get("env_config", {}).get("env", {})
    metadata = {
        "format": FORMAT,
        "problem": "vm_rescheduling",
        "kind": "vm_graph",
        "onnx": _io_spec(out),
        "observation": observation_spec(),
        "action": action_spec(),
        "budget": env.get("budget"),
        "provenance": provenance(meta, path, started),
    }
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata
