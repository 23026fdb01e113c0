"""``train.py --sweep`` on a local Ray: a 2-trial sweep interrupted, resumed and finished; the sweep
file's mistakes refused before Ray starts; the message without Ray."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from digital_twin.cli import ConfigError
from tests.training.test_train_cli import ROOT, tiny_config
from training.cli import main
from training.sweep import load_sweep, override_text

SWEEP = {"search": "grid", "space": {"ppo.learning_rate": {"grid": [1.0e-4, 1.0e-3]}},
         "scheduler": {"name": "asha", "grace_period": 1}, "resources": {"cpu": 1}}


def write_sweep(tmp: Path, doc: dict) -> Path:
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def train_py(*args: str) -> subprocess.Popen:
    # The environment as it is now: ray.init set RAY_AUTH_MODE=token, which a driver joining its cluster needs.
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sweep_interrupted_resumes_and_finishes(tmp_path, ray_local, capsys):
    address = ray_local.get_runtime_context().gcs_address
    cfg, sweep = tiny_config(tmp_path, total=256), write_sweep(tmp_path, SWEEP)
    sweep_dir = tmp_path / "runs" / "s"
    driver = train_py(str(cfg), "--sweep", str(sweep), "--runs-dir", str(tmp_path / "runs"), "--run-name", "s",
                      "--ray-address", address)
    deadline = time.monotonic() + 120
    while not list(sweep_dir.glob("trials/*/eval.csv")):  # interrupt once a trial has reported an evaluation
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[1][-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 0, err[-3000:]
    assert f"python train.py --resume {sweep_dir}" in err
    trials = sorted(p for p in (sweep_dir / "trials").iterdir() if p.is_dir())
    assert len(trials) == 2 and not all((t / "last").is_dir() for t in trials), "nothing was left to resume"

    # Resumed in this process, on the same Ray (its driver was the subprocess above).
    assert main(["--resume", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    rates = set()
    for trial in trials:
        # Each trial is an ordinary run folder, trained to the end exactly once per evaluation.
        config = yaml.safe_load((trial / "config.yaml").read_text())
        rates.add(config["ppo"]["learning_rate"])
        assert config["torch_threads"] == 1
        assert (trial / "last" / "model.zip").is_file() and (trial / "best" / "model.zip").is_file()
        with (trial / "eval.csv").open() as f:
            steps = [int(r["timesteps"]) for r in csv.DictReader(f)]
        assert steps == sorted(set(steps)) and steps[-1] == 256, steps
    assert rates == {1.0e-4, 1.0e-3}
    # Tune holds each trial's last reported checkpoint: a copy of the run's restart point.
    reported = list(sweep_dir.glob("run_trial_*/checkpoint_*/reported.json"))
    assert len(reported) == 2 and all((p.parent / "checkpoint" / "manifest.json").is_file() for p in reported)
    with (sweep_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert float(rows[0]["best_fr_final"]) <= float(rows[1]["best_fr_final"])
    assert json.loads((sweep_dir / "results.json").read_text())["metric"] == "fr_final"
    assert (sweep_dir / "hyperparameters.png").stat().st_size > 0
    assert "| rank | trial | status | ppo.learning_rate |" in out


@pytest.mark.parametrize("change, words", [
    ({"serach": "grid"}, ["unknown key 'serach'", "did you mean 'search'"]),
    ({"space": {"ppo.learnig_rate": {"grid": [1e-4]}}}, ["space.ppo.learnig_rate", "unknown key", "learning_rate"]),
    ({"space": {"ppo.learning_rate": {"grid": [-1.0]}}}, ["space.ppo.learning_rate value -1.0", "a number > 0"]),
    ({"space": {"ppo.learning_rate": {"loguniform": [1e-3, 1e-4]}}}, ["low < high"]),
    ({"space": {"ppo.learning_rate": {"normal": [0, 1]}}}, ["unknown distribution 'normal'"]),
    ({"space": {"ppo.learning_rate": {"uniform": [1e-4, 1e-3]}}}, ["search grid takes {grid: [...]} values only"]),
    ({"scheduler": "hyperband"}, ["scheduler 'hyperband' is not one of fifo, asha"]),
    ({"scheduler": {"name": "asha", "grace": 1}}, ["unknown key 'scheduler.grace'", "grace_period"]),
    ({"metric": "fr_finale"}, ["metric 'fr_finale'", "did you mean 'fr_final'"]),
    ({"metric": "gain"}, ["mode must be min or max"]),
    ({"resources": {"cpus": 1}}, ["unknown key 'resources.cpus'"]),
])
def test_sweep_file_mistakes_are_one_line_before_ray(tmp_path, change, words):
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, {**SWEEP, **change}), str(cfg), [])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "sweep.yaml") in message
    for word in words:
        assert word in message, message


def test_sweep_defaults_and_overrides(tmp_path):
    cfg = tiny_config(tmp_path, total=512)
    sweep = load_sweep(write_sweep(tmp_path, SWEEP), str(cfg), ["eval.every_timesteps=256"])
    assert (sweep["metric"], sweep["mode"]) == ("fr_final", "min")
    assert sweep["scheduler"] == {"name": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 3}
    assert sweep["resources"] == {"cpu": 1, "torch_threads": 1}
    assert override_text("ppo.learning_rate", 1e-5) == "ppo.learning_rate=1.0e-05"  # a number for YAML, not '1e-05'


def test_without_ray_the_sweep_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    cfg = tiny_config(tmp_path)
    assert main([str(cfg), "--sweep", str(write_sweep(tmp_path, SWEEP)), "--runs-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --sweep needs Ray, which is not installed; install it with pip install 'clustergym[ray]' "
                   "(or: make test, which installs it)"]
    assert not (tmp_path / "r").exists()


def test_ray_address_without_a_sweep_is_refused(tmp_path, capsys):
    assert main([str(tiny_config(tmp_path)), "--ray-address", "auto", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "--ray-address applies to --sweep" in capsys.readouterr().err
