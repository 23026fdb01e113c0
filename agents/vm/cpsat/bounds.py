"""Lower bounds on the fragment rate reachable with few migrations, where CP-SAT's own bound is weak.

CP-SAT's bound on :class:`~agents.vm.cpsat.model.FRModel` is strong on a few hundred hosts but
stays near 0 on a thousand or more within a minute (the linear relaxation of ``free = 16 q + r``
says little). Both bounds here use that a budget of ``B`` migrations changes few nodes, each only
by what leaves and enters it. Both hold only when ``D = sum(free)`` over active nodes is constant
(no movable VM on an inactive host; otherwise they return None), and ignore memory and
anti-affinity (relaxations, so they stay valid with deployment sets). A migration of a one-node VM
is one departure from one node and one arrival on another; a migration of a two-node VM is a
*half* departure from each of two nodes and a half arrival on each of two.

* :func:`lagrangian_bound` (the strong one): prices every usage (a one-node VM's vCPU, a half's
  vCPU) and every migration, which splits the problem into one small exact problem per node;
  starting from the price ``u mod 16`` it proves, for instance, that the 3-move plan CP-SAT's LNS
  finds on ``production_like_snapshot(0)`` (1,264 hosts, 330 sets, budget 10) is optimal.
* :func:`touch_bound`: per node and count of changes, the most its ``free mod 16`` can drop
  (:func:`_node_options`), and a small CP-SAT knapsack over the nodes with ``s`` one-node and
  ``d`` two-node migrations, ``s + d <= B``. It does not match what leaves with what arrives, so
  it is weaker, but it reasons about the budget exactly.

Like the models, they are over final placements; a plan that moves a VM twice reaches a final
placement these bounds cover too (with fewer departures than migrations).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np
from ortools.sat.python import cp_model

from agents.vm.cpsat.model import new_solver, on_nodes
from digital_twin.vm import Cluster

Option = tuple[int, int, int, int]
"""Changes on one node: ``(one-node arrivals, one-node departures, half arrivals, half departures)``."""


def _sums(values: Sequence[int], counts: int, limit: int, multiset: bool) -> list[np.ndarray]:
    """``out[j]``: (limit + 1,) bool, the totals of ``j`` of ``values`` (a multiset, or a subset of them)."""
    out = [np.zeros(limit + 1, dtype=bool) for _ in range(counts + 1)]
    out[0][0] = True
    if multiset:
        vals = sorted({int(v) for v in values if 0 < v <= limit})
        for j in range(1, counts + 1):
            for v in vals:
                out[j][v:] |= out[j - 1][: limit + 1 - v]
    else:  # subsets: one item at a time, counts downwards
        for v in values:
            v = int(v)
            if v > limit:
                continue
            for j in range(counts, 0, -1):
                out[j][v:] |= out[j - 1][: limit + 1 - v]
    return out


def _node_options(free0: int, cap: int, dep_single: Sequence[int], dep_half: Sequence[int],
                  arr_single: Sequence[int], arr_half: Sequence[int], size: int,
                  max_arrivals: int) -> dict[Option, int]:
    """How much ``free mod size`` can drop on one node, per count of changes (needed options only).

    A drop may be negative: departures can raise the fragment, and every migration departs from
    somewhere, so :func:`touch_bound` charges departures exactly.

    Args:
        free0: the node's free vCPU now (negative: overloaded; then any drop up to ``r0`` is allowed).
        cap: its vCPU capacity.
        dep_single, dep_half: vCPU on the node of its movable one-node VMs and two-node VMs.
        arr_single, arr_half: vCPU a movable one-node VM (a half of a two-node VM) of the cluster
            would take on a node.
        size: fragment size.
        max_arrivals: arrivals computed exactly; more count as a drop of ``r0``.

    Returns:
        ``{(a_s, d_s, a_h, d_h): drop}``: the most ``r`` drops with exactly ``d_s``, ``d_h``
        departures and at most ``a_s``, ``a_h`` arrivals (an option whose arrivals another option
        with the same departures undercuts at no smaller drop is left out; so is no change).
    """
    r0 = free0 % size
    n_ds, n_dh = len(dep_single), len(dep_half)
    exact: dict[Option, float] = {}
    arrival_counts = [(i, j) for i in range(max_arrivals + 1) for j in range(max_arrivals + 1 - i)]
    if free0 < 0:  # inconsistent input: only departures (arrivals never fit), and r can end anywhere
        for i in range(n_ds + 1):
            for j in range(n_dh + 1):
                if i + j:
                    exact[(0, i, 0, j)] = r0
    else:
        limit = max(cap, free0) + 1
        ds = _sums(dep_single, n_ds, limit, multiset=False)
        dh = _sums(dep_half, n_dh, limit, multiset=False)
        a_s = _sums(arr_single, max_arrivals, limit, multiset=True)
        a_h = _sums(arr_half, max_arrivals, limit, multiset=True)
        dep = {(i, j): np.convolve(x, y)[: 2 * limit + 1] > 0
               for i, x in enumerate(ds) for j, y in enumerate(dh) if x.any() and y.any()}
        arr = {(i, j): np.convolve(a_s[i], a_h[j])[: 2 * limit + 1] > 0
               for i, j in arrival_counts if a_s[i].any() and a_h[j].any()}
        for (i_d, j_d), dv in dep.items():
            for (i_a, j_a), av in arr.items():
                if i_d + j_d + i_a + j_a == 0:
                    continue
                # free = free0 + dep - arr over every pair of totals: a correlation.
                diff = np.convolve(dv, av[::-1])  # index k <-> dep - arr = k - (len(av) - 1)
                free = free0 + np.flatnonzero(diff > 0) - (len(av) - 1)
                free = free[(free >= 0) & (free <= cap)]
                if len(free):
                    exact[(i_a, i_d, j_a, j_d)] = r0 - int((free % size).min())
    # At most that many arrivals: the best over fewer (same departures) counts too.
    best: dict[Option, float] = {}
    for i_d in range(n_ds + 1):
        for j_d in range(n_dh + 1):
            for i_a, j_a in arrival_counts:
                value = max((exact.get((x, i_d, y, j_d), -math.inf) for x in range(i_a + 1) for y in range(j_a + 1)),
                            default=-math.inf)
                if (i_a, i_d, j_a, j_d) != (0, 0, 0, 0) and value > -math.inf:
                    best[(i_a, i_d, j_a, j_d)] = value
            # More arrivals than computed: down to 0, charged max_arrivals + 1 of them.
            for i_a in range(max_arrivals + 2):
                best[(i_a, i_d, max_arrivals + 1 - i_a, j_d)] = r0
    by_departures: dict[tuple[int, int], list[Option]] = defaultdict(list)
    for o in best:
        by_departures[(o[1], o[3])].append(o)
    out: dict[Option, int] = {}
    for group in by_departures.values():
        for o in group:
            drop = best[o]
            if drop <= 0 and o[1] + o[3] == 0:
                continue  # arrivals that do not help: arriving nowhere is as cheap
            if any(p != o and p[0] <= o[0] and p[2] <= o[2] and best[p] >= drop for p in group):
                continue
            out[o] = int(drop)
    return out


def touch_bound(clusters: Sequence[Cluster], budget: int, size: int = 16, max_arrivals: int = 3,
                time_limit_s: float = 5.0, workers: int = 2, seed: int = 0) -> tuple[int, int] | None:
    """A lower bound on ``sum(free mod size)`` after at most ``budget`` migrations (see the module).

    Args:
        clusters: the clusters in their current state (the whole snapshot, sharing one budget).
        budget: the migration budget.
        size: fragment size.
        max_arrivals: arrivals per node computed exactly (more count as the full ``r0``).
        time_limit_s: limit for the knapsack (stopped early, its proven bound is used).
        workers: CP-SAT workers.
        seed: CP-SAT seed.

    Returns:
        ``(lower bound on N, D)`` -- FR >= N / D -- or None when ``D`` can vary.
    """
    n0 = d0 = 0
    classes: Counter = Counter()
    has_half = False
    for c in clusters:
        movable = c.vm_allow_migration
        active = c.host_active
        if (movable & ~active[c.vm_host]).any():
            return None  # D varies
        frag, free = c.fragment_sums(size)
        n0 += frag
        d0 += free
        single = c.vm_span == 1
        arr_single = tuple(sorted({int(c.vm_cpu[v, 0]) for v in np.flatnonzero(movable & single).tolist()}))
        arr_half = tuple(sorted({int(x) for v in np.flatnonzero(movable & ~single).tolist() for x in c.vm_cpu[v]
                                 if x}))
        has_half = has_half or bool(arr_half)
        on_node: dict[tuple[int, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for v in np.flatnonzero(movable).tolist():
            h, p = int(c.vm_host[v]), int(c.vm_placement[v])
            cpu = on_nodes(c.vm_cpu[v], p)
            for n in (0, 1):
                if cpu[n]:
                    on_node[(h, n)][0 if single[v] else 1].append(int(cpu[n]))
        for h in np.flatnonzero(active).tolist():
            for n in (0, 1):
                free0 = int(c.free_cpu[h, n])
                ds, dh = on_node.get((h, n), ([], []))
                if free0 % size == 0 and not (ds or dh):
                    continue  # nothing can lower it and nothing leaves it
                classes[(free0, int(c.numa_cpu_total[h, n]), tuple(sorted(ds)), tuple(sorted(dh)),
                         arr_single, arr_half)] += 1
    if not classes:
        return 0, d0
    model = cp_model.CpModel()
    s = model.NewIntVar(0, budget, "single")
    d = model.NewIntVar(0, budget if has_half else 0, "double")
    model.Add(s + d <= budget)
    use: list[list] = [[], [], [], []]
    gain = []
    for key, count in classes.items():
        free0, cap, ds, dh, a_s, a_h = key
        chosen = []
        for o, drop in _node_options(free0, cap, ds, dh, a_s, a_h, size, max_arrivals).items():
            x = model.NewIntVar(0, count, "")
            chosen.append(x)
            gain.append(drop * x)
            for i in range(4):
                if o[i]:
                    use[i].append(o[i] * x)
        if chosen:
            model.Add(cp_model.LinearExpr.Sum(chosen) <= count)
    # Every migration departs from one node (two halves) and arrives on one (two halves).
    model.Add(cp_model.LinearExpr.Sum(use[0]) <= s)
    model.Add(cp_model.LinearExpr.Sum(use[1]) == s)
    model.Add(cp_model.LinearExpr.Sum(use[2]) <= 2 * d)
    model.Add(cp_model.LinearExpr.Sum(use[3]) == 2 * d)
    model.Maximize(cp_model.LinearExpr.Sum(gain))
    solver = new_solver(time_limit_s, workers, seed)
    code = solver.Solve(model)
    if code == cp_model.OPTIMAL:
        drop = int(round(solver.ObjectiveValue()))
    elif code == cp_model.FEASIBLE:
        value = solver.BestObjectiveBound()
        drop = int(math.floor(value + 1e-6)) if math.isfinite(value) else n0
    else:
        # UNKNOWN: stopped before it proved anything (a busy machine, a short limit); its "bound" is
        # the response's default 0, which would claim no migration can lower N. Only N >= 0 holds.
        drop = n0
    return min(max(n0 - drop, 0), n0), d0


# ---------------------------------------------------------------------- Lagrangian bound
def _departure_table(items: Sequence[tuple[int, float]], limit: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """0/1 knapsack over a node's movable VMs: ``best[x]`` the most total gain of a subset of total vCPU ``x``.

    Args:
        items: ``(vCPU on the node, gain)`` per VM.
        limit: largest total kept.

    Returns:
        ``(best, taken)``: ``best`` (limit + 1,) with -inf where no subset sums to ``x``; ``taken[i]``
        (limit + 1,) bool, whether item ``i`` is in the best subset of that total after items ``0..i``.
    """
    best = np.full(limit + 1, -np.inf)
    best[0] = 0.0
    taken = []
    for u, g in items:
        shifted = np.full(limit + 1, -np.inf)
        if u <= limit:
            shifted[u:] = best[: limit + 1 - u] + g
        take = shifted > best
        best = np.where(take, shifted, best)
        taken.append(take)
    return best, taken


def _arrival_table(values: Sequence[tuple[int, float]], limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Unbounded knapsack: ``cost[t]`` the least total price of a multiset of arrivals of total vCPU ``t``.

    Returns:
        ``(cost, last)``: +inf where no multiset sums to ``t``; ``last[t]`` the index in ``values`` of
        one arrival of a cheapest multiset (-1 for ``t = 0`` or none).
    """
    cost = np.full(limit + 1, np.inf)
    last = np.full(limit + 1, -1, dtype=np.int64)
    cost[0] = 0.0
    for t in range(1, limit + 1):
        for i, (u, price) in enumerate(values):
            if u <= t and cost[t - u] + price < cost[t]:
                cost[t] = cost[t - u] + price
                last[t] = i
    return cost, last


def lagrangian_bound(clusters: Sequence[Cluster], budget: int, size: int = 16, iterations: int = 40,
                     time_limit_s: float = 5.0) -> tuple[int, int] | None:
    """A lower bound on ``sum(free mod size)`` after at most ``budget`` migrations, by Lagrangian relaxation.

    Every migration is one departure and one arrival of the same usage (a one-node VM's vCPU, or
    each half of a two-node VM's), within a cluster. Pricing each usage ``u`` at ``lambda_u`` (the
    flow balance, relaxed) and each migration at ``mu >= 0`` (the budget), the problem falls apart
    into one small problem per node: which of its movable VMs leave (a 0/1 knapsack) and what
    arrives (an unbounded knapsack over the usages), capacity kept, memory and anti-affinity
    ignored, for the largest ``drop of free mod size + sum(lambda of departures) - sum(lambda of
    arrivals) - mu * migrations``. Summed over the nodes, plus ``mu * budget``, that bounds the
    drop of ``sum(free mod size)`` of every plan, for any prices. Prices start at ``u mod size``
    (then an arrival never gains net, and a departure only where the node's residue wraps round,
    which is where greedy's single moves are blind) and are refined by subgradient steps; the
    smallest value seen is the bound.

    Args:
        clusters: the clusters in their current state (the whole snapshot, sharing one budget).
        budget: the migration budget.
        size: fragment size.
        iterations: subgradient steps at most.
        time_limit_s: stop the steps after this long.

    Returns:
        ``(lower bound on N, D)`` -- FR >= N / D -- or None when ``D`` can vary (a movable VM on an
        inactive host).
    """
    import time

    start = time.perf_counter()
    n0 = d0 = 0
    keys: list[tuple[int, str, int]] = []  # (cluster, "s" or "h", vCPU): the usages that flow
    index: dict[tuple[int, str, int], int] = {}
    classes: Counter = Counter()
    caps = [0] * len(clusters)

    def key_of(ci: int, kind: str, u: int) -> int:
        k = (ci, kind, u)
        if k not in index:
            index[k] = len(keys)
            keys.append(k)
        return index[k]

    for ci, c in enumerate(clusters):
        movable = c.vm_allow_migration
        if (movable & ~c.host_active[c.vm_host]).any():
            return None
        frag, free = c.fragment_sums(size)
        n0 += frag
        d0 += free
        on_node: dict[tuple[int, int], list[int]] = defaultdict(list)
        for v in np.flatnonzero(movable).tolist():
            h, p = int(c.vm_host[v]), int(c.vm_placement[v])
            cpu = on_nodes(c.vm_cpu[v], p)
            kind = "s" if c.vm_span[v] == 1 else "h"
            for n in (0, 1):
                if cpu[n]:
                    on_node[(h, n)].append(key_of(ci, kind, int(cpu[n])))
        for v in np.flatnonzero(movable & (c.vm_span == 2)).tolist():  # both halves can arrive
            for x in c.vm_cpu[v]:
                if x:
                    key_of(ci, "h", int(x))
        caps[ci] = int(c.numa_cpu_total[c.host_active].max(initial=0))
        for h in np.flatnonzero(c.host_active).tolist():
            for n in (0, 1):
                classes[(ci, int(c.free_cpu[h, n]), int(c.numa_cpu_total[h, n]),
                         tuple(sorted(on_node.get((h, n), []))))] += 1
    if not keys:
        return min(n0, n0), d0
    value = np.array([k[2] for k in keys])
    weight = np.array([1.0 if k[1] == "s" else 0.5 for k in keys])  # migrations per departure
    lam = (value % size).astype(float)
    mu = 0.0
    best_l = math.inf
    theta, stall = 1.0, 0
    by_cluster = defaultdict(list)
    for i, k in enumerate(keys):
        by_cluster[k[0]].append(i)
    for _ in range(max(1, iterations)):
        total = mu * budget
        grad = np.zeros(len(keys))  # d L / d lambda = departures - arrivals
        grad_mu = float(budget)  # d L / d mu = budget - migrations
        tables = {}
        for ci, idx in by_cluster.items():
            tables[ci] = (_arrival_table([(int(value[i]), float(lam[i])) for i in idx], caps[ci]), idx)
        for (ci, free0, cap, items), count in classes.items():
            (cost, last), idx = tables[ci]
            r0 = free0 % size
            gains = [(int(value[i]), float(lam[i] - mu * weight[i])) for i in items]
            limit = max(cap, free0, 0) + sum(u for u, _ in gains)
            dep, taken = _departure_table(gains, limit)
            xs = np.arange(limit + 1)[:, None]
            ts = np.arange(len(cost))[None, :]
            f = free0 + xs - ts
            ok = np.isfinite(dep)[:, None] & np.isfinite(cost)[None, :] & ((ts == 0) | ((f >= 0) & (f <= cap)))
            grid = np.where(ok, r0 - np.mod(f, size) + dep[:, None] - cost[None, :], -np.inf)
            flat = int(np.argmax(grid))
            x, t = divmod(flat, grid.shape[1])
            val = float(grid[x, t])
            if val <= 0:
                continue  # no change
            total += count * val
            # Departures chosen (backtrack the 0/1 knapsack) and arrivals (the unbounded one).
            rest = x
            for j in range(len(items) - 1, -1, -1):
                if taken[j][rest]:
                    grad[items[j]] += count
                    grad_mu -= count * weight[items[j]]
                    rest -= gains[j][0]
            rest = t
            while rest > 0:
                i = idx[int(last[rest])]
                grad[i] -= count
                rest -= int(value[i])
        if total < best_l - 1e-9:
            best_l, stall = total, 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
        norm = float(grad @ grad + grad_mu * grad_mu)
        if norm == 0 or time.perf_counter() - start > time_limit_s:
            break
        step = theta * max(total, 1.0) / norm
        lam = lam - step * grad
        mu = max(0.0, mu - step * grad_mu)
    drop = int(math.floor(best_l + 1e-6))
    return min(max(n0 - drop, 0), n0), d0
