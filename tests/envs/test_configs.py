"""One config schema per kind, used by every entry point; padding that follows the data.

* A mistake in a VM config is named the same way (file, key, allowed keys, did-you-mean) by
  ``load_vm_config``, ``make_vm_env`` and ``gym.make``; the same for autoscaling configs.
* The schema is the code's own: env keys are the env constructor's parameters, source keys the
  source classes' fields.
* Both env ids take ``config=`` and ``split=``.
* Every shipped config resets on every split over several seeds (the README example included).
"""

from __future__ import annotations

import dataclasses
import inspect

import gymnasium as gym
import numpy as np
import pytest
import yaml

import envs  # noqa: F401  (registers the ids)
from digital_twin.cli import ConfigError, UsageError
from digital_twin.resources import bundled_path
from envs.microservice import load_config
from envs.vm_rescheduling import _OPTION_CHECKS, VMReschedulingEnv, env_option_names, make_vm_env
from envs.vm_sources import (
    REAL_SNAPSHOTS, SOURCE_KINDS, AzureReplaySource, FixedSource, VMR2LLikeSource, load_vm_config,
    make_source, source_keys,
)

VM_CONFIGS = sorted(bundled_path("configs/vm_rescheduling").glob("*.yaml"))
SMALL = REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json"
VM_ID, MS_ID = "clustergym/VMRescheduling-v0", "clustergym/MicroserviceAutoscaling-v0"

BASE = {
    "env": {"budget": 5},
    "train_source": {"kind": "azure", "split": "dev", "num_hosts": 10, "cuts_per_replay": 2},
    "eval_source": {"kind": "files", "paths": [str(SMALL)], "split": "eval"},
}


def variant(**changes) -> dict:
    """BASE with top-level keys replaced (None removes one)."""
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


# One case per class of config mistake: (config, words the message must hold).
MISTAKES = {
    "env key typo": (variant(env={"budjet": 5}),
                     ["unknown key 'env.budjet'", "did you mean 'budget'", "allowed under env: budget, incremental_obs"]),
    "top-level key typo": (variant(eval_source=None, eval_sorce=BASE["eval_source"]),
                           ["unknown key 'eval_sorce'", "did you mean 'eval_source'", "train_source, val_source"]),
    "source key typo": (variant(train_source={**BASE["train_source"], "num_host": 10}),
                        ["train_source", "unknown key 'num_host'", "did you mean 'num_hosts'",
                         "kind azure: cuts_per_replay, fraction_range, host"]),
    "source kind typo": (variant(eval_source={**BASE["eval_source"], "kind": "filez"}),
                         ["eval_source", "unknown kind 'filez'", "did you mean 'files'", "files, azure, vmr2l_like"]),
    "source value type": (variant(train_source={**BASE["train_source"], "num_hosts": "ten"}),
                          ["train_source", "num_hosts must be an integer, got 'ten'"]),
    "source range": (variant(train_source={**BASE["train_source"], "fraction_range": [0.9]}),
                     ["fraction_range must be a list of 2 numbers"]),
    "source out of range": (variant(train_source={**BASE["train_source"], "num_hosts": 0}),
                            ["num_hosts must be at least 1"]),
    "missing snapshot file": (variant(eval_source={**BASE["eval_source"], "paths": ["nope.json"]}),
                              ["eval_source", "nope.json"]),
    "env value": (variant(env={"budget": -1}), ["env.budget must be an integer >= 1, got -1"]),
    "env choice": (variant(env={"invalid_action": "ignore"}), ["env.invalid_action must be one of 'raise', 'penalty'"]),
    "missing source": (variant(train_source=None), ["missing required key 'train_source'"]),
    "shared data": (variant(eval_source={"kind": "azure", "split": "dev", "num_hosts": 10}), ["share data"]),
}


def _entry_points(tmp_path, doc):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return {
        "load_vm_config": lambda: load_vm_config(path),
        "load_vm_config(dict)": lambda: load_vm_config(doc),
        "make_vm_env": lambda: make_vm_env(str(path), "eval"),
        "gym.make": lambda: gym.make(VM_ID, config=str(path), split="eval"),
    }


@pytest.mark.parametrize("mistake", MISTAKES)
def test_every_entry_point_names_a_vm_config_mistake_alike(tmp_path, mistake):
    doc, needles = MISTAKES[mistake]
    messages = {}
    for name, call in _entry_points(tmp_path, doc).items():
        with pytest.raises(ConfigError) as exc:  # a ValueError for callers, a UsageError for the CLIs
            call()
        assert isinstance(exc.value, ValueError) and isinstance(exc.value, UsageError)
        messages[name] = str(exc.value)
        assert "\n" not in messages[name]
        for needle in needles:
            assert needle in messages[name], (name, messages[name])
    # The same words from every entry point (only the file's name differs for a mapping).
    path_words = {m.split(": ", 1)[1] for n, m in messages.items() if n != "load_vm_config(dict)"}
    assert len(path_words) == 1, messages


@pytest.mark.parametrize("budget", [None, "absent"])
def test_a_config_without_a_budget_follows_each_snapshot(tmp_path, budget):
    doc = variant(env={} if budget == "absent" else {"budget": budget})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = make_vm_env(str(path), "eval")
    _, info = env.reset(seed=0)
    # The bundled real file says maximum_migration 10,000; with env.budget it would be the config's.
    assert env.max_budget is None and (info["budget"], info["budget_source"]) == (10_000, "snapshot")
    _, info = make_vm_env(str(path), "eval", budget=7).reset(seed=0)
    assert (info["budget"], info["budget_source"]) == (7, "config")


def test_overrides_are_checked_like_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    for call in (lambda: make_vm_env(str(path), budjet=3), lambda: gym.make(VM_ID, config=str(path), budjet=3),
                 lambda: gym.make(VM_ID, budjet=3)):
        with pytest.raises(ConfigError, match=r"unknown key 'budjet' \(did you mean 'budget'\?\); allowed: budget"):
            call()
    with pytest.raises(ConfigError, match="budget must be an integer >= 1, got 0"):
        gym.make(VM_ID, budget=0)
    with pytest.raises(ConfigError, match="give a config or a source, not both"):
        make_vm_env(str(path), source=BASE["train_source"])
    with pytest.raises(ConfigError, match="split must be 'train', 'val' or 'eval', got 'test'"):
        make_vm_env(str(path), "test")


def test_autoscaling_config_mistakes_are_named_with_a_suggestion(tmp_path):
    cases = [
        (dict(windw_steps=10), ["unknown key 'windw_steps'", "did you mean 'window_steps'", "allowed under an autoscaling"]),
        (dict(agents={"layot": "roles"}), ["unknown key 'agents.layot'", "did you mean 'layout'"]),
        (dict(reward={"slo": -1}), ["reward.slo", ">= 0"]),
    ]
    for overrides, needles in cases:
        for call in (lambda: load_config("chain4_huawei", **overrides),
                     lambda: gym.make(MS_ID, config="chain4_huawei", **overrides)):
            with pytest.raises(ConfigError) as exc:
                call()
            for needle in needles:
                assert needle in str(exc.value), str(exc.value)
    path = tmp_path / "typo.yaml"
    path.write_text("trace: worldcup98\nwindow_step: 10\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'window_step' \(did you mean 'window_steps'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"no such file and not a built-in .*did you mean 'chain4_huawei'"):
        load_config("chain4_huwei")
    path.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="typo.yaml: not valid YAML at line"):
        load_config(path)


def test_the_schema_is_the_codes_own():
    params = [p for p in inspect.signature(VMReschedulingEnv.__init__).parameters if p not in ("self", "source")]
    assert env_option_names() == params and set(_OPTION_CHECKS) == set(params)
    for kind, cls in SOURCE_KINDS.items():
        fields = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
        assert source_keys(kind) == ["kind", *fields]
    source = make_source({"kind": "vmr2l_like", "split": "dev", "hosts_range": [40, 60],
                          "host": {"numa_cpu": [32, 32], "numa_mem_mb": [1000.0, 1000.0]}})
    assert source.hosts_range == (40, 60) and source.host.numa_cpu == (32, 32)


def test_both_ids_take_config_and_split_alike():
    vm = gym.make(VM_ID, config="configs/vm_rescheduling/real_small.yaml", split="eval", budget=7)
    _, info = vm.reset(seed=0)
    assert info["split"] == "eval" and info["budget"] == 7
    ms = gym.make(MS_ID, config="chain4_huawei", split="held_out", window_steps=8)
    _, info = ms.reset(seed=0)
    assert info["split"] == "held_out"
    assert gym.make(VM_ID).unwrapped.source.split == "train"  # no config: the bundled real snapshot


# ---------------------------------------------------------------------- padding follows the data
def test_padding_follows_the_source_unless_given():
    env = VMReschedulingEnv()  # the bundled real snapshot: its exact size
    assert (env.max_hosts, env.max_vms) == (279, 2089)
    env.reset(seed=0)
    fixed = VMReschedulingEnv(source=FixedSource([env.snapshot]))
    assert (fixed.max_hosts, fixed.max_vms) == (279, 2089)
    given = VMReschedulingEnv(max_hosts=300, max_vms=2200)
    assert given.observation_space["vm_features"].shape == (2200, 7)
    azure = AzureReplaySource(split="dev", num_hosts=10, cuts_per_replay=2)
    hosts, vms = azure.max_size()
    assert hosts == 10 and vms == 10 * 88  # 1-vCPU VMs on 88-vCPU hosts
    for seed in range(3):  # the bound holds
        azure.restart()
        snap = azure(np.random.default_rng(seed))
        assert sum(c.num_vms for c in snap.clusters) <= vms
    generated = VMR2LLikeSource(split="dev", hosts_range=(20, 30), num_clusters=(1, 2))
    assert generated.max_size() == (60, 60 * 44)  # 2-vCPU types at the smallest


def test_a_config_shares_one_padding_over_its_splits_and_refuses_files_that_do_not_fit(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    train, ev = make_vm_env(str(path), "train"), make_vm_env(str(path), "eval")
    assert train.observation_space == ev.observation_space
    assert (train.max_hosts, train.max_vms) == (279, 2089)  # the file is larger than 10 hosts' bound (880 VMs)
    path.write_text(yaml.safe_dump(variant(env={"max_hosts": 300, "max_vms": 1000})))
    with pytest.raises(ConfigError, match="eval_source .its largest file. has 279 hosts and 2089 VMs; .*"
                                          "set env.max_vms to at least 2089 in the config"):
        make_vm_env(str(path), "train")  # refused when made, not at the reset that would draw the file
    env = VMReschedulingEnv(source=BASE["train_source"], max_hosts=10, max_vms=50)
    with pytest.raises(ValueError, match=r"snapshot a snapshot of AzureReplaySource\(split='dev'\) has 10 hosts and "
                                         r"\d+ VMs; .*set env.max_vms to at least"):
        env.reset(seed=0)


SPLIT_SEEDS = (0, 1, 2)


@pytest.mark.slow  # about 30 s: azure_236 replays take 2-3 s each
@pytest.mark.parametrize("config", VM_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_resets_on_every_split(config):
    """The README's ``make_vm_env(<config>, split).reset(seed=...)`` works for every shipped config,
    on its train, val (where present) and eval split, over several seeds, at one padding."""
    doc = load_vm_config(config)
    spaces = set()
    for split in ("train", "val", "eval"):
        if f"{split}_source" not in doc:
            continue
        env = make_vm_env(str(config), split)
        spaces.add(str(env.observation_space))
        for seed in SPLIT_SEEDS:
            obs, info = env.reset(seed=seed)
            assert env.num_hosts <= env.max_hosts and env.num_vms <= env.max_vms
            assert obs["vm_mask"].sum() == env.num_vms and 0.0 <= info["fragment_rate"] <= 1.0
    assert len(spaces) == 1, "the splits of one config must share one observation space"


def test_production_like_source_has_sets_and_plays_the_files_budget():
    env = make_vm_env("configs/vm_rescheduling/production_like_sets.yaml", split="eval")
    _, info = env.reset(seed=0)
    assert info["budget"] == 10 and info["budget_source"] == "snapshot"
    clusters = env.snapshot.clusters
    assert [c.num_hosts for c in clusters] == [254, 1010]
    assert [len(c.deployment_sets) for c in clusters] == [165, 165]
    assert {d.granularity for c in clusters for d in c.deployment_sets} == {"host", "rack"}
    with pytest.raises(ConfigError, match="hosts"):
        make_source({"kind": "production_like", "hosts": [0, 10]})
