"""The batched HPA with unready and missing pods, against the per-target port; the policy's pod groups.

:func:`batched_hpa_recommend` takes the counts of ``groupPods``' groups; on random pods of every
kind (ready, Pending, starting, sampled too early after turning Ready, without a sample,
terminating, failed) it must give the desired count, reason and history of
:class:`HorizontalPodAutoscaler` fed the pods themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.autoscaling.k8s_hpa import (
    BatchedHPAState,
    PodMetricSample,
    batched_hpa_recommend,
    group_pods,
)
from agents.autoscaling.policies import KubernetesHPAPolicy, hpa_pod_groups
from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS
from tests.agents.autoscaling.test_k8s_hpa import BEHAVIOR, assert_batched_matches_scalar, cpu_hpa

#: Kinds of pod that groupPods sets aside as unready, and of pods it ignores.
UNREADY_KINDS = ("pending", "starting", "just_ready")
IGNORED_KINDS = ("terminating", "failed")


def make_pod(name: str, kind: str, usage: int | None, request: int, now: float) -> PodMetricSample:
    """A pod of one kind at reconcile time ``now`` (default controller flags: 300 s CPU
    initialisation, 30 s initial readiness delay, 15 s metric windows)."""
    if kind == "ready":  # long running, Ready long ago
        return PodMetricSample(name, usage, request)
    if kind == "pending":
        return PodMetricSample(name, usage, request, phase="Pending", ready=False)
    if kind == "starting":  # container running, not Ready yet, inside the initialisation period
        return PodMetricSample(name, usage, request, ready=False, start_time_s=now - 20.0,
                               ready_transition_time_s=now - 20.0)
    if kind == "just_ready":  # Ready 5 s ago: the 15 s sample began before the transition
        return PodMetricSample(name, usage, request, ready=True, start_time_s=now - 60.0,
                               ready_transition_time_s=now - 5.0)
    if kind == "missing":  # running, no sample (CrashLoopBackOff, an unreachable kubelet)
        return PodMetricSample(name, None, request, ready=False, start_time_s=now - 900.0,
                               ready_transition_time_s=now - 100.0)
    if kind == "terminating":
        return PodMetricSample(name, usage, request, deleted=True)
    return PodMetricSample(name, usage, request, phase="Failed", ready=False)


def cells(data, strategy, n: int) -> list:
    return data.draw(st.lists(strategy, min_size=n, max_size=n))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), behavior=BEHAVIOR)
def test_batched_with_unready_and_missing_pods_agrees_with_per_target_class(data, behavior):
    batch, services = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    shape, n = (batch, services), batch * services
    min_r = np.array(cells(data, st.integers(0, 3), n)).reshape(shape)
    max_r = np.maximum(min_r, 1) + np.array(cells(data, st.integers(0, 12), n)).reshape(shape)
    target = np.array(cells(data, st.sampled_from([30, 50, 60, 80, 100, 133, 150]), n)).reshape(shape)
    # Requests such that request x max(100, target) / 100 truncates (150 x 133 / 100 = 199.5).
    request = np.array(cells(data, st.sampled_from([100, 150, 250, 1000]), services))
    hpas = [[cpu_hpa(int(max_r[b, s]), int(min_r[b, s]), int(target[b, s]), behavior) for s in range(services)]
            for b in range(batch)]
    state = BatchedHPAState.empty(batch, services)
    current = np.array(cells(data, st.integers(0, 12), n)).reshape(shape)
    now = 1000.0
    for _ in range(data.draw(st.integers(1, 8))):
        now += data.draw(st.sampled_from([1.0, 15.0, 15.0, 30.0, 60.0, 301.0]))
        pods, counts = [], np.zeros((4, batch, services), np.int64)  # ready, unready, missing, ready usage
        for b in range(batch):
            row = []
            for s in range(services):
                kinds = data.draw(st.lists(st.sampled_from(("ready", "ready", *UNREADY_KINDS, "missing",
                                                            *IGNORED_KINDS)), max_size=9))
                usages = cells(data, st.integers(0, 4 * int(request[s])), len(kinds))
                target_pods = [make_pod(f"p{i}", kind, usage, int(request[s]), now)
                               for i, (kind, usage) in enumerate(zip(kinds, usages))]
                row.append(target_pods)
                counts[0, b, s] = kinds.count("ready")
                counts[1, b, s] = sum(kinds.count(k) for k in UNREADY_KINDS)
                counts[2, b, s] = kinds.count("missing")
                counts[3, b, s] = sum(u for k, u in zip(kinds, usages) if k == "ready")
                # The kinds are what groupPods makes of them.
                groups = group_pods(target_pods, "cpu", now, 300.0, 30.0)
                assert (groups.ready_count, len(groups.unready), len(groups.missing)) == tuple(counts[:3, b, s])
            pods.append(row)
        batched = batched_hpa_recommend(state, now, current, counts[0], None, target, min_r, max_r, behavior,
                                        unready_pods=counts[1], missing_pods=counts[2], usage_milli=counts[3],
                                        request_milli=request)
        current = assert_batched_matches_scalar(data, batched, hpas, state, now, current, pods)


def test_unready_pods_hold_back_a_scale_up_and_missing_pods_a_scale_down():
    hpa = lambda: cpu_hpa(20, 1, 60)  # noqa: E731
    state = lambda: BatchedHPAState.empty(1, 1)  # noqa: E731
    # 2 Ready pods at 200% of a 100 m request, 4 starting: Go counts the starting ones at 0%:
    # 400 m over 6 pods = 66% -> ratio 1.1, within the tolerance: stay at 6 (all-ready would say 7).
    pods = [PodMetricSample(f"r{i}", 200, 100) for i in range(2)]
    pods += [make_pod(f"s{i}", "starting", 0, 100, 100.0) for i in range(4)]
    assert hpa().recommend(100.0, 6, pods).desired_replicas == 6
    kw = dict(usage_milli=400, request_milli=100)
    assert batched_hpa_recommend(state(), 100.0, 6, 2, None, 60, 1, 20, unready_pods=4, **kw).desired_replicas[0, 0] == 6
    assert batched_hpa_recommend(state(), 100.0, 6, 2, None, 60, 1, 20, **kw).desired_replicas[0, 0] == 7
    # 2 Ready pods at 10%, 2 without a sample counted at 100%: 220 m over 4 pods = 55% -> ratio
    # 0.917, within the tolerance: no scale-down (all-ready would go down to 1).
    kw = dict(usage_milli=20, request_milli=100)
    assert batched_hpa_recommend(state(), 100.0, 4, 2, None, 60, 1, 20, missing_pods=2, **kw).desired_replicas[0, 0] == 4
    pods = [PodMetricSample(f"r{i}", 10, 100) for i in range(2)] + [make_pod(f"m{i}", "missing", None, 100, 100.0)
                                                                      for i in range(2)]
    assert hpa().recommend(100.0, 4, pods).desired_replicas == 4


def test_batched_input_errors():
    state = BatchedHPAState.empty(1, 1)
    with pytest.raises(ValueError, match="not both or neither"):
        batched_hpa_recommend(state, 0.0, 2, 2, 50, 50, 1, 10, usage_milli=100, request_milli=100)
    with pytest.raises(ValueError, match="needs request_milli"):
        batched_hpa_recommend(state, 0.0, 2, 2, None, 50, 1, 10, usage_milli=100)
    with pytest.raises(ValueError, match="non-negative"):
        batched_hpa_recommend(state, 0.0, 2, 2, 50, 50, 1, 10, unready_pods=-1)


class FakeView:
    """A ClusterView with hand-set metrics: one cluster, the services of a tiny topology."""

    def __init__(self, topology, **metrics):
        s = topology.num_services
        self.topology = topology
        self.low = topology.min_replicas.astype(np.int64)
        self.high = topology.max_replicas.astype(np.int64)
        self.raw_obs = np.zeros((1, s, NUM_METRICS), dtype=np.float32)
        for name, value in metrics.items():
            self.raw_obs[0, :, METRIC_INDEX[name]] = value
        self.desired = np.rint(self.raw_obs[:, :, METRIC_INDEX["replicas_desired"]]).astype(np.int64)


def test_policy_groups_pods_from_the_twin_metrics(chain4_topology):
    # 2 Ready, 1 Pending, 1 in back-off, 6 pods bound or pending in all (one still terminating,
    # beyond the 5 desired): 5 - 2 - 1 - 1 = 1 starting.
    request = chain4_topology.cpu_request
    view = FakeView(chain4_topology, replicas_desired=5, replicas_ready=2, replicas_pending=1, replicas_crashloop=1,
                    cpu_requests_cores=6 * request, cpu_usage_cores=0.5)
    groups = hpa_pod_groups(view)
    assert groups["ready"].tolist() == [[2] * 4] and groups["unready"].tolist() == [[2] * 4]
    assert groups["missing"].tolist() == [[1] * 4]
    np.testing.assert_allclose(groups["usage_milli"], 500.0, rtol=1e-6)
    np.testing.assert_allclose(groups["request_milli"], 1000.0 * request)


def test_policy_holds_back_while_new_pods_start(chain4_topology):
    # Every service: 2 Ready pods at 200% of their request and 4 starting (6 desired): the HPA
    # keeps 6, as the controller does, instead of scaling on the Ready pods alone.
    request = chain4_topology.cpu_request
    view = FakeView(chain4_topology, replicas_desired=6, replicas_ready=2, cpu_requests_cores=6 * request,
                    cpu_usage_cores=2 * 2.0 * request)
    policy = KubernetesHPAPolicy(60)
    policy.reset(view)
    expected = []
    for s in range(4):
        milli = int(round(1000 * request[s]))
        pods = [PodMetricSample(f"r{i}", 2 * milli, milli) for i in range(2)]
        pods += [make_pod(f"s{i}", "starting", 0, milli, 0.0) for i in range(4)]
        hpa = cpu_hpa(int(chain4_topology.max_replicas[s]), int(chain4_topology.min_replicas[s]), 60)
        expected.append(hpa.recommend(0.0, 6, pods).desired_replicas)
    assert policy.desired_replicas(view, now_s=0.0).tolist() == [expected] == [[6] * 4]


@pytest.fixture(scope="module")
def chain4_topology():
    from digital_twin.microservices import load_topology

    return load_topology("chain4")
