"""User mistakes on ``evaluate.py``: one ``error:`` line, exit status 2, no traceback, no results folder.

One parametrised case list per class of mistake (missing file, a file that is not a config, a
number out of range, a name typo, a key typo inside the config, an agent path that is no model, a
flag of the other problem, an output folder that cannot be written), run through
``evaluation.cli.main(argv)``; then the real ``python evaluate.py`` once, with and without ``--debug``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluation.cli import main

ROOT = Path(__file__).resolve().parents[2]
VM = "configs/vm_rescheduling/real_small.yaml"
MS = "configs/microservice_autoscaling/online_boutique_failures.yaml"


@pytest.fixture()
def files(tmp_path):
    """Malformed configs and models, and the folder results must not appear in."""
    vm = yaml.safe_load((ROOT / VM).read_text())
    (tmp_path / "bad.yaml").write_text("env:\n  budget: 5\n    max_vms: 3\n")
    (tmp_path / "text.yaml").write_text("just some words\n")
    (tmp_path / "mixed.yaml").write_text("trace: worldcup98\neval_source: {kind: files}\n")
    (tmp_path / "neither.yaml").write_text("foo: 1\n")
    (tmp_path / "budjet.yaml").write_text(yaml.safe_dump({**vm, "env": {"budjet": 5}}))
    (tmp_path / "sorce.yaml").write_text(yaml.safe_dump({k if k != "eval_source" else "eval_sorce": v for k, v in vm.items()}))
    (tmp_path / "filez.yaml").write_text(yaml.safe_dump({**vm, "eval_source": {**vm["eval_source"], "kind": "filez"}}))
    (tmp_path / "numhost.yaml").write_text(yaml.safe_dump(
        {**vm, "train_source": {"kind": "azure", "split": "dev", "num_host": 10}}))
    (tmp_path / "ms_typo.yaml").write_text("trace: worldcup98\ntopology: online_boutique\nwindow_step: 10\n")
    (tmp_path / "model.zip").write_text("not a zip")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def run(capsys, argv, tmp_path):
    """``main(argv)`` with results under ``tmp_path/never``: the error line, checked to be the only one."""
    out_dir = tmp_path / "never"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out-dir" not in argv:
        argv += ["--out-dir", str(out_dir)]
    try:
        status = main([*argv, "--no-progress"])
    except SystemExit as exc:  # argparse's own checks exit (as under ``python evaluate.py``)
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out_dir.exists(), "a refused run left a results folder behind"
    return lines[0]


def cases(*items):
    return pytest.mark.parametrize("argv, expected", items, ids=[" ".join(i[0])[:60] for i in items])


@cases(
    (["nope.yaml"], "nope.yaml: no such config file; give configs/vm_rescheduling/*.yaml or configs/microservice_autoscaling"),
    (["configs/vm_rescheduling/real_smal.yaml"], "(did you mean 'configs/vm_rescheduling/real_small.yaml'?)"),
)
def test_missing_config(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


@cases(
    (["README.md"], "README.md: not valid YAML at line"),
    (["{tmp}/bad.yaml"], "bad.yaml: not valid YAML at line 3 column 12: mapping values are not allowed here"),
    (["{tmp}/text.yaml"], "text.yaml: not a config (a YAML mapping), got str"),
    (["configs/train/vm_quick.yaml"], "a training config (train.py's); evaluate its env_config"),
    (["{tmp}/mixed.yaml"], "mixes keys of a VM-rescheduling config (eval_source) and of an autoscaling config (trace)"),
    (["{tmp}/neither.yaml"], "neither a VM-rescheduling config (keys env, eval_source, train_source, val_source) nor"),
)
def test_file_that_is_not_a_config(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


@cases(
    ([VM, "--seeds", "-1"], "argument --seeds: must be an integer >= 0, got -1"),
    ([VM, "--seeds", "0", "0"], "argument --seeds: seed 0 given twice"),
    ([VM, "--episodes", "0"], "argument --episodes: must be a positive integer (>= 1), got 0"),
    ([VM, "--budget", "-5"], "argument --budget: must be a positive integer (>= 1), got -5"),
    ([VM, "--time-limit", "-1"], "argument --time-limit: must be a number > 0, got -1"),
    ([VM, "--time-limit", "0"], "argument --time-limit: must be a number > 0, got 0"),
    ([VM, "--time-limits", "x"], "argument --time-limits: expected a number, got 'x'"),
    ([VM, "--policies", "beam@-1"], "--policies beam@-1: the time limit after @ must be seconds > 0"),
    ([MS, "--window-index", "-1"], "argument --window-index: must be an integer >= 0"),
    ([MS, "--window-index", "100000"], "--window-index 100000: the held-out split of"),
    ([MS, "--static-replicas", "0"], "argument --static-replicas: must be a positive integer"),
    ([MS, "--recovery-hold-minutes", "0"], "argument --recovery-hold-minutes: must be a number > 0"),
)
def test_number_out_of_range(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


@cases(
    ([VM, "--policies", "gredy"], "unknown VM policy 'gredy' (did you mean 'greedy'?); choose one of random, ffd"),
    ([MS, "--policies", "k8s_hpaa"], "unknown autoscaling policy 'k8s_hpaa' (did you mean 'k8s_hpa'?)"),
    ([MS, "--scenarios", "calmm"], "--scenarios: unknown scenario 'calmm' (did you mean 'calm'?)"),
    ([VM, "--polices", "greedy"], "unrecognized arguments: --polices greedy (did you mean '--policies'?)"),
)
def test_name_typo(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


@cases(
    (["{tmp}/budjet.yaml"], "unknown key 'env.budjet' (did you mean 'budget'?); allowed under env: budget,"),
    (["{tmp}/sorce.yaml"], "unknown key 'eval_sorce' (did you mean 'eval_source'?); allowed under a "
                           "VM-rescheduling config: description, env, eval_source, train_source, val_source"),
    (["{tmp}/filez.yaml"], "eval_source: unknown kind 'filez' (did you mean 'files'?); kind must be one of files,"),
    (["{tmp}/numhost.yaml"], "train_source: unknown key 'num_host' (did you mean 'num_hosts'?); allowed under a "
                             "source of kind azure:"),
    (["{tmp}/ms_typo.yaml"], "unknown key 'window_step' (did you mean 'window_steps'?); allowed under an autoscaling config"),
)
def test_key_typo_inside_the_config(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


TAKES = "a model.zip written by train.py, or a run folder with best/ or last/"


@cases(
    ([VM, "--policies", "greedy", "agent:{tmp}/nope"], f"--policies agent:{{tmp}}/nope: not found (no such file or folder); give {TAKES}"),
    ([VM, "--policies", "agent:{tmp}/model.zip"], f"model.zip is not a saved model; give {TAKES}"),
    ([VM, "--policies", "agent:{tmp}/empty_run"], f"no model found: no model.zip in that folder (nor in best/ or last/); give {TAKES}"),
    ([VM, "--policies", "agent:README.md@5"], "README.md is not a saved model"),
    ([MS, "--policies", "agent:{tmp}/nope"], "not found (no such file or folder); give a model.zip saved by stable-baselines3"),
)
def test_agent_path_that_is_no_model(capsys, files, argv, expected):
    assert expected.replace("{tmp}", str(files)) in run(capsys, argv, files)


@cases(
    ([VM, "--scenarios", "calm"], "--scenarios: applies to autoscaling configs only; "
                                  "configs/vm_rescheduling/real_small.yaml is a VM-rescheduling config"),
    ([MS, "--budget", "3"], "--budget: applies to VM-rescheduling configs only"),
    ([MS, "--time-limit", "3"], "--time-limit: applies to VM-rescheduling configs only"),
)
def test_flag_of_the_other_problem(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


@cases(
    ([VM, "--out-dir", "{tmp}/a_file/never"], "--out-dir"),
    ([VM, "--out-dir", "/proc/never"], "cannot create it, /proc is not writable"),
)
def test_output_that_cannot_be_written_is_refused_before_the_work(capsys, files, argv, expected):
    assert expected in run(capsys, argv, files)


def test_the_real_command_and_debug(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "evaluate.py", "nope.yaml", "--out-dir", str(tmp_path / "never")]
    plain = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stderr.startswith("error: nope.yaml: no such config file")
    assert len(plain.stderr.strip().splitlines()) == 1 and plain.stdout == ""
    debug = subprocess.run([*command, "--debug"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: nope.yaml")
    assert not (tmp_path / "never").exists()
