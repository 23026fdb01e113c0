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


def _option_helps(help_text: str) -> dict[str, str]:
    """Option -> its help text (COLUMNS=400: one line each, or the line after a long option)."""
    lines = help_text.splitlines()
    out = {}
    for i, line in enumerate(lines):
        words = line.split()
        if words and words[0].startswith("--"):
            rest = line.strip()[len(" ".join(words[:1])):]
            out[words[0]] = rest if "  " in line.strip() else (lines[i + 1] if i + 1 < len(lines) else "")
    return out


def test_help_shows_each_default_once_and_what_agent_paths_take():
    for command in (["evaluate.py"], ["train.py"]):
        text = _help(*command)
        assert "%%" not in text and "(default: None)" not in text, text
        for option, helps in _option_helps(text).items():
            assert helps.count("(default:") <= 1, (option, helps)
    text = _help("evaluate.py")
    assert "bootstrap 95% intervals" in text
    assert "agent:PATH for a saved agent, PATH being a model.zip written by train.py, or a run folder with best/ or last/" in text
    assert "evaluation seeds (default: 0 1 2)" in text


def test_notes_name_the_reference_and_a_solver_that_found_nothing():
    from evaluation.cli import notes

    rows = [{"method": "greedy", "snapshot": "big2.json", "seed": 0, "reference": "greedy", "migrations": 12,
             "status": "HEURISTIC", "solver_status": "", "plan_source": "", "time_limit_s": 10.0},
            {"method": "cpsat@10", "snapshot": "big2.json", "seed": 0, "reference": "greedy", "migrations": 12,
             "status": "UNKNOWN", "solver_status": "UNKNOWN", "plan_source": "greedy", "time_limit_s": 10.0},
            {"method": "cpsat_lns", "snapshot": "big2.json", "seed": 1, "reference": "greedy", "migrations": 0,
             "status": "FEASIBLE", "solver_status": "", "plan_source": "", "time_limit_s": 10.0},
            {"method": "cpsat", "snapshot": "clear2.json", "seed": 0, "reference": "cpsat", "migrations": 0,
             "status": "OPTIMAL", "solver_status": "OPTIMAL", "plan_source": "cpsat", "time_limit_s": 60.0}]
    lines = notes(rows)
    assert "reference per snapshot: big2.json greedy; clear2.json cpsat" in lines[0]
    assert lines[1:] == [
        "note: cpsat@10 found no solution of its own on big2.json (seed 0) within 10 s (CP-SAT status UNKNOWN): "
        "its plan is the greedy fallback; give it more time with cpsat@SECONDS or --time-limit",
        "note: cpsat_lns found no solution of its own on big2.json (seed 1) within 10 s (CP-SAT status FEASIBLE): "
        "no migration; give it more time with cpsat_lns@SECONDS or --time-limit"]
