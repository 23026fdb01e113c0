"""The autoscaling agents shipped in models/autoscaling/: each loads as evaluate.py's agent:PATH,
explains itself, and plays a held-out episode of the env it was trained for (and the graph
policies another topology)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.autoscaling import deltas_for
from envs.microservice import MicroserviceCore, load_config
from evaluation.cli import autoscaling_policies

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "autoscaling"
NAMES = ["ppo_graph", "ppo_mlp", "ppo_graph_chain4", "ppo_mlp_chain4", "mappo_roles", "mappo_per_service",
         "ippo_roles", "ippo_per_service"]


def test_every_agent_the_readme_names_is_shipped():
    readme = (SHIPPED / "README.md").read_text()
    assert sorted(p.name for p in SHIPPED.iterdir() if p.is_dir() and p.name != "evaluation") == sorted(NAMES)
    for name in NAMES:
        assert f"`{name}" in readme, name


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_agent_loads_and_plays_held_out_windows(name):
    folder = SHIPPED / name
    for f in ("metadata.json", "train_config.yaml", "run.json", "training_eval.csv", "training_curve.png", "README.md"):
        assert (folder / f).is_file(), f
    model = next(folder / f for f in ("model.zip", "model.pt") if (folder / f).is_file())
    assert model.stat().st_size < 5 * 2**20  # a few MB at most
    env_config = yaml.safe_load((folder / "train_config.yaml").read_text())["env_config"]
    (policy,) = autoscaling_policies([f"agent:{folder.relative_to(ROOT)}"], 5, 60)
    configs = [env_config] + (["configs/microservice_autoscaling/chain4_failures.yaml"]
                              if name == "ppo_graph" else [])  # the graph policy on another topology
    for config_path in configs:
        config = load_config(ROOT / config_path)
        rng = np.random.default_rng(0)
        core = MicroserviceCore(config, num_clusters=2, split="held_out")
        core.reset(rng, options={"split": "held_out"})
        policy.reset(core)
        for t in range(8):
            desired = policy.desired_replicas(core, now_s=t * config.step_seconds)
            assert desired.shape == (2, core.num_services)
            assert ((desired >= core.low) & (desired <= core.high)).all()
            core.step(deltas_for(core, desired), rng)
