"""``train.py`` on autoscaling (algorithm ppo): a tiny run, exact resume, the model in evaluate.py, mistakes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.test_train_cli import ENV, ROOT, interrupt_after, model_params, train

TINY = {
    "description": "tiny autoscaling run",
    "problem": "autoscaling",
    "env_config": "configs/microservice_autoscaling/chain4_huawei.yaml",
    "env": {"window_steps": 24},
    "algorithm": "ppo",
    "policy": {"name": "graph", "hidden": 16, "layers": 2},
    "ppo": {"n_steps": 16, "batch_size": 32, "n_epochs": 2, "clip_range": 0.2},
    "n_envs": 4,
    "total_timesteps": 384,
    "eval": {"every_timesteps": 128, "episodes": 1},
}


def tiny_config(tmp: Path, **changes) -> Path:
    path = tmp / "autoscaling_tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def eval_rows(run: Path) -> list[dict[str, str]]:
    with (run / "eval.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_quick_config_trains_and_its_model_plays_in_evaluate(tmp_path):
    runs = tmp_path / "runs"
    proc = train(str(ROOT / "configs/train/autoscaling_ppo_quick.yaml"), "total_timesteps=512", "eval.every_timesteps=256",
                 "--runs-dir", str(runs), "--run-name", "quick")
    run = runs / "quick"
    assert "done: 512 steps; train-split evaluation: return" in proc.stdout
    rows = eval_rows(run)
    assert [int(r["timesteps"]) for r in rows] == [256, 512]
    assert float(rows[0]["hpa_slo_violation_minutes"]) >= 0 and rows[0]["hpa_episode_return"] == rows[1]["hpa_episode_return"]
    meta = json.loads((run / "last" / "metadata.json").read_text())
    assert meta["env_id"] == "clustergym/MicroserviceAutoscaling-v0" and meta["selection_split"] == "train"
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "configs/microservice_autoscaling/chain4_huawei.yaml",
         "--policies", "k8s_hpa", f"agent:{run / 'best' / 'model.zip'}", "--seeds", "0", "--out-dir", str(out), "--run-name", "r", "--no-progress"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    methods = {row["method"] for row in csv.DictReader((out / "r" / "episodes.csv").open())}
    assert methods == {"k8s_hpa", "agent:quick/best"}


@pytest.mark.parametrize("policy", [{"name": "graph", "hidden": 16, "layers": 2}, {"name": "mlp", "net_arch": [32]}])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, policy):
    cfg = tiny_config(tmp_path, policy=policy)
    runs = tmp_path / "runs"
    train(str(cfg), "--runs-dir", str(runs), "--run-name", "straight")
    manifest = interrupt_after(cfg, runs, "cut", updates=2)
    assert 0 < json.loads(manifest.read_text())["num_timesteps"] < TINY["total_timesteps"]
    train("--resume", str(runs / "cut"))
    a, b = model_params(runs / "straight" / "last" / "model.zip"), model_params(runs / "cut" / "last" / "model.zip")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert eval_rows(runs / "straight") == eval_rows(runs / "cut")


@pytest.mark.parametrize("changes, needles", [
    ({"algorithm": "maskable_ppo"}, ["algorithm 'maskable_ppo' is not one of ppo, mappo, ippo"]),
    ({"env": {"window_step": 10}}, ["env section", "window_step", "window_steps"]),
    ({"env": {"window_steps": 0}}, ["env section", "window_steps", ">= 1"]),
    ({"env_config": "configs/vm_rescheduling/azure_small.yaml"}, ["azure_small.yaml", "unknown key"]),
    ({"policy": {"name": "transformer"}}, ["policy.name 'transformer'", "graph, mlp"]),
    ({"mappo": {"layout": "teams"}}, ["mappo.layout", "roles, per_service"]),
])
def test_mistakes_are_one_line_errors_before_any_run_folder(tmp_path, changes, needles):
    runs = tmp_path / "runs"
    proc = train(str(tiny_config(tmp_path, **changes)), "--runs-dir", str(runs), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert not runs.exists()


def test_the_algorithm_defaults_by_problem(tmp_path):
    from training.config import load_train_config

    doc = {k: v for k, v in TINY.items() if k != "algorithm"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_train_config(path)["algorithm"] == "ppo"
