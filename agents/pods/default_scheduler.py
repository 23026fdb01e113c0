"""The Kubernetes default scheduler's filter and score, ported from ``pkg/scheduler`` (kube-scheduler).

* Filter: ``NodeResourcesFit``: the pod's CPU, memory (and GPU) requests fit the node's free
  allocatable (:meth:`digital_twin.pods.PodCluster.fits`).
* Score (``framework.MaxNodeScore`` = 100, integer arithmetic as in Go):
  ``NodeResourcesFit`` with the ``LeastAllocated`` strategy (the default),
  ``sum_r w_r * (cap_r - req_r) * 100 / cap_r / sum_r w_r`` (0 where ``req_r > cap_r`` or
  ``cap_r == 0``), or ``MostAllocated``, ``sum_r w_r * min(req_r, cap_r) * 100 / cap_r / sum_r w_r``,
  over CPU and memory with weight 1 each (``noderesources/least_allocated.go``,
  ``most_allocated.go``); ``req_r`` is what the node's pods request plus the pod's own, a zero
  request counted as 100 m CPU / 200 MiB (``schedutil.DefaultMilliCPURequest`` /
  ``DefaultMemoryRequest``). ``NodeResourcesBalancedAllocation``:
  ``(1 - |f_cpu - f_mem| / 2) * 100`` with ``f_r = min(req_r / cap_r, 1)`` from the actual
  requests, skipped (0) for a pod that requests nothing (``balanced_allocation.go``).
  A node's score is ``sum plugin_weight * plugin_score`` with the default plugin weights
  (:data:`DEFAULT_PLUGIN_WEIGHTS`: Fit 1, BalancedAllocation 1).
* Select: the highest total; ties go to the node whose name sorts first (kube-scheduler draws
  among the tied nodes at random; the paper's baseline, and this port, break them by name).
* Queue: ``PrioritySort`` (the default ``QueueSort`` plugin): higher priority first, then earlier
  creation (:func:`queue_order`); :func:`schedule` can also take the pods as they arrive.

Not modelled, because the scenarios give them nothing to act on, and the paper's baseline drops
them: TaintToleration (3), NodeAffinity (2), InterPodAffinity (2), ImageLocality (1) score every node
alike here; PodTopologySpread's system-default spreading (2) of ReplicaSet pods is left out.
Preemption is :mod:`agents.pods.preemption`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from digital_twin.pods import PodCluster

MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST_MIB = 200
DEFAULT_PLUGIN_WEIGHTS = {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 1}
"""kube-scheduler's default weights of the score plugins that see CPU and memory (``apis/config/v1/default_plugins.go``)."""
Strategy = Literal["LeastAllocated", "MostAllocated"]


def least_allocated_score(requested: np.ndarray, capacity: np.ndarray, weights=(1, 1)) -> np.ndarray:
    """``LeastAllocated`` per node: ``requested`` / ``capacity`` of shape (N, R), integer weights (R,) -> (N,) int."""
    req, cap = np.asarray(requested, dtype=np.int64), np.asarray(capacity, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    ok = (cap > 0) & (req <= cap)
    per = np.where(ok, (cap - req) * MAX_NODE_SCORE // np.where(cap > 0, cap, 1), 0)
    return (per * w).sum(axis=-1) // w.sum()


def most_allocated_score(requested: np.ndarray, capacity: np.ndarray, weights=(1, 1)) -> np.ndarray:
    """``MostAllocated`` per node (a request above capacity counts as the capacity), (N, R) -> (N,) int."""
    req, cap = np.asarray(requested, dtype=np.int64), np.asarray(capacity, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    per = np.where(cap > 0, np.minimum(req, cap) * MAX_NODE_SCORE // np.where(cap > 0, cap, 1), 0)
    return (per * w).sum(axis=-1) // w.sum()


def balanced_allocation_score(requested: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``BalancedAllocation`` per node over two resources, (N, 2) -> (N,) int (Go's float64 then int64 truncation).

    A resource of zero capacity is left out (one resource left: std 0, score 100)."""
    req, cap = np.asarray(requested, dtype=float), np.asarray(capacity, dtype=float)
    frac = np.minimum(req / np.where(cap > 0, cap, 1.0), 1.0)
    both = (cap > 0).all(axis=-1)
    std = np.where(both, np.abs(frac[..., 0] - frac[..., 1]) / 2, 0.0)
    return ((1 - std) * MAX_NODE_SCORE).astype(np.int64)


@dataclass
class DefaultScheduler:
    """kube-scheduler's filter + score + select, one pod at a time.

    Args:
        strategy: ``NodeResourcesFit``'s scoring strategy.
        plugin_weights: score-plugin weights (default :data:`DEFAULT_PLUGIN_WEIGHTS`).
    """

    strategy: Strategy = "LeastAllocated"
    plugin_weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PLUGIN_WEIGHTS))

    def __post_init__(self) -> None:
        if self.strategy not in ("LeastAllocated", "MostAllocated"):
            raise ValueError(f"scoring strategy {self.strategy!r}: choose LeastAllocated or MostAllocated")
        unknown = set(self.plugin_weights) - set(DEFAULT_PLUGIN_WEIGHTS)
        if unknown:
            raise ValueError(f"plugin weights: unknown plugin(s) {sorted(unknown)}; known: {', '.join(DEFAULT_PLUGIN_WEIGHTS)}")

    def scores(self, cluster: PodCluster, pod: int) -> np.ndarray:
        """(N,) int: the total score of every node for ``pod`` (feasible or not)."""
        on = cluster.pod_node >= 0
        nz_cpu = np.where(cluster.pod_cpu > 0, cluster.pod_cpu, DEFAULT_MILLI_CPU_REQUEST)
        nz_mem = np.where(cluster.pod_memory > 0, cluster.pod_memory, DEFAULT_MEMORY_REQUEST_MIB)
        n = cluster.num_nodes
        nz_req = np.stack([np.bincount(cluster.pod_node[on], weights=nz_cpu[on], minlength=n) + nz_cpu[pod],
                           np.bincount(cluster.pod_node[on], weights=nz_mem[on], minlength=n) + nz_mem[pod]], axis=1)
        cap = np.stack([cluster.cpu_capacity, cluster.memory_capacity], axis=1)
        fit = (least_allocated_score if self.strategy == "LeastAllocated" else most_allocated_score)(nz_req.astype(np.int64), cap)
        total = self.plugin_weights.get("NodeResourcesFit", 0) * fit
        if cluster.pod_cpu[pod] > 0 or cluster.pod_memory[pod] > 0:
            used = cap - np.stack([cluster.cpu_free, cluster.memory_free], axis=1)
            req = used + np.array([cluster.pod_cpu[pod], cluster.pod_memory[pod]])
            total = total + self.plugin_weights.get("NodeResourcesBalancedAllocation", 0) * balanced_allocation_score(req, cap)
        return total

    def select_node(self, cluster: PodCluster, pod: int) -> int | None:
        """The node kube-scheduler binds ``pod`` to (ties by name), or None if no node passes the filter."""
        feasible = cluster.fits(pod)
        if not feasible.any():
            return None
        scores = np.where(feasible, self.scores(cluster, pod), -1)
        best = np.flatnonzero(scores == scores.max())
        return int(min(best, key=lambda j: cluster.node_names[j]))


def queue_order(cluster: PodCluster, pods=None) -> np.ndarray:
    """``PrioritySort``: the given (default: Pending) pods, higher priority first, then earlier creation, then index."""
    idx = np.flatnonzero(cluster.pending) if pods is None else np.asarray(pods, dtype=np.int64)
    return idx[np.lexsort((idx, cluster.pod_start[idx], -cluster.pod_priority[idx]))]


def schedule(cluster: PodCluster, scheduler: DefaultScheduler | None = None,
             queue: Literal["priority", "arrival"] = "priority", preemption: bool = False, pods=None) -> list[int]:
    """Run the default scheduler over the Pending pods, binding through the twin; returns the pods left Pending.

    Args:
        cluster: changed in place (every bind and eviction goes through its checks).
        scheduler: filter + score (default LeastAllocated, default weights).
        queue: ``"priority"`` (kube-scheduler's default ``PrioritySort``): the Pending pods are all
            in the queue at once and leave it by :func:`queue_order` (higher priority first, then
            earlier creation); ``"arrival"``: each pod is scheduled as it is created, before the
            next one arrives (creation order), as in "Priority Matters"' KWOK runs, which apply the
            ReplicaSets one at a time and wait for a set's pods to run (2 s at most) before the next.
            A pod that fits nowhere stays Pending (nothing is deleted here, so a retry would not fit
            it either).
        preemption: a pod that fits nowhere preempts lower-priority pods as ``DefaultPreemption``
            does (:func:`agents.pods.preemption.preempt`); the victims go back to Pending and are not retried.
        pods: the Pending pods in the queue (default: every Pending pod; a replay passes those created
            and not yet deleted); the pods left Pending returned are then among these.
    """
    scheduler = scheduler or DefaultScheduler()
    pending = np.flatnonzero(cluster.pending) if pods is None else np.asarray(pods, dtype=np.int64)
    pending = pending[cluster.pod_node[pending] < 0]
    if queue == "arrival":
        order = pending[np.lexsort((pending, cluster.pod_start[pending]))]
    elif queue == "priority":
        order = queue_order(cluster, pending)
    else:
        raise ValueError(f"queue {queue!r}: choose 'priority' or 'arrival'")
    for pod in order:
        node = scheduler.select_node(cluster, int(pod))
        if node is not None:
            cluster.bind(int(pod), node)
        elif preemption:
            from agents.pods.preemption import preempt

            preempt(cluster, int(pod))
    if pods is None:  # preemption's victims are Pending now too
        return np.flatnonzero(cluster.pending).tolist()
    return pending[cluster.pod_node[pending] < 0].tolist()
