"""Export a trained policy to ONNX, with the metadata an online controller needs to run it.

    python train.py export models/autoscaling/ppo_graph -o policy.onnx
    python train.py export runs/vm_bc_s0 -o vm_policy.onnx

writes ``policy.onnx`` (the deterministic actor, one file) and ``policy.json`` beside it:

* ``onnx``: the graph's inputs and outputs (name, dtype, shape; ``null`` for a dynamic axis);
* ``observation``: how to build the inputs the way the env does. For autoscaling: the services
  in order, each metric's PromQL template (from the twin's declared metric set,
  :mod:`digital_twin.microservices.metrics`), whether an empty result means 0, the per
  (service, metric) normalisation ``clip(raw * scale, 0, high)``, the call graph
  (``adjacency``, ``edge_index``) and how ``progress`` counts;
* ``action``: the replica deltas, the bounds, the mask rule and what the outputs mean;
* ``topology`` and ``provenance`` (model, run, commit, the versions it was exported with).

**Autoscaling graphs.** Inputs ``metrics`` (B, S, M) float32 (normalised), ``adjacency`` (B, S, S)
float32, ``edge_index`` (B, 2, E) int64, ``progress`` (B, 1) float32, ``action_mask`` (B, S * D)
bool, the env's observation keys; a graph uses only those its policy reads (listed in ``onnx``).
Outputs ``replica_delta`` (B, S) int64, the change the policy makes to each service's replicas
(before the bounds' clip), and ``logits``: (B, S, D) for a PPO policy (masked: -1e8 where the
mask is 0), (B, A, S, D) per agent for MAPPO / IPPO. The decision is what evaluate.py's adapters
make: the masked argmax per service (PPO), or every agent's median allowed delta merged by the
layout's rule (MAPPO / IPPO; the rule runs inside the graph). The service-graph policy's graph
takes any number of services and call edges (dynamic axes); the MLP's and MAPPO's are fixed to
the topology they were trained on (their inputs, or the agents' scopes, depend on it).

VM models are exported by :mod:`training.export_vm`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.model_files import MODEL_FILES, resolve_model_path
from digital_twin.cli import ArgumentParser, HelpFormatter, UsageError, add_debug_flag, check_writable_dir, \
    run_cli
from digital_twin.microservices.metrics import FRESHNESS_PROMQL, METRICS
from training.runs import git_commit, library_versions

FORMAT = "clustergym-policy/1"
OPSET = 18
MASKED_LOGIT = -1e8  # sb3-contrib's and MAPPO's masking logit
INPUTS = ("metrics", "adjacency", "edge_index", "progress", "action_mask")
SB3_ENV_ID = "clustergym/MicroserviceAutoscaling-v0"
MAPPO_ENV_ID = "microservice_autoscaling_v0"


# ---------------------------------------------------------------------- the actors as plain modules
class SB3Actor(nn.Module):
    """A (Maskable)PPO policy's deterministic actor on the env's observation arrays.

    Shapes: the env's keys with a batch axis -> ``(replica_delta (B, S) int64, logits (B, S, D))``.
    """

    def __init__(self, policy, deltas: np.ndarray):
        super().__init__()
        self.policy = policy
        self.register_buffer("deltas", torch.as_tensor(np.asarray(deltas, dtype=np.int64)))

    def forward(self, metrics, adjacency, edge_index, progress, action_mask):
        obs = {"metrics": metrics, "adjacency": adjacency, "edge_index": edge_index.to(torch.float32),
               "progress": progress, "action_mask": action_mask.to(torch.float32)}
        features = self.policy.extract_features(obs)
        if isinstance(features, tuple):  # separate actor / critic extractors
            features = features[0]
        logits = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
        b, s = metrics.shape[0], metrics.shape[1]
        logits = torch.where(action_mask, logits, torch.full_like(logits, MASKED_LOGIT)).reshape(b, s, -1)
        return self.deltas[logits.argmax(-1)], logits


class MAPPOActor(nn.Module):
    """A MAPPO / IPPO actor, its agents' views and the merge rule, on the single-agent observation.

    The per-agent rows are :meth:`envs.microservice.multi_agent.MultiAgentView.observations`
    (metrics where visible, visible, controlled, progress; then the role features of
    :func:`training.mappo.role_features`); masks are the bounds x each agent's scope and moves
    (the zero delta always); each agent takes the median allowed delta (MAPPOPolicy's default);
    the merge is :func:`~envs.microservice.multi_agent.merge_proposals`. The topology's constants
    (visibility, scopes, allowed moves, the call graph) are buffers.

    Shapes: metrics (B, S, M), progress (B, 1), action_mask (B, S * D) ->
    ``(replica_delta (B, S) int64, logits (B, A, S, D))``.
    """

    def __init__(self, policy):
        super().__init__()
        view = policy.view
        self.actor = policy.actor
        self.num_agents, self.zero_index = view.num_agents, view.zero_index
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("visible", f32(view.visible))  # (A, S)
        self.register_buffer("scope", f32(view.scope))
        self.register_buffer("roles", f32(policy.roles))  # (A, K)
        self.register_buffer("allowed", torch.as_tensor(view._allowed))  # (A, S, D) bool, zero delta included
        self.register_buffer("adj", policy.adj.clone())  # (S, S)
        self.register_buffer("deltas", torch.as_tensor(view.core.deltas.astype(np.int64)))
        self.register_buffer("by_value", policy._by_value.clone())

    def forward(self, metrics, progress, action_mask):
        b, s, _ = metrics.shape
        a, d = self.num_agents, self.deltas.shape[0]
        rows = metrics[:, None] * self.visible[None, :, :, None]  # (B, A, S, M)
        flags = torch.stack([self.visible.expand(b, a, s), self.scope.expand(b, a, s),
                             progress[:, :, None].expand(b, a, s)], dim=-1)
        roles = self.roles[None, :, None, :].expand(b, a, s, self.roles.shape[1])
        x = torch.cat([rows, flags, roles], dim=-1).reshape(b * a, s, -1)
        mask = action_mask.reshape(b, 1, s, d) & self.allowed[None]
        mask[..., self.zero_index] = True
        logits = self.actor(x, self.adj).reshape(b, a, s, d)
        logits = torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))
        probs = torch.softmax(logits, -1)
        k = (probs[..., self.by_value].cumsum(-1) < 0.5).sum(-1).clamp(max=d - 1)
        index = self.by_value[k]  # (B, A, S)
        allowed = torch.gather(self.allowed[None].expand(b, a, s, d), -1, index[..., None])[..., 0]
        proposed = torch.where(allowed, self.deltas[index], torch.zeros_like(index))
        up = proposed.amax(1).clamp(min=0)
        down = proposed.amin(1).clamp(max=0)
        return torch.where(up > 0, up, down), logits


# ---------------------------------------------------------------------- what a controller needs to know
def observation_spec(core, progress_window: int) -> dict[str, Any]:
    """How to build the env's observation of ``core``'s config from a live cluster's metrics."""
    return {
        "services": list(core.service_names),
        "metrics": [{"name": m.name, "promql": m.promql, "unit": m.unit, "absent_is_zero": m.absent_is_zero,
                     "description": m.description} for m in METRICS],
        "freshness_promql": FRESHNESS_PROMQL,
        "normalisation": "metrics = clip(float32(raw) * scale, 0, high), per (service, metric); float32",
        "scale": core.obs_scale.astype(np.float32).tolist(),
        "high": core.obs_high.astype(np.float32).tolist(),
        "adjacency": core.calls.astype(np.float32).tolist(),
        "edge_index": core.edge_index.astype(np.int64).tolist(),
        "progress": {"window_steps": int(progress_window),
                     "rule": "min(decisions made since the window began / window_steps, 1); the env's episode "
                             "progress, 0 at its first decision"},
    }


def action_spec(core) -> dict[str, Any]:
    return {
        "deltas": core.deltas.astype(int).tolist(),
        "min_replicas": core.low.astype(int).tolist(),
        "max_replicas": core.high.astype(int).tolist(),
        "mask": "action_mask[s * D + d] = min_replicas[s] <= replicas[s] + deltas[d] <= max_replicas[s] "
                "(replicas: the Deployment's spec.replicas)",
        "outputs": {"replica_delta": "(B, S) int64: replicas[s] + replica_delta[s], clipped to the bounds, "
                                     "is the policy's decision",
                    "logits": "masked logits of the deltas (-1e8 where masked)"},
        "step_seconds": float(core.config.step_seconds),
    }


def _io_spec(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path))
    names = {1: "float32", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 11: "float64"}

    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            out.append({"name": v.name, "dtype": names.get(t.elem_type, str(t.elem_type)), "shape": shape})
        return out

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"file": path.name, "opset": int(opset), "inputs": describe(model.graph.input),
            "outputs": describe(model.graph.output)}


# ---------------------------------------------------------------------- loading and exporting
def _autoscaling_core(meta: dict[str, Any], model_dir: Path):
    from envs.microservice import MicroserviceCore
    from envs.microservice.config import config_from_dict

    config = config_from_dict(dict(meta["env_config"], **meta.get("env_overrides", {})),
                              source=f"{model_dir / 'metadata.json'} env_config")
    return MicroserviceCore(config, num_clusters=1, split="held_out")


def load_autoscaling_actor(model_path: str | Path) -> tuple[nn.Module, Any, dict[str, Any], Path, str, tuple[str, ...]]:
    """``(actor module, env core, model metadata, model file, kind, input names)`` of a saved
    autoscaling model; ``kind`` is ``sb3_mlp``, ``sb3_graph`` or ``mappo`` / ``ippo``."""
    path = resolve_model_path(model_path, MODEL_FILES)
    meta_file = path.parent / "metadata.json"
    if not meta_file.is_file():
        raise ValueError(f"{path}: no metadata.json beside it; not a model saved by train.py")
    meta = json.loads(meta_file.read_text())
    env_id = meta.get("env_id")
    if env_id == SB3_ENV_ID and path.suffix == ".zip":
        from agents.autoscaling.graph import ServiceGraphPolicy, check_call_depth
        from agents.autoscaling.policies import AgentPolicy

        agent = AgentPolicy(path)
        core = _autoscaling_core(meta, path.parent)
        agent.reset(core)
        policy = agent.model.policy.eval()
        graph = isinstance(policy, ServiceGraphPolicy)
        if graph:
            check_call_depth(core.calls, str(path))
        return SB3Actor(policy, core.deltas).eval(), core, meta, path, "sb3_graph" if graph else "sb3_mlp", INPUTS
    if env_id == MAPPO_ENV_ID and path.suffix == ".pt":
        from training.mappo import load_mappo_policy

        policy = load_mappo_policy(path)
        core = _autoscaling_core(meta, path.parent)
        policy.reset(core)
        return MAPPOActor(policy).eval(), core, meta, path, meta["algorithm"], ("metrics", "progress", "action_mask")
    raise ValueError(f"{path}: not an autoscaling model of train.py (metadata env_id {env_id!r}, file {path.name}); "
                     f"expected {SB3_ENV_ID} with model.zip or {MAPPO_ENV_ID} with model.pt")


def example_inputs(core, batch: int = 2) -> dict[str, torch.Tensor]:
    """Inputs of the env's current observation, repeated ``batch`` times (an export trace)."""
    from envs.microservice import batched_observation

    core.reset(np.random.default_rng(0))
    obs = batched_observation(core)
    out = {k: torch.as_tensor(np.repeat(obs[k], batch, axis=0)) for k in INPUTS}
    out["action_mask"] = out["action_mask"].to(torch.bool)
    return out


def export_autoscaling(model_path: str | Path, out: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export a saved autoscaling policy to ``out`` (ONNX) and ``out.with_suffix('.json')``."""
    from torch.export import Dim

    actor, core, meta, path, kind, names = load_autoscaling_actor(model_path)
    out = Path(out)
    inputs = example_inputs(core)
    args = tuple(inputs[k] for k in names)
    batch = Dim("batch")
    if kind == "sb3_graph":
        services, edges = Dim("services", min=2), Dim("edges", min=1)
        shapes = {"metrics": {0: batch, 1: services}, "adjacency": {0: batch, 1: services, 2: services},
                  "edge_index": {0: batch, 2: edges}, "progress": {0: batch},
                  "action_mask": {0: batch, 1: Dim("service_deltas")}}
    else:
        shapes = {k: {0: batch} for k in names}
    started = time.perf_counter()
    # The exporter warns about torchvision ops and merged axis names, none of which apply here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(actor, args, dynamo=True, opset_version=opset, input_names=list(names),
                                    output_names=["replica_delta", "logits"],
                                    dynamic_shapes={k: shapes[k] for k in names}, external_data=False,
                                    verbose=False)
        program.save(str(out), external_data=False)
    metadata = {
        "format": FORMAT,
        "problem": "autoscaling",
        "kind": kind,
        "onnx": _io_spec(out),
        "observation": observation_spec(core, core.window_steps),
        "action": action_spec(core),
        "topology": {"name": core.config.topology, "services": list(core.service_names),
                     "entry": core.service_names[core.topology.entry_index]},
        "layout": meta.get("layout"),
        "agent_names": meta.get("agent_names"),
        "provenance": provenance(meta, path, started),
    }
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def provenance(meta: dict[str, Any], path: Path, started: float) -> dict[str, Any]:
    """Where an exported policy comes from: the model, its training run, the code and versions."""
    return {"model": str(path), "algorithm": meta.get("algorithm"), "policy": meta.get("policy"),
            "trained_timesteps": meta.get("num_timesteps"), "env_config_path": meta.get("env_config_path"),
            "code_commit": meta.get("git_commit") or _shipped_commit(path), "exported_by_commit": git_commit(),
            "exported_with": library_versions() | _onnx_versions(),
            "export_seconds": round(time.perf_counter() - started, 2)}


def _shipped_commit(path: Path) -> str | None:
    """The commit a shipped model's run came from (its run.json), if recorded."""
    run = path.parent / "run.json"
    if run.is_file():
        info = json.loads(run.read_text())
        return info.get("code_commit") or info.get("git_commit")
    return None


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def is_vm_model(model_path: str | Path) -> bool:
    path = resolve_model_path(model_path, MODEL_FILES)
    meta = path.parent / "metadata.json"
    return meta.is_file() and json.loads(meta.read_text()).get("env_id") == "clustergym/VMRescheduling-v0"


def export_policy(model_path: str | Path, out: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export any saved policy of train.py (VM or autoscaling) to ONNX + metadata."""
    if is_vm_model(model_path):
        from training.export_vm import export_vm_model

        return export_vm_model(model_path, out, opset=opset)
    return export_autoscaling(model_path, out, opset=opset)


# ---------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="train.py export", formatter_class=HelpFormatter,
        description="Export a trained policy (a run folder, its best/ or last/, a shipped models/ folder or the "
                    "model file) to ONNX, with the metadata an online controller needs (policy.json beside it).")
    parser.add_argument("model", help="run folder, best/ or last/ folder, models/<problem>/<name>, or model file")
    parser.add_argument("-o", "--output", default="policy.onnx", help="the ONNX file (default: policy.onnx); "
                        "the metadata goes beside it with the suffix .json")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset, >= 18 (default: {OPSET})")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    if args.opset < 18:
        raise UsageError(f"--opset {args.opset}: the export needs opset 18 or newer")
    out = Path(args.output)
    if out.suffix != ".onnx":
        raise UsageError(f"--output {out}: give a file name ending in .onnx (the metadata goes beside it as .json)")
    check_writable_dir(out.parent if str(out.parent) else Path("."), "--output")
    try:
        resolve_model_path(args.model, MODEL_FILES)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    try:
        meta = export_policy(args.model, out, opset=args.opset)
    except ValueError as err:
        raise UsageError(str(err)) from None
    inputs = ", ".join(f"{i['name']}{tuple('?' if d is None else d for d in i['shape'])}" for i in meta["onnx"]["inputs"])
    print(f"{out} ({out.stat().st_size / 1e6:.2f} MB, {meta['problem']}, {meta.get('kind', '')}): inputs {inputs}; "
          f"metadata {out.with_suffix('.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
