"""The service-graph policy: shapes, permutation equivariance, topology independence, masks."""

from __future__ import annotations

import numpy as np
import pytest

th = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from sb3_contrib import MaskablePPO  # noqa: E402

from agents.autoscaling.graph import ServiceGraphPolicy, node_inputs  # noqa: E402
from envs.microservice import make_sb3_vec_env  # noqa: E402


def _model(config: str, n_envs: int = 2, seed: int = 0):
    env = make_sb3_vec_env(n_envs, config=config, window_steps=16)
    return MaskablePPO(ServiceGraphPolicy, env, n_steps=16, batch_size=32, seed=seed, device="cpu",
                       policy_kwargs=dict(hidden=16, layers=2))


def _tensors(obs: dict[str, np.ndarray]) -> dict[str, th.Tensor]:
    return {k: th.as_tensor(v, dtype=th.float32) for k, v in obs.items()}


def _logits(model, obs: dict[str, np.ndarray]) -> th.Tensor:
    with th.no_grad():
        features = model.policy.extract_features(_tensors(obs))
        return model.policy.action_net(features)


def _played_obs(model, steps: int = 5) -> dict[str, np.ndarray]:
    env = model.get_env()
    env.seed(3)
    obs = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):  # off the initial state: replicas and load differ per service
        obs, *_ = env.step(rng.integers(0, 5, size=(env.num_envs, env.action_space.nvec.size)))
    return obs


def test_shapes_and_parameters_do_not_depend_on_the_topology():
    chain = _model("chain4_huawei")
    boutique = _model("online_boutique_worldcup")
    obs = _played_obs(chain)
    s, d = obs["metrics"].shape[1], 5
    assert _logits(chain, obs).shape == (2, s * d)
    assert chain.policy.predict_values(_tensors(obs)).shape == (2, 1)
    shapes = {k: v.shape for k, v in chain.policy.state_dict().items()}
    assert shapes == {k: v.shape for k, v in boutique.policy.state_dict().items()}
    # chain4's weights drive Online Boutique: same logits as a policy built there with them.
    boutique.policy.load_state_dict(chain.policy.state_dict())
    b_obs = _played_obs(boutique)
    actions, _ = boutique.predict(b_obs, deterministic=True, action_masks=b_obs["action_mask"].astype(bool))
    assert actions.shape == (2, 11)


def test_relabelling_services_permutes_the_logits():
    model = _model("online_boutique_worldcup")
    obs = _played_obs(model)
    s = obs["metrics"].shape[1]
    perm = np.random.default_rng(1).permutation(s)  # new index i holds old service perm[i]
    inverse = np.argsort(perm)
    permuted = {
        "metrics": obs["metrics"][:, perm],
        "adjacency": obs["adjacency"][:, perm][:, :, perm],
        "edge_index": inverse[obs["edge_index"]],
        "progress": obs["progress"],
        "action_mask": obs["action_mask"].reshape(2, s, -1)[:, perm].reshape(2, -1),
    }
    base = _logits(model, obs).reshape(2, s, -1)
    moved = _logits(model, permuted).reshape(2, s, -1)
    assert th.allclose(moved, base[:, perm], atol=1e-5)
    values = model.policy.predict_values(_tensors(obs))
    assert th.allclose(model.policy.predict_values(_tensors(permuted)), values, atol=1e-5)


def test_visits_count_calls_per_entry_request():
    # chain4: A -> B, A -> C, B -> D, C -> D (one call each): D is reached twice per request.
    model = _model("chain4_huawei")
    obs = _tensors(_played_obs(model))
    x = node_inputs(obs["metrics"], obs["adjacency"], obs["progress"])
    visits = th.expm1(x[0, :, -1])
    calls = obs["adjacency"][0].numpy()
    entry = np.flatnonzero(calls.sum(axis=0) == 0)
    assert x[0, entry, -2].tolist() == [1.0]
    expected = np.zeros(len(calls))
    expected[entry] = 1.0
    for _ in range(len(calls)):
        expected = np.eye(len(calls))[entry[0]] + calls.T @ expected
    np.testing.assert_allclose(visits.numpy(), expected, rtol=1e-5)


def test_masked_deltas_are_never_chosen_and_training_runs():
    model = _model("chain4_huawei", n_envs=4)
    model.learn(64)
    env = model.get_env()
    obs = env.reset()
    for _ in range(20):
        masks = obs["action_mask"].astype(bool)
        actions, _ = model.predict(obs, deterministic=False, action_masks=masks)
        chosen = masks.reshape(4, -1, 5)[np.arange(4)[:, None], np.arange(actions.shape[1])[None], actions]
        assert chosen.all()
        obs, *_ = env.step(actions)


def test_save_and_load_round_trip(tmp_path):
    model = _model("chain4_huawei")
    obs = _played_obs(model)
    model.save(tmp_path / "m.zip")
    loaded = MaskablePPO.load(tmp_path / "m.zip", device="cpu")
    assert th.equal(_logits(model, obs), _logits(loaded, obs))


def test_a_saved_graph_agent_plays_another_topology(tmp_path):
    """Trained on chain4 (4 services), played on Online Boutique (11) through evaluate.py's adapter."""
    from agents.autoscaling import make_policy
    from envs.microservice import MicroserviceCore, load_config

    model = _model("chain4_huawei")
    model.save(tmp_path / "m.zip")
    policy = make_policy(f"agent:{tmp_path / 'm.zip'}")
    for config in ("online_boutique_failures", "chain4_huawei"):  # and back: the spaces follow each core
        core = MicroserviceCore(load_config(config, initial_replicas=1), num_clusters=3)
        core.reset(np.random.default_rng(0))
        policy.reset(core)
        desired = policy.desired_replicas(core, 0.0)
        assert desired.shape == (3, core.num_services)
        assert ((desired >= core.low) & (desired <= core.high)).all()  # masked at the bounds
