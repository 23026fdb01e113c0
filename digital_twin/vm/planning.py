"""What-if queries over every possible migration at once, and a greedy migration plan.

:func:`fragment_after_each_move` evaluates the fragment-rate numerator and denominator after every
feasible single migration in a handful of numpy operations over (VMs x hosts x placements);
:func:`greedy_plan` repeatedly applies the move that lowers the fragment rate most. The greedy plan
is the twin's demo and a baseline; it is not RL.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from digital_twin.vm.cluster import Cluster, Migration


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


def greedy_plan(clusters: Sequence[Cluster], budget: int, size: int = 16, min_gain: float = 1e-12) -> list[tuple[int, Migration]]:
    """Best-improvement greedy: apply, one at a time, the migration that lowers the fragment rate most.

    The fragment rate is taken over all ``clusters`` together (a VM moves only within its own
    cluster). Stops after ``budget`` migrations or when no migration lowers it by ``min_gain``.

    Args:
        clusters: the clusters to defragment; they are modified in place (copy them first to keep them).
        budget: maximum number of migrations.
        size: fragment size in vCPU.
        min_gain: smallest fragment-rate decrease worth a migration.

    Returns:
        ``(cluster index, migration)`` per applied migration, in order.
    """
    plan: list[tuple[int, Migration]] = []
    for _ in range(budget):
        sums = [c.fragment_sums(size) for c in clusters]
        frag, free = sum(s[0] for s in sums), sum(s[1] for s in sums)
        current = frag / free if free else 0.0
        best = None  # (new fr, cluster index, vm, host, placement)
        for ci, cluster in enumerate(clusters):
            feasible, d_frag, d_free = fragment_after_each_move(cluster, size)
            if not feasible.any():
                continue
            new_free = free + d_free
            new_fr = np.where(feasible, (frag + d_frag) / np.maximum(new_free, 1), np.inf)
            idx = int(np.argmin(new_fr))
            value = float(new_fr.flat[idx])
            if best is None or value < best[0]:
                vm, host, place = np.unravel_index(idx, new_fr.shape)
                best = (value, ci, int(vm), int(host), int(place))
        if best is None or best[0] > current - min_gain:
            break
        _, ci, vm, host, place = best
        plan.append((ci, clusters[ci].migrate(vm, host, place)))
    return plan
