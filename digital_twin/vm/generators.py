"""Synthetic clusters: random valid ones for property tests, and toy ones whose optimum is known.

:func:`random_cluster` packs random VMs onto random hosts wherever they fit, so every cluster it
returns is a valid twin state (no node over capacity, anti-affinity sets spread out), with the
optional complications of real snapshots switched on by chances: inactive hosts, frozen VMs,
single-NUMA VMs split over both nodes, memory-bound nodes and one anti-affinity set.

:func:`toy_cluster` builds a cluster in which the best fragment rate reachable with ``budget``
migrations is known in closed form (:meth:`ToyCluster.best_fragment_rate`), so planners can be
checked for optimality without a solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from digital_twin.vm.cluster import Cluster, DeploymentSet, VMType, make_cluster

DEFAULT_VM_TYPES = (
    VMType("t2", 2, 2048.0, 1), VMType("t4", 4, 4096.0, 1), VMType("t8", 8, 8192.0, 1),
    VMType("t16", 16, 16384.0, 1), VMType("t16s", 16, 16384.0, 2),
)
"""Small single-NUMA types and one two-NUMA type, 1 GiB per vCPU."""


def random_cluster(
    rng: np.random.Generator | int,
    num_hosts: int = 12,
    num_vms: int = 60,
    *,
    name: str = "random",
    vm_types: Sequence[VMType] = DEFAULT_VM_TYPES,
    node_cpu: Sequence[int] = (24,),
    mem_per_cpu: float = 1024.0,
    memory_bound: float = 0.0,
    inactive: float = 0.0,
    split: float = 0.0,
    frozen: float = 0.0,
    anti_affinity: float = 0.0,
    rack_anti_affinity: float = 0.0,
    anti_affinity_size: int | None = None,
    hosts_per_rack: int = 2,
    attempts: int | None = None,
) -> Cluster:
    """A random valid cluster: VMs of random types placed on random hosts where they fit.

    Every chance below is a probability in [0, 1]; at 0 the feature is absent.

    Args:
        rng: a numpy generator, or a seed for one.
        num_hosts: hosts, two NUMA nodes each.
        num_vms: VMs wanted; fewer when placements keep failing (see ``attempts``).
        name: the cluster name; host ids are ``{name}_pm{i}``, VM ids ``{name}_vm{i}``.
        vm_types: the types drawn from, uniformly; a VM's memory per vCPU is its type's.
        node_cpu: vCPU sizes a NUMA node is drawn from (per node).
        mem_per_cpu: NUMA node memory (MB) per vCPU of the node.
        memory_bound: chance a node has half that memory, so memory, not CPU, limits it.
        inactive: chance a host is under maintenance (its VMs may leave; none may arrive).
        split: chance a single-NUMA VM of an even vCPU count >= 4 is split over both nodes.
        frozen: chance a VM is not migratable.
        anti_affinity: chance the cluster has one anti-affinity set.
        rack_anti_affinity: chance that set is per rack rather than per host.
        anti_affinity_size: most members of the set (default: one VM per host or rack).
        hosts_per_rack: consecutive hosts share a rack.
        attempts: placements tried (default ``3 * num_vms``).

    Returns:
        The cluster; its anti-affinity members start on distinct hosts (racks).
    """
    rng = np.random.default_rng(rng)
    cpu_total = rng.choice(np.asarray(node_cpu, dtype=np.int64), size=(num_hosts, 2))
    mem_total = cpu_total * mem_per_cpu
    if memory_bound:
        mem_total = mem_total * np.where(rng.random((num_hosts, 2)) < memory_bound, 0.5, 1.0)
    active = rng.random(num_hosts) >= inactive if inactive else np.ones(num_hosts, dtype=bool)
    free_cpu, free_mem = cpu_total.copy(), mem_total.copy()
    vm_type, vm_host, vm_cpu, vm_mem = [], [], [], []
    for _ in range(3 * num_vms if attempts is None else attempts):
        if len(vm_type) == num_vms:
            break
        t, h = int(rng.integers(len(vm_types))), int(rng.integers(num_hosts))
        vt = vm_types[t]
        even = vt.request_cpu % 2 == 0 and vt.request_cpu >= 4
        if vt.numa == 2 or (split and even and rng.random() < split):
            cpu = np.array([vt.request_cpu // 2] * 2)
        else:
            cpu = np.array([vt.request_cpu, 0])[:: rng.choice([1, -1])]
        mem = cpu * (vt.request_mem_mb / vt.request_cpu)
        if (free_cpu[h] >= cpu).all() and (free_mem[h] >= mem).all():
            free_cpu[h] -= cpu
            free_mem[h] -= mem
            vm_type.append(t)
            vm_host.append(h)
            vm_cpu.append(cpu)
            vm_mem.append(mem)
    n = len(vm_type)
    vm_host_arr = np.array(vm_host, dtype=np.int64)
    allow = rng.random(n) >= frozen if frozen else np.ones(n, dtype=bool)
    racks = np.arange(num_hosts) // hosts_per_rack
    sets = []
    if anti_affinity and n >= 2 and rng.random() < anti_affinity:
        granularity = "rack" if rack_anti_affinity and rng.random() < rack_anti_affinity else "host"
        key = vm_host_arr if granularity == "host" else racks[vm_host_arr]
        _, first = np.unique(key, return_index=True)  # one VM per host (rack): a valid starting spread
        if len(first) >= 2:
            sets.append(DeploymentSet(granularity, np.sort(first[:anti_affinity_size])))
    return make_cluster(
        name, list(vm_types), [f"{name}_pm{i}" for i in range(num_hosts)], cpu_total, mem_total,
        [f"{name}_vm{i}" for i in range(n)], np.array(vm_type, dtype=np.int64), vm_host_arr,
        np.array(vm_cpu, dtype=np.int64).reshape(n, 2), np.array(vm_mem).reshape(n, 2), host_status=["ACTIVE" if a else "MAINTENANCE" for a in active],
        host_rack=racks, vm_allow_migration=allow, deployment_sets=sets,
    )


@dataclass(frozen=True)
class ToyCluster:
    """A cluster from :func:`toy_cluster` and what is known about it.

    Attributes:
        cluster: the cluster (copy it before migrating).
        num_halves: half-node VMs, each alone on its host's NUMA node 0.
        size: the fragment size the optimum is stated for (the NUMA node size).
    """

    cluster: Cluster
    num_halves: int
    size: int

    def best_fragment(self, budget: int) -> Fraction:
        """The lowest fragment rate reachable with at most ``budget`` migrations, exactly.

        Every node holds 0, half or all of its vCPU, so ``sum(free mod size)`` is ``size / 2`` per
        half-full node, and ``sum(free)`` never changes (every host is active). A migration changes
        at most two nodes, so it removes at most two half-full nodes, and their number keeps the
        parity of ``num_halves``; pairing halves of different hosts reaches that bound.
        """
        halves = max(self.num_halves - 2 * budget, self.num_halves % 2)
        _, free = self.cluster.fragment_sums(self.size)
        return Fraction(halves * (self.size // 2), free) if free else Fraction(0)

    def best_fragment_rate(self, budget: int) -> float:
        """:meth:`best_fragment` as a float (as ``Cluster.fragment_rate`` reports it)."""
        best = self.best_fragment(budget)
        return best.numerator / best.denominator


def toy_cluster(num_halves: int, spare_hosts: int = 0, size: int = 16, name: str = "toy",
                mem_per_cpu: float = 1024.0) -> ToyCluster:
    """A cluster whose best reachable fragment rate is known for every budget.

    Host ``i < num_halves`` holds a half-node VM (``size / 2`` vCPU) on NUMA node 0 and a full-node
    VM (``size`` vCPU) on node 1; ``spare_hosts`` empty hosts follow. All VMs are migratable; the
    best plan moves half VMs together in pairs, each pair saving ``size`` from ``sum(free mod size)``.

    Args:
        num_halves: half-node VMs (and hosts holding them).
        spare_hosts: extra empty hosts (room to move VMs without changing the fragment rate).
        size: NUMA node vCPU, and the fragment size the optimum holds for.
        name: the cluster name.
        mem_per_cpu: memory (MB) per vCPU of nodes and VMs.

    Returns:
        The cluster with its known optimum.
    """
    if size % 2:
        raise ValueError(f"size must be even, got {size}")
    num_hosts = num_halves + spare_hosts
    types = [VMType("half", size // 2, size // 2 * mem_per_cpu, 1), VMType("full", size, size * mem_per_cpu, 1)]
    cpu_total = np.full((num_hosts, 2), size, dtype=np.int64)
    hosts = np.arange(num_halves)
    vm_type = np.repeat([0, 1], num_halves)  # halves first, then the full VMs
    vm_host = np.concatenate([hosts, hosts])
    node_cpu = np.zeros((2 * num_halves, 2), dtype=np.int64)
    node_cpu[:num_halves, 0] = size // 2
    node_cpu[num_halves:, 1] = size
    cluster = make_cluster(
        name, types, [f"{name}_pm{i}" for i in range(num_hosts)], cpu_total, cpu_total * mem_per_cpu,
        [f"{name}_vm{i}" for i in range(2 * num_halves)], vm_type, vm_host, node_cpu, node_cpu * mem_per_cpu,
    )
    return ToyCluster(cluster=cluster, num_halves=num_halves, size=size)
