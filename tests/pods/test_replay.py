"""The openb replay end to end (``evaluate.py`` on a ``source: openb_replay`` config) on a tiny trace.

The trace is written here in the openb format (the two CSVs the loader reads), so the test needs
neither the research-use trace nor the shared folder: two CPU-only nodes; a hand-made opening (one
early pod, a quiet stretch, then a fragmentation only a re-placement solves) and a seeded random
second window.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from digital_twin.pods import PodCluster
from digital_twin.pods.openb import NODE_COLUMNS, POD_COLUMNS
from evaluation.cli import main
from evaluation.pod_replay import NODE_FILE, POD_FILE, plot_start

NODE_CPU, NODE_MEMORY = 4000, 8192
# (qos, cpu m, memory MiB, created s, deleted s). Both nodes start empty; LeastAllocated spreads:
# p0 on n0, p1 on n1, p2 on n0 (free 1500 m / 2500 m), so the LS p3 (3000 m) fits nowhere until p1
# leaves at 14000 s, but fits at once if p1 moves to n0. p4 (LS) then needs a BE pod Pending.
OPENING = [("BE", 1000, 1024, 0, 20000), ("BE", 1500, 1024, 10000, 14000), ("BE", 1500, 1024, 10000, 15000),
           ("LS", 3000, 2048, 10100, 18000), ("LS", 2000, 2048, 12000, 16000)]


def write_trace(folder: Path, seed: int = 0, random_pods: int = 30) -> None:
    """The two openb CSVs: :data:`OPENING`, then ``random_pods`` pods between 30000 s and 50000 s."""
    rng = np.random.default_rng(seed)
    pods = list(OPENING)
    for _ in range(random_pods):
        created = int(rng.integers(30000, 50000))
        pods.append((str(rng.choice(["LS", "Guaranteed", "Burstable", "BE"])), int(rng.choice([500, 1000, 1500, 2000, 3000])),
                     int(rng.integers(512, 4096)), created, created + int(rng.integers(500, 8000))))
    with open(folder / NODE_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(NODE_COLUMNS)
        w.writerows([[f"n{j}", NODE_CPU, NODE_MEMORY, 0, ""] for j in range(3)])   # max_nodes keeps 2
    with open(folder / POD_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(POD_COLUMNS)
        for i, (qos, cpu, mem, created, deleted) in enumerate(pods):
            w.writerow([f"p{i}", cpu, mem, 0, 0, "", qos, "Running", created, deleted, created])


@pytest.fixture
def replay(tmp_path, monkeypatch):
    """Run the replay through ``evaluate.py``'s entry point; every twin change is checked as it happens."""
    write_trace(tmp_path)
    config = tmp_path / "tiny_replay.yaml"
    config.write_text(f"name: tiny_replay\npod_scenarios:\n  source: openb_replay\n  trace_dir: {tmp_path}\n"
                      "  max_nodes: 2\ncpsat:\n  time_limits_s: [1]\n  workers: 1\n")
    changes = {"bind": 0, "move": 0, "evict": 0}
    for kind in changes:
        original = getattr(PodCluster, kind)

        def checked(self, *args, _original=original, _kind=kind, **kwargs):
            change = _original(self, *args, **kwargs)       # refuses (raises) an infeasible change
            assert self.capacity_violations() == [], f"{_kind} {args}: {self.capacity_violations()}"
            changes[_kind] += 1
            return change

        monkeypatch.setattr(PodCluster, kind, checked)
    status = main([str(config), "--out-dir", str(tmp_path / "out"), "--run-name", "run", "--no-progress"])
    assert status == 0
    return tmp_path / "out" / "run", changes


def test_tiny_openb_replay_end_to_end(replay):
    run, changes = replay
    for name in ("pending_over_time.csv", "summary.json", "table.md"):
        assert (run / name).stat().st_size > 0
    assert (run / "pending_over_time.png").stat().st_size > 10_000
    raw = list(csv.DictReader(open(run / "pending_over_time.csv")))
    policies = list(dict.fromkeys(r["policy"] for r in raw))
    assert policies == ["default", "default+cpsat@1s"]
    tiers = [k for k in raw[0] if k.startswith("pending_")]
    assert set(tiers) == {"pending_LS", "pending_Guaranteed", "pending_Burstable", "pending_BE"}
    rows = [{k: v if k == "policy" else float(v) if k in ("time_s", "day", "solve_max_s") else int(v)
             for k, v in r.items()} for r in raw]     # int() fails on anything but a whole number
    for r in rows:
        assert min(r[k] for k in ("live", "running", "pending", *tiers)) >= 0
        assert r["pending"] == sum(r[k] for k in tiers) and r["running"] + r["pending"] == r["live"]
    by_policy = {p: [r for r in rows if r["policy"] == p] for p in policies}
    default, cpsat = by_policy["default"], by_policy["default+cpsat@1s"]
    assert [r["time_s"] for r in default] == [r["time_s"] for r in cpsat]      # the same event instants
    assert default[-1]["live"] == cpsat[-1]["live"] == 0                       # every pod deleted at the end
    assert default[-1]["solves"] == default[-1]["evictions"] == default[-1]["moves"] == 0

    # CP-SAT re-places all live pods, lexicographically by tier, from the same live set at every
    # instant: it never leaves more top-tier (LS) pods Pending than the default at the same time.
    assert all(c["pending_LS"] <= d["pending_LS"] for d, c in zip(default, cpsat))
    at = {r["time_s"]: (d, r) for d, r in zip(default, cpsat)}
    assert at[10100][0]["pending_LS"] == 1 and at[10100][1]["pending_LS"] == 0    # p3: moving p1 makes room
    assert at[12000][1]["pending_BE"] == 1                                      # p4 costs a BE pod
    assert cpsat[-1]["solves"] > 0 and cpsat[-1]["moves"] > 0
    assert cpsat[-1]["solves_no_stage"] == 0 and 0 < cpsat[-1]["solve_max_s"] < 2    # every window reached a stage
    assert changes["move"] >= cpsat[-1]["moves"] and changes["bind"] > 0

    summary = json.loads((run / "summary.json").read_text())
    assert summary["pods"] == len(OPENING) + 30 and len(summary["nodes"]) == 2
    s = {x["policy"]: x for x in summary["summary"]}
    assert s["default+cpsat@1s"]["pending_LS_pod_hours"] < s["default"]["pending_LS_pod_hours"]
    hours = np.diff([r["time_s"] for r in default], append=default[-1]["time_s"]) / 3600
    assert s["default"]["pending_pod_hours"] == pytest.approx(np.dot([r["pending"] for r in default], hours), abs=0.01)

    # The plot starts where the pods arrive: after p0's early arrival and the quiet stretch to 10000 s.
    assert plot_start(rows) == 10000


def test_plot_start_keeps_a_lead_in_with_pending_pods():
    def row(t, pending):
        return {"policy": "default", "time_s": float(t), "pending": pending}

    busy = [row(1000 + t, t % 2) for t in range(40)]                     # 40 events from 1000 s
    assert plot_start([row(0, 0), row(10, 0), row(20, 0)]) == 0          # evenly spread: the first arrival
    assert plot_start([row(0, 0), *busy]) == 1000                        # one early pod, then quiet: left off
    assert plot_start([row(0, 1), *busy]) == 0                           # something Pending through it: kept
    assert plot_start([row(t, 0) for t in range(5)] + busy) == 0         # more than a few early events: kept


def test_a_list_of_neighbourhoods_is_one_policy_each(tmp_path):
    write_trace(tmp_path, random_pods=10)
    config = tmp_path / "hoods.yaml"
    config.write_text(f"pod_scenarios:\n  source: openb_replay\n  trace_dir: {tmp_path}\n  max_nodes: 2\n"
                      "cpsat:\n  time_limits_s: [1]\n  neighbourhood: [all, 1]\n")
    assert main([str(config), "--out-dir", str(tmp_path / "out"), "--run-name", "run", "--no-progress"]) == 0
    s = {x["policy"]: x for x in json.loads((tmp_path / "out" / "run" / "summary.json").read_text())["summary"]}
    assert list(s) == ["default", "default+cpsat@1s", "default+cpsat@1s/1nodes"]
    # on one node at a time the LS p3 gets in only by evicting BE pods; the whole cluster moves p1 next to p0 instead
    whole, one = s["default+cpsat@1s"], s["default+cpsat@1s/1nodes"]
    assert whole["pending_LS_pod_hours"] == one["pending_LS_pod_hours"] == 0
    assert whole["pending_pod_hours"] < one["pending_pod_hours"] and whole["moves"] > one["moves"] == 0
    assert all(x["solves_no_stage"] == 0 for x in s.values())


@pytest.mark.parametrize("value", ["0", "[all, -3]", "some", "[]"])
def test_a_bad_neighbourhood_is_one_line(tmp_path, capsys, value):
    write_trace(tmp_path, random_pods=1)
    config = tmp_path / "bad.yaml"
    config.write_text(f"pod_scenarios:\n  source: openb_replay\n  trace_dir: {tmp_path}\ncpsat:\n  neighbourhood: {value}\n")
    assert main([str(config), "--out-dir", str(tmp_path / "never"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpsat.neighbourhood must be 'all', a whole number >= 1" in err[0]
