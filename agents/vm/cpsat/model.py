"""The counted CP-SAT model of MNL-constrained fragment-rate minimisation (:class:`FRModel`).

VMs of one shape (span, per-node CPU and memory) that are migratable and in no anti-affinity set
are interchangeable, so they are *counted*, not placed one by one:

* ``dep[k, h, p]`` -- how many shape-``k`` VMs leave ``(host h, placement p)``, at most as many
  as sit there; ``arr[k, h, p]`` -- how many arrive there; per shape, arrivals = departures.
* A VM may not "move" to its own host: per shape and host, ``dep_h + arr_h <= total departures``
  (Hall's condition, so departures can be matched to arrivals on *other* hosts; see
  :func:`match_departures`).
* Anti-affinity members keep their own Booleans ``x[v, h, p]`` (at most one member per host or
  rack); non-migratable VMs are constants.
* Per active NUMA node: ``free = free0 - arrivals + departures >= 0`` (CPU and memory, memory in
  exact integer units), and ``free = 16 q + r`` with ``0 <= r <= 15`` so ``r = free mod 16``.
* Objective: ``N = sum(r)``. ``D = sum(free)`` is constant when every moving VM starts on an
  active host, so minimising ``N`` minimises FR exactly; it is stated as ``D - 16 * sum(q)``, which
  CP-SAT proves optimal far sooner than the same objective written over the ``free`` expressions.
  If VMs may leave inactive hosts, ``D`` varies and the ratio is minimised by Dinkelbach iterations
  (``min b*N - a*D`` with ``a/b`` the incumbent FR, repeated until no solution beats it; see
  :mod:`agents.vm.cpsat.planners`).

On the real 236+43-host snapshot this has a few thousand integer variables instead of
~1,934 x 472 Booleans.

A solution is a *target* placement per cluster (:data:`Target`); turning it into an ordered plan is
:mod:`agents.vm.cpsat.sequencing`'s job.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ortools.sat.python import cp_model

from digital_twin.vm import Cluster
from digital_twin.vm.metrics import free_from_placements

Target = tuple[np.ndarray, np.ndarray]
"""One cluster's placement after a plan: ``(vm_host, vm_placement)``, each (V,)."""

Node = tuple[int, int]
"""One NUMA node: ``(host index, node 0 or 1)``."""


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


def _arrival_bounds(cluster: Cluster, hosts: np.ndarray, cpu: np.ndarray, mem: np.ndarray, over: np.ndarray,
                    cap: int) -> np.ndarray:
    """(len(hosts),) how many VMs using ``cpu``/``mem`` per node fit on each host emptied (at most ``cap``).

    A node that is already over capacity receives nothing.
    """
    fit = np.full(len(hosts), cap, dtype=np.int64)
    for n in (0, 1):
        if cpu[n]:
            fit = np.minimum(fit, cluster.numa_cpu_total[hosts, n] // int(cpu[n]))
        if mem[n]:
            fit = np.minimum(fit, np.floor(cluster.numa_mem_total[hosts, n] / mem[n]).astype(np.int64))
        if cpu[n] or mem[n]:
            fit[over[hosts, n]] = 0
    return fit


def _fits(cluster: Cluster, hosts: np.ndarray, cpu: np.ndarray, mem: np.ndarray, over: np.ndarray) -> np.ndarray:
    """(len(hosts),) bool: a VM using ``cpu``/``mem`` per node fits each host emptied (not on overloaded nodes)."""
    ok = np.ones(len(hosts), dtype=bool)
    for n in (0, 1):
        ok &= (cluster.numa_cpu_total[hosts, n] >= cpu[n]) & (cluster.numa_mem_total[hosts, n] >= mem[n])
        if cpu[n] or mem[n]:
            ok &= ~over[hosts, n]
    return ok


def match_departures(leaving: dict[int, list[int]], coming: dict[int, list[tuple[int, int]]],
                     ) -> dict[int, tuple[int, int]]:
    """Send each leaving VM of one shape to an arrival slot on another host.

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
        raise AssertionError("departures and arrivals of a shape differ")
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


# ---------------------------------------------------------------------- one cluster's share
def _term_lists() -> defaultdict:
    return defaultdict(list)


@dataclass
class _NodeLoad:
    """How the model's variables change each NUMA node's load, per (host, node).

    The used CPU (memory) a node gains is ``-cpu_const + sum(coef * var for coef, var in cpu)``;
    departures enter with negative coefficients.

    Attributes:
        cpu: node -> ``[(vCPU coefficient, variable)]``.
        mem: node -> ``[(memory-unit coefficient, variable)]``.
        cpu_const: node -> vCPU taken out of the node's current load up front (an individually
            placed VM's own usage; its "stay" option puts it back).
        mem_const: the same in memory units.
        arrivals: node -> expressions that are positive when some VM arrives on the node.
        departures: node -> expressions that are positive when some VM leaves it (the repairs
            restrict nodes that do both; see :meth:`FRModel.forbid_mixed`).
    """

    cpu: dict[Node, list] = field(default_factory=_term_lists)
    mem: dict[Node, list] = field(default_factory=_term_lists)
    cpu_const: Counter = field(default_factory=Counter)
    mem_const: Counter = field(default_factory=Counter)
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

    def stay(self, node: Node, cpu: int, mem: int, var: Any) -> None:
        """An individually placed VM on ``node`` stays iff ``var``: its usage is re-added only then."""
        self.cpu[node].append((cpu, var))
        self.mem[node].append((mem, var))
        self.cpu_const[node] -= cpu
        self.mem_const[node] -= mem
        self.departures[node].append(1 - var)


@dataclass(frozen=True)
class _Scope:
    """What of one cluster the model may change.

    Attributes:
        vm_in: (V,) bool, VMs whose original host is in the model (re-planned from there).
        model_hosts: indices of the hosts the model may change.
        active_hosts: the active ones among them: the only destinations.
        over: (H, 2) bool, nodes already over capacity (inconsistent input): they may lose VMs
            but receive none.
        is_member: (V,) bool, VMs in some deployment set.
    """

    vm_in: np.ndarray
    model_hosts: np.ndarray
    active_hosts: np.ndarray
    over: np.ndarray
    is_member: np.ndarray

    @classmethod
    def of(cls, cluster: Cluster, in_model: np.ndarray, ctx_host: np.ndarray) -> "_Scope":
        vm_in = in_model[cluster.vm_host]
        if not np.array_equal(in_model[ctx_host], vm_in):
            raise ValueError(f"cluster {cluster.name}: the freed hosts are not closed under the context's moves")
        model_hosts = np.flatnonzero(in_model)
        is_member = np.zeros(cluster.num_vms, dtype=bool)
        for dset in cluster.deployment_sets:
            is_member[np.asarray(dset.members, dtype=np.int64)] = True
        return cls(vm_in=vm_in, model_hosts=model_hosts, active_hosts=model_hosts[cluster.host_active[model_hosts]],
                   over=(cluster.free_cpu < 0) | (cluster.free_mem < 0), is_member=is_member)


class _ClusterPart:
    """One cluster's variables and constraints inside an :class:`FRModel`.

    Built in steps, each adding its variables and constraints to ``owner.model``: the counted pools
    (:meth:`_add_pools`), the individually placed anti-affinity members (:meth:`_add_members`) and
    their sets (:meth:`_add_anti_affinity`), then capacity and ``free = size * q + r`` per node
    (:meth:`_add_nodes`), whose terms make up the objective.

    Args:
        owner: the model this part belongs to (its CP-SAT model, budget, size, memory units).
        ci: the cluster's index.
        cluster: the cluster, in the state the plan starts from.
        in_model: (H,) bool, the hosts the model may change.
        context: the placement of everything outside the model.

    Attributes:
        pools: ``(shape, host, placement)`` -> the interchangeable VMs sitting there, in VM order.
        dep: the same key -> how many of them leave (IntVar).
        arr: ``(shape, host, placement)`` -> how many VMs of the shape arrive there (IntVar).
        x: member VM -> ``{(host, placement): BoolVar}``, the original placement included (stays).
        load: the per-node load terms and arrival / departure expressions.
        unit_load: per deployment set, ``(arrivals, departures)``: unit -> expressions.
        q: node -> IntVar, ``free // size`` on each node the model changes.
        moved_terms: expressions summing to the number of moved VMs.
        n_terms, d_terms, n_const, d_const: ``N = sum(n_terms) + n_const``, the fragmented vCPU, and
            ``D = sum(d_terms) + d_const``, the free vCPU, over the cluster's active nodes.
        inactive_cpu: vCPU of the movable VMs on inactive hosts (the most ``D`` can drop).
        touches_inactive: whether any movable VM sits on an inactive host (``D`` varies).
    """

    def __init__(self, owner: "FRModel", ci: int, cluster: Cluster, in_model: np.ndarray, context: Target):
        self.cluster = cluster
        self.ci = ci
        self.in_model = in_model
        self.ctx_host, self.ctx_place = np.asarray(context[0]).copy(), np.asarray(context[1]).copy()
        scope = _Scope.of(cluster, in_model, self.ctx_host)
        self.vm_in = scope.vm_in
        # Movable VMs on inactive hosts: leaving, they lower sum(free) over active nodes.
        inactive = scope.vm_in & cluster.vm_allow_migration & ~cluster.host_active[cluster.vm_host]
        self.inactive_cpu = int(cluster.vm_cpu[inactive].sum())
        self.touches_inactive = bool(inactive.any())
        self.load = _NodeLoad()
        self.moved_terms = self._add_pools(owner, scope) + self._add_members(owner, scope)
        self._add_anti_affinity(owner.model)
        self._add_nodes(owner, scope)

    # ------------------------------------------------------------------ building steps
    def _add_pools(self, owner: "FRModel", scope: _Scope) -> list:
        """Counted VMs: departures per pool, arrivals per active host, flow balance and Hall's condition.

        Returns:
            One expression per shape: how many of its VMs move.
        """
        c = self.cluster
        pooled = scope.vm_in & c.vm_allow_migration & ~scope.is_member
        self.pools: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for v in np.flatnonzero(pooled).tolist():
            self.pools[(int(c.vm_shape[v]), int(c.vm_host[v]), int(c.vm_placement[v]))].append(v)
        self.dep: dict[tuple[int, int, int], Any] = {}
        self.arr: dict[tuple[int, int, int], Any] = {}
        for (k, h, p), vms in self.pools.items():
            var = owner.model.NewIntVar(0, min(len(vms), owner.budget), f"dep_{self.ci}_{k}_{h}_{p}")
            self.dep[(k, h, p)] = var
            cpu, mem = on_nodes(c.shape_cpu[k], p), on_nodes(c.shape_mem[k], p)
            for n in (0, 1):
                if cpu[n] or mem[n]:
                    self.load.depart((h, n), int(cpu[n]), owner.memory.floor(mem[n]), var)
        pool_size: Counter = Counter()
        for (k, _, _), vms in self.pools.items():
            pool_size[k] += len(vms)
        return [self._add_arrivals(owner, scope, k, pool_size[k]) for k in sorted(pool_size)]

    def _add_arrivals(self, owner: "FRModel", scope: _Scope, k: int, pool_size: int) -> Any:
        """Arrival counts of shape ``k`` on every active host it fits, balanced with its departures.

        Returns:
            The shape's total departures (= arrivals).
        """
        c, model = self.cluster, owner.model
        arrivals, arr_by_host = [], defaultdict(list)
        for p in placements(int(c.shape_span[k])):
            cpu, mem = on_nodes(c.shape_cpu[k], p), on_nodes(c.shape_mem[k], p)
            fit = _arrival_bounds(c, scope.active_hosts, cpu, mem, scope.over, min(owner.budget, pool_size))
            mem_units = [owner.memory.ceil(mem[n]) for n in (0, 1)]
            for h, ub in zip(scope.active_hosts.tolist(), fit.tolist()):
                if ub <= 0:
                    continue
                var = model.NewIntVar(0, ub, f"arr_{self.ci}_{k}_{h}_{p}")
                self.arr[(k, h, p)] = var
                arrivals.append(var)
                arr_by_host[h].append(var)
                for n in (0, 1):
                    if cpu[n] or mem[n]:
                        self.load.arrive((h, n), int(cpu[n]), mem_units[n], var)
        departures, dep_by_host = [], defaultdict(list)
        for (kk, h, _), var in self.dep.items():
            if kk == k:
                departures.append(var)
                dep_by_host[h].append(var)
        total = cp_model.LinearExpr.Sum(departures)
        model.Add(cp_model.LinearExpr.Sum(arrivals) == total)
        for h, deps in dep_by_host.items():
            if h in arr_by_host:  # Hall: departures from h can all go to other hosts
                model.Add(cp_model.LinearExpr.Sum(deps + arr_by_host[h]) <= total)
        return total

    def _add_members(self, owner: "FRModel", scope: _Scope) -> list:
        """Anti-affinity members that may move: one Boolean per destination, exactly one true.

        Returns:
            Per member, the expression that is 1 when it moves.
        """
        c, model = self.cluster, owner.model
        self.x: dict[int, dict[tuple[int, int], Any]] = {}
        moved = []
        for v in np.flatnonzero(scope.vm_in & c.vm_allow_migration & scope.is_member).tolist():
            h0, p0 = int(c.vm_host[v]), int(c.vm_placement[v])
            options = {(h0, p0): model.NewBoolVar(f"x_{self.ci}_{v}_stay")}
            for p in placements(int(c.vm_span[v])):
                ok = _fits(c, scope.active_hosts, on_nodes(c.vm_cpu[v], p), on_nodes(c.vm_mem[v], p), scope.over)
                for h in scope.active_hosts[ok].tolist():
                    if h != h0:
                        options[(h, p)] = model.NewBoolVar(f"x_{self.ci}_{v}_{h}_{p}")
            model.AddExactlyOne(options.values())
            self.x[v] = options
            moved.append(1 - options[(h0, p0)])
            for (h, p), var in options.items():
                cpu, mem = on_nodes(c.vm_cpu[v], p), on_nodes(c.vm_mem[v], p)
                for n in (0, 1):
                    if not (cpu[n] or mem[n]):
                        continue
                    if (h, p) == (h0, p0):  # the VM's own usage is in free0: remove it, re-add if it stays
                        self.load.stay((h, n), int(cpu[n]), owner.memory.ceil(mem[n]), var)
                    else:
                        self.load.arrive((h, n), int(cpu[n]), owner.memory.ceil(mem[n]), var)
        return moved

    def _add_anti_affinity(self, model: cp_model.CpModel) -> None:
        """At most one member per host/rack; no arrival where two members already share one."""
        c = self.cluster
        self.unit_load: list[tuple[dict[int, list], dict[int, list]]] = []
        for dset in c.deployment_sets:
            unit = unit_of_host(c, dset.granularity)
            start = {int(v): int(c.vm_host[v] if self.vm_in[v] else self.ctx_host[v]) for v in dset.members.tolist()}
            start_count = Counter(int(unit[h]) for h in start.values())
            terms: dict[int, list] = defaultdict(list)
            fixed: Counter = Counter()
            arr_u: dict[int, list] = defaultdict(list)
            dep_u: dict[int, list] = defaultdict(list)
            for v, h_start in start.items():
                if v not in self.x:
                    fixed[int(unit[h_start])] += 1
                    continue
                stay = (h_start, int(c.vm_placement[v]))
                for (h, p), var in self.x[v].items():
                    terms[int(unit[h])].append(var)
                    if (h, p) != stay:
                        arr_u[int(unit[h])].append(var)
                        if start_count[int(unit[h])] >= 2:
                            model.Add(var == 0)
                dep_u[int(unit[h_start])].append(1 - self.x[v][stay])
            for u, vars_u in terms.items():
                if start_count[u] <= 1:
                    model.Add(cp_model.LinearExpr.Sum(vars_u) + fixed[u] <= 1)
            self.unit_load.append((arr_u, dep_u))

    def _add_nodes(self, owner: "FRModel", scope: _Scope) -> None:
        """Capacity and ``free = size * q + r`` on each active node the model changes; constants elsewhere."""
        c, model, size = self.cluster, owner.model, owner.size
        load, active = self.load, c.host_active
        self.q: dict[Node, Any] = {}
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
                free = free0 - load.cpu_const[(h, n)] - cp_model.LinearExpr.WeightedSum(
                    [t[1] for t in cpu_terms], [t[0] for t in cpu_terms])
                mem_used = cp_model.LinearExpr.WeightedSum([t[1] for t in mem_terms], [t[0] for t in mem_terms])
                model.Add(mem_used + load.mem_const[(h, n)] <= max(owner.memory.floor(float(c.free_mem[h, n])), 0))
                model.Add(free >= min(free0, 0))
                q = model.NewIntVar(min(free0, 0) // size, int(c.numa_cpu_total[h, n]) // size, f"q_{self.ci}_{h}_{n}")
                model.Add(free >= size * q)
                model.Add(free <= size * q + size - 1)
                self.q[(h, n)] = q
                self.n_terms.append(free - size * q)
                self.d_terms.append(free)
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
        t_host = c.vm_host if target is None else target[0]
        t_place = c.vm_placement if target is None else target[1]
        arrivals: Counter = Counter()
        for (k, h, p), vms in self.pools.items():
            leaving = [v for v in vms if t_host[v] != h]
            model.AddHint(self.dep[(k, h, p)], len(leaving))
            for v in leaving:
                arrivals[(k, int(t_host[v]), int(t_place[v]))] += 1
        for key, var in self.arr.items():
            model.AddHint(var, arrivals.get(key, 0))
        for v, options in self.x.items():
            for (h, p), var in options.items():
                model.AddHint(var, int(t_host[v] == h and t_place[v] == p))
        host = np.where(self.vm_in, t_host, c.vm_host)
        place = np.where(self.vm_in, t_place, c.vm_placement)
        free = free_at(c, (host, place))[0]
        for (h, n), q in self.q.items():
            model.AddHint(q, int(free[h, n]) // size)

    def target(self, solver: cp_model.CpSolver) -> Target:
        """This cluster's placement in the solver's solution (counted departures matched to arrivals)."""
        c = self.cluster
        host = np.where(self.vm_in, c.vm_host, self.ctx_host)
        place = np.where(self.vm_in, c.vm_placement, self.ctx_place)
        shapes = sorted({k for k, _, _ in self.pools})
        for k in shapes:
            leaving: dict[int, list[int]] = defaultdict(list)
            coming: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for (kk, h, p), vms in self.pools.items():
                if kk == k:
                    d = solver.Value(self.dep[(kk, h, p)])
                    leaving[h].extend(vms[len(vms) - d:])
            for (kk, h, p), var in self.arr.items():
                if kk == k:
                    coming[h].extend([(h, p)] * solver.Value(var))
            for v, (h, p) in match_departures(leaving, coming).items():
                host[v], place[v] = h, p
        for v, options in self.x.items():
            for (h, p), var in options.items():
                if solver.Value(var):
                    host[v], place[v] = h, p
        return host, place


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

    Attributes:
        N, D: the fragmented and the free vCPU over active nodes (linear expressions): FR = N / D.
        moved: the number of moved VMs (linear expression, at most ``budget``).
        d_variable: whether ``D`` varies (some movable VM sits on an inactive host).
    """

    def __init__(self, clusters: Sequence[Cluster], budget: int, host_masks: Sequence[np.ndarray] | None = None,
                 context: Sequence[Target] | None = None, size: int = 16):
        self.model = cp_model.CpModel()
        self.clusters = list(clusters)
        self.budget = int(budget)
        self.size = size
        self.memory = MemoryUnits.of(self.clusters)
        self.parts: list[_ClusterPart] = []
        for ci, c in enumerate(self.clusters):
            mask = np.ones(c.num_hosts, dtype=bool) if host_masks is None else np.asarray(host_masks[ci], dtype=bool)
            ctx = (c.vm_host, c.vm_placement) if context is None else context[ci]
            self.parts.append(_ClusterPart(self, ci, c, mask, ctx))
        self.moved = cp_model.LinearExpr.Sum([t for part in self.parts for t in part.moved_terms])
        self.model.Add(self.moved <= self.budget)
        self.n_const = sum(p.n_const for p in self.parts)
        self.d_const = sum(p.d_const for p in self.parts)
        self.N = cp_model.LinearExpr.Sum([t for p in self.parts for t in p.n_terms]) + self.n_const
        self.D = cp_model.LinearExpr.Sum([t for p in self.parts for t in p.d_terms]) + self.d_const
        self.d_variable = any(p.touches_inactive for p in self.parts)
        if not self.d_variable:
            # sum(free) is constant (every move is active -> active), so N = D - size * sum(q): stating
            # the objective on q alone lets CP-SAT prove optimality far sooner (7.9 s instead of
            # > 60 s on the 279-host real snapshot at MNL=50).
            free0 = sum(int(p.cluster.free_cpu[h, n]) for p in self.parts for (h, n) in p.q)
            self.D = cp_model.LinearExpr.Sum([]) + (self.d_const + free0)
            all_q = [q for p in self.parts for q in p.q.values()]
            self.N = self.n_const + free0 - size * cp_model.LinearExpr.Sum(all_q)
        self.fewest_moves = False
        self.restricted_nodes = 0

    def stats(self) -> dict[str, int]:
        """The model's size: ``{"variables": ..., "constraints": ...}``."""
        proto = self.model.Proto()
        return {"variables": len(proto.variables), "constraints": len(proto.constraints)}

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
        """The solver's proven lower bound on ``N`` (constant-denominator objectives)."""
        bound = math.ceil(solver.BestObjectiveBound() - 1e-6)
        if self.fewest_moves:  # (budget + 1) * N + moved >= bound with 0 <= moved <= budget
            bound = -(-(bound - self.budget) // (self.budget + 1))
        return bound

    def hint(self, targets: Sequence[Target] | None = None) -> None:
        """Hint a placement (default: the current one, i.e. no migration)."""
        self.model.ClearHints()
        for i, part in enumerate(self.parts):
            part.hint(self.model, self.size, None if targets is None else targets[i])

    def forbid_mixed(self, nodes: Sequence[tuple[int, int, int]] | None = None) -> None:
        """Let each listed ``(cluster, host, node)`` only gain or only lose VMs.

        Args:
            nodes: the nodes to restrict; None: every node, and every anti-affinity unit too.
        """
        for ci, part in enumerate(self.parts):
            arrivals, departures = part.load.arrivals, part.load.departures
            keys = arrivals.keys() & departures.keys()
            if nodes is not None:
                keys = keys & {(h, n) for cj, h, n in nodes if cj == ci}
            for key in sorted(keys):
                self._either(arrivals[key], departures[key])
                self.restricted_nodes += 1
            if nodes is None:
                for arr_u, dep_u in part.unit_load:
                    for u in arr_u.keys() & dep_u.keys():
                        self._either(arr_u[u], dep_u[u])

    def _either(self, arrivals: list, departures: list) -> None:
        gains = self.model.NewBoolVar("")
        self.model.Add(cp_model.LinearExpr.Sum(departures) == 0).OnlyEnforceIf(gains)
        self.model.Add(cp_model.LinearExpr.Sum(arrivals) == 0).OnlyEnforceIf(gains.Not())

    def solve(self, time_limit_s: float | None, workers: int = 2, seed: int = 0) -> tuple[cp_model.CpSolver, int]:
        """Solve as the model stands; returns the solver (for values) and the CP-SAT status code."""
        solver = new_solver(time_limit_s, workers, seed)
        return solver, solver.Solve(self.model)

    def targets(self, solver: cp_model.CpSolver) -> list[Target]:
        """Every cluster's placement in the solver's solution."""
        return [part.target(solver) for part in self.parts]

    def mixed_nodes(self, solver: cp_model.CpSolver) -> list[tuple[int, int, int]]:
        """Nodes that both gain and lose VMs in the solution (where capacity cycles can arise)."""
        out = []
        for ci, part in enumerate(self.parts):
            arrivals, departures = part.load.arrivals, part.load.departures
            for key in arrivals.keys() & departures.keys():
                if any(solver.Value(e) for e in arrivals[key]) and any(solver.Value(e) for e in departures[key]):
                    out.append((ci, *key))
        return out
