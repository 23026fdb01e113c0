"""GPU pods in the CP-SAT fallback, the sequencing of its plans and preemption, against brute force and the twin.

The twin's GPU rule (:class:`digital_twin.pods.PodCluster`): a pod takes ``num_gpu`` distinct GPUs of
its node, each with at least ``gpu_milli`` free; a running pod keeps its GPUs unless re-placed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.pods import fallback_steps, preempt, replay, sequence, solve
from digital_twin.pods import GPU_FULL
from tests.pods.conftest import make_cluster


@st.composite
def gpu_clusters(draw):
    """2-3 nodes of 1-2 GPUs, 3-5 pods mixing CPU-only, share and whole-GPU requests where the GPUs, not
    CPU or memory, are what runs short; started on random fitting GPUs (not only the twin's choice)."""
    n, p = draw(st.integers(2, 3)), draw(st.integers(3, 5))
    nodes = [(draw(st.sampled_from([1000, 2000])), 2000) for _ in range(n)]
    pods = []
    for _ in range(p):
        k = draw(st.sampled_from([0, 1, 1, 1, 2]))
        share = {0: 0, 1: draw(st.sampled_from([200, 300, 500, 700, 1000])), 2: 1000}[k]
        pods.append((draw(st.sampled_from([100, 400])), 100, draw(st.integers(0, 2)), k, share))
    cluster = make_cluster(nodes, pods, gpus=[draw(st.integers(1, 2)) for _ in range(n)])
    for i in range(p):
        where = np.flatnonzero(cluster.fits(i))
        if len(where) and draw(st.booleans()):
            j = int(where[draw(st.integers(0, len(where) - 1))])
            fit = np.flatnonzero(cluster.gpu_free[j] >= cluster.pod_gpu_milli[i]).tolist()
            gpus = draw(st.permutations(fit))[:cluster.pod_num_gpu[i]]
            cluster.bind(i, j, sorted(gpus) if cluster.pod_num_gpu[i] else None)
    cluster.reset_counters()
    return cluster


def options(cluster, pod):
    """Every (node, GPUs) the pod could take in a target, Pending (-1, ()) first."""
    out = [(-1, ())]
    for j in range(cluster.num_nodes):
        k = int(cluster.pod_num_gpu[pod])
        out += [(j, g) for g in itertools.combinations(range(int(cluster.gpu_count[j])), k)]
    return out


def brute_force(cluster):
    """Over every target (node and GPUs per pod, vectorised over the targets): the best placed-per-tier
    tuple (cumulative, highest tier first), then the least disruption (evict 1; move, or other GPUs, 2)."""
    n, g_slots = cluster.num_nodes, cluster.gpu_free.shape[1]
    per_pod = [options(cluster, i) for i in range(cluster.num_pods)]
    combos = np.array(list(itertools.product(*[range(len(o)) for o in per_pod])), dtype=np.int64)   # (C, P)
    load = np.zeros((len(combos), 2 * n + n * g_slots))
    tiers = np.zeros((len(combos), len(cluster.tiers)), dtype=np.int64)
    cost = np.zeros(len(combos), dtype=np.int64)
    for i, opts in enumerate(per_pod):
        contrib = np.zeros((len(opts), load.shape[1]))
        for o, (j, gpus) in enumerate(opts):
            if j >= 0:
                contrib[o, j] += cluster.pod_cpu[i]
                contrib[o, n + j] += cluster.pod_memory[i]
                for g in gpus:
                    contrib[o, 2 * n + j * g_slots + g] += cluster.pod_gpu_milli[i]
        load += contrib[combos[:, i]]
        placed = combos[:, i] > 0
        tiers[:, cluster.tiers.index(int(cluster.pod_priority[i]))] += placed
        if cluster.pod_node[i] >= 0:
            stay = opts.index((int(cluster.pod_node[i]), tuple(cluster.pod_gpus[i])))
            cost += np.where(~placed, 1, np.where(combos[:, i] == stay, 0, 2))
    cap = np.concatenate([cluster.cpu_capacity, cluster.memory_capacity, np.where(cluster.gpu_free >= 0, GPU_FULL, 0).ravel()])
    ok = (load <= cap).all(axis=1)
    keys = [(tuple(np.cumsum(t).tolist()), -int(c)) for t, c in zip(tiers[ok], cost[ok])]
    return max(keys)


def check_plan(cluster, result):
    """The plan replays through the twin step by step and ends at the target, GPUs included."""
    end = replay(cluster, sequence(cluster, result.pod_node, result.pod_gpus))
    assert end.pod_node.tolist() == result.pod_node.tolist()
    assert [tuple(g) for g in end.pod_gpus] == [tuple(g) for g in result.pod_gpus]
    assert end.capacity_violations() == []
    return end


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=gpu_clusters())
def test_gpu_cpsat_is_optimal_against_brute_force(cluster):
    before = (cluster.pod_node.tolist(), list(cluster.pod_gpus), cluster.gpu_free.tolist())
    result = solve(cluster, time_limit_s=5.0)
    assert result.status == "OPTIMAL" and result.tiers_optimal
    placed, neg_cost = brute_force(cluster)
    assert tuple(np.cumsum(result.placed_by_tier).tolist()) == placed
    assert result.evictions + 2 * result.moves == -neg_cost == result.stages[-1].value
    assert [s.bound for s in result.stages[:-1]] == [float(v) for v in placed]
    check_plan(cluster, result)
    assert (cluster.pod_node.tolist(), list(cluster.pod_gpus), cluster.gpu_free.tolist()) == before


def test_whole_gpu_pod_gets_a_gpu_freed_on_its_own_node():
    # One node, 2 GPUs, a 500 share on each: the whole-GPU pod fits only if one share joins the other,
    # which the twin does as an eviction and a bind on the other GPU (it moves only between nodes).
    c = make_cluster([(8000, 8000)], [(1, 1, 0, 1, 500), (1, 1, 0, 1, 500), (1, 1, 5, 1, 1000)], gpus=[2])
    c.bind(0, 0, [0])
    c.bind(1, 0, [1])
    result = solve(c, 5.0)
    assert result.status == "OPTIMAL" and result.placed_by_tier == (1, 2)
    assert (result.evictions, result.moves) == (0, 1)
    steps = sequence(c, result.pod_node, result.pod_gpus)
    assert [s.kind for s in steps] == ["evict", "bind", "bind"] and steps[0].pod == steps[1].pod
    assert check_plan(c, result).gpu_free.tolist() == [[0, 0]]


def test_multi_gpu_pod_needs_empty_gpus_and_shares_pack_elsewhere():
    # n0 has 2 GPUs, n1 one; a 300 share runs on n0 GPU 0. The 2-GPU pod needs n0's GPUs both empty:
    # the share moves to n1 (beside the Pending 600 share) rather than being evicted.
    c = make_cluster([(4000, 4000), (4000, 4000)], [(1, 1, 0, 1, 300), (1, 1, 0, 1, 600), (1, 1, 5, 2, 1000)],
                     [0, -1, -1], gpus=[2, 1])
    result = solve(c, 5.0)
    assert result.status == "OPTIMAL" and result.placed_by_tier == (1, 2)
    assert result.pod_node.tolist() == [1, 1, 0] and result.pod_gpus == ((0,), (0,), (0, 1))
    assert (result.evictions, result.moves) == (0, 1)
    check_plan(c, result)


def test_pods_that_stay_keep_their_gpus():
    # Room for everyone: nothing moves, and the GPUs held are the target's.
    c = make_cluster([(4000, 4000)], [(1, 1, 0, 1, 250), (1, 1, 0, 1, 250), (1, 1, 1, 1, 400)], gpus=[2])
    c.bind(0, 0, [1])
    c.bind(1, 0, [0])
    result = solve(c, 5.0)
    assert result.placed_by_tier == (1, 2) and (result.evictions, result.moves) == (0, 0)
    assert result.pod_gpus[:2] == ((1,), (0,))
    check_plan(c, result)


def test_sequence_refuses_gpu_targets_it_cannot_replay():
    c = make_cluster([(4000, 4000), (4000, 4000)], [(1, 1, 0, 1, 600), (1, 1, 0, 1, 600)], [0, -1], gpus=[1, 1])
    with pytest.raises(ValueError, match="give target_gpus"):
        sequence(c, np.array([0, 1]))                      # where on n1 the Pending pod goes is not said
    with pytest.raises(ValueError, match=r"overfills node n0 GPU 0: 1200 thousandths > 1000"):
        sequence(c, np.array([0, 0]), [(0,), (0,)])
    with pytest.raises(ValueError, match="needs 1 distinct"):
        sequence(c, np.array([0, 1]), [(0,), (1,)])         # n1 has GPU 0 only
    steps = sequence(c, np.array([0, 1]), [(0,), (0,)])
    assert steps == [("bind", 1, 1, (0,))] and c.pod_node.tolist() == [0, -1]


def test_preemption_frees_a_gpu():
    # A whole-GPU preemptor. n0: its one GPU holds a high-priority 300 share, so evicting the low CPU pod
    # there frees no GPU (not a candidate). n1: a low 600 share holds the GPU (the victim); a low CPU-only
    # pod beside it is reprieved. n2: two GPUs, high 500 shares on both: 1000 free in all, on no one GPU.
    c = make_cluster([(4000, 4000)] * 3,
                     [(100, 10, 9, 1, 300), (3800, 10, 0), (100, 10, 0, 1, 600), (100, 10, 0),
                      (100, 10, 9, 1, 500), (100, 10, 9, 1, 500), (100, 10, 5, 1, 1000)],
                     [0, 0, 1, 1, -1, -1, -1], gpus=[1, 1, 2])
    c.bind(4, 2, [0])
    c.bind(5, 2, [1])
    c.reset_counters()
    assert preempt(c, 6) == 1
    assert c.pod_node.tolist() == [0, 0, -1, 1, 2, 2, 1] and c.pod_gpus[6] == (0,)
    assert c.evictions == 1 and c.capacity_violations() == []
    stuck = make_cluster([(4000, 4000)], [(100, 10, 9, 1, 500), (100, 10, 0, 1, 500), (100, 10, 5, 1, 1000)],
                         [0, 0, -1], gpus=[1])
    assert preempt(stuck, 2) is None and stuck.pod_node.tolist() == [0, 0, -1]


def test_fallback_steps_carry_the_gpus_to_the_big_cluster():
    # Pod 1 is not live (not created yet); the live pods are re-placed and the steps, with their GPUs,
    # apply to the big cluster through the twin's checks.
    c = make_cluster([(8000, 8000)], [(1, 1, 0, 1, 500), (1, 1, 0, 1, 900), (1, 1, 0, 1, 500), (1, 1, 5, 1, 1000)],
                     gpus=[2])
    c.bind(0, 0, [0])
    c.bind(2, 0, [1])
    steps, result = fallback_steps(c, np.array([0, 2, 3]), 5.0)
    assert result.placed_by_tier == (1, 2)
    for s in steps:
        (c.evict(s.pod) if s.kind == "evict" else c.bind(s.pod, s.node, s.gpus))
    assert c.pod_node.tolist() == [0, -1, 0, 0] and c.gpu_free[0].tolist() == [0, 0] and c.capacity_violations() == []
