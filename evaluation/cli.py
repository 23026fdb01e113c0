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
per file and method); every method plans at most the episode's budget of migrations, and every plan
is replayed through the twin. The budget is one for all methods of an episode: ``--budget`` if
given, else the config's ``env.budget``, else the snapshot's ``general_requirement.maximum_migration``
(else 50), the rule the config's env follows too; ``episodes.csv`` records it per row (``budget``,
``budget_source``) and a line under the table says which applied. A time-budgeted planner (beam,
cpsat, cpsat_lns, ``agent:PATH?samples=K``; ``PATH`` a model.zip written by ``train.py`` or a run
folder with best/ or last/) gets
``--time-limit`` seconds, or its own as ``beam@0.5``; ``--time-limits 0.1 1 5`` runs each of them at
each limit. Metrics: FR before and after, share of the best gain ``(FR0 - FR) / (FR0 - FR_best)``
(reference: the lowest FR any method reached on the episode, or the file's best known plan from
``best_known.json`` beside it if lower; ``episodes.csv`` names it), migrations, wall time per plan.
Plots: FR vs migrations per method; time per plan; final FR vs time per plan (quality vs time).

Autoscaling (``configs/microservice_autoscaling/*.yaml``): each episode is a window of the trace's
held-out split, run under each of the config's scenario variants (or ``--scenarios``); every
scenario and method of a seed sees the same windows and draws, and the table, ``episodes.csv``
(``window_start``, the window's first minute) and every plot title name them. Metrics per episode:
SLO-violation minutes, success (no SLO breach longer than ``--breach-limit-minutes``), mean
end-to-end p95 latency, dropped requests, pod-hours, recovery time and the env's return (its reward
summed over the episode). Recovery time covers the failure's whole effect: minutes from the
failure's onset until the SLO holds without a break through ``--recovery-hold-minutes`` after
both that moment and the failure's end (so a breach that starts while the failure acts, or within
the hold time after it, counts however quiet its first minutes were; 0 if the SLO holds throughout;
blank for a variant without failure, or if it never holds that long before the episode ends).
Plots: load, p95 latency and replicas over time per method (first episode of each scenario);
SLO-violation minutes per scenario. ``--explain`` adds ``explain/`` (:mod:`evaluation.explain`):
each agent's moves around every failure's onset, and a shallow decision tree distilled from each
agent on the train split with its fidelity on the held-out states.

Pod packing (``configs/pod_packing/*.yaml``, :mod:`evaluation.pods`): the "Priority Matters" table,
CP-SAT's fallback against the Kubernetes default scheduler on generated scenarios where the default
leaves pods Pending, at each of ``--time-limits`` (default: the config's windows); ``--episodes`` sets
the number of scenarios, drawn from the ``--seeds`` in turn.

User mistakes follow :mod:`digital_twin.cli`'s rule: one ``error:`` line naming the file or flag,
what is wrong and what is allowed, exit status 2, the traceback only with ``--debug``. The config,
the policies (a saved agent is loaded) and the output folder are all checked before any episode
runs, and ``results/<run>/`` is created only once there are results to write into it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digital_twin.cli import (
    ArgumentParser, ConfigError, HelpFormatter, UsageError, add_debug_flag, check_writable_dir, did_you_mean,
    non_negative_float, non_negative_int, one_line, positive_float, positive_int, read_yaml, run_cli,
)
from digital_twin.resources import bundled_path, resolve_path
from evaluation.metrics import AUTOSCALING_METRICS, VM_METRICS
from evaluation.tables import markdown_table, summarise, write_csv, write_json

if TYPE_CHECKING:
    from agents.vm.plan import Planner

DEFAULT_VM_POLICIES = ["random", "ffd", "greedy", "cpsat"]
DEFAULT_AUTOSCALING_POLICIES = ["static", "threshold", "k8s_hpa"]
DEFAULT_TIME_LIMIT_S = 60.0
AGENT_PATH_TAKES = ("a model.zip written by train.py, or a run folder with best/ or last/ "
                    "(e.g. agent:runs/<run>, agent:models/vm_rescheduling/graph_bc)")
"""What ``agent:PATH`` takes, as the messages and ``--help`` say it."""
CONFIG_FOLDERS = ("configs/vm_rescheduling", "configs/microservice_autoscaling", "configs/pod_packing")
CONFIGS_TAKEN = " or ".join(f"{folder}/*.yaml" for folder in CONFIG_FOLDERS)
# Flags that mean something for one problem only: given for the other, they are refused, not ignored.
VM_ONLY = ("budget", "time_limit", "time_limits", "ray", "ray_address")
AUTOSCALING_ONLY = ("scenarios", "window_index", "static_replicas", "hpa_target", "breach_limit_minutes",
                    "recovery_hold_minutes", "explain")
# Pod packing (evaluation.pods) takes --seeds, --episodes and --time-limits (CP-SAT's windows); the rest is refused.
POD_PACKING_REFUSED = tuple(n for n in VM_ONLY if n != "time_limits") + AUTOSCALING_ONLY + ("policies",)


def parse_args(argv: list[str] | None = None, prog: str = "evaluate.py",
               default_out_dir: str | Path = "results") -> argparse.Namespace:
    """The command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in ``--help`` and usage errors.
        default_out_dir: ``--out-dir``'s default (``evaluate.py`` passes the checkout's ``results/``).
    """
    parser = ArgumentParser(
        prog=prog,
        description="Compare policies (saved agents and baselines) on a config's held-out split; "
                    "write per-episode CSV, summary JSON with bootstrap 95% intervals, PNG plots, and a Markdown table.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("config", help="YAML config (configs/vm_rescheduling/*.yaml, configs/microservice_autoscaling/*.yaml "
                                       "or configs/pod_packing/*.yaml)")
    parser.add_argument("--policies", nargs="+", default=None, metavar="POLICY",
                        help="methods to compare: baseline names (VM: random, ffd, greedy, beam, cpsat, cpsat_lns; "
                             "autoscaling: static, threshold, k8s_hpa, k8s_hpa_behavior, k8s_hpa_tuned, mpc, k8s_hpa@TARGET) or agent:PATH for a saved "
                             f"agent, PATH being {AGENT_PATH_TAKES} "
                             f"(default: VM {' '.join(DEFAULT_VM_POLICIES)}; "
                             f"autoscaling {' '.join(DEFAULT_AUTOSCALING_POLICIES)})")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    parser.add_argument("--episodes", type=positive_int, default=None,
                        help="episodes per seed (default: VM, one per file of a file source, else 1; autoscaling 1; "
                             "pod packing, where it counts scenarios in all over the seeds, the config's "
                             "pod_scenarios.count)")
    parser.add_argument("--budget", type=positive_int, default=None,
                        help="VM: migration budget MNL of every method (default: the config's env.budget, else "
                             "each snapshot's general_requirement.maximum_migration, else 50)")
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                        help="VM: seconds per plan for time-budgeted planners (beam, cpsat, cpsat_lns, "
                             f"agent:PATH?samples=K); NAME@SECONDS sets one method's own (default: {DEFAULT_TIME_LIMIT_S:g})")
    parser.add_argument("--time-limits", type=positive_float, nargs="+", default=None, metavar="SECONDS",
                        help="VM: run every time-budgeted method (without @) at each of these limits: a quality-vs-time curve; "
                             "pod packing: CP-SAT's windows (default: the config's cpsat.time_limits_s)")
    parser.add_argument("--scenarios", nargs="+", default=None,
                        help="autoscaling: scenario variants to run (default: all of the config's)")
    parser.add_argument("--window-index", type=non_negative_int, default=None,
                        help="autoscaling: play this held-out window (index into the split's windows) in every episode "
                             "(default: windows drawn at random)")
    parser.add_argument("--static-replicas", type=positive_int, default=None,
                        help="autoscaling: replicas per service of 'static' (default: 5)")
    parser.add_argument("--hpa-target", type=positive_int, default=None,
                        help="autoscaling: HPA target CPU utilisation, percent of the request (default: 60)")
    parser.add_argument("--breach-limit-minutes", type=non_negative_float, default=None,
                        help="autoscaling: an episode succeeds if no SLO breach lasts longer than this (default: 2)")
    parser.add_argument("--recovery-hold-minutes", type=positive_float, default=None,
                        help="autoscaling: recovered once the SLO holds from then on through this long after the "
                             "failure's end (default: 5)")
    parser.add_argument("--explain", action="store_true",
                        help="autoscaling: also analyse every policy's behaviour (each agent's moves around every "
                             "failure's onset; a depth-3 decision tree distilled from each agent on the train split, "
                             "its fidelity on the held-out states) into results/<run>/explain/; plays every scenario "
                             "once more on the train split")
    parser.add_argument("--ray", action="store_true",
                        help="VM: run the (policy, episode, seed) cells as Ray tasks, on a local Ray with this "
                             "machine's cores or on --ray-address; the same rows as a local run, a failed cell "
                             "retried (needs pip install 'clustergym[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="with --ray: an existing Ray cluster (ray start --head prints its address; implies --ray)")
    parser.add_argument("--run-name", default=None, help="results/<run-name>/ (default: <config>__<time>)")
    parser.add_argument("--out-dir", default=str(default_out_dir), help="parent folder of run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:
        parser.error(f"argument --seeds: seed {repeated[0]} given twice (each seed is one set of episodes)")
    return args


# ---------------------------------------------------------------------- the config
def bundled_configs() -> list[str]:
    """The bundled evaluation configs, as ``configs/<problem>/<name>.yaml``."""
    out = []
    for folder in CONFIG_FOLDERS:
        out += [f"{folder}/{p.name}" for p in sorted(bundled_path(folder).glob("*.yaml"))]
    return out


def read_config(text: str) -> tuple[Path, dict[str, Any]]:
    """The config file a command line names and its YAML mapping.

    Raises:
        UsageError: no such file, not YAML, not a mapping (naming the bundled configs).
    """
    path = resolve_path(text)
    if not path.exists():
        close = difflib.get_close_matches(text, bundled_configs(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"{text}: no such config file{hint}; give {CONFIGS_TAKEN}")
    try:
        doc = read_yaml(path)
    except UsageError as exc:
        raise UsageError(f"{exc}; evaluate.py takes a YAML config, {CONFIGS_TAKEN}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{text}: not a config (a YAML mapping), got {type(doc).__name__}; give {CONFIGS_TAKEN}")
    return path, doc


def detect_problem(doc: dict[str, Any], where: str) -> str:
    """``"vm"`` or ``"autoscaling"``: the kind of config ``doc`` is, from all of its keys.

    A key that only one kind has decides (``train_source`` / ``eval_source`` / ``env``, or
    ``topology`` / ``trace`` / ...); a config of only typos is given to the kind whose keys they are
    close to, whose schema then names each typo with its did-you-mean. The kinds' schemas are the
    env modules' own (:data:`envs.vm_sources.VM_CONFIG_KEYS`, :class:`envs.microservice.MicroserviceConfig`).

    Raises:
        UsageError: a training config (train.py's), or keys of neither kind.
    """
    import dataclasses

    from envs.microservice.config import MicroserviceConfig
    from envs.vm_sources import VM_CONFIG_KEYS

    if {"env_config", "algorithm", "ppo", "total_timesteps"} & set(doc):
        raise UsageError(f"{where}: a training config (train.py's); evaluate its env_config, and the trained "
                         "model with --policies agent:runs/<run>")
    if "pod_scenarios" in doc:  # the pod-packing kind's own key (evaluation.pods checks the rest)
        return "pods"
    shared = {"name", "description"}
    kinds = {"vm": set(VM_CONFIG_KEYS) - shared,
             "autoscaling": {f.name for f in dataclasses.fields(MicroserviceConfig)} - shared - {"source"}}
    keys = [str(k) for k in doc if k not in shared]
    exact = {kind: sum(k in allowed for k in keys) for kind, allowed in kinds.items()}
    close = {kind: sum(bool(difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)) for k in keys)
             for kind, allowed in kinds.items()}
    ranked = sorted(kinds, key=lambda kind: (exact[kind], close[kind]), reverse=True)
    best, other = ranked
    if exact[best] and exact[best] == exact[other]:
        found = {kind: ", ".join(k for k in keys if k in kinds[kind]) for kind in kinds}
        raise UsageError(f"{where}: mixes keys of a VM-rescheduling config ({found['vm']}) and of an autoscaling "
                         f"config ({found['autoscaling']}); a config is one or the other")
    if (exact[best], close[best]) == (exact[other], close[other]):
        raise UsageError(f"{where}: neither a VM-rescheduling config (keys {', '.join(sorted(kinds['vm']))}) nor an "
                         f"autoscaling config (keys {', '.join(sorted(kinds['autoscaling']))}) nor a pod-packing config "
                         "(keys pod_scenarios, scheduler, cpsat)")
    return best


def refuse_flags_of_the_other_problem(args: argparse.Namespace, problem: str, where: str) -> None:
    """A flag of the other problem would be ignored: refuse it, naming the kind of config given."""
    if problem == "pods":
        for name in POD_PACKING_REFUSED:
            if getattr(args, name, None) not in (None, False):
                raise UsageError(f"--{name.replace('_', '-')}: does not apply to pod-packing configs ({where} is one); "
                                 "they take --seeds, --episodes and --time-limits (CP-SAT's windows)")
        return
    foreign = AUTOSCALING_ONLY if problem == "vm" else VM_ONLY
    for name in foreign:
        if getattr(args, name) not in (None, False):  # False: a store_true flag not given
            kind = "a VM-rescheduling" if problem == "vm" else "an autoscaling"
            raise UsageError(f"--{name.replace('_', '-')}: applies to "
                             f"{'autoscaling' if problem == 'vm' else 'VM-rescheduling'} configs only; "
                             f"{where} is {kind} config")


# ---------------------------------------------------------------------- the policies
def split_time_limit(spec: str) -> tuple[str, float | None]:
    """:func:`evaluation.vm.split_time_limit`, with the seconds checked.

    Raises:
        UsageError: the seconds after ``@`` are not > 0.
    """
    from evaluation.vm import split_time_limit as split

    base, seconds = split(spec)
    if seconds is not None and not 0 < seconds < float("inf"):
        raise UsageError(f"--policies {spec}: the time limit after @ must be seconds > 0, got {spec.rpartition('@')[2]}")
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


def check_agent_path(spec: str, takes: str = AGENT_PATH_TAKES) -> None:
    """Refuse an ``agent:PATH`` (optionally ``?options`` and ``@SECONDS``) that names no saved model,
    before the planner imports torch to load it.

    Raises:
        ConfigError: nothing at PATH, a folder without a model, a file that is not a model.
    """
    from training.config import check_model_path

    path = split_time_limit(spec)[0][len("agent:"):].partition("?")[0]
    if path:
        check_model_path(f"--policies {spec}", resolve_path(path), takes=takes)


def vm_planners(specs: list[str]) -> tuple[dict[str, Planner], dict[str, float]]:
    """The planners ``--policies`` names (``agents.vm`` names or ``agent:PATH``, each with an optional
    ``@SECONDS``), by name, and the time limits the ``@`` set.

    Raises:
        UsageError: a name is unknown (listing the names, with a did-you-mean), or ``agent:PATH``
            names no model.
    """
    from agents.vm import VM_PLANNERS, get_planner

    planners, limits = {}, {}
    for spec in specs:
        base, seconds = split_time_limit(spec)
        if seconds is not None:
            limits[spec] = seconds
        if spec.startswith("agent:"):
            check_agent_path(spec)
        try:
            planners[spec] = get_planner(base)
        except (ValueError, FileNotFoundError) as exc:
            if spec.startswith("agent:"):  # an option or a model the planner refuses: its message says which
                raise UsageError(f"--policies {spec}: {one_line(exc)}") from None
            raise UsageError(f"--policies: unknown VM policy {base!r}{did_you_mean(base, VM_PLANNERS)}; choose one of "
                             f"{', '.join(VM_PLANNERS)} or agent:PATH (each optionally NAME@SECONDS)") from None
    return planners, limits


def _is_mappo_model(path: Path) -> bool:
    """``path`` is a MAPPO / IPPO model of train.py: a ``model.pt``, or a folder (run, best/, last/) holding one."""
    from agents.model_files import resolve_model_path

    if path.suffix == ".pt":
        return True
    try:
        return resolve_model_path(path, "model.pt").suffix == ".pt"
    except FileNotFoundError:
        return False


def autoscaling_policies(specs: list[str], static_replicas: int, hpa_target: int, config=None) -> list:
    """The autoscaling policies ``--policies`` names (``config``: the one ``k8s_hpa_tuned`` is tuned for, on its
    train split, before the evaluation starts).

    Raises:
        UsageError: an unknown name (with a did-you-mean), or an ``agent:PATH`` that names no model.
    """
    from agents.autoscaling import make_policy
    from agents.autoscaling.registry import POLICY_NAMES

    policies = []
    for spec in specs:
        if spec.startswith("agent:") and _is_mappo_model(Path(spec.split(":", 1)[1])):
            from training.mappo import load_mappo_policy  # a MAPPO / IPPO run: model.pt, not an SB3 zip

            try:
                policies.append(load_mappo_policy(spec.split(":", 1)[1]))
            except (ValueError, OSError) as exc:
                raise UsageError(f"--policies {spec}: {one_line(exc)}") from None
            continue
        if spec.startswith("agent:"):
            check_agent_path(spec, takes="a model.zip saved by stable-baselines3, or a MAPPO / IPPO run's model.pt")
        try:
            policies.append(make_policy(spec, static_replicas, hpa_target, config=config))
        except (ValueError, FileNotFoundError) as exc:
            if spec.startswith("agent:"):
                raise UsageError(f"--policies {spec}: {one_line(exc)}") from None
            raise UsageError(f"--policies: unknown autoscaling policy {spec!r}{did_you_mean(spec, POLICY_NAMES)}; "
                             f"choose one of {', '.join(POLICY_NAMES)}, k8s_hpa@TARGET or agent:PATH") from None
    return policies


# ---------------------------------------------------------------------- the command
def main(argv: list[str] | None = None, prog: str = "evaluate.py", default_out_dir: str | Path = "results") -> int:
    """Evaluate, write ``<out-dir>/<run>/`` and print the Markdown table.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in ``--help``.
        default_out_dir: ``--out-dir``'s default.

    Returns:
        The exit status: 0, or 2 after a user mistake (one ``error:`` line on stderr).
    """
    args = parse_args(argv, prog=prog, default_out_dir=default_out_dir)
    command = " ".join([prog, *(sys.argv[1:] if argv is None else argv)])
    return run_cli(lambda: evaluate(args, command), debug=args.debug, user_errors=user_errors())


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes the twin and env modules raise for a mistake in an input file."""
    from digital_twin.microservices.scenarios import ScenarioError

    return (ConfigError, ScenarioError)


def evaluate(args: argparse.Namespace, command: str) -> int:
    """The command after parsing: check everything, run every episode, then write the run folder."""
    os.environ.setdefault("WANDB_MODE", "offline")
    config_path, doc = read_config(args.config)
    problem = detect_problem(doc, args.config)
    refuse_flags_of_the_other_problem(args, problem, args.config)
    run_name = args.run_name or f"{config_path.stem}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = check_writable_dir(Path(args.out_dir) / run_name, "--out-dir")  # created once there are results
    if problem == "pods":
        from evaluation.pods import evaluate_pods_command

        return evaluate_pods_command(config_path, doc, args, run_dir, command)

    if problem == "vm":
        from envs.vm_sources import load_vm_config
        from evaluation.plots import plot_vm
        from evaluation.vm import evaluate_vm

        config = load_vm_config(config_path)  # the one VM schema; checks train/held-out disjointness
        args.policies = expand_time_limits(args.policies or list(DEFAULT_VM_POLICIES), args.time_limits)
        planners, limits = vm_planners(args.policies)
        run_cells = None
        if args.ray or args.ray_address:
            from evaluation.ray_cells import connect, run_cells_on_ray

            connect(args.ray_address, "--ray")
            run_cells = run_cells_on_ray
        rows, curves = evaluate_vm(config, planners, args.seeds, episodes=args.episodes, budget=args.budget,
                                   time_limit_s=args.time_limit or DEFAULT_TIME_LIMIT_S, time_limits=limits,
                                   progress=not args.no_progress, run_cells=run_cells)
        metrics = VM_METRICS
        group_by = ["snapshot", "method"] if config["eval_source"].get("kind") == "files" else ["method"]
        run_dir.mkdir(parents=True, exist_ok=True)
        plots = plot_vm(run_dir, rows, curves, title=config_path.stem)
    else:
        from envs.microservice import load_config
        from evaluation.autoscaling import evaluate_autoscaling
        from evaluation.plots import plot_autoscaling

        config = load_config(config_path)  # the one autoscaling schema, before any policy is built
        args.policies = args.policies or list(DEFAULT_AUTOSCALING_POLICIES)
        policies = autoscaling_policies(args.policies, args.static_replicas or 5, args.hpa_target or 60, config=config)
        recorder = None
        if args.explain:
            from evaluation.explain import DecisionRecorder

            recorder = DecisionRecorder()
        rows, data = evaluate_autoscaling(
            config_path, policies, args.seeds, episodes=args.episodes or 1, scenarios=args.scenarios,
            window_index=args.window_index,
            breach_limit_minutes=2.0 if args.breach_limit_minutes is None else args.breach_limit_minutes,
            recovery_hold_minutes=args.recovery_hold_minutes or 5.0, progress=not args.no_progress,
            observer=recorder)
        metrics, group_by = AUTOSCALING_METRICS, ["scenario", "method"]
        run_dir.mkdir(parents=True, exist_ok=True)
        plots = plot_autoscaling(run_dir, rows, data, title=config_path.stem)
        if recorder is not None:
            plots += explain(config_path, policies, args, recorder, run_dir / "explain")

    summary = summarise(rows, group_by, [m for m, _, _ in metrics])
    write_csv(run_dir / "episodes.csv", rows)
    table = markdown_table(summary, group_by, metrics)
    # What the rows played (VM: the budget; autoscaling: the windows, the HPA's limits), kept with the table.
    (run_dir / "table.md").write_text(table + "\n" + "".join(line + "\n" for line in table_notes(rows)))
    write_json(run_dir / "summary.json", {
        "command": command, "config": str(config_path), "policies": args.policies, "seeds": args.seeds,
        "episodes_per_seed": args.episodes or len({(r["seed"], r["episode"]) for r in rows}) // max(len(args.seeds), 1),
        "split": rows[0]["split"] if rows else None,
        **({"budgets": budget_summary(rows)} if problem == "vm" else {"windows": windows_summary(rows)}),
        "summary": summary,
    })
    print(table)
    for line in notes(rows):
        print(line)
    print(f"\nresults in {run_dir}: episodes.csv, summary.json, " + ", ".join(str(p.relative_to(run_dir)) for p in plots))
    return 0


def explain(config_path: Path, policies: list, args: argparse.Namespace, heldout, out_dir: Path) -> list[Path]:
    """``--explain``: the same scenarios, seeds and episodes once more on the train split (the trees'
    training states), then :func:`evaluation.explain.write_explanation`."""
    from evaluation.autoscaling import evaluate_autoscaling
    from evaluation.explain import DecisionRecorder, write_explanation

    train = DecisionRecorder()
    evaluate_autoscaling(config_path, policies, args.seeds, episodes=args.episodes or 1, scenarios=args.scenarios,
                         progress=not args.no_progress, split="train", observer=train)
    return write_explanation(out_dir, heldout, train)


BUDGET_SOURCE_WORDS = {
    "flag": "--budget",
    "config": "the config's env.budget",
    "snapshot": "the snapshot's general_requirement.maximum_migration",
    "default": "the default (the snapshot states no maximum_migration)",
}
"""How the line under the table names each ``budget_source``."""


def budget_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """The distinct ``(budget, budget_source)`` of the VM rows, with the snapshots of each (summary.json)."""
    seen: dict[tuple[int, str], list[str]] = {}
    for r in rows:
        snaps = seen.setdefault((int(r["budget"]), str(r["budget_source"])), [])
        if r.get("snapshot", "") not in snaps:
            snaps.append(r.get("snapshot", ""))
    return [{"budget": b, "budget_source": src, "snapshots": snaps} for (b, src), snaps in seen.items()]


def budget_note(rows: list[dict]) -> str | None:
    """The line under a VM table that says which budget every method played at, and why."""
    budgets = budget_summary([r for r in rows if "budget" in r and "budget_source" in r])
    if not budgets:
        return None
    if len(budgets) == 1:
        b = budgets[0]
        return (f"\nbudget: {b['budget']} migrations for every method and episode, from "
                f"{BUDGET_SOURCE_WORDS.get(b['budget_source'], b['budget_source'])}")
    parts = [f"{b['budget']} ({BUDGET_SOURCE_WORDS.get(b['budget_source'], b['budget_source'])}) on "
             + ", ".join(b["snapshots"][:3]) + (f" and {len(b['snapshots']) - 3} more" if len(b["snapshots"]) > 3 else "")
             for b in budgets]
    return "\nbudget, the same for every method of an episode: " + "; ".join(parts) + " (episodes.csv: budget, budget_source)"


def windows_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """Autoscaling: the window each seed's episode played (summary.json), the same for every scenario and method."""
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:
        if "window_start" in r:
            seen.setdefault((r["seed"], r["episode"]), {"seed": r["seed"], "episode": r["episode"],
                                                        "window_start": r["window_start"],
                                                        "window_start_step": r["window_start_step"]})
    return list(seen.values())


def table_notes(rows: list[dict]) -> list[str]:
    """The lines that belong under the table wherever it goes (table.md and the terminal): the
    budget the VM methods played at; the windows the autoscaling episodes played and what the HPA
    cannot see in the twin. Each starts with a blank line."""
    out = []
    budget = budget_note(rows)
    if budget:
        out.append(budget)
    if rows and "window_start" in rows[0]:
        from evaluation.autoscaling import window_note

        line = window_note(rows)
        if line:
            out.append("\n" + line)
        if any(str(r["method"]).startswith("k8s_hpa") for r in rows):
            from agents.autoscaling.policies import HPA_NOT_MODELLED

            out.append(f"\nk8s_hpa: {HPA_NOT_MODELLED}")
    return out


def notes(rows: list[dict]) -> list[str]:
    """What the table cannot say by itself: :func:`table_notes`, the reference of the share column,
    and the planners that found nothing within their limit (with the solver's status)."""
    from evaluation.vm import base_method

    out = table_notes(rows)
    references = sorted({(r.get("snapshot", ""), r["reference"]) for r in rows if r.get("reference")})
    if references:
        out.append("\nshare of best gain: (FR before - FR) / (FR before - reference FR); reference per snapshot: "
                   + "; ".join(f"{snap} {ref}" if len(references) <= 4 else ref for snap, ref in references[:4])
                   + (f"; ... ({len(references)} episodes, see episodes.csv)" if len(references) > 4 else ""))
    # CP-SAT that found no solution of its own in time: UNKNOWN (its plan is then its fallback), or
    # no migration without a proof that none helps.
    stuck = [r for r in rows if base_method(r["method"]) in ("cpsat", "cpsat_lns")
             and (r.get("status") == "UNKNOWN" or (r.get("migrations") == 0 and r.get("status") != "OPTIMAL"))]
    for r in stuck[:6]:
        statuses = r.get("solver_status") or r.get("status")
        source = r.get("plan_source")
        plan = (f"its plan is the {source} fallback" if source and source not in ("cpsat", "none")
                else "no migration" if r.get("migrations") == 0 else "its best plan so far")
        out.append(f"note: {r['method']} found no solution of its own on {r['snapshot']} (seed {r['seed']}) within "
                   f"{r['time_limit_s']:g} s (CP-SAT status {statuses}): {plan}; give it more time with "
                   f"{base_method(r['method'])}@SECONDS or --time-limit")
    if len(stuck) > 6:
        out.append(f"note: ... and {len(stuck) - 6} more such episodes (episodes.csv, columns status, solver_status)")
    return out
