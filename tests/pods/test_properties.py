"""Hypothesis properties of the pod twin: capacity is never exceeded, refused changes change nothing, undo is exact."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digital_twin.pods import InfeasiblePodChangeError
from tests.pods.conftest import clusters, state

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(cluster=clusters(), data=st.data())
def test_any_change_keeps_capacity_and_a_refusal_changes_nothing(cluster, data):
    start = state(cluster)
    done = 0
    for _ in range(data.draw(st.integers(1, 20))):
        kind = data.draw(st.sampled_from(["bind", "evict", "move"]))
        pod = data.draw(st.integers(0, cluster.num_pods - 1))
        node = data.draw(st.integers(0, cluster.num_nodes - 1))
        before = state(cluster)
        fits = bool(cluster.fits(pod)[node])
        try:
            if kind == "bind":
                cluster.bind(pod, node)
            elif kind == "evict":
                cluster.evict(pod)
            else:
                cluster.move(pod, node)
            done += 1
        except InfeasiblePodChangeError:
            assert state(cluster) == before
        else:
            # a bind is accepted exactly when the pod is Pending and fits (a move: fits once off its node)
            if kind == "bind":
                assert fits and before[0][pod] == -1
        assert cluster.capacity_violations() == []
        assert (cluster.cpu_free >= 0).all() and (cluster.memory_free >= 0).all()
    for _ in range(done):
        cluster.undo()
    assert state(cluster) == start


@SETTINGS
@given(cluster=clusters())
def test_fits_all_is_fits_of_every_pod(cluster):
    every = cluster.fits_all()
    for i in range(cluster.num_pods):
        assert every[i].tolist() == cluster.fits(i).tolist()
        for j in range(cluster.num_nodes):
            # fits says yes exactly when a bind from Pending would be accepted
            if cluster.pod_node[i] < 0:
                assert (cluster.bind_refusal(i, j) is None) == bool(every[i, j])
