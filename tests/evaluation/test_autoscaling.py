"""End-to-end: the evaluation command on microservice autoscaling, tiny budgets, numbers checked for consistency."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.metrics import longest_run, recovery_minutes

CONFIG = "configs/microservice_autoscaling/online_boutique_failures.yaml"


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory):
    """A PPO model trained for a few steps on the single-agent env's training split."""
    from stable_baselines3 import PPO

    from envs.microservice import MicroserviceAutoscalingEnv

    env = MicroserviceAutoscalingEnv("online_boutique_failures")
    model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=32)
    path = tmp_path_factory.mktemp("agent") / "ms.zip"
    model.save(path)
    return path


def test_evaluate_autoscaling_writes_consistent_results(tmp_path, tiny_agent, capsys):
    rc = main([CONFIG, "--policies", "static", "threshold", "k8s_hpa", f"agent:{tiny_agent}",
               "--scenarios", "calm", "ddos_flood", "--seeds", "0", "--episodes", "2",
               "--out-dir", str(tmp_path), "--run-name", "e2e", "--no-progress"])
    assert rc == 0
    run = tmp_path / "e2e"
    for name in ("episodes.csv", "summary.json", "timeseries_calm.png", "timeseries_ddos_flood.png",
                 "slo_minutes_by_scenario.png"):
        assert (run / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert len(rows) == 2 * 4 * 2  # scenarios x methods x episodes
    for r in rows:
        assert r["split"] == "held_out"
        minutes = float(r["slo_violation_minutes"])
        assert 0.0 <= minutes <= int(r["steps"]) * 0.25
        assert float(r["success"]) in (0.0, 1.0)
        assert float(r["pod_hours"]) > 0
    # All methods played the same held-out windows.
    for scenario in ("calm", "ddos_flood"):
        starts = {(r["method"], r["episode"]): r["window_start_step"] for r in rows if r["scenario"] == scenario}
        for episode in ("0", "1"):
            assert len({v for (m, e), v in starts.items() if e == episode}) == 1
    # Static keeps 5 replicas on 10 services and 1 on redis-cart: 51 pods for 40 minutes = 34 pod-hours.
    static = [r for r in rows if r["method"] == "static" and r["scenario"] == "calm"]
    assert all(float(r["pod_hours"]) == pytest.approx(51 * 40 / 60) for r in static)
    # The flood breaks the SLO for the static fleet; recovery is measured from the onset.
    flood = [r for r in rows if r["method"] == "static" and r["scenario"] == "ddos_flood"]
    assert all(float(r["slo_violation_minutes"]) > 0 for r in flood)
    summary = json.loads((run / "summary.json").read_text())
    for entry in summary["summary"]:
        values = [float(r["pod_hours"]) for r in rows if r["method"] == entry["method"] and r["scenario"] == entry["scenario"]]
        assert entry["pod_hours"]["mean"] == pytest.approx(np.mean(values))
    out = capsys.readouterr().out
    assert "| scenario | method | n | SLO-violation min |" in out and "| ddos_flood | k8s_hpa | 2 |" in out


def test_recovery_and_breach_helpers():
    v = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    assert longest_run(v) == 2
    # From onset step 2: good stretches of 3 steps start at step 6 -> 4 steps after the onset.
    assert recovery_minutes(v, onset_step=2, step_minutes=0.25, hold_steps=3) == pytest.approx(4 * 0.25)
    assert recovery_minutes(v, onset_step=0, step_minutes=0.25, hold_steps=2) == 0.0
    assert np.isnan(recovery_minutes(v, onset_step=2, step_minutes=0.25, hold_steps=5))
    assert np.isnan(recovery_minutes(np.ones(8, bool), onset_step=2, step_minutes=0.25, hold_steps=1))
    assert np.isnan(recovery_minutes(v, onset_step=None, step_minutes=0.25, hold_steps=1))


# User mistakes (unknown policies and scenarios, ...) are in test_cli_errors.py, one case list per class.
