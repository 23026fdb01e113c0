"""End-to-end: the evaluation command on microservice autoscaling, tiny budgets, numbers checked for consistency."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from evaluation.autoscaling import evaluate_autoscaling, failure_steps, minute_text
from evaluation.cli import main
from evaluation.metrics import autoscaling_episode_metrics, longest_run, recovery_minutes

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
    # Every scenario and method played the same held-out window in each episode, named by its first minute.
    for episode in ("0", "1"):
        assert len({(r["window_start_step"], r["window_start"]) for r in rows if r["episode"] == episode}) == 1
    assert all(re.fullmatch(r"1998-06-(27|28|29|30) \d\d:\d\d", r["window_start"]) for r in rows)
    starts = [next(r["window_start"] for r in rows if r["episode"] == e) for e in ("0", "1")]
    table = (run / "table.md").read_text()
    assert f"held-out windows (160 steps each; the same for every scenario and method) start at: seed 0 " \
           f"{starts[0]}, {starts[1]}" in table and "k8s_hpa: the HPA groups pods as Go's controller does" in table
    assert json.loads((run / "summary.json").read_text())["windows"][0]["window_start"] == starts[0]
    assert all(np.isfinite(float(r["episode_return"])) and float(r["episode_return"]) <= 0 for r in rows)
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
    assert "recovery min | return |" in out and "held-out windows (160 steps each;" in out


def test_recovery_and_breach_helpers():
    v = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    assert longest_run(v) == 2
    # From onset step 2: good stretches of 3 steps start at step 6 -> 4 steps after the onset.
    assert recovery_minutes(v, onset_step=2, step_minutes=0.25, hold_steps=3) == pytest.approx(4 * 0.25)
    assert recovery_minutes(v, onset_step=0, step_minutes=0.25, hold_steps=2) == 0.0
    assert np.isnan(recovery_minutes(v, onset_step=2, step_minutes=0.25, hold_steps=5))
    assert np.isnan(recovery_minutes(np.ones(8, bool), onset_step=2, step_minutes=0.25, hold_steps=1))
    assert np.isnan(recovery_minutes(v, onset_step=None, step_minutes=0.25, hold_steps=1))


def test_recovery_covers_the_failures_whole_effect():
    # pod_crashes of online_boutique_heldout_day on 06-30: crashes 20:00-20:25 (day minutes 1200-1225);
    # the SLO holds for 15 minutes after the onset, then breaks from 1215 to 1310.
    day, per_minute = 1440 * 4, 4
    crashes = {"kind": "pod_crash", "services": ["frontend"], "rate_per_pod_per_hour": 12, "start_minute": 1200,
               "duration_minutes": 25}
    onset, end = failure_steps([crashes], day, 15.0)
    assert (onset, end) == (1200 * per_minute, 1225 * per_minute)
    violated = np.zeros(day)
    violated[1215 * per_minute:1310 * per_minute] = 1
    arrays = {"slo_violated": violated, "e2e_latency_p95": np.ones(day), "dropped_requests": np.zeros(day),
              "pod_seconds": np.ones(day), "reward": np.full(day, -0.5)}
    metrics = autoscaling_episode_metrics(arrays, 0.25, onset, 2.0, 20, end)
    assert metrics["slo_violation_minutes"] == 95.0 and metrics["recovery_minutes"] == 110.0  # to 21:50, not 0
    assert metrics["episode_return"] == -0.5 * day
    # A breach that starts later than the hold time after the failure's end is not its effect.
    violated[:] = 0
    violated[1202 * per_minute:1210 * per_minute] = 1
    violated[1300 * per_minute:1305 * per_minute] = 1
    assert recovery_minutes(violated > 0, onset, 0.25, 20, end) == 10.0
    # ... one that starts within it is.
    violated[1228 * per_minute:1232 * per_minute] = 1
    assert recovery_minutes(violated > 0, onset, 0.25, 20, end) == 32.0
    # A failure that lasts to the episode's end: recovered once the SLO holds until the end.
    noisy = {"kind": "contention", "node": "node-1", "cpu": 3.0, "start_minute": 1}
    assert failure_steps([noisy], 40, 15.0) == (4, 40)
    tail = np.zeros(40, bool)
    tail[4:10] = True
    assert recovery_minutes(tail, 4, 0.25, 20, 40) == 1.5
    tail[-1] = True
    assert np.isnan(recovery_minutes(tail, 4, 0.25, 20, 40))
    # A kill is an instant (one step); an entry after the window's end does not act.
    assert failure_steps([{"kind": "pod_crash", "kill": 2, "start_minute": 8}], 160, 15.0) == (32, 33)
    assert failure_steps([{"kind": "ddos", "rate": 5, "start_minute": 50}], 160, 15.0) is None
    assert failure_steps([], 160, 15.0) is None


def test_api_takes_a_config_and_the_train_split():
    """The trainers' call: a config object (overrides applied), the train split, the env's return per row."""
    from agents.autoscaling import deltas_for, make_policy
    from envs.microservice import MicroserviceCore, load_config

    config = load_config(CONFIG, window_steps=24)
    policies = [make_policy("static"), make_policy("k8s_hpa")]
    rows, data = evaluate_autoscaling(config, policies, seeds=[3], episodes=2, scenarios=["calm", "pod_crashes"],
                                      split="train", progress=False)
    assert len(rows) == 2 * 2 * 2 and {r["split"] for r in rows} == {"train"} and data["split"] == "train"
    core = MicroserviceCore(config, num_clusters=2, split="train")
    train_starts = set(core.window_starts["train"].tolist())
    for r in rows:
        assert r["steps"] == 24 and r["window_start_step"] in train_starts
        assert r["window_start"] == minute_text(core.step_minutes[r["window_start_step"]])
    for episode in (0, 1):
        assert len({r["window_start"] for r in rows if r["episode"] == episode}) == 1
    assert data["window_start"] == rows[0]["window_start"]
    # pod_crashes starts at minute 5 (step 20) and runs past the 24-step window: its recovery is measured.
    assert {r["scenario"] for r in rows if not np.isnan(r["recovery_minutes"])} <= {"pod_crashes"}
    # episode_return: the env core's reward summed over the episode, replayed here with the same generator.
    rng = np.random.default_rng(3)
    core.reset(rng, options={"scenario": "calm", "split": "train"})
    static = make_policy("static")
    static.reset(core)
    total = np.zeros(2)
    for t in range(24):
        reward, _, _ = core.step(deltas_for(core, static.desired_replicas(core, t * config.step_seconds)), rng)
        total += reward
    got = [r["episode_return"] for r in rows if r["method"] == "static" and r["scenario"] == "calm"]
    assert got == pytest.approx(total.tolist())
    with pytest.raises(ValueError, match="split must be 'held_out' or 'train', got 'test'"):
        evaluate_autoscaling(config, policies, seeds=[0], split="test", progress=False)


# User mistakes (unknown policies and scenarios, ...) are in test_cli_errors.py, one case list per class.
