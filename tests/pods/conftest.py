"""Small pod clusters for the pod-packing tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from digital_twin.pods import PodCluster


def make_cluster(nodes, pods, placement=None, gpus=None, name="test") -> PodCluster:
    """``nodes``: [(cpu, mem)]; ``pods``: [(cpu, mem, priority)] or [(cpu, mem, priority, num_gpu, gpu_milli)]."""
    pods = [tuple(p) + (0, 0)[len(p) - 3:] if len(p) == 3 else tuple(p) for p in pods]
    arr = np.array(pods, dtype=np.int64).reshape(-1, 5)
    return PodCluster([f"n{j}" for j in range(len(nodes))], [n[0] for n in nodes], [n[1] for n in nodes],
                      [f"p{i}" for i in range(len(pods))], arr[:, 0], arr[:, 1], arr[:, 2],
                      node_gpus=gpus, pod_num_gpu=arr[:, 3], pod_gpu_milli=arr[:, 4], pod_node=placement,
                      pod_start=np.arange(len(pods), dtype=float), name=name)


def state(cluster: PodCluster):
    """Everything a change may touch, as comparable values."""
    return (cluster.pod_node.tolist(), cluster.cpu_free.tolist(), cluster.memory_free.tolist(),
            cluster.gpu_free.tolist(), list(cluster.pod_gpus), len(cluster.history),
            (cluster.evictions, cluster.moves, cluster.binds))


@st.composite
def clusters(draw, max_nodes=4, max_pods=8, gpus=True):
    """A random cluster with a random feasible starting placement (bound through the twin's own checks)."""
    n = draw(st.integers(1, max_nodes))
    p = draw(st.integers(1, max_pods))
    nodes = [(draw(st.integers(500, 2000)), draw(st.integers(500, 2000))) for _ in range(n)]
    node_gpus = [draw(st.integers(0, 2)) if gpus else 0 for _ in range(n)]
    pods = []
    for _ in range(p):
        k = draw(st.integers(0, 2)) if gpus else 0
        share = 0 if k == 0 else (1000 if k > 1 else draw(st.sampled_from([250, 500, 1000])))
        pods.append((draw(st.integers(0, 1200)), draw(st.integers(0, 1200)), draw(st.integers(0, 2)), k, share))
    cluster = make_cluster(nodes, pods, gpus=node_gpus)
    for i in range(p):
        where = np.flatnonzero(cluster.fits(i))
        if len(where) and draw(st.booleans()):
            cluster.bind(i, int(where[draw(st.integers(0, len(where) - 1))]))
    cluster.reset_counters()
    return cluster
