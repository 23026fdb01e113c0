"""VM-rescheduling heuristics: random, first-fit-decreasing and best-improvement greedy planners.

Each planner answers the common call of :mod:`agents.vm.plan`::

    plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult

``budget=None`` plans at the snapshot's own ``maximum_migration`` (:func:`agents.vm.plan.resolve_budget`).

* :func:`random_plan`: ``budget`` uniformly random feasible migrations.
* :func:`ffd_plan`: first-fit-decreasing style; VMs largest first, each moved at most once, to the
  first destination (host order) that lowers the fragment rate.
* :func:`greedy_plan`: best-improvement greedy (:func:`greedy_migrations` on a copy: each step the
  feasible migration that lowers FR most; stops when none helps).

:func:`greedy_migrations` is the greedy loop itself, on clusters in place; the CP-SAT planners use
it for their warm start and the twin's demo command drives it by name.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from agents.vm.plan import Move, PlanResult, finish_plan, planning_budget
from digital_twin.vm import Cluster, Migration, Snapshot
from digital_twin.vm.cluster import fleet_fragment_sums
from digital_twin.vm.what_if import fragment_after_each_move


# ---------------------------------------------------------------------- random
def random_plan(snapshot: Snapshot, budget: int | None = None, time_limit_s: float | None = None, seed: int = 0) -> PlanResult:
    """``budget`` uniformly random feasible migrations (a VM may be picked more than once).

    Each step draws a VM uniformly among those with a feasible destination (over all clusters),
    then one of its feasible ``(host, placement)`` destinations uniformly.

    Args:
        snapshot: the snapshot (not modified).
        budget: number of migrations (fewer only if nothing can move); None: the snapshot's
            ``maximum_migration`` (:func:`~agents.vm.plan.resolve_budget`).
        time_limit_s: ignored (kept for the common signature).
        seed: seeds the draws.
    """
    del time_limit_s
    start = time.perf_counter()
    budget = planning_budget(snapshot, budget)
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


def ffd_plan(snapshot: Snapshot, budget: int | None = None, time_limit_s: float | None = None, seed: int = 0,
             size: int = 16) -> PlanResult:
    """First-fit-decreasing style: largest VMs first, each to the first destination that lowers FR.

    VMs of all clusters are taken in decreasing vCPU (then memory) order; each migratable VM is
    moved at most once, to the first feasible ``(host, placement)`` in host-index order whose
    migration lowers the snapshot's fragment rate. Passes over the list repeat while one moved
    something, up to ``budget`` migrations.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of migrations; None: the snapshot's ``maximum_migration``
            (:func:`~agents.vm.plan.resolve_budget`).
        time_limit_s: ignored (kept for the common signature).
        seed: ignored (deterministic).
        size: fragment size in vCPU.
    """
    del time_limit_s, seed
    start = time.perf_counter()
    budget = planning_budget(snapshot, budget)
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
            frag, free = fleet_fragment_sums(snap.clusters, size)
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
def greedy_migrations(clusters: Sequence[Cluster], budget: int, size: int = 16,
                      min_gain: float = 1e-12) -> list[tuple[int, Migration]]:
    """Best-improvement greedy: apply, one at a time, the migration that lowers the fragment rate most.

    The fragment rate is taken over all ``clusters`` together (a VM moves only within its own
    cluster). Stops after ``budget`` migrations or when no migration lowers it by ``min_gain``.

    Args:
        clusters: the clusters to defragment; they are modified in place (copy them first to keep them).
        budget: maximum number of migrations.
        size: fragment size in vCPU.
        min_gain: smallest fragment-rate decrease worth a migration.

    Returns:
        ``(cluster index, migration)`` per applied migration, in order.
    """
    plan: list[tuple[int, Migration]] = []
    for _ in range(budget):
        frag, free = fleet_fragment_sums(clusters, size)
        current = frag / free if free else 0.0
        best = None  # (new fr, cluster index, vm, host, placement)
        for ci, cluster in enumerate(clusters):
            feasible, d_frag, d_free = fragment_after_each_move(cluster, size)
            if not feasible.any():
                continue
            new_free = free + d_free
            new_fr = np.where(feasible, (frag + d_frag) / np.maximum(new_free, 1), np.inf)
            idx = int(np.argmin(new_fr))
            value = float(new_fr.flat[idx])
            if best is None or value < best[0]:
                vm, host, place = np.unravel_index(idx, new_fr.shape)
                best = (value, ci, int(vm), int(host), int(place))
        if best is None or best[0] > current - min_gain:
            break
        _, ci, vm, host, place = best
        plan.append((ci, clusters[ci].migrate(vm, host, place)))
    return plan


def greedy_plan(snapshot: Snapshot, budget: int | None = None, time_limit_s: float | None = None, seed: int = 0,
                size: int = 16) -> PlanResult:
    """Best-improvement greedy: :func:`greedy_migrations` on a copy of the snapshot.

    Each step applies the feasible migration (over all clusters) that lowers the snapshot's
    fragment rate most; stops after ``budget`` migrations or when none lowers it.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of migrations; None: the snapshot's ``maximum_migration``
            (:func:`~agents.vm.plan.resolve_budget`).
        time_limit_s: ignored (kept for the common signature).
        seed: ignored (deterministic).
        size: fragment size in vCPU.
    """
    del time_limit_s, seed
    start = time.perf_counter()
    budget = planning_budget(snapshot, budget)
    snap = snapshot.copy()
    plan = greedy_migrations(snap.clusters, budget, size=size)
    moves = [(ci, m.vm, m.to_host, m.to_placement) for ci, m in plan]
    return finish_plan("greedy", snapshot, budget, moves, snap.fragment_rate(size), start)
