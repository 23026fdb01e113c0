"""A target placement as evictions, moves and binds that are valid one step at a time.

Order: first evict every running pod the target leaves Pending (this only frees capacity); then,
in rounds, move each running pod whose target node has room for it now and bind each Pending pod
whose target node has room (higher priority first); when a round makes no progress (moves that
wait on each other in a cycle), the lowest-priority pod still to move is evicted and bound to its
target later. Once every pod still to move has been evicted, each node holds a subset of its
target pods, so every remaining bind fits: the sequence always ends at the target, every step
checked by the twin (:func:`replay`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from digital_twin.pods import PodCluster


class Step(NamedTuple):
    """``kind`` is ``"evict"``, ``"move"`` or ``"bind"``; ``node`` the destination (-1 for an eviction)."""

    kind: str
    pod: int
    node: int


def sequence(cluster: PodCluster, target: np.ndarray) -> list[Step]:
    """Steps from ``cluster``'s placement (left unchanged) to ``target`` ((P,) node per pod, -1 Pending).

    Raises:
        ValueError: ``target`` has the wrong shape or overfills a node (no valid sequence exists).
    """
    target = np.asarray(target, dtype=np.int64)
    if target.shape != (cluster.num_pods,):
        raise ValueError(f"target placement has shape {target.shape}, expected ({cluster.num_pods},)")
    on = target >= 0
    for what, req, cap in (("CPU", cluster.pod_cpu, cluster.cpu_capacity), ("memory", cluster.pod_memory, cluster.memory_capacity)):
        load = np.bincount(target[on], weights=req[on], minlength=cluster.num_nodes)
        if (load > cap).any():
            j = int(np.argmax(load > cap))
            raise ValueError(f"target placement overfills node {cluster.node_names[j]}: {what} {load[j]:.0f} > {cap[j]}")
    work = cluster.copy()
    steps: list[Step] = []
    current = work.pod_node
    for pod in np.flatnonzero((current >= 0) & (target < 0)):
        work.evict(int(pod))
        steps.append(Step("evict", int(pod), -1))
    todo = [int(i) for i in np.flatnonzero((target >= 0) & (target != current))]
    todo.sort(key=lambda i: (-cluster.pod_priority[i], i))
    while todo:
        waiting = []
        for pod in todo:
            node = int(target[pod])
            if work.fits(pod)[node]:
                if work.pod_node[pod] >= 0:
                    work.move(pod, node)
                    steps.append(Step("move", pod, node))
                else:
                    work.bind(pod, node)
                    steps.append(Step("bind", pod, node))
            else:
                waiting.append(pod)
        if len(waiting) == len(todo):                 # a cycle of moves: break it with one eviction
            movers = [p for p in waiting if work.pod_node[p] >= 0]
            if not movers:
                raise RuntimeError("sequencing: binds wait with no pod left to move (the target check above rules this out)")
            victim = min(movers, key=lambda p: (cluster.pod_priority[p], -p))
            work.evict(victim)
            steps.append(Step("evict", victim, -1))
        todo = waiting
    return steps


def replay(cluster: PodCluster, steps: Sequence[Step]) -> PodCluster:
    """Apply ``steps`` to a copy of ``cluster`` through the twin's checks; the copy is returned.

    Raises:
        digital_twin.pods.InfeasiblePodChangeError: a step the twin refuses (the message names it).
    """
    work = cluster.copy()
    for step in steps:
        if step.kind == "evict":
            work.evict(step.pod)
        elif step.kind == "move":
            work.move(step.pod, step.node)
        elif step.kind == "bind":
            work.bind(step.pod, step.node)
        else:
            raise ValueError(f"step kind {step.kind!r}: choose evict, move or bind")
    return work
