"""Environment steps per second, against a reference run in the same process.

VMRescheduling-v0 on the real snapshots, random valid (masked) actions, observation and mask
included in every step (the sampling of the random action is included too, for both sides):

- the env as shipped (observations updated incrementally after each migration);
- the reference: the same env rebuilding the whole observation every step (``incremental_obs=False``),
  the way a straightforward env would.

Goal: >= 20,000 steps/s on the 236-host / 1,934-VM cluster. For scale, the VMR2L authors'
env does ~1,000-2,800 steps/s on a snapshot of this size and ~400 on a 1,264-host one (measured on
this machine kind, as noted in DEVELOPERS.md).

The microservice section (``bench/envs_microservice.py``): the native vector env at B=256 against
the same env through ``gymnasium.vector.SyncVectorEnv``; goal >= 200,000 agent-steps/s.

Run with ``OMP_NUM_THREADS=1`` on an otherwise idle machine: ``python bench/envs.py [--only vm|microservice]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digital_twin.vm import Snapshot  # noqa: E402
from envs.vm_rescheduling import VMReschedulingEnv  # noqa: E402
from envs.vm_sources import REAL_SNAPSHOTS, FileSource  # noqa: E402


def vm_steps_per_second(env: VMReschedulingEnv, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Random masked play for ``seconds``; returns (steps/s, episodes finished)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    steps = episodes = 0
    start = time.perf_counter()
    while True:
        for _ in range(200):
            action = int(rng.choice(np.flatnonzero(env.action_masks())))
            _, _, terminated, _, _ = env.step(action)
            steps += 1
            if terminated:
                episodes += 1
                env.reset()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed, episodes


def one_cluster_source(path: Path, index: int) -> FileSource:
    """A source handing out one cluster of a real file (the benchmarks name cluster sizes)."""
    source = FileSource([path])
    full = source._load(source.paths[0])
    single = Snapshot.from_clusters([full.clusters[index]])
    single.requirement = full.requirement
    source._cache[source.paths[0]] = single
    return source


def vm_section(seconds: float) -> None:
    cases = [
        ("236 hosts / 1,934 VMs (clear2 cluster1)", REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json", 0, 300, 2200, 20_000),
        ("824 hosts / 4,042 VMs (big2 cluster2)", REAL_SNAPSHOTS / "reset_vm_pm_id_clear_big2.json", 1, 900, 4600, None),
        ("1,176 hosts / 4,546 VMs (big2, both clusters)", REAL_SNAPSHOTS / "reset_vm_pm_id_clear_big2.json", None, 1200, 4600, None),
    ]
    print(f"VMRescheduling-v0, random masked actions, obs + mask every step (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); budget 50")
    print(f"{'snapshot':<48}{'env steps/s':>13}{'rebuild obs /s':>16}{'ratio':>8}   goal")
    for name, path, index, max_hosts, max_vms, goal in cases:
        rates = []
        for incremental in (True, False):
            source = FileSource([path]) if index is None else one_cluster_source(path, index)
            env = VMReschedulingEnv(source=source, max_hosts=max_hosts, max_vms=max_vms, incremental_obs=incremental)
            rates.append(vm_steps_per_second(env, seconds)[0])
        verdict = "" if goal is None else f">= {goal:,}/s: {'met' if rates[0] >= goal else 'NOT met'}"
        print(f"{name:<48}{rates[0]:>13,.0f}{rates[1]:>16,.0f}{rates[0] / rates[1]:>7.1f}x   {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Environment steps per second against in-process references.")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    parser.add_argument("--only", choices=["vm", "microservice"], help="run one section")
    args = parser.parse_args()
    if args.only in (None, "vm"):
        vm_section(args.seconds)
    if args.only in (None, "microservice"):
        print()
        import envs_microservice  # bench/ is on sys.path when run as a script

        envs_microservice.main()


if __name__ == "__main__":
    main()
