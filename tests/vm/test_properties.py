"""Hypothesis properties of the VM twin on random valid clusters."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digital_twin.vm import (
    Cluster,
    DeploymentSet,
    InfeasibleMigrationError,
    Snapshot,
    snapshot_from_document,
    snapshot_to_document,
)
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


# ---------------------------------------------------------------------- anti-affinity at scale (issue #12)
@st.composite
def clusters_with_sets(draw, max_hosts: int = 8, max_vms: int = 30, disjoint: bool = False) -> Cluster:
    """Random clusters with several deployment sets of both granularities over arbitrary rack ids.

    Members are drawn freely: sets overlap (a VM in several sets) and may start violated (two
    members sharing a host or rack, as the loader accepts and reports), so every path of the
    incremental masks is exercised, the exact fallback for VMs in several sets included. With
    ``disjoint``, a VM is in one set at most (the compiled one-set-per-VM path, as in the
    production-shaped snapshots), violations still allowed.
    """
    base = draw(clusters(max_hosts=max_hosts, max_vms=max_vms))
    rack_ids = draw(st.lists(st.sampled_from([-7, 0, 3, 10**12]), min_size=base.num_hosts, max_size=base.num_hosts))
    sets = []
    if base.num_vms:
        for _ in range(draw(st.integers(0, 6))):
            members = draw(st.lists(st.integers(0, base.num_vms - 1), min_size=1, max_size=min(8, base.num_vms)))
            if disjoint:
                taken = {int(m) for d in sets for m in d.members}
                members = [m for m in members if m not in taken]
                if not members:
                    continue
            sets.append(DeploymentSet(draw(st.sampled_from(["host", "rack"])), np.array(members, dtype=np.int64)))
    return dataclasses.replace(base, host_rack=np.array(rack_ids, dtype=np.int64), deployment_sets=sets)


def _assert_masks_match_brute_force(cluster: Cluster) -> None:
    brute = np.stack([brute_force_feasible(cluster, vm) for vm in range(cluster.num_vms)]) \
        if cluster.num_vms else np.zeros((0, cluster.num_hosts, 2), dtype=bool)
    np.testing.assert_array_equal(cluster.movable_vms(), brute.any(axis=(1, 2)))
    np.testing.assert_array_equal(cluster.feasible_destinations_all(), brute)
    for vm in range(cluster.num_vms):
        np.testing.assert_array_equal(cluster.feasible_destinations(vm), brute[vm])
    # The same placement built from scratch (no incremental state) agrees too.
    fresh = dataclasses.replace(cluster)
    np.testing.assert_array_equal(fresh.movable_vms(), brute.any(axis=(1, 2)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=st.one_of(clusters_with_sets(), clusters_with_sets(disjoint=True)), data=st.data())
def test_incremental_set_masks_equal_a_brute_force_recompute_after_random_migrations(cluster, data):
    if data.draw(st.booleans()):
        cluster.movable_vms()  # build the caches first (else they are built mid-sequence, from moved state)
    twin = None
    for step in range(data.draw(st.integers(0, 20))):
        if cluster.num_vms == 0:
            break
        options = np.argwhere(np.stack([brute_force_feasible(cluster, vm) for vm in range(cluster.num_vms)]))
        if len(options) and data.draw(st.integers(0, 3)) > 0:
            vm, host, place = (int(x) for x in options[data.draw(st.integers(0, len(options) - 1))])
        else:  # an arbitrary move: usually refused
            vm = data.draw(st.integers(0, cluster.num_vms - 1))
            host, place = data.draw(st.integers(0, cluster.num_hosts - 1)), data.draw(st.integers(0, 1))
        allowed = bool(brute_force_feasible(cluster, vm)[host, place])
        assert (cluster.check_migration(vm, host, place) is None) == allowed
        before = state_arrays(cluster)
        movable_before = cluster.movable_vms()
        if allowed:
            cluster.migrate(vm, host, place)
        else:
            with pytest.raises(InfeasibleMigrationError):
                cluster.migrate(vm, host, place)
            assert_same_state(before, state_arrays(cluster))
            np.testing.assert_array_equal(cluster.movable_vms(), movable_before)
        if data.draw(st.integers(0, 2)) == 0:  # also let several moves pile up before asking
            _assert_masks_match_brute_force(cluster)
        if twin is None and data.draw(st.integers(0, 5)) == 0:
            twin = cluster.copy()  # a copy carries the caches and then diverges independently
        if data.draw(st.integers(0, 4)) == 0 and cluster.history:
            cluster.undo()
    _assert_masks_match_brute_force(cluster)
    if twin is not None:
        _assert_masks_match_brute_force(twin)
        twin_after = pickle.loads(pickle.dumps(twin))  # checkpoints pickle clusters mid-episode
        _assert_masks_match_brute_force(twin_after)


def _assert_incremental_state_equals_a_rebuild(cluster: Cluster) -> None:
    """Every incrementally kept structure (shape fit, set occupancy and per-set fit counts with
    the changes still deferred applied, new-VM capacity) equals a from-scratch build of the placement."""
    cluster._shape_masks()  # applies the deferred set-count changes, refreshes the touched hosts
    assert cluster._num_pending == 0
    fresh = dataclasses.replace(cluster)
    fresh._shape_masks()
    for name in ("_shape_fit", "_shape_any", "_shape_count", "_occ_hp", "_occ_r", "_rack_fit", "_nbf"):
        mine, theirs = getattr(cluster, name), getattr(fresh, name)
        assert (mine is None) == (theirs is None), name
        if mine is not None:
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
    assert cluster._rack_crowded == fresh._rack_crowded
    assert cluster.new_vm_capacity() == fresh.new_vm_capacity()
    np.testing.assert_array_equal(cluster._fit_counts, fresh._fit_counts)
    np.testing.assert_array_equal(cluster._fit_totals, fresh._fit_counts.sum(axis=1))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=st.one_of(clusters_with_sets(), clusters_with_sets(disjoint=True)), data=st.data())
def test_deferred_set_counts_and_shared_capacity_equal_a_recompute_after_random_migrations(cluster, data):
    """Long runs of migrations with nothing read in between (more deferred set-count changes than
    the buffer holds), reads at random points, copies that share the capacity counts until one of
    them recounts, pickles: the incremental structures always equal a from-scratch build."""
    if data.draw(st.booleans()):
        cluster.movable_vms()  # build the caches first, so that moves defer their set-count changes
    if data.draw(st.booleans()):
        cluster.new_vm_capacity()
    copies = []
    for _ in range(data.draw(st.integers(0, 80))):
        if cluster.num_vms == 0:
            break
        options = np.argwhere(np.stack([brute_force_feasible(cluster, vm) for vm in range(cluster.num_vms)]))
        if not len(options):
            break
        token = cluster.placement_token
        vm, host, place = (int(x) for x in options[data.draw(st.integers(0, len(options) - 1))])
        cluster.migrate(vm, host, place)
        assert cluster.placement_token is not token
        action = data.draw(st.integers(0, 9))
        if action == 0:
            _assert_incremental_state_equals_a_rebuild(cluster)
        elif action == 1:
            copies.append(cluster.copy())
            assert copies[-1].placement_token is cluster.placement_token
        elif action == 2 and cluster.history:
            cluster.undo()
        elif action == 3:
            cluster.new_vm_capacity()
    _assert_incremental_state_equals_a_rebuild(cluster)
    for twin in copies:
        _assert_incremental_state_equals_a_rebuild(twin)
        _assert_incremental_state_equals_a_rebuild(pickle.loads(pickle.dumps(twin)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=st.one_of(clusters_with_sets(), clusters_with_sets(disjoint=True), clusters()), data=st.data())
def test_one_call_migration_and_verdicts_equal_migrate_then_movable(cluster, data):
    """``migrate_feasible_into`` (the env's per-step call: the move, its set-count changes, the
    touched hosts' fit and every VM's verdict in one compiled call) against a twin that does the
    same moves with ``migrate`` and asks ``movable_vms`` after each: the same state, verdicts,
    counts and metrics, from states with moves still unrefreshed (several ``migrate`` calls in a
    row, undos) and from copies and pickles mid-sequence."""
    if data.draw(st.booleans()):
        cluster.movable_vms()  # caches built first (else the first call falls back to the two calls)
    twin = cluster.copy()
    for _ in range(data.draw(st.integers(0, 25))):
        if cluster.num_vms == 0:
            break
        options = np.argwhere(np.stack([brute_force_feasible(cluster, vm) for vm in range(cluster.num_vms)]))
        if not len(options):
            break
        vm, host, place = (int(x) for x in options[data.draw(st.integers(0, len(options) - 1))])
        how = data.draw(st.integers(0, 5))
        if how == 0:  # a plain move on both (left unrefreshed: the next one-call move refreshes it too)
            cluster.migrate(vm, host, place)
            twin.migrate(vm, host, place)
            continue
        if how == 1 and cluster.history:
            cluster.undo()
            twin.undo()
            continue
        out = np.zeros(cluster.num_vms, dtype=bool)
        move, count = cluster.migrate_feasible_into(vm, host, place, out)
        expected_move = twin.migrate(vm, host, place)
        expected = twin.movable_vms()
        assert move == expected_move
        np.testing.assert_array_equal(out, expected)
        assert count == int(expected.sum())
        assert_same_state(state_arrays(cluster), state_arrays(twin))
        assert cluster.placement_token is not twin.placement_token
        if how == 2:
            cluster = cluster.copy()
        elif how == 3:
            cluster = pickle.loads(pickle.dumps(cluster))
    _assert_incremental_state_equals_a_rebuild(cluster)
    np.testing.assert_array_equal(cluster.movable_vms(), twin.movable_vms())
    for vm in range(cluster.num_vms):
        np.testing.assert_array_equal(cluster.feasible_destinations(vm), brute_force_feasible(cluster, vm))
