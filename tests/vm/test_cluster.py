"""Cluster state: feasibility masks against a brute-force oracle, migrations, refusals, undo, copy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from digital_twin.vm import InfeasibleMigrationError, snapshot_from_document
from tests.vm.conftest import assert_same_state, brute_force_feasible, state_arrays, tiny_document


@pytest.fixture
def tiny():
    return snapshot_from_document(tiny_document()).clusters[0]


def test_feasibility_mask_matches_brute_force_on_the_real_cluster(real_cluster):
    rng = np.random.default_rng(0)
    for vm in rng.choice(real_cluster.num_vms, 60, replace=False):
        np.testing.assert_array_equal(real_cluster.feasible_destinations(vm), brute_force_feasible(real_cluster, vm))


def test_all_masks_at_once_equal_one_by_one(real_cluster):
    all_masks = real_cluster.feasible_destinations_all()
    assert all_masks.shape == (real_cluster.num_vms, real_cluster.num_hosts, 2)
    for vm in range(0, real_cluster.num_vms, 7):
        np.testing.assert_array_equal(all_masks[vm], real_cluster.feasible_destinations(vm))
    np.testing.assert_array_equal(real_cluster.movable_vms(), all_masks.any(axis=(1, 2)))


def test_tiny_cluster_constraints(tiny):
    # vm_0 (16 vCPU on pm_0/0) has anti-affinity with vm_2 on pm_1: only pm_2 is open.
    mask = tiny.feasible_destinations(0)
    assert mask.tolist() == [[False, False], [False, False], [True, True]]
    # vm_2 is split over both nodes: placement 0 only; pm_1 is its own host, pm_0 holds vm_0 (same set).
    assert tiny.feasible_destinations(2).tolist() == [[False, False], [False, False], [True, False]]
    # Feasible = the brute-force oracle for every VM.
    for vm in range(tiny.num_vms):
        np.testing.assert_array_equal(tiny.feasible_destinations(vm), brute_force_feasible(tiny, vm))


@pytest.mark.parametrize(
    "vm, host, placement, reason",
    [
        (0, 1, 0, "anti-affinity"),
        (0, 0, 1, "already on host pm_0"),
        (2, 2, 1, "only placement 0"),
        (5, 0, 0, "out of range"),
        (0, 3, 0, "out of range"),
        (0, 2, 2, "placement must be 0 or 1"),
    ],
)
def test_refused_migrations_say_why_and_change_nothing(tiny, vm, host, placement, reason):
    before = state_arrays(tiny)
    assert tiny.check_migration(vm, host, placement) is not None
    with pytest.raises(InfeasibleMigrationError, match=reason):
        tiny.migrate(vm, host, placement)
    assert_same_state(before, state_arrays(tiny))


def test_capacity_refusals_name_host_node_and_need():
    from digital_twin.vm import make_cluster
    from tests.vm.conftest import TYPES

    # Host a: 16 vCPU per node, holds x (16 vCPU on node 0). Host b: 8 vCPU per node, plenty of memory.
    # Host c: 44 vCPU per node but 1 GiB of memory per node.
    c = make_cluster(
        "cap", TYPES, ["a", "b", "c"], np.array([[16, 16], [8, 8], [44, 44]]),
        np.array([[65536.0, 65536.0], [65536.0, 65536.0], [1024.0, 1024.0]]),
        ["x"], np.array([3]), np.array([0]), np.array([[16, 0]]), np.array([[32768.0, 0.0]]),
    )
    assert not c.feasible_destinations(0).any()
    before = state_arrays(c)
    with pytest.raises(InfeasibleMigrationError, match="host b NUMA 1 has 8 vCPU free, VM x needs 16"):
        c.migrate(0, 1, 1)
    with pytest.raises(InfeasibleMigrationError, match="host c NUMA 0 has 1024.0 MB free, VM x needs 32768.0"):
        c.migrate(0, 2, 0)
    assert_same_state(before, state_arrays(c))


def test_inactive_host_and_non_migratable_vm():
    doc = tiny_document()
    doc["cluster_list"][0]["host_info"][2]["status"] = "MAINTENANCE"
    doc["cluster_list"][0]["vm_instance"][1]["allow_migration"] = False
    c = snapshot_from_document(doc).clusters[0]
    assert not c.feasible_destinations(0)[2].any()
    with pytest.raises(InfeasibleMigrationError, match="not active"):
        c.migrate(0, 2, 0)
    assert not c.feasible_destinations(1).any()
    with pytest.raises(InfeasibleMigrationError, match="does not allow migration"):
        c.migrate(1, 1, 0)
    # Inactive hosts are left out of the fragment rate.
    assert c.fragment_sums()[1] == 28 + 40 + 36 + 36


def test_migrate_updates_state_and_metrics(tiny):
    # Before: free (28, 40), (36, 36), (44, 44): fragments 12+8+4+4+12+12 = 52 of 228.
    assert tiny.fragment_sums() == (52, 228)
    move = tiny.migrate(1, 1, 0)  # 4 vCPU from pm_0/1 to pm_1/0
    assert (move.from_host, move.from_placement, move.to_host, move.to_placement) == (0, 1, 1, 0)
    assert tiny.free_cpu.tolist() == [[28, 44], [32, 36], [44, 44]]
    assert tiny.num_migrations == 1 and tiny.memory_moved_mb == 8192.0
    assert tiny.metrics() == tiny.recompute_metrics()
    # After: (28, 44), (32, 36), (44, 44): 12+12+0+4+12+12 = 52; FR(8): 4+4+0+4+4+4 = 20.
    assert tiny.fragment_sums() == (52, 228) and tiny.fragment_sums(8) == (20, 228)


def test_undo_restores_everything(real_cluster):
    before = state_arrays(real_cluster)
    rng = np.random.default_rng(1)
    done = 0
    while done < 30:
        vm = int(rng.integers(real_cluster.num_vms))
        options = np.argwhere(real_cluster.feasible_destinations(vm))
        if len(options):
            host, place = options[rng.integers(len(options))]
            real_cluster.migrate(vm, int(host), int(place))
            done += 1
    assert real_cluster.metrics() == real_cluster.recompute_metrics()
    for _ in range(30):
        real_cluster.undo()
    assert_same_state(before, state_arrays(real_cluster))
    with pytest.raises(IndexError, match="no migration to undo"):
        real_cluster.undo()


def test_copy_is_independent(real_cluster):
    twin = real_cluster.copy()
    vm = int(np.flatnonzero(real_cluster.movable_vms())[0])
    host, place = np.argwhere(twin.feasible_destinations(vm))[0]
    twin.migrate(vm, int(host), int(place))
    assert real_cluster.num_migrations == 0 and twin.num_migrations == 1
    assert real_cluster.vm_host[vm] != twin.vm_host[vm]
    assert real_cluster.metrics() == real_cluster.recompute_metrics()
    assert twin.metrics() == twin.recompute_metrics()


def test_split_vm_moves_keep_their_split(real_cluster):
    vm = int(np.flatnonzero((real_cluster.vm_span == 2) & real_cluster.movable_vms())[0])
    host = int(np.flatnonzero(real_cluster.feasible_destinations(vm)[:, 0])[0])
    cpu = real_cluster.vm_cpu[vm]
    before = real_cluster.free_cpu[host].copy()
    real_cluster.migrate(vm, host, 0)
    np.testing.assert_array_equal(real_cluster.free_cpu[host], before - cpu)


def test_rack_anti_affinity_refusal_names_set_member_and_rack():
    from digital_twin.vm import DeploymentSet, make_cluster
    from tests.vm.conftest import TYPES

    # Hosts a, b share rack 7; c is rack 9. x (on a) and y (on c) form a rack set: x may not go to c's
    # rack; b, its own rack, is open because x is alone there.
    c = make_cluster(
        "racks", TYPES, ["a", "b", "c"], np.full((3, 2), 44), np.full((3, 2), 184388.0),
        ["x", "y"], np.array([1, 1]), np.array([0, 2]), np.array([[4, 0], [4, 0]]),
        np.array([[8192.0, 0], [8192.0, 0]]),
        host_rack=np.array([7, 7, 9]), deployment_sets=[DeploymentSet("rack", np.array([0, 1]))],
    )
    assert c.feasible_destinations(0).tolist() == [[False, False], [True, True], [False, False]]
    c.copy().migrate(0, 1, 0)
    before = state_arrays(c)
    expected = (r"deployment set 0 \(rack granularity\) of VM x already has VM y on host c, "
                r"in the rack of host c \(rack 9\)")
    with pytest.raises(InfeasibleMigrationError, match=expected):
        c.migrate(0, 2, 0)
    assert_same_state(before, state_arrays(c))


def test_bad_deployment_sets_are_refused_at_construction():
    from digital_twin.vm import DeploymentSet, make_cluster
    from tests.vm.conftest import TYPES

    def build(dset):
        return make_cluster("bad", TYPES, ["a"], np.full((1, 2), 44), np.full((1, 2), 184388.0), ["x"], np.array([1]),
                            np.array([0]), np.array([[4, 0]]), np.array([[8192.0, 0]]), deployment_sets=[dset])
    with pytest.raises(ValueError, match="granularity must be 'host' or 'rack', got 'zone'"):
        build(DeploymentSet("zone", np.array([0])))
    with pytest.raises(ValueError, match="member index 3 is not a VM of the cluster"):
        build(DeploymentSet("host", np.array([0, 3])))


def test_checkpoints_pickled_before_set_occupancy_still_load():
    """A cluster pickled by the previous version (its sets as a per-VM dict) rebuilds its set state on load."""
    import dataclasses
    import pickle

    from digital_twin.vm import DeploymentSet

    base = snapshot_from_document(tiny_document()).clusters[0]
    c = dataclasses.replace(base, deployment_sets=base.deployment_sets + [DeploymentSet("rack", np.array([1, 2]))])
    expected = c.feasible_destinations_all()
    c.movable_vms()
    state = c.__getstate__()
    new_keys = {"_rack_code", "_rack_code_l", "_set_index", "_set_members", "_vm_memb", "_has_sets", "_set_vms",
                "_p_vm", "_p_rack", "_p_set", "_p_start", "_multi", "_hp", "_rp", "_num_shapes", "_num_racks",
                "_num_host_sets", "_num_rack_sets", "_hp_sk", "_rp_sk", "_rp_vm", "_rp_set", "_rp_kh", "_rp_kr",
                "_p_shape", "_set_shape", "_occ_hp", "_occ_r", "_rack_crowded", "_vm_set_cell", "_rack_fit", "_nbf"}
    assert new_keys - {"_vm_set_cell"} <= set(state)  # that one exists only when no VM is in two sets
    old = {k: v for k, v in state.items() if k not in new_keys}
    old["_vm_sets"] = {m: [d for d in c.deployment_sets if m in d.members] for m in range(c.num_vms)}
    restored = pickle.loads(pickle.dumps(c))  # the current format
    legacy = object.__new__(type(c))
    legacy.__setstate__(old)
    for twin in (restored, legacy):
        np.testing.assert_array_equal(twin.feasible_destinations_all(), expected)
        np.testing.assert_array_equal(twin.movable_vms(), expected.any(axis=(1, 2)))


def test_checkpoints_pickled_before_the_compiled_verdict_cells_still_load():
    """A cluster pickled by the version before the verdict cells and the member lists (its set
    memberships as (rack?, index) array pairs, its host-set occupancy as counts) rebuilds them on
    load, mid-sequence, and goes on as one pickled now."""
    import pickle

    from digital_twin.vm.deployment_sets import production_like_snapshot

    c = production_like_snapshot(0).clusters[0].copy()
    rng = np.random.default_rng(0)
    for _ in range(6):
        vm = int(rng.choice(np.flatnonzero(c.movable_vms())))
        host, place = np.argwhere(c.feasible_destinations(vm))[0]
        c.migrate(vm, int(host), int(place))  # (the last one left unrefreshed)
    state = pickle.loads(pickle.dumps(c.__getstate__()))
    for key in ("_vm_cell", "_rp_table", "_member_start", "_member_vms"):
        del state[key]
    state["_vm_memb_arrays"] = {v: (np.array([r for r, _ in keys], dtype=bool), np.array([s for _, s in keys]))
                                for v, keys in state["_vm_memb"].items()}
    state["_vm_set_cell"] = np.zeros(c.num_vms, dtype=np.int64)  # (read by nothing now)
    state["_occ_h"] = c._host_set_occupancy(np.arange(c._num_host_sets)).T.astype(np.int8)  # (members per host, set)
    del state["_occ_hp"]
    old = object.__new__(type(c))
    old.__setstate__(state)
    now = pickle.loads(pickle.dumps(c))
    for twin in (old, now):
        np.testing.assert_array_equal(twin.movable_vms(), c.movable_vms())
        for vm in rng.choice(c.num_vms, 20, replace=False).tolist():
            np.testing.assert_array_equal(twin.feasible_destinations(vm), c.feasible_destinations(vm))
        out = np.zeros(c.num_vms, dtype=bool)
        vm = int(np.flatnonzero(twin.movable_vms())[0])
        host, place = np.argwhere(twin.feasible_destinations(vm))[0]
        _, count = twin.migrate_feasible_into(vm, int(host), int(place), out)
        np.testing.assert_array_equal(out, dataclasses.replace(twin).movable_vms())
        assert count == int(out.sum())
