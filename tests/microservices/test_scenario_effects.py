"""Each failure scenario hurts latency or errors at a fixed replica count; more replicas recover."""

import numpy as np
import pytest

from digital_twin.microservices import MicroserviceTwin

from tests.microservices.conftest import constant_load

STEPS = 40  # 10 minutes; scenarios start at minute 2
SCENARIOS = {
    "ddos_flood": [{"kind": "ddos", "rate": 45, "start_minute": 2}],
    "ddos_pulse": [{"kind": "ddos", "rate": 90, "shape": "pulse", "period_seconds": 60, "duty": 0.5, "start_minute": 2}],
    "pod_crash": [{"kind": "pod_crash", "services": ["frontend"], "kill": 2, "rate_per_pod_per_hour": 20,
                   "start_minute": 2}],
    "contention": [{"kind": "contention", "node": "node-1", "cpu": 3.95, "start_minute": 2}],
    "bottleneck": [{"kind": "bottleneck", "service": "productcatalog", "capacity_factor": 0.2, "start_minute": 2}],
    "node_loss": [{"kind": "node_loss", "node": "node-1", "start_minute": 2}],
}


def _run(topology, replicas, scenario, seed=0):
    twin = MicroserviceTwin(topology, constant_load(40, STEPS), scenarios=scenario,
                            initial_replicas=np.full(topology.num_services, replicas))
    twin.reset(seed=seed)
    p95, err = [], []
    for _ in range(STEPS - 1):
        _, info = twin.step(np.full((1, topology.num_services), replicas))
        p95.append(info["e2e_latency_p95"][0])
        err.append(info["e2e_error_rate"][0])
    after = slice(10, None)  # from minute 2.5
    return float(np.mean(np.array(p95)[after])), float(np.mean(np.array(err)[after]))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_failure_hurts_and_more_replicas_recover(boutique, name):
    base_p95, base_err = _run(boutique, 3, None)
    hit_p95, hit_err = _run(boutique, 3, SCENARIOS[name])
    fixed_p95, fixed_err = _run(boutique, 8, SCENARIOS[name])
    assert base_p95 < boutique.slo_latency_p95_seconds and base_err < 1e-3
    assert hit_p95 > 1.5 * base_p95 or hit_err > 0.05, (hit_p95, hit_err)
    assert fixed_p95 < boutique.slo_latency_p95_seconds and fixed_err < boutique.slo_error_rate, (fixed_p95, fixed_err)
    assert fixed_p95 < hit_p95


def test_a_kill_at_minute_zero_fires_once(boutique):
    """The reset's warm-up step stands for time before the episode: scenarios do not act in it."""
    twin = MicroserviceTwin(boutique, constant_load(40, 10), scenarios=[
        {"kind": "pod_crash", "services": ["frontend"], "kill": 1, "start_minute": 0}],
        initial_replicas=np.full(boutique.num_services, 3))
    twin.reset(seed=0)
    assert int(twin.state.restarts.sum()) == 0
    replicas = np.full((1, boutique.num_services), 3)
    _, info = twin.step(replicas)
    assert int(info["crashes"].sum()) == 1
    for _ in range(3):
        twin.step(replicas)
    assert int(twin.state.restarts.sum()) == 1
