"""Compare policies (saved agents and named baselines) on a config's held-out split.

    python evaluate.py configs/vm_rescheduling/real_small.yaml --policies random ffd greedy cpsat --time-limit 60
    python evaluate.py configs/vm_rescheduling/azure_236.yaml --policies greedy cpsat_lns agent:runs/x/model.zip --seeds 0 1 2
    python evaluate.py configs/microservice_autoscaling/online_boutique_failures.yaml --policies static threshold k8s_hpa

Writes ``results/<run>/``: ``episodes.csv`` (one row per method and episode), ``summary.json``
(means with bootstrap 95% intervals), PNG plots, and prints a Markdown table.

VM rescheduling (configs with ``train_source`` / ``eval_source``): each episode is a snapshot drawn
from the held-out ``eval_source``; every method plans at most ``budget`` migrations, and every plan
is replayed through the twin. Metrics: final FR, share of the CP-SAT gain
``(FR0 - FR) / (FR0 - FR_cpsat)`` (reference: the best CP-SAT planner run on the same episode),
migrations, wall time per plan. Plots: FR vs migrations per method; time per plan.

Autoscaling (``configs/microservice_autoscaling/*.yaml``): each episode is a window of the trace's
held-out split, run under each of the config's scenario variants (or ``--scenarios``); all methods
see the same windows and draws. Metrics per episode: SLO-violation minutes, success (no SLO breach
longer than ``--breach-limit-minutes``), mean end-to-end p95 latency, dropped requests, pod-hours,
and recovery time: minutes from the failure's onset until the SLO has held for
``--recovery-hold-minutes`` in a row (0 if it holds from the onset; blank for a variant without
failure, or if it never holds that long before the episode ends). Plots: load, p95 latency and replicas over time per method (first episode of each
scenario); SLO-violation minutes per scenario.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Compare policies (saved agents and baselines) on a config's held-out split; "
                    "write per-episode CSV, summary JSON with bootstrap 95%% intervals, PNG plots, and a Markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("config", help="YAML config (configs/vm_rescheduling/*.yaml or configs/microservice_autoscaling/*.yaml)")
    parser.add_argument("--policies", nargs="+", default=None,
                        help="methods to compare: baseline names (VM: random, ffd, greedy, cpsat, cpsat_lns; "
                             "autoscaling: static, threshold, k8s_hpa, k8s_hpa_behavior) or agent:PATH for a saved agent "
                             "(default: VM random ffd greedy cpsat; autoscaling static threshold k8s_hpa)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    parser.add_argument("--episodes", type=int, default=1, help="episodes (held-out snapshots) per seed")
    parser.add_argument("--budget", type=int, default=None, help="migration budget MNL (default: the config's)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per plan for the CP-SAT planners")
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
    parser.add_argument("--out-dir", default=str(ROOT / "results"), help="parent folder of run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- VM rescheduling
VM_METRICS = [("fr_after", "final FR", ".4f"), ("cpsat_share", "share of CP-SAT gain", ".3f"),
              ("migrations", "migrations", ".1f"), ("wall_s", "s per plan", ".3g")]


def vm_planner(spec: str):
    """A planner callable from a baseline name or ``agent:PATH``."""
    if spec.startswith("agent:"):
        from agents.vm_agent_planner import load_agent_planner

        return load_agent_planner(spec)
    from agents.baselines.vm_planners import VM_PLANNERS

    if spec not in VM_PLANNERS:
        raise SystemExit(f"error: unknown VM policy {spec!r}; choose from {sorted(VM_PLANNERS)} or agent:PATH")
    return VM_PLANNERS[spec]


def fr_curve(snapshot, moves, budget: int) -> list[float]:
    """FR after 0, 1, ..., budget migrations of the plan (held at its last value after the plan ends)."""
    snap = snapshot.copy()
    curve = [snap.fragment_rate()]
    for ci, vm, host, placement in moves:
        snap.clusters[ci].migrate(vm, host, placement)
        curve.append(snap.fragment_rate())
    return curve + [curve[-1]] * (budget + 1 - len(curve))


def evaluate_vm(config: dict[str, Any], args: argparse.Namespace) -> tuple[list[dict], dict[str, list[list[float]]]]:
    """Run every policy on every held-out episode. Returns per-episode rows and FR curves per method."""
    from tqdm import tqdm

    from envs.vm_sources import make_source

    source = make_source(config["eval_source"])
    budget = args.budget or int((config.get("env") or {}).get("budget", 50))
    planners = {spec: vm_planner(spec) for spec in args.policies}
    rows: list[dict] = []
    curves: dict[str, list[list[float]]] = {spec: [] for spec in planners}
    jobs = [(seed, ep) for seed in args.seeds for ep in range(args.episodes)]
    bar = tqdm(total=len(jobs) * len(planners), desc="evaluating", disable=args.no_progress, file=sys.stderr)
    for seed, episode in jobs:
        source.restart()
        snapshot = source(np.random.default_rng([seed, episode]))
        episode_rows = []
        for spec, plan in planners.items():
            bar.set_postfix_str(f"seed {seed} ep {episode} {spec}")
            result = plan(snapshot, budget, time_limit_s=args.time_limit, seed=seed)
            curves[spec].append(fr_curve(snapshot, result.moves, budget))
            episode_rows.append({
                "method": spec, "seed": seed, "episode": episode, "split": source.split,
                "hosts": sum(c.num_hosts for c in snapshot.clusters), "vms": sum(c.num_vms for c in snapshot.clusters),
                "budget": budget, "fr_before": result.fr_before, "fr_after": result.fr_after,
                "migrations": result.num_moves, "moved_vms": result.stats.get("moved_vms", result.num_moves),
                "wall_s": result.wall_s, "status": result.status,
                "bound_fr": result.bound_fr if result.bound_fr is not None else float("nan"),
            })
            bar.update()
        # Share of the CP-SAT gain, against the best CP-SAT planner run on this episode.
        solver_frs = [r["fr_after"] for r in episode_rows if r["method"].startswith("cpsat")]
        for r in episode_rows:
            gain = r["fr_before"] - min(solver_frs) if solver_frs else 0.0
            r["cpsat_share"] = (r["fr_before"] - r["fr_after"]) / gain if gain > 1e-12 else float("nan")
        rows.extend(episode_rows)
    bar.close()
    return rows, curves


def plot_vm(run_dir: Path, rows: list[dict], curves: dict[str, list[list[float]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in curves.items():
        mean = np.mean(np.array(runs), axis=0)
        ax.plot(np.arange(len(mean)), mean, label=method, drawstyle="steps-post")
    ax.set_xlabel("migrations")
    ax.set_ylabel("fragment rate (16 vCPU)")
    ax.set_title("FR vs migrations (mean over held-out episodes)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, run_dir / "fr_vs_migrations.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(curves)
    times = [[r["wall_s"] for r in rows if r["method"] == m] for m in methods]
    ax.bar(methods, [np.mean(t) for t in times], color="tab:blue", alpha=0.8)
    for i, t in enumerate(times):
        ax.scatter([i] * len(t), t, color="black", s=10, zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("wall time per plan (s)")
    ax.set_title("Time per plan")
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "time_per_plan.png"))
    return paths


# ---------------------------------------------------------------------- autoscaling
AUTOSCALING_METRICS = [("slo_violation_minutes", "SLO-violation min", ".2f"), ("success", "success rate", ".2f"),
                       ("p95_latency_s", "mean p95 s", ".3f"), ("dropped_requests", "dropped requests", ".0f"),
                       ("pod_hours", "pod-hours", ".2f"), ("recovery_minutes", "recovery min", ".2f")]


def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def recovery_minutes(violated: np.ndarray, onset_step: int | None, step_minutes: float, hold_steps: int) -> float:
    """Minutes from the failure onset until the SLO has held for ``hold_steps`` consecutive steps.

    0 when the SLO holds for ``hold_steps`` right from the onset; NaN without a failure, or when
    no such stretch starts before the episode ends.
    """
    if onset_step is None:
        return float("nan")
    ok = ~violated[onset_step:]
    if len(ok) < hold_steps:
        return float("nan")
    # held[i]: the SLO holds on steps i .. i + hold_steps - 1 (a sliding-window count).
    counts = np.convolve(ok.astype(np.int64), np.ones(hold_steps, dtype=np.int64), mode="valid")
    starts = np.flatnonzero(counts == hold_steps)
    return float(starts[0] * step_minutes) if len(starts) else float("nan")


def evaluate_autoscaling(config_path: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every policy on every held-out window and scenario. Returns per-episode rows and time series."""
    from tqdm import tqdm

    from agents.autoscaling_policies import deltas_for, make_policy
    from envs.microservice_autoscaling import MicroserviceCore, load_config

    config = load_config(config_path)
    policies = [make_policy(p, args.static_replicas, args.hpa_target) for p in args.policies]
    variants = {v.name: v for v in config.scenarios}
    names = args.scenarios or list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"error: unknown scenario(s) {unknown}; the config has {list(variants)}")
    step_minutes = config.step_seconds / 60.0
    hold_steps = max(1, int(round(args.recovery_hold_minutes / step_minutes)))
    rows: list[dict] = []
    series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(names) * len(args.seeds) * len(policies), desc="evaluating", disable=args.no_progress,
               file=sys.stderr)
    for v_index, name in enumerate(names):
        starts = [spec["start_minute"] for spec in variants[name].specs if "start_minute" in spec]
        onset = int(round(min(starts) / step_minutes)) if starts else None
        for seed in args.seeds:
            for policy in policies:
                bar.set_postfix_str(f"{name} seed {seed} {policy.name}")
                # Same seed -> same held-out windows and draws for every method.
                rng = np.random.default_rng([seed, v_index])
                core = MicroserviceCore(config, num_clusters=args.episodes, split="held_out")
                options = {"scenario": name, "split": "held_out"}
                if args.window_index is not None:
                    options["window_index"] = args.window_index
                core.reset(rng, options=options)
                policy.reset(core)
                keys = ("slo_violated", "e2e_latency_p95", "dropped_requests", "pod_seconds", "offered_rate")
                log = {k: [] for k in (*keys, "replicas")}
                for t in range(core.window_steps):
                    desired = policy.desired_replicas(core, now_s=t * config.step_seconds)
                    _, _, info = core.step(deltas_for(core, desired), rng)
                    for k in keys:
                        log[k].append(np.asarray(info[k], dtype=np.float64))
                    log["replicas"].append(core.desired.sum(axis=1).astype(np.float64))
                arrays = {k: np.stack(v, axis=1) for k, v in log.items()}  # (B, T)
                for b in range(args.episodes):
                    violated = arrays["slo_violated"][b] > 0
                    rows.append({
                        "scenario": name, "method": policy.name, "seed": seed, "episode": b, "split": "held_out",
                        "window_start_step": int(core.window_start[b]), "steps": core.window_steps,
                        "slo_violation_minutes": float(violated.sum() * step_minutes),
                        "success": float(longest_run(violated) * step_minutes <= args.breach_limit_minutes),
                        "p95_latency_s": float(arrays["e2e_latency_p95"][b].mean()),
                        "dropped_requests": float(arrays["dropped_requests"][b].sum()),
                        "pod_hours": float(arrays["pod_seconds"][b].sum() / 3600.0),
                        "recovery_minutes": recovery_minutes(violated, onset, step_minutes, hold_steps),
                    })
                if seed == args.seeds[0]:
                    series[(name, policy.name)] = {k: v[0] for k, v in arrays.items()}
                bar.update()
    bar.close()
    return rows, {"series": series, "step_minutes": step_minutes, "scenarios": names,
                  "methods": [p.name for p in policies]}


def plot_autoscaling(run_dir: Path, rows: list[dict], data: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    minutes = None
    for scenario in data["scenarios"]:
        fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
        for method in data["methods"]:
            s = data["series"][(scenario, method)]
            minutes = np.arange(len(s["offered_rate"])) * data["step_minutes"]
            axes[1].plot(minutes, s["e2e_latency_p95"], label=method)
            axes[2].plot(minutes, s["replicas"], label=method, drawstyle="steps-post")
        axes[0].plot(minutes, s["offered_rate"], color="black")
        axes[0].set_ylabel("offered load (req/s)")
        axes[1].set_ylabel("end-to-end p95 (s)")
        axes[2].set_ylabel("replicas (all services)")
        axes[2].set_xlabel("minutes into the held-out window")
        axes[1].legend(fontsize=8)
        axes[0].set_title(f"scenario {scenario}: first held-out episode")
        for ax in axes:
            ax.grid(alpha=0.3)
        paths.append(save_figure(fig, run_dir / f"timeseries_{scenario}.png"))

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(data["scenarios"])), 4.5))
    width = 0.8 / len(data["methods"])
    for i, method in enumerate(data["methods"]):
        means = [np.mean([r["slo_violation_minutes"] for r in rows if r["scenario"] == sc and r["method"] == method])
                 for sc in data["scenarios"]]
        ax.bar(np.arange(len(data["scenarios"])) + i * width, means, width, label=method)
    ax.set_xticks(np.arange(len(data["scenarios"])) + 0.4 - width / 2, data["scenarios"], rotation=30, ha="right")
    ax.set_ylabel("SLO-violation minutes (mean)")
    ax.set_title("SLO-violation minutes per scenario")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "slo_minutes_by_scenario.png"))
    return paths


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    from agents.reporting import markdown_table, summarise, write_csv, write_json

    config_path = Path(args.config)
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    run_name = args.run_name or f"{config_path.stem}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    if "eval_source" in config:
        from envs.vm_sources import load_vm_config

        args.policies = args.policies or ["random", "ffd", "greedy", "cpsat"]
        config = load_vm_config(config_path)  # validates, and checks train/held-out disjointness
        rows, curves = evaluate_vm(config, args)
        metrics, group_by = VM_METRICS, ["method"]
        plots = plot_vm(run_dir, rows, curves)
    else:
        args.policies = args.policies or ["static", "threshold", "k8s_hpa"]
        try:
            rows, data = evaluate_autoscaling(config_path, args)
        except ValueError as e:  # unknown policy or a malformed config: say which
            raise SystemExit(f"error: {e}") from None
        metrics, group_by = AUTOSCALING_METRICS, ["scenario", "method"]
        plots = plot_autoscaling(run_dir, rows, data)

    summary = summarise(rows, group_by, [m for m, _, _ in metrics])
    write_csv(run_dir / "episodes.csv", rows)
    write_json(run_dir / "summary.json", {
        "config": str(config_path), "policies": args.policies, "seeds": args.seeds, "episodes_per_seed": args.episodes,
        "split": rows[0]["split"] if rows else None, "summary": summary,
    })
    print(markdown_table(summary, group_by, metrics))
    print(f"\nresults in {run_dir}: episodes.csv, summary.json, " + ", ".join(p.name for p in plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
