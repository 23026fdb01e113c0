"""Autoscaling training throughput: agent-steps/s including the learner, against SB3 PPO in the same process.

Each algorithm trains from scratch for the same number of cluster steps on the same env config
(chain4 under Huawei load by default; ``--config`` for another), with one torch thread:

- the reference: sb3-contrib ``MaskablePPO`` with SB3's ``MultiInputPolicy`` (the MLP) over the
  native vector env (``training/autoscaling_ppo.py``, ``policy.name: mlp``);
- the same with the service-graph policy (``policy.name: graph``);
- MAPPO and IPPO (``training/mappo.py``) where that module is present: an *agent-step* is one agent's
  decision, so a step of the roles layout counts once per role.

Figures are printed as steps/s and as ratios against the reference. Run with ``OMP_NUM_THREADS=1``
on an otherwise idle machine: ``python bench/autoscaling_training.py [--steps 20480]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sb3_steps_per_second(policy: dict, env_config: str, steps: int, n_envs: int) -> float:
    """Cluster steps per second of MaskablePPO learning ``steps`` steps (rollouts and updates)."""
    import torch

    from training.autoscaling_ppo import make_envs, policy_spec
    from training.config import DEFAULTS
    from training.maskable_ppo import make_model

    torch.set_num_threads(1)
    config = dict(DEFAULTS, problem="autoscaling", algorithm="ppo", env_config=env_config, env={}, policy=policy,
                  n_envs=n_envs, ppo=dict(DEFAULTS["ppo"], n_steps=128, batch_size=256, n_epochs=4))
    model = make_model(config, make_envs(config), None, policy_spec)
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/microservice_autoscaling/chain4_huawei.yaml")
    parser.add_argument("--steps", type=int, default=20480, help="cluster steps per algorithm")
    parser.add_argument("--n-envs", type=int, default=16)
    args = parser.parse_args()
    reference = sb3_steps_per_second({"name": "mlp"}, args.config, args.steps, args.n_envs)
    print(f"{'SB3 MaskablePPO, MLP (reference)':<40} {reference:>10,.0f} steps/s   1.00x")
    graph = sb3_steps_per_second({"name": "graph", "hidden": 64, "layers": 3}, args.config, args.steps, args.n_envs)
    print(f"{'SB3 MaskablePPO, service-graph policy':<40} {graph:>10,.0f} steps/s   {graph / reference:.2f}x")
    try:
        from training.mappo import benchmark_agent_steps_per_second
    except ImportError:
        print("training/mappo.py: not present (MAPPO / IPPO skipped)")
        return
    for algorithm, layout in (("mappo", "roles"), ("mappo", "per_service"), ("ippo", "roles")):
        rate = benchmark_agent_steps_per_second(algorithm, layout, args.config, args.steps, args.n_envs)
        label = f"{algorithm.upper()}, {layout} (agent-steps)"
        print(f"{label:<40} {rate:>10,.0f} steps/s   {rate / reference:.2f}x")


if __name__ == "__main__":
    main()
