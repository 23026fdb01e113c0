"""Beam search over migration sequences, each child scored one follow-up move ahead.

Best-improvement greedy stops where every single migration leaves the fragment rate (FR) as it is
or worse, yet defragmenting often needs such a move first: take a VM off a host so that another one
fits there. :func:`beam_plan` keeps the ``beam_width`` best partial plans and grows each by one
*step*:

* every feasible migration ``m`` is a candidate; its **score** is the FR after ``m`` *and the best
  single follow-up move* (or after ``m`` alone when no follow-up helps), not the FR after ``m``;
* a migration that lowers FR by itself is committed alone; one that does not is committed together
  with its best follow-up (a step of two migrations), and only when the pair lowers FR;
* the ``beam_width`` best-scored children of all plans in the beam form the next beam (equal
  states once); ties, which are massive after the first few steps, are broken at random (seeded).

The best plan seen anywhere (by its exact FR) is the answer. A best-improvement greedy in count
space (exact FR, as :func:`agents.vm.heuristics.greedy_plan` picks, up to ties) runs first, so a
very short time limit still gets greedy's plan. Beam searches then run one after another with
widths 1, 4, ``beam_width``, then doubling up to ``max_width``, each with fresh tie draws, until
``time_limit_s`` runs out: a search ends when the budget is spent or ``patience`` steps found no new
best. The narrow dives matter: on the bundled snapshots the width-1 dive alone (a greedy that looks
one move ahead) already finds the best plan the wider searches find, in a fraction of the time.

Counting instead of naming VMs. VMs of one shape (span, CPU and memory usage) on the same host and
NUMA placement are interchangeable, so a search state holds only, per cluster, the free CPU and
memory of every NUMA node and the number of *interchangeable* VMs per ``(host, shape, placement)``.
A candidate migration is "one VM of shape ``k`` from ``(a, pa)`` to ``(b, pb)``", and all candidates
are scored with numpy over these counts. Where interchangeability breaks, VMs are handled one by
one with exact feasibility: non-migratable VMs only occupy capacity; members of anti-affinity
deployment sets are tracked individually, and their destinations exclude the hosts (racks) of the
set's other members, exactly as :meth:`digital_twin.vm.Cluster.check_migration` does. Capacity is
checked per NUMA node for CPU and memory, for both placements of a one-NUMA VM and the fixed split
of a two-NUMA VM. At the end the counted moves are named (any VM of the group) and the plan is
replayed through the twin by :func:`agents.vm.plan.finish_plan`.

Scoring in two stages, per plan in the beam. Stage 1 ranks *all* candidates by a cheap estimate:
a move's FR change is separable (source-host term + destination-host term), and the best follow-up
touching its source host (or its destination host) depends on that host alone, so the estimate
splits into per-item terms, and the best ``candidates_per_shape`` of each term per shape are paired.
Stage 2 computes the exact best follow-up for the ``candidates`` best estimates: the two hosts the
move touches are re-evaluated for every shape, and the rest of the cluster enters through the
per-shape best source and destination hosts of the parent state. Follow-ups are moves of
interchangeable VMs (anti-affinity members move only as the first move of a step), and the
follow-up term ignores a change of the FR denominator (it changes only when a VM leaves a host
under maintenance); the FR reported for a plan is always exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import numpy as np

from agents.vm.plan import Move, PlanResult, finish_plan
from digital_twin.vm import Cluster, Snapshot
from digital_twin.vm.cluster import fleet_fragment_sums

DEFAULT_TIME_LIMIT_S = 1.0
"""Wall-clock seconds :func:`beam_plan` searches for when ``time_limit_s`` is None."""

_TOP = 4  # best hosts kept per shape: enough to exclude the two hosts a move touches and still pair two
_EPS = 1e-12
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------- static data and state
class _Static:
    """What planning on one cluster needs: shapes' usage, hosts, VM groups, and the host-state cache.

    Shapes:
        use_cpu, use_mem: (K, P, 2) node usage of shape ``k`` in placement ``p``
        place_ok: (K, P); active: (H,); group_key: (H, K, P); con_key: (C, H, P)
    """

    def __init__(self, cluster: Cluster, size: int, rng: np.random.Generator):
        self.cluster = cluster
        self.size = size
        # x mod size; a bit mask when size is a power of two (two's complement makes it exact for x < 0 too).
        self.mod = (lambda x: x & (size - 1)) if size & (size - 1) == 0 else (lambda x: x % size)
        num_shapes, num_hosts = len(cluster.shape_span), cluster.num_hosts
        cpu, mem = cluster.shape_cpu, cluster.shape_mem
        self.use_cpu = np.stack([cpu, cpu[:, ::-1]], axis=1)
        self.use_mem = np.stack([mem, mem[:, ::-1]], axis=1)
        self.place_ok = np.stack([np.ones(num_shapes, dtype=bool), cluster.shape_span == 1], axis=1)
        self.shape_total_cpu = cpu.sum(axis=1)
        self.active = cluster.host_active.copy()
        self.rack = cluster.host_rack
        in_set = np.zeros(cluster.num_vms, dtype=bool)
        for dset in cluster.deployment_sets:
            in_set[dset.members] = True
        movable = cluster.vm_allow_migration
        # Interchangeable VMs are counted per (host, shape, placement); set members are tracked one by one.
        self.group_vm = movable & ~in_set
        self.con_vm = np.flatnonzero(movable & in_set)
        self.con_shape = cluster.vm_shape[self.con_vm]
        position = np.full(cluster.num_vms, -1, dtype=np.int64)
        position[self.con_vm] = np.arange(len(self.con_vm))
        # Per set: rack granularity?, tracked members (positions), hosts of the frozen members.
        self.sets = []
        for dset in cluster.deployment_sets:
            pos = position[dset.members]
            frozen_hosts = cluster.vm_host[dset.members[pos < 0]]
            self.sets.append((dset.granularity == "rack", pos[pos >= 0], frozen_hosts))
        self.num_shapes, self.num_hosts = num_shapes, num_hosts
        # Zobrist keys: a state's key is the (wrapping) sum of its VMs' keys, so a beam holds each state once.
        self.group_key = rng.integers(0, 2**63, size=(num_hosts, num_shapes, 2), dtype=np.int64).astype(np.uint64)
        self.con_key = rng.integers(0, 2**63, size=(len(self.con_vm), num_hosts, 2), dtype=np.int64).astype(np.uint64)
        self.states = _HostStates(self)
        self.next_version = num_hosts

    def initial(self) -> "_ClusterState":
        c = self.cluster
        g = self.group_vm
        cnt = np.zeros((self.num_hosts, self.num_shapes, 2), dtype=np.int64)
        np.add.at(cnt, (c.vm_host[g], c.vm_shape[g], c.vm_placement[g]), 1)
        return _ClusterState(c.free_cpu.copy(), c.free_mem.copy(), cnt,
                             c.vm_host[self.con_vm].copy(), c.vm_placement[self.con_vm].copy(),
                             self.states.ids(c.free_cpu, c.free_mem, np.arange(self.num_hosts)),
                             np.arange(self.num_hosts))

    def key(self, cs: "_ClusterState") -> int:
        """The state key of one cluster (a Python int below 2**64)."""
        total = int((cs.cnt.astype(np.uint64) * self.group_key).sum(dtype=np.uint64))
        if len(self.con_vm):
            total += int(self.con_key[np.arange(len(self.con_vm)), cs.con_host, cs.con_place].sum(dtype=np.uint64))
        return total & _MASK64

    def move_keys(self, con, k, a, pa, b, pb) -> np.ndarray:
        """(n,) uint64: how each move changes the state key (wrapping)."""
        con_key = self.con_key if len(self.con_vm) else np.zeros((1, self.num_hosts, 2), dtype=np.uint64)
        tracked = con >= 0
        v = np.where(tracked, con, 0)
        into = np.where(tracked, con_key[v, b, pb], self.group_key[b, k, pb])
        out = np.where(tracked, con_key[v, a, pa], self.group_key[a, k, pa])
        return into - out


class _ClusterState(NamedTuple):
    """One cluster in a search state.

    Shapes:
        free_cpu, free_mem: (H, 2); cnt: (H, K, P) interchangeable VMs; con_host, con_place: (C,);
        host_state: (H,) id of each host's state in the cluster's :class:`_HostStates`;
        host_version: (H,) changes whenever the host's VMs do (equal versions: equal hosts)
    """

    free_cpu: np.ndarray
    free_mem: np.ndarray
    cnt: np.ndarray
    con_host: np.ndarray
    con_place: np.ndarray
    host_state: np.ndarray
    host_version: np.ndarray


class _Step(NamedTuple):
    """One migration: cluster ``ci``, a VM of shape ``k`` from ``(a, pa)`` to ``(b, pb)``.

    ``con`` is the tracked (anti-affinity) VM's position, or -1 for any interchangeable VM.
    """

    ci: int
    con: int
    k: int
    a: int
    pa: int
    b: int
    pb: int


@dataclass
class _State:
    clusters: list[_ClusterState]
    frag: int
    free: int
    moves: tuple[_Step, ...]
    key: np.uint64

    def fr(self) -> float:
        return self.frag / self.free if self.free else 0.0


def _better(a: _State, b: _State) -> bool:
    """Lower exact FR (integer cross-multiplication), then fewer moves."""
    left, right = a.frag * b.free, b.frag * a.free
    return left < right or (left == right and len(a.moves) < len(b.moves))


# ---------------------------------------------------------------------- per-host what-if
def _host_columns(st: _Static, free_cpu: np.ndarray, free_mem: np.ndarray,
                  active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FR-numerator change of taking one VM of each shape off, or putting one on, some hosts.

    Args:
        st: the cluster's static data.
        free_cpu, free_mem: (..., 2) free capacity of the hosts (real or hypothetical).
        active: (...) whether each host counts in FR and accepts VMs.

    Returns:
        ``(remove, add)``, each (..., K, P) float: the change of ``sum(free mod size)`` when a VM
        of shape ``k`` in placement ``p`` leaves / arrives; ``add`` is inf where it does not fit.
    """
    counted = active[..., None, None]
    mod = st.mod
    remove = np.zeros(free_cpu.shape[:-1] + st.place_ok.shape, dtype=np.int64)
    add = np.zeros_like(remove)
    fits = st.place_ok & counted
    # Node by node: numpy reductions over a length-2 axis cost more than the arithmetic.
    for node in (0, 1):
        f = free_cpu[..., node, None, None]
        use = st.use_cpu[:, :, node]
        base = mod(f)
        remove += mod(f + use) - base
        after = f - use
        add += mod(after) - base
        fits = fits & (after >= 0) & (free_mem[..., node, None, None] >= st.use_mem[:, :, node])
    return np.where(counted, remove, 0).astype(np.float64), np.where(fits, add, np.inf)


class _HostStates:
    """The distinct host states of one cluster met by the search, and their what-if columns.

    A host's state is its free CPU and memory per node and whether it is active; its what-if
    (:func:`_host_columns`), and that of the state one VM of any shape and placement leaves it in
    when it leaves or arrives, depend on nothing else. Real clusters hold few distinct states (tens
    for hundreds of hosts) and a migration makes at most two new ones, so the search looks columns
    up by state id instead of recomputing them.

    Shapes (N states):
        remove, add: (N, K, P) the state's own columns;
        left_remove, left_add: (N, K, P, K, P) columns of the state after a VM ``(k, p)`` left;
        came_remove, came_add: (N, K, P, K, P) columns after a VM ``(k, p)`` arrived
        (meaningless where it does not fit).
    """

    _TABLES = ("remove", "add", "left_remove", "left_add", "came_remove", "came_add")

    def __init__(self, st: _Static):
        self.st = st
        self.index: dict[bytes, int] = {}
        self.size = 0
        self.pending: list[tuple[np.ndarray, np.ndarray, bool]] = []
        k, p = st.place_ok.shape
        self.remove = self.add = np.zeros((0, k, p), dtype=np.float32)
        after = np.zeros((0, k, p, k, p), dtype=np.float32)
        self.left_remove = self.left_add = self.came_remove = self.came_add = after

    def ids(self, free_cpu: np.ndarray, free_mem: np.ndarray, hosts: np.ndarray) -> np.ndarray:
        """(n,) state ids of hosts ``hosts`` with these (n, 2) free capacities; new states are queued."""
        out = np.empty(len(hosts), dtype=np.int64)
        active = self.st.active
        for i, (cpu, mem, host) in enumerate(zip(free_cpu, free_mem, hosts.tolist())):
            key = cpu.tobytes() + mem.tobytes() + (b"1" if active[host] else b"0")
            found = self.index.get(key)
            if found is None:
                found = self.index[key] = self.size + len(self.pending)
                self.pending.append((cpu.copy(), mem.copy(), bool(active[host])))
            out[i] = found
        return out

    def flush(self) -> None:
        """Compute the columns of the queued states (all at once)."""
        if not self.pending:
            return
        st = self.st
        cpu = np.stack([q[0] for q in self.pending])
        mem = np.stack([q[1] for q in self.pending])
        act = np.array([q[2] for q in self.pending])
        self.pending = []
        remove, add = _host_columns(st, cpu, mem, act)
        grid = (slice(None), None, None)
        left_remove, left_add = _host_columns(st, cpu[grid] + st.use_cpu, mem[grid] + st.use_mem, act[grid])
        came_remove, came_add = _host_columns(st, cpu[grid] - st.use_cpu, mem[grid] - st.use_mem, act[grid])
        new = dict(remove=remove, add=add, left_remove=left_remove, left_add=left_add,
                   came_remove=came_remove, came_add=came_add)
        end = self.size + len(cpu)
        if end > len(self.remove):  # grow by doubling: appending row blocks would copy the tables each time
            capacity = max(2 * len(self.remove), end, 64)
            for name in self._TABLES:
                old = getattr(self, name)
                grown = np.empty((capacity,) + old.shape[1:], dtype=np.float32)
                grown[: self.size] = old[: self.size]
                setattr(self, name, grown)
        for name in self._TABLES:
            getattr(self, name)[self.size:end] = new[name]
        self.size = end


class _Beam(NamedTuple):
    """One cluster in every state of (a chunk of) the beam, stacked.

    Shapes:
        free_cpu, free_mem: (S, H, 2); cnt: (S, H, K, P); con_host, con_place: (S, C);
        host_state, host_version: (S, H)
    """

    free_cpu: np.ndarray
    free_mem: np.ndarray
    cnt: np.ndarray
    con_host: np.ndarray
    con_place: np.ndarray
    host_state: np.ndarray
    host_version: np.ndarray


def _stack(states: list[_State], ci: int) -> _Beam:
    return _Beam(*(np.stack([s.clusters[ci][f] for s in states]) for f in range(len(_Beam._fields))))


class _Tables(NamedTuple):
    """One cluster's single-move what-if in every state of a beam chunk.

    Shapes:
        remove_raw, src, dst: (S, H, K, P); src/dst_top_val/host/place: (S, K, T);
        src/dst_excl: (S, K, H); best: (S,); con_src: (S, C); con_dst: (S, C, H, P)
    """

    remove_raw: np.ndarray  # change at the source, whether or not a VM is there
    src: np.ndarray  # remove_raw where an interchangeable VM is there, else inf
    dst: np.ndarray  # change at the destination, inf where it does not fit
    src_top_val: np.ndarray  # per shape, the best source hosts ...
    src_top_host: np.ndarray
    src_top_place: np.ndarray
    dst_top_val: np.ndarray  # ... and destination hosts
    dst_top_host: np.ndarray
    dst_top_place: np.ndarray
    src_excl: np.ndarray  # best source value of each shape on any host but this one
    dst_excl: np.ndarray
    best: np.ndarray  # best single move's change (interchangeable or tracked VMs), inf if none
    con_src: np.ndarray
    con_dst: np.ndarray  # destination change of each tracked VM, inf where infeasible


def _top_hosts(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per state and shape the ``top`` smallest of ``values`` (S, H, K, P) over hosts.

    Returns:
        ``(value, host, placement)``, each (S, K, top), best first; padded with ``(inf, -1, 0)``.
    """
    per_host = np.minimum(values[..., 0], values[..., 1]).transpose(0, 2, 1)  # (S, K, H)
    place = (values[..., 1] < values[..., 0]).transpose(0, 2, 1)
    num_hosts = per_host.shape[-1]
    if num_hosts > top:
        idx = np.argpartition(per_host, top - 1, axis=-1)[..., :top]
    else:
        idx = np.broadcast_to(np.arange(num_hosts), per_host.shape)
    val = np.take_along_axis(per_host, idx, axis=-1)
    order = np.argsort(val, axis=-1, kind="stable")
    idx, val = np.take_along_axis(idx, order, axis=-1), np.take_along_axis(val, order, axis=-1)
    plc = np.take_along_axis(place, idx, axis=-1).astype(np.int64)
    if val.shape[-1] < top:  # fewer hosts than kept entries
        pad = ((0, 0), (0, 0), (0, top - val.shape[-1]))
        val = np.pad(val, pad, constant_values=np.inf)
        idx = np.pad(idx, pad, constant_values=-1)
        plc = np.pad(plc, pad)
    return val, idx, plc


def _best_pair(src_val, src_host, dst_val, dst_host) -> tuple[np.ndarray, np.ndarray]:
    """Best source + destination entry of one shape on different hosts.

    Args:
        src_val, src_host: (..., K, A) candidate sources per shape.
        dst_val, dst_host: (..., K, B) candidate destinations per shape.

    Returns:
        ``(value, flat index into (K, A, B))``, each (...,).
    """
    pair = src_val[..., :, None] + dst_val[..., None, :]
    pair = np.where(src_host[..., :, None] == dst_host[..., None, :], np.inf, pair)
    flat = pair.reshape(pair.shape[:-3] + (-1,))
    idx = flat.argmin(axis=-1)
    return np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0], idx


def _anti_affinity_blocked(st: _Static, beam: _Beam) -> np.ndarray:
    """(S, C, H) bool: hosts each tracked VM may not go to, because of its deployment sets."""
    num_states = len(beam.con_host)
    blocked = np.zeros((num_states, len(st.con_vm), st.num_hosts), dtype=bool)
    for by_rack, members, frozen_hosts in st.sets:
        if not len(members):
            continue
        where = st.rack if by_rack else np.arange(st.num_hosts)
        size = int(where.max()) + 1
        hosts = np.concatenate([beam.con_host[:, members],
                                np.broadcast_to(frozen_hosts, (num_states, len(frozen_hosts)))], axis=1)
        codes = (np.arange(num_states)[:, None] * size + where[hosts]).ravel()
        occupied = np.bincount(codes, minlength=num_states * size).reshape(num_states, size)
        # A member is blocked from a host (rack) that holds any *other* member: subtract itself.
        own = where[beam.con_host[:, members]]
        others = occupied[:, where][:, None, :] - (where[None, None, :] == own[:, :, None])
        blocked[:, members] |= others > 0
    return blocked


def _tables(st: _Static, beam: _Beam) -> _Tables:
    num_states = len(beam.cnt)
    remove_raw, dst = st.states.remove[beam.host_state], st.states.add[beam.host_state]
    src = np.where(beam.cnt > 0, remove_raw, np.inf)
    s_val, s_host, s_place = _top_hosts(src, _TOP)
    d_val, d_host, d_place = _top_hosts(dst, _TOP)
    hosts = np.arange(st.num_hosts)
    src_excl = np.where(s_host[..., :1] == hosts, s_val[..., 1:2], s_val[..., :1])
    dst_excl = np.where(d_host[..., :1] == hosts, d_val[..., 1:2], d_val[..., :1])
    best = _best_pair(s_val, s_host, d_val, d_host)[0] if st.num_shapes else np.full(num_states, np.inf)
    num_con = len(st.con_vm)
    if num_con:
        rows, cols = np.arange(num_states)[:, None], np.arange(num_con)[None, :]
        con_src = remove_raw[rows, beam.con_host, st.con_shape[None, :], beam.con_place]
        con_dst = dst[:, :, st.con_shape, :].transpose(0, 2, 1, 3).copy()
        con_dst[rows, cols, beam.con_host] = np.inf  # its own host
        con_dst[_anti_affinity_blocked(st, beam)] = np.inf
        best = np.minimum(best, (con_src[..., None, None] + con_dst).min(axis=(1, 2, 3)))
    else:
        con_src = np.zeros((num_states, 0))
        con_dst = np.zeros((num_states, 0, st.num_hosts, 2))
    return _Tables(remove_raw, src, dst, s_val, s_host, s_place, d_val, d_host, d_place,
                   src_excl, dst_excl, best, con_src, con_dst)


# ---------------------------------------------------------------------- stage 1: estimates for all candidates
class _Candidates(NamedTuple):
    """Candidate first moves (state ``s`` of the chunk, tracked VM ``con`` or -1, shape, from, to)."""

    s: np.ndarray
    con: np.ndarray
    k: np.ndarray
    a: np.ndarray
    pa: np.ndarray
    b: np.ndarray
    pb: np.ndarray
    delta: np.ndarray  # the move's own FR-numerator change
    estimate: np.ndarray  # delta + best follow-up (estimated)


def _concat(x: _Candidates, y: _Candidates) -> _Candidates:
    return _Candidates(*(np.concatenate([p, q]) for p, q in zip(x, y)))


def _take(c: _Candidates, idx: np.ndarray) -> _Candidates:
    return _Candidates(*(f[idx] for f in c))


_NO_CANDIDATES = _Candidates(*([np.zeros(0, dtype=np.int64)] * 7 + [np.zeros(0)] * 2))


def _gain_tables(st: _Static, beam: _Beam, tab: _Tables, leaving: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best follow-up per shape out of and into a host after one VM ``(k, p)`` left (arrived), per distinct host.

    The beam's states share most hosts (equal ``host_version``), so each distinct host is evaluated
    once for the whole chunk.

    Returns:
        ``(which, out, into)``: (S, H) index of each host's distinct version; (U, K, P, K) the best
        change, per follow-up shape, of moving a VM off the host (``out``, to be completed by a
        destination elsewhere) and onto it (``into``); inf where impossible.
    """
    num_hosts = st.num_hosts
    _, first, which = np.unique(beam.host_version, return_index=True, return_inverse=True)
    which = which.reshape(beam.host_version.shape)
    rep_s, rep_h = np.divmod(first, num_hosts)
    cnt = beam.cnt[rep_s, rep_h]  # (U, K, P)
    mask = cnt > 0 if leaving else np.isfinite(tab.dst[rep_s, rep_h])
    u, k, p = np.nonzero(mask)
    ids = beam.host_state[rep_s[u], rep_h[u]]
    present = cnt[u] > 0
    rows = np.arange(len(u))
    hs = st.states
    if leaving:
        present[rows, k, p] = cnt[u, k, p] > 1
        remove, add = hs.left_remove[ids, k, p], hs.left_add[ids, k, p]
    else:
        present[rows, k, p] = True
        remove, add = hs.came_remove[ids, k, p], hs.came_add[ids, k, p]
    out_full = np.full(mask.shape + (st.num_shapes,), np.inf, dtype=np.float32)
    into_full = np.full_like(out_full, np.inf)
    out = np.where(present, remove, np.inf)
    out_full[u, k, p] = np.minimum(out[..., 0], out[..., 1])
    into_full[u, k, p] = np.minimum(add[..., 0], add[..., 1])
    return which, out_full, into_full


def _follow_gain(tab: _Tables, s: np.ndarray, hosts: np.ndarray, out: np.ndarray, into: np.ndarray) -> np.ndarray:
    """Best follow-up out of or into a changed host, against the rest of its state as it is.

    Args:
        s, hosts: (n,) state and changed host.
        out, into: (n, K) per follow-up shape, the best change at the host of a VM leaving / arriving.

    Returns:
        (n,) the best such follow-up's change of the FR numerator (inf if none).
    """
    return np.minimum((out + tab.dst_excl[s, :, hosts]).min(axis=1), (into + tab.src_excl[s, :, hosts]).min(axis=1))


def _top_per_group(group: np.ndarray, value: np.ndarray, noise: np.ndarray, limit: int,
                   integral: bool = True) -> np.ndarray:
    """Indices of the ``limit`` smallest finite values of each group, ties in random order.

    Args:
        group, value, noise: (n,) group ids (non-negative), values, tie-breaking draws in [0, 1).
        limit: how many to keep per group.
        integral: the values are integers, so one sort on ``group, value + noise / 2`` orders them
            (a three-key lexsort costs several times more).
    """
    finite = np.flatnonzero(np.isfinite(value))
    group, value, noise = group[finite], value[finite], noise[finite]
    if integral and len(value):
        low = value.min()
        span = value.max() - low + 1.0
        order = np.argsort(group * span + (value - low) + 0.5 * noise)
    else:
        order = np.lexsort((noise, value, group))
    g = group[order]
    counts = np.bincount(g) if len(g) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(g)) - (np.cumsum(counts) - counts)[g]
    return finite[order[rank < limit]]


def _pairs_by_group(src: np.ndarray, src_group: np.ndarray, dst: np.ndarray, dst_group: np.ndarray,
                    num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``(i, j)`` of ``src`` x ``dst`` in the same group."""
    order = np.argsort(dst_group, kind="stable")
    dst, dst_group = dst[order], dst_group[order]
    counts = np.bincount(dst_group, minlength=num_groups)
    starts = np.cumsum(counts) - counts
    per_src = counts[src_group]
    ends = np.cumsum(per_src)
    offsets = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - per_src, per_src)
    return np.repeat(src, per_src), dst[np.repeat(starts[src_group], per_src) + offsets]


def _stage1(st: _Static, beam: _Beam, tab: _Tables, alone: np.ndarray, per_shape: int,
            rng: np.random.Generator) -> _Candidates:
    """Estimate every candidate move's score in every state and keep the promising ones.

    The estimate is ``s + d + min(alone, gain_a, gain_b)``: the move's source and destination
    terms, and the best of no interacting follow-up, one touching the source host, one touching the
    destination host. Each branch is a separable sum, so its best pairs are among the best
    ``per_shape`` items of each side per state and shape.
    """
    num_shapes = st.num_shapes
    s_i, a, k_src, pa = np.nonzero(beam.cnt > 0)
    s_j, b, k_dst, pb = np.nonzero(np.isfinite(tab.dst))
    if not len(b):
        return _NO_CANDIDATES
    s_val = tab.src[s_i, a, k_src, pa]
    d_val = tab.dst[s_j, b, k_dst, pb]
    which, out, into = _gain_tables(st, beam, tab, leaving=True)
    v = which[s_i, a]
    gain_a = _follow_gain(tab, s_i, a, out[v, k_src, pa], into[v, k_src, pa])
    which, out, into = _gain_tables(st, beam, tab, leaving=False)
    v = which[s_j, b]
    gain_b = _follow_gain(tab, s_j, b, out[v, k_dst, pb], into[v, k_dst, pb])
    group_a, group_b = s_i * num_shapes + k_src, s_j * num_shapes + k_dst
    noise_a, noise_b = rng.random(len(a)), rng.random(len(b))
    lefts, rights = [], []
    best_s = _top_per_group(group_a, s_val, noise_a, per_shape)
    best_d = _top_per_group(group_b, d_val, noise_b, per_shape)
    for left, right in ((best_s, best_d), (_top_per_group(group_a, s_val + gain_a, noise_a, per_shape), best_d),
                        (best_s, _top_per_group(group_b, d_val + gain_b, noise_b, per_shape))):
        i, j = _pairs_by_group(left, group_a[left], right, group_b[right], len(beam.cnt) * num_shapes)
        lefts.append(i)
        rights.append(j)
    pair = np.unique(np.concatenate(lefts) * len(b) + np.concatenate(rights))
    i, j = pair // len(b), pair % len(b)
    keep = a[i] != b[j]
    i, j = i[keep], j[keep]
    delta = s_val[i] + d_val[j]
    estimate = delta + np.minimum(alone[s_i[i]], np.minimum(gain_a[i], gain_b[j]))
    cands = _Candidates(s_i[i], np.full(len(i), -1, dtype=np.int64), k_src[i], a[i], pa[i], b[j], pb[j],
                        delta, estimate)
    if len(st.con_vm):
        gain_dst = np.full(tab.dst.shape, np.inf)
        gain_dst[s_j, b, k_dst, pb] = gain_b
        cands = _concat(cands, _stage1_tracked(st, beam, tab, alone, gain_dst, per_shape, rng))
    return cands


def _stage1_tracked(st: _Static, beam: _Beam, tab: _Tables, alone: np.ndarray, gain_dst: np.ndarray,
                    per_shape: int, rng: np.random.Generator) -> _Candidates:
    """Candidate moves of the tracked (anti-affinity) VMs, over their exactly feasible destinations."""
    num_states, num_con = beam.con_host.shape
    sv = np.repeat(np.arange(num_states), num_con)
    host, place = beam.con_host.ravel(), beam.con_place.ravel()
    shape = st.con_shape[np.tile(np.arange(num_con), num_states)]
    ids = beam.host_state[sv, host]
    # A tracked VM is not among the counted ones: the host's counts stay as they are.
    out = np.where(beam.cnt[sv, host] > 0, st.states.left_remove[ids, shape, place], np.inf)
    add = st.states.left_add[ids, shape, place]
    gain_a = _follow_gain(tab, sv, host, np.minimum(out[..., 0], out[..., 1]), np.minimum(add[..., 0], add[..., 1]))
    gain_a = gain_a.reshape(num_states, num_con)
    s, v, dh, dp = np.nonzero(np.isfinite(tab.con_dst))
    shape_v = st.con_shape[v]
    delta = tab.con_src[s, v] + tab.con_dst[s, v, dh, dp]
    estimate = delta + np.minimum(alone[s], np.minimum(gain_a[s, v], gain_dst[s, dh, shape_v, dp]))
    keep = _top_per_group(s * st.num_shapes + shape_v, estimate, rng.random(len(v)), per_shape * per_shape)
    s, v = s[keep], v[keep]  # per state and shape, as many as the interchangeable pairs of stage 1
    return _Candidates(s, v, shape_v[keep], beam.con_host[s, v], beam.con_place[s, v], dh[keep], dp[keep],
                       delta[keep], estimate[keep])


# ---------------------------------------------------------------------- stage 2: exact best follow-up
def _stage2(st: _Static, beam: _Beam, tab: _Tables, c: _Candidates) -> tuple[np.ndarray, np.ndarray]:
    """The exact best follow-up (an interchangeable VM) in each candidate's child state.

    Only the move's two hosts change, so they are re-evaluated for every shape; every other host
    enters through the parent's best hosts per shape, less the two touched ones.

    Returns:
        ``(value, follow)``: (n,) the follow-up's FR-numerator change (inf if none) and (n, 5) int
        ``(k, from host, from placement, to host, to placement)``.
    """
    n = len(c.k)
    rows = np.arange(n)
    group = (c.con < 0).astype(np.int64)
    cnt_a, cnt_b = beam.cnt[c.s, c.a], beam.cnt[c.s, c.b]
    cnt_a[rows, c.k, c.pa] -= group
    cnt_b[rows, c.k, c.pb] += group
    hs = st.states
    id_a, id_b = beam.host_state[c.s, c.a], beam.host_state[c.s, c.b]
    remove = np.concatenate([hs.left_remove[id_a, c.k, c.pa], hs.came_remove[id_b, c.k, c.pb]])
    add = np.concatenate([hs.left_add[id_a, c.k, c.pa], hs.came_add[id_b, c.k, c.pb]])
    src_new = np.where(np.concatenate([cnt_a, cnt_b]) > 0, remove, np.inf)  # (2n, K, P)
    ab = np.stack([c.a, c.b], axis=1)[:, None, :]
    num_shapes = st.num_shapes

    def entries(top_val, top_host, top_place, new):
        """Per candidate and shape: the parent's best hosts other than a and b, then a and b now."""
        top_val, top_host, top_place = top_val[c.s], top_host[c.s], top_place[c.s]  # (n, K, T)
        touched = (top_host == c.a[:, None, None]) | (top_host == c.b[:, None, None])
        new_val = np.minimum(new[..., 0], new[..., 1]).reshape(2, n, num_shapes).transpose(1, 2, 0)
        new_place = (new[..., 1] < new[..., 0]).reshape(2, n, num_shapes).transpose(1, 2, 0)
        val = np.concatenate([np.where(touched, np.inf, top_val), new_val], axis=2)
        host = np.concatenate([top_host, np.broadcast_to(ab, new_val.shape)], axis=2)
        place = np.concatenate([top_place, new_place.astype(np.int64)], axis=2)
        return val, host, place

    s_val, s_host, s_place = entries(tab.src_top_val, tab.src_top_host, tab.src_top_place, src_new)
    d_val, d_host, d_place = entries(tab.dst_top_val, tab.dst_top_host, tab.dst_top_place, add)
    value, flat = _best_pair(s_val, s_host, d_val, d_host)
    width = s_val.shape[2]
    k2, rest = np.divmod(flat, width * width)
    si, di = np.divmod(rest, width)
    follow = np.stack([k2, s_host[rows, k2, si], s_place[rows, k2, si],
                       d_host[rows, k2, di], d_place[rows, k2, di]], axis=1)
    return value, follow


# ---------------------------------------------------------------------- applying steps
def _apply(st: _Static, cs: _ClusterState, steps: tuple[_Step, ...]) -> tuple[_ClusterState, int, int]:
    """The cluster after ``steps`` (a copy), and the change of FR's numerator and denominator."""
    free_cpu, free_mem = cs.free_cpu.copy(), cs.free_mem.copy()
    cnt, con_host, con_place = cs.cnt, cs.con_host, cs.con_place
    if any(s.con < 0 for s in steps):
        cnt = cnt.copy()
    if any(s.con >= 0 for s in steps):
        con_host, con_place = con_host.copy(), con_place.copy()
    d_frag = d_free = 0
    for s in steps:
        hosts = [s.a, s.b]
        counted = st.active[hosts][:, None]
        before = free_cpu[hosts]
        # The twin's order of float operations (source first), so free memory stays bit-identical.
        free_cpu[s.a] += st.use_cpu[s.k, s.pa]
        free_mem[s.a] += st.use_mem[s.k, s.pa]
        free_cpu[s.b] -= st.use_cpu[s.k, s.pb]
        free_mem[s.b] -= st.use_mem[s.k, s.pb]
        after = free_cpu[hosts]
        d_frag += int(((st.mod(after) - st.mod(before)) * counted).sum())
        d_free += int(((after - before) * counted).sum())
        if s.con < 0:
            cnt[s.a, s.k, s.pa] -= 1
            cnt[s.b, s.k, s.pb] += 1
        else:
            con_host[s.con], con_place[s.con] = s.b, s.pb
    host_state = cs.host_state.copy()
    touched = np.unique([h for s in steps for h in (s.a, s.b)])
    host_state[touched] = st.states.ids(free_cpu[touched], free_mem[touched], touched)
    host_version = cs.host_version.copy()
    host_version[touched] = st.next_version + np.arange(len(touched))
    st.next_version += len(touched)
    return _ClusterState(free_cpu, free_mem, cnt, con_host, con_place, host_state, host_version), d_frag, d_free


def _greedy_choice(st: _Static, beam: _Beam, tab: _Tables, frag: int, free: int, vm_host: np.ndarray,
                   vm_place: np.ndarray) -> tuple[float, int, _Step] | None:
    """The migration best-improvement greedy makes next in this cluster (a one-state beam).

    The lowest exact FR, ties broken as :func:`agents.vm.heuristics.greedy_migrations` breaks them
    (its argmin over ``(vm, host, placement)``: the lowest VM index, then host, then placement), so
    the count-space greedy follows the twin's greedy move for move.

    Args:
        vm_host, vm_place: (V,) where each VM of the cluster is in this state.

    Returns:
        ``(FR after, vm, step)`` (``step.ci`` is 0: the caller sets it), or None when nothing can move.
    """
    num_vms = len(vm_host)
    s, a, k, pa = np.nonzero(beam.cnt > 0)
    value = tab.src[s, a, k, pa] + tab.dst_excl[s, k, a]
    # The FR after, as the twin's greedy computes it: (frag + change) / (free + change of free).
    fr = (frag + value) / np.maximum(free + np.where(st.active[a], 0, -st.shape_total_cpu[k]), 1)
    v, h, p = np.nonzero(np.isfinite(tab.con_dst[0]))
    con_host = beam.con_host[0, v]
    con_value = tab.con_src[0, v] + tab.con_dst[0, v, h, p]
    con_free = free + np.where(st.active[con_host], 0, -st.shape_total_cpu[st.con_shape[v]])
    con_fr = (frag + con_value) / np.maximum(con_free, 1)
    low = min(fr.min(initial=np.inf), con_fr.min(initial=np.inf))
    if not np.isfinite(low):
        return None
    group = np.flatnonzero(st.group_vm)
    lowest = np.full(beam.cnt.shape[1:], num_vms, dtype=np.int64)  # lowest VM index per (host, shape, placement)
    np.minimum.at(lowest, (vm_host[group], st.cluster.vm_shape[group], vm_place[group]), group)
    tied = np.concatenate([lowest[a[fr == low], k[fr == low], pa[fr == low]], st.con_vm[v[con_fr == low]]])
    vm = int(tied.min())
    position = np.flatnonzero(st.con_vm == vm)
    if len(position):  # a tracked VM: its own destinations
        con = int(position[0])
        row = tab.con_src[0, con] + tab.con_dst[0, con]  # one VM: one denominator, so the lowest change
        options = row == row.min()
        kk, src, src_place = int(st.con_shape[con]), int(beam.con_host[0, con]), int(beam.con_place[0, con])
    else:
        con = -1
        kk, src, src_place = int(st.cluster.vm_shape[vm]), int(vm_host[vm]), int(vm_place[vm])
        options = tab.dst[0, :, kk, :] == tab.dst_excl[0, kk, src]
        options[src] = False
    dest, dest_place = (int(x) for x in np.argwhere(options)[0])  # the lowest host, then placement
    return float(low), vm, _Step(0, con, kk, src, src_place, dest, dest_place)


# ---------------------------------------------------------------------- the search
class _Children(NamedTuple):
    """Scored steps out of a beam chunk: parent, cluster, first move, optional follow-up, score, key."""

    parent: np.ndarray
    ci: np.ndarray
    first: np.ndarray  # (n, 6) con, k, a, pa, b, pb
    second: np.ndarray  # (n, 5) k, a, pa, b, pb; only where ``pair``
    pair: np.ndarray
    score: np.ndarray
    key: np.ndarray  # uint64 key of the child state


@dataclass
class _Search:
    statics: list[_Static]
    budget: int
    deadline: float
    candidates: int
    per_shape: int
    chunk: int = 16
    expansions: int = 0
    states: int = 0
    scored: int = 0
    last_s: dict = field(default_factory=dict)  # the last greedy step's / beam chunk's seconds, by kind

    def out_of_time(self, kind: str) -> bool:
        """Whether to stop before a step of ``kind`` ("greedy" or "chunk"): the limit is passed, or less than half
        the last such step's time is left (then stopping now ends nearer the limit than the step would, if it
        takes as long; the first of each kind always runs)."""
        left = self.deadline - time.perf_counter()
        return left < 0 or left < 0.5 * self.last_s.get(kind, 0.0)

    def timed(self, kind: str, t0: float) -> None:
        self.last_s[kind] = time.perf_counter() - t0

    def children(self, states: list[_State], offset: int, rng: np.random.Generator) -> _Children:
        """Score the steps out of ``states`` (a chunk of the beam starting at ``offset``), all at once."""
        for st in self.statics:
            st.states.flush()
        beams = [_stack(states, ci) for ci in range(len(self.statics))]
        tabs = [_tables(st, bm) for st, bm in zip(self.statics, beams)]
        bests = np.stack([t.best for t in tabs])  # (clusters, S)
        alone = np.minimum(0.0, bests.min(axis=0))
        frag = np.array([s.frag for s in states], dtype=np.float64)
        free = np.array([s.free for s in states], dtype=np.float64)
        fr = np.array([s.fr() for s in states])
        left = np.array([self.budget - len(s.moves) for s in states])
        keys = np.array([s.key for s in states], dtype=np.uint64)
        per_cluster = [_stage1(st, bm, tab, alone, self.per_shape, rng)
                       for st, bm, tab in zip(self.statics, beams, tabs)]
        sizes = [len(c.k) for c in per_cluster]
        cluster_of = np.repeat(np.arange(len(sizes)), sizes)
        cands = per_cluster[0]
        for c in per_cluster[1:]:
            cands = _concat(cands, c)
        # Keep each state's best estimates over all clusters, by FR (a move off a maintenance host
        # changes the denominator).
        d_free = np.concatenate([self._free_change(st, c) for st, c in zip(self.statics, per_cluster)])
        est_fr = (frag[cands.s] + cands.estimate) / np.maximum(free[cands.s] + d_free, 1)
        keep = _top_per_group(cands.s, est_fr, rng.random(len(est_fr)), self.candidates, integral=False)
        out = []
        for ci in np.unique(cluster_of[keep]).tolist():
            st, beam, tab = self.statics[ci], beams[ci], tabs[ci]
            c = _take(cands, np.sort(keep[cluster_of[keep] == ci]))
            self.scored += len(c.k)
            follow_val, follow = _stage2(st, beam, tab, c)
            others = np.delete(bests, ci, axis=0).min(axis=0) if len(bests) > 1 else np.full(len(states), np.inf)
            free1 = free[c.s] + self._free_change(st, c)
            frag1 = frag[c.s] + c.delta
            improving = frag1 * free[c.s] < frag[c.s] * free1  # exact: small integers in float64
            after = np.where(left[c.s] > 1, np.minimum(0.0, np.minimum(follow_val, others[c.s])), 0.0)
            score = (frag1 + after) / np.maximum(free1, 1)
            k2, a2, p2, b2, q2 = follow.T
            pair_free = free1 - np.where(st.active[np.maximum(a2, 0)], 0, st.shape_total_cpu[k2])
            pair_fr = (frag1 + follow_val) / np.maximum(pair_free, 1)
            pair = ~improving & np.isfinite(follow_val) & (pair_fr < fr[c.s] - _EPS) & (left[c.s] >= 2)
            ok = improving | pair
            key = keys[c.s] + st.move_keys(c.con, c.k, c.a, c.pa, c.b, c.pb)
            key2 = st.move_keys(np.full(len(k2), -1), k2, np.maximum(a2, 0), p2, np.maximum(b2, 0), q2)
            key = key + np.where(pair, key2, np.uint64(0))
            out.append(_Children(c.s[ok] + offset, np.full(int(ok.sum()), ci),
                                 np.stack([c.con, c.k, c.a, c.pa, c.b, c.pb], axis=1)[ok], follow[ok], pair[ok],
                                 np.where(improving, score, pair_fr)[ok], key[ok]))
        if not out:
            return _Children(*(np.zeros(0, dtype=np.int64),) * 2, np.zeros((0, 6), dtype=np.int64),
                             np.zeros((0, 5), dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0),
                             np.zeros(0, dtype=np.uint64))
        return _Children(*(np.concatenate(f) for f in zip(*out)))

    @staticmethod
    def _free_change(st: _Static, c: _Candidates) -> np.ndarray:
        """FR denominator change of each candidate: only a VM leaving a maintenance host changes it."""
        return np.where(st.active[c.a], 0, -st.shape_total_cpu[c.k])

    def greedy(self, root: _State, best: _State) -> tuple[_State, bool]:
        """Best-improvement greedy in count space, move for move as the twin's greedy: a quick first plan.

        Returns the best state seen and whether time ran out.
        """
        state = root
        where = [(st.cluster.vm_host.copy(), st.cluster.vm_placement.copy()) for st in self.statics]
        while len(state.moves) < self.budget:
            if self.out_of_time("greedy"):
                return best, True
            t0 = time.perf_counter()
            choice = None  # (FR after, cluster, vm, step); the first cluster wins ties, as in the twin's greedy
            for ci, st in enumerate(self.statics):
                st.states.flush()
                beam = _stack([state], ci)
                found = _greedy_choice(st, beam, _tables(st, beam), state.frag, state.free, *where[ci])
                if found is not None and (choice is None or found[0] < choice[0]):
                    choice = (found[0], ci, found[1], found[2]._replace(ci=ci))
            self.timed("greedy", t0)
            if choice is None or not choice[0] <= state.fr() - _EPS:
                break
            _, ci, vm, step = choice
            st = self.statics[ci]
            cs, d_frag, d_free = _apply(st, state.clusters[ci], (step,))
            where[ci][0][vm], where[ci][1][vm] = step.b, step.pb
            clusters = list(state.clusters)
            clusters[ci] = cs
            key = np.array([state.key], dtype=np.uint64) + st.move_keys(*(np.array([x]) for x in step[1:]))
            state = _State(clusters, state.frag + d_frag, state.free + d_free, state.moves + (step,), key[0])
            self.expansions += 1
            self.states += 1
            if _better(state, best):
                best = state
        return best, False

    def run(self, root: _State, width: int, patience: int, rng: np.random.Generator,
            best: _State) -> tuple[_State, bool]:
        """One beam search from ``root``; returns the best state seen and whether time ran out."""
        beam = [root]
        own_best = root
        stale = 0
        while beam:
            parents = [s for s in beam if len(s.moves) < self.budget]
            if not parents:
                break
            found = []
            for offset in range(0, len(parents), self.chunk):
                if self.out_of_time("chunk"):
                    return best, True
                t0 = time.perf_counter()
                found.append(self.children(parents[offset:offset + self.chunk], offset, rng))
                self.timed("chunk", t0)
            self.states += len(parents)
            self.expansions += 1
            kids = _Children(*(np.concatenate(f) for f in zip(*found)))
            if not len(kids.score):
                break
            order = np.lexsort((rng.random(len(kids.score)), kids.score))
            _, first = np.unique(kids.key[order], return_index=True)  # each state once, at its best score
            chosen = order[np.sort(first)[:width]]
            beam = []
            improved = False
            for r in chosen.tolist():
                ci = int(kids.ci[r])
                steps = (_Step(ci, *map(int, kids.first[r])),)
                if kids.pair[r]:
                    steps += (_Step(ci, -1, *map(int, kids.second[r])),)
                parent = parents[int(kids.parent[r])]
                cs, d_frag, d_free = _apply(self.statics[ci], parent.clusters[ci], steps)
                clusters = list(parent.clusters)
                clusters[ci] = cs
                child = _State(clusters, parent.frag + d_frag, parent.free + d_free, parent.moves + steps, kids.key[r])
                beam.append(child)
                if _better(child, own_best):  # patience counts this search's progress, not the overall best's
                    own_best, improved = child, True
                if _better(child, best):
                    best = child
            stale = 0 if improved else stale + 1
            if stale >= patience:
                break
        return best, False


def beam_plan(snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0, *,
              beam_width: int = 16, candidates: int = 32, candidates_per_shape: int = 8, patience: int = 3,
              max_width: int = 256, restarts: int | None = None, size: int = 16) -> PlanResult:
    """Beam search over migration sequences (see the module docstring).

    Args:
        snapshot: the snapshot (not modified).
        budget: maximum number of migrations (MNL); a VM moved twice counts twice.
        time_limit_s: wall-clock seconds to search; the best plan found so far is returned when it
            runs out. A greedy step or a chunk of beam states is not started when less than half
            the last one's time is left, so a search ends within about half a step of the limit (a
            step is ~1-30 ms on a few hundred hosts, ~0.1-0.4 s on 1,000 hosts with deployment
            sets, where the first step alone can pass a short limit). None means
            :data:`DEFAULT_TIME_LIMIT_S` (1 s).
        seed: seeds the tie-breaking draws. The plan is deterministic for a given seed when the
            searches end before the time limit (bound them with ``restarts``); otherwise it depends
            on how far the time let them get.
        beam_width: plans kept per step by the main search. Narrower dives (widths 1, 4, ...)
            come first, so that a short time limit still gets a whole plan; each later search
            doubles the width, up to ``max_width``.
        candidates: candidate first moves per plan whose follow-up is computed exactly (stage 2).
        candidates_per_shape: best items per state, shape and estimate branch paired in stage 1.
        patience: beam steps without a new best plan after which a search ends.
        max_width: the widest beam of a restart.
        restarts: beam searches after the first (None: as many as the time limit allows; -1: none,
            only the greedy start); with the default widths, ``restarts=2`` ends with one search at
            ``beam_width`` 16.
        size: fragment size in vCPU.

    Returns:
        The plan (status ``"HEURISTIC"``), replayed through the twin; ``stats`` holds ``expansions``
        (beam steps), ``states`` (plans expanded), ``scored`` (candidates scored exactly),
        ``searches``, ``best_search`` (the beam search that found the plan; -2: the greedy
        start, -1: nothing improved),
        ``widths``, ``time_s`` and ``seed``.
    """
    start = time.perf_counter()
    limit = DEFAULT_TIME_LIMIT_S if time_limit_s is None else float(time_limit_s)
    key_rng = np.random.default_rng([seed, 0x5EED])
    statics = [_Static(c, size, key_rng) for c in snapshot.clusters]
    frag, free = fleet_fragment_sums(snapshot.clusters, size)
    clusters = [st.initial() for st in statics]
    root = _State(clusters, frag, free, (), np.uint64(sum(st.key(cs) for st, cs in zip(statics, clusters)) & _MASK64))
    search = _Search(statics, budget, start + limit, candidates, candidates_per_shape)
    best, out_of_time = search.greedy(root, root) if budget > 0 else (root, False)
    widths, best_search = [], -1 if best is root else -2
    schedule = _widths(beam_width, max_width)
    run = 0
    while budget > 0 and not out_of_time and (restarts is None or run <= restarts):
        width = next(schedule)
        widths.append(width)
        found, out_of_time = search.run(root, width, patience, np.random.default_rng([seed, run]), best)
        if found is not best:
            best, best_search = found, run
        run += 1
        if out_of_time or time.perf_counter() > search.deadline:
            break
    moves = _name_moves(snapshot, statics, best.moves)
    stats = {"expansions": search.expansions, "states": search.states, "scored": search.scored,
             "searches": len(widths), "best_search": best_search, "widths": widths,
             "time_s": time.perf_counter() - start, "seed": seed}
    return finish_plan("beam", snapshot, budget, moves, best.fr(), start, stats=stats)


def _widths(beam_width: int, max_width: int) -> Iterator[int]:
    """Beam widths of successive searches: 1, 4, 16, ... below ``beam_width``, then ``beam_width``
    doubling up to ``max_width`` (repeated, with fresh tie draws, while time is left).

    The narrow dives finish a whole plan early, so a short time limit still gets a complete one.
    """
    width = 1
    while width < beam_width:
        yield width
        width *= 4
    width = beam_width
    while True:
        yield width
        width = min(max_width, 2 * width)


def _name_moves(snapshot: Snapshot, statics: list[_Static], steps: tuple[_Step, ...]) -> list[Move]:
    """Name the counted steps (any VM of the group) and check each with the twin on a copy."""
    snap = snapshot.copy()
    moves: list[Move] = []
    for s in steps:
        cluster, st = snap.clusters[s.ci], statics[s.ci]
        if s.con >= 0:
            vm = int(st.con_vm[s.con])
        else:
            group = st.group_vm & (cluster.vm_shape == s.k) & (cluster.vm_host == s.a) & (cluster.vm_placement == s.pa)
            vm = int(np.flatnonzero(group)[0])
        cluster.migrate(vm, s.b, s.pb)
        moves.append((s.ci, vm, s.b, s.pb))
    return moves
