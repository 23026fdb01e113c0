"""DefaultPreemption's victims and node choice against TestPickOneNodeForPreemption (default_preemption_test.go).

The Go test's nodes hold 5 * 200 MiB (DefaultMemoryRequest) and 5000 m; small, medium, large and
veryLarge containers request 1, 2, 3 and 5 units of 100 m / 200 MiB; priorities neg -100, low 0,
mid 100, high 1000, veryHigh 10000; every pod started at startTime unless the case says otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.pods import Candidate, pick_one_node, preempt, select_victims
from tests.pods.conftest import make_cluster

NEG, LOW, MID, HIGH, VERY_HIGH = -100, 0, 100, 1000, 10000
SMALL, MEDIUM, LARGE, VERY_LARGE = 1, 2, 3, 5
NODE = np.array([5000, 5 * 200])


def pick(pod_size, pod_priority, machines, starts=None):
    """``machines``: {name: [(size, priority), ...]} -> the node the port preempts on."""
    request = pod_size * np.array([100, 200])
    cands = []
    for name, pods in machines.items():
        req = np.array([size * np.array([100, 200]) for size, _ in pods]).reshape(-1, 2)
        prio = np.array([p for _, p in pods])
        start = np.zeros(len(pods)) if starts is None else np.asarray(starts[name], dtype=float)
        victims = select_victims(NODE - req.sum(axis=0), request, req, prio, start, pod_priority)
        if victims is not None:
            cands.append(Candidate(name, tuple(int(prio[v]) for v in victims), tuple(float(start[v]) for v in victims)))
    return pick_one_node(cands)


@pytest.mark.parametrize("name, pod, machines, expected", [
    ("No node needs preemption", (LARGE, HIGH), {"machine1": [(SMALL, MID)]}, "machine1"),
    ("a pod that fits on both machines when lower priority pods are preempted", (LARGE, HIGH),
     {"machine1": [(LARGE, MID)], "machine2": [(LARGE, MID)]}, "machine1"),
    ("a pod that fits on a machine with no preemption", (LARGE, HIGH),
     {"machine1": [(LARGE, MID)], "machine2": [(LARGE, MID)], "machine3": []}, "machine3"),
    ("machine with min highest priority pod is picked", (VERY_LARGE, HIGH),
     {"machine1": [(MEDIUM, MID), (LARGE, MID)], "machine2": [(MEDIUM, MID), (MEDIUM, LOW)],
      "machine3": [(MEDIUM, LOW), (MEDIUM, LOW)]}, "machine3"),
    ("when highest priorities are the same, minimum sum of priorities is picked", (VERY_LARGE, HIGH),
     {"machine1": [(MEDIUM, MID), (LARGE, MID)], "machine2": [(LARGE, MID), (MEDIUM, LOW)],
      "machine3": [(MEDIUM, MID), (MEDIUM, MID)]}, "machine2"),
    ("when highest priority and sum are the same, minimum number of pods is picked", (VERY_LARGE, HIGH),
     {"machine1": [(SMALL, MID), (SMALL, NEG), (SMALL, MID), (SMALL, NEG)], "machine2": [(LARGE, MID), (MEDIUM, NEG)],
      "machine3": [(MEDIUM, MID), (SMALL, NEG), (SMALL, LOW)]}, "machine2"),
    ("sum of adjusted priorities is considered", (VERY_LARGE, HIGH),
     {"machine1": [(SMALL, MID), (SMALL, NEG), (SMALL, NEG)], "machine2": [(LARGE, MID), (MEDIUM, NEG)],
      "machine3": [(MEDIUM, MID), (SMALL, NEG), (SMALL, LOW)]}, "machine2"),
    ("non-overlapping lowest high priority, sum priorities, and number of pods", (VERY_LARGE, VERY_HIGH),
     {"machine1": [(SMALL, MID), (SMALL, LOW), (SMALL, LOW)], "machine2": [(LARGE, HIGH)],
      "machine3": [(MEDIUM, MID), (SMALL, LOW), (SMALL, LOW), (MEDIUM, LOW)],
      "machine4": [(MEDIUM, MID), (SMALL, MID), (SMALL, MID), (SMALL, NEG)]}, "machine1"),
])
def test_pick_one_node_go_cases(name, pod, machines, expected):
    assert pick(*pod, machines) == expected, name


def test_latest_start_wins_when_everything_else_ties():
    # "same priority, same number of victims, different start time for each machine's pod"
    machines = {m: [(MEDIUM, MID), (MEDIUM, MID)] for m in ("machine1", "machine2", "machine3")}
    starts = {"machine1": [2, 2], "machine2": [3, 3], "machine3": [4, 4]}
    assert pick(VERY_LARGE, HIGH, machines, starts) == "machine3"


def test_victims_are_only_as_many_as_needed_most_important_reprieved_first():
    # A large preemptor on a node with a medium mid pod and a small low one (2 units free): the mid pod
    # is tried back first and fits beside it (2 + 3 = 5 units); then the low pod no longer fits: it is the victim.
    req = np.array([[200, 400], [100, 200]])
    victims = select_victims(NODE - req.sum(axis=0), np.array([300, 600]), req, np.array([MID, LOW]), np.zeros(2), HIGH)
    assert victims == [1]
    assert select_victims(NODE - 600, np.array([300, 600]), np.array([[300, 600]]), np.array([HIGH]), np.zeros(1), MID) is None


def test_preempt_through_the_twin():
    c = make_cluster([(1000, 1000), (1000, 1000)], [(700, 100, 0), (600, 100, 1), (500, 100, 5)], [0, 1, -1])
    assert preempt(c, 2) == 0                    # the lower-priority victim's node
    assert c.pod_node.tolist() == [-1, 1, 0] and c.evictions == 1 and c.capacity_violations() == []
    stuck = make_cluster([(1000, 1000)], [(700, 100, 9), (500, 100, 5)], [0, -1])
    assert preempt(stuck, 1) is None and stuck.pod_node.tolist() == [0, -1]
