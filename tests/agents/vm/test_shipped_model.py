"""The VM policies shipped in models/: they load anywhere, plan real snapshots and explain themselves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models" / "vm_rescheduling"
# Each shipped policy and the training config its README must name.
SHIPPED = {"graph_bc": "configs/train/vm_bc.yaml", "graph_ppo": "configs/train/vm_ppo_from_bc.yaml"}


@pytest.fixture(scope="module")
def clear2():
    from digital_twin.vm import load_snapshot
    from digital_twin.vm.snapshot import SnapshotConsistencyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnapshotConsistencyWarning)
        return load_snapshot(ROOT / "data" / "vmr2l_snapshots" / "reset_vm_pm_id_clear2.json")


def test_every_shipped_vm_model_is_tested():
    assert sorted(p.name for p in MODELS.iterdir() if p.is_dir()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_folder_holds_what_explains_the_model(name):
    folder = MODELS / name
    for name_ in ("model.zip", "metadata.json", "train_config.yaml", "run.json", "training_eval.csv",
                 "training_curve.png", "README.md"):
        assert (folder / name_).is_file(), name_
    # One evaluation as evaluation/, several as evaluation/<run>/ each.
    evaluations = [folder / "evaluation"] if (folder / "evaluation" / "summary.json").is_file() else \
        sorted(p for p in (folder / "evaluation").iterdir() if p.is_dir())
    assert evaluations and all((e / f).is_file() for e in evaluations for f in ("summary.json", "episodes.csv"))
    assert (folder / "model.zip").stat().st_size < 5 * 2**20  # a few MB at most
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["env_id"] == "clustergym/VMRescheduling-v0" and metadata["selection_split"] == "val"
    readme = (folder / "README.md").read_text()
    assert f"python train.py {SHIPPED[name]}" in readme and "## Evaluation" in readme


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_it_plans_a_real_snapshot_better_than_doing_nothing(clear2, name):
    import torch

    from agents.vm import get_planner

    torch.set_num_threads(1)
    result = get_planner(f"agent:{MODELS / name}")(clear2, 50, seed=0)
    assert 0 < result.num_moves <= 50
    assert result.fr_after < result.fr_before  # replayed through the twin by finish_plan
