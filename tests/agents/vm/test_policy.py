"""The graph actor-critic (agents.vm.policy): shapes, symmetries, padding, masks, save/load, a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO

from agents.vm.policy import MASKED_LOGIT, IncrementalPolicy, VMGraphExtractor, VMGraphPolicy, load_vm_model
from digital_twin.vm import Snapshot
from envs.vm_rescheduling import PHASE_PICK_DESTINATION, PHASE_PICK_VM, VMReschedulingEnv
from envs.vm_sources import FixedSource

ATOL = 1e-5  # summation order differs between relabelled graphs; padding itself changes nothing


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_env(snapshot: Snapshot, max_hosts: int, max_vms: int, budget: int = 8) -> VMReschedulingEnv:
    return VMReschedulingEnv(source=FixedSource(snapshot), max_hosts=max_hosts, max_vms=max_vms, budget=budget)


def make_policy(env, seed: int = 0, **extractor) -> VMGraphPolicy:
    th.manual_seed(seed)
    policy = VMGraphPolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                           features_extractor_kwargs=extractor or None)
    return policy.eval()


def logits_and_value(policy: VMGraphPolicy, obs) -> tuple[np.ndarray, float]:
    with th.no_grad():
        tensors, _ = policy.obs_to_tensor(obs)
        logits, value = policy.action_logits(tensors)
    return logits[0].numpy(), float(value[0, 0])


def phase_one_obs(env: VMReschedulingEnv, which: int = 5):
    """Reset, then select the ``which``-th movable VM: an observation in phase 1."""
    obs, _ = env.reset(seed=0)
    vm = int(np.flatnonzero(env.action_masks()[: env.num_vms])[which])
    obs, *_ = env.step(vm)
    assert env.phase == PHASE_PICK_DESTINATION
    return obs


# ---------------------------------------------------------------------- shapes
def test_extractor_and_policy_shapes(small_snapshot):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env, d_hidden=32)
    obs, _ = env.reset(seed=0)
    tensors, vectorized = policy.obs_to_tensor(obs)
    assert not vectorized and tensors["vm_features"].shape == (1, 155, 7)
    extractor = policy.features_extractor
    assert isinstance(extractor, VMGraphExtractor) and extractor.features_dim == 32
    enc = extractor.encode(policy._preprocess(tensors))
    assert enc.vm.shape == (155, 32) and enc.numa.shape == (86, 32) and enc.context.shape == (1, 32)
    assert enc.num_actions == env.action_space.n
    assert extractor(policy._preprocess(tensors)).shape == (1, 32)

    batch = {k: np.stack([v, phase_one_obs(env)[k]]) for k, v in obs.items()}
    tensors, vectorized = policy.obs_to_tensor(batch)
    assert vectorized
    with th.no_grad():
        logits, values = policy.action_logits(tensors)
        actions, values2, log_prob = policy(tensors, deterministic=True, action_masks=batch["action_mask"])
    assert logits.shape == (2, env.action_space.n) and values.shape == (2, 1)
    assert actions.shape == (2,) and log_prob.shape == (2,) and values2.shape == (2, 1)
    # The batch gives what each observation gives alone (the batched index offsets are right).
    for i in range(2):
        single, value = logits_and_value(policy, {k: v[i] for k, v in batch.items()})
        np.testing.assert_allclose(logits[i].numpy(), single, atol=ATOL)
        assert value == pytest.approx(float(values[i, 0]), abs=ATOL)


def test_logits_follow_the_action_layout(small_snapshot):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env)
    obs, _ = env.reset(seed=0)
    logits, _ = logits_and_value(policy, obs)
    assert env.phase == PHASE_PICK_VM
    # Exactly the env's valid actions carry a score: movable VMs and stop; the rest is masked.
    np.testing.assert_array_equal(logits > MASKED_LOGIT / 2, env.action_masks())
    obs = phase_one_obs(env)
    logits, _ = logits_and_value(policy, obs)
    np.testing.assert_array_equal(logits > MASKED_LOGIT / 2, env.action_masks())
    assert not (logits[env.stop_action] > MASKED_LOGIT / 2)


def test_separate_critic_extractor_and_list_net_arch(small_snapshot):
    env = make_env(small_snapshot, 43, 155)
    policy = VMGraphPolicy(env.observation_space, env.action_space, lambda _: 3e-4, net_arch=[16, 16],
                           share_features_extractor=False)
    assert policy.vf_features_extractor is not policy.pi_features_extractor
    obs, _ = env.reset(seed=0)
    tensors, _ = policy.obs_to_tensor(obs)
    actions = th.as_tensor([env.stop_action])
    values, log_prob, entropy = policy.evaluate_actions(tensors, actions, action_masks=obs["action_mask"][None])
    assert values.shape == (1, 1) and th.isfinite(log_prob).all() and float(entropy[0].detach()) > 0
    th.testing.assert_close(policy.predict_values(tensors), values)


def test_extractor_refuses_another_observation():
    from gymnasium import spaces

    with pytest.raises(ValueError, match="missing keys"):
        VMGraphExtractor(spaces.Dict({"vm_features": spaces.Box(0, 1, (4, 7))}))


# ---------------------------------------------------------------------- symmetries
def relabel_vms(obs, perm, num_vms):
    """The same snapshot with VM ``i`` of the new labels being VM ``perm[i]`` of the old."""
    new = {k: v.copy() for k, v in obs.items()}
    for key in ("vm_features", "vm_host", "vm_mask"):
        new[key][:num_vms] = obs[key][perm]
    inverse = np.argsort(perm)
    if obs["selected_vm"][0] >= 0:
        new["selected_vm"][0] = inverse[obs["selected_vm"][0]]
    else:
        new["action_mask"][:num_vms] = obs["action_mask"][perm]
    return new


def relabel_hosts(obs, perm, num_hosts):
    """The same snapshot with host ``j`` of the new labels being host ``perm[j]`` of the old."""
    new = {k: v.copy() for k, v in obs.items()}
    new["host_features"][:num_hosts] = obs["host_features"][perm]
    new["host_mask"][:num_hosts] = obs["host_mask"][perm]
    inverse = np.argsort(perm)
    real = obs["vm_mask"] > 0
    new["vm_host"][real] = inverse[obs["vm_host"][real]]
    if obs["selected_vm"][0] >= 0:
        slots = (2 * perm[:, None] + np.arange(2)).reshape(-1)
        new["action_mask"][: 2 * num_hosts] = obs["action_mask"][slots]
    return new


@pytest.mark.parametrize("phase", [PHASE_PICK_VM, PHASE_PICK_DESTINATION])
def test_relabelling_vms_permutes_the_vm_scores(small_snapshot, phase):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env)
    obs = env.reset(seed=0)[0] if phase == PHASE_PICK_VM else phase_one_obs(env)
    perm = np.random.default_rng(1).permutation(env.num_vms)
    logits, value = logits_and_value(policy, obs)
    relabelled, value2 = logits_and_value(policy, relabel_vms(obs, perm, env.num_vms))
    if phase == PHASE_PICK_VM:
        np.testing.assert_allclose(relabelled[: env.num_vms], logits[perm], atol=ATOL)
        np.testing.assert_allclose(relabelled[env.num_vms:], logits[env.num_vms:], atol=ATOL)
    else:  # destinations do not depend on how the VMs are numbered
        np.testing.assert_allclose(relabelled, logits, atol=ATOL)
    assert value2 == pytest.approx(value, abs=ATOL)


@pytest.mark.parametrize("phase", [PHASE_PICK_VM, PHASE_PICK_DESTINATION])
def test_relabelling_hosts_permutes_the_destination_scores(small_snapshot, phase):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env)
    obs = env.reset(seed=0)[0] if phase == PHASE_PICK_VM else phase_one_obs(env)
    perm = np.random.default_rng(2).permutation(env.num_hosts)
    logits, value = logits_and_value(policy, obs)
    relabelled, value2 = logits_and_value(policy, relabel_hosts(obs, perm, env.num_hosts))
    if phase == PHASE_PICK_DESTINATION:
        slots = (2 * perm[:, None] + np.arange(2)).reshape(-1)
        np.testing.assert_allclose(relabelled[: 2 * env.num_hosts], logits[slots], atol=ATOL)
        assert relabelled[slots.size:].max() == MASKED_LOGIT
    else:
        np.testing.assert_allclose(relabelled, logits, atol=ATOL)
    assert value2 == pytest.approx(value, abs=ATOL)


def test_the_same_snapshot_padded_to_two_sizes_gives_the_same_logits_and_value(small_snapshot):
    tight, loose = make_env(small_snapshot, 43, 155), make_env(small_snapshot, 64, 400)
    policy = make_policy(tight)
    obs_a, _ = tight.reset(seed=0)
    obs_b, _ = loose.reset(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(8):  # a few migrations: both phases, features rewritten
        (la, va), (lb, vb) = logits_and_value(policy, obs_a), logits_and_value(policy, obs_b)
        real = tight.num_vms if tight.phase == PHASE_PICK_VM else 2 * tight.num_hosts
        np.testing.assert_allclose(la[:real], lb[:real], rtol=0, atol=1e-6)
        assert la[tight.stop_action] == pytest.approx(lb[loose.stop_action], abs=1e-6)
        assert (lb[real: loose.stop_action] == MASKED_LOGIT).all()
        assert va == pytest.approx(vb, abs=1e-6)
        action = int(rng.choice(np.flatnonzero(tight.action_masks()[: tight.stop_action])))
        obs_a, *_ = tight.step(action)
        obs_b, *_ = loose.step(action)


# ---------------------------------------------------------------------- masks
@pytest.mark.parametrize("phase", [PHASE_PICK_VM, PHASE_PICK_DESTINATION])
def test_masked_actions_are_never_chosen(small_snapshot, phase):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env)
    obs = env.reset(seed=0)[0] if phase == PHASE_PICK_VM else phase_one_obs(env)
    mask = env.action_masks()
    batch = {k: np.repeat(v[None], 256, axis=0) for k, v in obs.items()}
    th.manual_seed(0)
    for masks in (np.repeat(mask[None], 256, axis=0), None):  # also when the caller forgets the masks
        actions, _ = policy.predict(batch, action_masks=masks)
        assert mask[actions].all()
    greedy, _ = policy.predict(obs, deterministic=True)
    assert mask[int(greedy)]


def test_no_nan_over_4547_actions_on_the_big_snapshot(big_snapshot):
    env = VMReschedulingEnv(source=FixedSource(big_snapshot), max_hosts=1176, max_vms=4546)
    assert env.action_space.n == 4547
    policy = make_policy(env).train()
    obs0, _ = env.reset(seed=0)
    obs1 = phase_one_obs(env, which=100)
    batch = {k: np.stack([obs0[k], obs1[k]]) for k in obs0}
    tensors, _ = policy.obs_to_tensor(batch)
    masks = th.as_tensor(batch["action_mask"], dtype=th.bool)
    # Push the scores far apart, as a trained policy may: masking must still give finite numbers.
    with th.no_grad():
        for layer in policy.action_net.output_layers():
            layer.weight.mul_(1e3)
    actions = th.as_tensor([int(np.flatnonzero(obs0["action_mask"])[0]), int(np.flatnonzero(obs1["action_mask"])[-1])])
    values, log_prob, entropy = policy.evaluate_actions(tensors, actions, action_masks=masks)
    assert th.isfinite(values).all() and th.isfinite(log_prob).all() and th.isfinite(entropy).all()
    (log_prob.sum() + entropy.sum() + values.sum()).backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(th.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------- SB3
def test_maskable_ppo_learns_and_round_trips_at_another_padding(small_snapshot, tmp_path):
    env = make_env(small_snapshot, 43, 155)
    model = MaskablePPO(VMGraphPolicy, env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
                        policy_kwargs=dict(features_extractor_kwargs=dict(d_hidden=32)))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    after = list(model.policy.parameters())
    assert all(th.isfinite(p).all() for p in after)
    assert any(not th.equal(a, b) for a, b in zip(before, after)), "training changed nothing"
    path = tmp_path / "vm_policy.zip"
    model.save(path)

    obs, _ = make_env(small_snapshot, 43, 155).reset(seed=0)
    expected, value = logits_and_value(model.policy.eval(), obs)
    same = MaskablePPO.load(path, device="cpu")
    np.testing.assert_array_equal(logits_and_value(same.policy, obs)[0], expected)

    # Loaded with a larger env's spaces: same weights, same logits on the same snapshot.
    loose = make_env(small_snapshot, 64, 400)
    bigger = load_vm_model(path, env=loose, device="cpu")
    assert bigger.observation_space["vm_features"].shape == (400, 7) and bigger.action_space.n == 401
    obs_b, _ = loose.reset(seed=0)
    logits_b, value_b = logits_and_value(bigger.policy, obs_b)
    np.testing.assert_allclose(logits_b[:155], expected[:155], atol=1e-6)
    assert logits_b[400] == pytest.approx(expected[155], abs=1e-6)
    assert value_b == pytest.approx(value, abs=1e-6)
    # The original model plans at the other padding too (no reload needed for predict).
    action, _ = same.predict(obs_b, action_masks=loose.action_masks(), deterministic=True)
    assert loose.action_masks()[int(action)]
    assert int(action) == int(np.argmax(np.where(loose.action_masks(), logits_b, -np.inf)))


# ---------------------------------------------------------------------- fast planning
def test_incremental_policy_gives_the_full_forward_pass_logits(small_snapshot):
    env = make_env(small_snapshot, 43, 160, budget=6)
    policy = make_policy(env)
    fast = IncrementalPolicy(policy)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(4)
    done, steps = False, 0
    while not done:
        expected, _ = logits_and_value(policy, obs)
        np.testing.assert_allclose(fast.logits(obs), expected, rtol=0, atol=1e-5)
        mask = env.action_masks()
        assert fast.act(obs, mask) == int(policy.predict(obs, action_masks=mask, deterministic=True)[0])
        action = int(rng.choice(np.flatnonzero(mask[: env.stop_action])))
        obs, _, done, _, _ = env.step(action)
        steps += 1
    assert steps == 12  # six migrations, two phases each
    # Another snapshot of another size starts over with a full encode.
    other = make_env(Snapshot.from_clusters([small_snapshot.clusters[0].copy()]), 50, 200)
    obs, _ = other.reset(seed=0)
    np.testing.assert_allclose(fast.logits(obs), logits_and_value(policy, obs)[0], rtol=0, atol=1e-5)


def test_hosts_without_vms_encode(small_snapshot):
    env = make_env(small_snapshot, 43, 155)
    policy = make_policy(env)
    obs, _ = env.reset(seed=0)
    empty = {k: v.copy() for k, v in obs.items()}
    empty["vm_mask"][:] = 0  # every host empty
    logits, value = logits_and_value(policy, empty)
    assert np.isfinite(logits).all() and np.isfinite(value)
