"""The CP-SAT planners: the exact one (:func:`cpsat_plan`) and large neighbourhoods (:func:`cpsat_lns_plan`).

Exact planner. Solve the :class:`~agents.vm.cpsat.model.FRModel` (one solve when ``sum(free)`` is
constant, else Dinkelbach iterations), then order the target (:func:`~agents.vm.cpsat.sequencing.sequence_plan`).
If deployment sets were relaxed and the solution cannot keep them, the sets involved are made
explicit and the model is built and solved again. If no order exists (a capacity cycle), the solve
is *constrained and repeated*: the nodes that both gained and lost VMs in the failed target may
only gain or only lose (``max_repairs`` rounds on the offending nodes, then on all nodes and
anti-affinity units, where any order works). The reported bound is only ever taken from
unconstrained models (each a relaxation of the problem) and from the touch relaxation
(:mod:`agents.vm.cpsat.bounds`), so it stays a valid bound for the original problem, in [0, 1].
Everything (greedy's fallback plan, model building, solving, ordering, replay) counts against the
time limit. The status says what is known: ``OPTIMAL`` (proved), ``FEASIBLE`` (CP-SAT found a
solution) or ``UNKNOWN`` (it found none in time; the plan is then the fallback, greedy's, and
``stats["plan_source"]`` says so).

Large neighbourhoods. Start from best-improvement greedy's plan; repeatedly free a set of hosts
(closed under the incumbent's moves: a move's source and destination are freed together) drawn in
turn as random hosts, whole racks or the hosts of deployment sets (:func:`_neighbourhood`),
re-optimise the VMs originally on them from their original placement with the budget the rest of
the incumbent leaves, everything else fixed at the incumbent, hinted with the incumbent; accept
strict improvements (or, with ``fewest_moves``, the same FR in fewer migrations) that sequence.
Neighbourhood size adapts to how quickly the sub-problems are proved optimal; once a
neighbourhood spans every host and is proved optimal, the search stops with status ``OPTIMAL``.
The exact planner runs the same search first, for half its time, on models too large for CP-SAT
to search well within a minute (:data:`WARM_START_VARS`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ortools.sat.python import cp_model

from agents.vm.cpsat.bounds import lagrangian_bound, touch_bound
from agents.vm.cpsat.model import DEFAULT_MAX_EXPLICIT_VARS, LARGE_MODEL_VARS, FRModel, Target, free_at, set_members
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


def _greedy_incumbent(snapshot: Snapshot, budget: int, size: int) -> _Incumbent:
    """Best-improvement greedy's plan (its own moves, a VM possibly moved twice) and final placement."""
    work = snapshot.copy()
    plan = greedy_migrations(work.clusters, budget, size=size)
    frag, free = fleet_fragment_sums(work.clusters, size)
    return _Incumbent([(c.vm_host.copy(), c.vm_placement.copy()) for c in work.clusters],
                      [(ci, m.vm, m.to_host, m.to_placement) for ci, m in plan], frag, free)


def _clamp_fr(value: float | None) -> float | None:
    """A fragment-rate bound kept in [0, 1] (FR always is); None stays None."""
    return None if value is None else min(max(float(value), 0.0), 1.0)


def _solve_ratio(fm: FRModel, start: _Incumbent, deadline: float, workers: int, seed: int,
                 hint: Sequence[Target] | None, fewest_moves: bool = False,
                 ) -> tuple[_Incumbent | None, float | None, list[str], dict[str, Any]]:
    """Minimise FR over ``fm``: one solve when sum(free) is constant, else Dinkelbach iterations.

    Returns:
        ``(best solution strictly better than start, or None; lower bound on FR over the model (in
        [0, 1]) or None; CP-SAT statuses; stats)``. The solution's ``targets`` and ``moves`` are
        empty (:meth:`FRModel.targets` makes the targets from its ``solver``).
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
        a, b = ratio
        if not fm.d_variable:
            # The proven bound holds whether or not a solution was found (UNKNOWN included).
            bound_fr = _clamp_fr(fm.fr_numerator_bound(solver) / fm.free_total if fm.free_total else 0.0)
        elif code != cp_model.UNKNOWN:  # UNKNOWN's bound is the response's default 0: no proof at all
            bound = solver.BestObjectiveBound()
            # Moving a VM off an inactive host only lowers sum(free), by at most inactive_cpu in all.
            d_min = max(1, start.free - sum(p.inactive_cpu for p in fm.parts))
            value = a / b if bound >= 0 else a / b + bound / (b * d_min) if math.isfinite(bound) else 0.0
            bound_fr = _clamp_fr(value if bound_fr is None else max(value, bound_fr))  # an earlier bound holds too
        if code == cp_model.UNKNOWN:
            break
        frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
        improves = b * frag - a * free < 0  # frag / free < a / b
        if improves:
            best = _Incumbent([], [], frag, free, solver)
        if not fm.d_variable:
            break
        if not (improves and code == cp_model.OPTIMAL):
            break
        ratio = (frag, free)  # Dinkelbach step: minimise b*N - a*D again with the better ratio
        fm.hint(fm.targets(solver))  # None (relaxed sets not kept): hint no migration
    return best, bound_fr, statuses, stats


WARM_START_VARS = LARGE_MODEL_VARS
"""``warm_start="auto"``: models with more variables than this get an LNS warm start (see :func:`cpsat_plan`)."""


def cpsat_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
               workers: int = 2, size: int = 16, hint: str = "greedy", max_repairs: int = 2,
               fewest_moves: bool = False, explicit_sets: str = "auto",
               max_explicit_vars: int = DEFAULT_MAX_EXPLICIT_VARS, max_escalations: int = 8,
               warm_start: float | str = "auto") -> PlanResult:
    """Exact CP-SAT plan: the MNL-constrained minimum fragment rate, or the best found in time.

    The time limit covers everything: greedy's plan (the hint and fallback), building the model,
    an optional LNS warm start, solving, checking relaxed sets, ordering and the replay. When a
    deployment set is relaxed (:class:`~agents.vm.cpsat.model.FRModel`) and a solution cannot keep
    it, the sets involved are made explicit and the model is built and solved again (at most
    ``max_escalations`` times). On large models (over :data:`WARM_START_VARS` variables, a thousand
    hosts or more) CP-SAT's first minute goes to presolve and its own search rarely beats greedy,
    so ``warm_start`` of the time first goes to :func:`cpsat_lns_plan`'s search (exact solves of
    neighbourhoods), whose best plan hints the full solve. The bound is the best of the full
    model's (every model solved without repairs is a relaxation of the problem) and the touch
    relaxation's (:mod:`agents.vm.cpsat.bounds`).

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit for the whole call (None: solve to optimality).
        seed: CP-SAT random seed.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        hint: ``"greedy"`` (best-improvement greedy's placement, also the fallback plan) or
            ``"current"`` (no migration).
        max_repairs: solves constrained at the offending nodes when a target cannot be ordered,
            before constraining every node.
        fewest_moves: among plans of equal FR, prefer fewer migrations (lexicographic objective;
            constant-denominator case only).
        explicit_sets: ``FRModel``'s ``explicit_sets`` for the first model.
        max_explicit_vars: ``FRModel``'s ``"auto"`` threshold.
        max_escalations: most rebuilds with more explicit sets.
        warm_start: share of the time limit for the LNS warm start, or ``"auto"`` (0.5 on models over
            :data:`WARM_START_VARS` variables, else 0); none without a time limit.

    Returns:
        A :class:`PlanResult`. ``claimed_fr`` is the plan's FR as the model computes it,
        ``bound_fr`` a proven lower bound in [0, 1] or None. ``status``: ``OPTIMAL`` only when the
        plan is proved optimal; ``FEASIBLE`` when CP-SAT found a solution of the problem (the plan
        is the best of it, the warm start's and the fallback); ``UNKNOWN`` when it found none in
        time, the plan then being the fallback (greedy's plan, or no migration with
        ``hint="current"``). ``stats["plan_source"]`` says where the plan came from (``cpsat``,
        ``lns``, ``greedy`` or ``none``).
    """
    start = time.perf_counter()
    deadline = start + time_limit_s if time_limit_s is not None else math.inf
    # Leave time for the assignment of relaxed sets, the ordering and the replay.
    reserve = 0.0 if time_limit_s is None else min(2.0, 0.05 * time_limit_s)
    clusters = snapshot.clusters
    current = _start_incumbent(clusters, size)
    stats: dict[str, Any] = {"repairs": 0, "escalations": 0, "unrealized": 0, "builds": []}
    if current.frag == 0 or current.free == 0:  # FR is already 0
        return finish_plan("cpsat", snapshot, budget, [], current.fr, start, bound_fr=current.fr, status="OPTIMAL",
                           stats={**stats, "plan_source": "none"})
    if hint not in ("greedy", "current"):
        raise ValueError(f"hint must be 'current' or 'greedy', got {hint!r}")
    fallback, source, direct = current, "none", current
    if hint == "greedy":
        greedy, direct = _sequenced_greedy(snapshot, budget, size, deadline, workers, seed)
        # Greedy's placement reached directly (each VM moved once) where it can be, else its own moves.
        for cand in (direct, greedy):
            if cand.frag * current.free < current.frag * cand.free:
                fallback, source = cand, "greedy"
                break
    stats["fallback_fr"] = fallback.fr
    hint_targets = fallback.targets if fallback is not current else None
    bound_fr = _bound_of(clusters, budget, size, deadline, workers, seed, stats)
    explicit: Any = explicit_sets
    final: _Incumbent | None = None
    lns_best: _Incumbent | None = None
    found = False  # CP-SAT found a solution of the problem (or proved nothing beats no migration)
    statuses: list[str] = []
    fm: FRModel | None = None
    while True:
        if fm is None:
            t = time.perf_counter()
            fm = FRModel(clusters, budget, size=size, explicit_sets=explicit, max_explicit_vars=max_explicit_vars)
            stats["builds"].append({"build_s": round(time.perf_counter() - t, 3), **fm.stats()})
            if lns_best is None and math.isfinite(deadline) and not (bound_fr is not None
                                                                       and fallback.fr <= bound_fr):
                share = (0.5 if fm.stats()["variables"] > WARM_START_VARS else 0.0) if warm_start == "auto" \
                    else float(warm_start)
                if share > 0:
                    lns_stats: dict[str, Any] = {}
                    lns_best, proved = _lns_search(clusters, budget, direct, start + share * (deadline - start), start,
                                                   np.random.default_rng(seed), _LNSConfig(), workers, size, seed,
                                                   lns_stats, bound_fr)
                    stats["warm_start"] = {"share": share, **{k: v for k, v in lns_stats.items()}}
                    # A solved sub-problem is a solution of the problem (the rest fixed at the incumbent).
                    if lns_stats.get("solved_subproblems") or proved:
                        found = True
                    if proved:
                        bound_fr = lns_best.fr if bound_fr is None else max(bound_fr, lns_best.fr)
                    if lns_best.frag * fallback.free < fallback.frag * lns_best.free:
                        hint_targets = lns_best.targets
        if bound_fr is not None and min(fallback.fr, lns_best.fr if lns_best else 1.0) <= bound_fr:
            break  # already optimal
        solution, bound, solve_statuses, solve_stats = _solve_ratio(fm, current, deadline - reserve, workers,
                                                                    seed, hint_targets, fewest_moves)
        statuses.extend(solve_statuses)
        for key, value in solve_stats.items():
            stats[key] = stats.get(key, 0) + value
        if bound is not None and not fm.restricted:  # every unrepaired model is a relaxation: its bound holds
            bound_fr = bound if bound_fr is None else max(bound_fr, bound)
        if solution is None:  # nothing better than no migration (proved if the bound says so)
            found = found or any(st in ("OPTIMAL", "FEASIBLE") for st in solve_statuses)
            break
        assign_limit = min(5.0, max(0.1, deadline - time.perf_counter())) if math.isfinite(deadline) else 5.0
        targets = fm.targets(solution.solver, assign_limit, workers, seed)
        if targets is None:  # a relaxed set cannot hold: state its sets explicitly and solve again
            stats["unrealized"] += 1
            failed = fm.failed_sets
            if not any(failed) or stats["escalations"] >= max_escalations or time.perf_counter() >= deadline - reserve:
                break
            explicit = [sorted(set(e) | f) for e, f in zip(fm.explicit_sets, failed)]
            stats["escalations"] += 1
            fm = None
            continue
        found = True
        solution.targets = targets
        order_limit = min(10.0, max(0.1, deadline - time.perf_counter())) if math.isfinite(deadline) else 10.0
        moves = sequence_plan(clusters, targets, order_limit, workers, seed)
        if moves is not None:
            solution.moves = moves
            final = solution
            break
        stats["repairs"] += 1
        if stats["repairs"] > max_repairs + 1 or time.perf_counter() >= deadline - reserve:
            break
        fm.forbid_mixed(fm.mixed_nodes(solution.solver) if stats["repairs"] <= max_repairs else None)
        hint_targets = None
    stats["solver_statuses"] = statuses
    best, stats["plan_source"] = fallback, source
    for cand, name in ((lns_best, "lns"), (final, "cpsat")):
        if cand is not None and cand.frag * best.free <= best.frag * cand.free and (cand is not best):
            if cand.frag * best.free < best.frag * cand.free or name == "cpsat":
                best, stats["plan_source"] = cand, name
    if bound_fr is not None and best.fr <= bound_fr:
        status = "OPTIMAL"
    else:
        status = "FEASIBLE" if found else "UNKNOWN"
    return finish_plan("cpsat", snapshot, budget, best.moves, best.fr, start, bound_fr=bound_fr, status=status,
                       stats=stats)


# ---------------------------------------------------------------------- large neighbourhoods
NEIGHBOURHOOD_KINDS = ("busy", "hosts", "busy", "racks", "busy", "sets")
"""How LNS neighbourhoods are drawn, in turn: around one or two of the hosts with the most movable VMs
(small, so solved in a fraction of a second), random hosts, whole racks, or the hosts of deployment
sets (each topped up with random hosts)."""

BUSY_HOSTS = 16
"""Hosts in a ``"busy"`` neighbourhood (one or two busy hosts, the rest drawn as for ``"hosts"``)."""


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


class _Masks:
    """Host masks under construction, closed under the incumbent's moves (a move's hosts go together)."""

    def __init__(self, clusters: Sequence[Cluster], targets: Sequence[Target]):
        self.masks = [np.zeros(c.num_hosts, dtype=bool) for c in clusters]
        self.components = [_components(c, t) for c, t in zip(clusters, targets)]
        self.component_of = [np.full(c.num_hosts, -1, dtype=np.int64) for c in clusters]
        for ci, groups in enumerate(self.components):
            for i, g in enumerate(groups):
                self.component_of[ci][g] = i
        self.chosen = 0

    def add(self, ci: int, hosts: Sequence[int] | np.ndarray) -> None:
        """Free ``hosts`` of cluster ``ci``, each with the incumbent's moves it takes part in."""
        mask = self.masks[ci]
        for h in np.asarray(hosts, dtype=np.int64).tolist():
            if mask[h]:
                continue
            comp = self.component_of[ci][h]
            group = self.components[ci][comp] if comp >= 0 else np.array([h])
            self.chosen += int((~mask[group]).sum())
            mask[group] = True


def _fragmented(cluster: Cluster, target: Target, size: int) -> np.ndarray:
    """(H,) bool: active hosts with a fragmented node in ``target``."""
    free = free_at(cluster, target)[0]
    return (free % size != 0).any(axis=1) & cluster.host_active


def _free_sources(cluster: Cluster, target: Target, size: int) -> list[int]:
    """Hosts (at ``target``) with a node that two or more movable VMs can leave without raising its fragment.

    Only VMs whose vCPU on the node is not a multiple of ``size`` count (the others change no
    fragment anywhere). Such departures cost nothing where they start and lower the fragment
    wherever they land on a fragmented node; greedy's one-move-at-a-time search never sees them
    (each single departure does raise the fragment).
    """
    c = cluster
    host, place = target
    cpu, _ = c.vm_node_usage(place)
    free = free_at(c, target)[0]
    on_node: dict[tuple[int, int], list[int]] = defaultdict(list)
    for v in np.flatnonzero(c.vm_allow_migration).tolist():
        for n in (0, 1):
            if cpu[v, n] % size:  # a multiple of size changes no fragment, where it leaves or lands
                on_node[(int(host[v]), n)].append(int(cpu[v, n]))
    out = set()
    for (h, n), usage in on_node.items():
        if len(usage) < 2 or not c.host_active[h] or h in out:
            continue
        f0 = int(free[h, n])
        r0 = f0 % size
        one, more = 0, 0  # bitsets of subset sums: of exactly one VM, of two or more
        for u in usage:
            more |= (more << u) | (one << u)
            one |= 1 << u
        sums = [k for k in range(more.bit_length()) if more >> k & 1]
        if any((f0 + k) % size <= r0 for k in sums):
            out.add(h)
    return sorted(out)


def _neighbourhood(clusters: Sequence[Cluster], targets: Sequence[Target], num_hosts: int,
                   rng: np.random.Generator, size: int, keep_moves: float, kind: str = "hosts") -> list[np.ndarray]:
    """Host masks: a share of the incumbent's move components, then hosts by ``kind``.

    ``"hosts"``: hosts drawn at random, those with a fragmented node in the incumbent four times as
    often, and hosts with many movable VMs up to five times. ``"busy"``: one or two hosts where two
    or more movable VMs can leave a node without raising its fragment (:func:`_free_sources`; else
    hosts with three movable VMs or more, by the square of that number). ``"racks"``: whole racks
    (no larger than ``num_hosts``), weighted by their fragmented hosts. ``"sets"``: deployment sets
    drawn by size, freeing the hosts their members start on and sit on in the incumbent (up to half
    the neighbourhood). Every kind is topped up with random hosts to ``num_hosts``.
    """
    nb = _Masks(clusters, targets)
    for ci, groups in enumerate(nb.components):
        for group in groups:
            if rng.random() < keep_moves:
                nb.add(ci, group)
    frag = [_fragmented(c, t, size) for c, t in zip(clusters, targets)]
    if kind == "racks":
        cand = []
        for ci, c in enumerate(clusters):
            racks, code = np.unique(c.host_rack, return_inverse=True)
            if len(racks) < 2:
                continue
            code = code.reshape(-1)
            sizes = np.bincount(code, minlength=len(racks))
            weight = 1.0 + 3.0 * np.bincount(code, weights=frag[ci].astype(float), minlength=len(racks))
            cand += [(ci, r, code, float(weight[r])) for r in range(len(racks)) if sizes[r] <= num_hosts]
        if cand:
            w = np.array([x[3] for x in cand])
            for i in rng.choice(len(cand), size=len(cand), replace=False, p=w / w.sum()).tolist():
                if nb.chosen >= num_hosts:
                    break
                ci, r, code, _ = cand[i]
                nb.add(ci, np.flatnonzero(code == r))
    elif kind == "busy":  # where combinations of departures come from: 1-2 hosts
        cand = [(ci, h, 1.0) for ci, c in enumerate(clusters) for h in _free_sources(c, targets[ci], size)]
        if not cand:  # by (movable VMs)^2
            cand = [(ci, h, float(n) ** 2) for ci, c in enumerate(clusters)
                    for h, n in enumerate(np.bincount(targets[ci][0][c.vm_allow_migration],
                                                      minlength=c.num_hosts).tolist()) if n >= 3]
        if cand:
            w = np.array([x[2] for x in cand])
            for i in rng.choice(len(cand), size=min(int(rng.integers(1, 3)), len(cand)), replace=False,
                                p=w / w.sum()).tolist():
                nb.add(cand[i][0], [cand[i][1]])
    elif kind == "sets":
        cand = [(ci, m) for ci, c in enumerate(clusters) for m in set_members(c) if len(m)]
        if cand:
            w = np.array([float(len(m)) for _, m in cand])
            for i in rng.choice(len(cand), size=len(cand), replace=False, p=w / w.sum()).tolist():
                if nb.chosen >= num_hosts // 2:
                    break
                ci, m = cand[i]
                nb.add(ci, np.union1d(clusters[ci].vm_host[m], targets[ci][0][m]))
    cand_ci, cand_h, weight = [], [], []
    for ci, c in enumerate(clusters):
        hosts = np.flatnonzero((nb.component_of[ci] < 0) & ~nb.masks[ci])
        cand_ci.append(np.full(len(hosts), ci))
        cand_h.append(hosts)
        # Fragmented hosts gain from arrivals; hosts with many movable VMs are where combinations
        # of departures come from (greedy's single moves miss them).
        busy = np.bincount(targets[ci][0][c.vm_allow_migration], minlength=c.num_hosts)[hosts]
        weight.append(np.where(frag[ci][hosts], 4.0, 1.0) + 0.5 * np.minimum(busy, 8))
    cand_ci, cand_h, weight = np.concatenate(cand_ci), np.concatenate(cand_h), np.concatenate(weight)
    take = int(min(max(num_hosts - nb.chosen, 0), len(cand_h)))
    if take:
        pick = rng.choice(len(cand_h), size=take, replace=False, p=weight / weight.sum())
        for i in pick.tolist():
            nb.add(int(cand_ci[i]), [int(cand_h[i])])
    return nb.masks


@dataclass
class _LNSConfig:
    """Knobs of :func:`_lns_search` (see :func:`cpsat_lns_plan`)."""

    neighbourhood_hosts: int = 60
    sub_time_s: float = 2.0
    keep_moves: float = 0.5
    max_neighbourhood_hosts: int = 600
    fewest_moves: bool = True
    kinds: Sequence[str] = NEIGHBOURHOOD_KINDS
    max_explicit_vars: int = DEFAULT_MAX_EXPLICIT_VARS
    busy_hosts: int = BUSY_HOSTS


def _lns_search(clusters: Sequence[Cluster], budget: int, incumbent: _Incumbent, deadline: float, start: float,
                rng: np.random.Generator, cfg: _LNSConfig, workers: int, size: int, seed: int,
                stats: dict[str, Any], bound_fr: float | None = None) -> tuple[_Incumbent, bool]:
    """Improve ``incumbent`` (sequenced) by exact CP-SAT solves over neighbourhoods until ``deadline``.

    Stops early once the incumbent meets ``bound_fr`` (a lower bound on FR: it is then optimal).

    Returns:
        ``(best incumbent, proved)``: ``proved`` when a whole-snapshot neighbourhood was solved to
        optimality or the incumbent meets ``bound_fr`` (the incumbent is then optimal). ``stats``
        gets the iteration counts, the tries and improvements per neighbourhood kind and the FR
        history.
    """
    history = stats.setdefault("history", [(round(time.perf_counter() - start, 2), incumbent.fr)])
    usable = [k for k in cfg.kinds if k == "hosts"
              or (k == "busy" and any(np.bincount(c.vm_host[c.vm_allow_migration], minlength=c.num_hosts).max(initial=0)
                                      >= 3 for c in clusters))
              or (k == "racks" and any(len(np.unique(c.host_rack)) > 1 for c in clusters))
              or (k == "sets" and any(c.deployment_sets for c in clusters))] or ["hosts"]
    for key in ("iterations", "improvements", "solved_subproblems", "optimal_subproblems", "unordered", "unrealized"):
        stats.setdefault(key, 0)
    stats.setdefault("lns_build_s", 0.0)
    kinds = stats.setdefault("kinds", {})
    for k in usable:
        kinds.setdefault(k, [0, 0])
    hosts = cfg.neighbourhood_hosts
    proved = False
    while time.perf_counter() < deadline - 0.3:
        if bound_fr is not None and incumbent.fr <= bound_fr:
            proved = True  # optimal FR (a sub-problem's fewest-moves tie-break made its moves few, too)
            break
        it = stats["iterations"]
        stats["iterations"] += 1
        kind = usable[it % len(usable)]
        kinds[kind][0] += 1
        masks = _neighbourhood(clusters, incumbent.targets, cfg.busy_hosts if kind == "busy" else hosts, rng, size,
                               cfg.keep_moves, kind)
        whole = all(m.all() for m in masks)
        outside = sum(int((~m[c.vm_host] & (t[0] != c.vm_host)).sum())
                      for c, t, m in zip(clusters, incumbent.targets, masks))
        explicit: Any = "auto"
        for _attempt in range(2):
            t = time.perf_counter()
            fm = FRModel(clusters, budget - outside, host_masks=masks, context=incumbent.targets, size=size,
                         explicit_sets=explicit, max_explicit_vars=cfg.max_explicit_vars)
            stats["lns_build_s"] += time.perf_counter() - t
            fm.set_objective((incumbent.frag, incumbent.free) if fm.d_variable else None,
                             fewest_moves=cfg.fewest_moves and not fm.d_variable)
            fm.hint(incumbent.targets)
            limit = min(cfg.sub_time_s, deadline - 0.2 - time.perf_counter())
            solver, code = fm.solve(max(limit, 0.05), workers, seed + it)
            improved = better = fewer = unrealized = False
            if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                stats["solved_subproblems"] += 1
                frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
                moved = outside + int(solver.Value(fm.moved))
                better = frag * incumbent.free < incumbent.frag * free
                fewer = frag * incumbent.free == incumbent.frag * free and moved < len(incumbent.moves)
                if better or (fm.fewest_moves and fewer):
                    left = max(0.1, deadline - time.perf_counter())
                    new_targets = fm.targets(solver, min(5.0, left), workers, seed)
                    if new_targets is None:
                        unrealized = True
                        stats["unrealized"] += 1
                    else:
                        moves = sequence_plan(clusters, new_targets, min(5.0, max(0.1, deadline - time.perf_counter())),
                                              workers, seed)
                        if moves is not None and len(moves) <= budget:
                            incumbent = _Incumbent(new_targets, moves, frag, free)
                            stats["improvements"] += 1
                            kinds[kind][1] += 1
                            history.append((round(time.perf_counter() - start, 2), incumbent.fr))
                            improved = True
                        else:
                            stats["unordered"] += 1
            if unrealized and any(fm.failed_sets) and time.perf_counter() < deadline - 1.0:
                explicit = [sorted(set(e) | f) for e, f in zip(fm.explicit_sets, fm.failed_sets)]
                continue
            break
        if code == cp_model.OPTIMAL:
            stats["optimal_subproblems"] += 1
        candidate = better or (fm.fewest_moves and fewer)
        if code == cp_model.OPTIMAL and whole and (improved or not candidate):
            proved = True  # the neighbourhood was the whole problem, solved to optimality
            break
        if kind == "busy":
            pass  # fixed size: the adaptation is for the others
        elif code == cp_model.OPTIMAL and not improved:
            hosts = min(int(hosts * 1.25) + 1, cfg.max_neighbourhood_hosts)
        elif code != cp_model.OPTIMAL:
            hosts = max(int(hosts * 0.8), 30)
    stats["final_neighbourhood_hosts"] = hosts
    return incumbent, proved


def _sequenced_greedy(snapshot: Snapshot, budget: int, size: int, deadline: float, workers: int,
                      seed: int) -> tuple[_Incumbent, _Incumbent]:
    """Greedy's plan as is, and as a direct (sequenced, each VM moved once) incumbent for LNS."""
    greedy = _greedy_incumbent(snapshot, budget, size)
    clusters = snapshot.clusters
    moves = sequence_plan(clusters, greedy.targets, min(5.0, max(0.1, deadline - time.perf_counter())), workers, seed)
    if moves is not None and len(moves) <= len(greedy.moves):
        return greedy, _Incumbent(greedy.targets, moves, greedy.frag, greedy.free)
    # greedy moved a VM twice in a way a direct plan cannot express: LNS starts from no migration
    return greedy, _start_incumbent(clusters, size)


def _bound_of(clusters: Sequence[Cluster], budget: int, size: int, deadline: float, workers: int,
              seed: int, stats: dict[str, Any] | None = None) -> float | None:
    """The better of :mod:`~agents.vm.cpsat.bounds`' two bounds as an FR in [0, 1] (None where neither holds).

    Each gets at most a tenth of the time left (5 s at most).
    """
    def limit() -> float:
        return min(5.0, max(0.05, 0.1 * (deadline - time.perf_counter()))) if math.isfinite(deadline) else 30.0

    t = time.perf_counter()
    found = [lagrangian_bound(clusters, budget, size, time_limit_s=limit()),
             touch_bound(clusters, budget, size, time_limit_s=limit(), workers=workers, seed=seed)]
    values = [None if b is None else _clamp_fr(b[0] / b[1] if b[1] else 0.0) for b in found]
    if stats is not None:
        stats["lagrangian_bound"], stats["touch_bound"] = values
        stats["bound_s"] = round(time.perf_counter() - t, 3)
    values = [v for v in values if v is not None]
    return max(values) if values else None


def cpsat_lns_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
                   workers: int = 2, size: int = 16, neighbourhood_hosts: int = 60, sub_time_s: float = 2.0,
                   keep_moves: float = 0.5, max_neighbourhood_hosts: int = 600,
                   fewest_moves: bool = True, kinds: Sequence[str] = NEIGHBOURHOOD_KINDS,
                   max_explicit_vars: int = DEFAULT_MAX_EXPLICIT_VARS) -> PlanResult:
    """Large-neighbourhood search over the CP-SAT model, from best-improvement greedy's plan.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit (None: 60 s), greedy start, model building and the bound included.
        seed: seeds neighbourhood draws and CP-SAT.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        neighbourhood_hosts: initial number of hosts freed per neighbourhood (adapts: x1.25 when a
            sub-problem is proved optimal without improvement, x0.8 down to 30 when it times out).
        sub_time_s: time limit per sub-problem.
        keep_moves: probability that each group of the incumbent's moves is freed (re-planned).
        max_neighbourhood_hosts: cap on the neighbourhood size.
        fewest_moves: in each sub-problem, among equal FR prefer fewer migrations (and accept
            incumbents that only save migrations): the budget left over lets later neighbourhoods
            improve further.
        kinds: the neighbourhood kinds to take in turn (:data:`NEIGHBOURHOOD_KINDS`); racks and
            sets only where the snapshot has them.
        max_explicit_vars: ``FRModel``'s ``"auto"`` threshold for each sub-problem (a sub-problem
            whose relaxed sets cannot hold is solved once more with them explicit).

    Returns:
        A :class:`PlanResult`: ``status`` ``OPTIMAL`` (bound = FR) when a whole-snapshot
        neighbourhood was proved optimal or the plan meets the touch bound, else ``FEASIBLE`` with
        the touch bound (:mod:`agents.vm.cpsat.bounds`; None where sum(free) can vary); stats hold
        the FR history and the tries and improvements per neighbourhood kind.
    """
    start = time.perf_counter()
    deadline = start + (60.0 if time_limit_s is None else time_limit_s)
    rng = np.random.default_rng(seed)
    clusters = snapshot.clusters
    greedy, incumbent = _sequenced_greedy(snapshot, budget, size, deadline, workers, seed)
    stats: dict[str, Any] = {"greedy_fr": greedy.fr}
    bound_fr = _bound_of(clusters, budget, size, deadline, workers, seed, stats)
    cfg = _LNSConfig(neighbourhood_hosts, sub_time_s, keep_moves, max_neighbourhood_hosts, fewest_moves, kinds,
                     max_explicit_vars)
    proved = bound_fr is not None and incumbent.fr <= bound_fr
    if not proved:
        incumbent, proved = _lns_search(clusters, budget, incumbent, deadline, start, rng, cfg, workers, size, seed,
                                        stats, bound_fr)
    if proved:
        bound_fr = incumbent.fr if bound_fr is None else max(bound_fr, incumbent.fr)
    status = "OPTIMAL" if proved or (bound_fr is not None and incumbent.fr <= bound_fr) else "FEASIBLE"
    return finish_plan("cpsat_lns", snapshot, budget, incumbent.moves, incumbent.fr, start, status=status,
                       bound_fr=bound_fr, stats=stats)
