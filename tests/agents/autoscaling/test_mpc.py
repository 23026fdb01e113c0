"""The model-predictive reference: no look at the future trace, the env's generator untouched, batched
rollouts, and at least as good as a fixed replica count on a calm window."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agents.autoscaling import deltas_for, make_policy
from agents.autoscaling.mpc import ModelPredictivePolicy, forecast_entry_rate, repeat_state
from digital_twin.microservices import dynamics
from envs.microservice import MicroserviceCore, load_config

STEPS = 12


def _core(window_steps: int = STEPS, clusters: int = 2, **overrides) -> tuple[MicroserviceCore, np.random.Generator]:
    core = MicroserviceCore(load_config("chain4_huawei", window_steps=window_steps, **overrides), num_clusters=clusters,
                            split="held_out")
    rng = np.random.default_rng(3)
    core.reset(rng, options={"split": "held_out"})
    return core, rng


def _play(core, rng, policy, steps) -> tuple[list[np.ndarray], np.ndarray]:
    policy.reset(core)
    decisions, total = [], np.zeros(core.num_clusters)
    for t in range(steps):
        desired = policy.desired_replicas(core, now_s=t * core.config.step_seconds)
        decisions.append(desired.copy())
        reward, _, _ = core.step(deltas_for(core, desired), rng)
        total += reward
    return decisions, total


def test_forecast_uses_the_past_only_and_is_conservative():
    history = np.array([[10.0, 20.0, 30.0, 40.0], [50.0, 50.0, 50.0, 50.0], [40.0, 30.0, 20.0, 10.0]])
    np.testing.assert_allclose(forecast_entry_rate(history, 2, "last"), [[40, 40], [50, 50], [10, 10]])
    np.testing.assert_allclose(forecast_entry_rate(history, 2, "trend"), [[50, 60], [50, 50], [0, 0]])
    # trend_max: a falling load is held at its recent maximum, a rising one follows the trend.
    np.testing.assert_allclose(forecast_entry_rate(history, 2, "trend_max", recent_steps=2),
                               [[50, 60], [50, 50], [20, 20]])


def test_repeat_state_is_cluster_major_and_a_copy():
    core, _ = _core(clusters=2)
    copies = repeat_state(core.state, 3)
    assert copies.batch_size == 6
    np.testing.assert_array_equal(copies.phase[3:6], np.repeat(core.state.phase[1:2], 3, axis=0))
    copies.backlog[:] = -1.0
    assert (core.state.backlog >= 0).all()


def test_decisions_do_not_depend_on_the_future_of_the_trace():
    """Two cores alike up to step T, the second's trace changed from step T on: the first T + 1
    decisions (the last one taken just before the changed load arrives) are identical."""
    horizon_step = 6
    core_a, rng_a = _core(clusters=1)
    core_b, rng_b = _core(clusters=1)
    changed = np.array(core_b.rates, copy=True)
    changed[core_b.window_start[0] + horizon_step:] *= 5.0
    core_b.rates = changed
    decisions_a, _ = _play(core_a, rng_a, ModelPredictivePolicy(horizon=4), horizon_step + 1)
    decisions_b, _ = _play(core_b, rng_b, ModelPredictivePolicy(horizon=4), horizon_step + 1)
    for a, b in zip(decisions_a, decisions_b):
        np.testing.assert_array_equal(a, b)
    # ... and the changed load does reach the env: the step after differs.
    _, _, info_a = core_a.step(np.zeros_like(core_a.desired), rng_a)
    _, _, info_b = core_b.step(np.zeros_like(core_b.desired), rng_b)
    assert info_b["offered_rate"][0] == pytest.approx(5.0 * info_a["offered_rate"][0])


def test_the_env_generator_and_state_are_untouched():
    core, rng = _core(scenarios=[{"kind": "pod_crash", "services": ["B"], "rate_per_pod_per_hour": 60,
                                  "start_minute": 0, "duration_minutes": 30}])
    policy = ModelPredictivePolicy(horizon=3)
    policy.reset(core)
    for t in range(3):
        before_rng = rng.bit_generator.state
        before_global = np.random.get_state()[1].copy()
        before = core.state.copy()
        desired = policy.desired_replicas(core, now_s=15.0 * t)
        assert rng.bit_generator.state == before_rng
        np.testing.assert_array_equal(np.random.get_state()[1], before_global)
        for name in ("phase", "timer", "backlog", "desired", "served_total", "step_index"):
            np.testing.assert_array_equal(getattr(core.state, name), getattr(before, name))
        assert desired.shape == core.desired.shape and desired.dtype == np.int64
        assert ((desired >= core.low) & (desired <= core.high)).all()
        core.step(deltas_for(core, desired), rng)
    assert policy.decisions == 3 and policy.stats()["seconds_per_decision"] > 0


def test_the_same_seed_gives_the_same_decisions():
    runs = []
    for _ in range(2):
        core, rng = _core()
        runs.append(_play(core, rng, ModelPredictivePolicy(horizon=3, seed=5), 4)[0])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_rollouts_are_one_batched_step_per_horizon_step(monkeypatch):
    core, _ = _core(clusters=3)
    policy = ModelPredictivePolicy(horizon=4, refine_rounds=1, estimate_capacity=False, samples=2)
    policy.reset(core)
    batches = []
    real = dynamics.step

    def counting(params, state, *args, **kwargs):
        batches.append(state.batch_size)
        return real(params, state, *args, **kwargs)

    monkeypatch.setattr(dynamics, "step", counting)
    policy.desired_replicas(core, 0.0)
    s = core.num_services
    k1 = 1 + 4 + 4 * s + 5
    assert batches == [3 * k1 * 2] * 4 + [3 * (2 * s + 1) * 2] * 4  # clusters x plans x samples


def test_capacity_estimate_finds_a_slow_service():
    """A bottleneck the state does not show (capacity x 0.4 on B) is estimated from the served requests."""
    core, rng = _core(window_steps=40, clusters=1, initial_replicas=4,
                      scenarios=[{"kind": "bottleneck", "service": "B", "capacity_factor": 0.4, "start_minute": 0,
                                  "duration_minutes": 30}])
    policy = ModelPredictivePolicy(horizon=4)
    _play(core, rng, policy, 20)
    b = core.topology.index("B")
    assert policy.capacity[0, b] == pytest.approx(0.4, abs=0.1)
    others = [j for j in range(core.num_services) if j != b]
    assert (policy.capacity[0, others] > 0.9).all()


def test_beats_or_matches_static_on_a_calm_window():
    core, rng = _core(window_steps=24, clusters=2)
    _, mpc = _play(core, rng, ModelPredictivePolicy(), 24)
    for replicas in (2, 5, 8):
        core, rng = _core(window_steps=24, clusters=2)
        _, static = _play(core, rng, make_policy("static", static_replicas=replicas), 24)
        assert mpc.sum() >= static.sum() - 1e-9, (replicas, mpc, static)


def test_registry_name_and_a_clear_error_on_a_plain_view():
    policy = make_policy("mpc")
    assert isinstance(policy, ModelPredictivePolicy) and policy.name == "mpc"
    with pytest.raises(ValueError):
        ModelPredictivePolicy(forecast="oracle")
    core, _ = _core()
    view = SimpleNamespace(raw_obs=core.raw_obs, topology=core.topology, low=core.low, high=core.high,
                           desired=core.desired)
    with pytest.raises(TypeError, match="needs the env core"):
        policy.reset(view)
