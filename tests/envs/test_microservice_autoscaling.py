"""clustergym/MicroserviceAutoscaling-v0: checker, configs, determinism, bounds, splits, rewards, actions."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import envs  # noqa: F401  (registers the ids)
from digital_twin.microservices.metrics import METRIC_INDEX
from digital_twin.microservices.traces import (
    HUAWEI_HELDOUT_HOURS,
    HUAWEI_TRAIN_HOURS,
    WORLDCUP98_HELDOUT_DAYS,
    WORLDCUP98_TRAIN_DAYS,
)
from envs.microservice.config import CONFIG_DIR, MicroserviceConfig, builtin_configs, load_config
from envs.microservice.core import MicroserviceCore
from envs.microservice.rewards import RewardWeights, global_reward
from envs.microservice.single import MicroserviceAutoscalingEnv
from envs.microservice.spaces import MaskedMultiDiscrete
from tests.envs.microservice_helpers import masked_random_actions

ENV_ID = "clustergym/MicroserviceAutoscaling-v0"
#: check_env warnings we accept (none so far); anything else fails the test.
CHECK_ENV_ALLOWED: tuple[str, ...] = ()


def _check_env_strict(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in CHECK_ENV_ALLOWED)]
    assert not unexpected, unexpected


@pytest.mark.parametrize("env_id", sorted(i for i in gym.registry if i.startswith("clustergym/Microservice")))
def test_check_env_on_every_registered_id(env_id):
    _check_env_strict(gym.make(env_id, window_steps=20))


@pytest.mark.parametrize("config", builtin_configs())
def test_check_env_on_every_builtin_config(config):
    assert len(builtin_configs()) >= 3
    _check_env_strict(gym.make(ENV_ID, config=config, window_steps=20))


def test_reference_config_lists_every_key():
    """online_boutique_worldcup.yaml is the documented reference: it sets every config key."""
    import yaml

    doc = yaml.safe_load((CONFIG_DIR / "online_boutique_worldcup.yaml").read_text())
    keys = {f for f in MicroserviceConfig.__dataclass_fields__} - {"name", "source"}
    assert keys <= set(doc), keys - set(doc)


@pytest.mark.parametrize("bad, key", [
    ({"window_steps": 0}, "window_steps"),
    ({"split": "test"}, "split"),
    ({"windows": 3}, "windows"),
    ({"reward": {"latency": 1.0}}, "reward.latency"),
    ({"action_deltas": [-1, 1]}, "action_deltas"),
    ({"agents": {"layout": "roles", "roles": {"r": {"moves": [0, 3]}}}}, "agents.roles.r.moves"),
    ({"agents": {"roles": {"r": {"mission": {"speed": 1.0}}}}}, "agents.roles.r.mission.speed"),
])
def test_bad_config_is_refused_naming_the_key(bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config("chain4_huawei", **bad)


def test_overriding_a_loaded_config_keeps_the_rest():
    import dataclasses

    base = load_config("online_boutique_failures")
    changed = load_config(base, window_steps=10, reward={"cost": 0.2})
    assert changed.window_steps == 10 and changed.reward == RewardWeights(1.0, 1.0, 0.2)
    assert dataclasses.replace(changed, window_steps=base.window_steps, reward=base.reward, source=base.source) == base


def test_same_seed_gives_identical_trajectories():
    def rollout(seed):
        env = MicroserviceAutoscalingEnv("online_boutique_failures", window_steps=30, initial_replicas="random")
        env.action_space.seed(123)
        obs, info = env.reset(seed=seed)
        out = [(obs, info)]
        for _ in range(30):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=obs["action_mask"]))
            out.append((obs, reward, terminated, truncated, info))
        return out

    first, second = rollout(5), rollout(5)
    assert data_equivalence(first, second, exact=True)
    assert not data_equivalence(first, rollout(6))


@pytest.mark.parametrize("config", ["online_boutique_failures", "chain4_huawei"])
def test_observations_stay_inside_their_space_under_random_masked_play(config):
    """Every scenario variant, random and scale-up-heavy masked play; bounds are hard (unclipped)."""
    steps = 100  # 25 minutes: every failure variant starts within the window
    env = MicroserviceAutoscalingEnv(config, window_steps=steps, initial_replicas="random")
    space = env.observation_space
    rng = np.random.default_rng(0)
    seen = {"max_replicas": False, "attack": False, "crash": False, "violation": False}
    rate = METRIC_INDEX["request_rate"]  # the one bound meant to clip (bursts above the rate scale)
    excess = 0.0  # how far a normalised value, before the clip, ever went over its bound
    for episode, variant in enumerate(env.core.variant_names):
        obs, _ = env.reset(seed=episode, options={"scenario": variant})
        for t in range(steps):
            assert space.contains(obs), (variant, t)
            assert all(np.all(np.isfinite(v)) for v in obs.values())
            upward = episode % 2 == 1 and t < 40  # drive replicas to their maximum half the time
            action = masked_random_actions(rng, obs["action_mask"][None], env.core.num_deltas, upward=upward)[0]
            obs, _, _, truncated, info = env.step(action)
            over = env.core.raw_obs[0] * env.core.obs_scale - env.core.obs_high
            excess = max(excess, float(np.delete(over, rate, axis=1).max()))
            seen["max_replicas"] |= bool(np.any(env.core.desired == env.core.high))
            seen["attack"] |= info["attack_rate"] > 0
            seen["crash"] |= info["crashes"] > 0
            seen["violation"] |= info["slo_violated"]
        assert truncated and space.contains(obs)
    assert seen["max_replicas"] and seen["violation"]
    if config == "online_boutique_failures":
        assert seen["attack"] and seen["crash"]
    assert excess < 1e-5  # only float32 rounding ever touched a bound


def test_single_env_random_masked_play_short_episode():
    env = gym.make(ENV_ID, config="online_boutique_failures", window_steps=12)
    obs, _ = env.reset(seed=1, options={"scenario": "ddos_flood"})
    steps = 0
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=obs["action_mask"]))
        assert env.observation_space.contains(obs) and not terminated and np.isfinite(reward)
        steps += 1
    assert steps == 12 and info["step"] == 12


@pytest.mark.parametrize("config, unit, train, held_out", [
    ("online_boutique_worldcup", "day", set(WORLDCUP98_TRAIN_DAYS), set(WORLDCUP98_HELDOUT_DAYS)),
    ("chain4_huawei", "hour", set(HUAWEI_TRAIN_HOURS), set(HUAWEI_HELDOUT_HOURS)),
])
def test_held_out_and_training_windows_are_disjoint(config, unit, train, held_out):
    core = MicroserviceCore(load_config(config), num_clusters=1)
    train_minutes = core.window_minutes("train")
    held_minutes = core.window_minutes("held_out")
    assert len(train_minutes) and len(held_minutes)
    assert not set(train_minutes.tolist()) & set(held_minutes.tolist())

    def units(minutes):
        if unit == "day":
            return set(np.datetime_as_string(minutes.astype("datetime64[D]")).tolist())
        return set(((minutes.astype(np.int64) % 1440) // 60).tolist())

    assert units(train_minutes) <= train and units(held_minutes) <= held_out
    # Episodes follow the split: the argument and the reset option.
    env = MicroserviceAutoscalingEnv(config, split="held_out")
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert info["split"] == "held_out"
        assert np.datetime64(info["window_start"]) in set(held_minutes.tolist())
    _, info = env.reset(seed=0, options={"split": "train"})
    assert info["split"] == "train" and np.datetime64(info["window_start"]) in set(train_minutes.tolist())


def test_reward_is_the_documented_formula():
    env = MicroserviceAutoscalingEnv("online_boutique_failures", window_steps=25, reward={"cost": 0.7})
    core = env.core
    obs, _ = env.reset(seed=3, options={"scenario": "ddos_pulse"})
    max_pod_seconds = core.high.sum() * 15.0
    seen_violation = False
    for _ in range(25):
        obs, reward, _, _, info = env.step(env.action_space.sample(mask=obs["action_mask"]))
        assert reward == pytest.approx(info["reward_slo"] + info["reward_drop"] + info["reward_cost"], abs=1e-12)
        assert info["reward_slo"] == -1.0 * info["slo_violated"]
        assert info["reward_drop"] == pytest.approx(-1.0 * info["e2e_error_rate"])
        assert info["reward_cost"] == pytest.approx(-0.7 * info["pod_seconds"] / max_pod_seconds)
        assert info["slo_violation_seconds"] == 15.0 * info["slo_violated"]
        assert info["failed_requests"] == pytest.approx(info["e2e_error_rate"] * info["entry_requests"])
        seen_violation |= info["slo_violated"]
    assert seen_violation


def test_docstring_worked_example():
    terms = {"slo": np.array([1.0]), "drop": np.array([0.004]), "cost": np.array([30 * 15 / (101 * 15)])}
    assert global_reward(terms, RewardWeights())[0] == pytest.approx(-1.1525, abs=5e-4)
    assert MicroserviceCore(load_config("online_boutique_worldcup")).high.sum() == 101


def test_deltas_are_clipped_to_bounds_and_masked():
    env = MicroserviceAutoscalingEnv("chain4_huawei", window_steps=10, initial_replicas={"A": 8, "B": 1})
    obs, _ = env.reset(seed=0)
    core = env.core
    d = core.num_deltas
    mask = obs["action_mask"].reshape(core.num_services, d).astype(bool)
    up2, down2, keep = (int(np.flatnonzero(core.deltas == x)[0]) for x in (2, -2, 0))
    assert not mask[0, up2] and mask[0, down2] and not mask[1, down2] and mask[:, keep].all()
    assert np.array_equal(env.action_masks(), obs["action_mask"].astype(bool))
    action = np.array([up2, down2, keep, keep])
    _, _, _, _, info = env.step(action)
    assert core.desired[0, 0] == 8 and core.desired[0, 1] == 1 and info["clipped_moves"] == 2


def test_invalid_use_raises_clear_errors():
    env = MicroserviceAutoscalingEnv("chain4_huawei", window_steps=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, dtype=np.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(np.full(4, 5))
    env.step(np.full(4, 2))
    env.step(np.full(4, 2))
    with pytest.raises(RuntimeError, match="window has ended"):
        env.step(np.full(4, 2))


def test_reset_options_fix_window_and_scenario():
    env = MicroserviceAutoscalingEnv("online_boutique_failures", window_steps=10)
    _, a = env.reset(seed=0, options={"window_index": 7, "scenario": "node_loss"})
    _, b = env.reset(seed=1, options={"window_index": 7, "scenario": "node_loss"})
    assert a["window_start"] == b["window_start"] and a["scenario"] == b["scenario"] == "node_loss"
    with pytest.raises(ValueError, match="unknown scenario"):
        env.reset(options={"scenario": "meteor"})


def test_env_pickles_and_renders():
    env = MicroserviceAutoscalingEnv("chain4_huawei", window_steps=5, render_mode="ansi")
    clone = pickle.loads(pickle.dumps(env))
    o1, _ = env.reset(seed=2)
    o2, _ = clone.reset(seed=2)
    assert data_equivalence(o1, o2, exact=True)
    assert "step 0/5" in env.render()


def test_masked_multidiscrete_takes_the_flat_mask():
    space = MaskedMultiDiscrete(np.array([3, 3]), seed=0)
    mask = np.array([0, 0, 1, 1, 0, 0], dtype=np.int8)
    for _ in range(20):
        assert space.sample(mask=mask).tolist() == [2, 0]



def test_docstring_examples_run():
    import doctest

    import envs.microservice.parallel as multi
    import envs.microservice.single as single

    for module in (single, multi):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
