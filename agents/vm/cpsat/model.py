"""The counted CP-SAT model of MNL-constrained fragment-rate minimisation (:class:`FRModel`).

Movable VMs are counted in *groups* of interchangeable VMs, never placed one by one:

* A group is a shape (span, per-node CPU and memory) plus the *explicit* deployment sets its VMs
  belong to. VMs in no set, and members of sets the model does not state explicitly (see below),
  form one group per shape; members of explicit sets form one group per (shape, sets): two members
  of one set with one shape are interchangeable, since the set only counts members per host (rack).
* ``dep[g, h, p]`` -- how many group-``g`` VMs leave ``(host h, placement p)``, at most as many as
  sit there; ``arr[g, h, p]`` -- how many arrive there; per group, arrivals = departures.
* A VM may not "move" to its own host: per group and host, ``dep_h + arr_h <= total departures``
  (Hall's condition, so departures can be matched to arrivals on *other* hosts; see
  :func:`match_departures`).
* Arrival counts exist only where the group can go at all: active hosts whose nodes could hold the
  shape after the most the budget can move off them, and, for explicit sets, units (hosts or racks)
  free of members that cannot move. VMs that are not migratable, or whose shape can go nowhere else,
  are constants.
* Anti-affinity of an explicit set, per unit ``u`` that members may enter, with ``S0`` the members
  in ``u`` at the start, ``stay`` those still there and ``arr`` those arriving:
  ``arr + stay <= 1`` when ``S0 <= 1``, and ``S0 * arr + stay <= S0`` otherwise (an inconsistent
  start: members may leave a crowded unit, and one may enter it once all the others have left),
  which is exactly what the twin allows one migration at a time.
* Per active NUMA node: ``free = free0 - arrivals + departures >= 0`` (CPU and memory, memory in
  exact integer units), and ``free = 16 q + r`` with ``0 <= r <= 15`` so ``r = free mod 16``.
* Objective: ``N = sum(r)``. ``D = sum(free)`` is constant when every moving VM starts on an
  active host, so minimising ``N`` minimises FR exactly; it is stated as ``D - 16 * sum(q)``, which
  CP-SAT proves optimal far sooner than the same objective written over the ``free`` expressions.
  If VMs may leave inactive hosts, ``D`` varies and the ratio is minimised by Dinkelbach iterations
  (``min b*N - a*D`` with ``a/b`` the incumbent FR, repeated until no solution beats it; see
  :mod:`agents.vm.cpsat.planners`).

**Explicit and relaxed sets.** Stating a set explicitly costs one arrival count per (group, host,
placement) it may enter: with 165 sets over 1,010 hosts that is hundreds of thousands of variables.
A set that is not explicit is *relaxed*: its members join their shape's group and the model ignores
where they may arrive. The model is then a relaxation of the problem (its bound is valid), and a
solution is only accepted once :meth:`FRModel.targets` has picked, with a small CP-SAT assignment,
which VMs of each counted departure leave and where each goes so that every relaxed set holds; when
no such assignment exists the planner makes the sets involved explicit and solves again (see
:attr:`FRModel.failed_sets`). An accepted solution is a solution of the full problem with the same
objective, so a relaxed model solved to optimality whose solution is accepted is optimal for the
full problem. ``explicit_sets="auto"`` states every set of a cluster explicitly when that costs at
most ``max_explicit_vars`` arrival counts, else none. Sets that share a member are explicit
together.

On the real 236+43-host snapshot this has a few thousand integer variables instead of
~1,934 x 472 Booleans.

A solution is a *target* placement per cluster (:data:`Target`); turning it into an ordered plan is
:mod:`agents.vm.cpsat.sequencing`'s job.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import numpy as np
from ortools.sat.python import cp_model

from digital_twin.vm import Cluster
from digital_twin.vm.metrics import free_from_placements

Target = tuple[np.ndarray, np.ndarray]
"""One cluster's placement after a plan: ``(vm_host, vm_placement)``, each (V,)."""

Node = tuple[int, int]
"""One NUMA node: ``(host index, node 0 or 1)``."""

SMALL_MODEL_VARS = 4_000
"""Models with fewer variables than this are solved on one worker, without probing (see :meth:`FRModel.solve`)."""

LARGE_MODEL_VARS = 15_000
"""Models with more variables than this are solved without CP-SAT's probing presolve (see :meth:`FRModel.solve`)."""

DEFAULT_MAX_EXPLICIT_VARS = 20_000
"""``explicit_sets="auto"``: most arrival counts a cluster's explicit sets may cost."""


# ---------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class MemoryUnits:
    """Memory (MB) as the integers CP-SAT needs: ``scale`` units per MB.

    Memory is in MB and the real snapshots are whole MB. When no power of two up to 1024 makes every
    figure integral (``exact`` False), usage is rounded up and capacity down at scale 1024, so the
    model never accepts a placement the twin refuses.
    """

    scale: int
    exact: bool

    @classmethod
    def of(cls, clusters: Sequence[Cluster]) -> "MemoryUnits":
        """The smallest scale that makes every memory figure of ``clusters`` integral."""
        values = np.concatenate([np.concatenate([c.vm_mem.ravel(), c.numa_mem_total.ravel(), c.free_mem.ravel()])
                                 for c in clusters] or [np.zeros(0)])
        for scale in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
            scaled = values * scale
            if np.array_equal(scaled, np.round(scaled)) and (np.abs(scaled).max(initial=0) < 2 ** 50):
                return cls(scale, True)
        return cls(1024, False)

    def ceil(self, mb: float) -> int:
        """``mb`` in units, rounded up when inexact (memory a VM needs)."""
        v = mb * self.scale
        return int(round(v)) if self.exact else math.ceil(v - 1e-9)

    def floor(self, mb: float) -> int:
        """``mb`` in units, rounded down when inexact (memory that is free, or freed by a departure)."""
        v = mb * self.scale
        return int(round(v)) if self.exact else math.floor(v + 1e-9)


def free_at(cluster: Cluster, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """Free CPU and memory per (host, node) with the VMs at ``target``; each (H, 2)."""
    cpu, mem = cluster.vm_node_usage(target[1])
    return free_from_placements(cluster.numa_cpu_total, cluster.numa_mem_total, target[0], cpu, mem)


def placements(span: int) -> tuple[int, ...]:
    """The placements a VM of ``span`` NUMA nodes can take (a split VM keeps its split)."""
    return (0, 1) if span == 1 else (0,)


def on_nodes(usage: np.ndarray, placement: int) -> np.ndarray:
    """A (2,) canonical per-node usage as it lands on nodes 0 and 1 under ``placement``."""
    return usage if placement == 0 else usage[::-1]


def unit_of_host(cluster: Cluster, granularity: str) -> np.ndarray:
    """(H,) the anti-affinity unit of each host: its rack, or the host itself."""
    return cluster.host_rack if granularity == "rack" else np.arange(cluster.num_hosts)


def new_solver(time_limit_s: float | None, workers: int, seed: int) -> cp_model.CpSolver:
    """A quiet CP-SAT solver with the given limit (None: none), workers and seed."""
    solver = cp_model.CpSolver()
    params = solver.parameters
    if time_limit_s is not None:
        params.max_time_in_seconds = max(0.05, float(time_limit_s))
    params.num_workers = max(1, int(workers))
    params.random_seed = int(seed)
    params.log_search_progress = False
    return solver


def _sum(terms: Sequence[Any]) -> Any:
    return cp_model.LinearExpr.Sum(list(terms))


def set_members(cluster: Cluster) -> list[np.ndarray]:
    """Each deployment set's members, deduplicated and sorted."""
    return [np.unique(np.asarray(d.members, dtype=np.int64).reshape(-1)) for d in cluster.deployment_sets]


def set_components(cluster: Cluster, members: Sequence[np.ndarray] | None = None) -> list[int]:
    """(S,) a label per deployment set: sets sharing a member get the same one (the smallest index)."""
    members = set_members(cluster) if members is None else members
    parent = list(range(len(members)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[int, int] = {}
    for s, m in enumerate(members):
        for v in m.tolist():
            if v in first:
                a, b = find(first[v]), find(s)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[v] = s
    return [find(s) for s in range(len(members))]


def match_departures(leaving: dict[int, list[int]], coming: dict[int, list[tuple[int, int]]],
                     ) -> dict[int, tuple[int, int]]:
    """Send each leaving VM of one group to an arrival slot on another host.

    Always serving the host with the most remaining departures + arrivals keeps Hall's condition
    (``dep_h + arr_h <= remaining total`` for every host, which the model enforces) true, so this
    never gets stuck.

    Args:
        leaving: host -> VMs leaving it.
        coming: host -> ``(host, placement)`` arrival slots on it.

    Returns:
        VM -> ``(host, placement)``.
    """
    leaving = {h: list(v) for h, v in leaving.items() if v}
    coming = {h: list(s) for h, s in coming.items() if s}
    if sum(map(len, leaving.values())) != sum(map(len, coming.values())):
        raise AssertionError("departures and arrivals of a group differ")
    out: dict[int, tuple[int, int]] = {}

    def load(h: int) -> int:
        return len(leaving.get(h, ())) + len(coming.get(h, ()))

    while leaving:
        hosts = set(leaving) | set(coming)
        top = max(hosts, key=lambda h: (load(h), -h))
        if top in leaving:
            partner = max((h for h in coming if h != top), key=lambda h: (load(h), -h))
            src, dst = top, partner
        else:
            src = max((h for h in leaving if h != top), key=lambda h: (load(h), -h))
            dst = top
        out[leaving[src].pop()] = coming[dst].pop()
        for table, h in ((leaving, src), (coming, dst)):
            if not table[h]:
                del table[h]
    return out


def cancel_round_trips(dep: dict[tuple[int, int], int], arr: dict[tuple[int, int], int]) -> None:
    """Drop departure/arrival pairs at the same ``(host, placement)`` of one group, in place.

    A VM leaving a slot that another VM of the same group enters changes nothing but costs a
    migration (and may make a capacity cycle). A pair is dropped only while Hall's condition
    (``dep_h + arr_h <= total`` on every host) still holds afterwards.
    """
    for key in sorted(dep.keys() & arr.keys()):
        while dep.get(key, 0) > 0 and arr.get(key, 0) > 0:
            total = sum(dep.values()) - 1
            per_host: Counter = Counter()
            for (h, _), n in dep.items():
                per_host[h] += n
            for (h, _), n in arr.items():
                per_host[h] += n
            per_host[key[0]] -= 2
            if per_host and max(per_host.values()) > total:
                break
            dep[key] -= 1
            arr[key] -= 1


# ---------------------------------------------------------------------- one cluster's share
def _term_lists() -> defaultdict:
    return defaultdict(list)


@dataclass
class _NodeLoad:
    """How the model's variables change each NUMA node's load, per (host, node).

    The used CPU (memory) a node gains is ``sum(coef * var for coef, var in cpu)``; departures
    enter with negative coefficients.

    Attributes:
        cpu: node -> ``[(vCPU coefficient, variable)]``.
        mem: node -> ``[(memory-unit coefficient, variable)]``.
        arrivals: node -> expressions that are positive when some VM arrives on the node.
        departures: node -> expressions that are positive when some VM leaves it (the repairs
            restrict nodes that do both; see :meth:`FRModel.forbid_mixed`).
    """

    cpu: dict[Node, list] = field(default_factory=_term_lists)
    mem: dict[Node, list] = field(default_factory=_term_lists)
    arrivals: dict[Node, list] = field(default_factory=_term_lists)
    departures: dict[Node, list] = field(default_factory=_term_lists)

    def arrive(self, node: Node, cpu: int, mem: int, var: Any) -> None:
        """``var`` VMs using ``cpu``/``mem`` on ``node`` arrive there."""
        self.cpu[node].append((cpu, var))
        self.mem[node].append((mem, var))
        self.arrivals[node].append(var)

    def depart(self, node: Node, cpu: int, mem: int, var: Any) -> None:
        """``var`` VMs using ``cpu``/``mem`` on ``node`` leave it."""
        self.cpu[node].append((-cpu, var))
        self.mem[node].append((-mem, var))
        self.departures[node].append(var)


@dataclass(frozen=True)
class Group:
    """Interchangeable movable VMs: a shape and the explicit deployment sets (indices) they are in."""

    shape: int
    sets: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Scope:
    """What of one cluster the model may change.

    Attributes:
        vm_in: (V,) bool, VMs whose original host is in the model (re-planned from there).
        model_hosts: indices of the hosts the model may change.
        active_hosts: the active ones among them: the only destinations.
        over: (H, 2) bool, nodes already over capacity (inconsistent input): they receive VMs
            only once departures have made room (as the twin allows, one migration at a time).
    """

    vm_in: np.ndarray
    model_hosts: np.ndarray
    active_hosts: np.ndarray
    over: np.ndarray

    @classmethod
    def of(cls, cluster: Cluster, in_model: np.ndarray, ctx_host: np.ndarray) -> "_Scope":
        vm_in = in_model[cluster.vm_host]
        if not np.array_equal(in_model[ctx_host], vm_in):
            raise ValueError(f"cluster {cluster.name}: the freed hosts are not closed under the context's moves")
        model_hosts = np.flatnonzero(in_model)
        return cls(vm_in=vm_in, model_hosts=model_hosts, active_hosts=model_hosts[cluster.host_active[model_hosts]],
                   over=(cluster.free_cpu < 0) | (cluster.free_mem < 0))


class _ClusterPart:
    """One cluster's variables and constraints inside an :class:`FRModel`.

    Built in steps, each adding its variables and constraints to ``owner.model``: the room every
    node could have (:meth:`_reach`), the movable VMs and their groups (:meth:`_groups`), departure
    and arrival counts (:meth:`_add_groups`), the explicit sets (:meth:`_add_anti_affinity`), then
    capacity and ``free = size * q + r`` per node (:meth:`_add_nodes`), whose terms make up the
    objective.

    Args:
        owner: the model this part belongs to (its CP-SAT model, budget, size, memory units).
        ci: the cluster's index.
        cluster: the cluster, in the state the plan starts from.
        in_model: (H,) bool, the hosts the model may change.
        context: the placement of everything outside the model.
        explicit: ``"all"``, ``"none"``, ``"auto"`` or the indices of the deployment sets to state
            explicitly (closed under shared members).
        max_explicit_vars: the ``"auto"`` threshold.

    Attributes:
        groups: the groups (:class:`Group`), by index.
        pools: ``(group, host, placement)`` -> the movable VMs of the group sitting there, in VM order.
        dep: the same key -> how many of them leave (IntVar).
        arr: ``(group, host, placement)`` -> how many VMs of the group arrive there (IntVar).
        explicit: the explicit set indices; ``relaxed``: the other sets with a movable member.
        load: the per-node load terms and arrival / departure expressions.
        unit_load: per explicit set, ``(arrivals, departures)``: unit -> expressions.
        q, r: node -> IntVar, ``free // size`` and ``free % size`` on each node the model changes.
        moved_terms: expressions summing to the number of moved VMs.
        n_terms, d_terms, n_const, d_const: ``N = sum(n_terms) + n_const``, the fragmented vCPU, and
            ``D = sum(d_terms) + d_const``, the free vCPU, over the cluster's active nodes.
        inactive_cpu: vCPU of the movable VMs on inactive hosts (the most ``D`` can drop).
        touches_inactive: whether any movable VM sits on an inactive host (``D`` varies).
        explicit_estimate: arrival counts all of the cluster's sets would cost stated explicitly.
    """

    def __init__(self, owner: "FRModel", ci: int, cluster: Cluster, in_model: np.ndarray, context: Target,
                 explicit: str | Collection[int], max_explicit_vars: int):
        c = cluster
        self.cluster = c
        self.ci = ci
        self.in_model = in_model
        self.ctx_host, self.ctx_place = np.asarray(context[0]).copy(), np.asarray(context[1]).copy()
        scope = _Scope.of(c, in_model, self.ctx_host)
        self.scope = scope
        self.vm_in = scope.vm_in
        self.start_host = np.where(self.vm_in, c.vm_host, self.ctx_host)
        self.members = set_members(c)
        self.component = set_components(c, self.members)
        self.vm_sets: dict[int, list[int]] = defaultdict(list)
        for s, m in enumerate(self.members):
            for v in m.tolist():
                self.vm_sets[v].append(s)
        self.load = _NodeLoad()
        self._reach(owner)
        self._groups(owner, explicit, max_explicit_vars)
        inactive = self.movable & ~c.host_active[c.vm_host]
        self.inactive_cpu = int(c.vm_cpu[inactive].sum())
        self.touches_inactive = bool(inactive.any())
        self.moved_terms = self._add_groups(owner)
        self._add_anti_affinity(owner.model)
        self._add_nodes(owner)
        self.strict_units = False
        self.failed_sets: set[int] = set()

    # ------------------------------------------------------------------ building steps
    def _reach(self, owner: "FRModel") -> None:
        """Per node, the most free CPU (memory units) it can have: now plus the ``budget`` largest movable VMs on it."""
        c, scope, units, budget = self.cluster, self.scope, owner.memory, owner.budget
        self.may_move = scope.vm_in & c.vm_allow_migration
        cpu_gain: dict[Node, list[int]] = defaultdict(list)
        mem_gain: dict[Node, list[int]] = defaultdict(list)
        for v in np.flatnonzero(self.may_move).tolist():
            h, p = int(c.vm_host[v]), int(c.vm_placement[v])
            cpu, mem = on_nodes(c.vm_cpu[v], p), on_nodes(c.vm_mem[v], p)
            for n in (0, 1):
                if cpu[n] or mem[n]:
                    cpu_gain[(h, n)].append(int(cpu[n]))
                    mem_gain[(h, n)].append(units.floor(float(mem[n])))
        reach_cpu = c.free_cpu.astype(np.int64).copy()
        reach_mem = np.array([[units.floor(float(x)) for x in row] for row in c.free_mem], dtype=np.int64) \
            .reshape(c.num_hosts, 2)
        for (h, n), gains in cpu_gain.items():
            reach_cpu[h, n] += sum(sorted(gains, reverse=True)[:budget])
        for (h, n), gains in mem_gain.items():
            reach_mem[h, n] += sum(sorted(gains, reverse=True)[:budget])
        self.reach_cpu, self.reach_mem = reach_cpu, reach_mem

    def _fit(self, k: int, p: int) -> np.ndarray:
        """(len(active hosts),) how many shape-``k`` VMs at placement ``p`` each active model host could take."""
        c, scope = self.cluster, self.scope
        hosts = scope.active_hosts
        cpu, mem = on_nodes(c.shape_cpu[k], p), on_nodes(c.shape_mem[k], p)
        fit = np.full(len(hosts), 1 << 30, dtype=np.int64)
        for n in (0, 1):
            if not (cpu[n] or mem[n]):
                continue
            if cpu[n]:
                fit = np.minimum(fit, self.reach_cpu[hosts, n] // int(cpu[n]))
            need = self._mem_units[(k, p, n)]
            if need:
                fit = np.minimum(fit, self.reach_mem[hosts, n] // need)
        return np.maximum(fit, 0)

    def _groups(self, owner: "FRModel", explicit: str | Collection[int], max_explicit_vars: int) -> None:
        """The movable VMs (a destination other than their own host exists) and their groups."""
        c, scope = self.cluster, self.scope
        hosts = scope.active_hosts
        self._mem_units = {(k, p, n): owner.memory.ceil(float(on_nodes(c.shape_mem[k], p)[n]))
                           for k in range(len(c.shape_span)) for p in (0, 1) for n in (0, 1)}
        self.fit: dict[tuple[int, int], np.ndarray] = {}
        dest_hosts: dict[int, set[int]] = {}
        shapes = sorted(set(c.vm_shape[self.may_move].tolist()))
        for k in shapes:
            where: set[int] = set()  # up to two hosts per placement: enough to tell "only its own host"
            for p in placements(int(c.shape_span[k])):
                fit = self._fit(k, p)
                self.fit[(k, p)] = fit
                where.update(hosts[fit > 0][:2].tolist())
            dest_hosts[k] = where
        movable = self.may_move.copy()
        for v in np.flatnonzero(movable).tolist():
            where = dest_hosts[int(c.vm_shape[v])]
            if not where or where == {int(c.vm_host[v])}:
                movable[v] = False  # nowhere else to go: a constant
        self.movable = movable
        # Which sets are explicit.
        has_movable = [bool(movable[m].any()) for m in self.members]
        classes: Counter = Counter()
        for v in np.flatnonzero(movable).tolist():
            if v in self.vm_sets:
                classes[(int(c.vm_shape[v]), tuple(self.vm_sets[v]))] += 1
        self.explicit_estimate = sum(int((self.fit[(k, p)] > 0).sum()) for (k, _) in classes
                                     for p in placements(int(c.shape_span[k])))
        if isinstance(explicit, str):
            if explicit == "all":
                chosen = set(range(len(self.members)))
            elif explicit == "none":
                chosen = set()
            elif explicit == "auto":
                chosen = set(range(len(self.members))) if self.explicit_estimate <= max_explicit_vars else set()
            else:
                raise ValueError(f"explicit_sets must be 'auto', 'all', 'none' or set indices, got {explicit!r}")
        else:
            chosen = {int(s) for s in explicit}
        comps = {self.component[s] for s in chosen}
        self.explicit = sorted(s for s in range(len(self.members)) if self.component[s] in comps)
        explicit_set = set(self.explicit)
        self.relaxed = [s for s in range(len(self.members)) if s not in explicit_set and has_movable[s]]
        # Groups.
        self.groups: list[Group] = []
        index: dict[Group, int] = {}
        self.vm_group = np.full(c.num_vms, -1, dtype=np.int64)
        self.pools: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for v in np.flatnonzero(movable).tolist():
            sets = tuple(s for s in self.vm_sets.get(v, ()) if s in explicit_set)
            g = Group(int(c.vm_shape[v]), sets)
            if g not in index:
                index[g] = len(self.groups)
                self.groups.append(g)
            self.vm_group[v] = index[g]
            self.pools[(index[g], int(c.vm_host[v]), int(c.vm_placement[v]))].append(v)
        # Units that members of an explicit set may never enter: a member that cannot move is there.
        self.blocked: dict[int, set[int]] = {}
        for s in self.explicit:
            unit = unit_of_host(c, c.deployment_sets[s].granularity)
            m = self.members[s]
            self.blocked[s] = set(unit[self.start_host[m[~movable[m]]]].tolist())

    def _add_groups(self, owner: "FRModel") -> list:
        """Departure counts per pool, arrival counts where each group can go, flow balance and Hall's condition.

        Returns:
            One expression per group: how many of its VMs move.
        """
        c, model, budget = self.cluster, owner.model, owner.budget
        hosts = self.scope.active_hosts.tolist()
        self.dep: dict[tuple[int, int, int], Any] = {}
        self.arr: dict[tuple[int, int, int], Any] = {}
        size: Counter = Counter()
        for (g, h, p), vms in self.pools.items():
            size[g] += len(vms)
            k = self.groups[g].shape
            var = model.NewIntVar(0, min(len(vms), budget), f"dep_{self.ci}_{g}_{h}_{p}")
            self.dep[(g, h, p)] = var
            cpu = on_nodes(c.shape_cpu[k], p)
            for n in (0, 1):
                if cpu[n] or self._mem_units[(k, p, n)]:
                    mem = owner.memory.floor(float(on_nodes(c.shape_mem[k], p)[n]))
                    self.load.depart((h, n), int(cpu[n]), mem, var)
        units = {s: unit_of_host(c, c.deployment_sets[s].granularity) for s in self.explicit}
        deps_of: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for (g, h, _), var in self.dep.items():
            deps_of[g].append((h, var))
        moved = []
        for g, group in enumerate(self.groups):
            k = group.shape
            arrivals, arr_by_host = [], defaultdict(list)
            cap = min(budget, size[g]) if not group.sets else 1  # one member per unit and set
            for p in placements(int(c.shape_span[k])):
                cpu = on_nodes(c.shape_cpu[k], p)
                for h, ub in zip(hosts, self.fit[(k, p)].tolist()):
                    if ub <= 0 or any(int(units[s][h]) in self.blocked[s] for s in group.sets):
                        continue
                    var = model.NewIntVar(0, min(ub, cap), f"arr_{self.ci}_{g}_{h}_{p}")
                    self.arr[(g, h, p)] = var
                    arrivals.append(var)
                    arr_by_host[h].append(var)
                    for n in (0, 1):
                        if cpu[n] or self._mem_units[(k, p, n)]:
                            self.load.arrive((h, n), int(cpu[n]), self._mem_units[(k, p, n)], var)
            departures, dep_by_host = [], defaultdict(list)
            for h, var in deps_of[g]:
                departures.append(var)
                dep_by_host[h].append(var)
            # The group's moves (at most the budget): one variable, so Hall's condition has few terms.
            total = model.NewIntVar(0, min(budget, size[g]), f"moves_{self.ci}_{g}")
            model.Add(_sum(departures) == total)
            model.Add(_sum(arrivals) == total)
            for h, deps in dep_by_host.items():
                if h in arr_by_host:  # Hall: departures from h can all go to other hosts
                    model.Add(_sum(deps + arr_by_host[h]) <= total)
            moved.append(total)
        self.totals = moved
        return moved

    def _add_anti_affinity(self, model: cp_model.CpModel) -> None:
        """Explicit sets: per unit members may enter, ``arr + stay <= 1`` (``S0 * arr + stay <= S0`` if crowded)."""
        c = self.cluster
        self.unit_load: list[tuple[dict[int, list], dict[int, list]]] = []
        by_group_set: dict[int, list[int]] = defaultdict(list)
        for g, group in enumerate(self.groups):
            for s in group.sets:
                by_group_set[s].append(g)
        arr_of: dict[int, list[tuple[int, int, Any]]] = defaultdict(list)
        for (g, h, p), var in self.arr.items():
            arr_of[g].append((h, p, var))
        for s in self.explicit:
            unit = unit_of_host(c, c.deployment_sets[s].granularity)
            m = self.members[s]
            start = Counter(unit[self.start_host[m]].tolist())
            movable_in = Counter(unit[self.start_host[m[self.movable[m]]]].tolist())
            arr_u: dict[int, list] = defaultdict(list)
            dep_u: dict[int, list] = defaultdict(list)
            for g in by_group_set[s]:
                for h, p, var in arr_of[g]:
                    arr_u[int(unit[h])].append(var)
            for (g, h, p), var in self.dep.items():
                if s in self.groups[g].sets:
                    dep_u[int(unit[h])].append(var)
            for u, arrs in arr_u.items():
                s0, n_mov = start[u], movable_in[u]
                fixed = s0 - n_mov
                # stay = fixed + n_mov - departures
                if s0 <= 1:
                    model.Add(_sum(arrs) - _sum(dep_u.get(u, [])) <= 1 - fixed - n_mov)
                else:
                    model.Add(s0 * _sum(arrs) - _sum(dep_u.get(u, [])) <= s0 - fixed - n_mov)
            self.unit_load.append((arr_u, dep_u))

    def _add_nodes(self, owner: "FRModel") -> None:
        """Capacity and ``free = size * q + r`` on each active node the model changes; constants elsewhere."""
        c, model, size, scope = self.cluster, owner.model, owner.size, self.scope
        load, active = self.load, c.host_active
        self.q: dict[Node, Any] = {}
        self.r: dict[Node, Any] = {}
        self.touched: dict[Node, Any] = {}
        self.n_terms, self.d_terms = [], []
        n_const = d_const = 0
        for h in scope.model_hosts.tolist():
            for n in (0, 1):
                free0 = int(c.free_cpu[h, n])
                if (h, n) not in load.cpu:
                    if active[h]:
                        n_const += free0 % size
                        d_const += free0
                    continue
                if not active[h]:  # departures only: capacity can only grow, and it does not count
                    continue
                cpu_terms, mem_terms = load.cpu[(h, n)], load.mem[(h, n)]
                used = cp_model.LinearExpr.WeightedSum([t[1] for t in cpu_terms], [t[0] for t in cpu_terms])
                gains = bool(load.arrivals.get((h, n)))
                free_mem0 = owner.memory.floor(float(c.free_mem[h, n]))
                # free = free0 - used = size * q + r, 0 <= r < size: one equality per node. With
                # free0 >= 0, q >= 0 is the capacity constraint. An overloaded node (free0 < 0, or
                # its memory) may receive VMs only if it ends with room for them (departures first).
                q = model.NewIntVar(min(free0, 0) // size, max(int(self.reach_cpu[h, n]), free0, 0) // size,
                                    f"q_{self.ci}_{h}_{n}")
                r = model.NewIntVar(0, size - 1, f"r_{self.ci}_{h}_{n}")
                model.Add(free0 - used == size * q + r)
                if gains:
                    mem_used = cp_model.LinearExpr.WeightedSum([t[1] for t in mem_terms], [t[0] for t in mem_terms])
                    if free0 >= 0 and free_mem0 >= 0:
                        model.Add(mem_used <= free_mem0)
                    else:
                        enters = model.NewBoolVar(f"enters_{self.ci}_{h}_{n}")
                        model.Add(_sum(load.arrivals[(h, n)]) == 0).OnlyEnforceIf(enters.Not())
                        model.Add(free0 - used >= 0).OnlyEnforceIf(enters)
                        model.Add(mem_used <= free_mem0).OnlyEnforceIf(enters)
                self.q[(h, n)] = q
                self.r[(h, n)] = r
                self.n_terms.append(r)
                self.d_terms.append(free0 - used)
                # touched[node]: some VM leaves or enters it; untouched, r keeps its value. Implied
                # by the rest, but it lets the LP see that few nodes change (see FRModel).
                t = model.NewBoolVar(f"t_{self.ci}_{h}_{n}")
                change = _sum(load.arrivals.get((h, n), []) + load.departures.get((h, n), []))
                model.Add(change <= 2 * owner.budget * t)
                model.Add(change >= t)
                r0 = free0 % size
                model.Add(r + r0 * t >= r0)
                model.Add(r - (size - 1 - r0) * t <= r0)
                self.touched[(h, n)] = t
        # Hosts outside the model stay as the context has them.
        outside = ~self.in_model & active
        if outside.any():
            free_ctx = free_at(c, (self.ctx_host, self.ctx_place))[0][outside]
            n_const += int((free_ctx % size).sum())
            d_const += int(free_ctx.sum())
        self.n_const, self.d_const = n_const, d_const

    # ------------------------------------------------------------------ hints and solutions
    def hint(self, model: cp_model.CpModel, size: int, target: Target | None) -> None:
        """Hint ``target`` (None: the current placement) for this cluster's variables."""
        c = self.cluster
        t_host = c.vm_host if target is None else np.asarray(target[0])
        t_place = c.vm_placement if target is None else np.asarray(target[1])
        arrivals: Counter = Counter()
        moves: Counter = Counter()
        # Only the non-zero counts (and below, only the touched nodes): a complete hint makes
        # CP-SAT's presolve far slower on large models (58 s instead of 8 s on 1,264 hosts), and
        # the rest follows from these.
        for (g, h, p), vms in self.pools.items():
            leaving = [v for v in vms if t_host[v] != h]
            if leaving:
                model.AddHint(self.dep[(g, h, p)], len(leaving))
            moves[g] += len(leaving)
            for v in leaving:
                arrivals[(g, int(t_host[v]), int(t_place[v]))] += 1
        for g, var in enumerate(self.totals):  # zeros too: few variables, and they fix the rest
            model.AddHint(var, moves[g])
        for key, n in arrivals.items():
            if key in self.arr:
                model.AddHint(self.arr[key], n)
        host = np.where(self.vm_in, t_host, c.vm_host)
        place = np.where(self.vm_in, t_place, c.vm_placement)
        free = free_at(c, (host, place))[0]
        touched = set()
        for v in np.flatnonzero(self.movable & (host != c.vm_host)).tolist():
            for h, p in ((int(c.vm_host[v]), int(c.vm_placement[v])), (int(host[v]), int(place[v]))):
                touched.update((h, n) for n in (0, 1) if on_nodes(c.vm_cpu[v], p)[n] or on_nodes(c.vm_mem[v], p)[n])
        for key in touched:
            if key in self.q:
                model.AddHint(self.q[key], int(free[key]) // size)
                model.AddHint(self.r[key], int(free[key]) % size)
                model.AddHint(self.touched[key], 1)

    def target(self, solver: cp_model.CpSolver, time_limit_s: float, workers: int, seed: int) -> Target | None:
        """This cluster's placement in the solver's solution, or None when the relaxed sets cannot hold.

        Explicit groups (and every group when no set is relaxed): counted departures matched to
        arrivals (:func:`match_departures`). Groups holding members of relaxed sets: a small CP-SAT
        assignment (:meth:`_assign_relaxed`); when none exists, :attr:`failed_sets` names the
        relaxed sets of the VMs that were to leave.
        """
        c = self.cluster
        host = np.where(self.vm_in, c.vm_host, self.ctx_host)
        place = np.where(self.vm_in, c.vm_placement, self.ctx_place)
        dep_v: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
        arr_v: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
        for (g, h, p), var in self.dep.items():
            if (n := solver.Value(var)):
                dep_v[g][(h, p)] = n
        for (g, h, p), var in self.arr.items():
            if (n := solver.Value(var)):
                arr_v[g][(h, p)] = n
        relaxed_groups = set()
        if self.relaxed:
            relaxed = set(self.relaxed)
            for (g, _, _), vms in self.pools.items():
                if not self.groups[g].sets and any(s in relaxed for v in vms for s in self.vm_sets.get(v, ())):
                    relaxed_groups.add(g)
        assign_dep: dict[tuple[int, int, int], int] = {}
        assign_arr: dict[tuple[int, int, int], int] = {}
        for g in sorted(dep_v.keys() | arr_v.keys()):
            dep, arr = dep_v.get(g, {}), arr_v.get(g, {})
            if g in relaxed_groups:
                assign_dep.update({(g, *k): n for k, n in dep.items()})
                assign_arr.update({(g, *k): n for k, n in arr.items()})
                continue
            cancel_round_trips(dep, arr)
            leaving: dict[int, list[int]] = defaultdict(list)
            coming: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for (h, p), n in dep.items():
                vms = self.pools[(g, h, p)]
                leaving[h].extend(vms[len(vms) - n:] if n else [])
            for (h, p), n in arr.items():
                coming[h].extend([(h, p)] * n)
            for v, (h, p) in match_departures(leaving, coming).items():
                host[v], place[v] = h, p
        if assign_dep:
            moves = self._assign_relaxed(assign_dep, assign_arr, time_limit_s, workers, seed)
            if moves is None:
                return None
            for v, (h, p) in moves.items():
                host[v], place[v] = h, p
        return host, place

    def _assign_relaxed(self, dep: dict[tuple[int, int, int], int], arr: dict[tuple[int, int, int], int],
                        time_limit_s: float, workers: int, seed: int) -> dict[int, tuple[int, int]] | None:
        """Pick which VMs leave each counted departure and where each goes, keeping the relaxed sets.

        Returns:
            VM -> ``(host, placement)``, or None (then :attr:`failed_sets` holds the sets to make explicit).
        """
        c = self.cluster
        model = cp_model.CpModel()
        slots: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for (g, h, p), n in arr.items():
            if n:
                slots[g].append((h, p))
        leave: dict[int, Any] = {}
        go: dict[int, dict[tuple[int, int], Any]] = {}
        into: dict[tuple[int, int, int], list] = defaultdict(list)
        for (g, h, p), n in dep.items():
            if not n:
                continue
            out = []
            for v in self.pools[(g, h, p)]:
                leave[v] = model.NewBoolVar(f"leave_{v}")
                out.append(leave[v])
                go[v] = {}
                for hh, pp in slots[g]:
                    if hh != h:
                        go[v][(hh, pp)] = model.NewBoolVar(f"go_{v}_{hh}_{pp}")
                        into[(g, hh, pp)].append(go[v][(hh, pp)])
                model.Add(_sum(go[v].values()) == leave[v])
            model.Add(_sum(out) == n)
        for (g, h, p), n in arr.items():
            if n:
                model.Add(_sum(into[(g, h, p)]) == n)
        involved: set[int] = set()
        for s in self.relaxed:
            m = [v for v in self.members[s].tolist() if v in leave]
            if not m:
                continue
            involved.update({self.component[s]})
            unit = unit_of_host(c, c.deployment_sets[s].granularity)
            start = Counter(unit[self.start_host[self.members[s]]].tolist())
            arr_u: dict[int, list] = defaultdict(list)
            dep_u: dict[int, list] = defaultdict(list)
            for v in m:
                dep_u[int(unit[c.vm_host[v]])].append(leave[v])
                for (hh, _), var in go[v].items():
                    arr_u[int(unit[hh])].append(var)
            for u, arrs in arr_u.items():
                s0 = start[u]
                stay = s0 - _sum(dep_u.get(u, []))
                if s0 <= 1:
                    model.Add(_sum(arrs) + stay <= 1)
                else:
                    model.Add(s0 * _sum(arrs) + stay <= s0)
            if self.strict_units:
                for u in arr_u.keys() & dep_u.keys():
                    gains = model.NewBoolVar("")
                    model.Add(_sum(dep_u[u]) == 0).OnlyEnforceIf(gains)
                    model.Add(_sum(arr_u[u]) == 0).OnlyEnforceIf(gains.Not())
        solver = new_solver(time_limit_s, workers, seed)
        if solver.Solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            self.failed_sets = {s for s in self.relaxed if self.component[s] in involved}
            return None
        out: dict[int, tuple[int, int]] = {}
        for v, options in go.items():
            for key, var in options.items():
                if solver.Value(var):
                    out[v] = key
        return out


# ---------------------------------------------------------------------- the model
class FRModel:
    """CP-SAT model of MNL-constrained fragment-rate minimisation over some or all hosts.

    Args:
        clusters: the clusters, in the state the plan starts from (not modified).
        budget: maximum number of moved VMs inside the model.
        host_masks: per cluster, (H,) bool of the hosts the model may change (default all). The
            VMs originally on those hosts are re-planned from their original placement.
        context: per cluster, the placement of everything outside the model (default: as now).
            Must not move VMs between model and non-model hosts.
        size: fragment size in vCPU.
        explicit_sets: which deployment sets to state explicitly: ``"auto"`` (per cluster, all of
            them when that costs at most ``max_explicit_vars`` arrival counts, else none), ``"all"``,
            ``"none"``, or per cluster a collection of set indices. The others are relaxed and
            checked by :meth:`targets`.
        max_explicit_vars: the ``"auto"`` threshold.

    Attributes:
        N, D: the fragmented and the free vCPU over active nodes (linear expressions): FR = N / D.
        moved: the number of moved VMs (linear expression, at most ``budget``).
        d_variable: whether ``D`` varies (some movable VM sits on an inactive host).
        free_total: ``D`` when it is constant, else None.
        relaxed: whether some set with a movable member is relaxed (the model is a relaxation
            whose solutions :meth:`targets` must check).
        restricted: whether :meth:`forbid_mixed` restricted the model (its bound is then not a
            bound of the problem).
    """

    def __init__(self, clusters: Sequence[Cluster], budget: int, host_masks: Sequence[np.ndarray] | None = None,
                 context: Sequence[Target] | None = None, size: int = 16,
                 explicit_sets: str | Sequence[Collection[int]] = "auto",
                 max_explicit_vars: int = DEFAULT_MAX_EXPLICIT_VARS):
        self.model = cp_model.CpModel()
        self.clusters = list(clusters)
        self.budget = int(budget)
        self.size = size
        self.memory = MemoryUnits.of(self.clusters)
        self.parts: list[_ClusterPart] = []
        for ci, c in enumerate(self.clusters):
            mask = np.ones(c.num_hosts, dtype=bool) if host_masks is None else np.asarray(host_masks[ci], dtype=bool)
            ctx = (c.vm_host, c.vm_placement) if context is None else context[ci]
            explicit = explicit_sets if isinstance(explicit_sets, str) else explicit_sets[ci]
            self.parts.append(_ClusterPart(self, ci, c, mask, ctx, explicit, max_explicit_vars))
        self.moved = _sum([t for part in self.parts for t in part.moved_terms])
        self.model.Add(self.moved <= self.budget)
        # A move touches at most 2 * span nodes (its source's and its destination's).
        self.model.Add(_sum([t for p in self.parts for t in p.touched.values()])
                       <= _sum([2 * int(p.cluster.shape_span[g.shape]) * tot for p in self.parts
                                for g, tot in zip(p.groups, p.totals)]))
        self.n_const = sum(p.n_const for p in self.parts)
        self.d_const = sum(p.d_const for p in self.parts)
        self.N = _sum([t for p in self.parts for t in p.n_terms]) + self.n_const
        self.D = _sum([t for p in self.parts for t in p.d_terms]) + self.d_const
        self.d_variable = any(p.touches_inactive for p in self.parts)
        self.free_total: int | None = None
        if not self.d_variable:
            # sum(free) is constant (every move is active -> active), so N = D - size * sum(q): stating
            # the objective on q alone lets CP-SAT prove optimality far sooner (7.9 s instead of
            # > 60 s on the 279-host real snapshot at MNL=50).
            free0 = sum(int(p.cluster.free_cpu[h, n]) for p in self.parts for (h, n) in p.q)
            self.free_total = self.d_const + free0
            self.D = _sum([]) + self.free_total
            all_q = [q for p in self.parts for q in p.q.values()]
            self.N = self.n_const + free0 - size * _sum(all_q)
            self.model.Add(self.N >= 0)  # sum(free mod size) >= 0: keeps the proven bound non-negative
        self.relaxed = any(p.relaxed for p in self.parts)
        self.restricted = False
        self.fewest_moves = False
        self.restricted_nodes = 0

    @property
    def explicit_sets(self) -> list[list[int]]:
        """Per cluster, the indices of the sets stated explicitly."""
        return [list(p.explicit) for p in self.parts]

    @property
    def failed_sets(self) -> list[set[int]]:
        """Per cluster, the relaxed sets the last :meth:`targets` call could not keep (empty when it succeeded)."""
        return [set(p.failed_sets) for p in self.parts]

    def stats(self) -> dict[str, int]:
        """The model's size: ``{"variables": ..., "constraints": ..., "explicit_sets": ..., "relaxed_sets": ...}``."""
        proto = self.model.Proto()
        return {"variables": len(proto.variables), "constraints": len(proto.constraints),
                "explicit_sets": sum(len(p.explicit) for p in self.parts),
                "relaxed_sets": sum(len(p.relaxed) for p in self.parts)}

    def set_objective(self, ratio: tuple[int, int] | None = None, fewest_moves: bool = False) -> None:
        """Minimise ``N`` (when the denominator is constant) or ``b*N - a*D`` for ``ratio = (a, b)``.

        With ``fewest_moves`` (constant denominator only), ties in ``N`` are broken by the number of
        moved VMs: the objective is ``(budget + 1) * N + moved`` (see :meth:`fr_numerator_bound`).
        """
        self.model.ClearObjective()
        self.fewest_moves = False
        if ratio is None:
            if self.d_variable:
                raise ValueError("sum(free) varies (VMs may leave inactive hosts): give a Dinkelbach ratio")
            if fewest_moves:
                self.fewest_moves = True
                self.model.Minimize((self.budget + 1) * self.N + self.moved)
            else:
                self.model.Minimize(self.N)
        else:
            a, b = ratio
            self.model.Minimize(b * self.N - a * self.D)

    def fr_numerator_bound(self, solver: cp_model.CpSolver) -> int:
        """The solver's proven lower bound on ``N`` (constant-denominator objectives), at least 0."""
        value = solver.BestObjectiveBound()
        if not math.isfinite(value):
            return 0
        bound = math.ceil(value - 1e-6)
        if self.fewest_moves:  # (budget + 1) * N + moved >= bound with 0 <= moved <= budget
            bound = -(-(bound - self.budget) // (self.budget + 1))
        return max(bound, 0)

    def hint(self, targets: Sequence[Target] | None = None) -> None:
        """Hint a placement (default: the current one, i.e. no migration)."""
        self.model.ClearHints()
        for i, part in enumerate(self.parts):
            part.hint(self.model, self.size, None if targets is None else targets[i])

    def forbid_mixed(self, nodes: Sequence[tuple[int, int, int]] | None = None) -> None:
        """Let each listed ``(cluster, host, node)`` only gain or only lose VMs.

        Args:
            nodes: the nodes to restrict; None: every node, and every anti-affinity unit too (for
                relaxed sets, in the assignment :meth:`targets` makes).
        """
        self.restricted = True
        for ci, part in enumerate(self.parts):
            arrivals, departures = part.load.arrivals, part.load.departures
            keys = arrivals.keys() & departures.keys()
            if nodes is not None:
                keys = keys & {(h, n) for cj, h, n in nodes if cj == ci}
            for key in sorted(keys):
                self._either(arrivals[key], departures[key])
                self.restricted_nodes += 1
            if nodes is None:
                part.strict_units = True
                for arr_u, dep_u in part.unit_load:
                    for u in arr_u.keys() & dep_u.keys():
                        self._either(arr_u[u], dep_u[u])

    def _either(self, arrivals: list, departures: list) -> None:
        gains = self.model.NewBoolVar("")
        self.model.Add(_sum(departures) == 0).OnlyEnforceIf(gains)
        self.model.Add(_sum(arrivals) == 0).OnlyEnforceIf(gains.Not())

    def solve(self, time_limit_s: float | None, workers: int = 2, seed: int = 0) -> tuple[cp_model.CpSolver, int]:
        """Solve as the model stands; returns the solver (for values) and the CP-SAT status code.

        Models over :data:`LARGE_MODEL_VARS` variables skip CP-SAT's probing presolve: on 1,264
        hosts it takes 9 of the 12 s presolve needs, and the search finds the hinted solution sooner
        and proves a better bound without it. Models under :data:`SMALL_MODEL_VARS` (LNS
        neighbourhoods of a few dozen hosts) are solved on one worker without probing, which proves
        them optimal in a third of the time.
        """
        solver = new_solver(time_limit_s, workers, seed)
        num_vars = len(self.model.Proto().variables)
        if num_vars > LARGE_MODEL_VARS:
            solver.parameters.cp_model_probing_level = 0
        elif num_vars < SMALL_MODEL_VARS:  # LNS neighbourhoods: a third of the time this way
            solver.parameters.num_workers = 1
            solver.parameters.cp_model_probing_level = 0
        return solver, solver.Solve(self.model)

    def targets(self, solver: cp_model.CpSolver, time_limit_s: float = 5.0, workers: int = 2,
                seed: int = 0) -> list[Target] | None:
        """Every cluster's placement in the solver's solution.

        Returns:
            The targets, or None when the relaxed sets of some cluster cannot hold with the
            solution's counts (:attr:`failed_sets` then names the sets to make explicit).
        """
        for part in self.parts:
            part.failed_sets = set()
        out = []
        for part in self.parts:
            t = part.target(solver, time_limit_s, workers, seed)
            if t is None:
                return None
            out.append(t)
        return out

    def mixed_nodes(self, solver: cp_model.CpSolver) -> list[tuple[int, int, int]]:
        """Nodes that both gain and lose VMs in the solution (where capacity cycles can arise)."""
        out = []
        for ci, part in enumerate(self.parts):
            arrivals, departures = part.load.arrivals, part.load.departures
            for key in arrivals.keys() & departures.keys():
                if any(solver.Value(e) for e in arrivals[key]) and any(solver.Value(e) for e in departures[key]):
                    out.append((ci, *key))
        return out
