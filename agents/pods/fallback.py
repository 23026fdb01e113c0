"""The CP-SAT fallback of "Priority Matters" over the live pods of a cluster that also holds pods not there yet.

A replay keeps every pod of a trace in one :class:`~digital_twin.pods.PodCluster`; only some are
live (created, not yet deleted). :func:`fallback_steps` builds a cluster of the live pods alone
(their current nodes and GPUs kept), lets :func:`agents.pods.solve` re-place them within the window,
sequences the target into evictions, moves and binds (:func:`agents.pods.sequence`) and returns
the steps in the big cluster's pod indices, for the caller to apply through the twin's checks (a
step's ``gpus``, the GPUs CP-SAT chose for a GPU pod, go to :meth:`~digital_twin.pods.PodCluster.bind` /
``move`` with it).

On a large cluster the model of every (pod, node) pair does not even get built within a window of
seconds (openb's 1,523 nodes: 3.4-3.7 s for 46-47 live pods before any stage runs). With ``max_nodes``, CP-SAT
re-places on a neighbourhood of at most that many nodes (:func:`neighbourhood`): the nodes nearest to
taking the Pending pods and the roomiest ones, where pods that make way can go. Only the live pods on
those nodes and the Pending ones enter the model; every other pod stays where it is, so a plan on the
neighbourhood is a plan on the whole cluster, never lexicographically worse than the current placement.
"""

from __future__ import annotations

import numpy as np

from agents.pods.cpsat import PackingResult, solve
from agents.pods.default_scheduler import queue_order
from agents.pods.sequencing import Step, sequence
from digital_twin.pods import GPU_FULL, PodCluster


def live_cluster(cluster: PodCluster, live: np.ndarray, nodes: np.ndarray | None = None) -> PodCluster:
    """The nodes of ``cluster`` (or those ``nodes``, indices) and its pods ``live`` (indices), each where it runs now
    (or Pending); with ``nodes``, every live pod must run on one of them or be Pending."""
    live = np.asarray(live, dtype=np.int64)
    pod_node = cluster.pod_node[live]
    if nodes is not None:
        nodes = np.asarray(nodes, dtype=np.int64)
        local = np.full(cluster.num_nodes, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        if (local[pod_node[pod_node >= 0]] < 0).any():
            raise ValueError("live_cluster: a live pod runs on a node outside the ones given")
        pod_node = np.where(pod_node >= 0, local[np.maximum(pod_node, 0)], -1)
    else:
        nodes = np.arange(cluster.num_nodes)
    return PodCluster([cluster.node_names[j] for j in nodes], cluster.cpu_capacity[nodes], cluster.memory_capacity[nodes],
                      [cluster.pod_names[i] for i in live], cluster.pod_cpu[live], cluster.pod_memory[live],
                      cluster.pod_priority[live], node_gpus=cluster.gpu_count[nodes], pod_num_gpu=cluster.pod_num_gpu[live],
                      pod_gpu_milli=cluster.pod_gpu_milli[live], pod_node=pod_node,
                      pod_start=cluster.pod_start[live], pod_gpus=[cluster.pod_gpus[i] for i in live],
                      name=f"{cluster.name}-live")


def neighbourhood(cluster: PodCluster, live: np.ndarray, max_nodes: int) -> np.ndarray:
    """At most ``max_nodes`` nodes for CP-SAT to re-place on (sorted indices; every node if there are no more).

    Half of them (at least one) are hosts for the live Pending pods: taken in queue order
    (:func:`~agents.pods.queue_order`), round-robin, each pod's nodes nearest to taking it first, by how
    much of its request (CPU, memory, GPUs, each as a share of the node's) their free room lacks, among
    the nodes it fits when empty. The rest are the nodes with the most free room (the same shares
    summed), where the pods that make way can go. Ties go to the lower node index.
    """
    n = cluster.num_nodes
    if max_nodes < 1:
        raise ValueError(f"neighbourhood: max_nodes must be >= 1, got {max_nodes}")
    if n <= max_nodes:
        return np.arange(n)
    live = np.asarray(live, dtype=np.int64)
    pods = queue_order(cluster, live[cluster.pending[live]])[:max_nodes]
    cpu_cap, mem_cap = cluster.cpu_capacity.astype(float), cluster.memory_capacity.astype(float)
    gpus = np.maximum(cluster.gpu_count, 1).astype(float)
    short = (np.maximum(cluster.pod_cpu[pods, None] - cluster.cpu_free, 0) / np.maximum(cpu_cap, 1)
             + np.maximum(cluster.pod_memory[pods, None] - cluster.memory_free, 0) / np.maximum(mem_cap, 1))
    gpu_pods = cluster.pod_num_gpu[pods] > 0
    if gpu_pods.any():   # GPUs short: of those with the pod's share free, as the twin counts them
        have = cluster.gpu_fit_counts(cluster.pod_gpu_milli[pods])
        short += np.where(gpu_pods[:, None], np.maximum(cluster.pod_num_gpu[pods, None] - have, 0) / gpus, 0.0)
    short = np.where(cluster.fits_empty(pods), short, np.inf)
    ranked = np.argsort(short, axis=1, kind="stable")                             # (pods, N): each pod's nodes, nearest first
    by_rank = ranked.T.ravel()                                                    # every pod's nearest, then its second...
    near = np.isfinite(short[np.tile(np.arange(len(pods)), n), by_rank])
    order = by_rank[near]
    _, first = np.unique(order, return_index=True)
    hosts = order[np.sort(first)][:max(1, max_nodes // 2)]
    room = (cluster.cpu_free / np.maximum(cpu_cap, 1) + cluster.memory_free / np.maximum(mem_cap, 1)
            + np.where(cluster.gpu_count > 0, cluster.gpu_fit_counts(GPU_FULL) / gpus, 0.0))
    rest = np.setdiff1d(np.arange(n), hosts)
    roomy = rest[np.argsort(-room[rest], kind="stable")][:max_nodes - len(hosts)]
    return np.sort(np.concatenate([hosts, roomy]))


def fallback_steps(cluster: PodCluster, live: np.ndarray, time_limit_s: float, workers: int = 1,
                   seed: int = 0, max_nodes: int | None = None) -> tuple[list[Step], PackingResult]:
    """CP-SAT's re-placement of the ``live`` pods as steps on ``cluster`` (left unchanged), and its result
    (in the indices of the cluster it solved: the live pods, on the neighbourhood's nodes with ``max_nodes``).

    Args:
        cluster: every pod not in ``live`` must be Pending (a replay's pods not there yet, or gone).
        live: the pods to re-place (indices).
        time_limit_s, workers, seed: :func:`agents.pods.solve`'s.
        max_nodes: re-place on at most this many nodes (:func:`neighbourhood`); None: every node.

    GPU pods are re-placed with the GPUs CP-SAT chose: each bind and move step names them.
    """
    live = np.asarray(live, dtype=np.int64)
    if max_nodes is not None and cluster.num_nodes > max_nodes:
        nodes = neighbourhood(cluster, live, max_nodes)
        on = np.zeros(cluster.num_nodes, dtype=bool)
        on[nodes] = True
        node = cluster.pod_node[live]
        live = live[(node < 0) | on[np.maximum(node, 0)]]
    else:
        nodes = np.arange(cluster.num_nodes)
    small = live_cluster(cluster, live, nodes)
    result = solve(small, time_limit_s, workers=workers, seed=seed)
    steps = [s._replace(pod=int(live[s.pod]), node=int(nodes[s.node]) if s.node >= 0 else -1)
             for s in sequence(small, result.pod_node, result.pod_gpus)]
    return steps, result
