"""A wheel built from the repository works outside the checkout.

The wheel is built from a copy of the source tree and installed (without dependencies) into a
temporary venv that borrows this interpreter's third-party packages through a ``.pth`` file, so
no network and no second copy of torch are needed; the editable clustergym of the dev venv stays
invisible there (its ``.pth`` hook lives in a folder the temporary venv only appends to its path).
Everything then runs from an empty folder, with nothing pointing at the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("digital_twin", "envs", "agents", "controller", "evaluation", "training")
BUNDLED_FOLDERS = ("data", "configs")
# What a fresh clone would not have, or a build does not need.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "results", "runs", "wandb")


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built with this venv's setuptools (no build isolation: no network)."""
    # The build requirements (pyproject.toml) must be in this venv: a missing one fails here, plainly.
    import setuptools  # noqa: F401
    import wheel as _  # noqa: F401

    root = tmp_path_factory.mktemp("build")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(root / "dist"), str(source)], cwd=root)
    (built,) = (root / "dist").glob("clustergym-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A temporary venv with only the wheel installed; third-party packages come from this interpreter's."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv).strip())
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "project_dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          "--no-compile", str(wheel)], cwd=venv)
    return python


@pytest.fixture()
def elsewhere(tmp_path) -> tuple[Path, dict[str, str]]:
    """An empty working folder and an environment that points nowhere near the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    # The twin's compiled step is tested by the suite; here the point is the files, so skip its compile (~10 s).
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", NUMBA_DISABLE_JIT="1", PYTHONNOUSERSITE="1")
    return tmp_path, env


def test_wheel_holds_every_package_and_bundled_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in CODE_PACKAGES:
        for module in (REPO / package).rglob("*.py"):
            if "__pycache__" not in module.parts:
                assert module.relative_to(REPO).as_posix() in names, f"{module.relative_to(REPO)} not in the wheel"
    topologies = sorted((REPO / "digital_twin/microservices/topologies").glob("*.yaml"))
    assert topologies and all(p.relative_to(REPO).as_posix() in names for p in topologies)
    for folder in BUNDLED_FOLDERS:
        files = [p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files
        missing = [str(p.relative_to(REPO)) for p in files
                   if f"digital_twin/_bundled/{p.relative_to(REPO).as_posix()}" not in names]
        assert not missing, f"bundled files not in the wheel: {missing}"
    assert not any(n.startswith(("tests/", "bench/", "data/", "configs/")) for n in names)


CHECK_BOTH_ENVS = """
import json, sys, warnings
import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import agents, digital_twin, envs, evaluation
from digital_twin.resources import bundle_root

with warnings.catch_warnings():
    warnings.simplefilter("error")  # any checker warning fails, as in the env tests
    check_env(gym.make("clustergym/VMRescheduling-v0", invalid_action="penalty").unwrapped)
    check_env(gym.make("clustergym/MicroserviceAutoscaling-v0", window_steps=20).unwrapped, skip_render_check=True)
print(json.dumps({"modules": [m.__file__ for m in (agents, digital_twin, envs, evaluation)],
                  "bundle": str(bundle_root()), "path": sys.path}))
"""


def test_installed_wheel_passes_check_env_on_both_ids(venv_python, elsewhere):
    cwd, env = elsewhere
    report = json.loads(_run([str(venv_python), "-c", CHECK_BOTH_ENVS], cwd=cwd, env=env).splitlines()[-1])
    venv = venv_python.parents[1]
    for location in (*report["modules"], report["bundle"]):
        assert Path(location).is_relative_to(venv), f"{location} is not from the installed wheel"
    assert not any(Path(p).resolve() == REPO for p in report["path"] if p), "the checkout is on sys.path"


def test_installed_wheel_runs_the_evaluation_command(venv_python, elsewhere):
    cwd, env = elsewhere
    usage = _run([str(venv_python), "-m", "evaluation", "--help"], cwd=cwd, env=env)
    assert usage.startswith("usage: python -m evaluation") and "--policies" in usage
    # A bundled config named relative to the repository root resolves from any folder.
    _run([str(venv_python), "-m", "evaluation", "configs/vm_rescheduling/real_small.yaml", "--policies", "random",
          "--seeds", "0", "--budget", "2", "--out-dir", "out", "--run-name", "wheel", "--no-progress"], cwd=cwd, env=env)
    summary = json.loads((cwd / "out" / "wheel" / "summary.json").read_text())
    assert Path(summary["config"]).is_relative_to(venv_python.parents[1])
    assert [entry["method"] for entry in summary["summary"]] == ["random"]
