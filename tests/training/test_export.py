"""train.py export for autoscaling policies: the ONNX graph decides as the in-gym policy does.

1,000 held-out observations per model (the held-out failure config of the model's topology,
played with the policy's own moves mixed with random ones) go through the in-gym adapter
(evaluate.py's ``agent:PATH``), the exported graph in onnxruntime, and the torch module that was
exported: the replica changes are equal and the unmasked logits agree within 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from envs.microservice import MicroserviceCore, batched_observation
from envs.microservice.config import load_config
from training.export import export_autoscaling, load_autoscaling_actor

MODELS = {  # shipped model -> its topology's held-out failure config
    "ppo_graph": "configs/microservice_autoscaling/online_boutique_failures.yaml",
    "ppo_mlp": "configs/microservice_autoscaling/online_boutique_failures.yaml",
    "mappo_roles": "configs/microservice_autoscaling/chain4_failures.yaml",
    "ippo_per_service": "configs/microservice_autoscaling/chain4_failures.yaml",
}


def in_gym_policy(name: str):
    if name.startswith(("mappo", "ippo")):
        from training.mappo import load_mappo_policy

        return load_mappo_policy(f"models/autoscaling/{name}")
    from agents.autoscaling.policies import AgentPolicy

    return AgentPolicy(f"models/autoscaling/{name}")


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(name) / "policy.onnx"
    meta = export_autoscaling(f"models/autoscaling/{name}", out)
    return name, out, meta


def feed_of(obs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    return {k: obs[k].astype(bool) if k == "action_mask" else obs[k] for k in names}


def test_onnx_decides_as_the_in_gym_policy(exported):
    name, out, meta = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == [i["name"] for i in meta["onnx"]["inputs"]]
    actor, *_ = load_autoscaling_actor(f"models/autoscaling/{name}")
    policy = in_gym_policy(name)
    core = MicroserviceCore(load_config(MODELS[name]), num_clusters=8, split="held_out")
    rng = np.random.default_rng(7)
    core.reset(rng)
    policy.reset(core)
    seen = mismatches = 0
    worst = 0.0
    moved = 0
    for _ in range(125):
        obs = batched_observation(core)
        feed = feed_of(obs, names)
        in_gym = policy.desired_replicas(core, 0.0) - core.desired
        delta, logits = session.run(["replica_delta", "logits"], feed)
        with torch.no_grad():
            _, torch_logits = actor(*[torch.as_tensor(feed[k]) for k in names])
        mismatches += int((delta != in_gym).any(axis=1).sum())
        seen += len(delta)
        moved += int((delta != 0).sum())
        keep = torch_logits.numpy() > -1e7
        worst = max(worst, float(np.abs(torch_logits.numpy()[keep] - logits[keep]).max()))
        step = in_gym if rng.random() < 0.5 else core.deltas[rng.integers(0, core.num_deltas, in_gym.shape)]
        _, truncated, _ = core.step(step, rng)
        if truncated.any():
            core.reset(rng, mask=truncated)
    assert seen == 1000
    assert mismatches == 0
    assert worst < 1e-4
    assert moved > 0  # the policy does act on these states: the equality is not all zeros


def test_metadata_says_how_to_build_the_observation(exported):
    name, out, meta = exported
    meta_file = json.loads(out.with_suffix(".json").read_text())
    assert meta_file == meta
    core = MicroserviceCore(load_config(MODELS[name]), num_clusters=1, split="held_out")
    obs_spec, action = meta["observation"], meta["action"]
    assert obs_spec["services"] == list(core.service_names)
    assert [m["name"] for m in obs_spec["metrics"]][:2] == ["replicas_desired", "replicas_ready"]
    np.testing.assert_array_equal(np.asarray(obs_spec["scale"], np.float32), core.obs_scale.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(obs_spec["adjacency"], np.float32), core.calls)
    assert action["deltas"] == core.deltas.tolist()
    assert action["min_replicas"] == core.low.tolist() and action["max_replicas"] == core.high.tolist()
    assert meta["provenance"]["exported_with"]["onnxruntime"] == ort.__version__


def test_the_graph_policy_runs_any_topology(tmp_path):
    """Exported on Online Boutique (11 services), the graph policy's ONNX plays chain4 (4 services)
    and decides as the in-gym policy does there."""
    out = tmp_path / "graph.onnx"
    meta = export_autoscaling("models/autoscaling/ppo_graph", out)
    assert meta["onnx"]["inputs"][0]["shape"][:2] == [None, None]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    core = MicroserviceCore(load_config(MODELS["mappo_roles"]), num_clusters=4, split="held_out")
    rng = np.random.default_rng(0)
    core.reset(rng)
    policy = in_gym_policy("ppo_graph")
    policy.reset(core)
    for _ in range(20):
        obs = batched_observation(core)
        delta, logits = session.run(None, feed_of(obs, [i.name for i in session.get_inputs()]))
        assert logits.shape == (4, 4, core.num_deltas)
        np.testing.assert_array_equal(delta, policy.desired_replicas(core, 0.0) - core.desired)
        core.step(delta, rng)


def test_export_cli_refuses_what_it_cannot_export(tmp_path, capsys):
    from training.cli import main

    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "p.onnx")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main(["export", "models/autoscaling/ppo_mlp", "-o", str(tmp_path / "p.txt")]) == 2
    assert ".onnx" in capsys.readouterr().err
    assert main(["export", "models/autoscaling/ppo_mlp", "--opset", "13", "-o", str(tmp_path / "p.onnx")]) == 2
    assert "opset" in capsys.readouterr().err
