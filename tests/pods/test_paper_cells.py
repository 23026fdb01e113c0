"""The paper's per-cell comparison: its categories, stratified scenarios, its tables as transcribed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.pods import load_pod_config, paper_outcome, preempting_default, scenario_cells, scenarios
from evaluation.priority_matters import cells_markdown, compare_cells, paper_cell, paper_mean

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("status, placed, preempting, outcome", [
    ("OPTIMAL", (3, 4), (3, 4), "no_calls"),          # the preempting default placed all 7 pods: never a solver call
    ("OPTIMAL", (3, 2), (3, 2), "kwok_optimal"),
    ("OPTIMAL", (3, 3), (3, 2), "better_optimal"),
    ("OPTIMAL", (3, 1), (3, 2), "failed"),            # proved in the paper's order, yet fewer: a failure there
    ("FEASIBLE", (4, 0), (3, 2), "better"),           # lexicographic: one more top-tier pod beats two lower ones
    ("FEASIBLE", (3, 2), (3, 2), "failed"),           # unproved and no better
    ("UNKNOWN", (3, 2), (2, 2), "failed"),
])
def test_paper_outcome_is_the_papers_categories(status, placed, preempting, outcome):
    assert paper_outcome(status, placed, preempting, pods=7) == outcome


def test_the_papers_tables_as_transcribed():
    # the 4-node, 4-pods-per-node cells of its 1 s tables, averaged over the four utilisation rows
    assert paper_cell("kwok_optimal", 4, 4, 4, 1) == pytest.approx((48 + 57 + 57 + 64) / 4)
    assert paper_cell("better", 1, 4, 4, 1.0) == pytest.approx((74 + 85 + 86 + 92) / 4)
    assert paper_cell("better", 4, 8, 32, 1) == 0.0            # its solver found nothing on 32 nodes within 1 s
    assert paper_cell("better", 1, 8, 32, 10) == pytest.approx((65 + 62 + 14) / 3)   # no seed at 0.90: averaged over 3
    assert paper_cell("better", 4, 4, 4, 20) is None and paper_cell("better", 4, 4, 4, 0.5) is None
    assert paper_cell("better", 3, 4, 4, 1) is None and paper_cell("better", 4, 4, 12, 1) is None
    assert paper_mean("kwok_optimal", 1, [(4, 4, 4), (4, 4, 12)]) == pytest.approx(56.5)
    assert 44 < paper_mean("better", 1) < 60 and 5 < paper_mean("kwok_optimal", 1) < 19   # its abstract's figures are not cell means


def _config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    import yaml

    return load_pod_config(path, yaml.safe_load(text))


def test_stratified_scenarios_cycle_through_every_cell(tmp_path):
    config = _config(tmp_path, "pod_scenarios: {count: 8, stratify: true, node_counts: [4, 8], pods_per_node: [4],"
                               " priority_levels: [1, 2]}\nscheduler: {queue: arrival}\n")
    cells = scenario_cells(config)
    assert cells == [(4, 4, 1), (4, 4, 2), (8, 4, 1), (8, 4, 2)]
    drawn = list(scenarios(config, [0, 1], 8))
    assert [(spec.num_nodes, spec.pods_per_node, spec.num_priorities) for *_, spec, _, _ in drawn] == cells * 2
    assert [seed for _, seed, *_ in drawn] == [0] * 4 + [1] * 4     # the seeds cycle once per round of cells
    for k, seed, attempt, spec, cluster, fresh in drawn:
        assert cluster.pending.any() and (fresh.pod_node < 0).all()   # the default left pods Pending; the draw untouched
        assert fresh.num_pods == cluster.num_pods == spec.num_nodes * spec.pods_per_node
    again = list(scenarios(config, [0, 1], 8))
    assert [c.pod_node.tolist() for *_, c, _ in again] == [c.pod_node.tolist() for *_, c, _ in drawn]   # seeded


def test_unstratified_draws_are_as_before(tmp_path):
    # without stratify, scenario k is rng([seed, attempt]) from the whole mix, as every earlier result was drawn
    config = _config(tmp_path, "pod_scenarios: {count: 3, node_counts: [4, 8]}\nscheduler: {queue: arrival}\n")
    assert scenario_cells(config) is None
    for k, seed, attempt, spec, cluster, fresh in scenarios(config, [5], 3):
        redrawn, again = config["generator"](np.random.default_rng([seed, attempt]))
        assert again == spec and redrawn.pod_cpu.tolist() == fresh.pod_cpu.tolist()


def test_preempting_default_schedules_a_copy_of_the_draw(tmp_path):
    config = _config(tmp_path, "pod_scenarios: {count: 2, priority_levels: [4], node_counts: [4]}\n"
                               "scheduler: {queue: arrival}\n")
    for *_, cluster, fresh in scenarios(config, [0], 2):
        before = fresh.pod_node.copy()
        preempted = preempting_default(config, fresh)
        assert (fresh.pod_node == before).all() and not preempted.capacity_violations()
        # preemption never leaves the top tier worse than the plain default's run
        assert preempted.placed_by_tier()[0] >= cluster.placed_by_tier()[0]


def test_compare_cells_and_its_table():
    rows = [{"time_limit_s": 1.0, "priorities": 4, "pods_per_node": 4, "nodes": 4, "paper_no_calls": 0,
             "paper_default_certified": c, "paper_better": 1 - c, "paper_failed": 0} for c in (1, 1, 0, 1)]
    rows.append({"time_limit_s": 1.0, "priorities": 2, "pods_per_node": 8, "nodes": 12, "paper_no_calls": 1,
                 "paper_default_certified": 0, "paper_better": 0, "paper_failed": 0})
    entries = compare_cells(rows)
    assert [(e["priorities"], e["scenarios"]) for e in entries] == [(2, 1), (4, 4)]
    four = entries[1]
    assert four["paper_default_certified"] == 75.0 and four["paper_better"] == 25.0
    assert four["paper_kwok_optimal_ref"] == pytest.approx(56.5) and entries[0]["paper_better_ref"] is None
    table, notes = cells_markdown(entries)
    assert "| 1 | 4 | 4 | 4 | 4 | 0 | 75 | 25 | 0 | 36 | 56 |" in table and "| - | - |" in table
    assert notes == ["1 s, mean over the 1 cells both have (equal weights): Better 25% (paper 36%), KWOK Optimal 75% "
                     "(paper 56%), No Calls 0%, Failures 0%"]


def test_paper_cells_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "cells.yaml"
    cfg.write_text("name: cells\npod_scenarios: {count: 2, stratify: true, node_counts: [4], pods_per_node: [4],"
                   " priority_levels: [1, 4]}\nscheduler: {queue: arrival}\ncpsat: {time_limits_s: [1]}\n"
                   "paper_protocol: true\n")
    assert main([str(cfg), "--out-dir", str(tmp_path), "--run-name", "run", "--no-progress", "--seeds", "0"]) == 0
    run = tmp_path / "run"
    cells = list(csv.DictReader(open(run / "paper_cells.csv")))
    assert [(c["priorities"], c["scenarios"]) for c in cells] == [("1", "1"), ("4", "1")]
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    for r in rows:    # exactly one category per scenario
        assert sum(int(r[k]) for k in ("paper_no_calls", "paper_default_certified", "paper_better", "paper_failed")) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["paper_cells"]) == 2 and (run / "paper_cells.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "Per cell, the paper's categories" in out and "1 s, mean over the 2 cells both have" in out


def test_stratify_must_be_a_boolean(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("pod_scenarios: {count: 1, stratify: 3}\n")
    status = main([str(tmp_path / "s.yaml"), "--out-dir", str(tmp_path / "never"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"error: {tmp_path / 's.yaml'}: pod_scenarios.stratify must be true or false, got 3"]
