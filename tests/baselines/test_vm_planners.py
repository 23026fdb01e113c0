"""The simple VM-rescheduling planners: common result, replay, budget, input left untouched."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from agents.baselines.vm_planners import VM_PLANNERS, PlanResult, ffd_plan, greedy_plan, random_plan, replay_plan
from digital_twin.vm import DeploymentSet, InfeasibleMigrationError, Snapshot, VMType, load_snapshot, make_cluster

DATA = Path(__file__).resolve().parents[2] / "data" / "vmr2l_snapshots"
SMALL_REAL = DATA / "reset_vm_pm_id_clear2.json"
TYPES = [VMType("t2", 2, 2048.0, 1), VMType("t4", 4, 4096.0, 1), VMType("t8", 8, 8192.0, 1),
         VMType("t16", 16, 16384.0, 1), VMType("t16s", 16, 16384.0, 2)]


def load_quietly(path: Path) -> Snapshot:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_snapshot(path)


@pytest.fixture(scope="module")
def real_snapshot() -> Snapshot:
    return load_quietly(SMALL_REAL)


def synthetic_cluster(seed: int, num_hosts: int = 12, num_vms: int = 60, name: str = "synthetic",
                      anti_affinity: bool = True, frozen: float = 0.1):
    """A random packed cluster of 24-vCPU NUMA nodes (every migration rule in play)."""
    rng = np.random.default_rng(seed)
    cpu_total = np.full((num_hosts, 2), 24, dtype=np.int64)
    mem_total = cpu_total * 1024.0
    free_cpu, free_mem = cpu_total.copy(), mem_total.copy()
    vm_type, vm_host, node_cpu, node_mem = [], [], [], []
    for _ in range(num_vms * 3):
        if len(vm_type) == num_vms:
            break
        t = int(rng.integers(len(TYPES)))
        h = int(rng.integers(num_hosts))
        vt = TYPES[t]
        if vt.numa == 2:
            cpu = np.array([vt.request_cpu // 2] * 2)
        else:
            cpu = np.array([vt.request_cpu, 0])[:: 1 if rng.random() < 0.5 else -1]
        mem = cpu * 1024.0
        if (free_cpu[h] >= cpu).all() and (free_mem[h] >= mem).all():
            free_cpu[h] -= cpu
            free_mem[h] -= mem
            vm_type.append(t)
            vm_host.append(h)
            node_cpu.append(cpu)
            node_mem.append(mem)
    num_vms = len(vm_type)
    vm_host = np.array(vm_host)
    allow = rng.random(num_vms) >= frozen
    sets = []
    if anti_affinity:
        _, first = np.unique(vm_host, return_index=True)
        sets.append(DeploymentSet("host", np.sort(first[:4])))
    return make_cluster(
        name, TYPES, [f"pm_{i}" for i in range(num_hosts)], cpu_total, mem_total, [f"vm_{i}" for i in range(num_vms)],
        np.array(vm_type), vm_host, np.array(node_cpu), np.array(node_mem),
        host_rack=np.arange(num_hosts) % 3, vm_allow_migration=allow, deployment_sets=sets,
    )


def synthetic_snapshot(seed: int = 0) -> Snapshot:
    return Snapshot.from_clusters([synthetic_cluster(seed, name="a"), synthetic_cluster(seed + 100, num_hosts=6,
                                                                                       num_vms=30, name="b")])


def state(snapshot: Snapshot) -> list:
    return [(c.vm_host.copy(), c.vm_placement.copy(), c.free_cpu.copy(), c.free_mem.copy(), len(c.history),
             c.fragment_sums()) for c in snapshot.clusters]


def assert_same(a: list, b: list) -> None:
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def check_result(result: PlanResult, snapshot: Snapshot, budget: int) -> None:
    """Replayable, within budget, claim == twin replay, no frozen VM moved."""
    assert isinstance(result, PlanResult)
    assert result.num_moves <= budget
    after = replay_plan(snapshot, result.moves)
    assert after.fragment_rate() == result.fr_after == result.claimed_fr
    assert result.fr_before == snapshot.fragment_rate()
    for ci, vm, _, _ in result.moves:
        assert snapshot.clusters[ci].vm_allow_migration[vm]
    for c in after.clusters:
        assert not c.capacity_violations()
        for dset in c.deployment_sets:  # the synthetic sets start spread out, so they stay that way
            assert len(set(c.vm_host[dset.members].tolist())) == len(dset.members)


@pytest.mark.parametrize("name", ["random", "ffd", "greedy"])
@pytest.mark.parametrize("budget", [0, 3, 25])
def test_simple_planners_replay_and_respect_budget(name, budget):
    snap = synthetic_snapshot(1)
    before = state(snap)
    result = VM_PLANNERS[name](snap, budget, seed=2)
    assert_same(before, state(snap))
    check_result(result, snap, budget)
    assert result.planner == name and result.bound_fr is None
    if name != "random":
        assert result.fr_after <= result.fr_before
    if budget == 0:
        assert result.moves == [] and result.fr_after == result.fr_before


def test_random_plan_is_seeded_and_uses_its_budget():
    snap = synthetic_snapshot(2)
    a, b = random_plan(snap, 10, seed=5), random_plan(snap, 10, seed=5)
    assert a.moves == b.moves and len(a.moves) == 10
    assert random_plan(snap, 10, seed=6).moves != a.moves


def test_ffd_moves_each_vm_once_largest_first():
    snap = synthetic_snapshot(3)
    result = ffd_plan(snap, 40)
    vms = [(ci, vm) for ci, vm, _, _ in result.moves]
    assert len(vms) == len(set(vms))
    # Each migration lowered FR when made.
    fr = [snap.fragment_rate()]
    work = snap.copy()
    for ci, vm, h, p in result.moves:
        work.clusters[ci].migrate(vm, h, p)
        fr.append(work.fragment_rate())
    assert all(b < a for a, b in zip(fr, fr[1:]))


def test_greedy_wraps_the_twin_greedy_on_the_real_snapshot(real_snapshot):
    before = state(real_snapshot)
    result = greedy_plan(real_snapshot, 50)
    assert_same(before, state(real_snapshot))
    assert result.num_moves == 15
    assert round(result.fr_before, 4) == 0.9770 and round(result.fr_after, 4) == 0.7934
    check_result(result, real_snapshot, 50)


def test_replay_refuses_an_infeasible_plan():
    snap = synthetic_snapshot(4)
    c = snap.clusters[0]
    vm = int(np.flatnonzero(c.vm_allow_migration)[0])
    with pytest.raises(InfeasibleMigrationError):
        replay_plan(snap, [(0, vm, int(c.vm_host[vm]), 0)])
    assert_same(state(snap), state(synthetic_snapshot(4)))


def test_registry_names_and_signature():
    assert set(VM_PLANNERS) == {"random", "ffd", "greedy", "cpsat", "cpsat_lns"}
    snap = synthetic_snapshot(5)
    for name in ("cpsat", "cpsat_lns"):
        result = VM_PLANNERS[name](snap, 4, time_limit_s=2.0, seed=0)
        check_result(result, snap, 4)
        assert result.planner == name
