"""Speed of the microservice autoscaling vector env: B = 256 clusters, random valid actions.

Definitions. An *agent-step* is one decision of one agent applied for one 15 s control step.
For the single-agent env (and its native vector env) one cluster has one agent, so an
agent-step is a cluster-step: agent-steps/s = B x vector steps/s. A *service-step* is one
service of one cluster advanced by one control step (agent-steps x S; it is also the
agent-step count of the PettingZoo ``per_service`` layout, one agent per service).

Runs, in one process, on Online Boutique (S = 11) under worldcup98 windows
(``configs/microservice_autoscaling/online_boutique_worldcup.yaml``):

1. a match check: the native vector env at B = 1 and the single-agent env, same seed, same
   actions, must give identical observations, rewards and truncations (one core);
2. the native ``MicroserviceAutoscalingVectorEnv`` at B = 256 with random valid actions (each
   service draws uniformly among the deltas its mask allows), autoresets included; the time of
   ``step`` is what counts (the random agent's draws are timed apart and shown in brackets);
3. the reference: the same env through ``gymnasium.vector.SyncVectorEnv`` of 256 single envs
   (same autoreset mode, same action sampler);
4. the native env with replicas held (no-op actions), to show what pod churn costs the twin;
5. the SB3 ``VecEnv`` adapter (``make_sb3_vec_env``) at B = 256, same sampler: what SB3 and
   sb3-contrib train on (its per-cluster ``infos`` list is the difference to the native env).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/envs_microservice.py`` (or through ``bench/envs.py``).
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

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402

from envs.microservice import (  # noqa: E402
    MicroserviceAutoscalingEnv,
    MicroserviceAutoscalingVectorEnv,
    load_config,
    make_sb3_vec_env,
)

CONFIG = "online_boutique_worldcup"
BATCH = 256
GOAL = 200_000  # agent-steps/s at B = 256; gym-hpa's simulator does about 110
GYM_HPA_STEPS_PER_S = 110


def masked_random_actions(rng: np.random.Generator, mask: np.ndarray, num_services: int, num_deltas: int) -> np.ndarray:
    """(B, S) delta indices drawn uniformly among each service's allowed deltas (one numpy pass)."""
    m = mask.reshape(-1, num_services, num_deltas)
    return np.argmax(rng.random(m.shape) * m, axis=2)


def check_match(config, window_steps: int = 20) -> None:
    """Native vector env at B = 1 and the single env: identical trajectories over one episode."""
    single = MicroserviceAutoscalingEnv(config, window_steps=window_steps)
    vector = MicroserviceAutoscalingVectorEnv(1, config, window_steps=window_steps)
    o1, _ = single.reset(seed=7)
    o2, _ = vector.reset(seed=7)
    rng = np.random.default_rng(0)
    s, d = vector.core.num_services, vector.core.num_deltas
    for _ in range(window_steps):
        if not data_equivalence(o1, {k: v[0] for k, v in o2.items()}):
            raise AssertionError("native vector env (B=1) and single env disagree: observations")
        action = masked_random_actions(rng, o2["action_mask"], s, d)
        o1, r1, _, t1, _ = single.step(action[0])
        o2, r2, _, t2, _ = vector.step(action)
        if r1 != r2[0] or t1 != t2[0]:
            raise AssertionError("native vector env (B=1) and single env disagree: rewards or truncations")
    if not t1:
        raise AssertionError("the episode should have been truncated at the window's end")


def time_vector(venv, steps: int, sampler, warmup: int = 5) -> tuple[float, float]:
    """Seconds per vector step over ``steps`` steps (after ``warmup``): ``venv.step`` alone, and
    with the action sampler (the random agent) included."""
    obs, _ = venv.reset(seed=0)
    for _ in range(warmup):
        obs, *_ = venv.step(sampler(obs["action_mask"]))
    in_step = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        actions = sampler(obs["action_mask"])
        t0 = time.perf_counter()
        obs, *_ = venv.step(actions)
        in_step += time.perf_counter() - t0
    return in_step / steps, (time.perf_counter() - start) / steps


def time_sb3(config, steps: int, sampler, warmup: int = 5) -> float:
    """Seconds per ``VecEnv.step`` of the SB3 adapter over ``steps`` steps (after ``warmup``)."""
    venv = make_sb3_vec_env(BATCH, config)
    venv.seed(0)
    obs = venv.reset()
    for _ in range(warmup):
        obs, *_ = venv.step(sampler(obs["action_mask"]))
    in_step = 0.0
    for _ in range(steps):
        actions = sampler(obs["action_mask"])
        t0 = time.perf_counter()
        obs, *_ = venv.step(actions)
        in_step += time.perf_counter() - t0
    venv.close()
    return in_step / steps


def main() -> dict[str, float]:
    config = load_config(CONFIG)
    check_match(config)
    native = MicroserviceAutoscalingVectorEnv(BATCH, config)
    s, d = native.core.num_services, native.core.num_deltas
    rng = np.random.default_rng(0)
    sampler = lambda mask: masked_random_actions(rng, mask, s, d)  # noqa: E731
    hold = np.full((BATCH, s), int(np.flatnonzero(native.core.deltas == 0)[0]))

    t_native, t_native_sampled = time_vector(native, 300, sampler)
    t_hold, _ = time_vector(native, 100, lambda mask: hold)
    t_sb3 = time_sb3(config, 300, sampler)
    t0 = time.perf_counter()
    sync = gym.vector.SyncVectorEnv([lambda: MicroserviceAutoscalingEnv(config) for _ in range(BATCH)],
                                    autoreset_mode=AutoresetMode.NEXT_STEP)
    build_s = time.perf_counter() - t0
    t_sync, t_sync_sampled = time_vector(sync, 8, sampler, warmup=1)
    sync.close()

    native_rate = BATCH / t_native
    sync_rate = BATCH / t_sync
    hold_rate = BATCH / t_hold
    sb3_rate = BATCH / t_sb3
    print(f"microservice vector env: {config.name} ({s} services, {config.window_steps}-step windows, "
          f"{config.step_seconds:g} s steps), B={BATCH}, random valid actions; agent-step = one cluster's "
          f"decision for one step (single-agent env), service-step = agent-steps x {s}")
    print("match: native vector env at B=1 == single env (same seed, same actions)")
    print("timed: env.step alone (the random agent's action draws are outside the timed region; "
          "with them included in brackets)")
    print(f"native VectorEnv     {native_rate:>10,.0f} agent-steps/s {native_rate * s:>11,.0f} service-steps/s "
          f"({t_native * 1e3:7.2f} ms per batched step) [{BATCH / t_native_sampled:,.0f} agent-steps/s]")
    print(f"SyncVectorEnv (ref)  {sync_rate:>10,.0f} agent-steps/s {sync_rate * s:>11,.0f} service-steps/s "
          f"({t_sync * 1e3:7.2f} ms per batched step; {BATCH} envs built in {build_s:.1f} s) "
          f"[{BATCH / t_sync_sampled:,.0f} agent-steps/s]")
    print(f"native / Sync: {native_rate / sync_rate:.1f}x; native / gym-hpa (~{GYM_HPA_STEPS_PER_S} steps/s): "
          f"{native_rate / GYM_HPA_STEPS_PER_S:,.0f}x")
    print(f"native, replicas held (no pod churn): {hold_rate:,.0f} agent-steps/s ({hold_rate * s:,.0f} service-steps/s)")
    print(f"SB3 VecEnv adapter   {sb3_rate:>10,.0f} agent-steps/s ({t_sb3 * 1e3:7.2f} ms per batched step; "
          f"{sb3_rate / native_rate:.0%} of the native env)")
    print(f"goal >= {GOAL:,} agent-steps/s at B={BATCH}: {'met' if native_rate >= GOAL else 'NOT met'}; "
          "the twin's compiled step is most of the time")
    return {"native_agent_steps_per_s": native_rate, "sync_agent_steps_per_s": sync_rate,
            "native_with_sampler_agent_steps_per_s": BATCH / t_native_sampled,
            "hold_agent_steps_per_s": hold_rate, "sb3_agent_steps_per_s": sb3_rate, "ratio": native_rate / sync_rate}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--help`` prints what the benchmark measures; it takes no options (only when run as a script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()
    main()
