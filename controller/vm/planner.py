"""Plan live migrations with an exported VM policy: the env's decision loop, without the twin.

:func:`plan_migrations` plays the policy on a :class:`~controller.vm.fleet.Fleet` exactly as
``evaluate.py --policies agent:PATH`` plays it on the env: observe, pick a VM (or stop), observe,
pick its destination, migrate, until the budget is spent, the policy stops, or no VM can move.
Every migration is checked by the fleet (capacity per NUMA node, anti-affinity, migratability,
active hosts) before it enters the plan, so a plan is feasible when executed in order.

**Dependencies.** Executed on a cluster, migrations run concurrently unless one needs another
done first. Migration ``j`` waits for an earlier ``i`` when it moves the same VM, or lands on the
host ``i`` leaves (it may need the capacity or the anti-affinity slot ``i`` frees), or, for a VM
in a rack-level set, lands in the rack ``i`` leaves. Nothing else an earlier migration does can
make ``j`` feasible: arriving VMs only take capacity, and the plan already counts all of them.
``after`` lists those indices; :class:`controller.vm.kubevirt.MigrationRunner` honours them.

**Best prefix** (``best_prefix=True``, evaluate.py's ``agent:PATH?best_prefix=1``): the policy's
stop action is masked while any migration is possible, and the plan is cut after its lowest
fragment rate (the earliest of equal ones).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from controller.vm.fleet import Fleet

PLAN_FORMAT = "clustergym-plan/1"


@dataclass
class PlannedMigration:
    """One step of a plan, in the cluster's names."""

    index: int
    cluster: str
    vm: str
    from_host: str
    to_host: str
    to_numa: list[int]  # the destination NUMA node(s)
    cpu: int
    memory_mb: float
    fragment_rate_after: float
    after: list[int] = field(default_factory=list)  # earlier migrations that must finish first


@dataclass
class Plan:
    """A migration plan and how it was made (``to_json`` is the file ``reschedule --out`` writes)."""

    source: str
    policy: str
    budget: int
    best_prefix: bool
    fragment_rate_before: float
    fragment_rate_after: float
    planning_seconds: float
    policy_seconds: float
    decisions: int
    migrations: list[PlannedMigration]
    moves: list[tuple[int, int, int]] = field(default_factory=list, repr=False)  # (vm, host, placement), global

    def to_json(self) -> dict[str, Any]:
        out = {"format": PLAN_FORMAT, **{k: v for k, v in asdict(self).items() if k not in ("migrations", "moves")}}
        out["migrations"] = [asdict(m) for m in self.migrations]
        return out


def plan_migrations(fleet: Fleet, policy, budget: int, best_prefix: bool = False, source: str = "") -> Plan:
    """Plan up to ``budget`` migrations on a copy of ``fleet`` with ``policy`` (a VM :class:`~controller.policy.Policy`).

    Raises:
        ValueError: ``budget`` below 1, or the policy chose an action its mask forbids (a graph
            that does not match this controller).
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 migration, got {budget}")
    started = time.perf_counter()
    state = fleet.copy()
    num_vms = len(state.vm_ids)
    frs = [state.fragment_rates()[0]]
    moves: list[tuple[int, int, int]] = []
    policy_s, decisions = 0.0, 0
    while len(moves) < budget and num_vms and state.movable().any():
        vm = _decide(state, policy, -1, budget, len(moves), best_prefix)
        policy_s += vm[1]
        decisions += 1
        if vm[0] >= num_vms:  # stop
            break
        destination = _decide(state, policy, vm[0], budget, len(moves), best_prefix)
        policy_s += destination[1]
        decisions += 1
        host, placement = divmod(destination[0], 2)
        state.migrate(vm[0], host, placement)  # raises (and changes nothing) if the graph broke the mask
        moves.append((vm[0], host, placement))
        frs.append(state.fragment_rates()[0])
    keep = int(np.argmin(frs)) if best_prefix else len(moves)
    moves = moves[:keep]
    return Plan(source=source, policy=str(getattr(policy, "path", policy)), budget=int(budget), best_prefix=best_prefix,
                fragment_rate_before=float(frs[0]), fragment_rate_after=float(frs[keep]),
                planning_seconds=round(time.perf_counter() - started, 4), policy_seconds=round(policy_s, 4),
                decisions=decisions, migrations=describe(fleet, moves, frs[1:keep + 1]), moves=moves)


def _decide(state: Fleet, policy, selected: int, budget: int, used: int, best_prefix: bool) -> tuple[int, float]:
    obs = state.observation(selected, budget, used)
    mask = obs["action_mask"]
    if best_prefix and selected < 0 and int(mask.sum()) > 1:
        mask[-1] = 0  # keep going while any migration is possible
    t0 = time.perf_counter()
    out = policy.run({k: v[None] for k, v in obs.items()})
    action = int(out["action"][0])
    if not mask[action]:
        raise ValueError(f"{getattr(policy, 'path', 'the policy')}: chose action {action}, which the fleet's mask "
                         "forbids; export the policy again with this clustergym version")
    return action, time.perf_counter() - t0


def describe(fleet: Fleet, moves: list[tuple[int, int, int]], frs: list[float]) -> list[PlannedMigration]:
    """The moves in the cluster's names, with the dependencies of the module docstring."""
    rack_set_vms = np.zeros(len(fleet.vm_ids), bool)
    for granularity, members in fleet.deployment_sets:
        if granularity == "rack":
            rack_set_vms[members] = True
    out: list[PlannedMigration] = []
    host_of = fleet.vm_host.copy()
    sources: list[tuple[int, int]] = []  # (vm, from host) of each earlier move
    for index, ((vm, host, placement), fr) in enumerate(zip(moves, frs)):
        src = int(host_of[vm])
        after = [i for i, (other, left) in enumerate(sources)
                 if other == vm or left == host
                 or (rack_set_vms[vm] and fleet.host_rack[left] == fleet.host_rack[host])]
        split = fleet.vm_span[vm] == 2
        out.append(PlannedMigration(
            index=index, cluster=fleet.cluster_names[fleet.vm_cluster[vm]], vm=fleet.vm_ids[vm],
            from_host=fleet.host_ids[src], to_host=fleet.host_ids[host], to_numa=[0, 1] if split else [int(placement)],
            cpu=int(fleet.vm_cpu[vm].sum()), memory_mb=float(fleet.vm_mem[vm].sum()), fragment_rate_after=float(fr),
            after=after))
        sources.append((vm, src))
        host_of[vm] = host
    return out
