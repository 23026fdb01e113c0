"""VM-rescheduling baselines: a common plan result, twin replay, and the simple planners.

Every planner answers the same call::

    plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult

and returns a migration *plan*: a sequence of ``(cluster index, vm, host, placement)`` moves that
:meth:`digital_twin.vm.Cluster.migrate` accepts in order, at most ``budget`` of them (the MNL). No
planner mutates the snapshot it is given; each plans on a copy and the result is replayed through
the twin on a second, fresh copy (:func:`replay_plan`), so ``fr_after`` is always the twin's figure,
and ``claimed_fr`` is what the planner itself believed it reached (the tests check they agree).

Planners (:data:`VM_PLANNERS`, by name):

* ``random`` -- :func:`random_plan`: ``budget`` uniformly random feasible migrations.
* ``ffd`` -- :func:`ffd_plan`: first-fit-decreasing style; VMs largest first, each moved at most
  once, to the first destination (host order) that lowers the fragment rate.
* ``greedy`` -- :func:`greedy_plan`: best-improvement greedy, a wrapper of
  :func:`digital_twin.vm.planning.greedy_plan` (each step the feasible migration that lowers FR most;
  stops when none helps).
* ``cpsat`` / ``cpsat_lns`` -- :func:`agents.baselines.vm_cpsat.cpsat_plan` and
  :func:`agents.baselines.vm_cpsat.cpsat_lns_plan` (imported on first use: OR-Tools is only loaded
  when a CP-SAT planner runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from digital_twin.vm import Cluster, Snapshot
from digital_twin.vm.planning import greedy_plan as _twin_greedy_plan

Move = tuple[int, int, int, int]
"""One migration: ``(cluster index, vm index, destination host index, placement)``."""


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
        budget: the migration budget (MNL) the plan was made for.
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


def snapshot_fragment_sums(clusters: Sequence[Cluster], size: int = 16) -> tuple[int, int]:
    """``(sum(free mod size), sum(free))`` over all clusters' active NUMA nodes: FR = first / second."""
    sums = [c.fragment_sums(size) for c in clusters]
    return sum(s[0] for s in sums), sum(s[1] for s in sums)


# ---------------------------------------------------------------------- random
def random_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0) -> PlanResult:
    """``budget`` uniformly random feasible migrations (a VM may be picked more than once).

    Each step draws a VM uniformly among those with a feasible destination (over all clusters),
    then one of its feasible ``(host, placement)`` destinations uniformly.

    Args:
        snapshot: the snapshot (not modified).
        budget: number of migrations (fewer only if nothing can move).
        time_limit_s: ignored (kept for the common signature).
        seed: seeds the draws.
    """
    del time_limit_s
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    snap = snapshot.copy()
    moves: list[Move] = []
    for _ in range(budget):
        movable = [(ci, np.flatnonzero(c.movable_vms())) for ci, c in enumerate(snap.clusters)]
        counts = np.array([len(vms) for _, vms in movable])
        if counts.sum() == 0:
            break
        pick = int(rng.integers(counts.sum()))
        ci = int(np.searchsorted(np.cumsum(counts), pick, side="right"))
        vm = int(movable[ci][1][pick - int(counts[:ci].sum())])
        options = np.argwhere(snap.clusters[ci].feasible_destinations(vm))
        host, place = options[int(rng.integers(len(options)))]
        snap.clusters[ci].migrate(vm, int(host), int(place))
        moves.append((ci, vm, int(host), int(place)))
    return finish_plan("random", snapshot, budget, moves, snap.fragment_rate(), start, stats={"seed": seed})


# ---------------------------------------------------------------------- first-fit decreasing
def _one_vm_deltas(cluster: Cluster, vm: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Change of ``(sum(free mod size), sum(free))`` for each destination of ``vm``, each (H, 2)."""
    free, active = cluster.free_cpu, cluster.host_active
    src = int(cluster.vm_host[vm])
    node_cpu = cluster.vm_cpu[vm][::-1] if cluster.vm_placement[vm] == 1 else cluster.vm_cpu[vm]
    if active[src]:
        d_frag_src = int(((free[src] + node_cpu) % size - free[src] % size).sum())
        d_free_src = int(node_cpu.sum())
    else:
        d_frag_src = d_free_src = 0
    usage = np.stack([cluster.vm_cpu[vm], cluster.vm_cpu[vm][::-1]])  # (P, 2): placement p's node usage
    after = free[:, None, :] - usage[None]  # (H, P, 2)
    d_frag = ((after % size) - (free % size)[:, None, :]).sum(axis=2) + d_frag_src
    d_free = np.broadcast_to(-usage.sum(axis=1)[None, :] + d_free_src, d_frag.shape)
    return d_frag, d_free


def ffd_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0,
             size: int = 16) -> PlanResult:
    """First-fit-decreasing style: largest VMs first, each to the first destination that lowers FR.

    VMs of all clusters are taken in decreasing vCPU (then memory) order; each migratable VM is
    moved at most once, to the first feasible ``(host, placement)`` in host-index order whose
    migration lowers the snapshot's fragment rate. Passes over the list repeat while one moved
    something, up to ``budget`` migrations.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of migrations.
        time_limit_s: ignored (kept for the common signature).
        seed: ignored (deterministic).
        size: fragment size in vCPU.
    """
    del time_limit_s, seed
    start = time.perf_counter()
    snap = snapshot.copy()
    order = sorted(
        ((ci, v) for ci, c in enumerate(snap.clusters) for v in np.flatnonzero(c.vm_allow_migration).tolist()),
        key=lambda cv: (-int(snap.clusters[cv[0]].vm_cpu[cv[1]].sum()),
                        -float(snap.clusters[cv[0]].vm_mem[cv[1]].sum()), cv[0], cv[1]),
    )
    moved: set[tuple[int, int]] = set()
    moves: list[Move] = []
    passes = 0
    while len(moves) < budget:
        passes += 1
        before = len(moves)
        for ci, vm in order:
            if len(moves) >= budget:
                break
            if (ci, vm) in moved:
                continue
            cluster = snap.clusters[ci]
            feasible = cluster.feasible_destinations(vm)
            if not feasible.any():
                continue
            frag, free = snapshot_fragment_sums(snap.clusters, size)
            d_frag, d_free = _one_vm_deltas(cluster, vm, size)
            current = frag / free if free else 0.0
            new_fr = (frag + d_frag) / np.maximum(free + d_free, 1)
            better = feasible & (new_fr < current - 1e-12)
            if better.any():
                host, place = np.unravel_index(int(np.argmax(better)), better.shape)
                cluster.migrate(vm, int(host), int(place))
                moves.append((ci, vm, int(host), int(place)))
                moved.add((ci, vm))
        if len(moves) == before:
            break
    return finish_plan("ffd", snapshot, budget, moves, snap.fragment_rate(size), start, stats={"passes": passes})


# ---------------------------------------------------------------------- best-improvement greedy
def greedy_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0,
                size: int = 16) -> PlanResult:
    """Best-improvement greedy: :func:`digital_twin.vm.planning.greedy_plan` on a copy.

    Each step applies the feasible migration (over all clusters) that lowers the snapshot's
    fragment rate most; stops after ``budget`` migrations or when none lowers it.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of migrations.
        time_limit_s: ignored (kept for the common signature).
        seed: ignored (deterministic).
        size: fragment size in vCPU.
    """
    del time_limit_s, seed
    start = time.perf_counter()
    snap = snapshot.copy()
    plan = _twin_greedy_plan(snap.clusters, budget, size=size)
    moves = [(ci, m.vm, m.to_host, m.to_placement) for ci, m in plan]
    return finish_plan("greedy", snapshot, budget, moves, snap.fragment_rate(size), start)


# ---------------------------------------------------------------------- registry
def _cpsat(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, **kwargs: Any) -> PlanResult:
    from agents.baselines.vm_cpsat import cpsat_plan

    return cpsat_plan(snapshot, budget, time_limit_s=time_limit_s, seed=seed, **kwargs)


def _cpsat_lns(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, **kwargs: Any) -> PlanResult:
    from agents.baselines.vm_cpsat import cpsat_lns_plan

    return cpsat_lns_plan(snapshot, budget, time_limit_s=time_limit_s, seed=seed, **kwargs)


Planner = Callable[..., PlanResult]

VM_PLANNERS: dict[str, Planner] = {
    "random": random_plan,
    "ffd": ffd_plan,
    "greedy": greedy_plan,
    "cpsat": _cpsat,
    "cpsat_lns": _cpsat_lns,
}
"""Planners by name, each ``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``."""
