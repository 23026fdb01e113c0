"""Compute of the model-predictive reference (``mpc``): seconds per decision, rollout service-steps/s.

For each config, one cluster (B = 1) plays ``--steps`` control steps of a held-out window under
``mpc``; the figures are the wall time of its decisions (each: K candidate plans x H horizon steps
rolled forward by the batched twin, then a refinement round, plus the capacity replay), the
service-steps those rollouts simulated per second, and, as the same-process reference, the plain
``k8s_hpa`` decision and the env step on the same cluster. A decision must fit in the control
step (15 s) to run in real time. ``--agents agent:PATH ...`` times trained agents' decisions the
same way (on each config whose topology they take), to set their compute beside the reference's.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/autoscaling_mpc.py [--agents agent:models/autoscaling/ppo_graph ...]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# The repo root first: run as a script, bench/ is sys.path[0] and bench/envs.py would shadow envs/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from agents.autoscaling import deltas_for, make_policy  # noqa: E402
from agents.autoscaling.mpc import ModelPredictivePolicy  # noqa: E402
from envs.microservice import MicroserviceCore, load_config  # noqa: E402


def time_policy(policy, config, steps: int, clusters: int) -> tuple[float, float, int]:
    """Seconds per decision and per env step of ``policy`` over ``steps`` steps of a held-out
    window, and the config's number of services."""
    rng = np.random.default_rng(0)
    core = MicroserviceCore(config, num_clusters=clusters, split="held_out")
    core.reset(rng, options={"split": "held_out", "scenario": config.scenarios[0].name})
    policy.reset(core)
    decide = env = 0.0
    for t in range(steps):
        start = time.perf_counter()
        desired = policy.desired_replicas(core, now_s=t * config.step_seconds)
        middle = time.perf_counter()
        core.step(deltas_for(core, desired), rng)
        decide, env = decide + middle - start, env + time.perf_counter() - middle
    return decide / steps, env / steps, core.num_services


def run(config_name: str, steps: int, clusters: int, quiet: bool = False, agents: tuple = ()) -> None:
    config = load_config(config_name)
    steps = min(steps, config.window_steps)
    figures = {}
    for name in ("k8s_hpa", "mpc"):
        policy = make_policy(name)
        figures[name] = (policy, *time_policy(policy, config, steps, clusters))
    mpc, per_decision, env_step, s = figures["mpc"]
    assert isinstance(mpc, ModelPredictivePolicy)
    stats = mpc.stats()
    if quiet:
        return
    k1, k2 = 1 + len(mpc.shifts) * (1 + s) + len(mpc.sizing), 2 * s + 1
    print(f"{config_name}: S={s}, B={clusters}, {steps} decisions, horizon {mpc.horizon}, "
          f"K={k1} then {k2} plans x {mpc._samples} samples per cluster")
    print(f"  mpc      {per_decision * 1e3:8.2f} ms/decision  ({stats['decisions_per_s']:7.1f} decisions/s; "
          f"rollouts {stats['rollout_service_steps_per_s']:12,.0f} service-steps/s; "
          f"{15.0 / per_decision:,.0f}x faster than real time at 15 s steps)")
    print(f"  k8s_hpa  {figures['k8s_hpa'][1] * 1e3:8.3f} ms/decision   env step {env_step * 1e3:.3f} ms")
    for agent in agents:
        try:
            seconds, _, _ = time_policy(agent, config, steps, clusters)
        except (ValueError, RuntimeError) as exc:  # an MLP or a per-service MAPPO of another topology
            print(f"  {agent.name}: skipped ({str(exc).splitlines()[0][:120]})")
            continue
        print(f"  {agent.name:40s} {seconds * 1e3:8.3f} ms/decision  ({per_decision / seconds:,.0f}x less than mpc)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["chain4_huawei", "online_boutique_worldcup"])
    parser.add_argument("--steps", type=int, default=60, help="decisions timed per config (default 60)")
    parser.add_argument("--clusters", type=int, default=1, help="B (default 1)")
    parser.add_argument("--agents", nargs="*", default=[], metavar="agent:PATH",
                        help="trained agents to time too (evaluate.py's agent:PATH)")
    args = parser.parse_args()
    from evaluation.cli import autoscaling_policies

    agents = tuple(autoscaling_policies(args.agents, 5, 60)) if args.agents else ()
    run(args.configs[0], 3, 1, quiet=True)  # compile the twin's kernels outside the timing
    for name in args.configs:
        run(name, args.steps, args.clusters, agents=agents)


if __name__ == "__main__":
    main()
