"""The CP-SAT fallback of "Priority Matters" over the live pods of a cluster that also holds pods not there yet.

A replay keeps every pod of a trace in one :class:`~digital_twin.pods.PodCluster`; only some are
live (created, not yet deleted). :func:`fallback_steps` builds a cluster of the live pods alone
(their current nodes and GPUs kept), lets :func:`agents.pods.solve` re-place them within the window,
sequences the target into evictions, moves and binds (:func:`agents.pods.sequence`) and returns
the steps in the big cluster's pod indices, for the caller to apply through the twin's checks (a
step's ``gpus``, the GPUs CP-SAT chose for a GPU pod, go to :meth:`~digital_twin.pods.PodCluster.bind` /
``move`` with it).
"""

from __future__ import annotations

import numpy as np

from agents.pods.cpsat import PackingResult, solve
from agents.pods.sequencing import Step, sequence
from digital_twin.pods import PodCluster


def live_cluster(cluster: PodCluster, live: np.ndarray) -> PodCluster:
    """The nodes of ``cluster`` and its pods ``live`` (indices), each where it runs now (or Pending)."""
    live = np.asarray(live, dtype=np.int64)
    return PodCluster(cluster.node_names, cluster.cpu_capacity, cluster.memory_capacity,
                      [cluster.pod_names[i] for i in live], cluster.pod_cpu[live], cluster.pod_memory[live],
                      cluster.pod_priority[live], node_gpus=cluster.gpu_count, pod_num_gpu=cluster.pod_num_gpu[live],
                      pod_gpu_milli=cluster.pod_gpu_milli[live], pod_node=cluster.pod_node[live],
                      pod_start=cluster.pod_start[live], pod_gpus=[cluster.pod_gpus[i] for i in live],
                      name=f"{cluster.name}-live")


def fallback_steps(cluster: PodCluster, live: np.ndarray, time_limit_s: float, workers: int = 1,
                   seed: int = 0) -> tuple[list[Step], PackingResult]:
    """CP-SAT's re-placement of the ``live`` pods as steps on ``cluster`` (left unchanged), and its result.

    GPU pods are re-placed with the GPUs CP-SAT chose: each bind and move step names them.
    """
    live = np.asarray(live, dtype=np.int64)
    small = live_cluster(cluster, live)
    result = solve(small, time_limit_s, workers=workers, seed=seed)
    steps = [s._replace(pod=int(live[s.pod])) for s in sequence(small, result.pod_node, result.pod_gpus)]
    return steps, result
