"""Deployment-set generator: sizes, a starting placement that satisfies every set, seeding, refusals,
the snapshot round trip, and the incremental masks on a production-sized snapshot against a recompute."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from digital_twin.vm import snapshot_from_document, snapshot_to_document
from digital_twin.vm.deployment_sets import production_like_snapshot, strip_deployment_sets, with_deployment_sets
from digital_twin.vm.generators import random_cluster
from tests.vm.conftest import brute_force_feasible


def _satisfied(cluster) -> bool:
    for d in cluster.deployment_sets:
        where = cluster.vm_host[d.members]
        if d.granularity == "rack":
            where = cluster.host_rack[where]
        if len(np.unique(where)) < len(where):
            return False
    return True


@pytest.fixture(scope="module")
def production():
    """The issue #12 shape: 254 + 1,010 hosts, 165 sets per cluster (generated once for the module)."""
    return production_like_snapshot(0)


def test_sets_of_both_granularities_start_satisfied_and_disjoint():
    base = random_cluster(3, num_hosts=60, num_vms=240, node_cpu=(44,), mem_per_cpu=2048.0)
    c = with_deployment_sets(base, 7, num_host_sets=20, num_rack_sets=4, member_fraction=0.6, hosts_per_rack=6)
    assert [d.granularity for d in c.deployment_sets] == ["host"] * 20 + ["rack"] * 4
    assert all(len(d.members) >= 2 for d in c.deployment_sets)
    members = np.concatenate([d.members for d in c.deployment_sets])
    assert len(np.unique(members)) == len(members)  # a VM is in one set at most
    assert abs(len(members) - 0.6 * base.num_vms) <= 2
    assert _satisfied(c)
    np.testing.assert_array_equal(c.host_rack, np.arange(60) // 6)
    # Same placement; the input is left alone.
    np.testing.assert_array_equal(c.vm_host, base.vm_host)
    assert base.deployment_sets == [] and (base.host_rack == np.arange(60) // 2).all()  # random_cluster: 2 hosts a rack


def test_sets_are_seeded():
    base = random_cluster(4, num_hosts=30, num_vms=100, node_cpu=(44,))
    a, b, other = (with_deployment_sets(base, seed, num_host_sets=10, num_rack_sets=2, hosts_per_rack=5)
                   for seed in (1, 1, 2))
    sig = lambda c: [(d.granularity, d.members.tolist()) for d in c.deployment_sets]  # noqa: E731
    assert sig(a) == sig(b) != sig(other)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_host_sets": -1}, "set counts"),
    ({"member_fraction": 1.5}, "member_fraction"),
    ({"hosts_per_rack": 0}, "hosts_per_rack"),
    ({"rack_set_size": (1, 3)}, "rack_set_size"),
    ({"hosts_per_rack": 1000}, "at least 2 racks"),
])
def test_bad_arguments_are_refused(kwargs, message):
    base = random_cluster(5, num_hosts=10, num_vms=20)
    with pytest.raises(ValueError, match=message):
        with_deployment_sets(base, 0, **kwargs)


def test_production_like_snapshot_has_the_issue_shape(production):
    assert [c.num_hosts for c in production.clusters] == [254, 1010]
    assert production.requirement.maximum_migration == 10
    for c, vms in zip(production.clusters, (591, 2409)):
        assert abs(c.num_vms - vms) <= 0.15 * vms
        grans = [d.granularity for d in c.deployment_sets]
        assert (grans.count("host"), grans.count("rack")) == (150, 15)
        members = sum(len(d.members) for d in c.deployment_sets)
        assert abs(members - 0.81 * c.num_vms) <= 3
        assert _satisfied(c) and c.capacity_violations() == []


def test_production_like_snapshot_saves_with_its_sets(production):
    doc = json.loads(json.dumps(snapshot_to_document(production)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = snapshot_from_document(doc, strict=True)  # strict: free values agree, sets satisfied
    for a, b in zip(production.clusters, again.clusters):
        assert [(d.granularity, d.members.tolist()) for d in a.deployment_sets] == \
            [(d.granularity, d.members.tolist()) for d in b.deployment_sets]
        np.testing.assert_array_equal(a.host_rack, b.host_rack)
        np.testing.assert_array_equal(a.vm_host, b.vm_host)
    bare = strip_deployment_sets(production)
    assert all(c.deployment_sets == [] for c in bare.clusters)
    assert all(c["other_requirement"] == {"deployment_set": []} for c in snapshot_to_document(bare)["cluster_list"])
    np.testing.assert_array_equal(bare.clusters[1].vm_host, production.clusters[1].vm_host)


def test_incremental_masks_at_production_scale_equal_a_recompute(production):
    """200 random feasible migrations (and a few undos) on the 1,010-host cluster with its 165 sets:
    the incremental masks equal a from-scratch cluster's and a brute-force check of sampled VMs."""
    c = production.clusters[1].copy()
    rng = np.random.default_rng(0)
    for step in range(200):
        movable = np.flatnonzero(c.movable_vms())
        vm = int(rng.choice(movable))
        options = np.argwhere(c.feasible_destinations(vm))
        host, place = options[rng.integers(len(options))]
        c.migrate(vm, int(host), int(place))
        if step % 25 == 24:
            c.undo()
    assert _satisfied(c)
    fresh = dataclasses.replace(c)  # same placement, nothing incremental
    np.testing.assert_array_equal(c.movable_vms(), fresh.movable_vms())
    np.testing.assert_array_equal(c.movable_vms(), c.feasible_destinations_all().any(axis=(1, 2)))
    members = np.concatenate([d.members for d in c.deployment_sets])
    for vm in rng.choice(members, 2, replace=False).tolist():  # the oracle takes ~1 s a VM at this size
        np.testing.assert_array_equal(c.feasible_destinations(vm), brute_force_feasible(c, vm))


def test_many_migrations_deferring_set_counts_equal_a_recompute(production):
    """150 migrations of set members on the 1,010-host cluster with no mask asked in between: the
    deferred set-count changes overflow their buffer (applied then, mid-move), and the counts,
    masks and capacity equal a from-scratch cluster's."""
    from tests.vm.test_properties import _assert_incremental_state_equals_a_rebuild

    c = production.clusters[1].copy()
    c.movable_vms()  # caches built: from here moves defer their set-count changes
    rng = np.random.default_rng(1)
    members = np.unique(np.concatenate([d.members for d in c.deployment_sets]))
    moved, most_pending = 0, 0
    while moved < 150:
        vm, host, place = int(rng.choice(members)), int(rng.integers(c.num_hosts)), int(rng.integers(2))
        if c.check_migration(vm, host, place) is not None:  # (reads occupancy and capacity only: applies nothing)
            continue
        c.migrate(vm, host, place)
        moved += 1
        most_pending = max(most_pending, c._num_pending)
    assert most_pending > 40  # the buffer (64 rows) filled and was applied mid-sequence
    _assert_incremental_state_equals_a_rebuild(c)
    np.testing.assert_array_equal(c.movable_vms(), dataclasses.replace(c).movable_vms())
    assert _satisfied(c)
