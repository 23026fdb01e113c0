"""Run folders, model metadata and checkpoints: what ``train.py`` writes so that nothing is lost.

A run folder ``runs/<name>/`` holds::

    config.yaml          the resolved training config (every key, overrides applied)
    run.json             run id, command, start time, versions, git commit
    tb/                  TensorBoard scalars
    eval.csv             one row per periodic held-out evaluation
    checkpoint/          the latest restart point (model.zip, state.pkl, manifest.json)
    best/, last/         model.zip + metadata.json each, loadable anywhere

A checkpoint is written at a rollout boundary (after a PPO update, before the next rollout), so
resuming from it repeats exactly what the uninterrupted run would have done next. Its manifest
records the run id, the env id and the spaces it was trained on, and a SHA-256 per file, so a
truncated, foreign or mismatched checkpoint is refused with a message naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import yaml

CHECKPOINT_FORMAT = "clustergym-checkpoint/1"
MODEL_FORMAT = "clustergym-model/1"
_VERSIONED = ("numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "torch-geometric", "pettingzoo")


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be resumed: the message names the file and why."""


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries a saved model depends on."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def space_signature(space: Any) -> str:
    """A stable text form of a Gymnasium space (type, shapes, dtypes, bounds' extent)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {space_signature(v)}" for k, v in space.spaces.items()) + ")"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({int(space.n)})"
    if isinstance(space, spaces.MultiDiscrete):
        return f"MultiDiscrete({space.nvec.tolist()})"
    if isinstance(space, spaces.Box):
        return f"Box({space.shape}, {space.dtype})"
    return repr(space)


def new_run_dir(parent: Path, name: str | None, config_stem: str, config: dict[str, Any], command: list[str]) -> Path:
    """Create ``parent/<name>/`` (default name: ``<config>__s<seed>__<time>``) with config.yaml and run.json.

    Raises:
        CheckpointError: the folder exists already (resume it with ``--resume`` or pick another name).
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = parent / (name or f"{config_stem}__s{config['seed']}__{stamp}")
    if run_dir.exists():
        raise CheckpointError(f"{run_dir}: run folder exists already; continue it with --resume {run_dir} "
                              f"or choose another --run-name")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = {"run_id": uuid.uuid4().hex, "command": command, "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "versions": library_versions(), "git_commit": git_commit(), "host": platform.node()}
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    return run_dir


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, run info)`` of an existing run folder.

    Raises:
        CheckpointError: not a run folder of train.py, or its files are unreadable.
    """
    cfg, info = run_dir / "config.yaml", run_dir / "run.json"
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    for f in (cfg, info):
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; {run_dir} is not a run folder written by train.py")
    try:
        return yaml.safe_load(cfg.read_text()), json.loads(info.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{run_dir}: config.yaml or run.json is unreadable") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(run_dir: Path, files: dict[str, bytes], manifest: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint/`` atomically (a temporary folder renamed over the old one).

    Args:
        files: file name -> content.
        manifest: what the checkpoint is (run id, env id, spaces, step counters); hashes are added.
    """
    final = run_dir / "checkpoint"
    tmp = run_dir / f".checkpoint.tmp.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, content in files.items():
        (tmp / name).write_bytes(content)
    manifest = dict(manifest, format=CHECKPOINT_FORMAT,
                    files={name: _sha256(tmp / name) for name in files},
                    written=_dt.datetime.now().isoformat(timespec="seconds"))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    old = run_dir / f".checkpoint.old.{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def read_checkpoint(run_dir: Path, expect: dict[str, Any]) -> tuple[dict[str, Path], dict[str, Any]]:
    """Check ``run_dir/checkpoint/`` and return its files and manifest.

    Args:
        expect: manifest entries that must match (run id, env id, spaces); the first mismatch is named.

    Raises:
        CheckpointError: missing, truncated (hash mismatch), foreign or mismatched checkpoint.
    """
    folder = run_dir / "checkpoint"
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: no checkpoint to resume from (the run stopped before its first one)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{manifest_path}: unreadable (truncated or not a clustergym checkpoint)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{manifest_path}: not a {CHECKPOINT_FORMAT} checkpoint")
    paths = {}
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: content does not match its manifest hash (truncated or modified)")
        paths[name] = path
    for key, want in expect.items():
        have = manifest.get(key)
        if have != want:
            what = "another run's checkpoint" if key == "run_id" else f"{key} differs"
            raise CheckpointError(f"{manifest_path}: {what}: checkpoint has {have!r}, this run needs {want!r}")
    return paths, manifest


def save_model(folder: Path, model: Any, metadata: dict[str, Any]) -> Path:
    """Save an SB3 model as ``folder/model.zip`` with ``folder/metadata.json`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    (folder / "metadata.json").write_text(json.dumps(dict(metadata, format=MODEL_FORMAT), indent=2, default=str))
    return folder / "model.zip"


def python_command() -> list[str]:
    """The command line of this process, for run.json."""
    return [Path(sys.executable).name, *sys.argv]
