"""A VM migration plan and its replay through the twin: what every VM planner returns.

A *planner* answers ``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``: a sequence
of ``(cluster index, vm, host, placement)`` moves that :meth:`digital_twin.vm.Cluster.migrate`
accepts in order, at most ``budget`` of them (the MNL). No planner mutates the snapshot it is
given; each plans on a copy and :func:`finish_plan` replays the moves through the twin on a second,
fresh copy (:func:`replay_plan`), so ``fr_after`` is always the twin's figure and ``claimed_fr`` is
what the planner itself believed it reached (the tests check they agree).

The budget follows one rule, :func:`resolve_budget`, for the env, ``evaluate.py`` (which passes
it to every planner) and the heuristics called with ``budget=None``: the snapshot's ``general_requirement.maximum_migration`` unless the user overrides
it (``evaluate.py --budget``, a config's ``env.budget``, a planner's or the env's ``budget``
argument), and :data:`DEFAULT_BUDGET` for a snapshot that states no limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from digital_twin.vm import Snapshot

Move = tuple[int, int, int, int]
"""One migration: ``(cluster index, vm index, destination host index, placement)``."""

DEFAULT_BUDGET = 50
"""The budget (MNL) of a snapshot whose file states no ``maximum_migration`` and no override (VMR2L's MNL)."""

BUDGET_SOURCES = ("flag", "config", "argument", "options", "snapshot", "default")
"""Where an episode's budget came from (:func:`resolve_budget`): ``evaluate.py --budget``, a config's
``env.budget``, a planner's ``budget`` argument, the env's ``reset(options={"budget": ...})``, the
snapshot's ``general_requirement.maximum_migration``, or :data:`DEFAULT_BUDGET`."""


def resolve_budget(snapshot: Snapshot, override: int | None = None, source: str = "argument") -> tuple[int, str]:
    """The migration budget of an episode on ``snapshot``, and where it came from: the one rule.

    The user's ``override`` wins, whether smaller or larger than the file's limit; without one the
    budget is the snapshot's ``general_requirement.maximum_migration``; without that,
    :data:`DEFAULT_BUDGET`. The env, ``evaluate.py`` and the heuristics (``budget=None``) resolve
    their budget here, and ``evaluate.py`` hands the result to every planner of the episode, so on
    one episode they all use the same.

    Args:
        snapshot: the episode's snapshot.
        override: the user's budget, or None to follow the snapshot.
        source: what ``override`` is, one of :data:`BUDGET_SOURCES` (reported back when it applies).

    Returns:
        ``(budget, source)``: ``source`` is the given one when ``override`` applies, else
        ``"snapshot"`` or ``"default"``.

    Raises:
        ValueError: ``override`` is not an integer >= 0, or ``source`` is not a known one.
    """
    if source not in BUDGET_SOURCES:
        raise ValueError(f"budget source must be one of {', '.join(BUDGET_SOURCES)}, got {source!r}")
    if override is not None:
        if isinstance(override, bool) or int(override) != override or override < 0:
            raise ValueError(f"budget must be an integer >= 0, got {override!r}")
        return int(override), source
    limit = snapshot.requirement.maximum_migration if snapshot.requirement is not None else None
    if limit is not None:
        return int(limit), "snapshot"
    return DEFAULT_BUDGET, "default"


def planning_budget(snapshot: Snapshot, budget: int | None) -> int:
    """A planner's budget: its ``budget`` argument, or the snapshot's limit when it is None (:func:`resolve_budget`)."""
    return resolve_budget(snapshot, budget, "argument")[0]


@dataclass
class PlanResult:
    """What a planner returns.

    Attributes:
        planner: the planner's registry name.
        moves: the plan, replayable in order with ``Cluster.migrate``.
        fr_before: the snapshot's fragment rate before the plan.
        fr_after: the fragment rate after replaying ``moves`` through the twin on a fresh copy.
        claimed_fr: the fragment rate the planner computed for its own plan.
        bound_fr: a proven lower bound on the best reachable fragment rate (CP-SAT), else None.
        status: ``"HEURISTIC"`` for the simple planners; the CP-SAT status (``"OPTIMAL"``,
            ``"FEASIBLE"``, ...) for the solvers.
        wall_s: wall-clock seconds of the planning call (replay included).
        budget: the migration budget (MNL) the plan was made for (:func:`resolve_budget`).
        stats: planner-specific figures (solver sizes, iterations, ...).
    """

    planner: str
    moves: list[Move]
    fr_before: float
    fr_after: float
    claimed_fr: float
    bound_fr: float | None
    status: str
    wall_s: float
    budget: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_moves(self) -> int:
        """Migrations in the plan."""
        return len(self.moves)

    @property
    def gap(self) -> float | None:
        """``claimed_fr - bound_fr`` (absolute optimality gap in FR), or None without a bound."""
        return None if self.bound_fr is None else max(0.0, self.claimed_fr - self.bound_fr)

    def summary(self) -> str:
        bound = "-" if self.bound_fr is None else f"{self.bound_fr:.4f}"
        return (f"{self.planner:<10} FR {self.fr_before:.4f} -> {self.fr_after:.4f} "
                f"({self.num_moves:>3} moves, bound {bound}, {self.status}, {self.wall_s:.1f} s)")


def replay_plan(snapshot: Snapshot, moves: Sequence[Move]) -> Snapshot:
    """Apply a plan to a fresh copy of ``snapshot`` through the twin.

    Raises:
        InfeasibleMigrationError: a move is infeasible when its turn comes (nothing is returned).

    Returns:
        The copy after the plan.
    """
    snap = snapshot.copy()
    for ci, vm, host, placement in moves:
        snap.clusters[ci].migrate(int(vm), int(host), int(placement))
    return snap


def finish_plan(
    planner: str,
    snapshot: Snapshot,
    budget: int,
    moves: Sequence[Move],
    claimed_fr: float,
    start_time: float,
    bound_fr: float | None = None,
    status: str = "HEURISTIC",
    stats: dict[str, Any] | None = None,
) -> PlanResult:
    """Replay ``moves`` through the twin and package a :class:`PlanResult` (shared by all planners)."""
    moves = [(int(ci), int(vm), int(h), int(p)) for ci, vm, h, p in moves]
    if len(moves) > budget:
        raise ValueError(f"{planner}: plan has {len(moves)} migrations, budget is {budget}")
    after = replay_plan(snapshot, moves)
    stats = dict(stats or {})
    stats["moved_vms"] = sum(
        int((a.vm_host != b.vm_host).sum()) for a, b in zip(snapshot.clusters, after.clusters)
    )
    return PlanResult(
        planner=planner, moves=moves, fr_before=snapshot.fragment_rate(), fr_after=after.fragment_rate(),
        claimed_fr=float(claimed_fr), bound_fr=bound_fr, status=status,
        wall_s=time.perf_counter() - start_time, budget=budget, stats=stats,
    )


Planner = Callable[..., PlanResult]
"""``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``; ``evaluate.py`` passes every
planner the episode's :func:`resolve_budget`, and the heuristics also take ``budget=None`` for the
snapshot's own limit."""
