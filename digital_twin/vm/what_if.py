"""What-if queries: how the fragment rate would change after each possible migration.

:func:`fragment_after_each_move` evaluates the fragment-rate numerator and denominator after every
feasible single migration in a handful of numpy operations over (VMs x hosts x placements), without
changing the cluster. Planners (``agents.vm``) decide which of those moves to make.
"""

from __future__ import annotations

import numpy as np

from digital_twin.vm.cluster import Cluster


def fragment_after_each_move(cluster: Cluster, size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fragment sums after each single migration, for all migrations at once.

    Args:
        cluster: the cluster (not modified).
        size: fragment size in vCPU.

    Returns:
        ``(feasible, delta_fragment, delta_free)``: which moves are feasible, and how each would
        change ``sum(free mod size)`` and ``sum(free)`` over active NUMA nodes.

    Shapes:
        each (V, H, 2), indexed ``[vm, destination host, placement]``.
    """
    free = cluster.free_cpu
    active = cluster.host_active
    node_cpu, _ = cluster.vm_node_usage()  # (V, 2) on the current host
    src_free = free[cluster.vm_host]  # (V, 2)
    src_counted = active[cluster.vm_host][:, None]
    d_frag_src = (((src_free + node_cpu) % size - src_free % size) * src_counted).sum(axis=1)  # (V,)
    d_free_src = (node_cpu * src_counted).sum(axis=1)

    # Destination change per VM shape, host and placement; placement 1 mirrors the usage.
    shape_cpu = cluster.shape_cpu  # (K, 2) canonical
    usage = np.stack([shape_cpu, shape_cpu[:, ::-1]], axis=1)  # (K, P, 2)
    dst_after = free[None, None, :, :] - usage[:, :, None, :]  # (K, P, H, 2)
    d_frag_dst = ((dst_after % size) - (free % size)[None, None]).sum(axis=3)  # (K, P, H)
    d_frag_dst = np.where(active[None, None, :], d_frag_dst, 0).transpose(0, 2, 1)  # (K, H, P)
    d_free_dst = -usage.sum(axis=2)[:, None, :] * active[None, :, None]  # (K, H, P)

    feasible = cluster.feasible_destinations_all()
    delta_frag = d_frag_src[:, None, None] + d_frag_dst[cluster.vm_shape]
    delta_free = d_free_src[:, None, None] + d_free_dst[cluster.vm_shape]
    return feasible, delta_frag, delta_free
