"""The VM graph policy reused on ``clustergym/PodPacking-v0`` (agents.pods.graph_policy): shapes, masks, a short PPO run."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO

from agents.pods.graph_policy import MASKED_LOGIT, PodGraphExtractor, PodGraphPolicy
from agents.vm.policy import VMGraphPolicy
from digital_twin.pods import ScenarioGenerator
from envs.pod_packing import GLOBAL_FEATURES, NODE_FEATURES, PHASE_PICK_NODE, POD_FEATURES, PodPackingEnv

SMALL = ScenarioGenerator(node_counts=(4,), pods_per_node=(4, 8))


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_env(max_nodes: int = 6, max_pods: int = 40) -> PodPackingEnv:
    return PodPackingEnv(generator=SMALL, max_nodes=max_nodes, max_pods=max_pods, budget=4)


def make_policy(env: PodPackingEnv, seed: int = 0) -> PodGraphPolicy:
    th.manual_seed(seed)
    return PodGraphPolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                          features_extractor_kwargs=dict(d_hidden=16)).eval()


def logits_of(policy: PodGraphPolicy, obs) -> np.ndarray:
    with th.no_grad():
        tensors, _ = policy.obs_to_tensor(obs)
        logits, value = policy.action_logits(tensors)
    assert value.shape == (1, 1) and th.isfinite(value).all()
    return logits[0].numpy()


def test_the_vm_policy_itself_refuses_the_pod_space():
    env = make_env()
    with pytest.raises(ValueError, match="missing keys"):
        VMGraphPolicy(env.observation_space, env.action_space, lambda _: 3e-4)


def test_extractor_takes_the_pod_feature_sizes():
    env = make_env()
    extractor = PodGraphExtractor(env.observation_space, d_hidden=16)
    assert extractor.embed_pod[0].in_features == len(POD_FEATURES) == env.observation_space["pod_features"].shape[1]
    assert extractor.embed_node[0].in_features == len(NODE_FEATURES)
    assert extractor.context[0].in_features == len(GLOBAL_FEATURES) + 2 * 16


def test_logits_follow_the_masks_in_both_phases():
    env = make_env()
    policy = make_policy(env)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    phases_seen = set()
    for _ in range(30):
        mask = env.action_masks()
        logits = logits_of(policy, obs)
        assert logits.shape == mask.shape == obs["action_mask"].shape == (env.n_actions,)
        assert np.all(logits[~mask] <= MASKED_LOGIT) and np.all(logits[mask] > MASKED_LOGIT / 2)
        with th.no_grad():
            tensors, _ = policy.obs_to_tensor(obs)
            dist = policy.get_distribution(tensors, action_masks=mask[None])
            probs = dist.distribution.probs[0].numpy()
            # Even without the masks MaskablePPO passes: the env's own obs["action_mask"] is applied.
            sampled = policy.get_distribution(tensors).distribution.sample((20,))[:, 0].tolist()
            # The heads alone (no mask): scores exactly where the phase's actions are, for the real pods / nodes.
            encoding = policy.pi_features_extractor.encode(policy._preprocess(tensors))
            scored = policy.action_net(encoding).numpy()[0] > MASKED_LOGIT / 2
        structural = np.zeros(env.n_actions, dtype=bool)
        if env.phase == PHASE_PICK_NODE:
            structural[:env.cluster.num_nodes] = structural[env.max_nodes] = True
        else:
            structural[:env.cluster.num_pods] = structural[env.stop_action] = True
        np.testing.assert_array_equal(scored, structural)
        assert probs[~mask].max(initial=0.0) == 0.0 and np.isclose(probs.sum(), 1.0)
        assert all(mask[int(a)] for a in sampled)
        phases_seen.add(env.phase)
        valid = np.flatnonzero(mask)
        if len(valid) > 1:
            valid = valid[valid != env.stop_action]          # stop last, to see many steps of both phases
        obs, _, terminated, _, _ = env.step(int(rng.choice(valid)))
        if terminated:
            obs, _ = env.reset(seed=int(rng.integers(100)))
    assert phases_seen == {0, PHASE_PICK_NODE}


def test_same_weights_at_another_padding():
    """No layer depends on max_pods / max_nodes: the logits of the real actions do not change with the padding."""
    small, big = make_env(4, 32), make_env(9, 70)
    policy = make_policy(small)
    obs_small, _ = small.reset(seed=5)
    obs_big, _ = big.reset(seed=5)
    a, b = logits_of(policy, obs_small), logits_of(policy, obs_big)
    pods = small.cluster.num_pods
    np.testing.assert_allclose(a[:pods], b[:pods], atol=1e-5)        # phase 0: pick a pod
    np.testing.assert_allclose(a[-1], b[-1], atol=1e-5)              # stop
    pod = int(np.flatnonzero(small.action_masks()[:pods])[0])
    obs_small, *_ = small.step(pod)
    obs_big, *_ = big.step(pod)
    a, b = logits_of(policy, obs_small), logits_of(policy, obs_big)
    nodes = small.cluster.num_nodes
    np.testing.assert_allclose(a[:nodes], b[:nodes], atol=1e-5)      # phase 1: a node ...
    np.testing.assert_allclose(a[small.max_nodes], b[big.max_nodes], atol=1e-5)   # ... or evict


def test_tiny_maskable_ppo_learn():
    env = make_env()
    model = MaskablePPO(PodGraphPolicy, env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                        policy_kwargs=dict(features_extractor_kwargs=dict(d_hidden=16)))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=64)
    after = list(model.policy.parameters())
    assert all(th.isfinite(p).all() for p in after)
    assert any(not th.equal(x, y) for x, y in zip(before, after)), "training changed nothing"
    obs, _ = env.reset(seed=1)
    for _ in range(10):
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        assert env.action_masks()[int(action)]
        obs, _, terminated, _, _ = env.step(int(action))
        if terminated:
            break
