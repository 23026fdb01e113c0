"""Training snapshots that look like the real VMR2L files without being them.

The two real VMR2L snapshots (``data/vmr2l_snapshots``) are evaluation data. The Azure V1 replays
(:mod:`digital_twin.vm.azure_replay`) have real churn but Azure's small flavours: about 30 VMs of
2 vCPU per host, none spanning two NUMA nodes, where the real files hold 1.4 to 8 VMs per host of
2 to 88 vCPU, 13 to 65 % of them over both nodes. This module keeps the Azure churn and swaps the
VM sizes:

* **Hosts.** The real files' host spec: every host of both files has two NUMA nodes of 44 vCPU and
  184,388 MB (:class:`~digital_twin.vm.azure_replay.HostSpec`'s default).
* **Types.** Each arriving VM gets an instance *shape* (type, 1 or 2 NUMA nodes) drawn from a
  :class:`TypeMix`: the share of each shape among the VMs of one real file (both clusters pooled).
  :data:`MIXES` holds the two files' published ``vm_type_list`` and those shares (counts, derived
  once with :func:`type_mix_from_snapshot`; the test suite re-derives them). Only the distribution
  is used, never a placement. ``"clear2"``: 2 GiB per vCPU, mostly 2 to 8 vCPU; ``"clear_big2"``:
  4 GiB per vCPU, more 32 to 88 vCPU VMs.
* **Churn.** Arrival times, tenant batches and lifetimes are the Azure V1 trace's, sampled as
  :func:`~digital_twin.vm.azure_replay.sample_times` does; ``split="dev"`` for training, ``"test"``
  held out (never read by a training source).
* **Load.** Whole tenant batches are kept (thinning, as in the replay), but the keeping threshold is
  chosen from the *realised* draws, not an expectation: batches are ranked by a seeded uniform
  number and kept in that order while the kept VMs alive at the cut ask for at most
  ``target_utilisation`` of the cluster's vCPU (a batch that would overshoot is skipped, the next
  ones tried). VMs that fit nowhere on arrival (``stats.rejected``: the cluster was full at an
  earlier peak of the window) leave the cut short of the target, so the next-ranked batches' VMs
  alive at the cut are then placed best fit at the cut (``stats.topped_up``; 5 % of the VMs on
  average over the ``vmr2l_like.yaml`` draws, up to about 20 %), each only if it keeps the used
  vCPU within the target. The realised CPU utilisation is thus at most the target and, unless the
  cluster is full, within 2 vCPU of it.
* **Placement.** Best fit over NUMA nodes, the replay's rule: a 1-NUMA VM goes to the (host, node)
  with the least free vCPU that fits it (ties: least free memory, lowest index); a 2-NUMA VM is
  split evenly (odd vCPU: the extra one on node 0) onto the fitting host with the least free vCPU.
  Departures before arrivals at the same instant; the snapshot at ``t`` holds ``arrival <= t <
  departure``.
* **Random fit (optional).** ``random_fit=q`` sends each arriving VM, with chance ``q``, to a
  uniformly drawn fitting (host, node) instead of the best one. Best fit packs the small-VM mix
  into full nodes plus a few empty ones (FR about 0.3 at 95 % CPU), where the real
  ``clear2`` file has its free vCPU spread in 1 to 15 vCPU holes (FR 0.98); ``q`` widens the range of
  fragmentation training sees. It is a diversity knob, not a fit to the evaluation files.
* **Spread fit (optional).** ``spread_fit=s`` sends each arriving VM, with chance ``s``, to the
  fitting (host, node) with the *most* free vCPU (a 2-NUMA VM: the fitting host with the most),
  the load-spreading rule of OpenStack's default weighers and Kubernetes' ``LeastAllocated``
  score. Spreading leaves every node a little free vCPU, the fragmented end of the range that
  best and random fit do not reach (FR 0.6 to 1.0 at 85-97 % CPU). Drawn per VM after
  ``random_fit``: chance ``q`` random, ``s`` spread, the rest best fit (``q + s <= 1``).
* **Warm-up window.** Only VMs still alive ``warmup_s`` before the cut are replayed (in arrival
  order, then every arrival and departure up to the cut), so a snapshot costs the churn of that
  window rather than of the whole trace; ``warmup_s=None`` replays from time 0.

Example:
    >>> from digital_twin.vm.vmr2l_like import generate_cluster, generate_snapshot
    >>> cluster, stats = generate_cluster("dev", 236, seed=0, mix="clear2", target_utilisation=0.9)  # doctest: +SKIP
    >>> snap = generate_snapshot(0, hosts_range=(100, 400), num_clusters=(1, 2))                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from digital_twin.vm.azure_replay import MIN_LIFETIME_S, HostSpec
from digital_twin.vm.azure_trace import BIN_S, AzureV1Trace
from digital_twin.vm.cluster import Cluster, VMType, make_cluster
from digital_twin.vm.snapshot import Snapshot


# ---------------------------------------------------------------------- type mixes
@dataclass(frozen=True, eq=False)
class TypeMix:
    """A distribution over VM shapes: (instance type, NUMA nodes the VM spans).

    Shapes:
        shape_type, shape_span, counts: (S,)
    """

    name: str
    vm_types: tuple[VMType, ...]
    shape_type: np.ndarray  # (S,) index into vm_types
    shape_span: np.ndarray  # (S,) 1 or 2
    counts: np.ndarray  # (S,) VMs of each shape in the source snapshot

    @property
    def shares(self) -> np.ndarray:
        """(S,) probability of each shape."""
        return self.counts / self.counts.sum()

    @property
    def shape_cpu(self) -> np.ndarray:
        return np.array([self.vm_types[t].request_cpu for t in self.shape_type.tolist()], dtype=np.int64)

    @property
    def shape_mem(self) -> np.ndarray:
        return np.array([self.vm_types[t].request_mem_mb for t in self.shape_type.tolist()], dtype=np.float64)

    @property
    def mean_cpu(self) -> float:
        return float(self.shares @ self.shape_cpu)

    def type_shares(self) -> np.ndarray:
        """(len(vm_types),) share of each type, whatever its span."""
        return np.bincount(self.shape_type, weights=self.shares, minlength=len(self.vm_types))


def type_mix_from_snapshot(snapshot: Snapshot, name: str = "snapshot") -> TypeMix:
    """The shape distribution of a snapshot's VMs (all clusters pooled) and its ``vm_type_list``.

    This reads only types and spans (how many VMs of each), never hosts or placements.
    """
    types = tuple(snapshot.vm_types)
    t = np.concatenate([c.vm_type for c in snapshot.clusters])
    s = np.concatenate([c.vm_span for c in snapshot.clusters])
    keys, counts = np.unique(np.stack([t, s], axis=1), axis=0, return_counts=True)
    return TypeMix(name, types, keys[:, 0].astype(np.int64), keys[:, 1].astype(np.int64), counts.astype(np.float64))


def _mix(name: str, types: Sequence[tuple[str, int, float, int]], counts: Mapping[tuple[int, int], int]) -> TypeMix:
    vm_types = tuple(VMType(n, c, m, k) for n, c, m, k in types)
    keys = sorted(counts)
    return TypeMix(
        name, vm_types, np.array([k[0] for k in keys], dtype=np.int64), np.array([k[1] for k in keys], dtype=np.int64),
        np.array([counts[k] for k in keys], dtype=np.float64),
    )


MIXES: dict[str, TypeMix] = {
    # reset_vm_pm_id_clear2.json: vm_type_list as published; counts of (type, span) over its 2,089 VMs.
    "clear2": _mix(
        "clear2",
        [("xxx.xxx.4xlarge", 16, 32768.0, 1), ("xxx.xxx.xlarge", 4, 8192.0, 1), ("xxx.xxx.large", 2, 4096.0, 1),
         ("xxx.xxx.2xlarge", 8, 16384.0, 1), ("xxx.xxx.16xlarge", 64, 131072.0, 2),
         ("xxx.xxx.8xlarge", 32, 65536.0, 2), ("xxx.xxx.22xlarge", 88, 180224.0, 2)],
        {(0, 1): 184, (0, 2): 46, (1, 1): 906, (1, 2): 3, (2, 1): 337, (3, 1): 311, (3, 2): 57,
         (4, 2): 130, (5, 1): 61, (5, 2): 50, (6, 2): 4},
    ),
    # reset_vm_pm_id_clear_big2.json: vm_type_list as published; counts of (type, span) over its 4,546 VMs.
    "clear_big2": _mix(
        "clear_big2",
        [("xxx.xxx.xlarge", 4, 16384.0, 1), ("xxx.xxx.large", 2, 8192.0, 1), ("xxx.xxx.16xlarge", 64, 262144.0, 2),
         ("xxx.xxx.8xlarge", 32, 131072.0, 2), ("xxx.xxx.4xlarge", 16, 65536.0, 1),
         ("xxx.xxx.2xlarge", 8, 32768.0, 1), ("xxx.xxx.22xlarge", 88, 360448.0, 2),
         ("xxx.xxx.21xlarge", 84, 350208.0, 2)],
        {(0, 1): 670, (0, 2): 10, (1, 1): 1030, (2, 2): 266, (3, 1): 253, (3, 2): 479, (4, 1): 767,
         (4, 2): 152, (5, 1): 617, (5, 2): 84, (6, 2): 216, (7, 2): 2},
    ),
}
"""The real files' type mixes (published ``vm_type_list`` and shape counts; no placements)."""


def get_mix(mix: str | TypeMix) -> TypeMix:
    if isinstance(mix, TypeMix):
        return mix
    if mix not in MIXES:
        raise ValueError(f"unknown type mix {mix!r}: expected one of {sorted(MIXES)} or a TypeMix")
    return MIXES[mix]


# ---------------------------------------------------------------------- one cluster
MAX_TOP_UP = 20000
"""Most candidate VMs the top-up tries (it stops earlier once the target is met)."""

MAX_SKIPS = 200
"""Thinning stops after this many batches in a row would overshoot the target."""

MAX_TOP_UP_MISSES = 200
"""The top-up stops after this many candidates in a row fit nowhere (the cluster is full)."""


@dataclass(frozen=True)
class GenStats:
    """What one generated cluster asked for and got."""

    split: str
    seed: int
    mix: str
    num_hosts: int
    time_s: float  # cut, replay seconds since the split's first line
    target_utilisation: float
    keep_fraction: float  # share of tenant batches kept
    replayed: int  # VMs replayed in the warm-up window
    placed: int
    rejected: int  # replayed VMs that fitted nowhere on arrival
    topped_up: int  # VMs added at the cut to make up for rejections
    num_vms: int
    cpu_utilisation: float
    mem_utilisation: float
    fragment_rate: float
    random_fit: float = 0.0
    spread_fit: float = 0.0


def generate_cluster(
    split: str = "dev",
    num_hosts: int = 236,
    *,
    seed: int = 0,
    mix: str | TypeMix = "clear2",
    target_utilisation: float = 0.85,
    fraction: float | None = 0.8,
    time: float | None = None,
    warmup_s: float | None = 86400.0,
    host: HostSpec = HostSpec(),
    jitter: bool = True,
    data_dir: str | None = None,
    name: str | None = None,
    top_up: bool = True,
    random_fit: float = 0.0,
    spread_fit: float = 0.0,
) -> tuple[Cluster, GenStats]:
    """One cluster: Azure V1 churn of ``split`` with VM shapes from ``mix``, cut at one time.

    Args:
        split: ``"dev"`` (training) or ``"test"`` (held out).
        num_hosts: hosts, all of spec ``host`` (default the real files' 2 x 44 vCPU, 2 x 184,388 MB).
        seed: fixes every draw (arrival offsets, lifetimes, shapes, thinning).
        mix: a :data:`MIXES` name or a :class:`TypeMix`.
        target_utilisation: wanted used / total vCPU at the cut, in (0, 1].
        fraction: cut as a fraction of the split's span (ignored when ``time`` is given).
        time: cut in replay seconds.
        warmup_s: replay only VMs alive this long before the cut (``None``: from time 0).
        jitter, data_dir: as for :func:`~digital_twin.vm.azure_replay.replay`.
        name: cluster name (default names split, mix, seed and cut).
        top_up: make up for VMs rejected on the way (see the module docstring).
        random_fit: chance that an arriving VM goes to a uniformly drawn fitting (host, node) instead
            of the best fit (0: best fit throughout, the replay's rule). Not fitted to anything: a
            knob for placement diversity (see the module docstring).
        spread_fit: chance that an arriving VM goes to the fitting (host, node) with the most free
            vCPU (load spreading); ``random_fit + spread_fit`` must not exceed 1.

    Returns:
        The cluster (VMs ``vm_<trace index>`` on hosts ``pm_<i>``) and its :class:`GenStats`.
    """
    if num_hosts <= 0:
        raise ValueError(f"num_hosts must be positive, got {num_hosts}")
    if not 0.0 < target_utilisation <= 1.0:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    m = get_mix(mix)
    trace = AzureV1Trace.load(split, data_dir)
    span = trace.span_s
    if time is None:
        if fraction is None or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        time = fraction * span
    t_cut = float(time)
    if not 0.0 <= t_cut <= span:
        raise ValueError(f"time must be in [0, {span:g}] seconds for split {split}, got {t_cut}")

    arr_rng, life_rng, shape_rng, thin_rng, fit_rng = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    offset = arr_rng.random(trace.num_batches)[trace.batch] * BIN_S if jitter else 0.0
    arrival = (trace.time - trace.start_s).astype(np.float64) + offset
    lo, hi = trace.bucket_lo_s[trace.bucket], trace.bucket_hi_s[trace.bucket]
    departure = arrival + np.maximum(lo + life_rng.random(trace.num_vms) * (hi - lo), MIN_LIFETIME_S)
    departure = np.where(trace.censored, np.inf, np.minimum(departure, span))
    shape = shape_rng.choice(len(m.counts), size=trace.num_vms, p=m.shares)
    s_cpu, s_mem, s_span = m.shape_cpu, m.shape_mem, m.shape_span

    # Thinning: rank batches by a seeded uniform, keep them in that order up to the target demand at the cut.
    alive = (arrival <= t_cut) & (departure > t_cut)
    batch_cpu = np.bincount(trace.batch[alive], weights=s_cpu[shape[alive]], minlength=trace.num_batches)
    rank = np.argsort(thin_rng.random(trace.num_batches), kind="stable")
    want = target_utilisation * num_hosts * host.cpu
    keep_batch, k = _choose_batches(rank, batch_cpu, want)
    t0 = -np.inf if warmup_s is None else t_cut - float(warmup_s)
    ids = np.flatnonzero(keep_batch[trace.batch] & (arrival <= t_cut) & (departure > t0))

    if not 0.0 <= random_fit <= 1.0:
        raise ValueError(f"random_fit must be in [0, 1], got {random_fit}")
    if not 0.0 <= spread_fit <= 1.0 - random_fit + 1e-12:
        raise ValueError(f"spread_fit must be in [0, 1 - random_fit] = [0, {1.0 - random_fit:g}], got {spread_fit}")
    draws = fit_rng.random((2, len(ids))) if random_fit > 0.0 or spread_fit > 0.0 else None
    cell, placed, rejected, free_cpu, free_mem = _best_fit(
        ids, arrival, departure, shape, s_cpu, s_mem, s_span, host, num_hosts, t_cut, random_fit, draws,
        spread_fit)
    here = cell >= 0
    members = ids[here]
    vm_cell = cell[here]
    alive_here = departure[members] > t_cut
    members, vm_cell = members[alive_here], vm_cell[alive_here]
    # Top-up: VMs rejected on the way leave the cut short of the target; the next-ranked batches'
    # VMs alive at the cut fill it, best fit at the cut, none pushing the used vCPU past the target.
    topped = np.zeros(0, dtype=np.int64)
    if top_up:
        gap = int(np.floor(want + 1e-9)) - int(num_hosts * host.cpu - free_cpu.sum())
        if gap > 0:
            pos = np.empty(trace.num_batches, dtype=np.int64)
            pos[rank] = np.arange(trace.num_batches)
            extra = np.flatnonzero(alive & ~keep_batch[trace.batch])
            extra = extra[np.lexsort((arrival[extra], pos[trace.batch[extra]]))][:MAX_TOP_UP]
            spread = fit_rng.random(len(extra)) < spread_fit if spread_fit > 0.0 else None
            topped, top_cell = _top_up(extra, shape, s_cpu, s_mem, s_span, free_cpu, free_mem, gap, spread)
            members = np.concatenate([members, topped])
            vm_cell = np.concatenate([vm_cell, top_cell])
    cluster = _build(m, shape[members], members, vm_cell, s_cpu, s_mem, s_span, host, num_hosts,
                     name or f"vmr2l_like.{split}.{m.name}.seed{seed}.t{t_cut:g}")
    total_cpu, total_mem = num_hosts * host.cpu, num_hosts * host.mem_mb
    stats = GenStats(
        split=trace.split, seed=seed, mix=m.name, num_hosts=num_hosts, time_s=t_cut,
        target_utilisation=float(target_utilisation), keep_fraction=k / max(trace.num_batches, 1),
        replayed=len(ids), placed=placed, rejected=rejected, topped_up=len(topped), num_vms=cluster.num_vms,
        cpu_utilisation=float(1.0 - cluster.free_cpu.sum() / total_cpu),
        mem_utilisation=float(1.0 - cluster.free_mem.sum() / total_mem),
        fragment_rate=float(cluster.fragment_rate()), random_fit=float(random_fit),
        spread_fit=float(spread_fit),
    )
    return cluster, stats


def _choose_batches(rank: np.ndarray, batch_cpu: np.ndarray, want: float) -> tuple[np.ndarray, int]:
    """Batches kept: in ``rank`` order, each batch alive at the cut that still fits in ``want`` vCPU.

    A batch that would overshoot is skipped and the next ones tried (up to :data:`MAX_SKIPS` in a
    row), so one huge tenant near the threshold does not leave the cut far short. Batches with no
    VM alive at the cut (churn only) are kept up to the rank of the last batch taken.

    Returns:
        ``(keep, k)``: (num_batches,) bool; ``k``: rank position the keeping reached.
    """
    order_cpu = batch_cpu[rank]
    cum = np.cumsum(order_cpu)
    k = int(np.searchsorted(cum, want + 1e-9, side="right"))  # rank[:k] all fit
    keep_sorted = np.zeros(len(rank), dtype=bool)
    keep_sorted[:k] = True
    acc = float(cum[k - 1]) if k else 0.0
    skips = 0
    last = k
    rest = np.flatnonzero(order_cpu[k:] > 0) + k
    for i, d in zip(rest.tolist(), order_cpu[rest].tolist()):
        if want - acc < 1.0 or skips >= MAX_SKIPS:
            break
        if acc + d <= want + 1e-9:
            acc += d
            keep_sorted[i] = True
            last = i + 1
            skips = 0
        else:
            skips += 1
    keep_sorted[k:last] |= order_cpu[k:last] == 0  # churn-only batches ranked before the last one taken
    keep = np.zeros(len(rank), dtype=bool)
    keep[rank] = keep_sorted
    return keep, last


_BEST, _SPREAD, _RANDOM = range(3)
"""Placement rules: least free vCPU that fits, most free vCPU that fits, a uniformly drawn fit."""


def _place(free_cpu: np.ndarray, free_mem: np.ndarray, c: int, mem: float, span: int, rule: int,
           pick: float = 0.0) -> int:
    """Place one VM by ``rule`` into the free arrays (changed in place); its cell ``2h+node``, or -1.

    A 1-NUMA VM goes to a (host, node); a 2-NUMA VM is split evenly (the odd vCPU on node 0) onto a
    host. Best fit breaks ties by least free memory, then lowest index; spread by lowest index;
    random takes the fit at ``pick`` (in [0, 1)) of the fitting cells in index order.
    """
    fc, fm = free_cpu.reshape(-1), free_mem.reshape(-1)  # views: cell 2h+n
    if span == 1:
        ok, room, mem_room, c0, c1, m0 = (fc >= c) & (fm >= mem), fc, fm, c, 0, mem
    else:
        c0, c1, m0 = c - c // 2, c // 2, mem / 2.0
        ok = (free_cpu[:, 0] >= c0) & (free_cpu[:, 1] >= c1) & (free_mem[:, 0] >= m0) & (free_mem[:, 1] >= m0)
        room, mem_room = free_cpu.sum(axis=1), free_mem.sum(axis=1)
    if rule == _RANDOM:
        where = np.flatnonzero(ok)
        if len(where) == 0:
            return -1
        at = int(where[int(pick * len(where))])
    elif rule == _SPREAD:
        left = np.where(ok, room, -1)
        at = int(left.argmax())
        if left[at] < 0:
            return -1
    else:
        big = np.iinfo(np.int64).max
        left = np.where(ok, room, big)
        least = left.min()
        if least == big:
            return -1
        at = int(np.where(left == least, mem_room, np.inf).argmin())
    if span == 1:
        fc[at] -= c0
        fm[at] -= m0
        return at
    fc[2 * at] -= c0
    fc[2 * at + 1] -= c1
    fm[2 * at] -= m0
    fm[2 * at + 1] -= m0
    return 2 * at


def _best_fit(
    ids: np.ndarray, arrival: np.ndarray, departure: np.ndarray, shape: np.ndarray,
    s_cpu: np.ndarray, s_mem: np.ndarray, s_span: np.ndarray, host: HostSpec, num_hosts: int, t_cut: float,
    random_fit: float = 0.0, draws: np.ndarray | None = None, spread_fit: float = 0.0,
) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray]:
    """Event replay of VMs ``ids`` up to ``t_cut``; returns each one's cell (2h+node, -1 gone or rejected).

    Each VM is placed by its rule (``draws[0]``: below ``random_fit`` random, then up to
    ``random_fit + spread_fit`` spread, else best fit); ``draws[1]`` picks the random cell.
    """
    dep = departure[ids]
    has_dep = dep <= t_cut
    ev_time = np.concatenate([arrival[ids], dep[has_dep]])
    ev_kind = np.concatenate([np.ones(len(ids), np.int8), np.zeros(int(has_dep.sum()), np.int8)])  # 0 dep, 1 arr
    ev_vm = np.concatenate([np.arange(len(ids)), np.flatnonzero(has_dep)])
    order = np.lexsort((ids[ev_vm], ev_kind, ev_time))
    ev_kind_l, ev_vm_l = ev_kind[order].tolist(), ev_vm[order].tolist()

    sh = shape[ids]
    c_l, m_l, sp_l = s_cpu[sh].tolist(), s_mem[sh].tolist(), s_span[sh].tolist()
    free_cpu = np.tile(np.asarray(host.numa_cpu, dtype=np.int64), (num_hosts, 1))
    free_mem = np.tile(np.asarray(host.numa_mem_mb, dtype=np.float64), (num_hosts, 1))
    fc, fm = free_cpu.reshape(-1), free_mem.reshape(-1)  # views: cell 2h+n
    cell_l = [-1] * len(ids)
    placed = rejected = 0
    if draws is None:
        rand_l = [False] * len(ids)
        spread_l = [False] * len(ids)
        pick_l = [0.0] * len(ids)
    else:
        rand_l, pick_l = (draws[0] < random_fit).tolist(), draws[1].tolist()
        spread_l = ((draws[0] >= random_fit) & (draws[0] < random_fit + spread_fit)).tolist()
    for kind, v in zip(ev_kind_l, ev_vm_l):
        c, mem = c_l[v], m_l[v]
        if kind == 0:  # departure
            at = cell_l[v]
            if at < 0:
                continue
            if sp_l[v] == 1:
                fc[at] += c
                fm[at] += mem
            else:
                fc[at] += c - c // 2
                fc[at + 1] += c // 2
                fm[at] += mem / 2.0
                fm[at + 1] += mem / 2.0
            cell_l[v] = -1
            continue
        rule = _RANDOM if rand_l[v] else _SPREAD if spread_l[v] else _BEST
        at = _place(free_cpu, free_mem, c, mem, sp_l[v], rule, pick_l[v])
        if at < 0:
            rejected += 1
            continue
        cell_l[v] = at
        placed += 1
    return np.asarray(cell_l, dtype=np.int64), placed, rejected, free_cpu, free_mem


def _top_up(
    extra: np.ndarray, shape: np.ndarray, s_cpu: np.ndarray, s_mem: np.ndarray, s_span: np.ndarray,
    free_cpu: np.ndarray, free_mem: np.ndarray, gap: int, spread: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``extra`` VMs (in order) into the free arrays (changed in place) while each fits in ``gap`` vCPU.

    Best fit, or spread (most free vCPU) for the VMs where ``spread`` is true, as in :func:`_best_fit`.
    """
    fc, fm = free_cpu.reshape(-1), free_mem.reshape(-1)
    sh = shape[extra]
    c_l, m_l, sp_l = s_cpu[sh].tolist(), s_mem[sh].tolist(), s_span[sh].tolist()
    smallest = int(s_cpu.min())
    spread_l = [False] * len(extra) if spread is None else spread.tolist()
    chosen, cells = [], []
    misses = 0
    for v in range(len(extra)):
        if gap < smallest or misses >= MAX_TOP_UP_MISSES:
            break
        c, mem = c_l[v], m_l[v]
        if c > gap:
            continue
        at = _place(free_cpu, free_mem, c, mem, sp_l[v], _SPREAD if spread_l[v] else _BEST)
        if at < 0:
            misses += 1
            continue
        gap -= c
        misses = 0
        chosen.append(v)
        cells.append(at)
    return extra[np.asarray(chosen, dtype=np.int64)], np.asarray(cells, dtype=np.int64)


def _build(
    m: TypeMix, vm_shape: np.ndarray, vm_idx: np.ndarray, vm_cell: np.ndarray,
    s_cpu: np.ndarray, s_mem: np.ndarray, s_span: np.ndarray, host: HostSpec, num_hosts: int, name: str,
) -> Cluster:
    c, mem = s_cpu[vm_shape], s_mem[vm_shape]
    two = s_span[vm_shape] == 2
    rows = np.arange(len(vm_shape))
    node_cpu = np.zeros((len(rows), 2), dtype=np.int64)
    node_mem = np.zeros((len(rows), 2), dtype=np.float64)
    node_cpu[rows, vm_cell % 2] = c
    node_mem[rows, vm_cell % 2] = mem
    node_cpu[two] = np.stack([c[two] - c[two] // 2, c[two] // 2], axis=1)
    node_mem[two] = np.stack([mem[two] / 2.0, mem[two] / 2.0], axis=1)
    return make_cluster(
        name, list(m.vm_types), [f"pm_{i}" for i in range(num_hosts)],
        np.tile(np.asarray(host.numa_cpu, dtype=np.int64), (num_hosts, 1)),
        np.tile(np.asarray(host.numa_mem_mb, dtype=np.float64), (num_hosts, 1)),
        [f"vm_{i}" for i in vm_idx.tolist()], m.shape_type[vm_shape], vm_cell // 2, node_cpu, node_mem,
    )


# ---------------------------------------------------------------------- snapshots
def generate_snapshot(
    rng: np.random.Generator | int,
    split: str = "dev",
    *,
    hosts_range: tuple[int, int] = (100, 400),
    num_clusters: tuple[int, int] = (1, 2),
    utilisation_range: tuple[float, float] = (0.75, 0.95),
    fraction_range: tuple[float, float] = (0.5, 0.95),
    mixes: Sequence[str | TypeMix] = ("clear2", "clear_big2"),
    warmup_s: float | None = 86400.0,
    host: HostSpec = HostSpec(),
    data_dir: str | None = None,
    random_fit_range: tuple[float, float] = (0.0, 0.0),
    spread_fit_range: tuple[float, float] = (0.0, 0.0),
) -> tuple[Snapshot, list[GenStats]]:
    """A snapshot of one to a few generated clusters sharing one type mix, like a real file.

    Per snapshot: the number of clusters (uniform integer in ``num_clusters``, both ends included)
    and the mix (uniform over ``mixes``). Per cluster: hosts (uniform integer in ``hosts_range``),
    target CPU utilisation (uniform in ``utilisation_range``), cut (uniform fraction of the span in
    ``fraction_range``), the ``random_fit`` chance (uniform in ``random_fit_range``; drawn only
    when the range is not ``(0, 0)``), the ``spread_fit`` chance (likewise from
    ``spread_fit_range``, then capped at ``1 - random_fit``) and a seed. All drawn from ``rng``.
    """
    rng = np.random.default_rng(rng)
    _check_range("hosts_range", hosts_range, 1, None)
    _check_range("num_clusters", num_clusters, 1, None)
    _check_range("utilisation_range", utilisation_range, 0.0, 1.0, open_low=True)
    _check_range("fraction_range", fraction_range, 0.0, 1.0)
    _check_range("random_fit_range", random_fit_range, 0.0, 1.0)
    _check_range("spread_fit_range", spread_fit_range, 0.0, 1.0)
    if not mixes:
        raise ValueError("mixes must name at least one type mix")
    k = int(rng.integers(num_clusters[0], num_clusters[1] + 1))
    m = get_mix(mixes[int(rng.integers(len(mixes)))])
    clusters, stats = [], []
    for i in range(k):
        n = int(rng.integers(hosts_range[0], hosts_range[1] + 1))
        u = float(rng.uniform(*utilisation_range))
        f = float(rng.uniform(*fraction_range))
        seed = int(rng.integers(2**31 - 1))
        q = float(rng.uniform(*random_fit_range)) if random_fit_range[1] > 0.0 else 0.0
        sp = min(float(rng.uniform(*spread_fit_range)), 1.0 - q) if spread_fit_range[1] > 0.0 else 0.0
        c, s = generate_cluster(split, n, seed=seed, mix=m, target_utilisation=u, fraction=f, warmup_s=warmup_s,
                                host=host, data_dir=data_dir, name=f"cluster{i + 1}", random_fit=q,
                                spread_fit=sp)
        clusters.append(c)
        stats.append(s)
    snap = Snapshot.from_clusters(clusters)
    snap.source = f"vmr2l_like:{split}:{m.name}:" + ",".join(f"seed{s.seed}" for s in stats)
    snap.meta = {"generator": "vmr2l_like", "stats": stats}
    return snap, stats


def _check_range(what: str, r: Sequence[float], lo: float, hi: float | None, open_low: bool = False) -> None:
    if len(r) != 2 or r[0] > r[1] or (r[0] <= lo if open_low else r[0] < lo) or (hi is not None and r[1] > hi):
        bound = f"{'(' if open_low else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{what} must be (low, high) with low <= high within {bound}, got {tuple(r)}")


def describe_snapshot(snap: Snapshot) -> dict[str, Any]:
    """The comparison figures of a snapshot: VMs/host, mean vCPU per VM, two-NUMA share, utilisation, FR."""
    cl = snap.clusters
    hosts = sum(c.num_hosts for c in cl)
    cpu = np.concatenate([c.vm_cpu.sum(axis=1) for c in cl])
    span = np.concatenate([c.vm_span for c in cl])
    total_cpu = sum(int(c.numa_cpu_total.sum()) for c in cl)
    total_mem = sum(float(c.numa_mem_total.sum()) for c in cl)
    return {
        "clusters": [c.num_hosts for c in cl],
        "hosts": hosts,
        "vms": int(len(cpu)),
        "vms_per_host": len(cpu) / hosts if hosts else 0.0,
        "mean_vcpu": float(cpu.mean()) if len(cpu) else 0.0,
        "two_numa_share": float((span == 2).mean()) if len(span) else 0.0,
        "cpu_utilisation": 1.0 - sum(int(c.free_cpu.sum()) for c in cl) / total_cpu,
        "mem_utilisation": 1.0 - sum(float(c.free_mem.sum()) for c in cl) / total_mem,
        "fragment_rate": snap.fragment_rate(),
    }


__all__ = [
    "MIXES", "GenStats", "TypeMix", "describe_snapshot", "generate_cluster", "generate_snapshot", "get_mix",
    "type_mix_from_snapshot",
]
