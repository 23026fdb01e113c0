"""Ordering a target placement into migrations the twin accepts one by one.

A CP-SAT solution is a target placement. Moves whose destination node has no pending departure are
always safe and go first; otherwise a feasible move that frees room for a blocked one; if that
greedy order stalls, a small exact CP-SAT ordering model over the moved VMs (capacity after every
prefix, anti-affinity precedences) decides (:func:`sequence_moves`). Each VM whose host changes
moves once, straight to its target: no temporary moves are ever added, so a plan's length is
exactly the number of moved VMs. When no order exists (a capacity cycle) the planners constrain
the model and solve again (see :mod:`agents.vm.cpsat.planners`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from ortools.sat.python import cp_model

from agents.vm.cpsat.model import MemoryUnits, Target, new_solver, on_nodes, unit_of_host
from agents.vm.plan import Move
from digital_twin.vm import Cluster

VMMove = tuple[int, int, int]
"""One migration inside a cluster: ``(vm, destination host, placement)``."""


def sequence_moves(cluster: Cluster, target: Target, time_limit_s: float = 10.0, workers: int = 2,
                   seed: int = 0) -> list[VMMove] | None:
    """Order the moves from ``cluster``'s placement to ``target`` so each is feasible when made.

    Each VM whose host changes moves once, straight to its target. Greedy first (safe moves,
    then moves that free room for blocked ones); if that stalls, an exact CP-SAT ordering model.

    Args:
        cluster: the start state (not modified).
        target: ``(vm_host, vm_placement)``; VMs that keep their host must keep their placement.
        time_limit_s: limit for the exact ordering model.
        workers: CP-SAT search workers for the exact ordering model.
        seed: CP-SAT random seed.

    Returns:
        ``[(vm, host, placement), ...]`` in a feasible order, or None if none exists (or none was
        found in time).
    """
    t_host, t_place = np.asarray(target[0]), np.asarray(target[1])
    stays = t_host == cluster.vm_host
    if np.any(stays & (t_place != cluster.vm_placement)):
        return None  # a NUMA change on the same host is not a migration
    moving = np.flatnonzero(~stays).tolist()
    if not moving:
        return []
    work = cluster.copy()
    pending = {v: (int(t_host[v]), int(t_place[v])) for v in moving}
    order: list[VMMove] = []
    while pending:
        leaving_hosts = {int(work.vm_host[v]) for v in pending}
        safe = [v for v, (h, p) in pending.items() if h not in leaving_hosts and work.check_migration(v, h, p) is None]
        if safe:
            for v in safe:
                h, p = pending.pop(v)
                if work.check_migration(v, h, p) is None:  # anti-affinity may link two safe moves
                    work.migrate(v, h, p)
                    order.append((v, h, p))
                else:
                    pending[v] = (h, p)
            continue
        feasible = [v for v, (h, p) in pending.items() if work.check_migration(v, h, p) is None]
        if not feasible:
            break
        blocked_hosts = {h for v, (h, p) in pending.items() if v not in feasible}
        pick = next((v for v in feasible if int(work.vm_host[v]) in blocked_hosts), feasible[0])
        h, p = pending.pop(pick)
        work.migrate(pick, h, p)
        order.append((pick, h, p))
    if not pending:
        return order
    return _exact_order(cluster, [(v, int(t_host[v]), int(t_place[v])) for v in moving], time_limit_s, workers, seed)


def _exact_order(cluster: Cluster, moves: list[VMMove], time_limit_s: float, workers: int,
                 seed: int) -> list[VMMove] | None:
    """CP-SAT: positions for the moves such that capacity holds after every prefix and anti-affinity when moving."""
    units = MemoryUnits.of([cluster])
    model = cp_model.CpModel()
    m = len(moves)
    pos = [model.NewIntVar(0, m - 1, f"pos_{i}") for i in range(m)]
    model.AddAllDifferent(pos)
    before: dict[tuple[int, int], Any] = {}

    def earlier(i: int, j: int) -> Any:
        """A Boolean: move ``i`` comes before move ``j`` (created once per pair)."""
        if (i, j) not in before:
            b = model.NewBoolVar(f"b_{i}_{j}")
            model.Add(pos[i] < pos[j]).OnlyEnforceIf(b)
            model.Add(pos[i] > pos[j]).OnlyEnforceIf(b.Not())
            before[(i, j)] = b
        return before[(i, j)]

    # Per node: (move index, vCPU, memory units) of the moves arriving on / leaving it.
    arrive: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    depart: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for i, (v, h, p) in enumerate(moves):
        src_place = int(cluster.vm_placement[v])
        src_cpu, src_mem = on_nodes(cluster.vm_cpu[v], src_place), on_nodes(cluster.vm_mem[v], src_place)
        dst_cpu, dst_mem = on_nodes(cluster.vm_cpu[v], p), on_nodes(cluster.vm_mem[v], p)
        for n in (0, 1):
            if src_cpu[n] or src_mem[n]:
                depart[(int(cluster.vm_host[v]), n)].append((i, int(src_cpu[n]), units.floor(src_mem[n])))
            if dst_cpu[n] or dst_mem[n]:
                arrive[(h, n)].append((i, int(dst_cpu[n]), units.ceil(dst_mem[n])))
    for (h, n), arrivals in arrive.items():
        free_cpu, free_mem = int(cluster.free_cpu[h, n]), units.floor(float(cluster.free_mem[h, n]))
        for i, cpu_i, mem_i in arrivals:
            others = [(j, c, mm) for j, c, mm in arrivals if j != i]
            gone = depart.get((h, n), [])
            cpu = sum(c * earlier(j, i) for j, c, _ in others) - sum(c * earlier(j, i) for j, c, _ in gone)
            mem = sum(mm * earlier(j, i) for j, _, mm in others) - sum(mm * earlier(j, i) for j, _, mm in gone)
            model.Add(cpu + cpu_i <= free_cpu)
            model.Add(mem + mem_i <= free_mem)
    index = {v: i for i, (v, _, _) in enumerate(moves)}
    for dset in cluster.deployment_sets:
        unit = unit_of_host(cluster, dset.granularity)
        for v in dset.members.tolist():
            if v not in index:
                continue
            u = unit[moves[index[v]][1]]
            for w in dset.members.tolist():
                if w != v and w in index and unit[cluster.vm_host[w]] == u:
                    model.Add(pos[index[w]] < pos[index[v]])
    solver = new_solver(time_limit_s, workers, seed)
    if solver.Solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    ranked = sorted(range(m), key=lambda i: solver.Value(pos[i]))
    work = cluster.copy()
    for i in ranked:  # belt and braces: the twin must accept the order
        if work.check_migration(*moves[i]) is not None:
            return None
        work.migrate(*moves[i])
    return [moves[i] for i in ranked]


def sequence_plan(clusters: Sequence[Cluster], targets: Sequence[Target], time_limit_s: float = 10.0,
                  workers: int = 2, seed: int = 0) -> list[Move] | None:
    """:func:`sequence_moves` for every cluster, as one plan (cluster by cluster); None if any fails."""
    plan: list[Move] = []
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        order = sequence_moves(c, t, time_limit_s, workers, seed)
        if order is None:
            return None
        plan.extend((ci, v, h, p) for v, h, p in order)
    return plan
