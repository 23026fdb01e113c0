"""``evaluate.py --ray``: the cells as Ray tasks give the rows of a local run; a failing cell is
reported and retried, never dropped; the message without Ray."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from agents.vm import get_planner
from envs.vm_sources import load_vm_config
from evaluation.cli import main
from evaluation.ray_cells import run_cells_on_ray
from evaluation.vm import evaluate_vm

SMALL_VM = {
    "env": {"max_hosts": 10, "max_vms": 900, "budget": 6},
    "train_source": {"kind": "azure", "split": "dev", "num_hosts": 10, "fraction_range": [0.7, 1.0], "cuts_per_replay": 4},
    "eval_source": {"kind": "azure", "split": "test", "num_hosts": 10, "fraction_range": [0.7, 1.0], "cuts_per_replay": 4},
}
WALL_TIME = {"wall_s"}


def small_config(tmp: Path) -> Path:
    path = tmp / "vm_small.yaml"
    path.write_text(yaml.safe_dump(SMALL_VM))
    return path


def episodes(run: Path) -> list[dict[str, str]]:
    with (run / "episodes.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in WALL_TIME} for row in csv.DictReader(f)]


def comparable(rows: list[dict]) -> list[dict[str, str]]:
    """Rows without their wall time, values as text (so that NaN equals NaN)."""
    return [{k: repr(v) for k, v in r.items() if k not in WALL_TIME} for r in rows]


def test_ray_run_writes_the_rows_of_a_local_run(tmp_path, ray_local, capsys):
    cfg = small_config(tmp_path)
    common = [str(cfg), "--policies", "random", "ffd", "greedy", "--seeds", "0", "1", "--episodes", "2",
              "--out-dir", str(tmp_path), "--no-progress"]
    assert main([*common, "--run-name", "local"]) == 0
    assert main([*common, "--run-name", "ray", "--ray"]) == 0
    local, remote = episodes(tmp_path / "local"), episodes(tmp_path / "ray")
    assert len(local) == 3 * 2 * 2
    assert remote == local
    assert "retrying" not in capsys.readouterr().err


class FlakyPlanner:
    """Greedy, but the first ``failures`` calls in all (or every call) raise; marker files count them,
    since each attempt may run in another worker process."""

    def __init__(self, folder: Path, failures: int | None = None):
        self.folder, self.failures, self.greedy = folder, failures, get_planner("greedy")

    def __call__(self, snapshot, budget, time_limit_s=None, seed=0):
        if self.failures is None:
            raise OSError("disk full (injected)")
        for i in range(self.failures):
            try:
                (self.folder / f"failed-{i}").open("x").close()
            except FileExistsError:
                continue
            raise OSError("disk full (injected)")
        return self.greedy(snapshot, budget, time_limit_s=time_limit_s, seed=seed)


def test_a_failed_cell_is_reported_and_retried(tmp_path, ray_local, capsys):
    config = load_vm_config(small_config(tmp_path))
    local, _ = evaluate_vm(config, {"greedy": get_planner("greedy")}, [0], episodes=2, progress=False)
    rows, _ = evaluate_vm(config, {"greedy": FlakyPlanner(tmp_path, failures=2)}, [0], episodes=2, progress=False,
                          run_cells=run_cells_on_ray)
    assert comparable(rows) == comparable(local)
    err = capsys.readouterr().err
    assert err.count("ray: greedy on seed0-ep") == 2 and err.count("failed (OSError: disk full (injected)); retrying") == 2


def test_a_cell_that_keeps_failing_stops_the_evaluation(tmp_path, ray_local):
    config = load_vm_config(small_config(tmp_path))
    with pytest.raises(RuntimeError, match=r"greedy on seed0-ep0 \(seed 0\) failed \(OSError: disk full \(injected\)\) "
                                           r"after 3 attempts"):
        evaluate_vm(config, {"greedy": FlakyPlanner(tmp_path)}, [0], episodes=1, progress=False,
                    run_cells=run_cells_on_ray)


def test_without_ray_evaluate_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main([str(small_config(tmp_path)), "--policies", "greedy", "--ray", "--out-dir", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed; install it with pip install 'clustergym[ray]' "
        "(or: make test, which installs it)"]
    assert not (tmp_path / "out").exists()


def test_ray_is_refused_for_an_autoscaling_config(tmp_path, capsys):
    assert main(["configs/microservice_autoscaling/chain4_huawei.yaml", "--ray", "--out-dir", str(tmp_path)]) == 2
    assert "--ray: applies to VM-rescheduling configs only" in capsys.readouterr().err
