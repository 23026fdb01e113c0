"""Exact CP-SAT model of MNL-constrained fragment-rate minimisation, and a large-neighbourhood variant.

The problem (VMR2L): move at most ``budget`` (MNL) VMs, each inside its own cluster, so that the
snapshot's fragment rate ``FR = sum(free mod 16) / sum(free)`` over active NUMA nodes is smallest,
respecting NUMA CPU and memory capacity, anti-affinity and the migratable flags. A plan moves each
VM at most once, straight to its final ``(host, placement)``, so the MNL counts VMs whose final
host differs from their original host, which is also the number of migrations the twin replays.

Model (:class:`FRModel`). VMs of one shape (span, per-node CPU and memory) that are migratable and
in no anti-affinity set are interchangeable, so they are *counted*, not placed one by one:

* ``dep[k, h, p]`` -- how many shape-``k`` VMs leave ``(host h, placement p)``, at most as many
  as sit there; ``arr[k, h, p]`` -- how many arrive there; per shape, arrivals = departures.
* A VM may not "move" to its own host: per shape and host, ``dep_h + arr_h <= total departures``
  (Hall's condition, so departures can be matched to arrivals on *other* hosts; see
  :func:`_match_departures`).
* Anti-affinity members keep their own Booleans ``x[v, h, p]`` (at most one member per host or
  rack); non-migratable VMs are constants.
* Per active NUMA node: ``free = free0 - arrivals + departures >= 0`` (CPU and memory, memory in
  exact integer units), and ``free = 16 q + r`` with ``0 <= r <= 15`` so ``r = free mod 16``.
* Objective: ``N = sum(r)``. ``D = sum(free)`` is constant when every moving VM starts on an
  active host, so minimising ``N`` minimises FR exactly; it is stated as ``D - 16 * sum(q)``, which
  CP-SAT proves optimal far sooner than the same objective written over the ``free`` expressions.
  If VMs may leave inactive hosts, ``D`` varies and the ratio is minimised by Dinkelbach iterations
  (``min b*N - a*D`` with ``a/b`` the incumbent FR, repeated until no solution beats it).

On the real 236+43-host snapshot this has a few thousand integer variables instead of
~1,934 x 472 Booleans.

Sequencing (:func:`sequence_moves`). A CP-SAT solution is a target placement. Moves whose
destination node has no pending departure are always safe and go first; otherwise a feasible move
that frees room for a blocked one; if that greedy order stalls, a small exact CP-SAT ordering
model over the moved VMs (capacity after every prefix, anti-affinity precedences) decides. If no
order exists (a capacity cycle), the solve is *constrained and repeated*: the nodes that both gained
and lost VMs in the failed target may only gain or only lose (``max_repairs`` rounds on the
offending nodes, then on all nodes and anti-affinity units, where any order works). The reported
bound is always the unconstrained model's, so it stays a valid bound for the original problem. No
temporary moves are ever added: the plan's length is exactly the number of moved VMs.

Large neighbourhoods (:func:`cpsat_lns_plan`). Start from best-improvement greedy's plan; repeatedly
free a random set of hosts (closed under the incumbent's moves: a move's source and destination are
freed together), re-optimise the VMs originally on them from their original placement with the
budget the rest of the incumbent leaves, everything else fixed at the incumbent, hinted with the
incumbent; accept strict improvements that sequence. Neighbourhood size adapts to how quickly the
sub-problems are proved optimal; once a neighbourhood spans every host and is proved optimal, the
search stops with status ``OPTIMAL``.

Bounds are over plans that move each VM at most once (the MNL-as-moved-VMs reading); a plan that
moves a VM away and back could in principle do better with the same number of migrations.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ortools.sat.python import cp_model

from agents.baselines.vm_planners import Move, PlanResult, finish_plan, snapshot_fragment_sums
from digital_twin.vm import Cluster, Snapshot
from digital_twin.vm.metrics import free_from_placements
from digital_twin.vm.planning import greedy_plan as _twin_greedy_plan

Target = tuple[np.ndarray, np.ndarray]
"""One cluster's placement after a plan: ``(vm_host, vm_placement)``, each (V,)."""

_STATUS = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE", cp_model.INFEASIBLE: "INFEASIBLE",
           cp_model.MODEL_INVALID: "MODEL_INVALID", cp_model.UNKNOWN: "UNKNOWN"}


# ---------------------------------------------------------------------- helpers
def _memory_scale(clusters: Sequence[Cluster]) -> tuple[int, bool]:
    """An integer scale that makes every memory figure integral: ``(scale, exact)``.

    Memory is in MB; the real snapshots are whole MB. When no power of two up to 1024 makes all
    values integral, usage is rounded up and capacity down at scale 1024 (never infeasible).
    """
    values = np.concatenate([np.concatenate([c.vm_mem.ravel(), c.numa_mem_total.ravel(), c.free_mem.ravel()])
                             for c in clusters] or [np.zeros(0)])
    for scale in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        scaled = values * scale
        if np.array_equal(scaled, np.round(scaled)) and (np.abs(scaled).max(initial=0) < 2 ** 50):
            return scale, True
    return 1024, False


def _node_usage(cluster: Cluster, vm_placement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, 2) CPU and memory per NUMA node for the given placements (canonical, mirrored for 1)."""
    swap = (vm_placement == 1)[:, None]
    return (np.where(swap, cluster.vm_cpu[:, ::-1], cluster.vm_cpu),
            np.where(swap, cluster.vm_mem[:, ::-1], cluster.vm_mem))


def _free_at(cluster: Cluster, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """Free CPU and memory per (host, node) with the VMs at ``target``."""
    cpu, mem = _node_usage(cluster, target[1])
    return free_from_placements(cluster.numa_cpu_total, cluster.numa_mem_total, target[0], cpu, mem)


def _sums_at(clusters: Sequence[Cluster], targets: Sequence[Target], size: int) -> tuple[int, int]:
    """``(sum(free mod size), sum(free))`` over active nodes with every cluster at its target."""
    frag = total = 0
    for c, t in zip(clusters, targets):
        free = _free_at(c, t)[0][c.host_active]
        frag += int((free % size).sum())
        total += int(free.sum())
    return frag, total


def _placements(span: int) -> tuple[int, ...]:
    return (0, 1) if span == 1 else (0,)


def _usage(vec: np.ndarray, placement: int) -> np.ndarray:
    return vec if placement == 0 else vec[::-1]


def _member_sets(cluster: Cluster) -> dict[int, list[int]]:
    """VM -> indices of the deployment sets it belongs to."""
    out: dict[int, list[int]] = defaultdict(list)
    for i, dset in enumerate(cluster.deployment_sets):
        for v in dset.members.tolist():
            out[int(v)].append(i)
    return out


def _unit_of_host(cluster: Cluster, granularity: str) -> np.ndarray:
    return cluster.host_rack if granularity == "rack" else np.arange(cluster.num_hosts)


def _solver(time_limit_s: float | None, workers: int, seed: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    params = solver.parameters
    if time_limit_s is not None:
        params.max_time_in_seconds = max(0.05, float(time_limit_s))
    params.num_workers = max(1, int(workers))
    params.random_seed = int(seed)
    params.log_search_progress = False
    return solver


# ---------------------------------------------------------------------- the model
class _Part:
    """One cluster's variables and constraints inside an :class:`FRModel`."""

    def __init__(self, owner: "FRModel", ci: int, cluster: Cluster, in_model: np.ndarray, context: Target):
        model, size, budget = owner.model, owner.size, owner.budget
        scale, exact = owner.mem_scale, owner.mem_exact
        c = self.cluster = cluster
        self.ci = ci
        self.in_model = in_model
        self.ctx_host, self.ctx_place = np.asarray(context[0]).copy(), np.asarray(context[1]).copy()
        host0, place0 = c.vm_host, c.vm_placement
        vm_in = in_model[host0]
        if not np.array_equal(in_model[self.ctx_host], vm_in):
            raise ValueError(f"cluster {c.name}: the freed hosts are not closed under the context's moves")
        self.vm_in = vm_in
        active = c.host_active
        model_hosts = np.flatnonzero(in_model)
        active_hosts = model_hosts[active[model_hosts]]
        # A node already over capacity (inconsistent input) may lose VMs but receive none.
        over = (c.free_cpu < 0) | (c.free_mem < 0)
        sets_of = _member_sets(c)
        is_member = np.zeros(c.num_vms, dtype=bool)
        is_member[list(sets_of)] = True

        def mem_int(x: float, up: bool) -> int:
            v = x * scale
            return int(round(v)) if exact else (math.ceil(v - 1e-9) if up else math.floor(v + 1e-9))

        # Per node (h, n): used-CPU change = const + sum(coef * var); arrival / departure expressions.
        cpu_terms: dict[tuple[int, int], list] = defaultdict(list)
        mem_terms: dict[tuple[int, int], list] = defaultdict(list)
        cpu_const: Counter = Counter()
        mem_const: Counter = Counter()
        self.arr_nodes: dict[tuple[int, int], list] = defaultdict(list)
        self.dep_nodes: dict[tuple[int, int], list] = defaultdict(list)
        moved_terms: list = []
        touches_inactive = False

        # --- pooled, interchangeable VMs: counts per (shape, host, placement)
        shape_cpu, shape_mem, shape_span = c.shape_cpu, c.shape_mem, c.shape_span
        pooled = vm_in & c.vm_allow_migration & ~is_member
        self.pools: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for v in np.flatnonzero(pooled).tolist():
            self.pools[(int(c.vm_shape[v]), int(host0[v]), int(place0[v]))].append(v)
        # Largest drop of sum(free): every movable VM on an inactive host moving onto an active one.
        self.inactive_cpu = int(c.vm_cpu[(vm_in & c.vm_allow_migration & ~active[host0])].sum())
        self.dep: dict[tuple[int, int, int], Any] = {}
        self.arr: dict[tuple[int, int, int], Any] = {}
        pool_size: Counter = Counter()
        dep_by_kh: dict[tuple[int, int], list] = defaultdict(list)
        for (k, h, p), vms in self.pools.items():
            var = model.NewIntVar(0, min(len(vms), budget), f"dep_{ci}_{k}_{h}_{p}")
            self.dep[(k, h, p)] = var
            pool_size[k] += len(vms)
            dep_by_kh[(k, h)].append(var)
            touches_inactive |= not active[h]
            u_cpu, u_mem = _usage(shape_cpu[k], p), _usage(shape_mem[k], p)
            for n in (0, 1):
                if u_cpu[n] or u_mem[n]:
                    cpu_terms[(h, n)].append((-int(u_cpu[n]), var))
                    mem_terms[(h, n)].append((-mem_int(u_mem[n], False), var))
                    self.dep_nodes[(h, n)].append(var)
        arr_by_kh: dict[tuple[int, int], list] = defaultdict(list)
        for k in sorted(pool_size):
            arrivals = []
            for p in _placements(int(shape_span[k])):
                u_cpu, u_mem = _usage(shape_cpu[k], p), _usage(shape_mem[k], p)
                fit = np.full(len(active_hosts), min(budget, pool_size[k]), dtype=np.int64)
                for n in (0, 1):
                    if u_cpu[n]:
                        fit = np.minimum(fit, c.numa_cpu_total[active_hosts, n] // int(u_cpu[n]))
                    if u_mem[n]:
                        fit = np.minimum(fit, np.floor(c.numa_mem_total[active_hosts, n] / u_mem[n]).astype(np.int64))
                    if u_cpu[n] or u_mem[n]:
                        fit[over[active_hosts, n]] = 0
                mem_coef = [mem_int(u_mem[n], True) for n in (0, 1)]
                for h, ub in zip(active_hosts.tolist(), fit.tolist()):
                    if ub <= 0:
                        continue
                    var = model.NewIntVar(0, ub, f"arr_{ci}_{k}_{h}_{p}")
                    self.arr[(k, h, p)] = var
                    arrivals.append(var)
                    arr_by_kh[(k, h)].append(var)
                    for n in (0, 1):
                        if u_cpu[n] or u_mem[n]:
                            cpu_terms[(h, n)].append((int(u_cpu[n]), var))
                            mem_terms[(h, n)].append((mem_coef[n], var))
                            self.arr_nodes[(h, n)].append(var)
            departures = [var for (kk, _, _), var in self.dep.items() if kk == k]
            total = cp_model.LinearExpr.Sum(departures)
            model.Add(cp_model.LinearExpr.Sum(arrivals) == total)
            moved_terms.append(total)
            for (kk, h), deps in dep_by_kh.items():
                if kk == k and (k, h) in arr_by_kh:  # Hall: departures from h can all go to other hosts
                    model.Add(cp_model.LinearExpr.Sum(deps + arr_by_kh[(k, h)]) <= total)

        # --- individual VMs: anti-affinity members that may move
        self.x: dict[int, dict[tuple[int, int], Any]] = {}
        for v in np.flatnonzero(vm_in & c.vm_allow_migration & is_member).tolist():
            h0, p0 = int(host0[v]), int(place0[v])
            cpu_v, mem_v = c.vm_cpu[v], c.vm_mem[v]
            options = {(h0, p0): model.NewBoolVar(f"x_{ci}_{v}_stay")}
            for p in _placements(int(c.vm_span[v])):
                u_cpu, u_mem = _usage(cpu_v, p), _usage(mem_v, p)
                ok = np.ones(len(active_hosts), dtype=bool)
                for n in (0, 1):
                    ok &= (c.numa_cpu_total[active_hosts, n] >= u_cpu[n]) & (c.numa_mem_total[active_hosts, n] >= u_mem[n])
                    if u_cpu[n] or u_mem[n]:
                        ok &= ~over[active_hosts, n]
                for h in active_hosts[ok].tolist():
                    if h != h0:
                        options[(h, p)] = model.NewBoolVar(f"x_{ci}_{v}_{h}_{p}")
            model.AddExactlyOne(options.values())
            self.x[v] = options
            stay = options[(h0, p0)]
            moved_terms.append(1 - stay)
            touches_inactive |= not active[h0]
            for (h, p), var in options.items():
                u_cpu, u_mem = _usage(cpu_v, p), _usage(mem_v, p)
                for n in (0, 1):
                    if not (u_cpu[n] or u_mem[n]):
                        continue
                    cpu_terms[(h, n)].append((int(u_cpu[n]), var))
                    mem_terms[(h, n)].append((mem_int(u_mem[n], True), var))
                    if (h, p) == (h0, p0):  # the VM's own usage is in free0: remove it, re-add if it stays
                        cpu_const[(h, n)] -= int(u_cpu[n])
                        mem_const[(h, n)] -= mem_int(u_mem[n], True)
                        self.dep_nodes[(h, n)].append(1 - var)
                    else:
                        self.arr_nodes[(h, n)].append(var)
        self._anti_affinity(model, sets_of)

        # --- nodes: capacity, free = size*q + r, objective terms
        self.free_expr: dict[tuple[int, int], Any] = {}
        self.q: dict[tuple[int, int], Any] = {}
        n_terms, d_terms = [], []
        n_const = d_const = 0
        for h in model_hosts.tolist():
            for n in (0, 1):
                free0 = int(c.free_cpu[h, n])
                if (h, n) not in cpu_terms:
                    if active[h]:
                        n_const += free0 % size
                        d_const += free0
                    continue
                if not active[h]:  # departures only: capacity can only grow, and it does not count
                    continue
                coefs = [t[0] for t in cpu_terms[(h, n)]]
                variables = [t[1] for t in cpu_terms[(h, n)]]
                free = free0 - cpu_const[(h, n)] - cp_model.LinearExpr.WeightedSum(variables, coefs)
                mem_free0 = mem_int(float(c.free_mem[h, n]), False)
                mem_used = cp_model.LinearExpr.WeightedSum([t[1] for t in mem_terms[(h, n)]], [t[0] for t in mem_terms[(h, n)]])
                model.Add(mem_used + mem_const[(h, n)] <= max(mem_free0, 0))
                model.Add(free >= min(free0, 0))
                q = model.NewIntVar(min(free0, 0) // size, int(c.numa_cpu_total[h, n]) // size, f"q_{ci}_{h}_{n}")
                model.Add(free >= size * q)
                model.Add(free <= size * q + size - 1)
                self.free_expr[(h, n)] = free
                self.q[(h, n)] = q
                n_terms.append(free - size * q)
                d_terms.append(free)
        # Hosts outside the model stay as the context has them.
        outside = ~in_model & active
        if outside.any():
            free_ctx = _free_at(c, (self.ctx_host, self.ctx_place))[0][outside]
            n_const += int((free_ctx % size).sum())
            d_const += int(free_ctx.sum())
        self.n_terms, self.d_terms = n_terms, d_terms
        self.n_const, self.d_const = n_const, d_const
        self.moved_terms = moved_terms
        self.touches_inactive = touches_inactive

    def _anti_affinity(self, model: cp_model.CpModel, sets_of: dict[int, list[int]]) -> None:
        """At most one member per host/rack; no arrival where two members already share one."""
        c = self.cluster
        self.unit_arr: list[dict[int, list]] = []
        self.unit_dep: list[dict[int, list]] = []
        for dset in c.deployment_sets:
            unit = _unit_of_host(c, dset.granularity)
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
                u0 = int(unit[h_start])
                for (h, p), var in self.x[v].items():
                    terms[int(unit[h])].append(var)
                    if (h, p) != (h_start, int(c.vm_placement[v])):
                        arr_u[int(unit[h])].append(var)
                        if start_count[int(unit[h])] >= 2:
                            model.Add(var == 0)
                dep_u[u0].append(1 - self.x[v][(h_start, int(c.vm_placement[v]))])
            for u, vars_u in terms.items():
                if start_count[u] <= 1:
                    model.Add(cp_model.LinearExpr.Sum(vars_u) + fixed[u] <= 1)
            self.unit_arr.append(arr_u)
            self.unit_dep.append(dep_u)

    # ------------------------------------------------------------------ hints and solutions
    def hint(self, model: cp_model.CpModel, size: int, target: Target | None) -> None:
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
        free = _free_at(c, (host, place))[0]
        for (h, n), q in self.q.items():
            model.AddHint(q, int(free[h, n]) // size)

    def target(self, solver: cp_model.CpSolver) -> Target:
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
            for v, (h, p) in _match_departures(leaving, coming).items():
                host[v], place[v] = h, p
        for v, options in self.x.items():
            for (h, p), var in options.items():
                if solver.Value(var):
                    host[v], place[v] = h, p
        return host, place


def _match_departures(leaving: dict[int, list[int]], coming: dict[int, list[tuple[int, int]]]) -> dict[int, tuple[int, int]]:
    """Send each leaving VM to an arrival slot on another host.

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
    """

    def __init__(self, clusters: Sequence[Cluster], budget: int, host_masks: Sequence[np.ndarray] | None = None,
                 context: Sequence[Target] | None = None, size: int = 16):
        self.model = cp_model.CpModel()
        self.clusters = list(clusters)
        self.budget = int(budget)
        self.size = size
        self.mem_scale, self.mem_exact = _memory_scale(self.clusters)
        self.parts: list[_Part] = []
        for ci, c in enumerate(self.clusters):
            mask = np.ones(c.num_hosts, dtype=bool) if host_masks is None else np.asarray(host_masks[ci], dtype=bool)
            ctx = (c.vm_host, c.vm_placement) if context is None else context[ci]
            self.parts.append(_Part(self, ci, c, mask, ctx))
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
            self.N = self.n_const + free0 - size * cp_model.LinearExpr.Sum([q for p in self.parts for q in p.q.values()])
        self.restricted_nodes = 0

    def stats(self) -> dict[str, int]:
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
        """Let each listed ``(cluster, host, node)`` (default: all, plus anti-affinity units) only gain or only lose VMs."""
        for ci, part in enumerate(self.parts):
            keys = part.arr_nodes.keys() & part.dep_nodes.keys()
            if nodes is not None:
                keys = keys & {(h, n) for cj, h, n in nodes if cj == ci}
            for key in sorted(keys):
                self._either(part.arr_nodes[key], part.dep_nodes[key])
                self.restricted_nodes += 1
            if nodes is None:
                for arr_u, dep_u in zip(part.unit_arr, part.unit_dep):
                    for u in arr_u.keys() & dep_u.keys():
                        self._either(arr_u[u], dep_u[u])

    def _either(self, arrivals: list, departures: list) -> None:
        gains = self.model.NewBoolVar("")
        self.model.Add(cp_model.LinearExpr.Sum(departures) == 0).OnlyEnforceIf(gains)
        self.model.Add(cp_model.LinearExpr.Sum(arrivals) == 0).OnlyEnforceIf(gains.Not())

    def solve(self, time_limit_s: float | None, workers: int = 2, seed: int = 0) -> tuple[cp_model.CpSolver, int]:
        solver = _solver(time_limit_s, workers, seed)
        return solver, solver.Solve(self.model)

    def targets(self, solver: cp_model.CpSolver) -> list[Target]:
        """Every cluster's placement in the solver's solution."""
        return [part.target(solver) for part in self.parts]

    def mixed_nodes(self, solver: cp_model.CpSolver) -> list[tuple[int, int, int]]:
        """Nodes that both gain and lose VMs in the solution (where capacity cycles can arise)."""
        out = []
        for ci, part in enumerate(self.parts):
            for key in part.arr_nodes.keys() & part.dep_nodes.keys():
                if (any(solver.Value(e) for e in part.arr_nodes[key])
                        and any(solver.Value(e) for e in part.dep_nodes[key])):
                    out.append((ci, *key))
        return out


# ---------------------------------------------------------------------- sequencing
def sequence_moves(cluster: Cluster, target: Target, time_limit_s: float = 10.0, workers: int = 2,
                   seed: int = 0) -> list[tuple[int, int, int]] | None:
    """Order the moves from ``cluster``'s placement to ``target`` so each is feasible when made.

    Each VM whose host changes moves once, straight to its target. Greedy first (safe moves,
    then moves that free room for blocked ones); if that stalls, an exact CP-SAT ordering model.

    Args:
        cluster: the start state (not modified).
        target: ``(vm_host, vm_placement)``; VMs that keep their host must keep their placement.
        time_limit_s: limit for the exact ordering model.

    Returns:
        ``[(vm, host, placement), ...]`` in a feasible order, or None if none exists (or none was
        found in time).
    """
    t_host, t_place = np.asarray(target[0]), np.asarray(target[1])
    stays = t_host == cluster.vm_host
    if np.any(stays & (t_place != cluster.vm_placement)):
        return None  # a NUMA change on the same host is not a migration
    moving = np.flatnonzero(~stays).tolist()
    if not moving:
        return []
    work = cluster.copy()
    pending = {v: (int(t_host[v]), int(t_place[v])) for v in moving}
    order: list[tuple[int, int, int]] = []
    while pending:
        leaving_hosts = {int(work.vm_host[v]) for v in pending}
        safe = [v for v, (h, p) in pending.items() if h not in leaving_hosts and work.check_migration(v, h, p) is None]
        if safe:
            for v in safe:
                h, p = pending.pop(v)
                if work.check_migration(v, h, p) is None:  # anti-affinity may link two safe moves
                    work.migrate(v, h, p)
                    order.append((v, h, p))
                else:
                    pending[v] = (h, p)
            continue
        feasible = [v for v, (h, p) in pending.items() if work.check_migration(v, h, p) is None]
        if not feasible:
            break
        blocked_hosts = {h for v, (h, p) in pending.items() if v not in feasible}
        pick = next((v for v in feasible if int(work.vm_host[v]) in blocked_hosts), feasible[0])
        h, p = pending.pop(pick)
        work.migrate(pick, h, p)
        order.append((pick, h, p))
    if not pending:
        return order
    return _exact_order(cluster, [(v, int(t_host[v]), int(t_place[v])) for v in moving], time_limit_s, workers, seed)


def _exact_order(cluster: Cluster, moves: list[tuple[int, int, int]], time_limit_s: float, workers: int,
                 seed: int) -> list[tuple[int, int, int]] | None:
    """CP-SAT: positions for the moves such that capacity holds after every prefix and anti-affinity when moving."""
    scale, exact = _memory_scale([cluster])
    model = cp_model.CpModel()
    m = len(moves)
    pos = [model.NewIntVar(0, m - 1, f"pos_{i}") for i in range(m)]
    model.AddAllDifferent(pos)
    before: dict[tuple[int, int], Any] = {}

    def earlier(i: int, j: int) -> Any:
        if (i, j) not in before:
            b = model.NewBoolVar(f"b_{i}_{j}")
            model.Add(pos[i] < pos[j]).OnlyEnforceIf(b)
            model.Add(pos[i] > pos[j]).OnlyEnforceIf(b.Not())
            before[(i, j)] = b
        return before[(i, j)]

    def mem_int(x: float, up: bool) -> int:
        v = x * scale
        return int(round(v)) if exact else (math.ceil(v - 1e-9) if up else math.floor(v + 1e-9))

    arrive: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    depart: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for i, (v, h, p) in enumerate(moves):
        src_place = int(cluster.vm_placement[v])
        src_cpu, src_mem = _usage(cluster.vm_cpu[v], src_place), _usage(cluster.vm_mem[v], src_place)
        dst_cpu, dst_mem = _usage(cluster.vm_cpu[v], p), _usage(cluster.vm_mem[v], p)
        for n in (0, 1):
            if src_cpu[n] or src_mem[n]:
                depart[(int(cluster.vm_host[v]), n)].append((i, int(src_cpu[n]), mem_int(src_mem[n], False)))
            if dst_cpu[n] or dst_mem[n]:
                arrive[(h, n)].append((i, int(dst_cpu[n]), mem_int(dst_mem[n], True)))
    for (h, n), arrivals in arrive.items():
        free_cpu, free_mem = int(cluster.free_cpu[h, n]), mem_int(float(cluster.free_mem[h, n]), False)
        for i, cpu_i, mem_i in arrivals:
            others = [(j, c, mm) for j, c, mm in arrivals if j != i]
            gone = depart.get((h, n), [])
            cpu = sum(c * earlier(j, i) for j, c, _ in others) - sum(c * earlier(j, i) for j, c, _ in gone)
            mem = sum(mm * earlier(j, i) for j, _, mm in others) - sum(mm * earlier(j, i) for j, _, mm in gone)
            model.Add(cpu + cpu_i <= free_cpu)
            model.Add(mem + mem_i <= free_mem)
    index = {v: i for i, (v, _, _) in enumerate(moves)}
    for dset in cluster.deployment_sets:
        unit = _unit_of_host(cluster, dset.granularity)
        for v in dset.members.tolist():
            if v not in index:
                continue
            u = unit[moves[index[v]][1]]
            for w in dset.members.tolist():
                if w != v and w in index and unit[cluster.vm_host[w]] == u:
                    model.Add(pos[index[w]] < pos[index[v]])
    solver = _solver(time_limit_s, workers, seed)
    if solver.Solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    ranked = sorted(range(m), key=lambda i: solver.Value(pos[i]))
    work = cluster.copy()
    for i in ranked:  # belt and braces: the twin must accept the order
        if work.check_migration(*moves[i]) is not None:
            return None
        work.migrate(*moves[i])
    return [moves[i] for i in ranked]


def sequence_plan(clusters: Sequence[Cluster], targets: Sequence[Target], time_limit_s: float = 10.0,
                  workers: int = 2, seed: int = 0) -> list[Move] | None:
    """:func:`sequence_moves` for every cluster, as one plan (cluster by cluster); None if any fails."""
    plan: list[Move] = []
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        order = sequence_moves(c, t, time_limit_s, workers, seed)
        if order is None:
            return None
        plan.extend((ci, v, h, p) for v, h, p in order)
    return plan


# ---------------------------------------------------------------------- exact planner
@dataclass
class _Incumbent:
    targets: list[Target]
    moves: list[Move]
    frag: int
    free: int
    solver: Any = None

    @property
    def fr(self) -> float:
        return self.frag / self.free if self.free else 0.0


def _start_incumbent(clusters: Sequence[Cluster], size: int) -> _Incumbent:
    frag, free = snapshot_fragment_sums(clusters, size)
    return _Incumbent([(c.vm_host.copy(), c.vm_placement.copy()) for c in clusters], [], frag, free)


def _solve_ratio(fm: FRModel, start: _Incumbent, deadline: float, workers: int, seed: int,
                 hint: Sequence[Target] | None, fewest_moves: bool = False,
                 ) -> tuple[_Incumbent | None, float | None, list[str], dict[str, Any]]:
    """Minimise FR over ``fm``: one solve when sum(free) is constant, else Dinkelbach iterations.

    Returns:
        ``(best solution strictly better than start, or None; lower bound on FR or None; CP-SAT
        statuses; stats)``. The solution's ``moves`` are empty (not sequenced yet).
    """
    best: _Incumbent | None = None
    bound_fr: float | None = None
    statuses: list[str] = []
    stats: dict[str, Any] = {"solve_s": 0.0, "branches": 0}
    ratio = (start.frag, start.free)
    fm.hint(hint)
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0.05 and statuses:
            break
        fm.set_objective(ratio if fm.d_variable else None, fewest_moves=fewest_moves)
        solver, code = fm.solve(max(remaining, 0.05) if math.isfinite(remaining) else None, workers, seed)
        stats["solve_s"] += solver.WallTime()
        stats["branches"] += solver.NumBranches()
        statuses.append(_STATUS[code])
        if code in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
            raise RuntimeError(f"CP-SAT says {_STATUS[code]} although making no migration is always feasible")
        if code == cp_model.UNKNOWN:
            break
        frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
        a, b = ratio
        improves = b * frag - a * free < 0  # frag / free < a / b
        if improves:
            best = _Incumbent(fm.targets(solver), [], frag, free, solver)
        if not fm.d_variable:
            bound_fr = fm.fr_numerator_bound(solver) / free if free else 0.0
            break
        bound = solver.BestObjectiveBound()
        # Moving a VM off an inactive host only lowers sum(free), by at most inactive_cpu in all.
        d_min = max(1, start.free - sum(p.inactive_cpu for p in fm.parts))
        bound_fr = a / b if bound >= 0 else max(0.0, a / b + bound / (b * d_min))
        if not (improves and code == cp_model.OPTIMAL):
            break
        ratio = (frag, free)  # Dinkelbach step: minimise b*N - a*D again with the better ratio
        fm.hint(best.targets)
    return best, bound_fr, statuses, stats


def cpsat_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
               workers: int = 2, size: int = 16, hint: str = "current", max_repairs: int = 2,
               fewest_moves: bool = False) -> PlanResult:
    """Exact CP-SAT plan: the MNL-constrained minimum fragment rate, or the best found in time.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit for the solver (None: solve to optimality).
        seed: CP-SAT random seed.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        hint: ``"current"`` (no migration: any limit returns a plan at least that good) or
            ``"greedy"`` (best-improvement greedy's placement).
        max_repairs: solves constrained at the offending nodes when a target cannot be ordered,
            before constraining every node.
        fewest_moves: among plans of equal FR, prefer fewer migrations (lexicographic objective;
            constant-denominator case only).

    Returns:
        A :class:`PlanResult`; ``claimed_fr`` is the model's objective, ``bound_fr`` its proven
        lower bound, ``status`` ``OPTIMAL`` only when the plan is proved optimal.
    """
    start = time.perf_counter()
    deadline = start + time_limit_s if time_limit_s is not None else math.inf
    clusters = snapshot.clusters
    current = _start_incumbent(clusters, size)
    fm = FRModel(clusters, budget, size=size)
    stats: dict[str, Any] = {"build_s": time.perf_counter() - start, **fm.stats(), "repairs": 0,
                             "d_variable": fm.d_variable}
    hint_targets = None
    if hint == "greedy":
        work = snapshot.copy()
        _twin_greedy_plan(work.clusters, budget, size=size)
        hint_targets = [(c.vm_host.copy(), c.vm_placement.copy()) for c in work.clusters]
    elif hint != "current":
        raise ValueError(f"hint must be 'current' or 'greedy', got {hint!r}")
    if current.frag == 0 or current.free == 0:  # FR is already 0
        return finish_plan("cpsat", snapshot, budget, [], current.fr, start, bound_fr=current.fr, status="OPTIMAL",
                           stats=stats)
    bound_fr = None
    final = current
    statuses: list[str] = []
    for attempt in range(max_repairs + 2):
        solution, bound, solve_statuses, solve_stats = _solve_ratio(fm, current, deadline, workers, seed,
                                                                    hint_targets, fewest_moves)
        statuses.extend(solve_statuses)
        for key, value in solve_stats.items():
            stats[key] = stats.get(key, 0) + value
        if attempt == 0:
            bound_fr = bound
        if solution is None:  # nothing better than no migration (proved if the bound says so)
            break
        order_limit = min(10.0, max(1.0, deadline - time.perf_counter())) if math.isfinite(deadline) else 10.0
        moves = sequence_plan(clusters, solution.targets, order_limit, workers, seed)
        if moves is not None:
            solution.moves = moves
            final = solution
            break
        stats["repairs"] += 1
        if attempt < max_repairs:
            fm.forbid_mixed(fm.mixed_nodes(solution.solver))
        else:
            fm.forbid_mixed(None)
        hint_targets = None
        if time.perf_counter() >= deadline:
            break
    stats["solver_statuses"] = statuses
    # The bound is the unconstrained model's, valid for every plan that moves each VM at most once.
    status = "OPTIMAL" if bound_fr is not None and final.fr <= bound_fr else "FEASIBLE"
    return finish_plan("cpsat", snapshot, budget, final.moves, final.fr, start, bound_fr=bound_fr, status=status,
                       stats=stats)


# ---------------------------------------------------------------------- large neighbourhoods
def _components(cluster: Cluster, target: Target) -> list[np.ndarray]:
    """Groups of hosts linked by the target's moves (source and destination of a move together)."""
    parent = list(range(cluster.num_hosts))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    moved = np.flatnonzero(target[0] != cluster.vm_host)
    for v in moved.tolist():
        a, b = find(int(cluster.vm_host[v])), find(int(target[0][v]))
        if a != b:
            parent[a] = b
    groups: dict[int, list[int]] = defaultdict(list)
    touched = set(cluster.vm_host[moved].tolist()) | set(target[0][moved].tolist())
    for h in sorted(touched):
        groups[find(h)].append(h)
    return [np.array(g) for g in groups.values()]


def _neighbourhood(clusters: Sequence[Cluster], targets: Sequence[Target], num_hosts: int,
                   rng: np.random.Generator, size: int, keep_moves: float) -> list[np.ndarray]:
    """Random host masks: a share of the incumbent's move components plus hosts drawn at random.

    Hosts with a fragmented node in the incumbent are drawn four times as often as others.
    """
    masks = [np.zeros(c.num_hosts, dtype=bool) for c in clusters]
    in_component = [np.zeros(c.num_hosts, dtype=bool) for c in clusters]
    chosen = 0
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        for group in _components(c, t):
            in_component[ci][group] = True
            if rng.random() < keep_moves:
                masks[ci][group] = True
                chosen += len(group)
    cand_ci, cand_h, weight = [], [], []
    for ci, (c, t) in enumerate(zip(clusters, targets)):
        free = _free_at(c, t)[0]
        hosts = np.flatnonzero(~in_component[ci] & ~masks[ci])
        fragmented = (free[hosts] % size != 0).any(axis=1) & c.host_active[hosts]
        cand_ci.append(np.full(len(hosts), ci))
        cand_h.append(hosts)
        weight.append(np.where(fragmented, 4.0, 1.0))
    cand_ci, cand_h, weight = np.concatenate(cand_ci), np.concatenate(cand_h), np.concatenate(weight)
    take = int(min(max(num_hosts - chosen, 0), len(cand_h)))
    if take:
        pick = rng.choice(len(cand_h), size=take, replace=False, p=weight / weight.sum())
        for i in pick.tolist():
            masks[int(cand_ci[i])][int(cand_h[i])] = True
    return masks


def cpsat_lns_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
                   workers: int = 2, size: int = 16, neighbourhood_hosts: int = 200, sub_time_s: float = 5.0,
                   keep_moves: float = 0.5, max_neighbourhood_hosts: int = 600,
                   fewest_moves: bool = False) -> PlanResult:
    """Large-neighbourhood search over the CP-SAT model, from best-improvement greedy's plan.

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of moved VMs (= migrations).
        time_limit_s: wall-clock limit (None: 60 s), greedy start included.
        seed: seeds neighbourhood draws and CP-SAT.
        workers: CP-SAT search workers.
        size: fragment size in vCPU.
        neighbourhood_hosts: initial number of hosts freed per neighbourhood (adapts: x1.25 when a
            sub-problem is proved optimal without improvement, x0.8 when it times out).
        sub_time_s: time limit per sub-problem.
        keep_moves: probability that each group of the incumbent's moves is freed (re-planned).
        max_neighbourhood_hosts: cap on the neighbourhood size.
        fewest_moves: in each sub-problem, among equal FR prefer fewer migrations (and accept
            incumbents that only save migrations).

    Returns:
        A :class:`PlanResult`: ``status`` ``FEASIBLE`` without a bound, or ``OPTIMAL`` (bound =
        FR) when a whole-snapshot neighbourhood was proved optimal; stats hold the FR history.
    """
    start = time.perf_counter()
    deadline = start + (60.0 if time_limit_s is None else time_limit_s)
    rng = np.random.default_rng(seed)
    clusters = snapshot.clusters
    work = snapshot.copy()
    greedy = _twin_greedy_plan(work.clusters, budget, size=size)
    targets = [(c.vm_host.copy(), c.vm_placement.copy()) for c in work.clusters]
    greedy_moves = sequence_plan(clusters, targets, 5.0, workers, seed)
    frag, free = snapshot_fragment_sums(work.clusters, size)
    if greedy_moves is not None and len(greedy_moves) <= len(greedy):
        incumbent = _Incumbent(targets, greedy_moves, frag, free)
    else:  # greedy moved a VM twice in a way a direct plan cannot express: start from no migration
        incumbent = _start_incumbent(clusters, size)
    history = [(round(time.perf_counter() - start, 2), incumbent.fr)]
    stats: dict[str, Any] = {"greedy_fr": frag / free if free else 0.0, "iterations": 0, "improvements": 0,
                             "optimal_subproblems": 0, "unordered": 0}
    hosts = neighbourhood_hosts
    status = "FEASIBLE"
    while time.perf_counter() < deadline - 0.5:
        stats["iterations"] += 1
        masks = _neighbourhood(clusters, incumbent.targets, hosts, rng, size, keep_moves)
        outside = sum(int((~m[c.vm_host] & (t[0] != c.vm_host)).sum())
                      for c, t, m in zip(clusters, incumbent.targets, masks))
        fm = FRModel(clusters, budget - outside, host_masks=masks, context=incumbent.targets, size=size)
        fm.set_objective((incumbent.frag, incumbent.free) if fm.d_variable else None,
                         fewest_moves=fewest_moves and not fm.d_variable)
        fm.hint(incumbent.targets)
        limit = min(sub_time_s, deadline - time.perf_counter())
        solver, code = fm.solve(max(limit, 0.05), workers, seed + stats["iterations"])
        if code == cp_model.OPTIMAL:
            stats["optimal_subproblems"] += 1
        improved = better = fewer = False
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            frag, free = int(solver.Value(fm.N)), int(solver.Value(fm.D))
            moved = outside + int(solver.Value(fm.moved))
            better = frag * incumbent.free < incumbent.frag * free
            fewer = frag * incumbent.free == incumbent.frag * free and moved < len(incumbent.moves)
            if better or (fm.fewest_moves and fewer):
                new_targets = fm.targets(solver)
                moves = sequence_plan(clusters, new_targets, 5.0, workers, seed)
                if moves is not None and len(moves) <= budget:
                    incumbent = _Incumbent(new_targets, moves, frag, free)
                    stats["improvements"] += 1
                    history.append((round(time.perf_counter() - start, 2), incumbent.fr))
                    improved = True
                else:
                    stats["unordered"] += 1
        candidate = better or (fm.fewest_moves and fewer)
        if code == cp_model.OPTIMAL and all(m.all() for m in masks) and (improved or not candidate):
            status = "OPTIMAL"  # the neighbourhood was the whole problem, solved to optimality
            break
        if code == cp_model.OPTIMAL and not improved:
            hosts = min(int(hosts * 1.25) + 1, max_neighbourhood_hosts)
        elif code != cp_model.OPTIMAL:
            hosts = max(int(hosts * 0.8), 20)
    stats["final_neighbourhood_hosts"] = hosts
    stats["history"] = history
    return finish_plan("cpsat_lns", snapshot, budget, incumbent.moves, incumbent.fr, start, status=status,
                       bound_fr=incumbent.fr if status == "OPTIMAL" else None, stats=stats)
