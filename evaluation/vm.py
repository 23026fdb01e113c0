"""VM rescheduling: every planner on every held-out snapshot of a config's ``eval_source``.

Each episode is a snapshot drawn from the held-out source; every planner plans at most the
episode's budget of migrations on it, and every plan is replayed through the twin
(:mod:`agents.vm.plan`). The budget follows the one rule of :func:`agents.vm.plan.resolve_budget`:
``--budget`` if given, else the config's ``env.budget``, else the snapshot's
``general_requirement.maximum_migration`` (else 50). Every planner of an episode gets the same (a
saved agent's env plays at it too); without ``--budget`` it is also what the config's own env
(:func:`envs.vm_rescheduling.make_vm_env`) plays that snapshot at. Each row records it (``budget``,
``budget_source``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from evaluation.metrics import add_best_share, best_known_fr, fr_curve

if TYPE_CHECKING:
    from agents.vm.plan import Planner
    from digital_twin.vm.snapshot import Snapshot

CellRunner = Callable[[Callable[..., Any], Sequence[tuple], Callable[[Sequence[Any]], str]], Iterable[Any]]
"""``run_cells(fn, cells, describe)``: ``fn(*cell)`` for every cell, in order (``describe(cell)`` names one in messages)."""


def split_time_limit(method: str) -> tuple[str, float | None]:
    """``"beam@0.5"`` -> ``("beam", 0.5)``; a method without a trailing ``@SECONDS`` -> ``(method, None)``."""
    base, at, tail = method.rpartition("@")
    if not at:
        return method, None
    try:
        return base, float(tail)
    except ValueError:
        return method, None


def base_method(method: str) -> str:
    """The method without its ``@SECONDS`` time limit: ``"beam@0.5"`` -> ``"beam"``."""
    return split_time_limit(method)[0]


def plan_cell(snapshot: Snapshot, name: str, spec: str, plan: Planner, budget: int, time_limit_s: float,
              seed: int) -> tuple[dict[str, Any], list[float]]:
    """One cell of the evaluation: ``plan`` on one episode's snapshot, replayed through the twin.

    Returns:
        ``(figures, curve)``: the row's plan figures (FR before and after, migrations, wall time,
        statuses, bound) and the FR-vs-migrations curve.
    """
    result = plan(snapshot, budget, time_limit_s=time_limit_s, seed=seed)
    if result.num_moves > budget:
        raise AssertionError(f"{spec}: {result.num_moves} migrations on {name}, over the budget {budget}")
    return {
        "fr_before": result.fr_before, "fr_after": result.fr_after,
        "migrations": result.num_moves, "moved_vms": result.stats.get("moved_vms", result.num_moves),
        "wall_s": result.wall_s, "status": result.status,
        # The solver's own verdicts (CP-SAT: OPTIMAL, FEASIBLE, UNKNOWN = nothing found in time)
        # and, for CP-SAT, whose plan this is (its own, or its greedy fallback).
        "solver_status": " ".join(result.stats.get("solver_statuses", [])),
        "plan_source": result.stats.get("plan_source", ""),
        "bound_fr": result.bound_fr if result.bound_fr is not None else float("nan"),
    }, fr_curve(snapshot, result.moves, budget)


def describe_cell(cell: Sequence[Any]) -> str:
    """``"greedy on seed0-ep1 (seed 0)"``: a :func:`plan_cell` cell as messages name it."""
    _, name, spec, _, _, _, seed = cell
    return f"{spec} on {name} (seed {seed})"


def run_locally(fn: Callable[..., Any], cells: Sequence[tuple], describe: Callable[[Sequence[Any]], str]) -> Iterator[Any]:  # noqa: ARG001
    """The default :data:`CellRunner`: each cell in this process, one after the other, when asked for."""
    for cell in cells:
        yield fn(*cell)


def evaluate_vm(config: dict[str, Any], planners: Mapping[str, Planner], seeds: Sequence[int],
                episodes: int | None = None, budget: int | None = None, time_limit_s: float = 60.0,
                progress: bool = True, time_limits: Mapping[str, float] | None = None,
                run_cells: CellRunner | None = None,
                ) -> tuple[list[dict], dict[str, list[list[float]]]]:
    """Run every planner on every held-out episode.

    Args:
        config: a validated VM config (:func:`envs.vm_sources.load_vm_config`).
        planners: the name each is reported under -> the planner
            (``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``, e.g. from
            :func:`agents.vm.get_planner`).
        seeds: evaluation seeds; episode ``e`` of seed ``s`` draws its snapshot with ``rng([s, e])``,
            except from a file source, where episode ``e`` is file ``e mod n`` (so that every file
            is played).
        episodes: episodes (held-out snapshots) per seed (default: one per file of a file source, else 1).
        budget: migration budget MNL, overriding everything (``evaluate.py --budget``); None: the
            config's ``env.budget``, else each snapshot's ``maximum_migration``, else 50
            (:func:`~agents.vm.plan.resolve_budget`).
        time_limit_s: seconds per plan for the time-budgeted planners.
        progress: show a progress bar on stderr.
        time_limits: per-method seconds per plan, overriding ``time_limit_s`` (``beam@0.5``).
        run_cells: what runs the cells (one planner on one episode, :func:`plan_cell`), e.g.
            :func:`evaluation.ray_cells.run_cells_on_ray`; default :func:`run_locally`, one after
            the other in this process. Either way the rows are the same, in the same order.

    Returns:
        ``(rows, curves)``: one row per method and episode (the :data:`~evaluation.metrics.VM_METRICS`,
        the episode's description, its ``budget`` and ``budget_source`` (``"flag"``, ``"config"``,
        ``"snapshot"`` or ``"default"``) and the ``reference`` of its ``best_share``), and per method
        its FR-vs-migrations curves, one per episode, all as long as the largest budget (a curve
        holds its last value past its episode's budget).
    """
    from tqdm import tqdm

    from agents.vm.plan import resolve_budget
    from envs.vm_sources import FileSource, make_source

    source = make_source(config["eval_source"])
    files = list(source.paths) if isinstance(source, FileSource) else None
    episodes = episodes or (len(files) if files else 1)
    config_budget = (config.get("env") or {}).get("budget")
    override, override_source = (budget, "flag") if budget is not None else (config_budget, "config")
    time_limits = dict(time_limits or {})
    rows: list[dict] = []
    curves: dict[str, list[list[float]]] = {spec: [] for spec in planners}
    drawn = []  # (seed, episode, snapshot, name, budget, budget_source), all drawn before any cell runs
    for seed in seeds:
        for episode in range(episodes):
            source.restart()
            if files:
                snapshot = source(np.random.default_rng([seed, episode]), files[episode % len(files)])
            else:
                snapshot = source(np.random.default_rng([seed, episode]))
            name = Path(str(snapshot.source)).name if files else f"seed{seed}-ep{episode}"
            # One budget for every planner of the episode (the config's env's too, unless --budget overrides it).
            drawn.append((seed, episode, snapshot, name, *resolve_budget(snapshot, override, override_source)))
    cells = [(snapshot, name, spec, plan, episode_budget, time_limits.get(spec, time_limit_s), seed)
             for seed, _, snapshot, name, episode_budget, _ in drawn for spec, plan in planners.items()]
    results = iter((run_cells or run_locally)(plan_cell, cells, describe_cell))
    bar = tqdm(total=len(cells), desc="evaluating", disable=not progress, file=sys.stderr)
    for seed, episode, snapshot, name, episode_budget, budget_source in drawn:
        episode_rows = []
        for spec in planners:
            bar.set_postfix_str(f"{name} seed {seed} {spec}")
            figures, curve = next(results)
            curves[spec].append(curve)
            episode_rows.append({
                "method": spec, "snapshot": name, "seed": seed, "episode": episode, "split": source.split,
                "hosts": sum(c.num_hosts for c in snapshot.clusters), "vms": sum(c.num_vms for c in snapshot.clusters),
                "budget": episode_budget, "budget_source": budget_source, "time_limit_s": time_limits.get(spec, time_limit_s),
                **figures,
            })
            bar.update()
        add_best_share(episode_rows, best_known_fr(snapshot, episode_budget))
        rows.extend(episode_rows)
    bar.close()
    # Episodes of different budgets: every curve as long as the longest (held at its last value).
    length = max((len(c) for runs in curves.values() for c in runs), default=0)
    for runs in curves.values():
        runs[:] = [c + [c[-1]] * (length - len(c)) for c in runs]
    return rows, curves
