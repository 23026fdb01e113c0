"""The CP-SAT planners: the exact one (:func:`cpsat_plan`) and large neighbourhoods (:func:`cpsat_lns_plan`).

Exact planner. Solve the :class:`~agents.vm.cpsat.model.FRModel` (one solve when ``sum(free)`` is
constant, else Dinkelbach iterations), then order the target (:func:`~agents.vm.cpsat.sequencing.sequence_plan`).
If no order exists (a capacity cycle), the solve is *constrained and repeated*: the nodes that both
gained and lost VMs in the failed target may only gain or only lose (``max_repairs`` rounds on the
offending nodes, then on all nodes and anti-affinity units, where any order works). The reported
bound is always the unconstrained model's, so it stays a valid bound for the original problem.

Large neighbourhoods. Start from best-improvement greedy's plan; repeatedly free a random set of
hosts (closed under the incumbent's moves: a move's source and destination are freed together),
re-optimise the VMs originally on them from their original placement with the budget the rest of
the incumbent leaves, everything else fixed at the incumbent, hinted with the incumbent; accept
strict improvements that sequence. Neighbourhood size adapts to how quickly the sub-problems are
proved optimal; once a neighbourhood spans every host and is proved optimal, the search stops with
status ``OPTIMAL``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ortools.sat.python import cp_model

from agents.vm.cpsat.model import FRModel, Target, free_at
from agents.vm.cpsat.sequencing import sequence_plan
from agents.vm.heuristics import greedy_migrations
from agents.vm.plan import Move, PlanResult, finish_plan
from digital_twin.vm import Cluster, Snapshot
from digital_twin.vm.cluster import fleet_fragment_sums

_STATUS = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE", cp_model.INFEASIBLE: "INFEASIBLE",
           cp_model.MODEL_INVALID: "MODEL_INVALID", cp_model.UNKNOWN: "UNKNOWN"}


# ---------------------------------------------------------------------- exact planner
@dataclass
class _Incumbent:
    """A solution: target placements, their ordered moves (empty until sequenced), ``FR = frag / free``."""

    targets: list[Target]
    moves: list[Move]
    frag: int
    free: int
    solver: Any = None

    @property
    def fr(self) -> float:
        return self.frag / self.free if self.free else 0.0


def _start_incumbent(clusters: Sequence[Cluster], size: int) -> _Incumbent:
    """No migration at all: the plan every planner can fall back to."""
    frag, free = fleet_fragment_sums(clusters, size)
    return _Incumbent([(c.vm_host.copy(), c.vm_placement.copy()) for c in clusters], [], frag, free)


def _solve_ratio(fm: FRModel, start: _Incumbent, deadline: float, workers: int, seed: int,
                 hint: Sequence[Target] | None, fewest_moves: bool = False,
                 ) -> tuple[_Incumbent | None, float | None, list[str], dict[str, Any]]:
    """Minimise FR over ``fm``: one solve when sum(free) is constant, else Dinkelbach iterations.

    Returns:
        ``(best solution strictly better than start, or None; lower bound on FR or None; CP-SAT
        statuses; stats)``. The solution's ``moves`` are empty (not sequenced yet).
    """
    best: _Incumbent | None = None
    bound_fr: float | None = None
    statuses: list[str] = []
    stats: dict[str, Any] = {"solve_s": 0.0, "branches": 0}
    ratio = (start.frag, start.free)
    fm.hint(hint)
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0.05 and statuses:
            break
        fm.set_objective(ratio if fm.d_variable else None, fewest_moves=fewest_moves)
        solver, code = fm.solve(max(remaining, 0.05) if math.isfinite(remaining) else None, workers, seed)
        stats["solve_s"] += solver.WallTime()
        stats["branches"] += solver.NumBranches()
        statuses.append(_STATUS[code])
        if code in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
            raise RuntimeError(f"CP-SAT says {_STATUS[code]} although making no migration is always feasible")
        if code == cp_model.UNKNOWN:
            break
        frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
        a, b = ratio
        improves = b * frag - a * free < 0  # frag / free < a / b
        if improves:
            best = _Incumbent(fm.targets(solver), [], frag, free, solver)
        if not fm.d_variable:
            bound_fr = fm.fr_numerator_bound(solver) / free if free else 0.0
            break
        bound = solver.BestObjectiveBound()
        # Moving a VM off an inactive host only lowers sum(free), by at most inactive_cpu in all.
        d_min = max(1, start.free - sum(p.inactive_cpu for p in fm.parts))
        bound_fr = a / b if bound >= 0 else max(0.0, a / b + bound / (b * d_min))
        if not (improves and code == cp_model.OPTIMAL):
            break
        ratio = (frag, free)  # Dinkelbach step: minimise b*N - a*D again with the better ratio
        fm.hint(best.targets)
    return best, bound_fr, statuses, stats


def cpsat_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
               workers: int = 2, size: int = 16, hint: str = "current", max_repairs: int = 2,
               fewest_moves: bool = False) -> PlanResult:
    """Exact CP-SAT plan: the MNL-constrained minimum fragment rate, or the best found in time.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit for the solver (None: solve to optimality).
        seed: CP-SAT random seed.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        hint: ``"current"`` (no migration: any limit returns a plan at least that good) or
            ``"greedy"`` (best-improvement greedy's placement).
        max_repairs: solves constrained at the offending nodes when a target cannot be ordered,
            before constraining every node.
        fewest_moves: among plans of equal FR, prefer fewer migrations (lexicographic objective;
            constant-denominator case only).

    Returns:
        A :class:`PlanResult`; ``claimed_fr`` is the model's objective, ``bound_fr`` its proven
        lower bound, ``status`` ``OPTIMAL`` only when the plan is proved optimal.
    """
    start = time.perf_counter()
    deadline = start + time_limit_s if time_limit_s is not None else math.inf
    clusters = snapshot.clusters
    current = _start_incumbent(clusters, size)
    fm = FRModel(clusters, budget, size=size)
    stats: dict[str, Any] = {"build_s": time.perf_counter() - start, **fm.stats(), "repairs": 0,
                             "d_variable": fm.d_variable}
    hint_targets = None
    if hint == "greedy":
        work = snapshot.copy()
        greedy_migrations(work.clusters, budget, size=size)
        hint_targets = [(c.vm_host.copy(), c.vm_placement.copy()) for c in work.clusters]
    elif hint != "current":
        raise ValueError(f"hint must be 'current' or 'greedy', got {hint!r}")
    if current.frag == 0 or current.free == 0:  # FR is already 0
        return finish_plan("cpsat", snapshot, budget, [], current.fr, start, bound_fr=current.fr, status="OPTIMAL",
                           stats=stats)
    bound_fr = None
    final = current
    statuses: list[str] = []
    for attempt in range(max_repairs + 2):
        solution, bound, solve_statuses, solve_stats = _solve_ratio(fm, current, deadline, workers, seed,
                                                                    hint_targets, fewest_moves)
        statuses.extend(solve_statuses)
        for key, value in solve_stats.items():
            stats[key] = stats.get(key, 0) + value
        if attempt == 0:
            bound_fr = bound
        if solution is None:  # nothing better than no migration (proved if the bound says so)
            break
        order_limit = min(10.0, max(1.0, deadline - time.perf_counter())) if math.isfinite(deadline) else 10.0
        moves = sequence_plan(clusters, solution.targets, order_limit, workers, seed)
        if moves is not None:
            solution.moves = moves
            final = solution
            break
        stats["repairs"] += 1
        if attempt < max_repairs:
            fm.forbid_mixed(fm.mixed_nodes(solution.solver))
        else:
            fm.forbid_mixed(None)
        hint_targets = None
        if time.perf_counter() >= deadline:
            break
    stats["solver_statuses"] = statuses
    # The bound is the unconstrained model's, valid for every plan that moves each VM at most once.
    status = "OPTIMAL" if bound_fr is not None and final.fr <= bound_fr else "FEASIBLE"
    return finish_plan("cpsat", snapshot, budget, final.moves, final.fr, start, bound_fr=bound_fr, status=status,
                       stats=stats)


# ---------------------------------------------------------------------- large neighbourhoods
def _components(cluster: Cluster, target: Target) -> list[np.ndarray]:
    """Groups of hosts linked by the target's moves (source and destination of a move together)."""
    parent = list(range(cluster.num_hosts))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    moved = np.flatnonzero(target[0] != cluster.vm_host)
    for v in moved.tolist():
        a, b = find(int(cluster.vm_host[v])), find(int(target[0][v]))
        if a != b:
            parent[a] = b
    groups: dict[int, list[int]] = defaultdict(list)
    touched = set(cluster.vm_host[moved].tolist()) | set(target[0][moved].tolist())
    for h in sorted(touched):
        groups[find(h)].append(h)
    return [np.array(g) for g in groups.values()]


def _neighbourhood(clusters: Sequence[Cluster], targets: Sequence[Target], num_hosts: int,
                   rng: np.random.Generator, size: int, keep_moves: float) -> list[np.ndarray]:
    """Random host masks: a share of the incumbent's move components plus hosts drawn at random.

    Hosts with a fragmented node in the incumbent are drawn four times as often as others.
    """
    masks = [np.zeros(c.num_hosts, dtype=bool) for c in clusters]
    in_component = [np.zeros(c.num_hosts, dtype=bool) for c in clusters]
    chosen = 0
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        for group in _components(c, t):
            in_component[ci][group] = True
            if rng.random() < keep_moves:
                masks[ci][group] = True
                chosen += len(group)
    cand_ci, cand_h, weight = [], [], []
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        free = free_at(c, t)[0]
        hosts = np.flatnonzero(~in_component[ci] & ~masks[ci])
        fragmented = (free[hosts] % size != 0).any(axis=1) & c.host_active[hosts]
        cand_ci.append(np.full(len(hosts), ci))
        cand_h.append(hosts)
        weight.append(np.where(fragmented, 4.0, 1.0))
    cand_ci, cand_h, weight = np.concatenate(cand_ci), np.concatenate(cand_h), np.concatenate(weight)
    take = int(min(max(num_hosts - chosen, 0), len(cand_h)))
    if take:
        pick = rng.choice(len(cand_h), size=take, replace=False, p=weight / weight.sum())
        for i in pick.tolist():
            masks[int(cand_ci[i])][int(cand_h[i])] = True
    return masks


def cpsat_lns_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
                   workers: int = 2, size: int = 16, neighbourhood_hosts: int = 200, sub_time_s: float = 5.0,
                   keep_moves: float = 0.5, max_neighbourhood_hosts: int = 600,
                   fewest_moves: bool = False) -> PlanResult:
    """Large-neighbourhood search over the CP-SAT model, from best-improvement greedy's plan.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit (None: 60 s), greedy start included.
        seed: seeds neighbourhood draws and CP-SAT.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        neighbourhood_hosts: initial number of hosts freed per neighbourhood (adapts: x1.25 when a
            sub-problem is proved optimal without improvement, x0.8 when it times out).
        sub_time_s: time limit per sub-problem.
        keep_moves: probability that each group of the incumbent's moves is freed (re-planned).
        max_neighbourhood_hosts: cap on the neighbourhood size.
        fewest_moves: in each sub-problem, among equal FR prefer fewer migrations (and accept
            incumbents that only save migrations).

    Returns:
        A :class:`PlanResult`: ``status`` ``FEASIBLE`` without a bound, or ``OPTIMAL`` (bound =
        FR) when a whole-snapshot neighbourhood was proved optimal; stats hold the FR history.
    """
    start = time.perf_counter()
    deadline = start + (60.0 if time_limit_s is None else time_limit_s)
    rng = np.random.default_rng(seed)
    clusters = snapshot.clusters
    work = snapshot.copy()
    greedy = greedy_migrations(work.clusters, budget, size=size)
    targets = [(c.vm_host.copy(), c.vm_placement.copy()) for c in work.clusters]
    greedy_moves = sequence_plan(clusters, targets, 5.0, workers, seed)
    frag, free = fleet_fragment_sums(work.clusters, size)
    if greedy_moves is not None and len(greedy_moves) <= len(greedy):
        incumbent = _Incumbent(targets, greedy_moves, frag, free)
    else:  # greedy moved a VM twice in a way a direct plan cannot express: start from no migration
        incumbent = _start_incumbent(clusters, size)
    history = [(round(time.perf_counter() - start, 2), incumbent.fr)]
    stats: dict[str, Any] = {"greedy_fr": frag / free if free else 0.0, "iterations": 0, "improvements": 0,
                             "optimal_subproblems": 0, "unordered": 0}
    hosts = neighbourhood_hosts
    status = "FEASIBLE"
    while time.perf_counter() < deadline - 0.5:
        stats["iterations"] += 1
        masks = _neighbourhood(clusters, incumbent.targets, hosts, rng, size, keep_moves)
        outside = sum(int((~m[c.vm_host] & (t[0] != c.vm_host)).sum())
                      for c, t, m in zip(clusters, incumbent.targets, masks))
        fm = FRModel(clusters, budget - outside, host_masks=masks, context=incumbent.targets, size=size)
        fm.set_objective((incumbent.frag, incumbent.free) if fm.d_variable else None,
                         fewest_moves=fewest_moves and not fm.d_variable)
        fm.hint(incumbent.targets)
        limit = min(sub_time_s, deadline - time.perf_counter())
        solver, code = fm.solve(max(limit, 0.05), workers, seed + stats["iterations"])
        if code == cp_model.OPTIMAL:
            stats["optimal_subproblems"] += 1
        improved = better = fewer = False
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
            moved = outside + int(solver.Value(fm.moved))
            better = frag * incumbent.free < incumbent.frag * free
            fewer = frag * incumbent.free == incumbent.frag * free and moved < len(incumbent.moves)
            if better or (fm.fewest_moves and fewer):
                new_targets = fm.targets(solver)
                moves = sequence_plan(clusters, new_targets, 5.0, workers, seed)
                if moves is not None and len(moves) <= budget:
                    incumbent = _Incumbent(new_targets, moves, frag, free)
                    stats["improvements"] += 1
                    history.append((round(time.perf_counter() - start, 2), incumbent.fr))
                    improved = True
                else:
                    stats["unordered"] += 1
        candidate = better or (fm.fewest_moves and fewer)
        if code == cp_model.OPTIMAL and all(m.all() for m in masks) and (improved or not candidate):
            status = "OPTIMAL"  # the neighbourhood was the whole problem, solved to optimality
            break
        if code == cp_model.OPTIMAL and not improved:
            hosts = min(int(hosts * 1.25) + 1, max_neighbourhood_hosts)
        elif code != cp_model.OPTIMAL:
            hosts = max(int(hosts * 0.8), 20)
    stats["final_neighbourhood_hosts"] = hosts
    stats["history"] = history
    return finish_plan("cpsat_lns", snapshot, budget, incumbent.moves, incumbent.fr, start, status=status,
                       bound_fr=incumbent.fr if status == "OPTIMAL" else None, stats=stats)
