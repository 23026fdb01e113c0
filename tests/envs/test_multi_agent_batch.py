"""envs.microservice.multi_agent: the batched per-agent view equals a per-cluster, per-agent reference,
partial resets, and the PettingZoo env (B = 1) being this view."""

from __future__ import annotations

import numpy as np
import pytest

from envs.microservice import MicroserviceCore, load_config
from envs.microservice.multi_agent import MultiAgentView, merge_proposals
from envs.microservice.rewards import MISSION_TERMS, mission_rewards, mission_terms

CASES = [("online_boutique_failures", "roles"), ("online_boutique_failures", "per_service"), ("chain4_huawei", "roles")]


def make_view(config: str, layout: str, b: int = 3, **overrides) -> MultiAgentView:
    core = MicroserviceCore(load_config(config, window_steps=12, initial_replicas="random", **overrides), num_clusters=b)
    view = MultiAgentView(core, layout)
    view.reset(np.random.default_rng(0))
    return view


def random_indices(view: MultiAgentView, rng: np.random.Generator, masked: bool) -> np.ndarray:
    """(B, A, S) delta indices: uniform under the masks, or anywhere (forbidden moves included)."""
    shape = view.action_masks().shape
    u = rng.random(shape)
    return (u * view.action_masks()).argmax(-1) if masked else u.argmax(-1)


def reference_cluster(view: MultiAgentView, b: int, indices: np.ndarray):
    """What the pre-batching PettingZoo env computed for cluster ``b``, one agent at a time."""
    core = view.core
    s, m, a = core.num_services, core.num_metrics, view.num_agents
    obs, masks = [], []
    bounds = core.action_mask()[b]
    for i in range(a):
        o = np.zeros((s, view.feature_dim), np.float32)
        o[:, :m] = core.metrics[b] * view.visible[i][:, None]
        o[:, m], o[:, m + 1], o[:, m + 2], o[:, m + 3:] = view.visible[i], view.scope[i], core.progress[b], core.calls
        obs.append(o)
        allowed = bounds & view.scope[i][:, None] & view.moves[i][None, :]
        allowed[:, view.zero_index] = True
        masks.append(allowed)
    proposals = np.zeros((a, s), np.int64)
    invalid = np.zeros(a, np.int64)
    for i in range(a):
        allowed = view.scope[i] & view.moves[i, indices[i]]
        proposed = core.deltas[indices[i]]
        invalid[i] = ((proposed != 0) & ~allowed).sum()
        proposals[i] = np.where(allowed, proposed, 0)
    merged, conflict = merge_proposals(proposals)
    return np.stack(obs), np.stack(masks), merged, conflict, invalid


@pytest.mark.parametrize("config, layout", CASES)
def test_batched_views_equal_the_per_cluster_reference(config, layout):
    view = make_view(config, layout)
    core = view.core
    rng = np.random.default_rng(1)
    for t in range(10):
        indices = random_indices(view, rng, masked=t % 2 == 0)
        obs, masks, state = view.observations(), view.action_masks(), view.state()
        merged, conflict, invalid = view.merge(indices)
        raw_before = core.desired.copy()
        for b in range(core.num_clusters):
            r_obs, r_masks, r_merged, r_conflict, r_invalid = reference_cluster(view, b, indices[b])
            assert np.array_equal(obs[b], r_obs) and np.array_equal(masks[b], r_masks)
            assert np.array_equal(merged[b], r_merged) and np.array_equal(conflict[b], r_conflict)
            assert np.array_equal(invalid[b], r_invalid)
            assert np.array_equal(state[b], np.concatenate(
                [core.metrics[b], np.full((core.num_services, 1), core.progress[b], np.float32), core.calls], axis=1))
        step = view.step(indices, np.random.default_rng(t))
        assert np.array_equal(step.applied, np.clip(raw_before + merged, core.low, core.high) - raw_before)
        assert np.array_equal(step.invalid, invalid) and np.array_equal(step.conflicts, conflict.sum(axis=1))
        twin_info, raw_obs = core.last_step_data()
        for b in range(core.num_clusters):  # mission terms of one cluster alone
            one = {k: v[b:b + 1] for k, v in twin_info.items()}
            terms = mission_terms(one, raw_obs[b:b + 1], view.scope, core.reward_consts)
            expected = view.agents_config.shared_reward_weight * step.reward[b] + mission_rewards(terms, view.mission_weights)[0]
            assert np.allclose(step.rewards[b], expected, rtol=0, atol=1e-12)
            for k in MISSION_TERMS:
                assert np.allclose(step.terms[k][b], terms[k][0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("config, layout", CASES[:2])
def test_layout_masks_and_indices_are_the_pettingzoo_forms(config, layout):
    view = make_view(config, layout)
    full = view.action_masks()
    layout_masks = view.layout_masks()
    b, a, s, d = full.shape
    assert layout_masks.shape == (b, a, view.mask_size)
    if layout == "per_service":
        actions = np.random.default_rng(0).integers(0, d, size=(b, a))
        idx = view.indices_from(actions)
        for i in range(a):
            assert np.array_equal(layout_masks[:, i], full[:, i, i])
            assert np.array_equal(idx[:, i, i], actions[:, i])
            others = np.delete(idx[:, i], i, axis=1)
            assert (others == view.zero_index).all()
            # a per_service agent's other rows allow only the zero delta
            assert (np.delete(full[:, i], i, axis=1).sum(-1) == 1).all()
    else:
        assert np.array_equal(layout_masks.reshape(full.shape), full)


def test_partial_reset_restarts_only_the_masked_clusters():
    view = make_view("chain4_huawei", "roles", b=4)
    rng = np.random.default_rng(3)
    for _ in range(5):
        view.step(random_indices(view, rng, masked=True), rng)
    before_obs, before_desired = view.observations().copy(), view.core.desired.copy()
    steps_before = view.core.state.step_index.copy()
    mask = np.array([True, False, True, False])
    view.reset(rng, mask=mask)
    steps = view.core.state.step_index
    assert (steps[mask] == 0).all() and np.array_equal(steps[~mask], steps_before[~mask])
    after = view.observations()
    assert np.array_equal(after[~mask], before_obs[~mask]) and np.array_equal(view.core.desired[~mask], before_desired[~mask])


def test_the_pettingzoo_env_is_the_view_with_one_cluster():
    from envs.microservice import parallel_env

    par = parallel_env(config="online_boutique_failures", layout="roles", window_steps=10)
    obs, _ = par.reset(seed=2)
    view = par.view
    assert view.core is par.core and view.core.num_clusters == 1
    assert np.array_equal(np.stack([obs[a]["observation"] for a in par.agents]), view.observations()[0])
    assert np.array_equal(np.stack([obs[a]["action_mask"] for a in par.agents]).astype(bool), view.layout_masks()[0])
    assert np.array_equal(par.state(), view.state()[0])


def test_merge_takes_any_leading_axes():
    proposals = np.array([[[1, 0, -1], [2, -2, 0]], [[0, 0, 0], [-1, -2, 1]]])  # (B=2, A=2, S=3)
    merged, conflict = merge_proposals(proposals)
    assert merged.tolist() == [[2, -2, -1], [-1, -2, 1]]
    assert conflict.tolist() == [[False, False, False], [False, False, False]]
    assert merge_proposals(np.array([[1], [-1]]))[1].tolist() == [True]


def test_unknown_layout_is_refused():
    core = MicroserviceCore(load_config("chain4_huawei"), num_clusters=1)
    with pytest.raises(ValueError, match="layout must be one of"):
        MultiAgentView(core, "teams")
