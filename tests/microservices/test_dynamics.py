"""Pod lifecycle, queue dynamics and invariants of the batched step."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from digital_twin.microservices import MicroserviceTwin, TwinConfig
from digital_twin.microservices import dynamics as dyn
from digital_twin.microservices.topology import topology_from_dict

from tests.microservices.conftest import constant_load


def _ready(twin):
    return (twin.state.phase == dyn.READY).sum(axis=2)


def test_observation_shape_and_order(boutique):
    twin = MicroserviceTwin(boutique, constant_load(30, 10), batch_size=3, initial_replicas=np.full(11, 2))
    obs, _ = twin.reset(seed=1)
    assert obs.shape == (3, 11, len(twin.metric_names)) and obs.dtype == np.float32
    action = np.full((3, 11), 4)
    action[1] = 99  # clipped to max_replicas
    obs, info = twin.step(action)
    desired = obs[:, :, twin.metric_index["replicas_desired"]]
    np.testing.assert_array_equal(desired[0], np.minimum(4, boutique.max_replicas))
    np.testing.assert_array_equal(desired[1], boutique.max_replicas)
    rate = obs[0, :, twin.metric_index["request_rate"]]
    # Request rates follow the call graph: rate_s ~ entry_rate x visits_s (Poisson noise at the entry).
    np.testing.assert_allclose(rate / rate[boutique.entry_index], boutique.entry_visits, rtol=0.02, atol=1e-3)
    assert set(info) >= {"slo_violated", "dropped", "allocated_pod_seconds", "e2e_latency_p95"}


def test_scale_up_takes_startup_time_and_scale_down_removes_ready(boutique):
    ad = boutique.index("ad")  # startup 30 s = 2 steps
    twin = MicroserviceTwin(boutique, constant_load(20, 12), initial_replicas=np.full(11, 2),
                            config=TwinConfig(termination_seconds=20.0))
    twin.reset(seed=0)
    want = np.full((1, 11), 2)
    want[0, ad] = 5
    twin.step(want)
    assert _ready(twin)[0, ad] == 2 and (twin.state.phase[0, ad] == dyn.STARTING).sum() == 3
    twin.step(want)
    assert _ready(twin)[0, ad] == 5
    want[0, ad] = 1
    obs, _ = twin.step(want)
    assert _ready(twin)[0, ad] == 1 and (twin.state.phase[0, ad] == dyn.TERMINATING).sum() == 4
    assert (twin.state.node[0, ad][twin.state.phase[0, ad] == dyn.TERMINATING] >= 0).all()  # still holds its node
    twin.step(want)  # 20 s grace: gone after the second step
    assert (twin.state.phase[0, ad] == dyn.TERMINATING).sum() == 0


def _tiny(node_cpu=1.0, request=0.3, max_replicas=6, nodes=1):
    return topology_from_dict({
        "name": "tiny", "entry": "a",
        "cluster": {"nodes": [{"name": f"n{i}", "cpu": node_cpu, "memory_mib": 8192} for i in range(nodes)]},
        "defaults": {"cpu_request": request, "cpu_limit": 0.5, "memory_request_mib": 64, "memory_limit_mib": 128,
                     "memory_base_mib": 30, "memory_per_inflight_mib": 0.5, "min_replicas": 1,
                     "max_replicas": max_replicas, "startup_seconds": 5, "timeout_seconds": 2,
                     "queue_limit_per_pod": 100},
        "services": {"a": {"cpu_seconds_per_request": 0.01}},
    })


def test_pods_that_fit_nowhere_stay_pending():
    twin = MicroserviceTwin(_tiny(), constant_load(10, 5))
    twin.reset(seed=0)
    obs, _ = twin.step(np.array([[5]]))
    obs, _ = twin.step(np.array([[5]]))
    assert obs[0, 0, twin.metric_index["replicas_ready"]] == 3  # 3 x 0.3 cores fit in 1 core
    assert obs[0, 0, twin.metric_index["replicas_pending"]] == 2


def test_crashloop_backoff_doubles_to_five_minutes(chain4):
    steps = 200
    schedule = [{"kind": "pod_crash", "services": ["B"], "rate_per_pod_per_hour": 1e7}]
    twin = MicroserviceTwin(chain4, constant_load(10, steps), scenarios=schedule)
    twin.reset(seed=0)
    restarts_at_reset = twin.state.restarts[0, 1]
    phases = []
    for _ in range(steps - 1):
        twin.step(np.ones((1, 4), dtype=int))
        phases.append(twin.state.phase[0, 1, 0])
    # Lengths of the CrashLoopBackOff spells (in 15 s steps) grow, then saturate at 300 s.
    spells, run = [], 0
    for p in phases:
        if p == dyn.CRASHLOOP:
            run += 1
        elif run:
            spells.append(run)
            run = 0
    assert spells[:5] == sorted(spells[:5]) and spells[0] < spells[4]
    assert max(spells) == 300 // 15 - 1  # 300 s back-off, the last 15 s step spent starting
    # The first back-off (10 s) ends inside its 15 s step, so it is never seen at a step boundary:
    # one restart more than the spells observed (the reset's warm-up runs no scenario).
    assert restarts_at_reset == 0
    assert twin.state.restarts[0, 1] - restarts_at_reset == len(spells) + int(run > 0) + 1


def test_node_loss_pods_evicted_after_timeout_then_replaced(boutique):
    steps = 30
    twin = MicroserviceTwin(boutique, constant_load(20, steps), initial_replicas=np.full(11, 3),
                            scenarios=[{"kind": "node_loss", "node": "node-1", "start_minute": 0.25}])
    twin.reset(seed=0)
    twin.step(np.full((1, 11), 3))
    twin.step(np.full((1, 11), 3))
    lost = (twin.state.phase == dyn.LOST).sum()
    assert lost > 0 and (twin.state.node[twin.state.phase == dyn.LOST] == 0).all()
    for _ in range(int(boutique.eviction_timeout_seconds // 15) + 2):
        obs, _ = twin.step(np.full((1, 11), 3))
    assert (twin.state.phase == dyn.LOST).sum() == 0
    ready_nodes = twin.state.node[twin.state.phase == dyn.READY]
    assert (ready_nodes != 0).all()
    np.testing.assert_array_equal(obs[0, :, twin.metric_index["replicas_ready"]], np.minimum(3, boutique.max_replicas))


def test_overload_builds_backlog_then_drains(chain4):
    load = np.concatenate([np.full(8, 300.0), np.full(30, 20.0)])
    twin = MicroserviceTwin(chain4, load, initial_replicas=np.full(4, 2))
    twin.reset(seed=0)
    backlogs = []
    for _ in range(len(load) - 1):
        obs, info = twin.step(np.full((1, 4), 2))
        backlogs.append(twin.state.backlog.sum())
    assert max(backlogs[:8]) > 100 and backlogs[-1] < 1.0
    assert twin.state.dropped_total.sum() > 0


def test_deterministic_under_seed(boutique):
    def rollout(seed):
        twin = MicroserviceTwin(boutique, constant_load(50, 20), batch_size=2,
                                scenarios=[{"kind": "pod_crash", "rate_per_pod_per_hour": 30}])
        out = [twin.reset(seed=seed)[0]]
        rng = np.random.default_rng(7)
        for _ in range(19):
            out.append(twin.step(rng.integers(1, 8, size=(2, 11)))[0])
        return np.stack(out)

    a, b, c = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
    rate=st.floats(0.0, 400.0),
    crash=st.floats(0.0, 200.0),
    ddos=st.floats(0.0, 300.0),
    lose_node=st.booleans(),
    node_cpu=st.floats(0.5, 4.0),
)
def test_invariants_conservation_bounds_capacity(batch, seed, rate, crash, ddos, lose_node, node_cpu, chain4):
    topo = topology_from_dict({
        "name": "prop", "entry": "A",
        "cluster": {"nodes": [{"name": "n1", "cpu": node_cpu, "memory_mib": 1024},
                              {"name": "n2", "cpu": 2.0, "memory_mib": 700}]},
        "defaults": {"cpu_request": 0.25, "cpu_limit": 0.5, "memory_request_mib": 128, "memory_limit_mib": 160,
                     "memory_base_mib": 80, "memory_per_inflight_mib": 1.0, "min_replicas": 1, "max_replicas": 6,
                     "startup_seconds": 10, "timeout_seconds": 3, "queue_limit_per_pod": 100},
        "services": {"A": {"throughput_per_replica": 50, "calls": {"B": 1, "C": 0.5}},
                     "B": {"throughput_per_replica": 40, "calls": {"D": 1.5}},
                     "C": {"throughput_per_replica": 40, "calls": {"D": 1}}, "D": {"throughput_per_replica": 60}},
    })
    steps = 12
    scen = [{"kind": "pod_crash", "rate_per_pod_per_hour": crash},
            {"kind": "ddos", "rate": ddos, "start_minute": 0.5, "duration_minutes": 1}]
    if lose_node:
        scen.append({"kind": "node_loss", "node": "n2", "start_minute": 1, "duration_minutes": 1})
    twin = MicroserviceTwin(topo, np.full(steps, rate), scenarios=scen, batch_size=batch,
                            config=TwinConfig(substeps=3))
    twin.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps - 1):
        obs, info = twin.step(rng.integers(-2, 10, size=(batch, 4)))
        s = twin.state
        # Requests are conserved per service: served + dropped + backlog = arrived.
        np.testing.assert_allclose(s.served_total + s.dropped_total + s.backlog, s.arrived_total, rtol=1e-9, atol=1e-6)
        assert (info["dropped"] >= 0).all() and (s.backlog >= -1e-9).all()
        # Replicas stay in bounds.
        desired = obs[:, :, twin.metric_index["replicas_desired"]]
        assert (desired >= topo.min_replicas).all() and (desired <= topo.max_replicas).all()
        live = np.isin(s.phase, [dyn.PENDING, dyn.STARTING, dyn.READY, dyn.CRASHLOOP, dyn.LOST]).sum(axis=2)
        assert (live <= topo.max_replicas).all()
        # Pods never exceed node capacity (requests of every pod bound to a node).
        req_cpu = np.broadcast_to(topo.cpu_request[None, :, None], s.phase.shape)
        req_mem = np.broadcast_to(topo.memory_request_bytes[None, :, None], s.phase.shape)
        cpu_used = _per_node_sum(s.node, req_cpu, topo.num_nodes)
        mem_used = _per_node_sum(s.node, req_mem, topo.num_nodes)
        assert (cpu_used <= topo.node_cpu + 1e-9).all() and (mem_used <= topo.node_memory_bytes + 1e-6).all()
        assert ((s.node >= 0) == np.isin(s.phase, [dyn.STARTING, dyn.READY, dyn.CRASHLOOP, dyn.TERMINATING, dyn.LOST])).all()
        assert np.isfinite(obs).all()


def _per_node_sum(node: np.ndarray, weight: np.ndarray, num_nodes: int) -> np.ndarray:
    """Sum of ``weight`` over the pods bound to each node. Shapes: (B, S, K) -> (B, N)."""
    bound = node >= 0
    bins = (np.arange(node.shape[0])[:, None, None] * num_nodes + node)[bound]
    return np.bincount(bins, weights=weight[bound], minlength=node.shape[0] * num_nodes).reshape(-1, num_nodes)


def test_clusters_at_different_steps_schedule_as_if_alone(boutique):
    """Pending pods retry on nodes rotated by their own cluster's step count (vector envs reset
    clusters independently), so a batch steps each cluster exactly as it would alone."""
    params = dyn.make_params(boutique, TwinConfig(poisson_arrivals=False))
    s, n = boutique.num_services, boutique.num_nodes
    calm = dict(attack_rate=np.zeros(1), crash_rate=np.zeros((1, s)), kills=np.zeros((1, s), np.int64),
                noisy_cpu=np.zeros((1, n)), capacity_factor=np.ones((1, s)), node_up=np.ones((1, n), bool))
    # Scale-ups on every service: new Pending pods dealt round-robin over the nodes, from an
    # offset that rotates with the cluster's step count.
    assert n >= 2
    alone = []
    for step_index in (0, 1):
        state = dyn.with_state(dyn.reset(params, 1, np.full(s, 2)), step_index=np.array([step_index]))
        alone.append(dyn.step(params, state, np.full((1, s), 9), np.random.default_rng(0), entry_rate=np.full(1, 20.0), **calm))
    both = dyn.reset(params, 2, np.full(s, 2))
    both = dyn.with_state(both, step_index=np.array([0, 1]))
    batch = {k: np.concatenate([v, v]) for k, v in calm.items()}
    new, obs, info = dyn.step(params, both, np.full((2, s), 9), np.random.default_rng(0), entry_rate=np.full(2, 20.0), **batch)
    for c in range(2):
        np.testing.assert_array_equal(new.node[c], alone[c][0].node[0])
        np.testing.assert_array_equal(new.phase[c], alone[c][0].phase[0])
        np.testing.assert_array_equal(obs[c], alone[c][1][0])
    assert not np.array_equal(alone[0][0].node, alone[1][0].node)  # the rotation matters here
