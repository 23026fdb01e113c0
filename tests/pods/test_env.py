"""``clustergym/PodPacking-v0``: the checker, exact masks, refused actions, the worked reward."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from digital_twin.pods import ScenarioGenerator
from envs.pod_packing import PHASE_PICK_NODE, PodPackingEnv

SMALL = ScenarioGenerator(node_counts=(4,), pods_per_node=(4, 8))


def test_check_env_on_the_registered_id():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("clustergym/PodPacking-v0", invalid_action="penalty").unwrapped)


def test_masks_are_exact_and_refused_actions_change_nothing():
    env = PodPackingEnv(generator=SMALL, max_nodes=4, max_pods=32, budget=3)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = env.action_masks()
        np.testing.assert_array_equal(obs["action_mask"], mask.astype(np.int8))
        for action in range(env.n_actions):
            trial = copy.deepcopy(env)
            before = trial.cluster.pod_node.tolist()
            if mask[action]:
                trial.step(action)
                if env.phase == PHASE_PICK_NODE:
                    assert trial.cluster.capacity_violations() == []
                elif action != env.stop_action:     # a pod offered in phase 0 has a valid phase-1 action
                    assert trial.action_masks().any()
            else:
                with pytest.raises(ValueError, match="not valid"):
                    trial.step(action)
                assert trial.cluster.pod_node.tolist() == before and trial.phase == env.phase
        choices = np.flatnonzero(mask[:-1]) if env.phase == 0 and mask[:-1].any() else np.flatnonzero(mask)
        obs, _, terminated, _, info = env.step(int(rng.choice(choices)))
        assert info["budget_left"] >= 0
        if terminated:
            obs, _ = env.reset(seed=int(rng.integers(100)))


def test_reward_is_weighted_placement_minus_disruption():
    env = PodPackingEnv(generator=SMALL, max_nodes=4, max_pods=32, budget=5, disruption_weight=0.5)
    env.reset(seed=3)
    c = env.cluster
    victim = int(np.flatnonzero(c.pod_node >= 0)[0])
    env.step(victim)
    _, reward, _, _, info = env.step(env.max_nodes)            # evict
    assert reward == pytest.approx(-env.pod_weight[victim] - 0.5) and info["disruption"] == 1
    assert env.budget_left == 4
