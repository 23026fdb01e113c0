"""Synthetic clusters: random ones are valid twin states; toy ones have the optimum they claim."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from digital_twin.vm.generators import random_cluster, toy_cluster


def best_by_brute_force(cluster, budget: int) -> Fraction:
    """Lowest fragment rate over every sequence of at most ``budget`` migrations (any VM, any number of times)."""
    best = Fraction(*cluster.fragment_sums())

    def visit(depth: int) -> None:
        nonlocal best
        frag, free = cluster.fragment_sums()
        best = min(best, Fraction(frag, free))
        if depth == budget:
            return
        for vm, host, place in np.argwhere(cluster.feasible_destinations_all()).tolist():
            cluster.migrate(vm, host, place)
            visit(depth + 1)
            cluster.undo()

    visit(0)
    return best


@pytest.mark.parametrize("num_halves, spare_hosts", [(3, 0), (4, 0), (3, 1)])
def test_toy_optimum_matches_brute_force(num_halves, spare_hosts):
    toy = toy_cluster(num_halves, spare_hosts)
    for budget in range(3):
        assert best_by_brute_force(toy.cluster.copy(), budget) == toy.best_fragment(budget)
    assert toy.best_fragment(0) == Fraction(*toy.cluster.fragment_sums())


def test_random_clusters_are_valid_and_seeded():
    for seed in range(30):
        c = random_cluster(seed, 8, 40, node_cpu=(8, 16, 24), memory_bound=0.2, inactive=0.2, split=0.5,
                           frozen=0.2, anti_affinity=1.0, rack_anti_affinity=0.5)
        assert c.capacity_violations() == [] and c.metrics() == c.recompute_metrics()
        for dset in c.deployment_sets:  # members start spread out, one per host (rack)
            key = c.vm_host[dset.members] if dset.granularity == "host" else c.host_rack[c.vm_host[dset.members]]
            assert len(set(key.tolist())) == len(dset.members)
        again = random_cluster(seed, 8, 40, node_cpu=(8, 16, 24), memory_bound=0.2, inactive=0.2, split=0.5,
                               frozen=0.2, anti_affinity=1.0, rack_anti_affinity=0.5)
        np.testing.assert_array_equal(c.vm_host, again.vm_host)
        np.testing.assert_array_equal(c.vm_cpu, again.vm_cpu)
    plain = random_cluster(0)
    assert plain.num_vms == 60 and plain.host_active.all() and plain.vm_allow_migration.all()
    assert plain.deployment_sets == []
