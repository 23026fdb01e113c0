"""The CP-SAT fallback against brute force on tiny clusters, its statuses, its first-fit completion of stages the
window leaves unsolved, and the sequencing of its plans."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from agents.pods import queue_order, replay, sequence, solve
from agents.pods import cpsat
from agents.pods.cpsat import PAPER_TIME_SPLIT, PaperClock, complete
from digital_twin.pods import InfeasiblePodChangeError
from tests.pods.conftest import clusters, make_cluster
from tests.pods.test_gpu_cpsat import brute_force as gpu_brute_force


def brute_force(cluster):
    """Every placement: the best placed-per-tier tuple (cumulative, highest tier first), then the least disruption."""
    best = None
    for target in itertools.product(range(-1, cluster.num_nodes), repeat=cluster.num_pods):
        t = np.array(target)
        on = t >= 0
        cpu = np.bincount(t[on], weights=cluster.pod_cpu[on], minlength=cluster.num_nodes)
        mem = np.bincount(t[on], weights=cluster.pod_memory[on], minlength=cluster.num_nodes)
        if (cpu > cluster.cpu_capacity).any() or (mem > cluster.memory_capacity).any():
            continue
        run = cluster.pod_node >= 0
        cost = int((run & ~on).sum() + 2 * (run & on & (t != cluster.pod_node)).sum())
        key = (tuple(np.cumsum(cluster.placed_by_tier(t)).tolist()), -cost)
        best = key if best is None or key > best else best
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=3, max_pods=5, gpus=False))
def test_cpsat_is_optimal_against_brute_force(cluster):
    result = solve(cluster, time_limit_s=5.0)
    assert result.status == "OPTIMAL" and result.tiers_optimal
    placed, neg_cost = brute_force(cluster)
    assert tuple(np.cumsum(result.placed_by_tier).tolist()) == placed
    assert result.evictions + 2 * result.moves == -neg_cost
    assert [s.bound for s in result.stages[:-1]] == [float(v) for v in placed]
    end = replay(cluster, sequence(cluster, result.pod_node))
    assert end.pod_node.tolist() == result.pod_node.tolist() and end.capacity_violations() == []


def test_cpsat_fixes_fragmentation_the_default_left():
    # Two nodes of 1000 m; 600 m and 500 m running apart leave the 800 m high-priority pod and a 400 m
    # one Pending. Best: the 800 m pod on n1 in place of the 500 m one (evicted, disruption 1) and the
    # 400 m pod beside the 600 m one (or the same with the two swapped): 1 high and 2 low pods placed.
    c = make_cluster([(1000, 1000), (1000, 1000)], [(600, 10, 0), (500, 10, 0), (400, 10, 0), (800, 10, 9)], [0, 1, -1, -1])
    result = solve(c, 5.0)
    assert result.status == "OPTIMAL" and result.placed_by_tier == (1, 2)
    assert (result.evictions, result.moves) == (1, 0)
    steps = sequence(c, result.pod_node)
    assert replay(c, steps).placed_by_tier() == (1, 2)
    assert c.pod_node.tolist() == [0, 1, -1, -1]       # solve and sequence leave the cluster alone


def test_sequencing_breaks_a_cycle_of_moves():
    # Each node full with one pod; the target swaps them: no move fits until one pod is evicted.
    c = make_cluster([(1000, 1000), (1000, 1000)], [(1000, 10, 0), (1000, 10, 1)], [0, 1])
    steps = sequence(c, np.array([1, 0]))
    assert [s.kind for s in steps] == ["evict", "move", "bind"] and steps[0].pod == 0
    assert replay(c, steps).pod_node.tolist() == [1, 0]
    with pytest.raises(ValueError, match="overfills node n0"):
        sequence(c, np.array([0, 0]))
    with pytest.raises(InfeasiblePodChangeError):
        replay(c, [steps[1]])                              # the move alone is refused


def test_refuses_bad_windows():
    with pytest.raises(ValueError, match="time limit must be > 0"):
        solve(make_cluster([(1000, 1000)], [(1, 1, 0)]), 0)


def test_a_tiny_window_reports_what_it_proved():
    c = make_cluster([(1000, 1000)] * 2, [(300, 300, p % 3) for p in range(8)])
    result = solve(c, 1e-4)                                 # the window ends while the model is built
    assert result.status in ("UNKNOWN", "FEASIBLE")
    assert all(s.status in ("NOT_RUN", "UNKNOWN", "OPTIMAL", "FEASIBLE") for s in result.stages)
    assert sum(result.placed_by_tier) == 6                   # 3 per node, whatever the window reached
    if result.status == "UNKNOWN":                           # nothing solved: the Pending pods bound first-fit
        assert result.pod_node.tolist() == first_fit(c).pod_node.tolist() and not result.tiers_optimal


def first_fit(cluster):
    """The reference completion through the twin: each Pending pod, higher priority then earlier creation
    first, bound to the lowest-index node where it fits, on the GPUs the twin chooses."""
    work = cluster.copy()
    for pod in queue_order(work).tolist():
        where = np.flatnonzero(work.fits(pod))
        if len(where):
            work.bind(pod, int(where[0]))
    return work


@contextmanager
def unsolved(*calls):
    """CP-SAT's ``Solve`` answers UNKNOWN (no solution in time) on the given calls (0: the first stage), without solving."""
    real, count = cp_model.CpSolver.Solve, itertools.count()

    def solve_or_not(self, model, *args, **kwargs):
        return cp_model.UNKNOWN if next(count) in calls else real(self, model, *args, **kwargs)

    with mock.patch.object(cp_model.CpSolver, "Solve", solve_or_not):
        yield


def check_complete_plan(cluster, result):
    """The plan replays step by step, leaves no Pending pod that would fit, and is never lexicographically
    worse (pods of priority >= each tier, highest first) than the placement it started from."""
    end = replay(cluster, sequence(cluster, result.pod_node, result.pod_gpus))
    assert end.pod_node.tolist() == result.pod_node.tolist() and end.capacity_violations() == []
    assert [tuple(sorted(g)) for g in end.pod_gpus] == [tuple(sorted(g)) for g in result.pod_gpus]
    assert not end.fits_all()[end.pending].any()
    assert tuple(np.cumsum(result.placed_by_tier)) >= tuple(np.cumsum(cluster.placed_by_tier()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=4, max_pods=8))
def test_complete_is_the_twins_first_fit(cluster):
    node, gpus = complete(cluster, cluster.pod_node, cluster.pod_gpus)
    ref = first_fit(cluster)
    assert node.tolist() == ref.pod_node.tolist()
    assert [tuple(sorted(g)) for g in gpus] == [tuple(sorted(g)) for g in ref.pod_gpus]


def test_an_unsolved_first_stage_still_binds_what_fits():
    # The first stage finds nothing: the plan is the current placement with the Pending pods bound
    # first-fit (the 700 m high pod on n1, the 300 m one on n0), and nothing is claimed proved.
    c = make_cluster([(1000, 1000), (1000, 1000)], [(600, 10, 0), (700, 10, 9), (300, 10, 0), (500, 10, 0)], [0, -1, -1, -1])
    with unsolved(0):
        result = solve(c, 5.0)
    assert result.status == "UNKNOWN" and not result.tiers_optimal
    assert [s.status for s in result.stages] == ["UNKNOWN", "NOT_RUN", "NOT_RUN"]
    assert result.tier_bounds == (None, None) and all(s.value is None for s in result.stages)
    assert result.pod_node.tolist() == first_fit(c).pod_node.tolist() == [0, 1, 0, -1]
    assert result.placed_by_tier == (1, 2) and (result.evictions, result.moves) == (0, 0)
    check_complete_plan(c, result)


def test_an_unsolved_last_tier_stage_is_completed_first_fit():
    # Two nodes of 1000 m, a 600 m low pod on each; Pending: a 1000 m high pod and a 300 m low one. The
    # high tier's stage gives the high pod a node of its own (its low pod has no room left there, and
    # CP-SAT may drop the other low pod too: the stage counts only the high tier). The low tier's stage
    # then finds nothing in time. The plan is that stage's solution, the dropped pods put back where
    # they ran, and the rest bound first-fit: the 300 m pod beside the remaining 600 m one, 1 high and
    # 2 low, the optimum. Putting back only a pod's current or previous node (as before) could leave
    # the 300 m pod, which has neither once CP-SAT's solution drops it, Pending.
    c = make_cluster([(1000, 1000), (1000, 1000)], [(600, 10, 0), (600, 10, 0), (1000, 10, 9), (300, 10, 0)], [0, 1, -1, -1])
    seen = []

    def spy(cluster, placement, gpus=None):
        seen.append(np.asarray(placement).copy())
        return complete(cluster, placement, gpus)

    with unsolved(1), mock.patch.object(cpsat, "complete", spy):
        result = solve(c, 5.0)
    assert [s.status for s in result.stages] == ["OPTIMAL", "UNKNOWN", "NOT_RUN"]
    assert result.status == "FEASIBLE" and not result.tiers_optimal
    assert result.tier_bounds == (1.0, None) and result.stages[0].value == 1.0
    assert result.placed_by_tier == (1, 2) and brute_force(c)[0] == (1, 3)
    other = 1 - int(result.pod_node[2])
    assert sorted(np.flatnonzero(result.pod_node == other).tolist()) in ([0, 3], [1, 3])
    # the plan is the first-fit completion of the high stage's solution (with its dropped pods put back)
    assert len(seen) == 2                                    # the current placement, then the high stage's
    start = make_cluster([(1000, 1000), (1000, 1000)], [(600, 10, 0), (600, 10, 0), (1000, 10, 9), (300, 10, 0)], seen[1])
    assert result.pod_node.tolist() == first_fit(start).pod_node.tolist()
    check_complete_plan(c, result)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=3, max_pods=6), stage=st.integers(0, 3))
def test_a_stage_left_unsolved_leaves_a_complete_valid_plan(cluster, stage):
    stage = min(stage, len(cluster.tiers))                  # the disruption stage is the last
    with unsolved(stage):
        result = solve(cluster, 5.0)
    names = [s.status for s in result.stages]
    assert names[stage] == "UNKNOWN" and set(names[stage + 1:]) <= {"NOT_RUN"}
    assert set(names[:stage]) <= {"OPTIMAL", "FEASIBLE"} and result.status != "OPTIMAL"
    assert result.tiers_optimal == (stage == len(cluster.tiers) and "FEASIBLE" not in names[:stage])
    assert all(s.bound is None for s in result.stages[stage:])
    if stage == len(cluster.tiers):                          # every tier solved: the counts are the optimum
        assert tuple(np.cumsum(result.placed_by_tier).tolist()) == gpu_brute_force(cluster)[0]
    check_complete_plan(cluster, result)


def brute_force_per_tier(cluster, place_one_pending=False):
    """The paper's solver's order by enumeration: for each tier, highest first, keep the placements with the most
    pods of priority >= it, then of those the least disruption of its running pods (priority >= it); with
    ``place_one_pending``, only placements that place a Pending pod (where one fits some node alone).
    Returns (placed per tier, highest first, total disruption) of what is left."""
    run = cluster.pod_node >= 0
    alone = (cluster.pod_cpu[:, None] <= cluster.cpu_capacity) & (cluster.pod_memory[:, None] <= cluster.memory_capacity)
    must = place_one_pending and (~run & alone.any(axis=1)).any()
    left = []
    for target in itertools.product(range(-1, cluster.num_nodes), repeat=cluster.num_pods):
        t = np.array(target)
        on = t >= 0
        cpu = np.bincount(t[on], weights=cluster.pod_cpu[on], minlength=cluster.num_nodes)
        mem = np.bincount(t[on], weights=cluster.pod_memory[on], minlength=cluster.num_nodes)
        if (cpu <= cluster.cpu_capacity).all() and (mem <= cluster.memory_capacity).all() and (not must or (on & ~run).any()):
            left.append(t)

    def cost(t, tier):
        mine = run & (cluster.pod_priority >= tier)
        return int((mine & (t < 0)).sum() + 2 * (mine & (t >= 0) & (t != cluster.pod_node)).sum())

    for tier in cluster.tiers:
        count = [int(((t >= 0) & (cluster.pod_priority >= tier)).sum()) for t in left]
        left = [t for t, c in zip(left, count) if c == max(count)]
        costs = [cost(t, tier) for t in left]
        left = [t for t, c in zip(left, costs) if c == min(costs)]
    return cluster.placed_by_tier(left[0]), cost(left[0], min(cluster.tiers))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=3, max_pods=5, gpus=False), one=st.booleans(), split=st.booleans())
def test_per_tier_disruption_is_the_papers_order_against_brute_force(cluster, one, split):
    result = solve(cluster, time_limit_s=5.0, stage_order="per_tier", place_one_pending=one,
                   time_split=PAPER_TIME_SPLIT if split else None)   # each stage's share is ample here
    assert result.status == "OPTIMAL" and result.tiers_optimal
    assert [s.name for s in result.stages] == [f"{k}>={t}" for t in cluster.tiers for k in ("tier", "disruption")]
    placed, cost = brute_force_per_tier(cluster, one)
    assert result.placed_by_tier == placed
    assert result.evictions + 2 * result.moves == cost == result.stages[-1].value
    if not one:
        assert result.stages[0].value == brute_force(cluster)[0][0]   # the top tier's count is the same in both orders
        check_complete_plan(cluster, result)
    else:                                                # valid, but may be worse than the start (a Pending pod forced in)
        end = replay(cluster, sequence(cluster, result.pod_node, result.pod_gpus))
        assert end.pod_node.tolist() == result.pod_node.tolist() and end.capacity_violations() == []


def test_place_one_pending_forces_a_pending_pod_in():
    # One node of 1000 m, full with a high pod; a low 500 m pod Pending. The paper's code requires a Pending pod
    # placed: the high pod is evicted for it (0 high, 1 low) where otherwise nothing changes (1 high, 0 low).
    c = make_cluster([(1000, 1000)], [(1000, 10, 9), (500, 10, 0)], [0, -1])
    assert solve(c, 5.0, stage_order="per_tier").placed_by_tier == (1, 0)
    forced = solve(c, 5.0, stage_order="per_tier", place_one_pending=True)
    assert forced.status == "OPTIMAL" and forced.placed_by_tier == (0, 1) and forced.evictions == 1
    huge = make_cluster([(1000, 1000)], [(1000, 10, 9), (5000, 10, 0)], [0, -1])   # fits nowhere: no constraint
    assert solve(huge, 5.0, stage_order="per_tier", place_one_pending=True).placed_by_tier == (1, 0)


def test_per_tier_disruption_can_leave_a_lower_tier_fewer_pods():
    # n0 1000 m, n1 600 m: the high 300 m pod runs on n0, a low 300 m pod on n1; a low 1000 m pod is Pending
    # and fits only an empty n0. Moving the high pod beside the low one frees n0 for it: 1 high + 2 low,
    # disruption 2 (the default order). The paper's order fixes the high tier's disruption (0: it stays)
    # before placing the low tier, and the 1000 m pod then fits nowhere: 1 high + 1 low.
    c = make_cluster([(1000, 1000), (600, 1000)], [(300, 10, 9), (300, 10, 0), (1000, 10, 0)], [0, 1, -1])
    last, paper = solve(c, 5.0), solve(c, 5.0, stage_order="per_tier")
    assert last.status == paper.status == "OPTIMAL"
    assert last.placed_by_tier == (1, 2) and (last.evictions, last.moves) == (0, 1)
    assert paper.placed_by_tier == (1, 1) and (paper.evictions, paper.moves) == (0, 0)
    assert [(s.name, s.value) for s in paper.stages] == [("tier>=9", 1.0), ("disruption>=9", 0.0), ("tier>=0", 2.0),
                                                         ("disruption>=0", 0.0)]
    assert brute_force_per_tier(c) == ((1, 1), 0)
    for result in (last, paper):
        check_complete_plan(c, result)


def test_per_tier_skips_a_tier_with_no_running_pod_and_refuses_unknown_orders():
    c = make_cluster([(1000, 1000)], [(600, 10, 0), (500, 10, 9)], [0, -1])    # nothing of the high tier runs
    result = solve(c, 5.0, stage_order="per_tier")
    assert [(s.name, s.status, s.wall_s) for s in result.stages][1] == ("disruption>=9", "OPTIMAL", 0.0)
    assert result.placed_by_tier == (1, 0) and result.evictions == 1 and result.status == "OPTIMAL"
    with pytest.raises(ValueError, match="disruption must be 'last' or 'per_tier'"):
        solve(c, 5.0, stage_order="first")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=3, max_pods=6), call=st.integers(0, 7), mode=st.sampled_from(["last", "per_tier"]))
def test_both_orders_give_valid_plans_even_with_a_stage_unsolved(cluster, call, mode):
    with unsolved(call):
        result = solve(cluster, 5.0, stage_order=mode)
    names = [s.status for s in result.stages]
    if "UNKNOWN" in names:
        assert result.status != "OPTIMAL" and set(names[names.index("UNKNOWN") + 1:]) <= {"NOT_RUN"}
    check_complete_plan(cluster, result)           # sequenced and replayed, complete, never lexicographically worse


def test_an_unproved_bound_never_exceeds_the_pods_of_the_tier():
    # CP-SAT's bound of an unproved stage can be as loose as its objective's literals (a pod counted on every
    # node it could take); the stage's bound is clipped to the pods some node can take (a disruption's to 0)
    c = make_cluster([(1000, 1000)] * 2, [(600, 10, 1), (600, 10, 1), (600, 10, 0), (2000, 10, 1)])
    loose = {"tier": 1e9, "disruption": -1e9}
    objectives = itertools.cycle(["tier", "tier", "disruption"])
    real_bound = cp_model.CpSolver.BestObjectiveBound

    with mock.patch.object(cp_model.CpSolver, "BestObjectiveBound",
                           lambda self: loose[next(objectives)] if real_bound(self) is not None else None):
        result = solve(c, 5.0)
    assert result.tier_bounds == (2.0, 3.0)          # the 2000 m pod fits no node; 3 pods of priority >= 0 can
    assert result.stages[-1].bound == 0.0
    assert result.placed_by_tier == (2, 0) and not result.tiers_optimal   # a loose bound certifies nothing


def test_paper_clock_shares_the_window_as_the_papers_solver():
    clock = PaperClock(usable=1.0, tiers=2, guaranteed=0.6, move_fraction=0.5)
    assert clock.cap("tier", left=1.0) == pytest.approx(0.35)       # (0.6 / 2 + 0.4) x 0.5
    clock.spent("tier", 0.35)                                        # out of the free pool first: 0.05 left there
    assert clock.cap("disruption", left=0.65) == pytest.approx(0.35)  # the rest of the tier's 0.7
    clock.spent("disruption", 0.1)                                   # 0.05 free, then 0.05 of the guaranteed pool
    assert clock.cap("tier", left=0.55) == pytest.approx(0.275)      # all that is left of the guaranteed pool, halved
    assert clock.cap("tier", left=0.2) == pytest.approx(0.1)         # never more than the window left


def test_time_split_gives_each_stage_its_share_and_the_same_optimum():
    c = make_cluster([(1000, 1000)] * 3, [(400, 300, p % 3) for p in range(9)] + [(700, 10, 2)],
                     placement=[0, 0, 1, 1, 2, 2, -1, -1, -1, -1])
    limits, real = [], cp_model.CpSolver.Solve

    def recording(self, model, *args, **kwargs):
        limits.append(self.parameters.max_time_in_seconds)
        return real(self, model, *args, **kwargs)

    with mock.patch.object(cp_model.CpSolver, "Solve", recording):
        split = solve(c, 4.0, stage_order="per_tier", time_split=PAPER_TIME_SPLIT)
    plain = solve(c, 4.0, stage_order="per_tier")
    assert split.status == plain.status == "OPTIMAL" and split.placed_by_tier == plain.placed_by_tier
    # three tiers: the first placement stage may take (0.6 x usable / 3 + 0.4 x usable) / 2 of the ~4 s
    assert 0.9 < limits[0] < (0.2 + 0.4) * 4.0 / 2 + 1e-6 and all(t < 4.0 for t in limits)
    with pytest.raises(ValueError, match="time_split is the paper's"):
        solve(c, 1.0, time_split=PAPER_TIME_SPLIT)                   # the split is per tier: not for the default order
    with pytest.raises(ValueError, match="each in \\[0, 1\\]"):
        solve(c, 1.0, stage_order="per_tier", time_split=(0.6, 1.5))
