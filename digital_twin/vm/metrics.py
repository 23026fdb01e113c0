"""From-scratch cluster metrics as pure functions of plain arrays.

These are the definitions. :class:`digital_twin.vm.cluster.Cluster` maintains the same
quantities incrementally per migration, and the tests check that the two always agree exactly.

Fragment rate (VMR2L): ``FR_k = sum((free_cpu mod k)) / sum(free_cpu)`` over the NUMA nodes of
active hosts, with ``k = 16`` the headline value: CPU left free in pieces smaller than ``k`` vCPU
cannot host a ``k``-vCPU VM on that NUMA node.
"""

from __future__ import annotations

import numpy as np

FRAGMENT_SIZES: tuple[int, ...] = (8, 16, 32)
"""Fragment sizes (vCPU) whose fragment rate the twin tracks; 16 is VMR2L's FR."""


def fragment_rate(free_cpu: np.ndarray, host_active: np.ndarray, size: int = 16) -> float:
    """Fragment rate of the active hosts' NUMA nodes.

    Args:
        free_cpu: free vCPU per host and NUMA node.
        host_active: which hosts count.
        size: fragment size in vCPU.

    Returns:
        ``sum(free mod size) / sum(free)``, or 0.0 when nothing is free.

    Shapes:
        free_cpu: (H, 2) integer; host_active: (H,) bool.
    """
    free = free_cpu[host_active]
    total = int(free.sum())
    if total == 0:
        return 0.0
    return int((free % size).sum()) / total


def type_fit_counts(
    free_cpu: np.ndarray,
    free_mem: np.ndarray,
    host_active: np.ndarray,
    type_cpu: np.ndarray,
    type_mem: np.ndarray,
    type_span: np.ndarray,
) -> np.ndarray:
    """How many new VMs of each type fit on each host, one type at a time.

    A single-NUMA type fits ``min(free_cpu // cpu, free_mem // mem)`` times on each NUMA node; a
    type spanning both nodes needs half its request on each, so it fits the smaller of the two
    nodes' counts. Inactive hosts take none.

    Args:
        free_cpu: free vCPU per host and NUMA node.
        free_mem: free huge-page memory (MB) per host and NUMA node.
        host_active: which hosts accept VMs.
        type_cpu: vCPU request per type.
        type_mem: memory request (MB) per type.
        type_span: 1 or 2, how many NUMA nodes each type spans.

    Returns:
        Count of new VMs per type and host.

    Shapes:
        free_cpu, free_mem: (H, 2); host_active: (H,); type_*: (T,); returns (T, H) int64.
    """
    span2 = type_span == 2
    # A 2-NUMA VM needs half of its request on each node (rounded up for odd vCPU counts).
    cpu_per_node = np.where(span2, -(-type_cpu // 2), type_cpu).astype(np.int64)
    mem_per_node = np.where(span2, type_mem / 2.0, type_mem)
    per_node = np.minimum(
        free_cpu[None, :, :] // cpu_per_node[:, None, None],
        np.floor(free_mem[None, :, :] / mem_per_node[:, None, None]).astype(np.int64),
    )
    per_node = np.maximum(per_node, 0)
    counts = np.where(span2[:, None], per_node.min(axis=2), per_node.sum(axis=2))
    return counts * host_active[None, :]


def free_from_placements(
    cpu_total: np.ndarray,
    mem_total: np.ndarray,
    vm_host: np.ndarray,
    vm_node_cpu: np.ndarray,
    vm_node_mem: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Free CPU and memory per NUMA node recomputed from where the VMs are.

    Args:
        cpu_total: vCPU per host and NUMA node.
        mem_total: huge-page memory (MB) per host and NUMA node.
        vm_host: host index of each VM.
        vm_node_cpu: vCPU each VM uses on NUMA node 0 and 1 of its host.
        vm_node_mem: memory (MB) each VM uses on NUMA node 0 and 1 of its host.

    Returns:
        ``(free_cpu, free_mem)``, each (H, 2).
    """
    num_cells = cpu_total.size
    # Flat cell index 2*host + node; bincount is an order of magnitude faster than np.add.at.
    cells = np.concatenate([2 * vm_host, 2 * vm_host + 1])
    used_cpu = np.bincount(cells, weights=np.concatenate([vm_node_cpu[:, 0], vm_node_cpu[:, 1]]), minlength=num_cells)
    used_mem = np.bincount(cells, weights=np.concatenate([vm_node_mem[:, 0], vm_node_mem[:, 1]]), minlength=num_cells)
    free_cpu = cpu_total - used_cpu.astype(np.int64).reshape(cpu_total.shape)
    return free_cpu, mem_total - used_mem.reshape(mem_total.shape)
