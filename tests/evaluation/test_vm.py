"""End-to-end: the evaluation command on VM rescheduling, tiny budgets, numbers checked for consistency."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.tables import bootstrap_ci

CONFIG = "configs/vm_rescheduling/azure_small.yaml"


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory):
    """A MaskablePPO model trained for a few steps on the training split, saved to disk."""
    from sb3_contrib import MaskablePPO

    from envs.vm_rescheduling import make_vm_env

    env = make_vm_env(CONFIG, "train")
    model = MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=64)
    path = tmp_path_factory.mktemp("agent") / "tiny.zip"
    model.save(path)
    return path


def test_evaluate_vm_writes_consistent_results(tmp_path, tiny_agent, capsys):
    rc = main([CONFIG, "--policies", "random", "greedy", "cpsat", f"agent:{tiny_agent}",
               "--seeds", "0", "1", "--budget", "8", "--time-limit", "3",
               "--out-dir", str(tmp_path), "--run-name", "e2e", "--no-progress"])
    assert rc == 0
    run = tmp_path / "e2e"
    for name in ("episodes.csv", "summary.json", "fr_vs_migrations.png", "time_per_plan.png", "quality_vs_time.png"):
        assert (run / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert len(rows) == 2 * 4
    methods = {r["method"] for r in rows}
    assert methods == {"random", "greedy", "cpsat", f"agent:{tiny_agent}"}
    for r in rows:
        assert r["split"] == "test"  # the held-out Azure split, never dev
        assert int(r["migrations"]) <= 8
        assert float(r["fr_after"]) >= 0.0
    by = {(r["method"], r["seed"]): r for r in rows}
    for seed in ("0", "1"):
        # Greedy never makes FR worse; CP-SAT is hinted with the current placement, so it never does either,
        # and once it proves optimality no plan within the budget beats it.
        assert float(by["greedy", seed]["fr_after"]) <= float(by["greedy", seed]["fr_before"])
        assert float(by["cpsat", seed]["fr_after"]) <= float(by["cpsat", seed]["fr_before"])
        if by["cpsat", seed]["status"] == "OPTIMAL":
            assert float(by["cpsat", seed]["fr_after"]) <= float(by["greedy", seed]["fr_after"]) + 1e-12
            assert float(by["cpsat", seed]["bound_fr"]) == pytest.approx(float(by["cpsat", seed]["fr_after"]))
        # The reference is the best plan of the episode (CP-SAT's here), and the table says so.
        assert by["cpsat", seed]["reference"] == min((by[m, seed] for m in methods), key=lambda r: float(r["fr_after"]))["method"]
        best = min(float(by[m, seed]["fr_after"]) for m in methods)
        for m in methods:
            r = by[m, seed]
            gain = float(r["fr_before"]) - best
            assert float(r["best_share"]) == pytest.approx((float(r["fr_before"]) - float(r["fr_after"])) / gain)
        # Every method saw the same snapshot.
        assert len({by[m, seed]["fr_before"] for m in methods}) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split"] == "test" and summary["seeds"] == [0, 1]
    for entry in summary["summary"]:
        values = [float(r["fr_after"]) for r in rows if r["method"] == entry["method"]]
        assert entry["fr_after"]["mean"] == pytest.approx(np.mean(values))
        lo, hi = entry["fr_after"]["ci95"]
        assert lo <= entry["fr_after"]["mean"] <= hi
    out = capsys.readouterr().out
    assert "| method | n | FR before | final FR | share of best gain |" in out
    assert "| greedy | 2 |" in out


def test_time_limits_make_a_quality_vs_time_curve(tmp_path, capsys):
    # beam is time-budgeted: --time-limits runs it at each limit; greedy is not, and beam@0.05 keeps its own.
    rc = main([CONFIG, "--policies", "greedy", "beam", "beam@0.05", "--time-limits", "0.01", "0.2",
               "--seeds", "0", "--budget", "6", "--out-dir", str(tmp_path), "--run-name", "qt", "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "qt" / "episodes.csv")))
    assert [r["method"] for r in rows] == ["greedy", "beam@0.01", "beam@0.2", "beam@0.05"]
    assert [float(r["time_limit_s"]) for r in rows[1:]] == [0.01, 0.2, 0.05]
    summary = json.loads((tmp_path / "qt" / "summary.json").read_text())
    assert summary["policies"] == ["greedy", "beam@0.01", "beam@0.2", "beam@0.05"]
    assert (tmp_path / "qt" / "quality_vs_time.png").stat().st_size > 0


def test_file_sources_play_every_file_against_its_best_known_plan(tmp_path, capsys):
    """Each real file is an episode of its own; clear2's reference is its proven optimum at MNL 50."""
    rc = main(["configs/vm_rescheduling/vmr2l_like_small.yaml", "--policies", "greedy", "--seeds", "0",
               "--out-dir", str(tmp_path), "--run-name", "files", "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "files" / "episodes.csv")))
    assert [r["snapshot"] for r in rows] == ["reset_vm_pm_id_clear2.json", "reset_vm_pm_id_clear_big2.json"]
    clear2 = rows[0]
    assert clear2["reference"].startswith("best known (cpsat")
    assert float(clear2["best_share"]) == pytest.approx((0.9770444763 - float(clear2["fr_after"])) / (0.9770444763 - 0.5753228121), rel=1e-6)
    out = capsys.readouterr().out
    assert "| snapshot | method | n |" in out and "| reset_vm_pm_id_clear2.json | greedy | 1 |" in out


def test_summary_json_is_valid_json_without_nan(tmp_path):
    from evaluation.tables import write_json

    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [np.float64("inf"), 1.0], "c": np.array([np.nan, 2.0])})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": [None, 2.0]}


# User mistakes (bad numbers, unknown policies, ...) are in test_cli_errors.py, one case list per class.


def test_bootstrap_interval():
    mean, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    assert bootstrap_ci([5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
