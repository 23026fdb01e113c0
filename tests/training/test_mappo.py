"""training/mappo.py (algorithms mappo / ippo): the loss pieces, masks, learning over random on chain4,
the saved policy on other topologies, and ``train.py`` end to end with an exact resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from envs.microservice import MicroserviceCore, load_config
from envs.microservice.multi_agent import MultiAgentView
from tests.training.test_train_cli import ROOT, _one_line_error, interrupt_after, train
from training import mappo
from training.config import load_train_config

QUICK = {"mappo": ROOT / "configs/train/autoscaling_mappo_quick.yaml", "ippo": ROOT / "configs/train/autoscaling_ippo_quick.yaml"}
CHAIN4 = "configs/microservice_autoscaling/chain4_huawei.yaml"


def quick_config(algorithm: str = "mappo", *overrides: str) -> dict:
    return load_train_config(QUICK[algorithm], list(overrides))


class RandomAgents:
    """Every agent uniform over its allowed moves, merged by the layout's rule (the baseline to beat)."""

    def __init__(self, layout: str, seed: int = 0):
        self.layout, self.seed, self.name = layout, seed, f"random_{layout}"

    def reset(self, core) -> None:
        self.view, self.rng = MultiAgentView(core, self.layout), np.random.default_rng(self.seed)

    def desired_replicas(self, core, now_s: float) -> np.ndarray:
        mask = self.view.action_masks()
        return core.desired + self.view.merge((self.rng.random(mask.shape) * mask).argmax(-1))[0]


def mean_return(policy, seed: int, episodes: int = 8, window_steps: int = 40) -> float:
    from evaluation.autoscaling import evaluate_autoscaling

    rows, _ = evaluate_autoscaling(load_config(CHAIN4, window_steps=window_steps), [policy], [seed], episodes=episodes,
                                   split="train", progress=False)
    return float(np.mean([r["episode_return"] for r in rows]))


# ---------------------------------------------------------------------- loss pieces
def test_value_loss_is_clipped_around_the_old_value_not_the_target():
    old, target = torch.tensor([0.0]), torch.tensor([1.0])
    value = torch.tensor([0.5], requires_grad=True)
    loss = mappo.clipped_value_loss(value, old, target, clip=0.2, delta=10.0)
    # The clipped prediction is old + 0.2 = 0.2, further from the target than 0.5: its error counts,
    # and the new value gets no gradient (it moved more than clip from the old value).
    assert loss.item() == pytest.approx(0.5 * 0.8 ** 2)
    loss.backward()
    assert value.grad.item() == 0.0
    # Inside the clip range it is the plain Huber loss, quadratic below delta and linear above it.
    near = mappo.clipped_value_loss(torch.tensor([0.1]), old, target, clip=0.2, delta=10.0)
    assert near.item() == pytest.approx(0.5 * 0.9 ** 2)
    far = mappo.clipped_value_loss(torch.tensor([0.0]), old, torch.tensor([30.0]), clip=0.2, delta=10.0)
    assert far.item() == pytest.approx(10.0 * (30.0 - 5.0))


def test_gae_bootstraps_from_the_final_value_where_a_window_ends():
    gamma, lam = 0.9, 0.5
    t, b, a = 3, 2, 1
    r = mappo.Rollout(x=None, critic_x=None, mask=None, action=None, log_prob=None,
                      value=torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).reshape(t, b, a),
                      reward=torch.ones(t, b, a), done=torch.tensor([[False, False], [True, False], [False, False]]),
                      final_value=torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]]).reshape(t, b, a),
                      last_value=torch.tensor([[7.0], [8.0]]))
    adv, ret = mappo.compute_advantages(r, gamma, lam)
    # cluster 0: the window ended after step 1 (bootstrap from V(final) = 10), a new one starts at step 2
    d2 = 1 + gamma * 7.0 - 5.0
    d1 = 1 + gamma * 10.0 - 3.0
    d0 = 1 + gamma * 3.0 - 1.0
    assert adv[:, 0, 0].tolist() == pytest.approx([d0 + gamma * lam * d1, d1, d2])
    # cluster 1: one episode through the rollout
    e2 = 1 + gamma * 8.0 - 6.0
    e1 = 1 + gamma * 6.0 - 4.0 + gamma * lam * e2
    e0 = 1 + gamma * 4.0 - 2.0 + gamma * lam * e1
    assert adv[:, 1, 0].tolist() == pytest.approx([e0, e1, e2])
    assert torch.equal(ret, adv + r.value)


def test_value_norm_follows_marlbenchmark():
    norm = mappo.ValueNorm(beta=0.99999)
    x = torch.tensor([1.0, 3.0, 5.0, 7.0])
    norm.update(x)
    mean, var = x.double().mean(), (x.double() ** 2).mean() - x.double().mean() ** 2  # debiased: the batch's own
    assert norm.normalize(x).double().numpy() == pytest.approx(((x.double() - mean) / var.sqrt()).numpy(), rel=1e-5)
    assert torch.allclose(norm.denormalize(norm.normalize(x)), x, atol=1e-5)
    norm.update(torch.full((4,), 100.0))  # almost equal weights of the two batches at beta ~ 1
    assert norm._mean_std()[0].item() == pytest.approx((4.0 + 100.0) / 2, rel=1e-4)
    off = mappo.ValueNorm(enabled=False)
    off.update(x)
    assert torch.equal(off.normalize(x), x) and torch.equal(off.denormalize(x), x)


# ---------------------------------------------------------------------- masks, critic inputs
@pytest.mark.parametrize("layout", ["roles", "per_service"])
def test_rollout_actions_respect_the_masks(layout):
    learner = mappo.make_learner(quick_config("mappo", f"mappo.layout={layout}", "n_envs=4"))
    rollout = mappo.collect_rollout(learner, 30)
    allowed = torch.gather(rollout.mask, -1, rollout.action[..., None]).squeeze(-1)
    assert allowed.all()
    view = learner.view
    for t in range(rollout.action.shape[0]):
        assert (view.merge(rollout.action[t].numpy())[2] == 0).all()  # no ignored (invalid) move
    if layout == "per_service":  # an agent moves its own service only
        a = view.num_agents
        off = ~torch.eye(a, dtype=torch.bool)
        assert (rollout.action[:, :, off] == view.zero_index).all()
    # the log-probabilities are those of the masked distribution (other rows: probability one)
    assert torch.isfinite(rollout.log_prob).all() and (rollout.log_prob <= 0).all()


def test_the_actor_never_picks_a_masked_move_even_when_it_prefers_one():
    core = MicroserviceCore(load_config("online_boutique_failures", initial_replicas=1), num_clusters=2)
    agents = core.config.agents
    view = MultiAgentView(core, "roles")
    actor = mappo.Actor(mappo.input_dims(core.num_metrics, view.num_agents, False)[0], 8, core.num_deltas)
    with torch.no_grad():
        actor.head.bias.copy_(torch.tensor([100.0, 50.0, 0.0, -50.0, -50.0]))  # every row prefers -2, then -1, then 0
    policy = mappo.MAPPOPolicy(actor, "roles", agents, tuple(core.deltas.tolist()))
    core.reset(np.random.default_rng(0))
    policy.reset(core)
    desired = policy.desired_replicas(core, 0.0)
    # At 1 replica (every service's minimum) -2 and -1 are masked: every role abstains.
    assert (core.desired == core.low).all() and np.array_equal(desired, core.desired)
    x, _, mask = mappo.network_inputs(policy.view, policy.roles, centralised=False)
    logits = actor(mappo.flat(x), policy.adj).masked_fill(~mappo.flat(mask), mappo.MASKED_LOGIT)
    assert mappo.flat(mask).gather(-1, logits.argmax(-1)[..., None]).all()


class FixedLogits(torch.nn.Module):
    """An actor whose every row has the same logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.log(torch.tensor(logits))

    def forward(self, x, adj):
        return self.logits.expand(*x.shape[:2], -1)


@pytest.mark.parametrize("action, expected", [("median", 1), ("mode", 0)])
def test_the_policy_moves_by_the_median_delta_by_default(action, expected):
    # Deltas out of order on purpose: the median is taken over their values.
    config = load_config("chain4_huawei", action_deltas=[0, 2, -1, 1, -2], initial_replicas=4)
    core = MicroserviceCore(config, num_clusters=1)
    core.reset(np.random.default_rng(0))
    probs = [0.4, 0.3, 0.0, 0.3, 0.0]  # P(0) = 0.4, P(+1) = P(+2) = 0.3
    policy = mappo.MAPPOPolicy(FixedLogits(probs), "per_service", config.agents, config.action_deltas, action=action)
    policy.reset(core)
    assert (policy.desired_replicas(core, 0.0) - core.desired == expected).all()
    with pytest.raises(ValueError, match="action must be one of"):
        mappo.MAPPOPolicy(FixedLogits(probs), "per_service", config.agents, config.action_deltas, action="argmax")


def test_mappo_and_ippo_differ_in_what_the_critic_sees():
    m = quick_config("mappo")
    central, independent = mappo.make_learner(m), mappo.make_learner(dict(m, algorithm="ippo"))
    assert central.centralised and not independent.centralised
    x, cx, _ = mappo.network_inputs(central.view, mappo.role_features(central.view), True)
    xi, cxi, _ = mappo.network_inputs(independent.view, mappo.role_features(independent.view), False)
    assert cxi is xi and cx.shape[-1] == central.agent.critic.kwargs["in_dim"] != independent.agent.critic.kwargs["in_dim"]
    # per_service: the centralised critic sees every service's metrics, the independent one its neighbours'
    ps = mappo.make_learner(dict(m, mappo=dict(m["mappo"], layout="per_service")))
    _, cx, _ = mappo.network_inputs(ps.view, mappo.role_features(ps.view), True)
    mm = ps.view.core.num_metrics
    assert np.array_equal(cx[:, 0, :, :mm], ps.view.core.metrics)
    assert not np.array_equal(cx[:, 0, :, :mm], ps.view.observations()[:, 0, :, :mm])


# ---------------------------------------------------------------------- learning, the saved policy
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """MAPPO, role agents, chain4, 3200 cluster steps (a few seconds), seeded."""
    run = tmp_path_factory.mktemp("mappo") / "run"
    run.mkdir()
    config = quick_config("mappo", "total_timesteps=3200", "eval.every_timesteps=800", "eval.episodes=4")
    summary = mappo.train(config, run, {"run_id": "test"}, resume=False, progress=False)
    assert not summary["interrupted"] and summary["num_timesteps"] == 3200 and summary["split"] == "train"
    return run


def test_mappo_on_a_tiny_budget_beats_random_agents_on_chain4(trained_run):
    # On other windows than best/ was picked on (seed 1, not eval.seed 0).
    trained = mean_return(mappo.load_mappo_policy(trained_run / "best"), seed=1)
    random = mean_return(RandomAgents("roles"), seed=1)
    assert trained > random + 2.0, (trained, random)


def test_the_saved_policy_loads_and_runs_on_another_topology(trained_run):
    meta = json.loads((trained_run / "best" / "metadata.json").read_text())
    assert meta["env_id"] == mappo.ENV_ID and meta["algorithm"] == "mappo" and meta["layout"] == "roles"
    assert meta["agent_names"] == ["ddos_manager", "availability_manager", "resource_manager"]
    assert meta["observation_space"].startswith("Dict(") and meta["selection_split"] == "train" and "torch" in meta["versions"]
    for path in (trained_run, trained_run / "best", trained_run / "last" / "model.pt"):
        assert mappo.load_mappo_policy(path).name == f"agent:{trained_run.name}"
    policy = mappo.load_mappo_policy(trained_run / "last")
    core = MicroserviceCore(load_config("online_boutique_failures"), num_clusters=3)  # 11 services, not 4
    core.reset(np.random.default_rng(0))
    policy.reset(core)
    for t in range(5):
        desired = policy.desired_replicas(core, t * 15.0)
        assert desired.shape == (3, 11) and (desired >= core.low).all() and (desired <= core.high).all()
        core.step(desired - core.desired, np.random.default_rng(t))
    with pytest.raises(ValueError, match="action_deltas"):
        policy.reset(MicroserviceCore(load_config("chain4_huawei", action_deltas=[-1, 0, 1]), num_clusters=1))
    with pytest.raises(FileNotFoundError, match="model.pt"):
        mappo.load_mappo_policy(trained_run / "tb")


def test_evaluation_leaves_the_training_rngs_alone():
    config = quick_config("mappo", "eval.episodes=1")
    learner = mappo.make_learner(config)
    before = mappo.capture_rngs()
    mappo.Evaluation(config)(mappo.as_policy(learner, config))
    after = mappo.capture_rngs()
    assert torch.equal(before["torch"], after["torch"]) and before["python"] == after["python"]


# ---------------------------------------------------------------------- train.py end to end
def tiny_quick_config(tmp: Path, algorithm: str, **changes) -> Path:
    doc = yaml.safe_load(QUICK[algorithm].read_text())
    doc.update({"total_timesteps": 1920, "eval": {"every_timesteps": 640, "episodes": 1}}, **changes)
    path = tmp / f"{algorithm}_tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def eval_rows(run: Path) -> list[dict[str, str]]:
    with (run / "eval.csv").open() as f:
        return list(csv.DictReader(f))


def model_tensors(model_pt: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(model_pt, map_location="cpu", weights_only=True)
    return {f"{part}.{k}": v for part, sd in saved.items() for k, v in sd.items()}


@pytest.mark.parametrize("algorithm", ["mappo", "ippo"])
def test_the_quick_config_runs_and_resumes_to_the_same_result(tmp_path, algorithm):
    runs = tmp_path / "runs"
    cfg = tiny_quick_config(tmp_path, algorithm)
    proc = train(str(cfg), "--runs-dir", str(runs), "--run-name", "straight")
    assert "done: 1920 steps; train-split evaluation: return" in proc.stdout
    run = runs / "straight"
    for name in ("config.yaml", "run.json", "eval.csv", "checkpoint/manifest.json", "checkpoint/model.pt",
                 "checkpoint/state.pkl", "best/model.pt", "best/metadata.json", "last/model.pt", "last/metadata.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir()), "no TensorBoard events"
    rows = eval_rows(run)
    assert [int(r["timesteps"]) for r in rows] == [640, 1280, 1920]
    assert rows[0]["hpa_episode_return"] == rows[-1]["hpa_episode_return"]
    assert json.loads((run / "last" / "metadata.json").read_text())["algorithm"] == algorithm

    manifest = interrupt_after(cfg, runs, "cut", updates=2, poll_s=0.01)
    assert 0 < json.loads(manifest.read_text())["num_timesteps"] < 1920
    assert not (runs / "cut" / "last").exists()
    train("--resume", str(runs / "cut"))
    a, b = model_tensors(run / "last" / "model.pt"), model_tensors(runs / "cut" / "last" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert eval_rows(run) == eval_rows(runs / "cut")

    # A checkpoint of the other algorithm is refused, with its file named.
    other = tmp_path / "other"
    shutil.copytree(run, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["algorithm"] = "ippo" if algorithm == "mappo" else "mappo"
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    _one_line_error(train("--resume", str(other), check=False), "manifest.json", "algorithm differs")


def test_benchmark_counts_agent_steps():
    rate = mappo.benchmark_agent_steps_per_second("mappo", "roles", CHAIN4, steps=64, n_envs=2, n_steps=32, n_epochs=1)
    assert rate > 0


def test_evaluate_plays_a_mappo_run_as_agent_path(trained_run):
    from evaluation.cli import autoscaling_policies

    policy, = autoscaling_policies([f"agent:{trained_run}"], 5, 60)
    assert isinstance(policy, mappo.MAPPOPolicy) and policy.name == "agent:run"
    from digital_twin.cli import UsageError

    with pytest.raises(UsageError, match="no MAPPO / IPPO model"):
        autoscaling_policies([f"agent:{trained_run / 'nothing.pt'}"], 5, 60)


def test_ship_copies_a_mappo_run_with_its_evaluations(trained_run, tmp_path):
    import shutil

    import yaml

    from evaluation.cli import main as evaluate
    from training.ship import ship

    run = tmp_path / "mappo_run"
    shutil.copytree(trained_run, run)
    config = quick_config("mappo", "total_timesteps=3200", "eval.every_timesteps=800", "eval.episodes=4")
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "run.json").write_text(json.dumps({"run_id": "test", "command": ["python", "train.py", "q.yaml"]}))
    results = []
    for scenario in ("calm", "kills"):
        assert evaluate(["configs/microservice_autoscaling/chain4_failures.yaml", "--policies", "k8s_hpa",
                         f"agent:{run}", "--scenarios", scenario, "--seeds", "0", "--out-dir", str(tmp_path / "results"),
                         "--run-name", scenario, "--no-progress"]) == 0
        results.append(tmp_path / "results" / scenario)
    dest = ship(run, tmp_path / "models" / "mappo", evaluation=results)
    for name in ("model.pt", "metadata.json", "train_config.yaml", "training_curve.png", "README.md",
                 "evaluation/calm/table.md", "evaluation/kills/summary.json"):
        assert (dest / name).stat().st_size > 0, name
    readme = (dest / "README.md").read_text()
    assert "highest train-split return" in readme and "Kubernetes HPA" in readme
    assert "### calm" in readme and "| kills | k8s_hpa |" in readme
    assert "--evaluation " + " ".join(str(r) for r in results) in readme
    policy = mappo.load_mappo_policy(dest)  # the shipped folder plays like the run
    assert policy.layout == "roles"
