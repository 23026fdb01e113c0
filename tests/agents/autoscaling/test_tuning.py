"""The HPA tuned on the train split: a target of the grid, train windows only, cached, and the same
HPA the evaluation plays."""

from __future__ import annotations

import json

import numpy as np
import pytest

import envs.microservice
from agents.autoscaling import deltas_for, make_policy
from agents.autoscaling.policies import KubernetesHPAPolicy
from agents.autoscaling.tuning import DEFAULT_GRID, TunedHPAPolicy, cache_dir, train_window_indices, tune_hpa_target
from envs.microservice import MicroserviceCore, load_config

GRID = (40, 80, 150)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERGYM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def config():
    return load_config("chain4_huawei", window_steps=10)


@pytest.fixture()
def spy(monkeypatch):
    """Every core built and every reset's options, through the name the tuning imports."""
    seen = {"splits": [], "options": [], "steps": 0}

    class Spy(MicroserviceCore):
        def __init__(self, config, num_clusters=1, split=None):
            seen["splits"].append(split)
            super().__init__(config, num_clusters, split)

        def reset(self, rng, mask=None, options=None):
            seen["options"].append(dict(options or {}))
            return super().reset(rng, mask, options)

        def step(self, deltas, rng):
            seen["steps"] += 1
            return super().step(deltas, rng)

    monkeypatch.setattr(envs.microservice, "MicroserviceCore", Spy)
    return seen


def test_the_target_is_in_the_grid_and_only_train_windows_are_played(config, spy):
    result = tune_hpa_target(config, grid=GRID, seeds=(0,), episodes=3)
    assert result.target in GRID and result.split == "train"
    assert result.target == GRID[int(np.argmax(result.mean_return))]
    assert spy["splits"] == ["train"]
    assert spy["options"] and all(o["split"] == "train" for o in spy["options"])
    core = MicroserviceCore(config, split="train")
    assert set(result.window_starts) <= set(core.window_starts["train"].tolist())
    assert not set(result.window_starts) & set(core.window_starts["heldout"].tolist())
    assert len(result.mean_return) == len(result.pod_hours) == len(GRID)
    assert result.pod_hours[0] >= result.pod_hours[-1]  # a higher target runs fewer pods


def test_every_variant_is_played(spy):
    config = load_config("online_boutique_failures", window_steps=4)
    result = tune_hpa_target(config, grid=(60,), seeds=(0,), episodes=1)
    assert result.variants == tuple(v.name for v in config.scenarios)
    assert {o["scenario"] for o in spy["options"]} == set(result.variants)


def test_the_result_is_cached_by_content(config, spy, cache):
    first = tune_hpa_target(config, grid=GRID, seeds=(0,), episodes=2)
    steps = spy["steps"]
    assert steps > 0 and (cache / "hpa_tuning" / f"{first.key}.json").is_file()
    again = tune_hpa_target(load_config("chain4_huawei", window_steps=10, name="renamed"), grid=GRID, seeds=(0,),
                            episodes=2)
    assert again == first and spy["steps"] == steps  # the same content: read back, nothing played
    other = tune_hpa_target(load_config("chain4_huawei", window_steps=10, reward={"cost": 1.0}), grid=GRID,
                            seeds=(0,), episodes=2)
    assert other.key != first.key and spy["steps"] > steps
    (cache / "hpa_tuning" / f"{first.key}.json").write_text("{broken")
    assert tune_hpa_target(config, grid=GRID, seeds=(0,), episodes=2).key == first.key
    json.loads((cache / "hpa_tuning" / f"{first.key}.json").read_text())  # rewritten


def test_the_batched_tuning_plays_the_evaluated_hpa(config):
    """One cluster of the batch equals KubernetesHPAPolicy alone on the same window and generator."""
    result = tune_hpa_target(config, grid=(70,), seeds=(4,), episodes=1, use_cache=False)
    core = MicroserviceCore(config, num_clusters=1, split="train")
    rng = np.random.default_rng([4, 0])
    core.reset(rng, options={"split": "train", "scenario": config.scenarios[0].name, "window_index": 0})
    policy = KubernetesHPAPolicy(70)
    policy.reset(core)
    total = 0.0
    for t in range(core.window_steps):
        reward, _, _ = core.step(deltas_for(core, policy.desired_replicas(core, t * config.step_seconds)), rng)
        total += float(reward[0])
    assert result.mean_return[0] == pytest.approx(total)


def test_the_policy_tunes_for_the_core_it_is_reset_on(config, spy):
    policy = make_policy("k8s_hpa_tuned")
    assert isinstance(policy, TunedHPAPolicy) and policy.name == "k8s_hpa_tuned" and policy.target is None
    policy.tune_kwargs.update(grid=GRID, seeds=(0,), episodes=2)
    core = MicroserviceCore(config, num_clusters=2, split="held_out")
    rng = np.random.default_rng(0)
    core.reset(rng, options={"split": "held_out"})
    policy.reset(core)
    assert policy.target in GRID
    desired = policy.desired_replicas(core, 0.0)
    expected = KubernetesHPAPolicy(policy.target)
    expected.reset(core)
    np.testing.assert_array_equal(desired, expected.desired_replicas(core, 0.0))
    built = len(spy["splits"])
    policy.reset(core)  # the same config: no second tuning
    assert len(spy["splits"]) == built


def test_make_policy_with_a_config_tunes_at_once(config):
    policy = make_policy("k8s_hpa_tuned", config=config)
    assert policy.target in DEFAULT_GRID


def test_window_indices_and_cache_dir(monkeypatch, tmp_path):
    np.testing.assert_array_equal(train_window_indices(10, 3), [0, 4, 9])
    np.testing.assert_array_equal(train_window_indices(10, 1), [0])
    monkeypatch.delenv("CLUSTERGYM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "clustergym"
    with pytest.raises(ValueError):
        tune_hpa_target("chain4_huawei", grid=())
