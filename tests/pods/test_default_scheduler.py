"""The default scheduler's port against cases of kube-scheduler's Go tests (pkg/scheduler/framework/plugins/...).

Memory in the Go tests is in bytes, here in MiB: the scores are ratios, so the numbers carry over.
"""

from __future__ import annotations

import pytest

from agents.pods import DefaultScheduler, queue_order, schedule
from agents.pods.default_scheduler import balanced_allocation_score, least_allocated_score, most_allocated_score
from tests.pods.conftest import make_cluster

FIT_ONLY = {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 0}
BALANCED_ONLY = {"NodeResourcesFit": 0, "NodeResourcesBalancedAllocation": 1}
# st.MakePod().Req({cpu 1000, memory 2000}).Req({cpu 2000, memory 3000}): the Go tests' two-container pod.
POD = (3000, 5000, 0)


def scores(nodes, existing, pod, weights, strategy="LeastAllocated"):
    """Score ``pod`` on ``nodes`` with ``existing`` = [(cpu, mem, node)] running, through the twin and the port."""
    c = make_cluster(nodes, [(e[0], e[1], 0) for e in existing] + [pod], [e[2] for e in existing] + [-1])
    return DefaultScheduler(strategy=strategy, plugin_weights=weights).scores(c, c.num_pods - 1).tolist()


# least_allocated_test.go, TestLeastAllocatedScoringStrategy
@pytest.mark.parametrize("name, nodes, existing, pod, expected", [
    ("nothing scheduled, resources requested, differently sized nodes",
     [(4000, 10000), (6000, 10000)], [], POD, [37, 50]),
    ("resources requested, pods scheduled with resources",
     [(10000, 20000), (10000, 20000)], [(3000, 0, 0), (3000, 5000, 1)], POD, [57, 45]),
    ("resources requested, pods scheduled with resources, differently sized nodes",
     [(10000, 20000), (10000, 50000)], [(3000, 0, 0), (3000, 5000, 1)], POD, [57, 60]),
])
def test_least_allocated_go_cases(name, nodes, existing, pod, expected):
    assert scores(nodes, existing, pod, FIT_ONLY) == expected, name


def test_least_allocated_go_cases_on_the_formula():
    # "requested resources exceed node capacity": CPU over capacity scores 0 -> (0 + 100) / 2, (0 + 50) / 2
    assert least_allocated_score([[6000, 0], [6000, 5000]], [[4000, 10000], [4000, 10000]]).tolist() == [50, 25]
    # "zero node resources": MinNodeScore
    assert least_allocated_score([[3000, 0]], [[0, 0]]).tolist() == [0]
    # "different weight on CPU and memory" (memory 2, cpu 1): (25 + 50 * 2) / 3 = 41, (50 + 100) / 3 = 50
    assert least_allocated_score([[3000, 5000], [3000, 5000]], [[4000, 10000], [6000, 10000]], weights=(1, 2)).tolist() == [41, 50]


# most_allocated_test.go, TestMostAllocatedScoringStrategy
def test_most_allocated_go_case():
    assert scores([(4000, 10000), (6000, 10000)], [], POD, FIT_ONLY, strategy="MostAllocated") == [62, 50]
    assert most_allocated_score([[0, 0]], [[4000, 10000]]).tolist() == [0]   # "nothing scheduled, nothing requested"


# balanced_allocation_test.go, TestNodeResourcesBalancedAllocation
@pytest.mark.parametrize("name, nodes, existing, pod, expected", [
    ("nothing scheduled, resources requested, differently sized nodes", [(4000, 10000), (6000, 10000)], [], POD, [87, 100]),
    ("resources requested, pods scheduled with resources",
     [(10000, 20000), (10000, 20000)], [(3000, 0, 0), (3000, 5000, 1)], POD, [82, 95]),
    ("resources requested, pods scheduled with resources, differently sized nodes",
     [(10000, 20000), (10000, 50000)], [(3000, 0, 0), (3000, 5000, 1)], POD, [82, 80]),
    ("requested resources at node capacity",
     [(6000, 10000), (6000, 10000)], [(3000, 0, 0), (3000, 5000, 1)], (3000, 0, 0), [50, 75]),
])
def test_balanced_allocation_go_cases(name, nodes, existing, pod, expected):
    assert scores(nodes, existing, pod, BALANCED_ONLY) == expected, name


def test_balanced_allocation_skips_best_effort_pods():
    # "nothing scheduled, nothing requested, skip in PreScore": a pod with no requests gets no balanced score
    assert scores([(4000, 10000), (4000, 10000)], [], (0, 0, 0), BALANCED_ONLY) == [0, 0]
    assert balanced_allocation_score([[0, 0]], [[4000, 10000]]).tolist() == [100]


def test_default_weights_sum_the_plugins_and_ties_go_by_name():
    c = make_cluster([(4000, 10000), (6000, 10000)], [POD])
    s = DefaultScheduler()
    assert s.scores(c, 0).tolist() == [37 + 87, 50 + 100]
    assert s.select_node(c, 0) == 1
    same = make_cluster([(4000, 4000)] * 3, [(100, 100, 0)])
    same.node_names[:] = ["b", "a", "c"]
    assert DefaultScheduler().select_node(same, 0) == 1          # "a" sorts first
    full = make_cluster([(100, 100)], [(200, 10, 0)])
    assert DefaultScheduler().select_node(full, 0) is None


def test_queue_sort_and_schedule_leave_the_unplaceable_pending():
    c = make_cluster([(1000, 1000)], [(600, 100, 0), (600, 100, 5), (300, 100, 5)])
    assert queue_order(c).tolist() == [1, 2, 0]                    # priority first, then creation
    arrival = c.copy()
    assert schedule(arrival, queue="arrival") == [1]               # pods as they arrive: p0 took the room
    assert schedule(c) == [0]                                      # the default: PrioritySort over the queue
    assert c.capacity_violations() == [] and arrival.capacity_violations() == []
