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


class ListModel:
    """The twin's rules on Python lists (the reference of the compiled changes, cluster_kernels.py)."""

    def __init__(self, c):
        self.cpu_free, self.mem_free = c.cpu_free.tolist(), c.memory_free.tolist()
        self.gpu_free = c.gpu_free.tolist()
        self.cpu, self.mem = c.pod_cpu.tolist(), c.pod_memory.tolist()
        self.k, self.share = c.pod_num_gpu.tolist(), c.pod_gpu_milli.tolist()
        self.gpu_count = c.gpu_count.tolist()
        self.node, self.gpus = c.pod_node.tolist(), list(c.pod_gpus)
        self.log, self.counts = [], {"bind": 0, "evict": 0, "move": 0}

    def fits(self, pod, node):
        return (self.cpu[pod] <= self.cpu_free[node] and self.mem[pod] <= self.mem_free[node]
                and sum(f >= self.share[pod] for f in self.gpu_free[node]) >= self.k[pod])

    def _on(self, pod, node, gpus):
        self.cpu_free[node] -= self.cpu[pod]
        self.mem_free[node] -= self.mem[pod]
        for g in gpus:
            self.gpu_free[node][g] -= self.share[pod]
        self.node[pod], self.gpus[pod] = node, gpus

    def _off(self, pod):
        node = self.node[pod]
        self.cpu_free[node] += self.cpu[pod]
        self.mem_free[node] += self.mem[pod]
        for g in self.gpus[pod]:
            self.gpu_free[node][g] += self.share[pod]
        self.node[pod], self.gpus[pod] = -1, ()

    def _choose(self, pod, node):
        free = self.gpu_free[node]
        return tuple(sorted((g for g in range(len(free)) if free[g] >= self.share[pod]),
                            key=lambda g: (free[g], g))[:self.k[pod]])

    def _record(self, change):
        self.log.append(change)
        self.counts[change[0]] += 1
        return change

    def bind(self, pod, node, gpus=None):
        if self.node[pod] >= 0 or not self.fits(pod, node):
            return None
        if gpus is not None:
            gpus = tuple(gpus)
            if (len(gpus) != self.k[pod] or len(set(gpus)) != len(gpus)
                    or any(not 0 <= g < self.gpu_count[node] or self.gpu_free[node][g] < self.share[pod] for g in gpus)):
                return None
        gpus = self._choose(pod, node) if gpus is None else gpus
        self._on(pod, node, gpus)
        return self._record(("bind", pod, -1, node, (), gpus))

    def evict(self, pod):
        if self.node[pod] < 0:
            return None
        change = ("evict", pod, self.node[pod], -1, self.gpus[pod], ())
        self._off(pod)
        return self._record(change)

    def move(self, pod, node):
        src, old = self.node[pod], self.gpus[pod]
        if src < 0 or src == node or not self.fits(pod, node):
            return None
        gpus = self._choose(pod, node)
        self._off(pod)
        self._on(pod, node, gpus)
        return self._record(("move", pod, src, node, old, gpus))

    def undo(self):
        if not self.log:
            return None
        kind, pod, src, _, old, _ = change = self.log.pop()
        self.counts[kind] -= 1
        if self.node[pod] >= 0:
            self._off(pod)
        if kind != "bind":
            self._on(pod, src, old)
        return change

    def state(self):
        return (self.node, self.cpu_free, self.mem_free, self.gpu_free, self.gpus, len(self.log),
                (self.counts["evict"], self.counts["move"], self.counts["bind"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(max_nodes=3, max_pods=7), data=st.data())
def test_changes_and_undos_match_a_list_model(cluster, data):
    # The compiled changes (check, GPU choice, update in one call) against the rules written out on
    # lists: the same verdict, the same returned change and the same state after every step.
    model = ListModel(cluster)
    for _ in range(data.draw(st.integers(1, 40))):
        kind = data.draw(st.sampled_from(["bind", "bind_gpus", "evict", "move", "undo", "undo"]))
        pod = data.draw(st.integers(0, cluster.num_pods - 1))
        node = data.draw(st.integers(0, cluster.num_nodes - 1))
        if kind == "bind_gpus":
            gpus = data.draw(st.lists(st.integers(0, 2), max_size=2))
            args, call = (pod, node, gpus), ("bind", lambda: cluster.bind(pod, node, gpus=gpus))
        else:
            args = {"bind": (pod, node), "evict": (pod,), "move": (pod, node), "undo": ()}[kind]
            call = (kind, lambda: getattr(cluster, kind)(*args))
        expected = getattr(model, call[0])(*args)
        try:
            got = call[1]()
        except (InfeasiblePodChangeError, IndexError):
            got = None
        assert (None if got is None else tuple(got)) == expected
        assert state(cluster) == model.state()
    assert cluster.capacity_violations() == []
