"""Native vector env and SB3 adapter: make_vec, autoreset modes, one core, determinism, SB3 training."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from envs.microservice import MicroserviceAutoscalingEnv, MicroserviceAutoscalingVectorEnv, MicroserviceCore, load_config
from tests.envs.microservice_helpers import masked_random_actions

ENV_ID = "clustergym/MicroserviceAutoscaling-v0"


def test_make_vec_uses_the_native_vector_env():
    venv = gym.make_vec(ENV_ID, num_envs=6, vectorization_mode="vector_entry_point", config="chain4_huawei",
                        window_steps=8)
    assert isinstance(venv.unwrapped, MicroserviceAutoscalingVectorEnv)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert venv.num_envs == 6 and venv.action_space.shape == (6, 4)
    assert venv.observation_space["metrics"].shape == (6, 4, 14)
    obs, infos = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert venv.observation_space.contains(obs)
        obs, reward, terminated, truncated, infos = venv.step(masked_random_actions(rng, obs["action_mask"], 5))
        assert reward.shape == (6,) and infos["_pod_seconds"].all() and infos["pod_seconds"].shape == (6,)
    venv.close()


def test_next_step_autoreset():
    venv = MicroserviceAutoscalingVectorEnv(3, "chain4_huawei", window_steps=4)
    venv.reset(seed=1)
    keep = np.full((3, 4), 2)
    for t in range(4):
        obs, reward, terminated, truncated, info = venv.step(keep)
        assert truncated.all() == (t == 3) and not terminated.any()
    assert np.all(obs["progress"] == 1.0)
    obs, reward, terminated, truncated, info = venv.step(np.zeros((3, 4), dtype=np.int64))  # ignored: reset step
    assert np.all(reward == 0.0) and not truncated.any() and np.all(obs["progress"] == 0.0)
    assert np.all(info["step"] == 0) and np.all(info["clipped_moves"] == 0)
    obs, *_ = venv.step(keep)
    assert np.all(obs["progress"] == 0.25)


def test_same_step_autoreset_reports_final_observation():
    venv = MicroserviceAutoscalingVectorEnv(2, "chain4_huawei", window_steps=3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    venv.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = venv.step(np.full((2, 4), 2))
    assert truncated.all() and info["_final_obs"].all()
    assert np.all(obs["progress"] == 0.0)  # already the next episode
    assert info["final_obs"][1]["progress"][0] == 1.0 and np.all(info["final_info"]["step"] == 3)


def test_clusters_keep_their_own_step_counters():
    core = MicroserviceCore(load_config("chain4_huawei", window_steps=5), num_clusters=3)
    rng = np.random.default_rng(0)
    core.reset(rng)
    for _ in range(3):
        core.step(np.zeros((3, 4), dtype=np.int64), rng)
    core.reset(rng, mask=np.array([False, True, False]))
    assert core.state.step_index.tolist() == [3, 0, 3]
    truncations = []
    for _ in range(2):
        _, truncated, _ = core.step(np.zeros((3, 4), dtype=np.int64), rng)
        truncations.append(truncated.tolist())
    assert truncations == [[False, False, False], [True, False, True]]


def test_vector_env_at_b1_is_the_single_env():
    """One core: same seed and actions give the same trajectory in both envs."""
    single = MicroserviceAutoscalingEnv("online_boutique_failures", window_steps=25)
    vector = MicroserviceAutoscalingVectorEnv(1, "online_boutique_failures", window_steps=25)
    o1, i1 = single.reset(seed=11)
    o2, i2 = vector.reset(seed=11)
    rng = np.random.default_rng(1)
    for _ in range(25):
        assert data_equivalence(o1, {k: v[0] for k, v in o2.items()}, exact=True)
        assert i1["pod_seconds"] == i2["pod_seconds"][0]
        action = masked_random_actions(rng, o2["action_mask"], 5)
        o1, r1, _, t1, i1 = single.step(action[0])
        o2, r2, _, t2, i2 = vector.step(action)
        assert r1 == r2[0] and t1 == t2[0]
    assert t1


def test_vector_env_same_seed_identical_across_autoresets():
    def rollout():
        venv = MicroserviceAutoscalingVectorEnv(4, "online_boutique_failures", window_steps=6)
        rng = np.random.default_rng(0)
        obs, info = venv.reset(seed=3)
        out = [(obs, info)]
        for _ in range(15):
            step = venv.step(masked_random_actions(rng, obs["action_mask"], 5))
            obs = step[0]
            out.append(step)
        return out

    assert data_equivalence(rollout(), rollout(), exact=True)


def test_importing_the_envs_does_not_import_torch():
    code = ("import sys, envs, envs.microservice, envs.microservice.vector, envs.microservice.parallel; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sb3_ppo_trains_on_the_adapter():
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.microservice.vector import MicroserviceSB3VecEnv, make_sb3_vec_env

    torch.set_num_threads(1)
    venv = make_sb3_vec_env(4, "chain4_huawei", window_steps=16)
    assert isinstance(venv, MicroserviceSB3VecEnv)
    venv.seed(0)
    model = PPO("MultiInputPolicy", VecMonitor(venv), n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    # Episode ends carry SB3's terminal observation and truncation flag.
    venv.reset()
    for _ in range(16):
        obs, rewards, dones, infos = venv.step(np.full((4, 4), 2))
    assert dones.all() and rewards.dtype == np.float32
    assert infos[0]["TimeLimit.truncated"] and infos[0]["terminal_observation"]["progress"][0] == 1.0
    assert obs["progress"][0, 0] == 0.0 and "pod_seconds" in infos[2]


def test_sb3_contrib_maskable_ppo_reads_the_masks():
    import torch
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    from envs.microservice.vector import make_sb3_vec_env

    torch.set_num_threads(1)
    venv = make_sb3_vec_env(2, "chain4_huawei", window_steps=16, initial_replicas=1)
    venv.reset()
    masks = get_action_masks(venv)
    assert masks.shape == (2, 20) and masks.dtype == bool
    assert not masks[0, 0] and masks[0, 2]  # at min replicas: -2 is masked, 0 is allowed
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64


def test_sb3_infos_hold_every_term_as_python_scalars_read_on_access():
    """The adapter's lazy per-cluster infos read as the plain dicts they replace."""
    from collections.abc import Mapping

    from stable_baselines3.common.vec_env import VecMonitor

    from envs.microservice.core import INFO_KEYS
    from envs.microservice.vector import make_sb3_vec_env

    b, window = 3, 4
    sb3 = make_sb3_vec_env(b, "chain4_huawei", window_steps=window, initial_replicas=1)
    native = MicroserviceAutoscalingVectorEnv(b, "chain4_huawei", window_steps=window, initial_replicas=1,
                                              autoreset_mode=AutoresetMode.SAME_STEP)
    sb3.seed(5)
    sb3.reset()
    native.reset(seed=5)
    rng = np.random.default_rng(0)
    kept = []
    for t in range(2 * window + 1):
        actions = rng.integers(0, 5, size=(b, 4))
        _, _, dones, infos = sb3.step(actions)
        _, _, _, _, info = native.step(actions)
        source = info["final_info"] if dones.any() else info
        assert len(infos) == b and dones.all() == ((t + 1) % window == 0)
        for i, entry in enumerate(infos):
            assert isinstance(entry, Mapping) and entry.get("episode") is None and "episode" not in entry
            for key in (*INFO_KEYS, "clipped_moves"):
                expected = source[key][i].item()
                assert entry[key] == expected and type(entry[key]) is type(expected), key
                assert entry.get(key) == expected and key in entry.keys()
            assert ("terminal_observation" in entry) == bool(dones[i])
            assert set(entry) - {"terminal_observation", "TimeLimit.truncated"} == {*INFO_KEYS, "clipped_moves"}
        kept.append((infos, [entry.copy() for entry in infos]))
    # Later steps leave earlier infos alone; a write changes one cluster's info only.
    for infos, copies in kept:
        assert all(type(c) is dict for c in copies)
        assert [dict(entry) for entry in infos] == copies
    infos = kept[0][0]
    infos[1]["extra"] = 1
    assert infos[1]["extra"] == 1 and "extra" not in infos[0] and "extra" not in infos[2]
    del infos[1]["extra"]
    assert dict(infos[1]) == kept[0][1][1]
    # SB3's VecMonitor copies an ending cluster's info and adds its episode.
    monitor = VecMonitor(make_sb3_vec_env(b, "chain4_huawei", window_steps=window))
    monitor.reset()
    for _ in range(window):
        _, _, dones, infos = monitor.step(np.full((b, 4), 2))
    assert dones.all() and all(entry["episode"]["l"] == window and "pod_seconds" in entry for entry in infos)
