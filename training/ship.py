"""Ship a trained model: copy it out of its run folder into ``models/`` with what explains it.

    python train.py ship runs/vm_bc_s0 models/vm_rescheduling/graph_bc --evaluation results/graph_bc_eval
    python train.py ship runs/autoscaling_ppo_graph models/autoscaling/ppo_graph \
        --evaluation results/ob_failures results/ob_day0627 results/ob_day0630

writes ``DEST/``:

* the model (``model.zip``, or ``model.pt`` for MAPPO / IPPO) and ``metadata.json``: the run's
  ``best/`` (or ``--model last``) model, loadable by ``evaluate.py --policies agent:DEST`` anywhere
  (the metadata holds the env config and spaces);
* ``train_config.yaml``, ``run.json``: the resolved training config and how the run was started
  (command, versions, host);
* ``training_eval.csv`` and ``training_curve.png``: the periodic validation figures during training
  (VM: FR beside greedy's; autoscaling: episode return and SLO-violation minutes beside the HPA's,
  on train-split windows);
* ``evaluation/`` (with ``--evaluation``): an ``evaluate.py`` results folder, copied whole; with
  several, ``evaluation/<folder name>/`` each;
* ``README.md``: what it is, the training budget and machine, the commands that reproduce it and
  each evaluation's table.

A run that has not finished (no ``last/``) is refused unless ``--unfinished`` (a milestone of a
long run that goes on training: its ``best/`` so far is shipped, and the README says at how many
steps); a run that lacks the chosen model is refused, and so is a ``DEST`` that exists already,
unless ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from agents.model_files import MODEL_FILES
from training.runs import CheckpointError, read_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py ship", description="Copy a trained model out of its run folder into models/, with its "
        "config, training curve, evaluation and the commands that reproduce it.")
    parser.add_argument("run_dir", help="a finished run folder of train.py (runs/<name>)")
    parser.add_argument("dest", help="the model's folder, e.g. models/vm_rescheduling/graph_bc")
    parser.add_argument("--model", choices=("best", "last"), default="best",
                        help="which saved model to ship: best (VM: lowest validation FR; autoscaling: highest "
                             "train-split return) or last (default: best)")
    parser.add_argument("--evaluation", metavar="RESULTS_DIR", nargs="+",
                        help="evaluate.py results folders to ship beside it")
    parser.add_argument("--code-commit", metavar="SHA",
                        help="the commit the run's code came from, when it ran outside a git checkout")
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    parser.add_argument("--unfinished", action="store_true",
                        help="ship best/ of a run still training (no last/ yet): a milestone of a long run; "
                             "the README gives the steps trained so far")
    return parser.parse_args(argv)




def _model_file(folder: Path) -> str | None:
    return next((f for f in MODEL_FILES if (folder / f).is_file()), None)


def _autoscaling_curve(rows: list[dict[str, str]], path: Path, title: str) -> None:
    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    x = [int(r["timesteps"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for ax, key, label in ((top, "episode_return", "mean episode return (higher is better)"),
                           (bottom, "slo_violation_minutes", "SLO-violation minutes per episode")):
        ax.plot(x, [float(r[key]) for r in rows], marker="o", label="policy (deterministic)")
        ax.plot(x, [float(r[f"hpa_{key}"]) for r in rows], linestyle="--", color="tab:gray",
                label="Kubernetes HPA, same windows")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    bottom.set_xlabel("cluster steps")
    top.set_title(title)
    save_figure(fig, path)


def _curve(rows: list[dict[str, str]], path: Path, title: str, x_label: str) -> None:
    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    x = [int(r["updates"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, [float(r["fr_final"]) for r in rows], marker="o", label="policy (deterministic plan)")
    ax.plot(x, [float(r["greedy_fr"]) for r in rows], linestyle="--", color="tab:gray", label="greedy, same snapshots")
    ax.plot(x, [float(r["fr_start"]) for r in rows], linestyle=":", color="black", label="before planning")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean FR after the plan (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def ship(run_dir: Path, dest: Path, model: str = "best", evaluation: Path | list[Path] | None = None,
         force: bool = False, code_commit: str | None = None, unfinished: bool = False) -> Path:
    """Copy the model and its explanation into ``dest`` (see the module docstring); returns ``dest``.

    Raises:
        CheckpointError: not a finished run folder, the model is missing, or ``dest`` exists.
    """
    config, info = read_run(run_dir)
    source = run_dir / model
    model_file = _model_file(source)
    for f in (model_file or "model.zip", "metadata.json"):
        if not (source / f).is_file():
            raise CheckpointError(f"{source / f}: missing; ship a finished run (train.py writes best/ and last/)")
    finished = _model_file(run_dir / "last") is not None
    if not finished and not (unfinished and model == "best"):
        raise CheckpointError(f"{run_dir}: the run has not finished (no last/); resume it with train.py --resume "
                              f"{run_dir}, or ship its best/ so far with --unfinished")
    evaluations = [] if evaluation is None else [evaluation] if isinstance(evaluation, Path) else list(evaluation)
    for e in evaluations:
        if not (e / "summary.json").is_file():
            raise CheckpointError(f"--evaluation {e}: not an evaluate.py results folder (no summary.json)")
    if len({e.name for e in evaluations}) < len(evaluations):
        raise CheckpointError(f"--evaluation: two folders named alike ({', '.join(str(e) for e in evaluations)}); "
                              "each is copied to evaluation/<folder name>/")
    if dest.exists():
        if not force:
            raise CheckpointError(f"{dest}: exists already (--force replaces it)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in (model_file, "metadata.json"):
        shutil.copy2(source / f, dest / f)
    shutil.copy2(run_dir / "config.yaml", dest / "train_config.yaml")
    shutil.copy2(run_dir / "run.json", dest / "run.json")
    metadata = json.loads((source / "metadata.json").read_text())
    rows: list[dict[str, str]] = []
    if (run_dir / "eval.csv").is_file():
        shutil.copy2(run_dir / "eval.csv", dest / "training_eval.csv")
        rows = list(csv.DictReader((run_dir / "eval.csv").open()))
    split = metadata.get("selection_split", "eval")
    bc = config.get("algorithm") == "bc"
    if rows and config.get("problem") == "autoscaling":
        _autoscaling_curve(rows, dest / "training_curve.png", f"{dest.name}: train-split windows during training")
    elif rows:
        _curve(rows, dest / "training_curve.png",
               f"{dest.name}: {'validation' if split == 'val' else 'held-out'} FR during training",
               "epoch" if bc else "update")
    shipped = [dest / "evaluation"] if len(evaluations) == 1 else [dest / "evaluation" / e.name for e in evaluations]
    for e, to in zip(evaluations, shipped):
        shutil.copytree(e, to)
    if code_commit:
        info = dict(info, git_commit=f"{code_commit} (given when shipped: the run was made outside a checkout)")
        metadata = dict(metadata, git_commit=None)
    (dest / "README.md").write_text(_readme(run_dir, dest, config, info, metadata, model, rows, evaluations))
    return dest


def _checkpoint_steps(run_dir: Path) -> int | None:
    """Steps of the run's latest checkpoint (``checkpoint/manifest.json``), or None without one."""
    try:
        return int(json.loads((run_dir / "checkpoint" / "manifest.json").read_text())["num_timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _trained_steps(run_dir: Path, metadata: dict[str, Any]) -> int:
    """The whole run's steps (its last/ model's, else its latest checkpoint's), not those of the model
    shipped (best/ may come earlier)."""
    last = run_dir / "last" / "metadata.json"
    if last.is_file():
        return int(json.loads(last.read_text()).get("num_timesteps") or 0)
    return _checkpoint_steps(run_dir) or int(metadata.get("num_timesteps") or 0)


def _readme(run_dir: Path, dest: Path, config: dict[str, Any], info: dict[str, Any], metadata: dict[str, Any],
            model: str, rows: list[dict[str, str]], evaluations: list[Path]) -> str:
    finished = _model_file(run_dir / "last") is not None
    command = list(info.get("command") or [])
    if command and command[0].startswith("python"):
        command[0] = "python"
    if len(command) > 1 and Path(command[1]).name == "train.py":
        command[1] = "train.py"  # run from the checkout's root
    bc = config.get("algorithm") == "bc"
    budget = (f"{config['bc']['demonstrations']} {config['bc']['teacher']} demonstrations "
              f"({config['bc']['teacher_time_limit_s']} s each), {config['bc']['epochs']} epochs"
              if bc else f"{_trained_steps(run_dir, metadata):,} environment steps")
    if not finished:
        total = None if bc else config.get("total_timesteps")
        budget += (f" so far: shipped unfinished (of {total:,} planned), the run goes on with "
                   f"`train.py --resume {run_dir}`" if isinstance(total, int) else " so far: shipped unfinished")
    autoscaling = config.get("problem") == "autoscaling"
    if autoscaling:
        picked = max(rows, key=lambda r: float(r["episode_return"]), default=None)
    else:
        picked = next((r for r in rows if float(r["fr_final"]) == min(float(x["fr_final"]) for x in rows)), None)
    split = metadata.get("selection_split", "eval")
    chosen = ("highest train-split return" if autoscaling else "lowest validation FR") if model == "best" else "final"
    lines = [
        f"# {dest.name}",
        "",
        str(" ".join(str(config.get("description", "")).split())),
        "",
        f"- Model: the run's `{model}/` ({chosen}); "
        f"`python evaluate.py CONFIG --policies agent:{dest}` plays it.",
        f"- Algorithm: {config.get('algorithm')}, policy `{config['policy']['name']}`; env config "
        f"`{config['env_config']}`.",
        f"- Training budget: {budget}; started {info.get('started')} on host `{info.get('host')}` "
        f"({platform.machine()}, {os.cpu_count()} CPUs visible when shipped, no GPU used: device cpu).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in (info.get('versions') or {}).items())}; "
        f"code commit {metadata.get('git_commit') or info.get('git_commit') or 'not recorded (run outside a git checkout)'}.",
    ]
    if picked is not None and autoscaling:
        lines.append(f"- Picked on train-split windows (every scenario variant of the training mix) at "
                     f"{int(picked['timesteps']):,} cluster steps: mean episode return "
                     f"{float(picked['episode_return']):.1f} (Kubernetes HPA {float(picked['hpa_episode_return']):.1f}), "
                     f"SLO-violation {float(picked['slo_violation_minutes']):.2f} min "
                     f"(HPA {float(picked['hpa_slo_violation_minutes']):.2f}). Curve: `training_curve.png`, "
                     f"figures: `training_eval.csv`.")
    elif picked is not None:
        lines.append(f"- Picked on the {'validation' if split == 'val' else 'evaluation (!)'} split at "
                     f"{'epoch' if bc else 'update'} {picked['updates']}: FR {float(picked['fr_start']):.4f} -> "
                     f"{float(picked['fr_final']):.4f} (greedy {float(picked['greedy_fr']):.4f}), mean of the "
                     f"validation episodes. Curve: `training_curve.png`, figures: `training_eval.csv`.")
    lines += ["", "## Reproduce", "", "```", " ".join(command) if command else "(command not recorded)",
              f"python train.py ship {run_dir} {dest}" + (f" --model {model}" if model != "best" else "")
              + ("" if finished else " --unfinished")
              + (f" --evaluation {' '.join(str(e) for e in evaluations)}" if evaluations else ""), "```", ""]
    if evaluations:
        lines += ["## Evaluation (held out, never trained or selected on)", ""]
    for e in evaluations:
        summary = json.loads((e / "summary.json").read_text())
        folder = "evaluation/" if len(evaluations) == 1 else f"evaluation/{e.name}/"
        if len(evaluations) > 1:
            lines += [f"### {e.name}", ""]
        lines.append(f"`{folder}`: `{summary.get('command') or 'evaluate.py'}` on `{summary['config']}`, "
                     f"seeds {summary['seeds']}.")
        table = e / "table.md"
        if table.is_file():
            lines += ["", table.read_text().strip()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dest = ship(Path(args.run_dir), Path(args.dest), args.model,
                    [Path(e) for e in args.evaluation] if args.evaluation else None, args.force, args.code_commit,
                    args.unfinished)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped {Path(args.run_dir) / args.model} to {dest}: " + ", ".join(sorted(p.name for p in dest.iterdir())))
    return 0
