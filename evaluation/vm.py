"""VM rescheduling: every planner on every held-out snapshot of a config's ``eval_source``.

Each episode is a snapshot drawn from the held-out source; every planner plans at most ``budget``
migrations on it, and every plan is replayed through the twin (:mod:`agents.vm.plan`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from evaluation.metrics import add_cpsat_share, fr_curve

if TYPE_CHECKING:
    from agents.vm.plan import Planner


def evaluate_vm(config: dict[str, Any], planners: Mapping[str, Planner], seeds: Sequence[int], episodes: int = 1,
                budget: int | None = None, time_limit_s: float = 60.0,
                progress: bool = True) -> tuple[list[dict], dict[str, list[list[float]]]]:
    """Run every planner on every held-out episode.

    Args:
        config: a validated VM config (:func:`envs.vm_sources.load_vm_config`).
        planners: the name each is reported under -> the planner
            (``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``, e.g. from
            :func:`agents.vm.get_planner`).
        seeds: evaluation seeds; episode ``e`` of seed ``s`` draws its snapshot with ``rng([s, e])``.
        episodes: episodes (held-out snapshots) per seed.
        budget: migration budget MNL (default: the config's ``env.budget``, else 50).
        time_limit_s: seconds per plan (the CP-SAT planners use it).
        progress: show a progress bar on stderr.

    Returns:
        ``(rows, curves)``: one row per method and episode (the :data:`~evaluation.metrics.VM_METRICS`
        and the episode's description), and per method its FR-vs-migrations curves, one per episode.
    """
    from tqdm import tqdm

    from envs.vm_sources import make_source

    source = make_source(config["eval_source"])
    budget = budget or int((config.get("env") or {}).get("budget", 50))
    rows: list[dict] = []
    curves: dict[str, list[list[float]]] = {spec: [] for spec in planners}
    jobs = [(seed, ep) for seed in seeds for ep in range(episodes)]
    bar = tqdm(total=len(jobs) * len(planners), desc="evaluating", disable=not progress, file=sys.stderr)
    for seed, episode in jobs:
        source.restart()
        snapshot = source(np.random.default_rng([seed, episode]))
        episode_rows = []
        for spec, plan in planners.items():
            bar.set_postfix_str(f"seed {seed} ep {episode} {spec}")
            result = plan(snapshot, budget, time_limit_s=time_limit_s, seed=seed)
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
        add_cpsat_share(episode_rows)
        rows.extend(episode_rows)
    bar.close()
    return rows, curves
