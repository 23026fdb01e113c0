"""Hypothesis properties of the VM twin on random valid clusters."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digital_twin.vm import InfeasibleMigrationError, Snapshot, snapshot_from_document, snapshot_to_document
from tests.vm.conftest import assert_same_state, brute_force_feasible, clusters, state_arrays

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(cluster=clusters(), data=st.data())
def test_random_feasible_migrations_keep_capacity_and_metrics_exact(cluster, data):
    assert cluster.metrics() == cluster.recompute_metrics()
    for _ in range(data.draw(st.integers(0, 25))):
        feasible = cluster.feasible_destinations_all()
        options = np.argwhere(feasible)
        if len(options) == 0:
            break
        vm, host, place = options[data.draw(st.integers(0, len(options) - 1))]
        cluster.migrate(int(vm), int(host), int(place))
        assert cluster.capacity_violations() == []
        assert cluster.metrics() == cluster.recompute_metrics()
        # The cached per-shape masks behind movable_vms() follow every migration.
        np.testing.assert_array_equal(cluster.movable_vms(), cluster.feasible_destinations_all().any(axis=(1, 2)))
    for vm in range(cluster.num_vms):
        np.testing.assert_array_equal(cluster.feasible_destinations(vm), brute_force_feasible(cluster, vm))


@SETTINGS
@given(cluster=clusters(), data=st.data())
def test_every_move_is_accepted_iff_the_mask_allows_it_and_refusals_change_nothing(cluster, data):
    for _ in range(data.draw(st.integers(1, 15))):
        if cluster.num_vms == 0:
            return
        vm = data.draw(st.integers(0, cluster.num_vms - 1))
        host = data.draw(st.integers(0, cluster.num_hosts - 1))
        place = data.draw(st.integers(0, 1))
        allowed = bool(cluster.feasible_destinations(vm)[host, place])
        before = state_arrays(cluster)
        try:
            cluster.migrate(vm, host, place)
            assert allowed
        except InfeasibleMigrationError:
            assert not allowed
            assert_same_state(before, state_arrays(cluster))
        assert cluster.capacity_violations() == []


@SETTINGS
@given(cluster=clusters(), data=st.data())
def test_undo_returns_to_the_start(cluster, data):
    start = state_arrays(cluster)
    for _ in range(data.draw(st.integers(0, 10))):
        options = np.argwhere(cluster.feasible_destinations_all())
        if len(options) == 0:
            break
        vm, host, place = options[data.draw(st.integers(0, len(options) - 1))]
        cluster.migrate(int(vm), int(host), int(place))
    while cluster.history:
        cluster.undo()
    assert_same_state(start, state_arrays(cluster))


@SETTINGS
@given(cluster=clusters(), data=st.data())
def test_load_save_load_is_identical(cluster, data):
    for _ in range(data.draw(st.integers(0, 5))):
        options = np.argwhere(cluster.feasible_destinations_all())
        if len(options) == 0:
            break
        vm, host, place = options[data.draw(st.integers(0, len(options) - 1))]
        cluster.migrate(int(vm), int(host), int(place))
    doc = snapshot_to_document(Snapshot.from_clusters([cluster]))
    once = snapshot_from_document(doc, strict=True)
    again = snapshot_from_document(snapshot_to_document(once), strict=True)
    assert snapshot_to_document(again) == doc
    for loaded in (once.clusters[0], again.clusters[0]):
        for name in ("vm_host", "vm_placement", "vm_span", "vm_cpu", "vm_mem", "vm_type", "vm_allow_migration",
                     "free_cpu", "free_mem", "numa_cpu_total", "numa_mem_total", "host_active", "host_rack"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(cluster, name), err_msg=name)
        assert [d.members.tolist() for d in loaded.deployment_sets] == [d.members.tolist() for d in cluster.deployment_sets]
        assert loaded.fragment_rate() == cluster.fragment_rate()
