"""The fallback over a replay's live pods, and its neighbourhood on clusters too large for one model."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.pods import fallback_steps, replay, solve
from agents.pods.fallback import live_cluster, neighbourhood
from tests.pods.conftest import clusters, make_cluster


def crowded(nodes=12):
    """``nodes`` nodes of 1000 m, each holding one 700 m pod of priority 1 (node 3's of priority 0), and a Pending
    600 m pod of priority 2: it fits only where a pod makes way, cheapest on node 3 (an eviction of the lowest)."""
    pods = [(700, 10, 0 if j == 3 else 1) for j in range(nodes)] + [(600, 10, 2)]
    return make_cluster([(1000, 1000)] * nodes, pods, placement=list(range(nodes)) + [-1])


def test_neighbourhood_is_every_node_when_few_and_refuses_nonsense():
    c = crowded(4)
    assert neighbourhood(c, np.arange(c.num_pods), 4).tolist() == [0, 1, 2, 3]
    try:
        neighbourhood(c, np.arange(c.num_pods), 0)
    except ValueError as exc:
        assert "max_nodes must be >= 1, got 0" in str(exc)
    else:
        raise AssertionError("max_nodes 0 accepted")


def test_neighbourhood_takes_the_nearest_hosts_then_the_roomiest_nodes():
    # 12 nodes of 1000 m, each with a 700 m pod but node 5 (empty); a 600 m pod Pending
    pods = [(700, 10, 1) for j in range(12) if j != 5] + [(600, 10, 2)]
    c = make_cluster([(1000, 1000)] * 12, pods, placement=[j for j in range(12) if j != 5] + [-1])
    everything = np.arange(c.num_pods)
    nodes = neighbourhood(c, everything, 4)
    # hosts (half): node 5 takes the pod as it is, every other lacks 300 m (ties by index: node 0);
    # then the roomiest of the rest (all alike: by index)
    assert nodes.tolist() == [0, 1, 2, 5]
    assert neighbourhood(c, everything, 1).tolist() == [5]
    roomy = make_cluster([(1000, 1000)] * 4, [(700, 10, 1), (100, 10, 1), (900, 10, 2)], placement=[0, 2, -1])
    # the Pending 900 m pod: nodes 1, 2, 3 take it as they are (one host: node 1); the roomiest other: node 3 (empty)
    assert neighbourhood(roomy, np.arange(3), 2).tolist() == [1, 3]


def test_neighbourhood_fallback_places_the_pending_pod_through_the_twin():
    c = crowded(40)
    everything = np.arange(c.num_pods)
    steps, result = fallback_steps(c, everything, 5.0, max_nodes=8)
    assert len(result.stages) and result.status == "OPTIMAL"
    end = replay(c, steps)                                          # every step checked by the twin, on the big cluster
    assert end.pod_node[40] >= 0 and end.capacity_violations() == []
    moved = np.flatnonzero(end.pod_node != c.pod_node)
    assert set(end.pod_node[moved].tolist()) | set(c.pod_node[moved].tolist()) <= set(neighbourhood(c, everything, 8).tolist()) | {-1}
    # the same plan as on the whole cluster, lexicographically: the top pod in, the lowest pod out
    whole = solve(live_cluster(c, everything), 5.0)
    assert end.placed_by_tier() == whole.placed_by_tier == (1, 39, 0)


def test_a_neighbourhood_as_large_as_the_cluster_is_the_whole_cluster():
    c = crowded(6)
    every = np.arange(c.num_pods)
    assert fallback_steps(c, every, 5.0, max_nodes=6)[0] == fallback_steps(c, every, 5.0)[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=5, max_pods=8), max_nodes=st.integers(1, 5), data=st.data())
def test_neighbourhood_plans_replay_and_never_lose_a_tier(cluster, max_nodes, data):
    live = np.array(sorted(data.draw(st.sets(st.integers(0, cluster.num_pods - 1), min_size=1))), dtype=np.int64)
    for pod in np.setdiff1d(np.arange(cluster.num_pods), live):   # pods outside live do not run (a replay's contract)
        if cluster.pod_node[pod] >= 0:
            cluster.evict(int(pod))
    nodes = neighbourhood(cluster, live, max_nodes)
    assert len(nodes) == min(max_nodes, cluster.num_nodes) and (np.diff(nodes) > 0).all()
    steps, _ = fallback_steps(cluster, live, 2.0, max_nodes=max_nodes)
    end = replay(cluster, steps)
    assert end.capacity_violations() == []
    touched = np.flatnonzero(end.pod_node != cluster.pod_node)
    assert np.isin(end.pod_node[touched], np.append(nodes, -1)).all() and np.isin(touched, live).all()
    assert tuple(np.cumsum(end.placed_by_tier())) >= tuple(np.cumsum(cluster.placed_by_tier()))
