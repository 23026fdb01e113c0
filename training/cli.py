"""``train.py``'s command line: parse, check, dispatch; user mistakes end in one line and exit 2."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from training.config import ConfigError, list_train_configs, load_train_config
from training.runs import CheckpointError, new_run_dir, python_command, read_run

USAGE_ERROR = 2


def _epilog() -> str:
    lines = ["bundled configs (configs/train/):"]
    for path, description in list_train_configs():
        lines.append(f"  {path.name:<24} {description}")
    lines += ["", "Runs are written to runs/<name>/: config.yaml, run.json, tb/ (TensorBoard), eval.csv,",
              "checkpoint/ (restart point), best/ and last/ (model.zip + metadata.json).",
              "Ctrl-C (or SIGTERM) writes a checkpoint and exits; --resume RUN_DIR continues it exactly.",
              "",
              "python train.py ship RUN_DIR models/<problem>/<name> [--evaluation RESULTS_DIR]: copy a finished",
              "run's model into models/ with its config, training curve, evaluation and reproduce commands."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train an agent on a clustergym environment from a YAML config.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="training config (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides of config values, e.g. ppo.learning_rate=1e-4 total_timesteps=4096")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--run-name", help="runs/<run-name>/ (default: <config>__s<seed>__<time>)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                        help="Weights & Biases mode (default: $WANDB_MODE, else offline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors too")
    return parser.parse_args(argv)


def _start_wandb(mode: str, run_dir: Path, config: dict, run_id: str, resume: bool):
    """A wandb run synced from TensorBoard (offline unless asked), or None when disabled."""
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project="clustergym", dir=str(run_dir), mode=mode, config=config, id=run_id,
                      name=run_dir.name, resume="allow" if resume else None, sync_tensorboard=True)


def run(args: argparse.Namespace) -> int:
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
        parent = Path(args.runs_dir)
        run_dir = new_run_dir(parent, args.run_name, Path(args.config).stem, config, python_command())
        config, info = read_run(run_dir)
        resume = False
    print(f"run folder: {run_dir}", file=sys.stderr)
    if config.get("algorithm", "maskable_ppo") == "bc":
        from training.imitation import train
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
    print(f"done: {summary['num_timesteps']} steps; {'validation' if summary.get('split') == 'val' else 'held-out'} FR {last.get('fr_start', float('nan')):.4f} -> "
          f"{last.get('fr_final', float('nan')):.4f} (greedy {last.get('greedy_fr', float('nan')):.4f}); "
          f"models in {run_dir / 'best'} and {run_dir / 'last'}")
    if summary.get("split") == "eval":
        print(f"note: {config['env_config']} has no val_source, so best/ was picked on its eval_source; "
              "report figures of last/ (or add a val_source)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ship"]:
        from training.ship import main as ship

        return ship(argv[1:])
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, CheckpointError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR

