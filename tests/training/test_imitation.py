"""Behaviour cloning (``algorithm: bc``): demonstrations, the loss, a tiny run, exact resume, config errors, init_from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.test_train_cli import (ENV, ROOT, TINY_ENV, _one_line_error, eval_rows, interrupt_after,
                                          model_params, train)

torch.set_num_threads(1)

GRAPH = {"name": "graph", "features_extractor_kwargs": {"d_hidden": 16}}


def bc_config(tmp: Path, **bc) -> Path:
    env_path = tmp / "env_tiny.yaml"
    env_path.write_text(yaml.safe_dump(TINY_ENV))
    cfg = {
        "description": "tiny bc run",
        "env_config": str(env_path),
        "algorithm": "bc",
        "policy": GRAPH,
        # greedy: a deterministic teacher, so two runs clone the same demonstrations
        "bc": {"teacher": "greedy", "demonstrations": 12, "epochs": 6, "batch_size": 16, "learning_rate": 3e-3, **bc},
        "eval": {"episodes": 2},
    }
    path = tmp / "bc_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def loaded(path: Path) -> dict:
    from training.config import load_train_config

    return load_train_config(path)


def train_env(config: dict):
    from training.maskable_ppo import make_envs

    return make_envs(dict(config, n_envs=1))


def test_demonstrations_replay_to_the_teachers_fr(tmp_path):
    from agents.vm import get_planner
    from training.imitation import make_demonstration, plan_to_actions, replay

    config = loaded(bc_config(tmp_path))
    vec = train_env(config)
    env = vec.envs[0]
    assert env.unwrapped.source.split == "dev"  # the env config's train_source, not the held-out one
    for teacher, limit in (("greedy", 1.0), ("beam", 0.2)):
        planner = get_planner(teacher)
        for index in range(3):
            demo = make_demonstration(env, planner, index, seed=0, time_limit_s=limit)
            plan = planner(demo.snapshot, env.unwrapped.budget, time_limit_s=limit, seed=index)
            if teacher == "greedy":  # deterministic: the stored actions are this plan's
                actions, fr, _ = plan_to_actions(env, demo.snapshot, plan.moves)
                assert actions == demo.actions and fr == pytest.approx(plan.fr_after, abs=1e-12)
            # Replaying the stored actions ends at the teacher's FR, every action valid under the mask.
            env.unwrapped.reset(options={"snapshot": demo.snapshot})
            for a in demo.actions:
                assert env.unwrapped.action_masks()[a]
                _, _, terminated, _, info = env.unwrapped.step(a)
            assert terminated
            assert info["fragment_rate"] == pytest.approx(demo.teacher_fr, abs=1e-12)
            moves = (len(demo.actions) - (demo.actions[-1] == env.unwrapped.stop_action)) // 2
            if moves < env.unwrapped.budget:
                assert demo.actions[-1] == env.unwrapped.stop_action
            _, masks, returns = replay(env, demo, gamma=1.0)
            assert len(masks) == len(demo.actions)
            assert returns[0] == pytest.approx(demo.fr_start - demo.teacher_fr, abs=1e-9)
    # The snapshot of a demonstration depends on its index only.
    a = make_demonstration(env, get_planner("greedy"), 5, seed=0, time_limit_s=1.0)
    b = make_demonstration(env, get_planner("greedy"), 5, seed=0, time_limit_s=1.0)
    assert a.actions == b.actions and a.fr_start == b.fr_start


def test_a_bad_teacher_plan_is_caught(tmp_path):
    from training.imitation import plan_to_actions

    config = loaded(bc_config(tmp_path))
    env = train_env(config).envs[0]
    env.unwrapped.reset(seed=0)
    snapshot = env.unwrapped.snapshot.copy()
    vm_host = int(snapshot.clusters[0].vm_host[0])
    with pytest.raises(AssertionError, match="masked"):
        plan_to_actions(env, snapshot, [(0, 0, vm_host, 0)])  # its own host: never a valid destination


def test_bc_loss_decreases_and_accuracy_rises_on_a_tiny_set(tmp_path):
    from agents.vm import get_planner
    from training.imitation import make_demonstration, run_epoch, _set_learning_rate
    from training.maskable_ppo import make_model

    config = loaded(bc_config(tmp_path, batch_size=8))
    vec = train_env(config)
    env = vec.envs[0]
    demos = [make_demonstration(env, get_planner("beam"), i, 0, 0.1) for i in range(4)]
    model = make_model(config, vec, None)
    _set_learning_rate(model, 3e-3)
    before = run_epoch(model, env, demos, config, 0, train=False)
    curve = [run_epoch(model, env, demos, config, e)["loss"] for e in range(12)]
    after = run_epoch(model, env, demos, config, 0, train=False)
    assert after["loss"] < 0.8 * before["loss"], (before, curve, after)
    assert after["cross_entropy"] < before["cross_entropy"]
    assert after["accuracy"] > before["accuracy"]
    assert curve[-1] < curve[0]
    assert model.num_timesteps == 12 * before["steps"]


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bc")
    cfg = bc_config(tmp)
    train(str(cfg), "--runs-dir", str(tmp / "runs"), "--run-name", "straight")
    return cfg, tmp / "runs"


def test_tiny_bc_run_beats_the_untrained_policy_on_held_out(bc_run):
    _, runs = bc_run
    run = runs / "straight"
    for name in ("config.yaml", "run.json", "eval.csv", "checkpoint/manifest.json", "best/model.zip",
                 "best/metadata.json", "last/model.zip", "last/metadata.json"):
        assert (run / name).is_file(), name
    rows = eval_rows(run)
    assert [int(r["updates"]) for r in rows] == list(range(7))  # untrained, then once per epoch
    assert float(rows[-1]["fr_final"]) < float(rows[0]["fr_final"]), rows
    meta = json.loads((run / "last" / "metadata.json").read_text())
    assert meta["algorithm"] == "MaskablePPO" and meta["training_config"]["algorithm"] == "bc"
    history = meta["bc"]["history"]
    assert len(history) == 6 and history[-1]["accuracy"] > history[0]["accuracy"]
    assert meta["num_timesteps"] == 6 * history[0]["steps"]
    # The saved model is an ordinary agent: it plans a held-out snapshot through the registry.
    from agents.vm import get_planner
    from envs.vm_rescheduling import make_vm_env

    env = make_vm_env(TINY_ENV, "eval")
    env.reset(seed=0)
    result = get_planner(f"agent:{run}")(env.unwrapped.snapshot, 6)
    assert 0.0 <= result.fr_after <= 1.0 and result.num_moves <= 6


def test_interrupted_bc_run_resumes_to_the_same_result(bc_run):
    cfg, runs = bc_run
    manifest = interrupt_after(cfg, runs, "cut", updates=2, poll_s=0.01)
    stopped = json.loads(manifest.read_text())
    assert 2 <= stopped["updates"] < 6 and stopped["demonstrations"] == 12
    assert not (runs / "cut" / "last").exists()

    train("--resume", str(runs / "cut"))
    a, b = model_params(runs / "straight" / "last" / "model.zip"), model_params(runs / "cut" / "last" / "model.zip")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert eval_rows(runs / "straight") == eval_rows(runs / "cut")


def test_init_from_copies_the_bc_policy_into_ppo(bc_run, tmp_path):
    from training.maskable_ppo import init_from_weights, make_envs, make_model

    cfg, runs = bc_run
    config = dict(loaded(cfg), algorithm="maskable_ppo")
    model = make_model(config, make_envs(config), None)
    init_from_weights(model, str(runs / "straight" / "last"))
    want = model_params(runs / "straight" / "last" / "model.zip")
    have = model.policy.state_dict()
    for key, value in want.items():
        assert torch.equal(have[key], value), key

    mlp = dict(config, policy={"name": "mlp", "net_arch": [32]})
    other = make_model(mlp, make_envs(mlp), None)
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="does not fit"):
        init_from_weights(other, str(runs / "straight"))


@pytest.mark.parametrize("overrides, needles", [
    (["bc.epochs=0"], ["bc.epochs", "positive integer"]),
    (["bc.teacher=random"], ["bc.teacher", "beam"]),
    (["bc.value_coef=-1"], ["bc.value_coef", ">= 0"]),
    (["bc.learning_rat=1e-3"], ["bc.learning_rat", "did you mean 'learning_rate'"]),
    (["bc.teacher_time_limit_s=0"], ["bc.teacher_time_limit_s", "> 0"]),
    (["init_from=runs/nope"], ["init_from", "maskable_ppo"]),
    (["policy.name=mlp"], ["algorithm bc", "graph"]),
    (["algorithm=maskable_ppo", "init_from=runs/nope"], ["init_from", "not found"]),
])
def test_bad_bc_values_are_one_line_errors(tmp_path, overrides, needles):
    cfg = bc_config(tmp_path)
    runs = tmp_path / "runs"
    _one_line_error(train(str(cfg), *overrides, "--runs-dir", str(runs), check=False), *needles)
    assert not runs.exists()


def test_ship_copies_a_finished_run_with_what_explains_it(bc_run, tmp_path):
    from agents.vm import get_planner
    from envs.vm_rescheduling import make_vm_env

    cfg, runs = bc_run
    dest = tmp_path / "models" / "tiny_bc"
    out = subprocess.run([sys.executable, "train.py", "ship", str(runs / "straight"), str(dest)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("model.zip", "metadata.json", "train_config.yaml", "run.json", "training_eval.csv",
                 "training_curve.png", "README.md"):
        assert (dest / name).stat().st_size > 0, name
    readme = (dest / "README.md").read_text()
    assert "python train.py " + str(cfg) in readme and f"python train.py ship {runs / 'straight'} {dest}" in readme
    assert "12 greedy demonstrations" in readme and "6 epochs" in readme
    # The shipped folder is an agent like the run folder it came from.
    env = make_vm_env(yaml.safe_load(open(cfg))["env_config"], "eval")
    env.reset(seed=0)
    result = get_planner(f"agent:{dest}")(env.snapshot, 6)
    assert result.num_moves <= 6
    # Shipping over an existing folder, or an unfinished run, is refused in one line.
    again = subprocess.run([sys.executable, "train.py", "ship", str(runs / "straight"), str(dest)],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _one_line_error(again, "exists already (--force replaces it)")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for f in ("config.yaml", "run.json"):
        (unfinished / f).write_text((runs / "straight" / f).read_text())
    bad = subprocess.run([sys.executable, "train.py", "ship", str(unfinished), str(tmp_path / "x")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _one_line_error(bad, "best/model.zip: missing")
    assert not (tmp_path / "x").exists()
    # A run still training (best/ but no last/): refused unless --unfinished, then marked as such.
    running = tmp_path / "running"
    shutil.copytree(runs / "straight", running)
    shutil.rmtree(running / "last")
    bad = subprocess.run([sys.executable, "train.py", "ship", str(running), str(tmp_path / "y")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    _one_line_error(bad, "has not finished (no last/)", "--unfinished")
    assert not (tmp_path / "y").exists()
    ok = subprocess.run([sys.executable, "train.py", "ship", str(running), str(tmp_path / "y"), "--unfinished"],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    readme = (tmp_path / "y" / "README.md").read_text()
    assert "shipped unfinished" in readme and f"ship {running} {tmp_path / 'y'} --unfinished" in readme
    assert (tmp_path / "y" / "model.zip").read_bytes() == (running / "best" / "model.zip").read_bytes()


def test_best_is_picked_on_the_validation_split_where_there_is_one():
    from training.maskable_ppo import selection_split

    assert selection_split({"env_config": "configs/vm_rescheduling/vmr2l_like_small.yaml"}) == "val"
    assert selection_split({"env_config": "configs/vm_rescheduling/azure_small.yaml"}) == "eval"


def test_interchangeable_vms_are_one_class_for_the_loss(tmp_path):
    """A VM pick stands for the valid VMs on its host with the same features; nothing else widens."""
    import numpy as np

    from training.imitation import interchangeable_vms

    config = loaded(bc_config(tmp_path))
    env = train_env(config).envs[0].unwrapped
    obs, _ = env.reset(seed=0)
    mask = env.action_masks()
    a = int(np.flatnonzero(mask[: env.max_vms])[0])
    twin, other, hidden = a + 1, a + 2, a + 3
    obs = {k: np.array(v, copy=True) for k, v in obs.items()}
    for v in (twin, other, hidden):
        obs["vm_features"][v] = obs["vm_features"][a]
        obs["vm_host"][v] = obs["vm_host"][a]
        obs["vm_mask"][v] = 1
    obs["vm_features"][other, 0] += 1.0  # another shape on the same host
    m = mask.copy()
    m[[twin, other]] = True
    m[hidden] = False  # masked (e.g. anti-affinity): never counted as right
    batch = {k: v[None] for k, v in obs.items()}
    out = interchangeable_vms(batch, np.array([a]), m[None])[0]
    assert out[a] and out[twin] and not out[other] and not out[hidden]
    same_host_same_features = (obs["vm_features"] == obs["vm_features"][a]).all(1) & (obs["vm_host"] == obs["vm_host"][a])
    assert set(np.flatnonzero(out)) <= set(np.flatnonzero(same_host_same_features & m[: len(same_host_same_features)]))
    # A destination pick (phase 1) or stop is its own class.
    obs["selected_vm"][:] = a
    assert np.flatnonzero(interchangeable_vms({k: v[None] for k, v in obs.items()}, np.array([a]), m[None])[0]).tolist() == [a]
    stop = len(mask) - 1
    assert np.flatnonzero(interchangeable_vms(batch, np.array([stop]), np.ones((1, len(mask)), bool))[0]).tolist() == [stop]
