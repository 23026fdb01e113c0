"""``evaluate.py configs/pod_packing/*.yaml`` end to end on the small config, and its user mistakes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evaluation.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = str(ROOT / "configs" / "pod_packing" / "small.yaml")


def test_small_config_end_to_end(tmp_path, capsys):
    status = main([SMALL, "--out-dir", str(tmp_path), "--run-name", "run", "--no-progress", "--episodes", "4",
                   "--seeds", "0", "1", "--time-limits", "0.3", "1"])
    assert status == 0
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert len(rows) == 8 and {r["method"] for r in rows} == {"cpsat@0.3s", "cpsat@1s"}
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["plan_valid"] == "1" for r in rows)          # every plan replays through the twin
    assert all(int(r["pending_default"]) > 0 for r in rows)   # only scenarios where the default leaves pods Pending
    assert all(r["worse"] == "0" for r in rows)               # hinted with the default's placement: never worse
    assert all(float(r["wall_s"]) < float(r["time_limit_s"]) + 1.0 for r in rows)  # model build included
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scenarios"] == 4 and summary["paper"]["better@1"] == 0.44
    assert (run / "pod_packing_shares.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "CP-SAT better" in out and "plans replayed through the twin: 8 of 8 valid" in out


@pytest.mark.parametrize("argv, expected", [
    (["{cfg}", "--budget", "3"], "--budget: does not apply to pod-packing configs"),
    (["{cfg}", "--policies", "greedy"], "--policies: does not apply to pod-packing configs"),
    (["{typo}"], "unknown key 'pod_scenarios.nodes' (did you mean 'node_counts'?); allowed under pod_scenarios:"),
    (["{bad}"], "cpsat.time_limits_s must be a list of seconds > 0, got [0]"),
])
def test_user_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    (tmp_path / "typo.yaml").write_text("pod_scenarios: {count: 1, nodes: [4]}\n")
    (tmp_path / "bad.yaml").write_text("pod_scenarios: {count: 1}\ncpsat: {time_limits_s: [0]}\n")
    argv = [a.format(cfg=SMALL, typo=tmp_path / "typo.yaml", bad=tmp_path / "bad.yaml") for a in argv]
    status = main([*argv, "--out-dir", str(tmp_path / "never"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert not (tmp_path / "never").exists()
