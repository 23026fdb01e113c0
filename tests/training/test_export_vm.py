"""train.py export for the VM graph policy: the ONNX graph decides as the in-gym policy does.

1,000 held-out observations (the two real VMR2L files, which the shipped model never trained on;
played with the policy's own actions mixed with random valid ones, in both phases) go through the
in-gym policy (``VMGraphPolicy.action_logits``) and the exported graph in onnxruntime: the actions
are equal and the valid actions' logits agree within 1e-4. Observations come at the snapshot's own
size and padded beyond it, so the dynamic axes and the padding masks are both exercised.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from digital_twin.vm.snapshot import load_snapshot
from envs.vm_rescheduling import VMReschedulingEnv
from envs.vm_sources import REAL_SNAPSHOTS
from training.export_vm import INPUTS, load_vm_actor

MODEL = "models/vm_rescheduling/graph_bc"
# (file, extra hosts and VMs of padding, observations)
CASES = [("reset_vm_pm_id_clear2.json", 0, 700), ("reset_vm_pm_id_clear2.json", 25, 150),
         ("reset_vm_pm_id_clear_big2.json", 0, 150)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped model exported by the command users run."""
    out = tmp_path_factory.mktemp("vm") / "vm_policy.onnx"
    done = subprocess.run([sys.executable, "train.py", "export", MODEL, "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "vm_rescheduling" in done.stdout
    return out, json.loads(out.with_suffix(".json").read_text())


def held_out_observations(file: str, pad: int, count: int, session) -> list[dict[str, np.ndarray]]:
    snapshot = load_snapshot(REAL_SNAPSHOTS / file)
    hosts = sum(c.num_hosts for c in snapshot.clusters) + pad
    vms = sum(c.num_vms for c in snapshot.clusters) + pad
    env = VMReschedulingEnv(max_hosts=hosts, max_vms=vms, budget=50)
    rng = np.random.default_rng(pad + count)
    obs, _ = env.reset(options={"snapshot": snapshot})
    out = []
    while len(out) < count:
        out.append(obs)
        mask = env.action_masks()
        if rng.random() < 0.6:  # the policy's own move (the graph's; compared with torch's below)
            action = int(session.run(["action"], {k: obs[k][None] for k in INPUTS})[0][0])
        else:
            action = int(rng.choice(np.flatnonzero(mask)))
        obs, _, terminated, _, _ = env.step(action)
        if terminated:
            obs, _ = env.reset(options={"snapshot": snapshot})
    return out


def test_onnx_decides_as_the_in_gym_policy(exported):
    out, meta = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS) == [i["name"] for i in meta["onnx"]["inputs"]]
    _, model, _, _ = load_vm_actor(MODEL)
    policy = model.policy
    total, phases, worst = 0, set(), 0.0
    for file, pad, count in CASES:
        observations = held_out_observations(file, pad, count, session)
        for start in range(0, count, 50):
            batch = {k: np.stack([o[k] for o in observations[start: start + 50]]) for k in INPUTS}
            action, logits = session.run(None, batch)
            with torch.no_grad():
                reference, _ = policy.action_logits(policy.obs_to_tensor(batch)[0])
            reference = reference.numpy()
            valid = batch["action_mask"] > 0
            np.testing.assert_array_equal(action, reference.argmax(-1))
            assert valid[np.arange(len(action)), action].all()
            worst = max(worst, float(np.abs(logits - reference)[valid].max()))
            np.testing.assert_array_equal(logits[~valid], -1e8)
            phases |= set(batch["globals"][:, 4].tolist())
            total += len(action)
    assert total == 1000 and phases == {0.0, 1.0}
    assert worst < 1e-4, worst


def test_metadata(exported):
    out, meta = exported
    assert meta["format"] == "clustergym-policy/1"
    assert meta["problem"] == "vm_rescheduling" and meta["kind"] == "vm_graph" and meta["budget"] == 50
    shapes = {i["name"]: i["shape"] for i in meta["onnx"]["inputs"]}
    assert shapes["vm_features"] == [None, None, 7] and shapes["action_mask"] == [None, None]
    assert {i["name"]: i["dtype"] for i in meta["onnx"]["inputs"]}["vm_mask"] == "int8"
    assert meta["provenance"]["model"].endswith("model.zip")


def test_a_fixed_padding_policy_is_refused():
    from gymnasium import spaces
    from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy

    from training.export_vm import VMActor

    env = VMReschedulingEnv(max_hosts=4, max_vms=6)
    policy = MaskableMultiInputActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3)
    assert isinstance(env.action_space, spaces.Discrete)
    with pytest.raises(ValueError, match="VMGraphPolicy"):
        VMActor(policy)
