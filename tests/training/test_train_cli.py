"""End-to-end tests of ``train.py``: a tiny run, an interrupted run resumed exactly, refused checkpoints, user errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")

TINY_ENV = {
    "env": {"max_hosts": 10, "max_vms": 900, "budget": 6},
    "train_source": {"kind": "azure", "split": "dev", "num_hosts": 10, "fraction_range": [0.7, 1.0], "cuts_per_replay": 4},
    "eval_source": {"kind": "azure", "split": "test", "num_hosts": 10, "fraction_range": [0.7, 1.0], "cuts_per_replay": 4},
}


def tiny_config(tmp: Path, total: int = 256, policy: dict | None = None) -> Path:
    env_path = tmp / "env_tiny.yaml"
    env_path.write_text(yaml.safe_dump(TINY_ENV))
    cfg = {
        "description": "tiny test run",
        "env_config": str(env_path),
        "policy": policy or {"name": "mlp", "net_arch": [32]},
        "ppo": {"n_steps": 32, "batch_size": 32, "n_epochs": 2},
        "n_envs": 2,
        "total_timesteps": total,
        "eval": {"every_timesteps": 128, "episodes": 2},
    }
    path = tmp / "train_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--no-progress"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def model_params(model_zip: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(model_zip) as zf, zf.open("policy.pth") as f:
        import io

        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def eval_rows(run: Path) -> list[dict[str, str]]:
    with (run / "eval.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "plan_s"} for row in csv.DictReader(f)]


def test_help_lists_the_bundled_configs():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "vm_quick.yaml" in proc.stdout and "--resume" in proc.stdout


def test_tiny_run_writes_the_run_folder(tmp_path):
    cfg = tiny_config(tmp_path)
    train(str(cfg), "--runs-dir", str(tmp_path / "runs"), "--run-name", "r")
    run = tmp_path / "runs" / "r"
    for name in ("config.yaml", "run.json", "eval.csv", "checkpoint/manifest.json", "best/model.zip",
                 "best/metadata.json", "last/model.zip", "last/metadata.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir()), "no TensorBoard events"
    meta = json.loads((run / "last" / "metadata.json").read_text())
    assert meta["env_id"] == "clustergym/VMRescheduling-v0"
    assert meta["num_timesteps"] == 256
    assert meta["env_config"]["env"]["max_hosts"] == 10 and "torch" in meta["versions"]
    assert meta["observation_space"].startswith("Dict(") and meta["action_space"] == "Discrete(901)"
    rows = eval_rows(run)
    assert [int(r["timesteps"]) for r in rows] == [128, 256]
    for r in rows:
        assert 0.0 <= float(r["fr_final"]) <= 1.0 and float(r["greedy_fr"]) <= float(r["fr_start"])


def interrupt_after(cfg: Path, runs: Path, name: str, updates: int, poll_s: float = 0.02) -> Path:
    """Start ``train.py cfg`` as ``runs/name``, send SIGINT once its checkpoint has ``updates``, and
    check it stopped cleanly with a resume hint; returns the checkpoint manifest's path."""
    cmd = [sys.executable, str(ROOT / "train.py"), str(cfg), "--runs-dir", str(runs), "--run-name", name, "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = runs / name / "checkpoint" / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(manifest.read_text())["updates"] >= updates:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(poll_s)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "interrupted at" in err and "--resume" in err
    return manifest


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    cfg = tiny_config(tmp_path, total=512)
    runs = tmp_path / "runs"
    train(str(cfg), "--runs-dir", str(runs), "--run-name", "straight")

    manifest = interrupt_after(cfg, runs, "cut", updates=3)
    stopped_at = json.loads(manifest.read_text())["num_timesteps"]
    assert 0 < stopped_at < 512
    assert not (runs / "cut" / "last").exists()

    train("--resume", str(runs / "cut"))
    a, b = model_params(runs / "straight" / "last" / "model.zip"), model_params(runs / "cut" / "last" / "model.zip")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert eval_rows(runs / "straight") == eval_rows(runs / "cut")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(tmp, total=128)
    train(str(cfg), "--runs-dir", str(tmp / "runs"), "--run-name", "done")
    train(str(cfg), "--runs-dir", str(tmp / "runs"), "--run-name", "other")
    return tmp / "runs"


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("run folder:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_truncated_checkpoint_is_refused(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run / "done", run)
    state = run / "checkpoint" / "state.pkl"
    state.write_bytes(state.read_bytes()[:1000])
    _one_line_error(train("--resume", str(run), check=False), "state.pkl", "truncated")


def test_foreign_checkpoint_is_refused(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run / "done", run)
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(finished_run / "other" / "checkpoint", run / "checkpoint")
    _one_line_error(train("--resume", str(run), check=False), "manifest.json", "another run")


def test_checkpoint_of_other_spaces_is_refused(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run / "done", run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    env_path = tmp_path / "bigger_env.yaml"
    env_path.write_text(yaml.safe_dump(dict(TINY_ENV, env=dict(TINY_ENV["env"], max_vms=1000))))
    cfg["env_config"] = str(env_path)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(train("--resume", str(run), check=False), "observation_space differs")


def test_not_a_run_folder_is_refused(tmp_path):
    _one_line_error(train("--resume", str(tmp_path), check=False), "config.yaml", "not a run folder")


@pytest.mark.parametrize("args, needles", [
    (["configs/train/nope.yaml"], ["nope.yaml", "no such config file", "vm_quick.yaml"]),
    (["README.md"], ["README.md"]),
    (["configs/train/vm_quick.yaml", "ppo.learning_rat=1e-4"], ["ppo.learning_rat", "did you mean 'learning_rate'"]),
    (["configs/train/vm_quick.yaml", "total_timesteps=-5"], ["total_timesteps", "positive integer"]),
    (["configs/train/vm_quick.yaml", "policy.name=cnn"], ["policy.name", "graph, mlp"]),
    (["configs/train/vm_quick.yaml", "ppo.batch_size=100000"], ["batch_size", "larger than a rollout"]),
    (["configs/train/vm_quick.yaml", "learning_rate"], ["expected key=value"]),
    ([], ["a config is required"]),
])
def test_user_mistakes_are_one_line_errors(tmp_path, args, needles):
    runs = tmp_path / "runs"
    _one_line_error(train(*args, "--runs-dir", str(runs), check=False), *needles)
    assert not runs.exists(), "a refused run must leave no folder behind"


def test_bad_yaml_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: {learning_rate: [1,\n  n_steps: 3\n")
    _one_line_error(train(str(bad), "--runs-dir", str(tmp_path / "runs"), check=False), "bad.yaml", "not valid YAML", "line")


# ---------------------------------------------------------------------- mistakes found in what the config names
def test_env_config_and_env_section_are_checked_by_the_env_schema(tmp_path):
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path)
    env_path = tmp_path / "env_tiny.yaml"
    env_path.write_text(yaml.safe_dump(dict(TINY_ENV, env={"budjet": 5})))
    _one_line_error(train(str(cfg), "--runs-dir", str(runs), check=False),
                    "env_tiny.yaml: unknown key 'env.budjet' (did you mean 'budget'?); allowed under env: budget")
    env_path.write_text(yaml.safe_dump(dict(TINY_ENV, eval_source=dict(TINY_ENV["eval_source"], kind="filez"))))
    _one_line_error(train(str(cfg), "--runs-dir", str(runs), check=False),
                    "eval_source: unknown kind 'filez' (did you mean 'files'?)")
    env_path.write_text(yaml.safe_dump(TINY_ENV))
    _one_line_error(train(str(cfg), "env.budjet=5", "--runs-dir", str(runs), check=False),
                    "unknown key 'env.budjet' (did you mean 'budget'?)")
    _one_line_error(train(str(cfg), "env.budget=-5", "--runs-dir", str(runs), check=False),
                    "env.budget must be an integer >= 1, got -5")
    _one_line_error(train("configs/vm_rescheduling/azure_small.yaml", "--runs-dir", str(runs), check=False),
                    "this is an env config (it has train_source / eval_source), not a training config")
    _one_line_error(train(str(cfg), "--runs-dir", "/proc/never", check=False), "--runs-dir /proc/never")
    assert not runs.exists(), "a refused run must leave no folder behind"


@pytest.mark.parametrize("init_from, needles", [
    ("{tmp}/nope", ["init_from", "nope: not found (no such file or folder); give a model.zip written by train.py, or a run folder"]),
    ("README.md", ["init_from README.md", "README.md is not a saved model"]),
    ("{tmp}", ["no model found: no model.zip in that folder (nor in best/ or last/)"]),
])
def test_init_from_that_is_no_model_is_refused_before_the_run_folder(tmp_path, init_from, needles):
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path)
    _one_line_error(train(str(cfg), f"init_from={init_from.replace('{tmp}', str(tmp_path))}", "--runs-dir", str(runs),
                          check=False), *needles)
    assert not runs.exists(), "a refused run must leave no folder behind"


def test_init_from_a_policy_that_does_not_fit_leaves_no_folder(finished_run, tmp_path):
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path, policy={"name": "mlp", "net_arch": [16, 16]})  # the saved one has net_arch [32]
    proc = train(str(cfg), f"init_from={finished_run / 'done'}", "--runs-dir", str(runs), "--run-name", "x", check=False)
    _one_line_error(proc, "does not fit this config's policy")
    assert not runs.exists(), "the run folder made before the policy was built must be removed again"
