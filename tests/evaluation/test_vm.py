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
        assert (r["budget"], r["budget_source"]) == ("8", "flag")
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
    # The VMR2L files say maximum_migration 10,000; the config's env.budget 50 applies, as in VMR2L.
    assert all((r["budget"], r["budget_source"]) == ("50", "config") for r in rows)
    clear2 = rows[0]
    assert clear2["reference"].startswith("best known (cpsat")
    assert float(clear2["best_share"]) == pytest.approx((0.9770444763 - float(clear2["fr_after"])) / (0.9770444763 - 0.5753228121), rel=1e-6)
    out = capsys.readouterr().out
    assert "| snapshot | method | n |" in out and "| reset_vm_pm_id_clear2.json | greedy | 1 |" in out
    assert "budget: 50 migrations for every method and episode, from the config's env.budget" in out


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


# ---------------------------------------------------------------------- the budget: one rule for all
@pytest.fixture(scope="module")
def limit_10_file(tmp_path_factory):
    """A small production-shaped snapshot file (deployment sets of both granularities) that says maximum_migration 10."""
    from digital_twin.vm import save_snapshot
    from digital_twin.vm.deployment_sets import production_like_snapshot

    snap = production_like_snapshot(seed=0, hosts=(12, 16), num_host_sets=6, num_rack_sets=2, hosts_per_rack=4)
    assert snap.requirement.maximum_migration == 10
    path = tmp_path_factory.mktemp("limit10") / "production_like.json"
    save_snapshot(snap, path)
    return path


def limit_10_config(folder, file, **env):
    import yaml

    path = folder / "limit10.yaml"
    path.write_text(yaml.safe_dump({
        "env": {"max_hosts": 40, "max_vms": 2000, **env},  # the tiny agent's padding
        "train_source": {"kind": "azure", "split": "dev", "num_hosts": 40},
        "eval_source": {"kind": "files", "split": "eval", "paths": [str(file)]},
    }))
    return str(path)


def test_every_method_and_the_env_play_the_files_budget_unless_overridden(tmp_path, limit_10_file, tiny_agent, capsys):
    from envs.vm_rescheduling import make_vm_env

    methods = ["random", "ffd", "greedy", "beam@0.05", "cpsat@2", f"agent:{tiny_agent}"]
    cases = [({}, [], 10, "snapshot"), ({"budget": 6}, [], 6, "config"), ({"budget": 6}, ["--budget", "4"], 4, "flag")]
    for env_section, flags, budget, source in cases:
        config = limit_10_config(tmp_path, limit_10_file, **env_section)
        run = f"b{budget}"
        assert main([config, "--policies", *methods, "--seeds", "0", *flags, "--out-dir", str(tmp_path),
                     "--run-name", run, "--no-progress"]) == 0
        rows = list(csv.DictReader(open(tmp_path / run / "episodes.csv")))
        assert [r["method"] for r in rows] == methods
        for r in rows:
            assert (int(r["budget"]), r["budget_source"]) == (budget, source), r["method"]
            assert int(r["migrations"]) <= budget
        assert int(rows[0]["migrations"]) == budget  # random spends the whole budget
        # The env of that config plays the episode at the same budget (without the flag, which is evaluate.py's).
        _, info = make_vm_env(config, "eval").reset(seed=0)
        assert info["budget"] == (budget if source != "flag" else 6)
        out = capsys.readouterr().out
        assert f"budget: {budget} migrations for every method and episode, from" in out
        assert f"budget: {budget} migrations" in (tmp_path / run / "table.md").read_text()
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["budgets"] == [{"budget": budget, "budget_source": source, "snapshots": ["production_like.json"]}]


def test_the_same_rule_for_planners_called_directly(limit_10_file):
    from agents.vm import get_planner
    from agents.vm.plan import resolve_budget
    from digital_twin.vm import load_snapshot

    snapshot = load_snapshot(limit_10_file)
    assert resolve_budget(snapshot) == (10, "snapshot")
    assert resolve_budget(snapshot, 3, "flag") == (3, "flag")
    for name in ("random", "ffd", "greedy"):  # budget=None: the snapshot's limit
        assert get_planner(name)(snapshot, None).budget == 10
        assert get_planner(name)(snapshot, 3).budget == 3
    assert get_planner("random")(snapshot).num_moves == 10


def test_the_budget_line_names_each_budget_when_episodes_differ():
    from evaluation.cli import budget_note

    rows = [{"snapshot": "a.json", "budget": 10, "budget_source": "snapshot"},
            {"snapshot": "b.json", "budget": 50, "budget_source": "default"},
            {"snapshot": "a.json", "budget": 10, "budget_source": "snapshot"}]
    note = budget_note(rows)
    assert "10 (the snapshot's general_requirement.maximum_migration) on a.json" in note
    assert "50 (the default (the snapshot states no maximum_migration)) on b.json" in note
    assert budget_note([{"method": "static", "scenario": "x"}]) is None  # autoscaling rows: no line
