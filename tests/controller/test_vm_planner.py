"""The controller's VM planner: the exported policy on the controller's fleet plans what the gym plans.

On the real held-out snapshot (279 hosts, 2,089 VMs), ``plan_migrations`` with the ONNX graph
makes exactly the migrations ``evaluate.py``'s ``agent:PATH`` makes with the torch policy on the
env, deterministic and best-prefix. The plan's dependency lists are checked by executing the
plan in random orders that respect them: every order stays feasible.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from agents.vm.agent import AgentPlanner
from controller.vm.fleet import Fleet
from controller.vm.planner import plan_migrations
from controller.vm.snapshot_file import load_fleet
from digital_twin.vm.snapshot import load_snapshot, save_snapshot
from envs.vm_sources import REAL_SNAPSHOTS
from tests.controller.test_vm_fleet import snapshot_with_sets

SNAPSHOT = REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json"
MODEL = "models/vm_rescheduling/graph_bc"


def global_moves(fleet: Fleet, moves) -> list[tuple[int, int, int]]:
    """The twin's ``(cluster, local VM, local host, placement)`` moves in the fleet's global indices."""
    vm_offset = np.searchsorted(fleet.vm_cluster, np.arange(len(fleet.cluster_names)))
    host_offset = np.searchsorted(fleet.host_cluster, np.arange(len(fleet.cluster_names)))
    return [(int(vm_offset[c] + v), int(host_offset[c] + h), int(p)) for c, v, h, p in moves]


@pytest.mark.parametrize("best_prefix", [False, True])
def test_the_plan_is_the_in_gym_agents(vm_policy, best_prefix):
    fleet = load_fleet(SNAPSHOT)
    plan = plan_migrations(fleet, vm_policy, budget=50, best_prefix=best_prefix)
    spec = MODEL + ("?best_prefix=1" if best_prefix else "")
    reference = AgentPlanner.from_spec(spec)(load_snapshot(SNAPSHOT), 50)
    assert plan.moves == global_moves(fleet, reference.moves)
    assert plan.fragment_rate_after == pytest.approx(reference.fr_after, abs=1e-12)
    assert len(plan.migrations) == len(reference.moves) > 5
    assert plan.fragment_rate_after < plan.fragment_rate_before


def linear_extensions(plan, rng, count):
    """Random execution orders in which every migration comes after those in its ``after``."""
    for _ in range(count):
        done, order, left = set(), [], list(range(len(plan.migrations)))
        while left:
            ready = [i for i in left if set(plan.migrations[i].after) <= done]
            pick = ready[rng.integers(len(ready))]
            order.append(pick)
            done.add(pick)
            left.remove(pick)
        yield order


@pytest.mark.parametrize("with_sets", [False, True])
def test_any_order_the_dependencies_allow_is_feasible(vm_policy, with_sets, tmp_path):
    if with_sets:
        save_snapshot(snapshot_with_sets(), tmp_path / "sets.json")
        fleet = load_fleet(tmp_path / "sets.json")
    else:
        fleet = load_fleet(SNAPSHOT)
    plan = plan_migrations(fleet, vm_policy, budget=50, best_prefix=True)
    assert len(plan.moves) >= 10
    assert any(m.after for m in plan.migrations)  # the rule has something to order
    assert any(not m.after for m in plan.migrations[1:])  # ... and something to run in parallel
    rng = np.random.default_rng(0)
    for order in linear_extensions(plan, rng, 30):
        state = fleet.copy()
        for i in order:
            vm, host, placement = plan.moves[i]
            assert state.check_migration(vm, host, placement) is None, (order, i)
            state.migrate(vm, host, placement)
        assert state.fragment_rates()[0] == pytest.approx(plan.fragment_rate_after, abs=1e-12)


def test_plan_names_the_clusters_objects(vm_policy):
    fleet = load_fleet(SNAPSHOT)
    plan = plan_migrations(fleet, vm_policy, budget=5)
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc["format"] == "clustergym-plan/1" and doc["budget"] == 5 and len(doc["migrations"]) <= 5
    first = doc["migrations"][0]
    assert first["vm"] in fleet.vm_ids and first["to_host"] in fleet.host_ids and first["from_host"] != first["to_host"]
    assert first["after"] == []


def test_reschedule_cli_dry_run_from_a_file(vm_policy, tmp_path):
    out = tmp_path / "plan.json"
    done = subprocess.run([sys.executable, "-m", "controller", "reschedule", "--policy", str(vm_policy.path),
                           "--snapshot", str(SNAPSHOT), "--budget", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dry-run" in done.stdout and "279 hosts, 2089 VMs" in done.stdout
    plan = json.loads(out.read_text())
    assert len(plan["migrations"]) == 20 and plan["best_prefix"] is True
    reference = plan_migrations(load_fleet(SNAPSHOT), vm_policy, budget=20, best_prefix=True)
    assert [m["vm"] for m in plan["migrations"]] == [m.vm for m in reference.migrations]


@pytest.mark.parametrize("args, message", [
    (["--snapshot", "missing.json"], "--snapshot: missing.json"),
    (["--snapshot", str(SNAPSHOT), "--apply"], "--apply needs --from-cluster"),
    (["--snapshot", str(SNAPSHOT), "--namespace", "vms"], "need --from-cluster"),
    (["--snapshot", str(SNAPSHOT), "--budget", "0"], "--budget"),
    (["--snapshot", str(SNAPSHOT), "--out", "/nonexistent/plan.json"], "--out /nonexistent/plan.json"),
])
def test_reschedule_cli_errors_are_one_line(vm_policy, args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "controller", "reschedule", "--policy", str(vm_policy.path), *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path if "missing" in args[1] else None)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_an_autoscaling_policy_is_refused(graph_policy, tmp_path):
    done = subprocess.run([sys.executable, "-m", "controller", "reschedule", "--policy", str(graph_policy.path),
                           "--snapshot", str(SNAPSHOT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "the policy is for autoscaling; this command needs one for vm_rescheduling" in done.stderr


def test_apply_reports_an_unreachable_api_server_and_goes_on(vm_policy):
    import dataclasses

    from kubernetes import client

    from controller.vm.kubevirt import MigrationRunner
    from tests.controller.prometheus_server import free_port

    fleet = load_fleet(SNAPSHOT)
    fleet = dataclasses.replace(fleet, vm_ids=[f"vms/{v.replace('_', '-')}" for v in fleet.vm_ids])
    plan = plan_migrations(fleet, vm_policy, budget=4)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens
    configuration.retries = 0
    lines: list[str] = []
    results = MigrationRunner(client.ApiClient(configuration), "test", poll_s=0.01, log=lines.append).apply(plan)
    assert len(results) == len(plan.migrations) == 4
    for result, move in zip(results, plan.migrations):
        assert result.outcome == ("skipped" if move.after else "error"), (result, move)
    assert any("create failed" in line for line in lines)
