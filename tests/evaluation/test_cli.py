"""The two entry points, ``python evaluate.py`` and ``python -m evaluation``, are one command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _help(*command: str) -> str:
    # A wide terminal, so that argparse wraps no path.
    env = {**os.environ, "COLUMNS": "400"}
    done = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout


def _options(help_text: str) -> list[str]:
    return [line.split()[0] for line in help_text.splitlines() if line.strip().startswith("--")]


def test_evaluate_py_and_module_share_the_command_line():
    script, module = _help("evaluate.py"), _help("-m", "evaluation")
    assert script.startswith("usage: evaluate.py ") and module.startswith("usage: python -m evaluation ")
    # Same options; only the program name and --out-dir's default (the checkout's results/ vs ./results) differ.
    assert _options(script) == _options(module) and "--policies" in _options(script)
    assert str(REPO / "results") in script


def test_importing_evaluation_imports_no_heavy_modules():
    code = ("import sys, evaluation.cli, evaluation.tables, evaluation.metrics; "
            "heavy = {'torch', 'ortools', 'envs', 'agents', 'matplotlib'} & {m.split('.')[0] for m in sys.modules}; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
