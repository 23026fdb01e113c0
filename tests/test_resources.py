"""Bundled files are found by their repository-relative name, from any working folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from digital_twin.resources import bundle_root, bundled_path, resolve_path

REPO = Path(__file__).resolve().parents[1]


def test_checkout_serves_its_own_folders():
    assert bundle_root() == REPO
    assert bundled_path("data/vmr2l_snapshots").is_dir() and bundled_path("configs/vm_rescheduling").is_dir()


def test_only_data_and_configs_are_bundled():
    for outside in ("README.md", "digital_twin/resources.py", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="bundled paths start with"):
            bundled_path(outside)


def test_user_paths_win_and_bundled_names_resolve_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "configs/vm_rescheduling/real_small.yaml"
    assert resolve_path(name) == REPO / name  # nothing of that name here: the bundled file
    (tmp_path / "configs/vm_rescheduling").mkdir(parents=True)
    (tmp_path / name).write_text("mine")
    assert resolve_path(name) == Path(name)  # a file of that name here comes first
    assert resolve_path("configs/missing.yaml") == Path("configs/missing.yaml")  # callers report it missing
    assert resolve_path("notes.txt") == Path("notes.txt")
