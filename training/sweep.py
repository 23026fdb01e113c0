"""``train.py CONFIG --sweep SWEEP.yaml``: a hyperparameter sweep (or many seeds) on Ray Tune.

A sweep file (``configs/sweeps/*.yaml``) names a search space over the training config's dotted
keys, a search algorithm and a scheduler::

    search: random                  # grid (every combination), random, or optuna (TPE)
    num_samples: 8                  # draws (random, optuna) or repeats of the whole grid (grid)
    metric: fr_final                # an eval.csv column (default: the figure best/ is picked by)
    mode: min                       # min or max (default: that figure's direction)
    space:
      ppo.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
      ppo.ent_coef: {choice: [0.0, 0.005, 0.01]}
      seed: {grid: [0, 1, 2]}       # grid values are crossed with the draws
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}   # or fifo (no early stopping)
    resources: {cpu: 1, torch_threads: 1}   # per trial
    max_concurrent_trials: null     # default: as many as the cluster's CPUs allow
    max_failures: 0                 # times a failed trial is restarted (from its checkpoint)

Everything is checked before Ray starts: an unknown key, a parameter path the training config does
not have or a value it refuses (each grid / choice value and both ends of a range go through
:func:`training.config.load_train_config`), a bad scheduler or search.

Each trial is an ordinary ``train.py`` run folder, ``<sweep>/trials/<trial id>/``, trained by a
``train.py`` process of its own (so ``train.py --resume`` and ``evaluate.py agent:<run folder>``
work on any trial alone, and no fork pool or signal handler lives inside a Ray actor). The trial
reports every row ``train.py`` appends to ``eval.csv`` (the periodic held-out evaluation) through
``ray.tune.report`` once ``train.py`` has written the checkpoint of that boundary, with a copy of
it; ASHA stops the weak trials on that figure, one rung per evaluation (``training_iteration``;
``max_t`` defaults to every evaluation a run makes). A stopped trial's ``train.py`` is ended
(SIGTERM), its run folder keeping the restart point of its last evaluation.

The sweep folder holds ``sweep.json`` (what it was started with), Ray's experiment state, the trial
run folders (``trials/``, with each ``train.py``'s log beside it) and, once it ends or is
interrupted, ``results.csv`` / ``results.json`` (trials ranked by their best figure) and
``hyperparameters.png``. ``train.py --resume <sweep>`` continues an interrupted sweep
(``Tuner.restore``): finished trials stay, unfinished ones continue from their run folders.
"""

from __future__ import annotations

import csv
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from digital_twin.cli import ConfigError, UsageError, check_keys, did_you_mean, read_yaml
from digital_twin.resources import resolve_path

__all__ = ["SWEEP_KEYS", "is_sweep_dir", "load_sweep", "resume_sweep", "run_sweep", "write_results"]

SWEEP_KEYS = ("description", "search", "num_samples", "metric", "mode", "space", "scheduler", "resources",
              "max_concurrent_trials", "max_failures")
SEARCHES = ("grid", "random", "optuna")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = {"fifo": (), "asha": ("grace_period", "reduction_factor", "max_t")}
ASHA_DEFAULTS = {"grace_period": 1, "reduction_factor": 2}  # max_t: every evaluation a run makes (evaluations())
RESOURCE_KEYS = ("cpu", "torch_threads")
SWEEP_FILE = "sweep.json"
TRIALS = "trials"
REPORTED = "reported.json"  # in each reported Ray checkpoint: how many eval.csv rows were reported
POLL_S = 0.5  # how often a trial looks for new eval.csv rows
CHECKPOINT_WAIT_S = 60.0  # longest wait for the checkpoint of an evaluated boundary (written right after it)
# A train.py process started with argv[0] "train.py", so that its run.json records a command a user can run.
_TRAIN_PY = "import sys; sys.argv[0] = 'train.py'; from training.cli import main; sys.exit(main())"


# ---------------------------------------------------------------------- the sweep file
def eval_figures(config: dict[str, Any]) -> tuple[tuple[str, ...], str, str]:
    """``(figures, score, mode)``: the figures a run of ``config`` writes to ``eval.csv`` (its columns
    less the counters), the one its ``best/`` is picked by (the default metric) and that one's
    direction, from the problem's :class:`~training.maskable_ppo.Task`."""
    if config["problem"] == "vm_rescheduling":
        from training.maskable_ppo import VM_TASK as task
    else:
        from training.autoscaling_ppo import TASK as task
    figures = tuple(f for f in task.eval_fields if f not in ("timesteps", "updates"))
    return figures, task.score, "max" if task.higher_is_better else "min"


def evaluations(config: dict[str, Any]) -> int:
    """At least as many held-out evaluations as a run of ``config`` makes (ASHA's default ``max_t``):
    bc evaluates before its first epoch and after each, the others every ``eval.every_timesteps``
    and once at the end."""
    if config["algorithm"] == "bc":
        return config["bc"]["epochs"] + 1
    return math.ceil(config["total_timesteps"] / config["eval"]["every_timesteps"]) + 1


def override_text(path: str, value: Any) -> str:
    """``path=value`` as ``train.py`` reads it back (YAML, so that ``1e-05`` stays a number)."""
    return f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _probe_values(where: str, path: str, spec: Any) -> list[Any]:
    """The values of one parameter that must pass the training config's checks (all the grid /
    choice values, both ends of a range); the distribution's own shape is checked here."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: space.{path}: {what}")

    if not isinstance(spec, dict) or len(spec) != 1:
        raise bad(f"must be one of {{{'|'.join(DISTRIBUTIONS)}: ...}}, e.g. {{loguniform: [1.0e-5, 1.0e-3]}} "
                  f"or {{grid: [0, 1, 2]}}; got {spec!r}")
    (kind, values), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise bad(f"unknown distribution {kind!r}{did_you_mean(kind, DISTRIBUTIONS)}; choose one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(values, list) or not values:
        raise bad(f"{kind} takes a non-empty list, got {values!r}")
    if kind in ("grid", "choice"):
        return values
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numbers or not values[0] < values[1]:
        raise bad(f"{kind} takes [low, high] with low < high, got {values!r}")
    if kind == "loguniform" and values[0] <= 0:
        raise bad(f"loguniform takes low > 0, got {values!r}")
    if kind == "randint":
        if not all(isinstance(v, int) for v in values):
            raise bad(f"randint takes integers [low, high), got {values!r}")
        return [values[0], values[1] - 1]  # high is excluded
    return values


def load_sweep(path: str | Path, config_path: str, overrides: list[str]) -> dict[str, Any]:
    """Read and check a sweep file against the training config it sweeps (with its overrides).

    Returns:
        The sweep with every default filled in (``metric``, ``mode``, ``scheduler``, ``resources``, ...)
        and ``problem``, the training config's.

    Raises:
        ConfigError: one line naming the file, the key and what is allowed.
    """
    from training.config import load_train_config

    where = str(path)
    p = resolve_path(path)
    if not p.is_file():
        raise ConfigError(f"--sweep {where}: no such sweep file (see configs/sweeps/*.yaml)")
    doc = read_yaml(p, "--sweep")
    check_keys(where, doc, SWEEP_KEYS)
    base = load_train_config(config_path, overrides)
    sweep: dict[str, Any] = {"description": doc.get("description", ""), "problem": base["problem"]}

    search = doc.get("search", "random")
    if search not in SEARCHES:
        raise ConfigError(f"{where}: search {search!r} is not one of {', '.join(SEARCHES)}{did_you_mean(search, SEARCHES)}")
    if search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError(f"{where}: search optuna needs Optuna, which is not installed; install it with "
                              "pip install 'clustergym[ray]'") from None
    sweep["search"] = search
    samples = doc.get("num_samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"{where}: num_samples must be a positive integer, got {samples!r}")
    sweep["num_samples"] = samples

    space = doc.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: space must map training-config keys to distributions, e.g. "
                          "space: {ppo.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}}")
    for key, spec in space.items():
        probes = _probe_values(where, str(key), spec)
        kind = next(iter(spec))
        if search == "grid" and kind != "grid":
            raise ConfigError(f"{where}: space.{key}: search grid takes {{grid: [...]}} values only, got {kind}; "
                              "use search: random to draw it")
        if search == "optuna" and kind == "grid":
            raise ConfigError(f"{where}: space.{key}: search optuna draws every value; give {{choice: [...]}} "
                              "instead of grid")
        for value in probes:
            try:
                load_train_config(config_path, [*overrides, override_text(str(key), value)])
            except ConfigError as exc:
                raise ConfigError(f"{where}: space.{key} value {value!r} is refused by {config_path}: {exc}") from None
    sweep["space"] = space

    fields, default_metric, default_mode = eval_figures(base)
    metric = doc.get("metric", default_metric)
    if metric not in fields:
        raise ConfigError(f"{where}: metric {metric!r}{did_you_mean(metric, fields)} is not an eval.csv figure of "
                          f"{config_path}; choose one of {', '.join(fields)}")
    mode = doc.get("mode", default_mode if metric == default_metric else None)
    if mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode must be min or max (required for metric {metric}), got {mode!r}")
    sweep["metric"], sweep["mode"] = metric, mode

    scheduler = doc.get("scheduler", "fifo")
    if isinstance(scheduler, str):
        scheduler = {"name": scheduler}
    if not isinstance(scheduler, dict) or scheduler.get("name") not in SCHEDULERS:
        name = scheduler.get("name") if isinstance(scheduler, dict) else scheduler
        raise ConfigError(f"{where}: scheduler {name!r} is not one of {', '.join(SCHEDULERS)}"
                          f"{did_you_mean(str(name), SCHEDULERS)} (asha takes grace_period, reduction_factor, max_t)")
    check_keys(where, scheduler, ("name", *SCHEDULERS[scheduler["name"]]), prefix="scheduler.")
    if scheduler["name"] == "asha":
        scheduler = {**ASHA_DEFAULTS, "max_t": evaluations(base), **scheduler}
        for key in SCHEDULERS["asha"]:
            v = scheduler[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if key == "reduction_factor" else 1):
                raise ConfigError(f"{where}: scheduler.{key} must be an integer >= "
                                  f"{2 if key == 'reduction_factor' else 1} (in evaluations), got {v!r}")
        if scheduler["grace_period"] > scheduler["max_t"]:
            raise ConfigError(f"{where}: scheduler.grace_period {scheduler['grace_period']} is larger than max_t "
                              f"{scheduler['max_t']}")
    sweep["scheduler"] = scheduler

    resources = doc.get("resources") or {}
    check_keys(where, resources, RESOURCE_KEYS, prefix="resources.")
    cpu = resources.get("cpu", 1)
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or cpu <= 0:
        raise ConfigError(f"{where}: resources.cpu must be a number > 0 (CPUs per trial), got {cpu!r}")
    threads = resources.get("torch_threads", max(1, int(cpu)))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{where}: resources.torch_threads must be a positive integer, got {threads!r}")
    sweep["resources"] = {"cpu": cpu, "torch_threads": threads}
    for key, least in (("max_concurrent_trials", 1), ("max_failures", 0)):
        v = doc.get(key, None if key == "max_concurrent_trials" else 0)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
            raise ConfigError(f"{where}: {key} must be {'null or ' if least else ''}an integer >= {least}, got {v!r}")
        sweep[key] = v
    return sweep


# ---------------------------------------------------------------------- Ray pieces
def _param_space(sweep: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {key: make[kind](values) for key, spec in sweep["space"].items() for kind, values in spec.items()}


def _tune_config(sweep: dict[str, Any]):
    from ray import tune

    scheduler = search_alg = None
    if sweep["scheduler"]["name"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        s = sweep["scheduler"]
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s["max_t"], grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"])
    if sweep["search"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=0)
    return tune.TuneConfig(metric=sweep["metric"], mode=sweep["mode"], num_samples=sweep["num_samples"],
                           scheduler=scheduler, search_alg=search_alg,
                           max_concurrent_trials=sweep["max_concurrent_trials"])


def _trainable(setup: dict[str, Any]):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                               {"cpu": setup["sweep"]["resources"]["cpu"]})


def _libc_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the trial's finally still stops train.py
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the train.py child: SIGTERM when the trial's thread goes (the trial was stopped or its actor
    killed), so that train.py writes its checkpoint and no training outlives its trial."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _number(text: Any) -> float:
    """An ``eval.csv`` cell as a number (NaN when blank or not a number)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _eval_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of ``eval.csv`` so far (a line still being written is left for later)."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def _snapshot_checkpoint(run_dir: Path, into: Path) -> bool:
    """Copy ``run_dir/checkpoint/`` into ``into/`` and check it against its manifest; False when the
    run has none yet (or it was being replaced on every try)."""
    from training.runs import CheckpointError, read_checkpoint

    for _ in range(5):
        shutil.rmtree(into, ignore_errors=True)
        try:
            shutil.copytree(run_dir / "checkpoint", into / "checkpoint")
            read_checkpoint(into, {})
            return True
        except (OSError, CheckpointError):  # being replaced by train.py right now: try again
            time.sleep(0.2)
    return False


def _await_checkpoint(run_dir: Path, row: dict[str, str], proc: subprocess.Popen, every_updates: int) -> None:
    """Wait (at most ``CHECKPOINT_WAIT_S``) until train.py has written the checkpoint of the boundary
    that ``row`` evaluated at, when that boundary writes one: so that a trial the scheduler stops
    right after this report keeps a restart point at its last evaluation."""
    try:
        timesteps, updates = int(float(row["timesteps"])), int(float(row["updates"]))
    except (KeyError, ValueError):
        return
    if updates % every_updates:
        return
    manifest = run_dir / "checkpoint" / "manifest.json"
    deadline = time.monotonic() + CHECKPOINT_WAIT_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(manifest.read_text()).get("num_timesteps", -1) >= timesteps:
                return
        except (OSError, json.JSONDecodeError):  # not there yet, or being replaced
            pass
        time.sleep(0.1)


def _report(row: dict[str, str], evaluations: int, run_dir: Path) -> None:
    from ray import tune

    metrics: dict[str, Any] = {key: _number(text) for key, text in row.items()}
    metrics["evaluations"] = evaluations
    folder = run_dir.parent / f".report.{run_dir.name}"
    checkpoint = None
    if _snapshot_checkpoint(run_dir, folder):
        (folder / REPORTED).write_text(json.dumps({"evaluations": evaluations, "run_dir": str(run_dir)}))
        checkpoint = tune.Checkpoint.from_directory(str(folder))
    try:
        tune.report(metrics, checkpoint=checkpoint)  # copies the checkpoint into the sweep's storage
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial: ``train.py`` (fresh, or ``--resume`` of its run folder) in a process of its own,
    every new ``eval.csv`` row reported to Tune with the run's checkpoint."""
    from ray import tune

    trials = Path(setup["sweep_dir"]) / TRIALS
    trials.mkdir(parents=True, exist_ok=True)
    run_dir = trials / tune.get_context().get_trial_id()
    reported = 0
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            reported = json.loads((Path(folder) / REPORTED).read_text())["evaluations"]
    threads = setup["sweep"]["resources"]["torch_threads"]
    if (run_dir / "checkpoint" / "manifest.json").is_file():
        args = ["--resume", str(run_dir)]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first checkpoint: start again
        args = [setup["config"], *setup["overrides"], *(override_text(k, v) for k, v in params.items()),
                f"torch_threads={threads}", "--runs-dir", str(trials), "--run-name", run_dir.name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    every_updates = None  # the run's checkpoint.every_updates, once its config.yaml is written
    log_path = trials / f"{run_dir.name}.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen([sys.executable, "-c", _TRAIN_PY, *args, "--no-progress", "--wandb", "disabled"],
                                cwd=setup["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        try:
            while True:
                finished = proc.poll() is not None
                if every_updates is None and (run_dir / "config.yaml").is_file():
                    every_updates = yaml.safe_load((run_dir / "config.yaml").read_text())["checkpoint"]["every_updates"]
                for row in _eval_rows(run_dir / "eval.csv")[reported:]:
                    _await_checkpoint(run_dir, row, proc, every_updates or 1)
                    reported += 1
                    _report(row, reported, run_dir)
                if finished:
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # the trial was stopped (Tune ends it inside tune.report): SIGTERM, so
                # that train.py writes its checkpoint (if Ray's exit leaves it the time)
                proc.terminate()
                proc.wait()
    if proc.returncode != 0:
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        raise RuntimeError(f"{run_dir}: train.py exited with status {proc.returncode} ({log_path}: {tail})")


# ---------------------------------------------------------------------- the command
def is_sweep_dir(path: str | Path) -> bool:
    """``path`` is a sweep folder written by :func:`run_sweep` (for ``train.py --resume``)."""
    return (Path(path) / SWEEP_FILE).is_file()


def run_sweep(config_path: str, overrides: list[str], sweep_path: str, runs_dir: str, name: str | None,
              address: str | None) -> int:
    """Check the sweep, start it in ``runs_dir/<name>/`` and run it to the end (or Ctrl-C)."""
    from digital_twin.cli import check_writable_dir
    from evaluation.ray_cells import require_ray

    require_ray("--sweep")
    sweep = load_sweep(sweep_path, config_path, overrides)
    parent = check_writable_dir(runs_dir, "--runs-dir")
    name = name or f"{Path(config_path).stem}__{Path(sweep_path).stem}__{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = (parent / name).resolve()
    if sweep_dir.exists():
        raise UsageError(f"{sweep_dir}: folder exists already; continue that sweep with "
                         f"python train.py --resume {sweep_dir}, or choose another --run-name")
    setup = {"config": str(resolve_path(config_path).resolve()), "overrides": list(overrides),
             "sweep_file": str(sweep_path), "sweep": sweep, "sweep_dir": str(sweep_dir), "cwd": os.getcwd()}
    sweep_dir.mkdir(parents=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(setup, indent=2))
    return _fit(setup, address, restore=False)


def resume_sweep(sweep_dir: str | Path, address: str | None) -> int:
    """Continue the sweep in ``sweep_dir`` where it stopped (``Tuner.restore``)."""
    from evaluation.ray_cells import require_ray

    require_ray("--resume of a sweep")
    setup = json.loads((Path(sweep_dir) / SWEEP_FILE).read_text())
    return _fit(setup, address, restore=True)


def _fit(setup: dict[str, Any], address: str | None, restore: bool) -> int:
    # Set before Tune is imported. Trials run train.py with absolute paths; Ray need not chdir them.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Every evaluation is reported with its checkpoint: Tune's note that this syncs its state often is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from evaluation.ray_cells import connect

    sweep, sweep_dir = setup["sweep"], Path(setup["sweep_dir"])
    connect(address, "--sweep")
    trainable = _trainable(setup)
    if restore:
        if not tune.Tuner.can_restore(str(sweep_dir)):
            raise UsageError(f"{sweep_dir}: the sweep stopped before Ray wrote its state; start it again "
                             "(remove the folder, or choose another --run-name)")
        tuner = tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True)
    else:
        from ray.tune import CheckpointConfig, FailureConfig, RunConfig

        tuner = tune.Tuner(trainable, param_space=_param_space(sweep), tune_config=_tune_config(sweep),
                           run_config=RunConfig(name=sweep_dir.name, storage_path=str(sweep_dir.parent),
                                                checkpoint_config=CheckpointConfig(num_to_keep=1),
                                                failure_config=FailureConfig(max_failures=sweep["max_failures"]),
                                                verbose=1))
    print(f"sweep folder: {sweep_dir} ({sweep['search']} search, {sweep['scheduler']['name']} scheduler, "
          f"metric {sweep['metric']} ({sweep['mode']}))", file=sys.stderr)
    grid = tuner.fit()
    errors = {Path(r.path).name: str(r.error).strip().splitlines()[-1] for r in grid if r.error is not None}
    table = write_results(sweep_dir, errors)
    unfinished = [r for r in table if r["status"] == "unfinished"]
    print_table(table, sweep)
    if unfinished and not errors:
        print(f"interrupted with {len(unfinished)} trial(s) unfinished; continue with: "
              f"python train.py --resume {sweep_dir}", file=sys.stderr)
    elif errors:
        print(f"{len(errors)} trial(s) failed; their logs: {sweep_dir / TRIALS}/<trial>.log; "
              f"python train.py --resume {sweep_dir} runs them again", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------- results across the sweep
def _trial_status(run_dir: Path, ray_state: dict[str, str]) -> str:
    """finished (trained to total_timesteps), stopped (early, by the scheduler), error, or unfinished."""
    status = ray_state.get(run_dir.name, "")
    if status == "ERROR":
        return "error"
    if (run_dir / "last").is_dir():
        return "finished"
    return "stopped" if status == "TERMINATED" else "unfinished"


def _ray_trial_states(sweep_dir: Path) -> dict[str, str]:
    """trial id -> Ray's last recorded status, from its experiment state file."""
    states: dict[str, str] = {}
    for path in sorted(sweep_dir.glob("experiment_state-*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for entry in doc.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry, list) else entry
            if isinstance(trial, dict) and "trial_id" in trial:
                states[trial["trial_id"]] = trial.get("status", "")
    return states


def write_results(sweep_dir: str | Path, errors: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``results.csv`` / ``results.json``: every trial ranked by its best figure (the sweep's metric
    over its evaluations), with its hyperparameters, the figures of that best evaluation, its last
    figure and its run folder; and ``hyperparameters.png``. Returns the rows."""
    from evaluation.tables import write_csv, write_json
    from training.config import get_dotted

    sweep_dir = Path(sweep_dir)
    setup = json.loads((sweep_dir / SWEEP_FILE).read_text())
    sweep = setup["sweep"]
    metric, sign = sweep["metric"], (1.0 if sweep["mode"] == "min" else -1.0)
    states = _ray_trial_states(sweep_dir)
    rows = []
    for run_dir in sorted(p for p in (sweep_dir / TRIALS).glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue
        evals = _eval_rows(run_dir / "eval.csv")
        scored = [(_number(r.get(metric)), r) for r in evals if not math.isnan(_number(r.get(metric)))]
        best = min(scored, key=lambda s: sign * s[0]) if scored else (math.nan, {})
        row: dict[str, Any] = {"trial": run_dir.name, "status": _trial_status(run_dir, states)}
        if errors and run_dir.name in errors:
            row["status"] = "error"
        row.update({key: get_dotted(config, key) for key in sweep["space"]})
        row.update({"evaluations": len(evals), "timesteps": int(_number(evals[-1]["timesteps"])) if evals else 0,
                    f"best_{metric}": best[0], "best_at_timesteps": int(_number(best[1]["timesteps"])) if scored else None,
                    f"last_{metric}": scored[-1][0] if scored else math.nan})
        row.update({f"best_eval.{k}": _number(v) for k, v in best[1].items() if k not in ("timesteps", "updates")})
        row["run_dir"] = str(run_dir)
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple[bool, float]:  # the best first; trials without a figure last
        value = row[f"best_{metric}"]
        return math.isnan(value), 0.0 if math.isnan(value) else sign * value

    rows = [{"rank": rank, **row} for rank, row in enumerate(sorted(rows, key=order), 1)]
    if rows:
        write_csv(sweep_dir / "results.csv", rows)
        write_json(sweep_dir / "results.json", {"metric": metric, "mode": sweep["mode"], "sweep": setup["sweep_file"],
                                                "config": setup["config"], "overrides": setup["overrides"],
                                                "trials": rows})
        plot_hyperparameters(sweep_dir / "hyperparameters.png", rows, sweep)
    return rows


def plot_hyperparameters(path: Path, rows: list[dict[str, Any]], sweep: dict[str, Any]) -> Path:
    """One panel per hyperparameter: each trial's value against its best figure, marked by status."""
    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    keys = list(sweep["space"])
    metric = sweep["metric"]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.4, 4.2 * len(keys)), 4.0), squeeze=False)
    markers = {"finished": ("o", "tab:blue", "finished"), "stopped": ("x", "tab:orange", "stopped early"),
               "unfinished": ("s", "tab:gray", "unfinished"), "error": ("^", "tab:red", "error")}
    for ax, key in zip(axes[0], keys):
        kind = next(iter(sweep["space"][key]))
        numeric = all(isinstance(r[key], (int, float)) and not isinstance(r[key], bool) for r in rows)
        labels = sorted({repr(r[key]) for r in rows}) if not numeric else []
        for status, (marker, colour, label) in markers.items():
            chosen = [r for r in rows if r["status"] == status]
            if not chosen:
                continue
            xs = [r[key] if numeric else labels.index(repr(r[key])) for r in chosen]
            ax.scatter(xs, [r[f"best_{metric}"] for r in chosen], marker=marker, color=colour, label=label, s=40)
        if kind == "loguniform":
            ax.set_xscale("log")
        if labels:
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {metric} ({'lower' if sweep['mode'] == 'min' else 'higher'} is better)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    # Two lines so the title fits over a single panel too.
    fig.suptitle(f"{len(rows)} trials: each hyperparameter against\nthe trial's best periodic-evaluation {metric}", fontsize=10)
    return save_figure(fig, path)


def print_table(rows: list[dict[str, Any]], sweep: dict[str, Any], top: int = 10) -> None:
    """The best ``top`` trials on stdout, as Markdown."""
    metric = sweep["metric"]
    columns = ["rank", "trial", "status", *sweep["space"], f"best_{metric}", "best_at_timesteps", f"last_{metric}"]

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows[:top]:
        print("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    if rows:
        print(f"\n{len(rows)} trials; results.csv, results.json, hyperparameters.png in {Path(rows[0]['run_dir']).parents[1]}")
