"""The exact CP-SAT fallback of "Priority Matters": re-place running and Pending pods, lexicographically by tier.

Model (OR-Tools CP-SAT), over the pairs (pod ``i``, node ``j``) where the pod's requests fit the
node's allocatable at all: ``x[i, j]`` bool, ``sum_j x[i, j] <= 1`` (``placed[i]``), and per node
``sum_i cpu_i x[i, j] <= cpu_j`` and the same for memory. Solved in stages, within one time window
that starts before the model is built:

1. for each priority tier ``p``, highest first: maximise the number of placed pods of priority
   ``>= p``; fix that count (``>=`` the value found) before the next stage. A tier stage's
   solution says nothing about the lower tiers, so before it becomes the next hint (or the result,
   if the window ends) :func:`keep_others` puts back, where they still fit, the pods it dropped:
   on their current node, else where the previous stage had them;
2. then minimise disruption over the running pods: staying 0, evicted 1, moved 2
   (``1 + placed[i] - 2 x[i, node(i)]``).

Every stage is hinted with the best placement so far (the first with the current one). A stage's
status is CP-SAT's: OPTIMAL (proved: value equals bound), FEASIBLE (a solution, not proved), UNKNOWN
(no solution within the time left: the result keeps the previous stage's placement, the current one
at first). A result whose placed-per-tier counts fall below the current placement's (possible
when the window ends between stages) is replaced by the current placement.
:attr:`PackingResult.status` is the weakest stage's; stages the window did not reach are NOT_RUN
(status FEASIBLE). GPU pods are refused: the model covers CPU and memory only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from digital_twin.pods import PodCluster

DEFAULT_PARAMETERS = {"symmetry_level": 0}
"""CP-SAT parameters set unless overridden: presolve's symmetry detection took most of a 1 s window on
32-node clusters (of identical nodes) before any solution, so it is off (measured on the generator's scenarios)."""

@dataclass(frozen=True)
class Stage:
    """One solve: ``name`` (``tier>=P`` or ``disruption``), its ``status``, the ``value`` found (pods of
    priority >= P placed, or the disruption) and the ``bound`` proved for it (None where no solution), and its wall time."""

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
            ``pod_node`` is then the current placement).
        tiers_optimal: every tier stage proved optimal (the placed-per-tier counts are certified).
        stages: every stage, in order (NOT_RUN where the window ended first).
        placed_by_tier: placed pods per tier of ``pod_node``, highest tier first.
        tier_bounds: the proved upper bound of each tier stage's count (pods of priority >= tier).
        evictions, moves: running pods the target evicts / moves.
        wall_s: the whole call, model build included.
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


def disruption(current: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(evictions, moves) of going from ``current`` to ``target`` placement (running pods only)."""
    running = current >= 0
    return int((running & (target < 0)).sum()), int((running & (target >= 0) & (target != current)).sum())


def keep_others(cluster: PodCluster, solution: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``solution`` with the pods it leaves Pending put back where they fit: on their current node, else
    on the node ``previous`` had them on (higher priority first); no pod it places is moved."""
    out = solution.copy()
    on = out >= 0
    free_cpu = cluster.cpu_capacity - np.bincount(out[on], weights=cluster.pod_cpu[on], minlength=cluster.num_nodes)
    free_mem = cluster.memory_capacity - np.bincount(out[on], weights=cluster.pod_memory[on], minlength=cluster.num_nodes)
    dropped = np.flatnonzero(~on & ((cluster.pod_node >= 0) | (previous >= 0)))
    for i in dropped[np.lexsort((dropped, -cluster.pod_priority[dropped]))]:
        for j in (cluster.pod_node[i], previous[i]):
            if j >= 0 and free_cpu[j] >= cluster.pod_cpu[i] and free_mem[j] >= cluster.pod_memory[i]:
                out[i] = j
                free_cpu[j] -= cluster.pod_cpu[i]
                free_mem[j] -= cluster.pod_memory[i]
                break
    return out


def solve(cluster: PodCluster, time_limit_s: float, workers: int = 1, seed: int = 0,
          parameters: dict | None = None) -> PackingResult:
    """Re-place ``cluster``'s pods (left unchanged) within ``time_limit_s`` seconds, model build included.

    Args:
        cluster: running and Pending pods.
        time_limit_s: the window for building the model and every stage.
        workers: CP-SAT search workers.
        seed: CP-SAT's random seed.
        parameters: further CP-SAT parameters (default :data:`DEFAULT_PARAMETERS`).

    Raises:
        ValueError: the cluster has GPU pods, or the window is not > 0.
    """
    from ortools.sat.python import cp_model

    start = time.perf_counter()
    if not time_limit_s > 0:
        raise ValueError(f"CP-SAT pod packing: time limit must be > 0 s, got {time_limit_s}")
    if (cluster.pod_num_gpu > 0).any():
        raise ValueError(f"CP-SAT pod packing: cluster {cluster.name} has GPU pods; the model covers CPU and memory only")
    deadline = start + time_limit_s
    current = cluster.pod_node.copy()
    n_pods = cluster.num_pods
    eligible = ((cluster.pod_cpu[:, None] <= cluster.cpu_capacity[None, :])
                & (cluster.pod_memory[:, None] <= cluster.memory_capacity[None, :]))   # (P, N)
    pods_ix, nodes_ix = np.nonzero(eligible)                                           # pairs, pod-major
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
    pair = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(pods_ix, nodes_ix))}
    running = np.flatnonzero(current >= 0).tolist()
    stay = [x[pair[(i, int(current[i]))]] for i in running]
    # disruption = sum over running pods of 1 + placed - 2 stay: stay 0, evict 1, move 2
    cost = cp_model.LinearExpr.Sum([placed[i] for i in running]) - 2 * cp_model.LinearExpr.Sum(stay) + len(running)
    def placement(solver) -> np.ndarray:
        chosen = np.array([solver.BooleanValue(v) for v in x], dtype=bool)
        out = np.full(n_pods, -1, dtype=np.int64)
        out[pods_ix[chosen]] = nodes_ix[chosen]
        return out

    best = current.copy()
    stages: list[Stage] = []
    objectives = [(f"tier>={t}", t) for t in cluster.tiers] + [("disruption", None)]
    stopped = False
    for name, tier in objectives:
        left = deadline - time.perf_counter()
        if stopped or left <= 1e-3:
            stages.append(Stage(name, "NOT_RUN", None, None, 0.0))
            continue
        if tier is not None:
            upper = cp_model.LinearExpr.Sum([placed[i] for i in range(n_pods) if cluster.pod_priority[i] >= tier])
            model.Maximize(upper)
        else:
            model.Minimize(cost)
        model.ClearHints()
        for k, (i, j) in enumerate(zip(pods_ix.tolist(), nodes_ix.tolist())):
            model.AddHint(x[k], int(best[i] == j))
        solver = cp_model.CpSolver()
        for key, value in {**DEFAULT_PARAMETERS, **(parameters or {})}.items():
            setattr(solver.parameters, key, value)
        solver.parameters.max_time_in_seconds = left
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        t0 = time.perf_counter()
        status = solver.StatusName(solver.Solve(model))
        wall = time.perf_counter() - t0
        if status == "UNKNOWN":  # out of time without a solution: keep the previous stage's placement
            stages.append(Stage(name, "UNKNOWN", None, None, wall))
            stopped = True
            continue
        if status not in ("OPTIMAL", "FEASIBLE"):  # the hinted placement satisfies every stage's constraints
            raise RuntimeError(f"CP-SAT pod packing: stage {name} returned {status}, which a feasible model cannot")
        value, bound = int(round(solver.ObjectiveValue())), float(solver.BestObjectiveBound())
        if tier is not None:
            best = keep_others(cluster, placement(solver), best)
            model.Add(upper >= value)
        else:
            best = placement(solver)
            model.Add(cost <= value)
        stages.append(Stage(name, status, float(value), bound, wall))
    if tuple(np.cumsum(cluster.placed_by_tier(best))) < tuple(np.cumsum(cluster.placed_by_tier(current))):
        best = current.copy()  # a window that ended mid-way never leaves things worse than they were
    tier_stages = stages[:len(cluster.tiers)]
    if stages[0].status == "UNKNOWN":
        overall = "UNKNOWN"
    elif all(s.status == "OPTIMAL" for s in stages):
        overall = "OPTIMAL"
    else:
        overall = "FEASIBLE"
    evictions, moves = disruption(current, best)
    return PackingResult(
        pod_node=best, status=overall, tiers_optimal=all(s.status == "OPTIMAL" for s in tier_stages),
        stages=tuple(stages), placed_by_tier=cluster.placed_by_tier(best), tier_bounds=tuple(s.bound for s in tier_stages),
        evictions=evictions, moves=moves, wall_s=time.perf_counter() - start)
