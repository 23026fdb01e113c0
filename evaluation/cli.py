"""Compare policies (saved agents and named baselines) on a config's held-out split.

    python evaluate.py configs/vm_rescheduling/real_small.yaml --policies random ffd greedy cpsat --time-limit 60
    python evaluate.py configs/vm_rescheduling/vmr2l_like_small.yaml --policies greedy beam cpsat --time-limits 0.1 1 5
    python evaluate.py configs/vm_rescheduling/azure_236.yaml --policies greedy cpsat_lns agent:runs/x/model.zip --seeds 0 1 2
    python evaluate.py configs/microservice_autoscaling/online_boutique_failures.yaml --policies static threshold k8s_hpa
    python -m evaluation ...        # the same, from any folder (bundled configs/ paths resolve there too)

Writes ``results/<run>/``: ``episodes.csv`` (one row per method and episode), ``summary.json``
(the command, means with bootstrap 95% intervals), ``table.md``, PNG plots, and prints the table.

VM rescheduling (configs with ``train_source`` / ``eval_source``): each episode is a snapshot drawn
from the held-out ``eval_source`` (from a list of files: each file in turn, and the table has a row
per file and method); every method plans at most ``budget`` migrations, and every plan is replayed
through the twin. A time-budgeted planner (beam, cpsat, cpsat_lns, ``agent:PATH?samples=K``) gets
``--time-limit`` seconds, or its own as ``beam@0.5``; ``--time-limits 0.1 1 5`` runs each of them at
each limit. Metrics: FR before and after, share of the best gain ``(FR0 - FR) / (FR0 - FR_best)``
(reference: the lowest FR any method reached on the episode, or the file's best known plan from
``best_known.json`` beside it if lower; ``episodes.csv`` names it), migrations, wall time per plan.
Plots: FR vs migrations per method; time per plan; final FR vs time per plan (quality vs time).

Autoscaling (``configs/microservice_autoscaling/*.yaml``): each episode is a window of the trace's
held-out split, run under each of the config's scenario variants (or ``--scenarios``); all methods
see the same windows and draws. Metrics per episode: SLO-violation minutes, success (no SLO breach
longer than ``--breach-limit-minutes``), mean end-to-end p95 latency, dropped requests, pod-hours,
and recovery time: minutes from the failure's onset until the SLO has held for
``--recovery-hold-minutes`` in a row (0 if it holds from the onset; blank for a variant without
failure, or if it never holds that long before the episode ends). Plots: load, p95 latency and
replicas over time per method (first episode of each scenario); SLO-violation minutes per scenario.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from digital_twin.resources import resolve_path
from evaluation.metrics import AUTOSCALING_METRICS, VM_METRICS
from evaluation.tables import markdown_table, summarise, write_csv, write_json

if TYPE_CHECKING:
    from agents.vm.plan import Planner

DEFAULT_VM_POLICIES = ["random", "ffd", "greedy", "cpsat"]
DEFAULT_AUTOSCALING_POLICIES = ["static", "threshold", "k8s_hpa"]


def parse_args(argv: list[str] | None = None, prog: str = "evaluate.py",
               default_out_dir: str | Path = "results") -> argparse.Namespace:
    """The command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in ``--help`` and usage errors.
        default_out_dir: ``--out-dir``'s default (``evaluate.py`` passes the checkout's ``results/``).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare policies (saved agents and baselines) on a config's held-out split; "
                    "write per-episode CSV, summary JSON with bootstrap 95%% intervals, PNG plots, and a Markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("config", help="YAML config (configs/vm_rescheduling/*.yaml or configs/microservice_autoscaling/*.yaml)")
    parser.add_argument("--policies", nargs="+", default=None,
                        help="methods to compare: baseline names (VM: random, ffd, greedy, beam, cpsat, cpsat_lns; "
                             "autoscaling: static, threshold, k8s_hpa, k8s_hpa_behavior) or agent:PATH for a saved agent "
                             f"(default: VM {' '.join(DEFAULT_VM_POLICIES)}; "
                             f"autoscaling {' '.join(DEFAULT_AUTOSCALING_POLICIES)})")
    parser.add_argument("--seeds", type=_non_negative_int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    parser.add_argument("--episodes", type=_positive_int, default=None,
                        help="episodes (held-out snapshots) per seed (default: one per file of a file source, else 1)")
    parser.add_argument("--budget", type=_positive_int, default=None, help="migration budget MNL (default: the config's)")
    parser.add_argument("--time-limit", type=_positive_float, default=60.0,
                        help="seconds per plan for time-budgeted planners (beam, cpsat, cpsat_lns, agent:PATH?samples=K); "
                             "NAME@SECONDS sets one method's own")
    parser.add_argument("--time-limits", type=_positive_float, nargs="+", default=None, metavar="SECONDS",
                        help="run every time-budgeted method (without @) at each of these limits: a quality-vs-time curve")
    parser.add_argument("--scenarios", nargs="+", default=None,
                        help="autoscaling: scenario variants to run (default: all of the config's)")
    parser.add_argument("--window-index", type=int, default=None,
                        help="autoscaling: play this held-out window (index into the split's windows) in every episode "
                             "instead of drawing windows at random")
    parser.add_argument("--static-replicas", type=int, default=5, help="autoscaling: replicas per service of 'static'")
    parser.add_argument("--hpa-target", type=int, default=60, help="autoscaling: HPA target CPU utilisation, percent")
    parser.add_argument("--breach-limit-minutes", type=float, default=2.0,
                        help="autoscaling: an episode succeeds if no SLO breach lasts longer than this")
    parser.add_argument("--recovery-hold-minutes", type=float, default=5.0,
                        help="autoscaling: recovered once the SLO has held this long after the failure's onset")
    parser.add_argument("--run-name", default=None, help="results/<run-name>/ (default: <config>__<time>)")
    parser.add_argument("--out-dir", default=str(default_out_dir), help="parent folder of run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _number(kind, test, allowed):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({allowed})") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range ({allowed})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_positive_int = _number(int, lambda v: v > 0, "a whole number >= 1")
_non_negative_int = _number(int, lambda v: v >= 0, "a whole number >= 0")
_positive_float = _number(float, lambda v: v > 0 and v < float("inf"), "seconds > 0")


def split_time_limit(spec: str) -> tuple[str, float | None]:
    """``"beam@0.5"`` -> ``("beam", 0.5)``; a spec without a trailing ``@SECONDS`` -> ``(spec, None)``."""
    base, at, tail = spec.rpartition("@")
    if not at:
        return spec, None
    try:
        seconds = float(tail)
    except ValueError:
        return spec, None
    if not 0 < seconds < float("inf"):
        raise SystemExit(f"error: --policies {spec}: the time limit after @ must be seconds > 0")
    return base, seconds


def expand_time_limits(specs: list[str], time_limits: list[float] | None) -> list[str]:
    """With ``--time-limits``, each time-budgeted spec without ``@`` becomes one spec per limit."""
    from agents.vm.registry import is_time_budgeted

    if not time_limits:
        return list(specs)
    out = []
    for spec in specs:
        if split_time_limit(spec)[1] is None and is_time_budgeted(spec):
            out.extend(f"{spec}@{t:g}" for t in time_limits)
        else:
            out.append(spec)
    return out


def vm_planners(specs: list[str]) -> tuple[dict[str, Planner], dict[str, float]]:
    """The planners ``--policies`` names (``agents.vm`` names or ``agent:PATH``, each with an optional
    ``@SECONDS``), by name, and the time limits the ``@`` set.

    Raises:
        SystemExit: a name is unknown (one ``error:`` line listing the names).
    """
    from agents.vm import VM_PLANNERS, get_planner

    planners, limits = {}, {}
    for spec in specs:
        base, seconds = split_time_limit(spec)
        if seconds is not None:
            limits[spec] = seconds
        try:
            planners[spec] = get_planner(base)
        except (ValueError, FileNotFoundError) as exc:
            if spec.startswith("agent:"):  # a bad path or option: the planner's own message says which
                raise SystemExit(f"error: --policies {spec}: {exc}") from None
            raise SystemExit(f"error: unknown VM policy {base!r}; choose one of {', '.join(VM_PLANNERS)} "
                             "or agent:PATH (each optionally NAME@SECONDS)") from None
    return planners, limits


def main(argv: list[str] | None = None, prog: str = "evaluate.py", default_out_dir: str | Path = "results") -> int:
    """Evaluate, write ``<out-dir>/<run>/`` and print the Markdown table.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in ``--help``.
        default_out_dir: ``--out-dir``'s default.

    Returns:
        The exit status (0); bad input exits with a one-line ``error:`` message instead.
    """
    args = parse_args(argv, prog=prog, default_out_dir=default_out_dir)
    os.environ.setdefault("WANDB_MODE", "offline")
    config_path = resolve_path(args.config)
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    run_name = args.run_name or f"{config_path.stem}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    if "eval_source" in config:
        from envs.vm_sources import load_vm_config
        from evaluation.plots import plot_vm
        from evaluation.vm import evaluate_vm

        args.policies = expand_time_limits(args.policies or list(DEFAULT_VM_POLICIES), args.time_limits)
        config = load_vm_config(config_path)  # validates, and checks train/held-out disjointness
        planners, limits = vm_planners(args.policies)
        rows, curves = evaluate_vm(config, planners, args.seeds, episodes=args.episodes, budget=args.budget,
                                   time_limit_s=args.time_limit, time_limits=limits, progress=not args.no_progress)
        metrics = VM_METRICS
        group_by = ["snapshot", "method"] if config["eval_source"].get("kind") == "files" else ["method"]
        plots = plot_vm(run_dir, rows, curves, title=config_path.stem)
    else:
        from agents.autoscaling import make_policy
        from evaluation.autoscaling import evaluate_autoscaling
        from evaluation.plots import plot_autoscaling

        args.policies = args.policies or list(DEFAULT_AUTOSCALING_POLICIES)
        try:
            policies = [make_policy(p, args.static_replicas, args.hpa_target) for p in args.policies]
            rows, data = evaluate_autoscaling(
                config_path, policies, args.seeds, episodes=args.episodes or 1, scenarios=args.scenarios,
                window_index=args.window_index, breach_limit_minutes=args.breach_limit_minutes,
                recovery_hold_minutes=args.recovery_hold_minutes, progress=not args.no_progress)
        except ValueError as e:  # unknown policy or a malformed config: say which
            raise SystemExit(f"error: {e}") from None
        metrics, group_by = AUTOSCALING_METRICS, ["scenario", "method"]
        plots = plot_autoscaling(run_dir, rows, data)

    summary = summarise(rows, group_by, [m for m, _, _ in metrics])
    write_csv(run_dir / "episodes.csv", rows)
    table = markdown_table(summary, group_by, metrics)
    (run_dir / "table.md").write_text(table + "\n")
    write_json(run_dir / "summary.json", {
        "command": " ".join([prog, *(sys.argv[1:] if argv is None else argv)]), "config": str(config_path), "policies": args.policies, "seeds": args.seeds, "episodes_per_seed": args.episodes or len({(r["seed"], r["episode"]) for r in rows}) // max(len(args.seeds), 1),
        "split": rows[0]["split"] if rows else None, "summary": summary,
    })
    print(table)
    references = sorted({(r.get("snapshot", ""), r["reference"]) for r in rows if r.get("reference")})
    if references:
        print("\nshare of best gain: (FR before - FR) / (FR before - reference FR); reference per snapshot: "
              + "; ".join(f"{snap} {ref}" if len(references) <= 4 else ref for snap, ref in references[:4])
              + (f"; ... ({len(references)} episodes, see episodes.csv)" if len(references) > 4 else ""))
    print(f"\nresults in {run_dir}: episodes.csv, summary.json, " + ", ".join(p.name for p in plots))
    return 0
