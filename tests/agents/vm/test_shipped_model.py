"""The VM policy shipped in models/: it loads anywhere, plans real snapshots and explains itself."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "vm_rescheduling" / "graph_bc"


@pytest.fixture(scope="module")
def clear2():
    from digital_twin.vm import load_snapshot
    from digital_twin.vm.snapshot import SnapshotConsistencyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnapshotConsistencyWarning)
        return load_snapshot(ROOT / "data" / "vmr2l_snapshots" / "reset_vm_pm_id_clear2.json")


def test_the_folder_holds_what_explains_the_model():
    for name in ("model.zip", "metadata.json", "train_config.yaml", "run.json", "training_eval.csv",
                 "training_curve.png", "README.md", "evaluation/summary.json", "evaluation/episodes.csv"):
        assert (SHIPPED / name).is_file(), name
    assert (SHIPPED / "model.zip").stat().st_size < 5 * 2**20  # a few MB at most
    metadata = json.loads((SHIPPED / "metadata.json").read_text())
    assert metadata["env_id"] == "clustergym/VMRescheduling-v0" and metadata["selection_split"] == "val"
    readme = (SHIPPED / "README.md").read_text()
    assert "python train.py configs/train/vm_bc.yaml" in readme and "## Evaluation" in readme


def test_it_plans_a_real_snapshot_better_than_doing_nothing(clear2):
    import torch

    from agents.vm import get_planner

    torch.set_num_threads(1)
    result = get_planner(f"agent:{SHIPPED}")(clear2, 50, seed=0)
    assert 0 < result.num_moves <= 50
    assert result.fr_after < result.fr_before  # replayed through the twin by finish_plan
