"""``train.py``'s command line: parse, check, dispatch.

User mistakes follow :mod:`digital_twin.cli`'s rule (one ``error:`` line, exit status 2, the
traceback only with ``--debug``), and a refused run leaves no run folder behind: the config, the
env config it names and ``init_from`` are checked before the folder is created, and a mistake only
found once training has started (an ``init_from`` policy that does not fit) removes the folder it
had just created.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from digital_twin.cli import USAGE_ERROR, ArgumentParser, HelpFormatter, UsageError, add_debug_flag, \
    check_writable_dir, run_cli
from training.config import ConfigError, list_train_configs, load_train_config
from training.runs import CheckpointError, new_run_dir, python_command, read_run
from training.sweep import is_sweep_dir

__all__ = ["USAGE_ERROR", "main", "parse_args", "run"]


def _epilog() -> str:
    lines = ["bundled configs (configs/train/):"]
    for path, description in list_train_configs():
        lines.append(f"  {path.name:<35} {description}")
    lines += ["", "Runs are written to runs/<name>/: config.yaml, run.json, tb/ (TensorBoard), eval.csv,",
              "checkpoint/ (restart point), best/ and last/ (model.zip, or model.pt for mappo / ippo, + metadata.json).",
              "Ctrl-C (or SIGTERM) writes a checkpoint and exits; --resume RUN_DIR continues it exactly.",
              "",
              "python train.py ship RUN_DIR models/<problem>/<name> [--evaluation RESULTS_DIR] [--unfinished]: copy a",
              "run's model into models/ with its config, training curve, evaluation and reproduce commands",
              "(--unfinished: best/ of a run still training, a milestone).",
              "python train.py export RUN_DIR_OR_MODEL -o policy.onnx: the deterministic actor as ONNX, with the",
              "metadata (policy.json) the online controller (python -m controller) runs it with.",
              "",
              "python train.py CONFIG --sweep configs/sweeps/<sweep>.yaml [--ray-address ADDR]: a sweep on Ray Tune",
              "(grid / random / optuna search, ASHA on the periodic held-out evaluation); results.csv, results.json and",
              "hyperparameters.png in runs/<run-name>/; --resume runs/<run-name> continues an interrupted sweep."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="train.py", description="Train an agent on a clustergym environment from a YAML config.",
        epilog=_epilog(), formatter_class=HelpFormatter)
    parser.add_argument("config", nargs="?", help="training config (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides of config values, e.g. ppo.learning_rate=1e-4 total_timesteps=4096")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint "
                        "(or an interrupted sweep, given its folder)")
    parser.add_argument("--sweep", metavar="SWEEP.yaml",
                        help="run a hyperparameter sweep of CONFIG on Ray Tune (configs/sweeps/*.yaml): each trial a "
                             "run folder in runs/<run-name>/trials/; needs pip install 'clustergym[ray]'")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="with --sweep (or --resume of a sweep): an existing Ray cluster (ray start --head prints "
                             "its address; default: a local Ray with this machine's cores)")
    parser.add_argument("--run-name", help="runs/<run-name>/ (default: <config>__s<seed>__<time>)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                        help="Weights & Biases mode (default: $WANDB_MODE, else offline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def _start_wandb(mode: str, run_dir: Path, config: dict, run_id: str, resume: bool):
    """A wandb run synced from TensorBoard (offline unless asked), or None when disabled."""
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project="clustergym", dir=str(run_dir), mode=mode, config=config, id=run_id,
                      name=run_dir.name, resume="allow" if resume else None, sync_tensorboard=True)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) as the parsed command line says; returns the exit status."""
    if args.sweep or (args.resume and is_sweep_dir(args.resume)):
        return _sweep(args)
    if args.ray_address:
        raise ConfigError("--ray-address applies to --sweep (or --resume of a sweep folder) only")
    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume takes the run folder only; its config.yaml is the config "
                              "(no CONFIG or key=value with --resume)")
        run_dir = Path(args.resume)
        config, info = read_run(run_dir)
        resume = True
    else:
        if not args.config:
            raise ConfigError("a config is required, e.g. python train.py configs/train/vm_quick.yaml (see --help)")
        config = load_train_config(args.config, args.overrides)
        parent = check_writable_dir(args.runs_dir, "--runs-dir")
        created_parent = not parent.exists()
        run_dir = new_run_dir(parent, args.run_name, Path(args.config).stem, config, python_command())
        config, info = read_run(run_dir)
        resume = False
    try:
        return _train(args, config, run_dir, info, resume)
    except (UsageError, CheckpointError):
        if not resume and not (run_dir / "checkpoint").exists():
            # Refused before anything was learnt (e.g. an init_from policy that does not fit): the
            # folder this call created holds nothing worth keeping.
            shutil.rmtree(run_dir, ignore_errors=True)
            if created_parent and not any(parent.iterdir()):
                parent.rmdir()
        raise


def _sweep(args: argparse.Namespace) -> int:
    """``--sweep SWEEP.yaml`` (training/sweep.py), or ``--resume`` of a sweep folder."""
    from training.sweep import resume_sweep, run_sweep

    if args.resume:
        if args.config or args.overrides or args.sweep:
            raise ConfigError("--resume of a sweep takes its folder only (no CONFIG, key=value or --sweep)")
        return resume_sweep(args.resume, args.ray_address)
    if not args.config:
        raise ConfigError("--sweep needs the training config it sweeps, e.g. python train.py "
                          "configs/train/vm_quick.yaml --sweep configs/sweeps/vm_quick_lr.yaml")
    return run_sweep(args.config, args.overrides, args.sweep, args.runs_dir, args.run_name, args.ray_address)


def _train(args: argparse.Namespace, config: dict, run_dir: Path, info: dict, resume: bool) -> int:
    print(f"run folder: {run_dir}", file=sys.stderr)
    algorithm = config.get("algorithm") or "maskable_ppo"
    if algorithm == "bc":
        from training.imitation import train
    elif algorithm == "ppo":
        from training.autoscaling_ppo import train
    elif algorithm in ("mappo", "ippo"):
        from training.mappo import train
    else:
        from training.maskable_ppo import train

    mode = args.wandb or os.environ.get("WANDB_MODE") or "offline"
    wandb_run = _start_wandb(mode, run_dir, config, info["run_id"], resume)
    try:
        summary = train(config, run_dir, info, resume=resume, progress=not args.no_progress)
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if summary["interrupted"]:
        print(f"interrupted at {summary['num_timesteps']} steps; checkpoint written. "
              f"Continue with: python train.py --resume {run_dir}", file=sys.stderr)
        return 0
    last = summary["last_eval"] or {}
    if config.get("problem", "vm_rescheduling") == "vm_rescheduling":
        figure = (f"{'validation' if summary.get('split') == 'val' else 'held-out'} FR {last.get('fr_start', float('nan')):.4f} -> "
                  f"{last.get('fr_final', float('nan')):.4f} (greedy {last.get('greedy_fr', float('nan')):.4f})")
    else:
        figure = (f"train-split evaluation: return {last.get('episode_return', float('nan')):.2f} "
                  f"(k8s_hpa {last.get('hpa_episode_return', float('nan')):.2f}), SLO-violation "
                  f"{last.get('slo_violation_minutes', float('nan')):.1f} min (k8s_hpa "
                  f"{last.get('hpa_slo_violation_minutes', float('nan')):.1f})")
    print(f"done: {summary['num_timesteps']} steps; {figure}; models in {run_dir / 'best'} and {run_dir / 'last'}")
    if summary.get("split") == "eval":
        print(f"note: {config['env_config']} has no val_source, so best/ was picked on its eval_source; "
              "report figures of last/ (or add a val_source)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python train.py`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ship"]:
        from training.ship import main as ship

        return ship(argv[1:])
    if argv[:1] == ["export"]:
        from training.export import main as export

        return export(argv[1:])
    args = parse_args(argv)
    return run_cli(lambda: run(args), debug=args.debug, user_errors=(CheckpointError,))
