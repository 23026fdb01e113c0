"""Behaviour analysis (evaluate.py --explain): onset statistics, distilled trees and their fidelity."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from envs.microservice import MicroserviceCore, load_config
from evaluation.autoscaling import evaluate_autoscaling
from evaluation.cli import main
from evaluation.explain import (
    ONSET_BINS_MINUTES, DecisionRecorder, PolicyRecord, agent_samples, distil, feature_names, onset_statistics,
    service_features,
)
from training import mappo

CHAIN4 = "configs/microservice_autoscaling/chain4_failures.yaml"


def test_features_are_the_services_metrics_in_their_units():
    core = MicroserviceCore(load_config("chain4_huawei"), num_clusters=2)
    core.reset(np.random.default_rng(0))
    x = service_features(core)
    names = feature_names(core.service_names)
    assert x.shape == (2, core.num_services, len(names))
    assert np.array_equal(x[:, :, :core.num_metrics], core.raw_obs)
    entry = core.topology.entry_index
    assert np.allclose(x[:, :, names.index("entry request_rate [requests/s]")],
                       core.raw_obs[:, entry, names.index("request_rate [requests/s]")][:, None])
    assert np.array_equal(x[0, :, -core.num_services:], np.eye(core.num_services))


def test_a_tree_recovers_a_known_rule_and_is_scored_against_the_majority_move():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, size=(4000, 3)).astype(np.float32)
    y = np.where(x[:, 1] > 80, 1, np.where(x[:, 1] < 20, -1, 0))  # a threshold rule on column 1
    held = rng.uniform(0, 100, size=(1000, 3)).astype(np.float32)
    held_y = np.where(held[:, 1] > 80, 1, np.where(held[:, 1] < 20, -1, 0))
    tree = distil("rule", "policy", (x, y), (held, held_y), ["a", "utilisation", "c"])
    assert tree.fidelity > 0.98 and tree.move_fidelity > 0.95
    assert tree.majority_move == 0 and tree.majority_fidelity == pytest.approx((held_y == 0).mean())
    assert "utilisation" in tree.text and "class: +1" in tree.text and "class: -1" in tree.text


def test_onset_statistics_count_each_agents_moves_per_minute():
    # Two agents on two services, 15-second steps: agent 0 adds one pod to service 0 every step
    # from the onset on, agent 1 removes one from service 1 (outside agent 0's scope) before it.
    record = PolicyRecord(["up", "down"], np.array([[True, False], [False, True]]), ["a", "b"], 0.25)
    for t in range(-20, 40):
        minutes = t * 0.25
        record.features.append(np.zeros((1, 2, 3), np.float32))
        p = np.zeros((1, 2, 2), np.int64)
        p[0, 0, 0] = 1 if minutes >= 0 else 0
        p[0, 0, 1] = 5  # outside agent 0's scope: not counted
        p[0, 1, 1] = -1 if minutes < 0 else 0
        record.proposals.append(p)
        record.scenario.append("kills")
        record.minutes_from_onset.append(minutes)
    record.failure_minutes["kills"] = (0.0, 0.25)
    rows = {(r["agent"], r["from_minute"]): r for r in onset_statistics(record, "m")}
    assert rows[("up", -5)]["up_per_minute"] == 0 and rows[("up", 0)]["up_per_minute"] == pytest.approx(4.0)
    assert rows[("up", 5)]["moving_share"] == 1.0 and rows[("up", 5)]["down_per_minute"] == 0
    assert rows[("down", -5)]["down_per_minute"] == pytest.approx(4.0) and rows[("down", 0)]["moving_share"] == 0
    assert {lo for _, lo in rows} == {lo for lo, hi in ONSET_BINS_MINUTES if lo < 10}  # only bins with steps


def test_a_multi_agent_policys_proposals_are_what_it_merged():
    config = load_config(CHAIN4, initial_replicas=3)
    core = MicroserviceCore(config, num_clusters=3)
    view = mappo.MultiAgentView(core, "roles")
    torch.manual_seed(0)
    actor = mappo.Actor(mappo.input_dims(core.num_metrics, view.num_agents, False)[0], 8, core.num_deltas)
    policy = mappo.MAPPOPolicy(actor, "roles", config.agents, config.action_deltas, action="sample")
    recorder = DecisionRecorder()
    rows, _ = evaluate_autoscaling(config, [policy], seeds=[0], episodes=3, scenarios=["calm", "kills"],
                                   progress=False, observer=recorder)
    record = recorder.records[policy.name]
    assert record.agent_names == ["ddos_manager", "availability_manager", "resource_manager"]
    assert len(record.proposals) == 2 * config.window_steps
    for p in record.proposals:
        assert (p[:, ~record.scope] == 0).all()  # nothing proposed outside an agent's scope
        up, down = p.max(axis=1), p.min(axis=1)
        assert ((up > 0) | (down < 0)).any()
    # the ddos manager only scales up: its moves are never negative
    assert min(p[:, 0].min() for p in record.proposals) >= 0
    onset = np.array(record.minutes_from_onset)
    assert np.isnan(onset[:config.window_steps]).all() and np.nanmin(onset) < 0 <= np.nanmax(onset)


def test_explain_writes_trees_and_onset_tables(tmp_path, capsys):
    rc = main([CHAIN4, "--policies", "threshold", "k8s_hpa", "--scenarios", "calm", "kills", "node_loss",
               "--seeds", "0", "--episodes", "2", "--explain", "--out-dir", str(tmp_path), "--run-name", "x",
               "--no-progress"])
    assert rc == 0
    out = tmp_path / "x" / "explain"
    for name in ("onset_actions.csv", "onset_actions.md", "onset_actions.png", "trees.md", "explain.json"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "explain.json").read_text())
    trees = {t["method"]: t for t in report["trees"]}
    # The threshold rule is a function of the service's own CPU: a depth-3 tree reproduces it
    # on held-out states at least as well as always holding.
    assert "threshold" in trees
    t = trees["threshold"]
    assert t["heldout_states"] == t["train_states"] == 2 * 3 * 120 * 4  # episodes x scenarios x steps x services
    assert t["fidelity"] >= t["majority_fidelity"] and t["fidelity"] > 0.9
    assert (out / "tree_threshold__policy.txt").read_text().startswith("threshold: policy, replica move per service")
    assert (out / "tree_threshold__policy.png").stat().st_size > 0
    rows = list(csv.DictReader(open(out / "onset_actions.csv")))
    assert {r["scenario"] for r in rows} == {"kills", "node_loss"}  # calm has no onset
    assert "explain/trees.md" in capsys.readouterr().out


def test_explain_is_refused_for_vm_configs(capsys):
    rc = main(["configs/vm_rescheduling/real_small.yaml", "--explain", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--explain" in err[0]
