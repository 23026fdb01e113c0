"""A target placement as evictions, moves and binds that are valid one step at a time.

Order: first evict every running pod the target leaves Pending (this only frees capacity); then,
in rounds, move each running pod whose target node (and GPUs) has room for it now and bind each
Pending pod whose target has room (higher priority first); a pod re-placed on other GPUs of its own
node is evicted and bound again in one round when its target GPUs have room without it (the twin
moves only between nodes). When a round makes no progress (moves that wait on each other in a
cycle), the lowest-priority pod still to move is evicted and bound to its target later. Once every
pod still to move has been evicted, each node and each GPU holds a subset of its target pods, so
every remaining bind fits: the sequence always ends at the target, every step checked by the twin
(:func:`replay`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from agents.pods.cpsat import gpu_free_of
from digital_twin.pods import GPU_FULL, InfeasiblePodChangeError, PodCluster


class Step(NamedTuple):
    """``kind`` is ``"evict"``, ``"move"`` or ``"bind"``; ``node`` the destination (-1 for an eviction);
    ``gpus`` the GPU indices bound on (None: the twin chooses, as for a CPU-only pod)."""

    kind: str
    pod: int
    node: int
    gpus: tuple[int, ...] | None = None


def _check_target(cluster: PodCluster, target: np.ndarray, target_gpus) -> list[tuple[int, ...]]:
    """The GPUs per pod of a target that fits; raises ValueError naming the node (or GPU) it overfills."""
    if target.shape != (cluster.num_pods,):
        raise ValueError(f"target placement has shape {target.shape}, expected ({cluster.num_pods},)")
    on = target >= 0
    for what, req, cap in (("CPU", cluster.pod_cpu, cluster.cpu_capacity), ("memory", cluster.pod_memory, cluster.memory_capacity)):
        load = np.bincount(target[on], weights=req[on], minlength=cluster.num_nodes)
        if (load > cap).any():
            j = int(np.argmax(load > cap))
            raise ValueError(f"target placement overfills node {cluster.node_names[j]}: {what} {load[j]:.0f} > {cap[j]}")
    gpu_pods = on & (cluster.pod_num_gpu > 0)
    if not gpu_pods.any():
        return [()] * cluster.num_pods
    if target_gpus is None:
        # without GPUs a target is only replayable for GPU pods that stay where they are (on their GPUs)
        away = np.flatnonzero(gpu_pods & (target != cluster.pod_node))
        if len(away):
            raise ValueError(f"target placement puts GPU pod {cluster.pod_names[away[0]]} on node "
                             f"{cluster.node_names[target[away[0]]]}; give target_gpus (the GPUs of each pod, "
                             "as PackingResult.pod_gpus)")
        return [cluster.pod_gpus[i] if on[i] else () for i in range(cluster.num_pods)]
    gpus = [tuple(int(g) for g in target_gpus[i]) if on[i] else () for i in range(cluster.num_pods)]
    for i in np.flatnonzero(gpu_pods).tolist():
        k, held = int(cluster.pod_num_gpu[i]), gpus[i]
        if len(set(held)) != k or not all(0 <= g < cluster.gpu_count[target[i]] for g in held):
            raise ValueError(f"target placement gives pod {cluster.pod_names[i]} GPUs {list(held)} on node "
                             f"{cluster.node_names[target[i]]} ({cluster.gpu_count[target[i]]} GPUs); it needs {k} distinct")
    free = gpu_free_of(cluster, target, gpus)
    over = (free < 0) & (cluster.gpu_free >= 0)                      # slots beyond a node's count hold -1
    if over.any():
        j, g = (int(v) for v in np.argwhere(over)[0])
        raise ValueError(f"target placement overfills node {cluster.node_names[j]} GPU {g}: "
                         f"{GPU_FULL - free[j, g]} thousandths > {GPU_FULL}")
    return gpus


def sequence(cluster: PodCluster, target: np.ndarray, target_gpus: Sequence[Sequence[int]] | None = None) -> list[Step]:
    """Steps from ``cluster``'s placement (left unchanged) to ``target`` ((P,) node per pod, -1 Pending).

    Args:
        cluster: the placement now.
        target: node per pod.
        target_gpus: GPU indices per pod in the target (:attr:`agents.pods.PackingResult.pod_gpus`);
            needed where the target puts a GPU pod anywhere but where it runs now.

    Raises:
        ValueError: ``target`` has the wrong shape, overfills a node or a GPU, or re-places GPU pods
            without ``target_gpus`` (no valid sequence exists, or none is known).
    """
    target = np.asarray(target, dtype=np.int64)
    gpus = _check_target(cluster, target, target_gpus)
    work = cluster.copy()
    steps: list[Step] = []
    current = work.pod_node
    for pod in np.flatnonzero((current >= 0) & (target < 0)):
        work.evict(int(pod))
        steps.append(Step("evict", int(pod), -1))
    regpu = np.array([gpus[i] != cluster.pod_gpus[i] for i in range(cluster.num_pods)], dtype=bool)
    todo = [int(i) for i in np.flatnonzero((target >= 0) & ((target != current) | regpu))]
    todo.sort(key=lambda i: (-cluster.pod_priority[i], i))
    while todo:
        waiting = []
        for pod in todo:
            node = int(target[pod])
            held = gpus[pod] if cluster.pod_num_gpu[pod] > 0 else None   # CPU-only: nothing to choose
            step = Step("bind", pod, node, held)
            if work.pod_node[pod] == node:              # other GPUs of its own node: evict, then bind if they have room
                work.evict(pod)
                if work.bind_refusal(pod, node, held) is None:
                    work.bind(pod, node, held)
                    steps += [Step("evict", pod, -1), step]
                else:
                    work.undo()
                    waiting.append(pod)
            elif work.pod_node[pod] >= 0:
                try:
                    work.move(pod, node, held)
                    steps.append(Step("move", pod, node, held))
                except InfeasiblePodChangeError:        # its target has no room yet
                    waiting.append(pod)
            elif work.bind_refusal(pod, node, held) is None:
                work.bind(pod, node, held)
                steps.append(step)
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
            work.move(step.pod, step.node, step.gpus)
        elif step.kind == "bind":
            work.bind(step.pod, step.node, step.gpus)
        else:
            raise ValueError(f"step kind {step.kind!r}: choose evict, move or bind")
    return work
