"""VM env steps per second with many anti-affinity deployment sets, against the same snapshot without them.

Issue #12: on a 1,264-host production snapshot (two clusters of 254 and 1,010 hosts, 165
deployment sets each: 150 of host and 15 of rack granularity, ``maximum_migration`` 10) the env
ran at 148-160 steps/s, nearly all of it recomputing the destinations of every set member on
every step. The snapshot here is built the same shape by
:func:`digital_twin.vm.deployment_sets.production_like_snapshot` (seeded; its placement satisfies
every set), and the reference is the very same snapshot with the sets removed
(:func:`~digital_twin.vm.deployment_sets.strip_deployment_sets`), run in the same process.

Each step is VMRescheduling-v0 under random valid (masked) actions, observation and mask
included, as in ``bench/envs.py`` (the draw of the random action is timed too, for both sides:
``nonzero`` of the observation's mask indexed by a uniform draw, ~3 µs).
The budget is the snapshot's ``maximum_migration`` (10), so an episode is ~20 steps and resets
(a copy of the snapshot) are part of the figure.

The two sides are measured in alternation, ``--rounds`` times each, after an untimed round each
(numba's kernels load, or compile after a source change, at their first call), and the best
round of each side is reported (what the machine can do, less what other processes took from it).

Goal: the sets cost little next to the env itself: with sets >= 0.8x the steps/s without, and
>= 20,000 steps/s where the snapshot without sets reaches it. ``--snapshot FILE`` measures a
VMR2L-schema file instead (for instance a production snapshot with its own sets).

``--against PATH`` also measures another version, alternating with the current one in the same
process, and prints the ratios: a before/after comparison that a loaded machine disturbs far less
than two separate runs. PATH is either a copy of the env module alone (``git show
HEAD~1:envs/vm_rescheduling.py > /tmp/old_env.py``), played over the current twin, or a whole
checkout (``mkdir /tmp/old && git archive HEAD~1 | tar -x -C /tmp/old``), whose env, twin and
generator are imported in isolation: the way to compare changes to ``digital_twin/vm/`` too.
On a loaded machine prefer many short rounds (``--seconds 0.3 --rounds 20``): the best round of
each side is the one least disturbed.

Measured (2-core VM shared with other work, load 1.3-1.8, OMP_NUM_THREADS=1, best of 30 rounds
of 0.3 s): with sets 47,500 steps/s, without 55,200, sets/bare 0.86 (most rounds ~43,000 and
~51,000); in the same process against a checkout of a3435bb played through this loop, x1.29 with
sets (37,000 ->) and x1.24 without (44,500 ->), the rest of the gain being the draw: that
checkout's own bench, with ``rng.choice(np.flatnonzero(env.action_masks()))`` (~12-20 µs a
step), gave 25,200 and 31,500 (0.80) a minute later. The machine's speed drifts by ~1.5x over an
hour at the same load: compare ratios of one run, not figures of two. What a step costs now
(py-spy, with sets): the eight observation copies ~24 % (memory bound: ~150 KB a step), the
one compiled call per migration ~20 % (numba unboxes its 25 arrays, ~0.15 µs each in this loop,
then the verdict pass over 3,026 VMs), the reset of every ~20 steps ~17 % (the copy of the
snapshot ~6 %), the destinations of the selected VM ~6 %, the draw ~5 %.

Run with ``OMP_NUM_THREADS=1`` on an otherwise idle machine:
``python bench/vm_sets.py [--seconds 2] [--rounds 3] [--against /tmp/old_env.py | /tmp/old]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.vm.plan import resolve_budget  # noqa: E402
from bench.envs import vm_steps_per_second  # noqa: E402  (one random-play loop for both benches)
from digital_twin.vm import Snapshot, load_snapshot  # noqa: E402
from digital_twin.vm.deployment_sets import production_like_snapshot, strip_deployment_sets  # noqa: E402
from envs.vm_rescheduling import VMReschedulingEnv  # noqa: E402
from envs.vm_sources import FixedSource  # noqa: E402

RATIO_GOAL = 0.8
STEPS_GOAL = 20_000


def steps_per_second(snapshot: Snapshot, seconds: float, seed: int = 0,
                     env_class: type = VMReschedulingEnv, source_class: type = FixedSource) -> tuple[float, int]:
    """Random masked play on ``snapshot`` for ``seconds``; returns (steps/s, episodes finished).

    The budget is the snapshot's own (passed explicitly, so that an older env module, whose
    default differed, plays the same episodes).
    """
    hosts = sum(c.num_hosts for c in snapshot.clusters)
    vms = sum(c.num_vms for c in snapshot.clusters)
    budget = resolve_budget(snapshot)[0]
    env = env_class(source=source_class([snapshot]), max_hosts=hosts, max_vms=vms, budget=budget)
    return vm_steps_per_second(env, seconds, seed)


def load_env_class(path: Path) -> type:
    """``VMReschedulingEnv`` of another copy of the env module (``--against``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_vm_rescheduling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VMReschedulingEnv


def load_checkout(root: Path) -> dict:
    """Another checkout's env, source, generator and loader, imported in isolation (``--against DIR``).

    Its packages are imported under their own names while this process's are set aside, then
    the current ones are put back: both versions live side by side, each with its own classes.
    """
    import importlib

    packages = ("envs", "digital_twin", "agents")
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] in packages}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (it registers the same gym ids again)
            env = importlib.import_module("envs.vm_rescheduling")
            sources = importlib.import_module("envs.vm_sources")
            sets = importlib.import_module("digital_twin.vm.deployment_sets")
            vm = importlib.import_module("digital_twin.vm")
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]
        sys.modules.update(ours)
    return {"env": env.VMReschedulingEnv, "source": sources.FixedSource, "generate": sets.production_like_snapshot,
            "strip": sets.strip_deployment_sets, "load": vm.load_snapshot}


def describe(snapshot: Snapshot) -> str:
    parts = []
    for c in snapshot.clusters:
        grans = [d.granularity for d in c.deployment_sets]
        members = sum(len(np.unique(d.members)) for d in c.deployment_sets)
        parts.append(f"{c.name}: {c.num_hosts} hosts, {c.num_vms} VMs, {grans.count('host')} host + "
                     f"{grans.count('rack')} rack sets, {members} members")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="VM env steps/s on a snapshot with many deployment sets vs the same snapshot without sets.")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating measurements per side; the best is kept (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated snapshot (default 0)")
    parser.add_argument("--snapshot", type=Path, help="measure this VMR2L-schema file instead of a generated one")
    parser.add_argument("--against", type=Path, metavar="FILE",
                        help="also measure this copy of envs/vm_rescheduling.py (an older version), alternating "
                             "with the current one, and print after/before ratios")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.against is not None and not (args.against.is_file() or (args.against / "envs").is_dir()):
        parser.error(f"--against {args.against}: neither a file nor a checkout (give a copy of "
                     "envs/vm_rescheduling.py or the folder of another checkout)")
    if args.snapshot is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the file's free-value quirks are not what is measured
            with_sets = load_snapshot(args.snapshot)
    else:
        with_sets = production_like_snapshot(args.seed)
    without = strip_deployment_sets(with_sets)
    budget, source = resolve_budget(with_sets)
    print(f"VMRescheduling-v0, random masked actions, obs + mask every step (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); budget {budget} ({source})")
    print(f"snapshot {with_sets.source}: {describe(with_sets)}")
    reference, ref_source, ref_snapshots = None, FixedSource, (with_sets, without)
    if args.against is not None and args.against.is_file():
        reference = load_env_class(args.against)
    elif args.against is not None:  # a whole checkout: its own twin plays its own copy of the snapshot
        other = load_checkout(args.against.resolve())
        reference, ref_source = other["env"], other["source"]
        if args.snapshot is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref_sets = other["load"](args.snapshot)
        else:
            ref_sets = other["generate"](args.seed)
        ref_snapshots = (ref_sets, other["strip"](ref_sets))
    runs: dict[str, list[tuple[float, int]]] = {"sets": [], "bare": [], "sets_ref": [], "bare_ref": []}
    # An untimed round per side first: numba loads (after a source change, compiles) its kernels
    # at their first call, seconds that no round should carry.
    for snapshot, env_class, source_class in ((with_sets, VMReschedulingEnv, FixedSource),
                                              (without, VMReschedulingEnv, FixedSource)) + (
            () if reference is None else ((ref_snapshots[0], reference, ref_source),
                                          (ref_snapshots[1], reference, ref_source))):
        steps_per_second(snapshot, 0.05, env_class=env_class, source_class=source_class)
    for _ in range(args.rounds):
        runs["sets"].append(steps_per_second(with_sets, args.seconds))
        runs["bare"].append(steps_per_second(without, args.seconds))
        if reference is not None:
            runs["sets_ref"].append(steps_per_second(ref_snapshots[0], args.seconds, env_class=reference,
                                                     source_class=ref_source))
            runs["bare_ref"].append(steps_per_second(ref_snapshots[1], args.seconds, env_class=reference,
                                                     source_class=ref_source))
    (rate_sets, episodes_sets), (rate_bare, episodes_bare) = max(runs["sets"]), max(runs["bare"])
    ratio = rate_sets / rate_bare
    print(f"{'best of ' + str(args.rounds):<22}{'env steps/s':>13}{'episodes':>10}   all rounds")
    for label, rate, episodes, key in (("with sets", rate_sets, episodes_sets, "sets"),
                                       ("without sets", rate_bare, episodes_bare, "bare")):
        rounds = ", ".join(f"{r:,.0f}" for r, _ in runs[key])
        print(f"{label:<22}{rate:>13,.0f}{episodes:>10,}   {rounds}")
    verdict = f"ratio {ratio:.2f}x (goal >= {RATIO_GOAL}x: {'met' if ratio >= RATIO_GOAL else 'NOT met'})"
    if rate_bare >= STEPS_GOAL:
        verdict += f"; >= {STEPS_GOAL:,}/s with sets: {'met' if rate_sets >= STEPS_GOAL else 'NOT met'}"
    else:
        verdict += (f"; the env without sets runs under {STEPS_GOAL:,}/s on this snapshot, "
                    "so that goal is not judged here")
    print(verdict)
    if reference is not None:
        print(f"against {args.against} (best of {args.rounds}, same process, alternating):")
        for label, key in (("with sets", "sets"), ("without sets", "bare")):
            now, before = max(runs[key])[0], max(runs[key + "_ref"])[0]
            print(f"  {label:<20}{before:>10,.0f} -> {now:,.0f} steps/s   x{now / before:.2f}")


if __name__ == "__main__":
    main()
