"""A saved MaskablePPO model as a VM planner (agents.vm.agent): paths, padding, replay, risk-seeking samples, time."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO

from agents.vm import get_planner
from agents.vm.agent import AgentPlanner, parse_spec, resolve_model_path
from agents.vm.plan import replay_plan
from agents.vm.policy import VMGraphPolicy
from digital_twin.vm import Snapshot
from envs.vm_rescheduling import VMReschedulingEnv
from envs.vm_sources import FixedSource
from training.runs import save_model

BUDGET = 6
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def small_env(snapshot: Snapshot) -> VMReschedulingEnv:
    return VMReschedulingEnv(source=FixedSource(snapshot), max_hosts=43, max_vms=155, budget=8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_snapshot):
    """A run folder with best/ and last/ of a graph-policy model trained briefly on the 43-host cluster."""
    model = MaskablePPO(VMGraphPolicy, small_env(small_snapshot), n_steps=64, batch_size=32, n_epochs=1, seed=0,
                        device="cpu", policy_kwargs=dict(features_extractor_kwargs=dict(d_hidden=16)))
    model.learn(128)
    run = tmp_path_factory.mktemp("run")
    save_model(run / "best", model, {"policy": {"name": "graph"}, "num_timesteps": model.num_timesteps})
    save_model(run / "last", model, {"policy": {"name": "graph"}, "num_timesteps": model.num_timesteps})
    return run


@pytest.fixture(scope="module")
def graph_model(run_dir):
    return run_dir / "best" / "model.zip"


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, small_snapshot):
    """An untrained fixed-padding MultiInputPolicy model (43 hosts, 155 VMs)."""
    model = MaskablePPO("MultiInputPolicy", small_env(small_snapshot), n_steps=32, batch_size=32, seed=0, device="cpu")
    path = tmp_path_factory.mktemp("plain") / "plain.zip"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def deterministic(graph_model, clear2):
    return AgentPlanner(graph_model)(clear2, BUDGET, seed=0)


def test_plan_replays_through_the_twin_within_budget(deterministic, clear2):
    r = deterministic
    assert 0 < r.num_moves <= BUDGET
    assert r.claimed_fr == pytest.approx(r.fr_after, abs=1e-12)
    assert replay_plan(clear2, r.moves).fragment_rate() == pytest.approx(r.fr_after, abs=1e-12)
    assert r.fr_before == clear2.fragment_rate()  # planning did not touch the snapshot


def test_the_graph_model_plans_a_larger_snapshot_than_it_was_built_for(graph_model, deterministic):
    planner = AgentPlanner(graph_model)
    assert planner.any_padding and (planner.max_hosts, planner.max_vms) == (43, 155)
    assert deterministic.stats["padding"] == (279, 2089)  # sized to the snapshot planned
    assert deterministic.stats["policy"] == "VMGraphPolicy"


def test_budget_is_respected(graph_model, clear2):
    planner = AgentPlanner(graph_model, samples=2, vm_quantile=0.0, host_quantile=0.0)
    for budget in (0, 1, 3):
        assert planner(clear2, budget).num_moves <= budget


def test_plans_are_deterministic_for_a_seed(graph_model, clear2, deterministic):
    assert AgentPlanner(graph_model)(clear2, BUDGET, seed=0).moves == deterministic.moves
    sampler = AgentPlanner(graph_model, samples=3, vm_quantile=0.0, host_quantile=0.0)
    first, again = sampler(clear2, BUDGET, seed=5), sampler(clear2, BUDGET, seed=5)
    assert first.moves == again.moves and first.stats["sample_frs"] == again.stats["sample_frs"]


@pytest.mark.parametrize("quantiles", [(0.995, 0.98), (0.0, 0.0)], ids=["vmr2l", "plain_sampling"])
def test_sampling_is_never_worse_than_the_deterministic_plan(graph_model, clear2, deterministic, quantiles):
    planner = AgentPlanner(graph_model, samples=4, vm_quantile=quantiles[0], host_quantile=quantiles[1])
    r = planner(clear2, BUDGET, seed=1)
    assert r.stats["deterministic_fr"] == pytest.approx(deterministic.fr_after, abs=1e-12)
    assert r.stats["samples"] == 4 and len(r.stats["sample_frs"]) == 4
    assert r.fr_after <= deterministic.fr_after + 1e-12
    assert r.claimed_fr == pytest.approx(min([r.stats["deterministic_fr"], *r.stats["sample_frs"]]), abs=1e-12)
    assert r.claimed_fr == pytest.approx(r.fr_after, abs=1e-12)
    assert r.num_moves <= BUDGET
    assert r.planner.endswith("?samples=4" if quantiles == (0.995, 0.98) else "&host_quantile=0")


def test_best_prefix_runs_on_and_keeps_the_lowest_fr_prefix(graph_model, clear2, deterministic):
    """Stop masked, the argmax path extends the deterministic one; cutting at its minimum can only help."""
    from evaluation.metrics import fr_curve

    r = AgentPlanner(graph_model, best_prefix=1)(clear2, BUDGET, seed=0)
    assert r.planner.endswith("?best_prefix=1")
    assert r.fr_after <= deterministic.fr_after + 1e-12
    assert r.moves[: min(len(r.moves), deterministic.num_moves)] == deterministic.moves[: min(len(r.moves), deterministic.num_moves)]
    curve = fr_curve(clear2, r.moves, len(r.moves))
    assert r.fr_after == pytest.approx(min(curve), abs=1e-12) and curve[-1] == pytest.approx(min(curve), abs=1e-12)
    assert all(c > r.fr_after + 1e-12 for c in curve[:-1]) or len(r.moves) == 0  # the earliest minimum
    with pytest.raises(ValueError, match="best_prefix"):
        AgentPlanner(graph_model, best_prefix=2)


def test_the_time_limit_is_honoured(graph_model, clear2):
    r = AgentPlanner(graph_model, samples=100_000)(clear2, 20, time_limit_s=1.0)
    assert r.wall_s < 2.5  # one env step and the replay past the deadline
    assert r.stats["samples_started"] < 100_000
    cut = AgentPlanner(graph_model)(clear2, 50, time_limit_s=0.0)
    assert cut.num_moves == 0 and not cut.stats["deterministic_finished"]


def test_folder_paths_resolve(run_dir, tmp_path, graph_model):
    best, last = run_dir / "best" / "model.zip", run_dir / "last" / "model.zip"
    assert resolve_model_path(run_dir) == best  # best preferred
    assert resolve_model_path(run_dir / "best") == best
    assert resolve_model_path(run_dir / "last") == last
    assert resolve_model_path(best) == best
    assert resolve_model_path(run_dir / "best" / "model") == best  # as MaskablePPO.load completes it
    only_last = tmp_path / "only_last"
    (only_last / "last").mkdir(parents=True)
    (only_last / "last" / "model.zip").write_bytes(last.read_bytes())
    assert resolve_model_path(only_last) == only_last / "last" / "model.zip"
    planner = get_planner(f"agent:{run_dir}")
    assert planner.path == best and planner.samples == 0
    assert planner.name == f"agent:{run_dir.name}/best"
    assert planner.metadata["policy"] == {"name": "graph"}


def test_bad_paths_and_options_give_clear_errors(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="agent model not found: .*nope.zip"):
        AgentPlanner(tmp_path / "nope.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="tried .*empty/model.zip.*empty/best/model.zip"):
        get_planner(f"agent:{tmp_path / 'empty'}")
    (tmp_path / "junk.zip").write_text("not a model")
    with pytest.raises(ValueError, match="not a saved MaskablePPO model"):
        AgentPlanner(tmp_path / "junk.zip")
    with pytest.raises(ValueError, match="bad option 'samplez=3'"):
        get_planner(f"agent:{run_dir}?samplez=3")
    with pytest.raises(ValueError, match="option samples needs an integer"):
        parse_spec(f"{run_dir}?samples=many")
    with pytest.raises(ValueError, match="vm_quantile must be in"):
        AgentPlanner(run_dir, samples=2, vm_quantile=1.5)


def test_spec_options_reach_the_planner(run_dir):
    assert parse_spec("runs/x?samples=16&host_quantile=0.9") == ("runs/x", {"samples": 16, "host_quantile": 0.9})
    planner = get_planner(f"agent:{run_dir}?samples=3&vm_quantile=0.9")
    assert (planner.samples, planner.vm_quantile, planner.host_quantile) == (3, 0.9, 0.98)


def test_loading_warms_up_on_a_cluster_with_sets_and_keeps_the_options(run_dir):
    from agents.vm.agent import _warm_up_snapshot

    warm = _warm_up_snapshot()
    cluster = warm.clusters[0]
    assert warm.fragment_rate() > 0 and {s.granularity for s in cluster.deployment_sets} == {"host", "rack"}
    assert cluster.movable_vms().any()  # a migration to play, the stop action masked
    planner = AgentPlanner(run_dir, samples=3)  # the warm-up borrows best_prefix and samples
    assert (planner.samples, planner.best_prefix) == (3, False)
    planner.best_prefix = True
    assert planner(warm, 1).stats["padding"] == (3, 2)


def test_a_fixed_padding_model_plans_what_fits_and_names_the_sizes_otherwise(plain_model, small_snapshot, clear2):
    planner = get_planner(f"agent:{plain_model}")
    assert not planner.any_padding
    r = planner(small_snapshot, BUDGET)
    assert r.num_moves <= BUDGET and r.claimed_fr == pytest.approx(r.fr_after, abs=1e-12)
    assert r.stats["padding"] == (43, 155)
    with pytest.raises(ValueError, match="279 hosts and 2089 VMs.*at most 43 hosts and 155 VMs"):
        planner(clear2, BUDGET)
    sampled = AgentPlanner(plain_model, samples=2, vm_quantile=0.0, host_quantile=0.0)(small_snapshot, BUDGET, seed=0)
    assert sampled.fr_after <= r.fr_after + 1e-12


def test_the_incremental_decode_plays_what_predict_plays(graph_model, clear2, deterministic):
    """The planner's plan, replayed, is predict()'s choice at every step, up to exact ties.

    An untrained policy scores many VMs alike; where torch's best two logits are within 1e-5, the
    compiled decoder may round the other way (its arithmetic is not torch's), so a step counts as
    agreeing when its action's torch logit is within 1e-5 of the best.
    """
    model = MaskablePPO.load(graph_model, device="cpu")
    env = VMReschedulingEnv(max_hosts=279, max_vms=2089, budget=BUDGET)
    obs, _ = env.reset(options={"snapshot": clear2, "budget": BUDGET})
    c, vm, host, placement = zip(*deterministic.moves)
    actions = [a for v, h, p in zip(vm, host, placement) for a in (v, 2 * h + p)]  # one cluster: global = local
    assert set(c) == {0} and len(actions) == 2 * BUDGET
    exact = 0
    for action in actions:
        mask = env.action_masks()
        with th.no_grad():
            logits = model.policy.action_logits(model.policy.obs_to_tensor(obs)[0])[0][0].numpy()
        logits = np.where(mask, logits, -np.inf)
        assert mask[action] and logits[action] >= logits.max() - 1e-5
        predicted, _ = model.predict(obs, action_masks=mask, deterministic=True)
        exact += int(predicted) == action
        obs, _, _, _, _ = env.step(action)
    assert exact >= len(actions) - 2
