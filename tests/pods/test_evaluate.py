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


def test_paper_protocol_adds_the_papers_default_certified_column(tmp_path, capsys):
    # small.yaml with paper_protocol on: a second, per-tier CP-SAT solve and the preempting default per scenario
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(Path(SMALL).read_text() + "paper_protocol: true\n")
    status = main([str(cfg), "--out-dir", str(tmp_path), "--run-name", "run", "--no-progress", "--episodes", "3",
                   "--seeds", "0", "--time-limits", "1"])
    assert status == 0
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert len(rows) == 3
    for r in rows:
        paper, pre = (tuple(map(int, r[k].split("/"))) for k in ("paper_cpsat_placed", "preempting_default_placed"))
        assert r["paper_default_certified"] == str(int(r["paper_status"] == "OPTIMAL" and paper == pre
                                                       and sum(pre) < int(r["pods"])))   # else "No Calls"
        assert paper[0] == tuple(map(int, r["cpsat_placed"].split("/")))[0] or r["paper_status"] != "OPTIMAL" \
            or r["status"] != "OPTIMAL"                    # both orders certify the same top-tier count
    summary = json.loads((run / "summary.json").read_text())
    assert summary["paper_protocol"] is True and "paper_default_certified" in summary["summary"][0]
    assert "default_optimal" in summary["summary"][0]   # the existing columns stay
    out = capsys.readouterr().out
    assert "paper protocol: preempting default certified optimal" in out and "paper protocol (its code's" in out
    assert all(r["paper_plan_valid"] == "1" for r in rows) and "paper-order plans replayed: 3 of 3 valid" in out


def test_paper_protocol_is_off_by_default(tmp_path):
    status = main([SMALL, "--out-dir", str(tmp_path), "--run-name", "run", "--no-progress", "--episodes", "1",
                   "--seeds", "0", "--time-limits", "0.3"])
    assert status == 0
    row = next(csv.DictReader(open(tmp_path / "run" / "episodes.csv")))
    assert "paper_default_certified" not in row and "paper_status" not in row


@pytest.mark.parametrize("argv, expected", [
    (["{cfg}", "--budget", "3"], "--budget: does not apply to pod-packing configs"),
    (["{cfg}", "--policies", "greedy"], "--policies: does not apply to pod-packing configs"),
    (["{typo}"], "unknown key 'pod_scenarios.nodes' (did you mean 'node_counts'?); allowed under pod_scenarios:"),
    (["{bad}"], "cpsat.time_limits_s must be a list of seconds > 0, got [0]"),
    (["{paper}"], "paper_protocol must be true or false, got 'yes please'"),
])
def test_user_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    (tmp_path / "typo.yaml").write_text("pod_scenarios: {count: 1, nodes: [4]}\n")
    (tmp_path / "bad.yaml").write_text("pod_scenarios: {count: 1}\ncpsat: {time_limits_s: [0]}\n")
    (tmp_path / "paper.yaml").write_text("pod_scenarios: {count: 1}\npaper_protocol: yes please\n")
    argv = [a.format(cfg=SMALL, typo=tmp_path / "typo.yaml", bad=tmp_path / "bad.yaml", paper=tmp_path / "paper.yaml")
            for a in argv]
    status = main([*argv, "--out-dir", str(tmp_path / "never"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "pod_packing").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_pod_config_loads(path):
    import yaml

    from evaluation.pod_replay import load_replay_config
    from evaluation.pods import load_pod_config

    doc = yaml.safe_load(path.read_text())
    replay = doc["pod_scenarios"].get("source") == "openb_replay"
    config = (load_replay_config if replay else load_pod_config)(path, doc)
    assert config["time_limits_s"] and doc["description"].strip()
    assert f"configs/pod_packing/{path.name}" in doc["description"]   # each says how to run it
