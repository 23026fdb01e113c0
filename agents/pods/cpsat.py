"""The exact CP-SAT fallback of "Priority Matters": re-place running and Pending pods, lexicographically by tier.

Model (OR-Tools CP-SAT), over the pairs (pod ``i``, node ``j``) where the pod's requests fit the
node's allocatable at all (CPU, memory and, for a GPU pod, at least ``num_gpu`` GPUs): ``x[i, j]``
bool, ``sum_j x[i, j] <= 1`` (``placed[i]``), and per node ``sum_i cpu_i x[i, j] <= cpu_j`` and
the same for memory. GPUs as the twin (:class:`~digital_twin.pods.PodCluster`) counts them: for
a GPU pod's pair, ``y[i, j, g]`` bool per GPU ``g`` of node ``j``, ``sum_g y[i, j, g] = num_gpu_i
x[i, j]`` (distinct GPUs), and per GPU ``sum_i gpu_milli_i y[i, j, g] <= 1000``: a GPU takes a
pod when its free share is at least the pod's, so a whole GPU (1000) only goes to an otherwise
empty one and shares add up. GPU variables exist only for GPU pods on nodes with GPUs. A running
pod *stays* when it keeps its node and its GPUs: the twin has no in-place change of GPUs, so a
pod re-placed on other GPUs of its own node is an eviction then a bind (counted as a move, below).
Solved in stages, within one time window that starts before the model is built:

1. for each priority tier ``p``, highest first: maximise the number of placed pods of priority
   ``>= p``; fix that count (``>=`` the plan's) before the next stage. A tier stage's solution says
   nothing about the lower tiers, so before it becomes the next hint (or the result, if the window
   ends) the pods it dropped go back where they still fit, on their current node and GPUs, else
   where the previous stage had them (:func:`keep_others`), and every pod still Pending is then
   bound first-fit over the capacity left, higher priority first (:func:`complete`);
2. then minimise disruption over the running pods: staying 0, evicted 1, moved 2
   (``1 + placed[i] - 2 stay[i]``).

That order is ``stage_order="last"`` (the default). ``stage_order="per_tier"`` is the order of the
paper's own solver (``scripts/python_solver/solver_cp_sat.py`` of henrikdchristensen/scheduler-plugins):
for each tier ``p``, highest first, maximise the placed pods of priority ``>= p`` and fix that count,
then minimise the disruption of the running pods of priority ``>= p`` and fix it (``<=``), before
the next tier (stages ``tier>=P``, ``disruption>=P``; a disruption stage with no running pod of
priority ``>= p`` is OPTIMAL at 0 without a solve). The last tier's disruption stage covers every
running pod, so there is no separate final stage. Fixing a tier's disruption before the lower tiers
are placed can leave a lower tier fewer pods than the default order gives (keeping a high pod in place
may block a low one that a move would have let in): the tier counts are the lexicographic optimum of
that sequence, not of the placed counts alone. In this mode each stage's result is fixed at CP-SAT's
own objective value (the paper's ``>=`` / ``<=``), not the completed plan's: CP-SAT's solution meets
every constraint added so far, so later stages stay feasible; a disruption stage's solution is kept
only if it places no fewer pods of priority ``>= p`` than the plan (lexicographically; its lower
tiers are the next stages' business). Completion (below) applies after every stage. Where stages are
left unproved and the plan ends lexicographically worse than the current placement completed
first-fit (a proved sequence never does: that placement disrupts nothing), the result is that
completed placement, FEASIBLE (its stages still describe the plans CP-SAT's solutions gave).

In that order, ``time_split`` shares the window between the stages as the paper's solver does
(:class:`PaperClock`: a guaranteed pool split equally over the tiers, a free pool the first tiers may use
up, each tier's share split between its placement and its disruption; its defaults :data:`PAPER_TIME_SPLIT`),
where otherwise each stage may take all the window left; its clock starts once the model is built, as the
paper's does.

``place_one_pending=True`` adds the paper's code's "background mode" constraint: at least one pod
Pending now is placed (where one has a node it fits alone: the model then stays feasible, as that pod
alone on that node meets it). It can cost higher tiers pods (a low Pending pod forced in), so the plan
may then be lexicographically worse than the current placement; a proved stage's solution is kept
whatever the plan so far (which may not meet the constraint), and the fallback above is off.

Every stage is hinted with the plan so far (the first with the current placement, completed). A
stage's ``value`` is the plan's after it (pods of priority >= p, at least CP-SAT's; or the plan's
disruption) and its ``bound`` is CP-SAT's (a tier stage's at most its pods that some node can take, a
disruption stage's at least 0: CP-SAT's own bound of an unproved stage can be looser). Its status is CP-SAT's: OPTIMAL (proved, and the plan's
value equals the bound), FEASIBLE (a solution, not proved; also where CP-SAT proved a plan other
than the one kept: see below), UNKNOWN (no solution within the time left: the plan stays the
previous stage's and the stages after are NOT_RUN). So when the window ends before a stage is
solved, the plan is the best solution of the stages before it with every pod left Pending bound
first-fit where it fits: no tier is left emptier than that simple completion leaves it. The plan is
never lexicographically worse (pods placed of priority >= p, highest p first) than the current
placement: where CP-SAT's solution of a tier stage, completed, falls lexicographically short of the
plan so far (possible after an unproved stage), the plan so far is kept. The completion can cost
the disruption stage's solution moves (only if the last tier stage was not proved: a running pod
that solution evicted, bound elsewhere). :attr:`PackingResult.status` is the weakest stage's
(UNKNOWN if the first stage found nothing); stages the window did not reach are NOT_RUN (status
FEASIBLE). The GPUs of the target (:attr:`PackingResult.pod_gpus`) are part of the plan:
:func:`agents.pods.sequence` binds on them, so the twin replays it step by step.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from digital_twin.pods import GPU_FULL, PodCluster

PAPER_TIME_SPLIT = (0.6, 0.5)
"""The paper's solver's defaults for sharing its window between stages (``guaranteed_tier_fraction``,
``move_fraction_of_tier``; see :func:`solve`'s ``time_split``)."""

DEFAULT_PARAMETERS = {"symmetry_level": 0}
"""CP-SAT parameters set unless overridden: presolve's symmetry detection took most of a 1 s window on
32-node clusters (of identical nodes) before any solution, so it is off (measured on the generator's scenarios)."""

@dataclass(frozen=True)
class Stage:
    """One solve: ``name`` (``tier>=P``, ``disruption``, or ``disruption>=P`` with ``stage_order="per_tier"``), its
    ``status``, the ``value`` of the plan after it (pods of priority >= P placed, or the disruption of the running
    pods, of priority >= P for ``disruption>=P``; CP-SAT's solution completed, see the module), the ``bound``
    CP-SAT proved for it (None where no solution), and its wall time."""

    name: str
    status: str
    value: float | None
    bound: float | None
    wall_s: float


@dataclass(frozen=True)
class PackingResult:
    """A target placement and how far it is proved.

    Attributes:
        pod_node: (P,) target node per pod, -1 for Pending.
        status: OPTIMAL (every stage proved), FEASIBLE, or UNKNOWN (the first stage found nothing:
            ``pod_node`` is then the current placement with its Pending pods bound first-fit where they fit).
        tiers_optimal: every tier stage proved optimal (the placed-per-tier counts are certified).
        stages: every stage, in order (NOT_RUN where the window ended first).
        placed_by_tier: placed pods per tier of ``pod_node``, highest tier first.
        tier_bounds: the proved upper bound of each tier stage's count (pods of priority >= tier).
        evictions, moves: running pods the target evicts / moves (a move to other GPUs of the same node included).
        wall_s: the whole call, model build included.
        pod_gpus: per pod, the GPU indices it holds in the target (``()`` for CPU-only and Pending pods).
    """

    pod_node: np.ndarray
    status: str
    tiers_optimal: bool
    stages: tuple[Stage, ...]
    placed_by_tier: tuple[int, ...]
    tier_bounds: tuple[float | None, ...]
    evictions: int
    moves: int
    wall_s: float
    pod_gpus: tuple[tuple[int, ...], ...]


def disruption(current: np.ndarray, target: np.ndarray, current_gpus=None, target_gpus=None) -> tuple[int, int]:
    """(evictions, moves) of going from ``current`` to ``target`` placement (running pods only).

    With ``current_gpus`` / ``target_gpus`` (GPU indices per pod), a pod kept on its node but on other
    GPUs counts as a move (the twin re-places it by an eviction and a bind)."""
    running = current >= 0
    moved = running & (target >= 0) & (target != current)
    if current_gpus is not None and target_gpus is not None:
        moved |= running & (target == current) & np.array([tuple(a) != tuple(b) for a, b in zip(current_gpus, target_gpus)],
                                                          dtype=bool).reshape(current.shape)
    return int((running & (target < 0)).sum()), int(moved.sum())


def keep_others(cluster: PodCluster, solution: np.ndarray, previous: np.ndarray, solution_gpus=None,
                previous_gpus=None) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """``solution`` with the pods it leaves Pending put back where they fit: on their current node and GPUs,
    else on the node and GPUs ``previous`` had them on (higher priority first); no pod it places is moved.

    Returns the placement and the GPUs per pod (``solution_gpus`` / ``previous_gpus`` default to none held)."""
    out = solution.copy()
    gpus = list(solution_gpus) if solution_gpus is not None else [()] * cluster.num_pods
    previous_gpus = list(previous_gpus) if previous_gpus is not None else [()] * cluster.num_pods
    on = out >= 0
    free_cpu = cluster.cpu_capacity - np.bincount(out[on], weights=cluster.pod_cpu[on], minlength=cluster.num_nodes)
    free_mem = cluster.memory_capacity - np.bincount(out[on], weights=cluster.pod_memory[on], minlength=cluster.num_nodes)
    free_gpu = gpu_free_of(cluster, out, gpus)
    dropped = np.flatnonzero(~on & ((cluster.pod_node >= 0) | (previous >= 0)))
    for i in dropped[np.lexsort((dropped, -cluster.pod_priority[dropped]))]:
        share = int(cluster.pod_gpu_milli[i])
        for j, held in ((cluster.pod_node[i], cluster.pod_gpus[i]), (previous[i], previous_gpus[i])):
            if (j >= 0 and free_cpu[j] >= cluster.pod_cpu[i] and free_mem[j] >= cluster.pod_memory[i]
                    and (free_gpu[j, list(held)] >= share).all()):
                out[i], gpus[i] = j, tuple(held)
                free_cpu[j] -= cluster.pod_cpu[i]
                free_mem[j] -= cluster.pod_memory[i]
                free_gpu[j, list(held)] -= share
                break
    return out, gpus


def complete(cluster: PodCluster, placement: np.ndarray, gpus=None) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """``placement`` with every pod it leaves Pending bound first-fit over the capacity it leaves free.

    Through the twin (:meth:`~digital_twin.pods.PodCluster.at` the placement): the Pending pods go in
    the default scheduler's queue order (:func:`~agents.pods.default_scheduler.queue_order`: higher
    priority first, then earlier creation, then index), each bound to the lowest-index node it fits,
    on the GPUs the twin's bind chooses. No pod ``placement`` places is moved, so every tier's count
    only grows; a running pod it had left Pending may land on another node (a move). Returns the
    placement and the GPUs per pod (``gpus`` default: those a bind would choose).
    """
    from agents.pods.default_scheduler import queue_order

    work = cluster.at(placement, gpus)
    held = list(work.pod_gpus) if gpus is None else list(gpus)
    for pod in queue_order(work).tolist():
        where = np.flatnonzero(work.fits(pod))
        if len(where):
            work.bind(pod, int(where[0]))
            held[pod] = tuple(sorted(work.pod_gpus[pod]))
    return work.pod_node.copy(), held


def cumulative(cluster: PodCluster, placement: np.ndarray) -> tuple[int, ...]:
    """Placed pods of priority >= each tier, highest tier first (what the tier stages maximise in turn)."""
    return tuple(int(v) for v in np.cumsum(cluster.placed_by_tier(placement)))


def gpu_free_of(cluster: PodCluster, target: np.ndarray, gpus) -> np.ndarray:
    """(N, G) free share per GPU slot if pods ran at ``target`` on ``gpus`` (slots beyond a node's count: -1)."""
    free = np.where(cluster.gpu_free >= 0, GPU_FULL, -1).astype(np.int64)
    pods = np.flatnonzero((target >= 0) & (cluster.pod_num_gpu > 0))
    held = [list(gpus[i]) for i in pods.tolist()]
    who = np.repeat(pods, [len(h) for h in held]).astype(np.int64)
    np.subtract.at(free, (target[who], np.fromiter(itertools.chain.from_iterable(held), np.int64, len(who))), cluster.pod_gpu_milli[who])
    return free


@dataclass
class PaperClock:
    """The paper's solver's share of a window between per-tier stages (its ``_solve_lexicographically``).

    Of the ``usable`` seconds (the window left once the model is built), ``guaranteed`` is a pool shared equally
    by the tiers still to solve and the rest a free pool the first stages may use up. A tier may take its
    equal share of the guaranteed pool left plus the whole free pool (never more than the window left); its
    placement stage gets ``1 - move_fraction`` of that, its disruption stage the rest of the tier's. Time spent
    comes out of the free pool first.
    """

    usable: float
    tiers: int
    guaranteed: float
    move_fraction: float

    def __post_init__(self) -> None:
        self.free = self.usable * (1.0 - self.guaranteed)
        self.floor = self.usable * self.guaranteed
        self.tiers_left = self.tiers
        self.tier_budget = 0.0

    def cap(self, kind: str, left: float) -> float:
        """The seconds the next stage (``"tier"`` or ``"disruption"``) may take, ``left`` being the window's."""
        if kind == "tier":
            self.tier_budget = min(left, self.floor / max(1, self.tiers_left) + self.free)
            return self.tier_budget * (1.0 - self.move_fraction)
        return min(left, self.tier_budget)

    def spent(self, kind: str, seconds: float) -> None:
        """Book a stage's ``seconds``; a disruption stage closes its tier."""
        from_free = min(self.free, seconds)
        self.free -= from_free
        self.floor = max(0.0, self.floor - (seconds - from_free))
        self.tier_budget -= seconds
        if kind == "disruption":
            self.tiers_left -= 1


def solve(cluster: PodCluster, time_limit_s: float, workers: int = 1, seed: int = 0,
          parameters: dict | None = None, stage_order: str = "last", place_one_pending: bool = False,
          time_split: tuple[float, float] | None = None) -> PackingResult:
    """Re-place ``cluster``'s pods (left unchanged) within ``time_limit_s`` seconds, model build included.

    Args:
        cluster: running and Pending pods (GPU pods included).
        time_limit_s: the window for building the model and every stage.
        workers: CP-SAT search workers.
        seed: CP-SAT's random seed.
        parameters: further CP-SAT parameters (default :data:`DEFAULT_PARAMETERS`).
        stage_order: ``"last"`` (default): every tier's count first, then one disruption stage over all
            running pods; ``"per_tier"``: the paper's solver's order, each tier's count then the
            disruption of its running pods (priority >= the tier) before the next tier (see the module).
        place_one_pending: the paper's code's constraint that at least one Pending pod is placed (see the module).
        time_split: with ``stage_order="per_tier"``, share the window between stages as the paper's solver does
            (:class:`PaperClock`): ``(guaranteed_tier_fraction, move_fraction_of_tier)``, its defaults
            :data:`PAPER_TIME_SPLIT`; a stage whose share is spent is NOT_RUN and the next tier goes on. None
            (default): each stage may take all the window left.

    Raises:
        ValueError: the window is not > 0, ``stage_order`` is neither ``"last"`` nor ``"per_tier"``, or a
            ``time_split`` without ``"per_tier"`` or with fractions outside [0, 1].
    """
    from ortools.sat.python import cp_model

    start = time.perf_counter()
    if not time_limit_s > 0:
        raise ValueError(f"CP-SAT pod packing: time limit must be > 0 s, got {time_limit_s}")
    if stage_order not in ("last", "per_tier"):
        raise ValueError(f"CP-SAT pod packing: stage_order, where the disruption stages go: the disruption must be "
                         f"'last' or 'per_tier' (after every tier, or after each), got {stage_order!r}")
    per_tier = stage_order == "per_tier"
    if time_split is not None and (not per_tier or len(time_split) != 2 or not all(0 <= f <= 1 for f in time_split)):
        raise ValueError(f"CP-SAT pod packing: time_split is the paper's (guaranteed_tier_fraction, move_fraction_of_tier), "
                         f"each in [0, 1], with stage_order='per_tier'; got {time_split!r} with {stage_order!r}")
    deadline = start + time_limit_s
    current = cluster.pod_node.copy()
    current_gpus = list(cluster.pod_gpus)
    n_pods = cluster.num_pods
    pods_ix, nodes_ix = np.nonzero(cluster.fits_empty())                              # pairs, pod-major
    model = cp_model.CpModel()
    x = [model.NewBoolVar(f"x{i}_{j}") for i, j in zip(pods_ix.tolist(), nodes_ix.tolist())]
    bounds = np.searchsorted(pods_ix, np.arange(n_pods + 1))
    placed = [cp_model.LinearExpr.Sum(x[bounds[i]:bounds[i + 1]]) for i in range(n_pods)]
    for i in range(n_pods):
        if bounds[i + 1] - bounds[i] > 1:
            model.AddAtMostOne(x[bounds[i]:bounds[i + 1]])
    by_node = np.argsort(nodes_ix, kind="stable")
    node_bounds = np.searchsorted(nodes_ix[by_node], np.arange(cluster.num_nodes + 1))
    for j in range(cluster.num_nodes):
        ks = by_node[node_bounds[j]:node_bounds[j + 1]]
        lits = [x[k] for k in ks]
        model.Add(cp_model.LinearExpr.WeightedSum(lits, cluster.pod_cpu[pods_ix[ks]].tolist()) <= int(cluster.cpu_capacity[j]))
        model.Add(cp_model.LinearExpr.WeightedSum(lits, cluster.pod_memory[pods_ix[ks]].tolist()) <= int(cluster.memory_capacity[j]))
    # GPUs: y[k][g] for the pairs k of GPU pods only (eligibility already gave the node >= num_gpu GPUs)
    y: dict[int, list] = {}
    on_gpu: dict[tuple[int, int], list[tuple[int, int]]] = {}        # (node, GPU) -> [(pair, share)]
    for k in np.flatnonzero(cluster.pod_num_gpu[pods_ix] > 0).tolist():
        i, j = int(pods_ix[k]), int(nodes_ix[k])
        y[k] = [model.NewBoolVar(f"y{i}_{j}_{g}") for g in range(int(cluster.gpu_count[j]))]
        model.Add(cp_model.LinearExpr.Sum(y[k]) == int(cluster.pod_num_gpu[i]) * x[k])
        for g in range(len(y[k])):
            on_gpu.setdefault((j, g), []).append((k, int(cluster.pod_gpu_milli[i])))
    for (j, g), uses in on_gpu.items():
        if sum(s for _, s in uses) > GPU_FULL:
            model.Add(cp_model.LinearExpr.WeightedSum([y[k][g] for k, _ in uses], [s for _, s in uses]) <= GPU_FULL)
    has_pair = bounds[1:] > bounds[:-1]                                               # pods some node can take
    pending_now = np.flatnonzero((current < 0) & has_pair).tolist()
    if place_one_pending and pending_now:
        model.Add(cp_model.LinearExpr.Sum([placed[i] for i in pending_now]) >= 1)
    pair = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(pods_ix, nodes_ix))}
    running = np.flatnonzero(current >= 0).tolist()
    stay = []
    for i in running:
        k = pair[(i, int(current[i]))]
        if k not in y:
            stay.append(x[k])
            continue
        # staying = keeping every GPU held now (then the count constraint leaves no other)
        s = model.NewBoolVar(f"stay{i}")
        held = [y[k][g] for g in current_gpus[i]]
        for lit in held:
            model.AddImplication(s, lit)
        model.Add(cp_model.LinearExpr.Sum(held) - (len(held) - 1) <= s)
        stay.append(s)
    # disruption = sum over running pods of 1 + placed - 2 stay: stay 0, evict 1, move 2 (of priority >= tier)
    def cost_of(tier):
        ks = [k for k, i in enumerate(running) if tier is None or cluster.pod_priority[i] >= tier]
        return (cp_model.LinearExpr.Sum([placed[running[k]] for k in ks]) - 2 * cp_model.LinearExpr.Sum([stay[k] for k in ks])
                + len(ks)), len(ks)

    def plan_cost(tier, target, target_gpus) -> int:
        mine = current if tier is None else np.where(cluster.pod_priority >= tier, current, -1)
        evicted, moved = disruption(mine, target, current_gpus, target_gpus)
        return evicted + 2 * moved

    def placement(solver) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        chosen = np.array([solver.BooleanValue(v) for v in x], dtype=bool)
        out = np.full(n_pods, -1, dtype=np.int64)
        out[pods_ix[chosen]] = nodes_ix[chosen]
        gpus: list[tuple[int, ...]] = [()] * n_pods
        for k in (k for k in y if chosen[k]):
            gpus[int(pods_ix[k])] = tuple(g for g, v in enumerate(y[k]) if solver.BooleanValue(v))
        return out, gpus

    best, best_gpus = complete(cluster, current, current_gpus)      # the plan if the first stage finds nothing
    floor = cumulative(cluster, best)
    stages: list[Stage] = []
    if per_tier:
        objectives = [(f"{kind}>={t}", kind, t) for t in cluster.tiers for kind in ("tier", "disruption")]
    else:
        objectives = [(f"tier>={t}", "tier", t) for t in cluster.tiers] + [("disruption", "disruption", None)]
    stopped = False
    clock = None if time_split is None else PaperClock(max(0.0, deadline - time.perf_counter()), len(cluster.tiers),
                                                       *time_split)
    for name, kind, tier in objectives:
        left = deadline - time.perf_counter()
        limit = left if clock is None or stopped else clock.cap(kind, left)
        if stopped or limit <= 1e-3:
            stages.append(Stage(name, "NOT_RUN", None, None, 0.0))
            if clock is not None and not stopped:
                clock.spent(kind, 0.0)
            continue
        if kind == "tier":
            upper = cp_model.LinearExpr.Sum([placed[i] for i in range(n_pods) if cluster.pod_priority[i] >= tier])
            model.Maximize(upper)
        else:
            cost, n_running = cost_of(tier)
            if per_tier and not n_running:          # no running pod of priority >= tier: nothing to disrupt
                stages.append(Stage(name, "OPTIMAL", 0.0, 0.0, 0.0))
                if clock is not None:
                    clock.spent(kind, 0.0)
                continue
            model.Minimize(cost)
        model.ClearHints()
        for k, (i, j) in enumerate(zip(pods_ix.tolist(), nodes_ix.tolist())):
            model.AddHint(x[k], int(best[i] == j))
            for g, v in enumerate(y.get(k, ())):
                model.AddHint(v, int(best[i] == j and g in best_gpus[i]))
        for i, s in zip(running, stay):
            if s is not x[pair[(i, int(current[i]))]]:
                model.AddHint(s, int(best[i] == current[i] and tuple(best_gpus[i]) == tuple(current_gpus[i])))
        solver = cp_model.CpSolver()
        for key, value in {**DEFAULT_PARAMETERS, **(parameters or {})}.items():
            setattr(solver.parameters, key, value)
        solver.parameters.max_time_in_seconds = limit
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        t0 = time.perf_counter()
        status = solver.StatusName(solver.Solve(model))
        wall = time.perf_counter() - t0
        if clock is not None:
            clock.spent(kind, wall)
        if status == "UNKNOWN":  # out of time without a solution: keep the previous stage's placement
            stages.append(Stage(name, "UNKNOWN", None, None, wall))
            stopped = True
            continue
        if status not in ("OPTIMAL", "FEASIBLE"):  # the hinted placement satisfies every stage's constraints
            raise RuntimeError(f"CP-SAT pod packing: stage {name} returned {status}, which a feasible model cannot")
        bound = float(solver.BestObjectiveBound())
        if kind == "tier":   # the objective sums pair literals: an unproved bound may count a pod on several nodes
            bound = min(bound, float((has_pair & (cluster.pod_priority >= tier)).sum()))
        else:                # no running pod's disruption is below 0 (stay)
            bound = max(bound, 0.0)
        objective = int(round(solver.ObjectiveValue()))
        solution, solution_gpus = placement(solver)
        if kind == "tier" or per_tier:
            solution, solution_gpus = keep_others(cluster, solution, best, solution_gpus, best_gpus)
        solution, solution_gpus = complete(cluster, solution, solution_gpus)
        if kind == "tier":
            keep = cumulative(cluster, solution) >= cumulative(cluster, best)
        elif per_tier:             # no fewer pods of priority >= tier than the plan (the lower tiers come later)
            upto = cluster.tiers.index(tier) + 1
            keep = cumulative(cluster, solution)[:upto] >= cumulative(cluster, best)[:upto]
        else:
            keep = True
        if keep or (place_one_pending and status == "OPTIMAL"):
            best, best_gpus = solution, solution_gpus   # else CP-SAT's solution (not proved) fell short of its hint
        if kind == "tier":         # the next stages keep at least what the plan places (per_tier: CP-SAT's solution)
            value = cumulative(cluster, best)[cluster.tiers.index(tier)]
            model.Add(upper >= (objective if per_tier else value))
        else:
            value = plan_cost(tier, best, best_gpus)
            if per_tier:           # the paper's solver fixes each tier's disruption before the next tier
                model.Add(cost <= objective)
        if status == "OPTIMAL" and value != round(bound):
            status = "FEASIBLE"   # the plan kept is not the one CP-SAT proved (see the module)
        stages.append(Stage(name, status, float(value), bound, wall))
    tier_stages = [s for s, (_, kind, _) in zip(stages, objectives) if kind == "tier"]
    if stages[0].status == "UNKNOWN":
        overall = "UNKNOWN"
    elif all(s.status == "OPTIMAL" for s in stages):
        overall = "OPTIMAL"
    else:
        overall = "FEASIBLE"
    fallback = per_tier and not place_one_pending and cumulative(cluster, best) < floor
    if fallback:   # stages left unproved (a proved sequence never is): the completed current placement instead
        best, best_gpus = complete(cluster, current, current_gpus)
        overall = "UNKNOWN" if overall == "UNKNOWN" else "FEASIBLE"
    evictions, moves = disruption(current, best, current_gpus, best_gpus)
    return PackingResult(
        pod_node=best, status=overall, tiers_optimal=all(s.status == "OPTIMAL" for s in tier_stages),
        stages=tuple(stages), placed_by_tier=cluster.placed_by_tier(best), tier_bounds=tuple(s.bound for s in tier_stages),
        evictions=evictions, moves=moves, wall_s=time.perf_counter() - start, pod_gpus=tuple(best_gpus))
