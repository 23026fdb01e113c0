"""The controller's parts without a cluster: inputs as the env builds them, safety rules, policy
files, retries, the command line, and that it imports neither torch nor the twin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.cli import main
from controller.kube import ApiFailure, DeploymentScaler
from controller.observation import ObservationBuilder
from controller.policy import PolicyError, load_policy
from controller.safety import SafetyRules


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from training.export import export_autoscaling

    out = tmp_path_factory.mktemp("policy") / "policy.onnx"
    return out, export_autoscaling("models/autoscaling/ppo_mlp", out)


@pytest.fixture(scope="module")
def core():
    from envs.microservice import MicroserviceCore
    from envs.microservice.config import load_config

    return MicroserviceCore(load_config("configs/microservice_autoscaling/online_boutique_failures.yaml"),
                            num_clusters=16, split="held_out")


def test_inputs_are_the_envs(exported, core):
    from envs.microservice import batched_observation

    _, meta = exported
    builder = ObservationBuilder(meta)
    rng = np.random.default_rng(3)
    core.reset(rng, options={"initial_replicas": "random"})
    for step in range(30):
        obs = batched_observation(core)
        for b in range(core.num_clusters):
            ours = builder.inputs(core.raw_obs[b], core.desired[b], int(core.state.step_index[b]))
            np.testing.assert_array_equal(ours["metrics"][0], obs["metrics"][b])
            np.testing.assert_array_equal(ours["action_mask"][0], obs["action_mask"][b].astype(bool))
            np.testing.assert_array_equal(ours["progress"][0], obs["progress"][b])
            np.testing.assert_array_equal(ours["adjacency"][0], obs["adjacency"][b])
            np.testing.assert_array_equal(ours["edge_index"][0], obs["edge_index"][b])
        core.step(core.deltas[rng.integers(0, core.num_deltas, core.desired.shape)], rng)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_safety_rules_keep_their_promises(data):
    s = 4
    low, high = np.array([1, 1, 2, 1]), np.array([10, 5, 8, 3])
    max_change = data.draw(st.none() | st.integers(1, 3))
    window = data.draw(st.sampled_from([0.0, 30.0]))
    rules = SafetyRules(low, high, max_change, window)
    current = np.array(data.draw(st.lists(st.integers(0, 12), min_size=s, max_size=s)))
    history = []
    for t in range(data.draw(st.integers(1, 6))):
        proposed = np.array(data.draw(st.lists(st.integers(-3, 15), min_size=s, max_size=s)))
        target = rules.apply(current, proposed, now_s=15.0 * t)
        assert ((target >= low) & (target <= high)).all()
        clipped = np.clip(proposed, low, high)
        history.append((15.0 * t, clipped))
        if max_change is not None:
            inside = (current >= low) & (current <= high)
            assert (np.abs(target - current)[inside] <= max_change).all()
        if window == 0 and max_change is None:
            np.testing.assert_array_equal(target, clipped)
        if window > 0:  # a scale-down stops at the highest recommendation of the window
            recent = np.max([p for when, p in history if when >= 15.0 * t - window], axis=0)
            down = target < current
            assert (target[down] >= np.minimum(current, recent)[down]).all()
        current = target


def test_stabilisation_window_holds_a_dip():
    rules = SafetyRules(np.array([1]), np.array([10]), None, scale_down_window_s=60)
    assert rules.apply(np.array([6]), np.array([6]), 0.0)[0] == 6
    assert rules.apply(np.array([6]), np.array([2]), 15.0)[0] == 6  # 6 was recommended 15 s ago
    assert rules.apply(np.array([6]), np.array([3]), 61.0)[0] == 3  # the 6 left the window: the highest left is 3
    assert rules.apply(np.array([3]), np.array([8]), 70.0)[0] == 8  # scale-up is never held


def test_policy_files_are_checked(exported, tmp_path):
    out, meta = exported
    assert load_policy(out).problem == "autoscaling"
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "none.onnx")
    copy = tmp_path / "p.onnx"
    shutil.copy(out, copy)
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(copy)  # no p.json beside it
    copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(PolicyError, match="not readable JSON"):
        load_policy(copy)
    copy.with_suffix(".json").write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(PolicyError, match="not a clustergym policy"):
        load_policy(copy)
    copy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="needs one for vm_rescheduling"):
        load_policy(copy, problem="vm_rescheduling")
    wrong = dict(meta, onnx=dict(meta["onnx"], inputs=meta["onnx"]["inputs"][:2]))
    copy.with_suffix(".json").write_text(json.dumps(wrong))
    with pytest.raises(PolicyError, match="declares"):
        load_policy(copy)
    copy.with_suffix(".json").write_text(json.dumps(meta))
    copy.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(PolicyError, match="onnxruntime cannot load"):
        load_policy(copy)


def test_transient_api_errors_are_retried_and_others_reported():
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException

    delays = []
    scaler = DeploymentScaler(ApiClient(), "shop", attempts=3, backoff_s=0.1, sleep=delays.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=409, reason="Conflict")
        return "ok"

    assert scaler._call("patch", flaky) == "ok" and delays == [0.1, 0.2]
    with pytest.raises(ApiFailure) as err:
        scaler._call("patch", lambda: (_ for _ in ()).throw(ApiException(status=403, reason="Forbidden")))
    assert err.value.reason == "api_forbidden" and "HTTP 403 Forbidden" in str(err.value)
    assert delays == [0.1, 0.2]  # a 403 is not retried
    with pytest.raises(ApiFailure) as err:
        scaler._call("list", lambda: (_ for _ in ()).throw(ApiException(status=503, reason="Unavailable")))
    assert err.value.reason == "api_error" and "after 3 attempts" in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["autoscale", "--policy", "x.onnx", "--prometheus", "localhost:9090", "--namespace", "a"], "http(s)://"),
    (["autoscale", "--policy", "x.onnx", "--prometheus", "http://p:9090", "--namespace", "a", "--window", "1 min"],
     "PromQL duration"),
    (["autoscale", "--policy", "x.onnx", "--prometheus", "http://p:9090", "--namespace", "a", "--period", "-1"], "> 0"),
    (["autoscale", "--policy", "missing.onnx", "--prometheus", "http://p:9090", "--namespace", "a",
      "--metrics-address", "127.0.0.1:0"], "no such file"),
    (["autoscale", "--prometheus", "http://p:9090", "--namespace", "a"], "--policy"),
])
def test_command_line_mistakes_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        sys.exit(main(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_controller_imports_neither_torch_nor_the_twin():
    code = ("import importlib, pkgutil, sys, controller\n"
            "names = [m.name for m in pkgutil.walk_packages(controller.__path__, 'controller.') "
            "if not m.name.endswith('__main__')]\n"
            "assert 'controller.vm.kubevirt' in names and 'controller.autoscaler' in names, names\n"
            "for name in names: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'digital_twin', 'envs', 'agents', "
            "'training', 'torch_geometric', 'numba', 'stable_baselines3'))\n"
            "print(bad)\nsys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
