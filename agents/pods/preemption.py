"""kube-scheduler's ``DefaultPreemption``: victims per node and ``pickOneNodeForPreemption``'s order.

Ported from ``pkg/scheduler/framework/plugins/defaultpreemption`` and
``framework/preemption/preemption.go``:

* victims on a node (``SelectVictimsOnNode``): remove every pod of lower priority than the
  preemptor; if the preemptor still does not fit, the node is no candidate. Otherwise add the
  removed pods back one by one, most important first (higher priority, then earlier start), PDB-
  violating ones before the others, keeping each one the preemptor still fits beside (reprieved);
  the rest are the victims.
* the node (``pickOneNodeForPreemption``): a candidate with no victims at once; else, each rule
  keeping only the nodes that tie for its best: fewest PDB violations, lowest highest-victim
  priority, lowest sum of victim priorities (each shifted by ``MaxInt32 + 1`` so that negative
  priorities count), fewest victims, latest earliest-start among the highest-priority victims;
  then the first left (this port: the node whose name sorts first).

GPUs count among the resources a victim set must free, as the twin counts them: a node is a
candidate when removing its lower-priority pods leaves ``num_gpu`` GPUs with the preemptor's share
free (beside CPU and memory), and a pod is reprieved only if the preemptor still fits, GPUs included.

PodDisruptionBudgets are not part of the twin, so every victim count of PDB violations is 0 here;
the rule is kept in :func:`pick_one_node` for callers that have them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from digital_twin.pods import PodCluster

MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class Candidate:
    """A node preemption could free, with its victims.

    Attributes:
        node: the node's name.
        victim_priorities: priorities of the victims, most important first.
        victim_starts: their start times, same order.
        pdb_violations: how many victims' eviction would break a PodDisruptionBudget.
    """

    node: str
    victim_priorities: tuple[int, ...]
    victim_starts: tuple[float, ...]
    pdb_violations: int = 0


def select_victims(free: np.ndarray, request: np.ndarray, pods_request: np.ndarray, pods_priority: np.ndarray,
                   pods_start: np.ndarray, priority: int, pdb_violating: np.ndarray | None = None, *,
                   gpu_free: np.ndarray | None = None, gpu_request: tuple[int, int] = (0, 0),
                   pods_gpu: np.ndarray | None = None) -> list[int] | None:
    """``SelectVictimsOnNode`` for CPU/memory-like resources, and the twin's GPUs.

    Args:
        free: (R,) free capacity of the node now.
        request: (R,) the preemptor's request.
        pods_request: (K, R) requests of the node's pods.
        pods_priority, pods_start: (K,) their priorities and start times.
        priority: the preemptor's priority.
        pdb_violating: (K,) bool, whose eviction breaks a PDB (default none).
        gpu_free: (G,) free share of each GPU slot of the node (-1 for a slot the node lacks); with
            ``gpu_request`` ``(num_gpu, gpu_milli)`` and ``pods_gpu`` (K, G), the share each pod holds
            on each GPU: the preemptor fits only where ``num_gpu`` GPUs have ``gpu_milli`` free, as
            :meth:`digital_twin.pods.PodCluster.fits` (a GPU is not additive: freeing 500 on each of
            two GPUs does not make a whole one).

    Returns:
        Indices (into the node's pods) of the victims, most important first; None if preempting
        every lower-priority pod would still not fit the preemptor.
    """
    pods_request = np.asarray(pods_request).reshape(len(pods_priority), len(np.atleast_1d(free)))
    k, share = (int(v) for v in gpu_request)
    if k and gpu_free is not None:
        pods_gpu = np.asarray(pods_gpu).reshape(len(pods_priority), len(gpu_free))
        pods_request = np.concatenate([pods_request, pods_gpu], axis=1)     # GPU slots as further columns
        free = np.concatenate([np.atleast_1d(free), gpu_free])
    r = len(np.atleast_1d(request))

    def fits(room: np.ndarray) -> bool:
        return bool((room[:r] >= request).all() and (not k or (room[r:] >= share).sum() >= k))

    lower = np.flatnonzero(np.asarray(pods_priority) < priority)
    room = np.asarray(free) + pods_request[lower].sum(axis=0)
    if not fits(room):
        return None
    order = lower[np.lexsort((lower, np.asarray(pods_start)[lower], -np.asarray(pods_priority)[lower]))]
    if pdb_violating is not None:
        viol = np.asarray(pdb_violating)[order]
        order = np.concatenate([order[viol], order[~viol]])
    victims = []
    for v in order:
        if fits(room - pods_request[v]):
            room = room - pods_request[v]          # reprieved: it stays
        else:
            victims.append(int(v))
    victims.sort(key=lambda v: (-pods_priority[v], pods_start[v], v))
    return victims


def pick_one_node(candidates: Sequence[Candidate]) -> str | None:
    """``pickOneNodeForPreemption``: the node to preempt on, by the order the module states (None if no candidate)."""
    if not candidates:
        return None
    for c in sorted(candidates, key=lambda c: c.node):
        if not c.victim_priorities:
            return c.node
    rules = (
        lambda c: c.pdb_violations,
        lambda c: max(c.victim_priorities),
        lambda c: sum(p + MAX_INT32 + 1 for p in c.victim_priorities),
        lambda c: len(c.victim_priorities),
        # latest start wins: the earliest start among the highest-priority victims, negated
        lambda c: -min(s for p, s in zip(c.victim_priorities, c.victim_starts) if p == max(c.victim_priorities)),
    )
    left = list(candidates)
    for rule in rules:
        best = min(rule(c) for c in left)
        left = [c for c in left if rule(c) == best]
        if len(left) == 1:
            return left[0].node
    return min(c.node for c in left)


def gpu_shares(cluster: PodCluster) -> np.ndarray:
    """(P, G): the share each pod holds on each GPU slot of its node (0 where none)."""
    used = np.zeros((cluster.num_pods, cluster.gpu_free.shape[1]), dtype=np.int64)
    held = [list(g) for g in cluster.pod_gpus]
    who = np.repeat(np.arange(cluster.num_pods), [len(h) for h in held])
    used[who, np.fromiter(itertools.chain.from_iterable(held), np.int64, len(who))] = cluster.pod_gpu_milli[who]
    return used


def candidates(cluster: PodCluster, pod: int) -> tuple[list[Candidate], dict[str, list[int]]]:
    """Every node where preemption could place ``pod`` (CPU, memory and, for a GPU pod, its GPUs),
    with the victims (pod indices) per node name."""
    out, victims_of = [], {}
    request = np.array([cluster.pod_cpu[pod], cluster.pod_memory[pod]])
    gpu_request = (int(cluster.pod_num_gpu[pod]), int(cluster.pod_gpu_milli[pod]))
    shares = gpu_shares(cluster) if gpu_request[0] else None
    for j in np.flatnonzero(cluster.gpu_count >= gpu_request[0]):
        on = np.flatnonzero(cluster.pod_node == j)
        free = np.array([cluster.cpu_free[j], cluster.memory_free[j]])
        req = np.stack([cluster.pod_cpu[on], cluster.pod_memory[on]], axis=1)
        gpu = {} if shares is None else {"gpu_free": cluster.gpu_free[j], "gpu_request": gpu_request,
                                         "pods_gpu": shares[on]}
        picked = select_victims(free, request, req, cluster.pod_priority[on], cluster.pod_start[on],
                                int(cluster.pod_priority[pod]), **gpu)
        if picked is None:
            continue
        victims = [int(on[k]) for k in picked]
        name = cluster.node_names[j]
        victims_of[name] = victims
        out.append(Candidate(name, tuple(int(cluster.pod_priority[v]) for v in victims),
                             tuple(float(cluster.pod_start[v]) for v in victims)))
    return out, victims_of


def preempt(cluster: PodCluster, pod: int) -> int | None:
    """Preempt for Pending pod ``pod``: evict the chosen node's victims and bind ``pod`` there, through the twin
    (a GPU pod on the GPUs the twin chooses, which the victims' removal left with room).

    Returns:
        The node bound to, or None if no node could take it (nothing changed then).
    """
    cands, victims_of = candidates(cluster, pod)
    name = pick_one_node(cands)
    if name is None:
        return None
    for v in victims_of[name]:
        cluster.evict(v)
    node = cluster.node_names.index(name)
    cluster.bind(pod, node)
    return node
