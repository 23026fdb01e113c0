"""The autoscaling package's interface: lazy imports, the registry, and the policies on the env core."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agents.autoscaling import POLICY_NAMES, AutoscalingPolicy, deltas_for, make_policy
from agents.autoscaling.k8s_hpa import BatchedHPAState, batched_hpa_recommend
from agents.autoscaling.policies import KubernetesHPAPolicy, cpu_utilization_percent
from agents.autoscaling.references import StaticPolicy
from envs.microservice import MicroserviceCore, load_config


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """``k8s_hpa_tuned`` caches its tuning: keep it out of the user's cache."""
    monkeypatch.setenv("CLUSTERGYM_CACHE_DIR", str(tmp_path / "cache"))


def test_import_is_lazy():
    """``import agents.autoscaling`` loads no submodule; ``make_policy`` pulls in no torch, SB3 or env."""
    code = (
        "import sys, agents.autoscaling as a\n"
        "assert not [m for m in sys.modules if m.startswith('agents.autoscaling.')], sys.modules\n"
        "from agents.autoscaling import make_policy, deltas_for, AutoscalingPolicy, POLICY_NAMES\n"
        "[make_policy(n) for n in POLICY_NAMES]\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3', 'sb3_contrib', 'envs')]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_name_builds_a_policy_of_that_name():
    for name in POLICY_NAMES:
        policy: AutoscalingPolicy = make_policy(name)
        assert policy.name == name
        # The AutoscalingPolicy protocol, checked by hand (it is not runtime-checkable).
        assert callable(policy.reset) and callable(policy.desired_replicas)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown autoscaling policy 'bogus'.*static, threshold, k8s_hpa"):
        make_policy("bogus")
    with pytest.raises(FileNotFoundError, match="agent model not found"):
        make_policy("agent:/nonexistent/model.zip")


def test_an_agent_is_found_in_a_run_or_model_folder(tmp_path):
    from stable_baselines3 import PPO

    from envs.microservice import MicroserviceAutoscalingEnv

    model = PPO("MultiInputPolicy", MicroserviceAutoscalingEnv("chain4_huawei"), n_steps=16, batch_size=16, seed=0)
    (tmp_path / "run" / "last").mkdir(parents=True)
    model.save(tmp_path / "run" / "last" / "model.zip")
    assert make_policy(f"agent:{tmp_path / 'run'}").name == "agent:run/last"  # no best/: the last model
    model.save(tmp_path / "run" / "best" / "model.zip")
    assert make_policy(f"agent:{tmp_path / 'run'}").name == "agent:run/best"
    assert make_policy(f"agent:{tmp_path / 'run' / 'best'}").name == "agent:run/best"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no model.zip there, nor in best/ or last/"):
        make_policy(f"agent:{tmp_path / 'empty'}")


def test_reference_names():
    from agents.autoscaling.mpc import ModelPredictivePolicy
    from agents.autoscaling.tuning import TunedHPAPolicy

    assert {"k8s_hpa_tuned", "mpc"} <= set(POLICY_NAMES)
    assert isinstance(make_policy("mpc"), ModelPredictivePolicy)
    assert isinstance(make_policy("k8s_hpa_tuned"), TunedHPAPolicy)


@pytest.mark.parametrize("spec, target, behavior", [("k8s_hpa@70", 70, False), ("k8s_hpa_behavior@45", 45, True)])
def test_a_target_in_the_name(spec, target, behavior):
    policy = make_policy(spec, hpa_target=60)
    assert isinstance(policy, KubernetesHPAPolicy) and policy.name == spec and policy.target == target
    assert (policy.behavior is not None) == behavior


@pytest.mark.parametrize("spec", ["k8s_hpa@", "k8s_hpa@x", "k8s_hpa@0", "static@5", "mpc@3", "k8s_hpa_tuned@60"])
def test_malformed_targets_are_refused(spec):
    with pytest.raises(ValueError, match="unknown autoscaling policy"):
        make_policy(spec)


def test_static_is_one_rule_and_refuses_negative_counts():
    assert make_policy("static", static_replicas=7).rule.replicas == 7
    with pytest.raises(ValueError):
        StaticPolicy(-1)


@pytest.fixture(scope="module")
def core() -> MicroserviceCore:
    core = MicroserviceCore(load_config("chain4_huawei", window_steps=8), num_clusters=3)
    core.reset(np.random.default_rng(0))
    return core


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policies_drive_the_env_core_within_bounds(core, name):
    rng = np.random.default_rng(1)
    core.reset(rng)
    policy = make_policy(name, static_replicas=3, hpa_target=50)
    policy.reset(core)
    for t in range(core.window_steps):
        desired = policy.desired_replicas(core, now_s=t * core.config.step_seconds)
        assert desired.shape == core.desired.shape
        core.step(deltas_for(core, desired), rng)
        # deltas_for lands each service on the policy's count, clipped to its bounds.
        np.testing.assert_array_equal(core.desired, np.clip(desired, core.low, core.high))


def test_hpa_policy_is_the_batched_port_on_cpu_utilisation(core):
    core.reset(np.random.default_rng(2))
    policy = KubernetesHPAPolicy(target_utilization=40)
    policy.reset(core)
    util, ready = cpu_utilization_percent(core)
    expected = batched_hpa_recommend(BatchedHPAState.empty(*core.desired.shape), 0.0, core.desired, ready, util, 40,
                                     core.low, core.high)
    np.testing.assert_array_equal(policy.desired_replicas(core, now_s=0.0), expected.desired_replicas)
