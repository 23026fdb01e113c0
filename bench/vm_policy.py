"""Speed of the VM graph policy (agents.vm.policy): forward passes/s and the time to plan 50 migrations.

For each bundled real snapshot (279 hosts / 2,089 VMs and 1,176 hosts / 4,546 VMs), with the env
padded to the snapshot:

* forward passes/s of the network alone (observation already a tensor, ``no_grad``), batch 1, in
  phase 0 (score every VM) and phase 1 (score every destination of the selected VM);
* plan time: a deterministic decode of a whole ``--budget``-migration plan on the env
  (``predict`` + ``env.step``, two steps per migration), split into policy and env time; and the
  same plan decoded with :class:`~agents.vm.policy.IncrementalPolicy` (only the hosts a step
  changed are re-encoded; a ``*`` after the move count flags plans that differ, which only a
  near-tie of two logits can cause).

The policy is freshly initialised unless ``--model`` names a saved ``MaskablePPO``; stop is masked
during the decode so that every plan has the full budget of migrations (an untrained policy may
prefer to stop). Speed does not depend on the weights; the FR columns mean something only with
``--model`` (fresh weights shuffle a VM back and forth). Run on one core::

    OMP_NUM_THREADS=1 python bench/vm_policy.py
    OMP_NUM_THREADS=1 python bench/vm_policy.py --snapshots clear2 --d-hidden 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch as th  # noqa: E402

from agents.vm.policy import IncrementalPolicy, VMGraphPolicy, load_vm_model  # noqa: E402
from digital_twin.resources import bundled_path  # noqa: E402
from digital_twin.vm import Snapshot, load_snapshot  # noqa: E402
from envs.vm_rescheduling import VMReschedulingEnv  # noqa: E402

SNAPSHOTS = {
    "clear2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json"),
    "big2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear_big2.json"),
}


def env_for(snapshot: Snapshot, budget: int) -> VMReschedulingEnv:
    """An env padded exactly to the snapshot, as a planner builds it."""
    hosts = sum(c.num_hosts for c in snapshot.clusters)
    vms = sum(c.num_vms for c in snapshot.clusters)
    return VMReschedulingEnv(max_hosts=hosts, max_vms=vms, budget=budget)


def forwards_per_second(policy: VMGraphPolicy, obs: dict, min_time_s: float) -> float:
    tensors, _ = policy.obs_to_tensor(obs)
    with th.no_grad():
        policy.action_logits(tensors)  # warm-up
        count, start = 0, time.perf_counter()
        while True:
            policy.action_logits(tensors)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time_s and count >= 3:
                return count / elapsed


def machine_speed() -> tuple[float, float]:
    """Microseconds per tiny torch op and per (2089 x 32) @ (32 x 32) matmul: scales the figures to other machines.

    A forward pass is about 1,300 dispatched ops, so on a busy machine the first number dominates.
    """
    small, big, weight = th.zeros(8), th.randn(2089, 32), th.randn(32, 32)
    timings = []
    for op, n in ((lambda: small + 1, 2000), (lambda: big @ weight, 500)):
        op()
        start = time.perf_counter()
        for _ in range(n):
            op()
        timings.append((time.perf_counter() - start) / n * 1e6)
    return timings[0], timings[1]


def decode_plan(policy: VMGraphPolicy, env: VMReschedulingEnv, snapshot: Snapshot, budget: int,
                incremental: bool = False) -> dict:
    """Play the deterministic policy on the snapshot until the budget is spent; time each part.

    ``incremental`` decodes with :class:`IncrementalPolicy` (same actions, changed hosts re-encoded)
    instead of ``policy.predict`` (a full forward pass per step).
    """
    fast = IncrementalPolicy(policy) if incremental else None
    policy_s = env_s = 0.0
    start = time.perf_counter()
    obs, info = env.reset(seed=0, options={"snapshot": snapshot, "budget": budget})
    env_s += time.perf_counter() - start
    fr_before, steps, terminated, moves = info["fragment_rate"], 0, False, []
    while not terminated:
        mask = env.action_masks()
        if env.phase == 0 and mask[: env.stop_action].any():
            mask[env.stop_action] = False  # see the module docstring: full-length plans
        t0 = time.perf_counter()
        if fast is None:
            action, _ = policy.predict(obs, action_masks=mask, deterministic=True)
        else:
            action = fast.act(obs, mask)
        t1 = time.perf_counter()
        obs, _, terminated, _, info = env.step(int(action))
        t2 = time.perf_counter()
        policy_s += t1 - t0
        env_s += t2 - t1
        steps += 1
        if "migration" in info:
            moves.append(info["migration"])
    return {"plan_s": policy_s + env_s, "policy_s": policy_s, "env_s": env_s, "steps": steps,
            "migrations": info["migrations_used"], "fr_before": fr_before, "fr_after": info["fragment_rate"],
            "moves": moves}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", nargs="+", default=list(SNAPSHOTS), choices=list(SNAPSHOTS))
    parser.add_argument("--budget", type=int, default=50, help="MNL: migrations per plan")
    parser.add_argument("--d-hidden", type=int, default=32)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None, help="a saved MaskablePPO .zip instead of fresh weights")
    parser.add_argument("--plans", type=int, default=3, help="decodes per snapshot (the best time is reported)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per forward-pass measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the target is one core)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)

    rows = []
    header = (f"{'snapshot':<8} {'hosts':>5} {'VMs':>5} {'actions':>7} {'fwd/s ph0':>9} {'fwd/s ph1':>9} "
              f"{'plan s':>7} {'policy s':>8} {'env s':>6} {'incr. s':>7} {'moves':>5} {'FR before':>9} "
              f"{'FR after':>8}")
    tiny_op_us, matmul_us = machine_speed()
    print(f"torch threads {th.get_num_threads()}, d_hidden {args.d_hidden}, heads {args.heads}, layers {args.layers}"
          f"{', model ' + str(args.model) if args.model else ', fresh weights'}; machine: tiny op {tiny_op_us:.1f} us, "
          f"2089x32x32 matmul {matmul_us:.0f} us")
    print(header)
    print("-" * len(header))
    for name in args.snapshots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = load_snapshot(SNAPSHOTS[name])
        env = env_for(snapshot, args.budget)
        if args.model:
            policy = load_vm_model(args.model, env=None, observation_space=env.observation_space,
                                   action_space=env.action_space, device="cpu").policy
        else:
            th.manual_seed(0)
            extractor = dict(d_hidden=args.d_hidden, num_heads=args.heads, num_layers=args.layers)
            policy = VMGraphPolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                                   features_extractor_kwargs=extractor)
        policy.eval()
        obs0, _ = env.reset(seed=0, options={"snapshot": snapshot})
        obs1, *_ = env.step(int(np.flatnonzero(env.action_masks()[: env.num_vms])[0]))
        fwd0 = forwards_per_second(policy, obs0, args.min_time)
        fwd1 = forwards_per_second(policy, obs1, args.min_time)
        plans = [decode_plan(policy, env, snapshot, args.budget) for _ in range(args.plans)]
        best = min(plans, key=lambda p: p["plan_s"])
        fast = [decode_plan(policy, env, snapshot, args.budget, incremental=True) for _ in range(args.plans)]
        fastest = min(fast, key=lambda p: p["plan_s"])
        # Float sums differ in the last bits between the two decodes: a near-tie could flip an argmax.
        same_plan = fastest["moves"] == best["moves"]
        print(f"{name:<8} {env.num_hosts:>5} {env.num_vms:>5} {env.num_actions:>7} {fwd0:>9.0f} {fwd1:>9.0f} "
              f"{best['plan_s']:>7.3f} {best['policy_s']:>8.3f} {best['env_s']:>6.3f} {fastest['plan_s']:>7.3f} "
              f"{best['migrations']:>5}{'' if same_plan else '*'} "
              f"{best['fr_before']:>9.4f} {best['fr_after']:>8.4f}", flush=True)
        rows.append({"snapshot": name, "hosts": env.num_hosts, "vms": env.num_vms, "actions": env.num_actions,
                     "forwards_per_s_phase0": fwd0, "forwards_per_s_phase1": fwd1, "threads": th.get_num_threads(),
                     "d_hidden": args.d_hidden, "heads": args.heads, "layers": args.layers,
                     **{k: v for k, v in best.items() if k != "moves"}, "same_plan": same_plan,
                     "tiny_op_us": tiny_op_us, "matmul_us": matmul_us,
                     "plan_s_all": [p["plan_s"] for p in plans], "incremental_plan_s": fastest["plan_s"],
                     "incremental_policy_s": fastest["policy_s"]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
