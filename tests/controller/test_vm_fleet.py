"""controller.vm: the controller's own VM fleet against the twin and the env it must reproduce.

The fleet's observation and mask must be the env's bit for bit (an exported policy reads them), so
the env and a fleet play the same random episodes side by side and every observation is compared;
with anti-affinity sets of both granularities, inactive hosts and frozen VMs too. The loader must
read the files the twin reads, to the same arrays and, for a malformed file, the same message.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import envs.vm_rescheduling as env_module
from controller.vm import fleet as fleet_module
from controller.vm.fleet import Fleet
from controller.vm.snapshot_file import FleetFileError, load_fleet
from digital_twin.vm.cluster import DeploymentSet
from digital_twin.vm.deployment_sets import with_deployment_sets
from digital_twin.vm.generators import random_cluster
from digital_twin.vm.snapshot import GeneralRequirement, Snapshot, SnapshotError, load_snapshot, save_snapshot
from envs.vm_rescheduling import PHASE_PICK_VM, VMReschedulingEnv
from envs.vm_sources import REAL_SNAPSHOTS
from tests.vm.conftest import TYPES, tiny_document

SMALL = REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json"  # 236 + 43 hosts, 1,934 + 155 VMs
BIG = REAL_SNAPSHOTS / "reset_vm_pm_id_clear_big2.json"  # 352 + 824 hosts, 504 + 4,042 VMs
REAL = [SMALL, BIG]

ROOT = Path(__file__).resolve().parents[2]


def quiet_load(path) -> Snapshot:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files' memory ledger disagreements (reported, expected)
        return load_snapshot(path)


_SNAPSHOTS: dict[str, Snapshot] = {}


def real_snapshot(path: Path) -> Snapshot:
    """A loaded real snapshot, parsed once per run (callers copy before changing it)."""
    if path.name not in _SNAPSHOTS:
        _SNAPSHOTS[path.name] = quiet_load(path)
    return _SNAPSHOTS[path.name]


def fleet_from_snapshot(snapshot: Snapshot) -> Fleet:
    """The test's own bridge from the twin's clusters to a fleet (the controller has no twin to do it)."""
    clusters = snapshot.clusters
    host_offset = np.cumsum([0] + [c.num_hosts for c in clusters])
    vm_offset = np.cumsum([0] + [c.num_vms for c in clusters])
    cat = lambda name: np.concatenate([getattr(c, name) for c in clusters])  # noqa: E731
    return Fleet(
        cluster_names=[c.name for c in clusters],
        host_ids=[h for c in clusters for h in c.host_ids],
        host_cluster=np.repeat(np.arange(len(clusters)), [c.num_hosts for c in clusters]),
        numa_cpu_total=cat("numa_cpu_total"), numa_mem_total=cat("numa_mem_total"),
        host_active=cat("host_active"), host_rack=cat("host_rack"),
        vm_ids=[v for c in clusters for v in c.vm_ids],
        vm_cluster=np.repeat(np.arange(len(clusters)), [c.num_vms for c in clusters]),
        vm_host=np.concatenate([c.vm_host + host_offset[i] for i, c in enumerate(clusters)]),
        vm_placement=cat("vm_placement"), vm_span=cat("vm_span"),
        vm_cpu=cat("vm_cpu").reshape(-1, 2), vm_mem=cat("vm_mem").reshape(-1, 2),
        vm_allow_migration=cat("vm_allow_migration"),
        deployment_sets=[(d.granularity, np.asarray(d.members) + vm_offset[i])
                         for i, c in enumerate(clusters) for d in c.deployment_sets],
        budget=snapshot.requirement.maximum_migration,
    )


def assert_fleet_is_snapshot(fleet: Fleet, snapshot: Snapshot) -> None:
    """Every array of the fleet equals the twin's, cluster by cluster concatenated."""
    clusters = snapshot.clusters
    cat = lambda name: np.concatenate([getattr(c, name) for c in clusters])  # noqa: E731
    host_offset = np.cumsum([0] + [c.num_hosts for c in clusters])
    vm_offset = np.cumsum([0] + [c.num_vms for c in clusters])
    assert fleet.cluster_names == [c.name for c in clusters]
    assert fleet.host_ids == [h for c in clusters for h in c.host_ids]
    assert fleet.vm_ids == [v for c in clusters for v in c.vm_ids]
    np.testing.assert_array_equal(fleet.host_cluster, np.repeat(np.arange(len(clusters)), [c.num_hosts for c in clusters]))
    np.testing.assert_array_equal(fleet.vm_cluster, np.repeat(np.arange(len(clusters)), [c.num_vms for c in clusters]))
    np.testing.assert_array_equal(fleet.vm_host, np.concatenate([c.vm_host + host_offset[i] for i, c in enumerate(clusters)]))
    for name in ("numa_cpu_total", "numa_mem_total", "host_active", "host_rack", "vm_placement", "vm_span",
                 "vm_cpu", "vm_mem", "vm_allow_migration", "free_cpu", "free_mem"):
        got, want = getattr(fleet, name), cat(name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    want_sets = [(d.granularity, np.unique(d.members) + vm_offset[i]) for i, c in enumerate(clusters) for d in c.deployment_sets]
    assert [g for g, _ in fleet.deployment_sets] == [g for g, _ in want_sets]
    for (_, got), (_, want) in zip(fleet.deployment_sets, want_sets):
        np.testing.assert_array_equal(got, want)
    assert fleet.budget == snapshot.requirement.maximum_migration
    assert fleet.fragment_rates() == (snapshot.fragment_rate(16), snapshot.fragment_rate(8), snapshot.fragment_rate(32))


def assert_same_observation(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def capacity_ok(fleet: Fleet, vm: int) -> np.ndarray:
    """(H, 2) destinations of ``vm`` that capacity, cluster, activity and migratability allow (sets ignored)."""
    cpu, mem = fleet.vm_cpu[vm], fleet.vm_mem[vm]
    if fleet.vm_span[vm] == 1:
        ok = (fleet.free_cpu >= cpu[0]) & (fleet.free_mem >= mem[0])
    else:
        ok = np.zeros((fleet.num_hosts, 2), bool)
        ok[:, 0] = (fleet.free_cpu >= cpu).all(axis=1) & (fleet.free_mem >= mem).all(axis=1)
    ok &= ((fleet.host_cluster == fleet.vm_cluster[vm]) & fleet.host_active)[:, None]
    ok[fleet.vm_host[vm]] = False
    return ok & bool(fleet.vm_allow_migration[vm])


def play_side_by_side(snapshot: Snapshot, fleet: Fleet, budget: int, seed: int) -> dict[str, int]:
    """Random valid actions on the env (padded to the fleet), mirrored on the fleet; every observation compared.

    Returns counts of what the episode exercised: migrations, destinations closed by sets, ...
    """
    env = VMReschedulingEnv(max_hosts=fleet.num_hosts, max_vms=fleet.num_vms, budget=budget)
    obs, info = env.reset(options={"snapshot": snapshot})
    rng = np.random.default_rng(seed)
    seen = {"migrations": 0, "set_blocked": 0, "set_unmovable": 0}
    selected, used = -1, 0
    assert_same_observation(fleet.observation(selected, budget, used), obs)
    terminated = False
    while not terminated:
        assert fleet.fragment_rates() == (info["fragment_rate"], info["fragment_rate_8"], info["fragment_rate_32"])
        valid = np.flatnonzero(env.action_masks())
        np.testing.assert_array_equal(fleet.action_mask(selected), env.action_masks())
        if env.phase == PHASE_PICK_VM:
            movable = fleet.movable()
            capacity_movable = np.array([capacity_ok(fleet, v).any() for v in range(fleet.num_vms)]) \
                if fleet.deployment_sets and used == 0 else movable
            seen["set_unmovable"] += int((capacity_movable & ~movable).sum())
            moves = valid[valid != env.stop_action]  # stop only when nothing else is left
            action = int(rng.choice(moves)) if len(moves) else env.stop_action
        else:
            action = int(rng.choice(valid))
        obs, reward, terminated, truncated, info = env.step(action)
        if selected < 0:
            if action != env.stop_action:
                selected = action
                dest = fleet.feasible_destinations(selected)
                blocked = capacity_ok(fleet, selected) & ~dest
                for host, placement in np.argwhere(blocked):
                    assert fleet.check_migration(selected, int(host), int(placement)).startswith("anti-affinity"), \
                        (selected, host, placement)
                seen["set_blocked"] += int(blocked.sum())
        else:
            host, placement = divmod(action, 2)
            # The env reports the move in the cluster's own indices: the same move.
            c, local_vm, local_host, local_placement = info["migration"]
            first_host, first_vm = np.searchsorted(fleet.host_cluster, c), np.searchsorted(fleet.vm_cluster, c)
            assert (fleet.vm_cluster[selected], local_vm, local_host, local_placement) == \
                (c, selected - first_vm, host - first_host, placement)
            fleet.migrate(selected, host, placement)
            selected, used = -1, used + 1
            seen["migrations"] += 1
        assert_same_observation(fleet.observation(selected, budget, used), obs)
    return seen


# ---------------------------------------------------------------------- constants and imports
def test_constants_are_the_envs():
    for name in ("VM_FEATURES", "HOST_FEATURES", "GLOBAL_FEATURES", "PHASE_PICK_VM", "PHASE_PICK_DESTINATION"):
        assert getattr(fleet_module, name) == getattr(env_module, name), name


# ---------------------------------------------------------------------- loading
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_load_fleet_gives_the_twins_arrays(path):
    fleet = load_fleet(path)
    assert_fleet_is_snapshot(fleet, real_snapshot(path))
    np.testing.assert_array_equal(fleet.movable(), np.concatenate([c.movable_vms() for c in real_snapshot(path).clusters]))


def snapshot_with_sets(seed: int = 0) -> Snapshot:
    """The small real snapshot with anti-affinity sets of both granularities, inactive hosts and frozen VMs.

    The generated sets are disjoint and satisfied; added on top: a host set with one VM per host of
    cluster 2 (its members can go nowhere), a rack set with one VM per rack (each may move within
    its own rack only), and an already violated rack set; their members are often in a generated
    set too, so VMs in several sets are exercised as well.
    """
    rng = np.random.default_rng(seed)
    base = real_snapshot(SMALL)
    shapes = [dict(num_host_sets=40, num_rack_sets=6, hosts_per_rack=8), dict(num_host_sets=8, num_rack_sets=3, hosts_per_rack=5)]
    clusters = []
    for c, kwargs in zip(base.clusters, shapes):
        c = with_deployment_sets(c, rng, member_fraction=0.8, **kwargs)
        status = list(c.host_status)
        for h in rng.choice(c.num_hosts, size=max(1, c.num_hosts // 20), replace=False):
            status[h] = "OFFLINE"
        allow = c.vm_allow_migration & (rng.random(c.num_vms) > 0.05)
        racks = c.host_rack
        one_per_host = np.array([rng.choice(np.flatnonzero(c.vm_host == h)) for h in range(c.num_hosts)
                                 if (c.vm_host == h).any()])
        one_per_rack = np.array([rng.choice(np.flatnonzero(racks[c.vm_host] == r)) for r in np.unique(racks[c.vm_host])])
        crowded_rack = np.flatnonzero(racks[c.vm_host] == racks[c.vm_host[0]])[:2]
        extra = [DeploymentSet("rack", one_per_rack), DeploymentSet("rack", np.r_[crowded_rack, one_per_rack[-1]])]
        if c.name == "cluster2":
            extra.insert(0, DeploymentSet("host", one_per_host))
        clusters.append(dataclasses.replace(c, host_status=status, vm_allow_migration=allow,
                                            deployment_sets=c.deployment_sets + extra, meta={}))
    return Snapshot.from_clusters(clusters, GeneralRequirement(maximum_migration=30))


def test_load_fleet_reads_sets_inactive_hosts_and_frozen_vms(tmp_path):
    snapshot = snapshot_with_sets()
    path = tmp_path / "with_sets.json"
    save_snapshot(snapshot, path)
    fleet = load_fleet(path)
    assert_fleet_is_snapshot(fleet, quiet_load(path))
    assert_fleet_is_snapshot(fleet, snapshot)  # the in-memory original, before its trip through the file
    assert (~fleet.host_active).sum() > 0 and (~fleet.vm_allow_migration).sum() > 0
    assert {g for g, _ in fleet.deployment_sets} == {"host", "rack"}


def test_string_and_missing_rack_ids_are_coded_as_the_twin_codes_them(tmp_path):
    doc = tiny_document()
    hosts = doc["cluster_list"][0]["host_info"]
    hosts[0]["rack_id"], hosts[1]["rack_id"] = "r-b", "r-a"
    del hosts[2]["rack_id"]
    path = tmp_path / "racks.json"
    path.write_text(json.dumps(doc))
    assert_fleet_is_snapshot(load_fleet(path), quiet_load(path))


def mutations():
    """(name, change to the tiny document) pairs, each making it malformed."""
    def unknown_host(d):
        d["cluster_list"][0]["vm_instance"][1]["host_id"] = "pm_9"

    def missing(d):
        del d["cluster_list"][0]["host_info"][1]["numa"][0]["total_cpu"]

    def wrong_type(d):
        d["cluster_list"][0]["vm_instance"][2]["numa"][1]["cpu"] = "eight"

    def duplicate(d):
        d["cluster_list"][0]["vm_instance"][2]["instance_id"] = "vm_0"

    def over_capacity(d):
        d["cluster_list"][0]["vm_instance"][0]["numa"][0]["cpu"] = 60

    def unknown_member(d):
        d["cluster_list"][0]["other_requirement"]["deployment_set"][0]["data"].append("vm_7")

    def bad_granularity(d):
        d["cluster_list"][0]["other_requirement"]["deployment_set"][0]["granularity"] = "zone"

    def zero_budget(d):
        d["general_requirement"]["maximum_migration"] = 0

    return [(f.__name__, f) for f in (unknown_host, missing, wrong_type, duplicate, over_capacity,
                                      unknown_member, bad_granularity, zero_budget)]


@pytest.mark.parametrize("name,mutate", mutations(), ids=[n for n, _ in mutations()])
def test_malformed_files_fail_in_one_line_as_the_twin_does(tmp_path, name, mutate):
    doc = tiny_document()
    mutate(doc)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FleetFileError) as ours:
        load_fleet(path)
    with pytest.raises(SnapshotError) as twins:
        quiet_load(path)
    message = str(ours.value)
    assert message == str(twins.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_unknown_host_and_truncated_file_errors_name_file_and_place(tmp_path):
    doc = tiny_document()
    doc["cluster_list"][0]["vm_instance"][1]["host_id"] = "pm_9"
    path = tmp_path / "unknown_host.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unknown_host\.json: cluster_list\[0\]\.vm_instance\[1\]\.host_id: unknown host 'pm_9'"):
        load_fleet(path)
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(SMALL.read_bytes()[:100_000])
    with pytest.raises(ValueError) as err:
        load_fleet(truncated)
    assert str(err.value).startswith(f"{truncated}: line ") and "invalid JSON" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot read the file"):
        load_fleet(tmp_path / "missing.json")


def test_tiny_document_loads_to_the_twins_arrays(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_document()))
    fleet = load_fleet(path)
    assert_fleet_is_snapshot(fleet, quiet_load(path))
    assert fleet.budget == 10 and fleet.vm_span.tolist() == [1, 1, 2] and fleet.vm_placement.tolist() == [0, 1, 0]


# ---------------------------------------------------------------------- construction checks
def test_fleet_refuses_bad_fields_naming_them():
    good = fleet_from_snapshot(real_snapshot(SMALL))
    fields = {f.name: getattr(good, f.name) for f in dataclasses.fields(Fleet)}
    cases = [
        ("vm_cpu", dict(vm_cpu=good.vm_cpu[:, :1])),
        ("vm_host", dict(vm_host=np.where(np.arange(good.num_vms) == 0, good.num_hosts - 1, good.vm_host))),
        ("vm_placement", dict(vm_placement=np.where(good.vm_span == 2, 1, good.vm_placement))),
        ("host_cluster", dict(host_cluster=good.host_cluster[::-1])),
        ("vm_host", dict(numa_cpu_total=np.zeros_like(good.numa_cpu_total))),  # everything over capacity
        ("deployment_sets[0]", dict(deployment_sets=[("host", np.array([0, good.num_vms - 1]))])),  # two clusters
        ("deployment_sets[0]", dict(deployment_sets=[("zone", np.array([0, 1]))])),
        ("budget", dict(budget=0)),
        ("host_ids", dict(host_ids=[good.host_ids[0]] * good.num_hosts)),
    ]
    for name, change in cases:
        with pytest.raises(ValueError, match="^" + re.escape(name)):
            Fleet(**{**fields, **change})


# ---------------------------------------------------------------------- trajectory equivalence with the env
@pytest.mark.parametrize("path,budget", [(SMALL, 40), (BIG, 25)], ids=["clear2", "clear_big2"])
def test_random_episode_matches_the_env_on_real_snapshots(path, budget):
    fleet = load_fleet(path)
    seen = play_side_by_side(real_snapshot(path), fleet, budget, seed=1)
    assert seen["migrations"] == budget


@pytest.mark.parametrize("seed", [0, 1])
def test_random_episode_matches_the_env_with_sets(tmp_path, seed):
    snapshot = snapshot_with_sets(seed)
    path = tmp_path / "sets.json"
    save_snapshot(snapshot, path)
    fleet = load_fleet(path)
    single = [len(members) for _, members in fleet.deployment_sets]
    assert sum(single) > len(np.unique(np.concatenate([m for _, m in fleet.deployment_sets]))), "some VM in two sets"
    seen = play_side_by_side(snapshot, fleet, budget=30, seed=seed)
    assert seen["migrations"] == 30
    # The sets mattered: destinations closed by them in phase 1, VMs they leave nowhere to go in phase 0.
    assert seen["set_blocked"] > 50, seen
    assert seen["set_unmovable"] > 10, seen


def random_snapshot(seed: int, hosts: tuple[int, ...]) -> Snapshot:
    rng = np.random.default_rng(seed)
    clusters = [
        random_cluster(int(rng.integers(2**32)), n, int(rng.integers(0, 5 * n)), name=f"c{i}", vm_types=TYPES,
                       node_cpu=(16, 24, 44), mem_per_cpu=4096.0, inactive=0.25, split=0.5, frozen=0.25,
                       anti_affinity=0.5, rack_anti_affinity=0.5)
        for i, n in enumerate(hosts)
    ]
    return Snapshot.from_clusters(clusters, GeneralRequirement(maximum_migration=8))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), hosts=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_random_small_fleets_match_the_env(seed, hosts):
    snapshot = random_snapshot(seed, tuple(hosts))
    fleet = fleet_from_snapshot(snapshot)
    assert_fleet_is_snapshot(fleet, snapshot)
    assume(fleet.num_vms > 0)  # the env pads to at least one VM
    play_side_by_side(snapshot, fleet, budget=8, seed=seed)


# ---------------------------------------------------------------------- migrations: refusals and feasibility
_FLEET: list[Fleet] = []


def fleet_with_sets() -> Fleet:
    if not _FLEET:
        _FLEET.append(fleet_from_snapshot(snapshot_with_sets(3)))
    return _FLEET[0]


def wander(fleet: Fleet, rng: np.random.Generator, steps: int) -> Fleet:
    """A copy of ``fleet`` after ``steps`` random feasible migrations (the original is untouched)."""
    fleet = fleet.copy()
    for _ in range(steps):
        vm = int(rng.choice(np.flatnonzero(fleet.movable())))
        host, placement = rng.choice(np.argwhere(fleet.feasible_destinations(vm)))
        fleet.migrate(vm, int(host), int(placement))
    return fleet


def state(fleet: Fleet) -> dict[str, np.ndarray]:
    arrays = {name: getattr(fleet, name).copy() for name in ("vm_host", "vm_placement", "free_cpu", "free_mem")}
    arrays |= {f"obs.{k}": v for k, v in fleet.observation(-1, 10, 0).items()}
    return arrays


triples = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 6), st.integers(0, 2088), st.integers(0, 278),
                    st.sampled_from([0, 1]), st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(triples)
def test_feasible_destinations_agree_with_check_migration(draw):
    seed, steps, vm, host, placement, near = draw
    fleet = wander(fleet_with_sets(), np.random.default_rng(seed), steps)
    if near:  # a host of the VM's own cluster, where the interesting refusals are
        hosts = np.flatnonzero(fleet.host_cluster == fleet.vm_cluster[vm])
        host = int(hosts[host % len(hosts)])
    feasible = bool(fleet.feasible_destinations(vm)[host, placement])
    reason = fleet.check_migration(vm, host, placement)
    assert feasible == (reason is None), reason
    assert fleet.movable()[vm] == fleet.feasible_destinations(vm).any()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(triples)
def test_refused_migration_raises_and_changes_nothing(draw):
    seed, steps, vm, host, placement, near = draw
    fleet = wander(fleet_with_sets(), np.random.default_rng(seed), steps)
    if near:
        hosts = np.flatnonzero(fleet.host_cluster == fleet.vm_cluster[vm])
        host = int(hosts[host % len(hosts)])
    reason = fleet.check_migration(vm, host, placement)
    assume(reason is not None)
    before = state(fleet)
    with pytest.raises(ValueError, match="cannot migrate: ") as err:
        fleet.migrate(vm, host, placement)
    assert reason in str(err.value)
    assert fleet.vm_ids[vm] in reason or "index" in reason
    after = state(fleet)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_copies_are_independent():
    fleet = fleet_with_sets()
    before = state(fleet)
    moved = wander(fleet, np.random.default_rng(0), 5)
    assert not np.array_equal(moved.vm_host, fleet.vm_host)
    for key, value in state(fleet).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_observation_refuses_bad_arguments():
    fleet = fleet_with_sets()
    for selected, budget, used in ((fleet.num_vms, 10, 0), (-2, 10, 0), (0, 0, 0), (0, 10, 11)):
        with pytest.raises(ValueError):
            fleet.observation(selected, budget, used)
