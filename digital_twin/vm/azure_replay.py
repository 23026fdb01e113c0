"""VM-rescheduling snapshots replayed from the real Azure Public Dataset V1 trace.

The trace (:class:`~digital_twin.vm.azure_trace.AzureV1Trace`, read by
:mod:`digital_twin.vm.azure_trace`) lists the VMs a whole Azure region created per 300 s bin, in
tenant batches, with a lifetime bucket each. This module replays it onto a cluster of ``N``
identical two-NUMA hosts with a best-fit NUMA placement rule and cuts
:class:`~digital_twin.vm.cluster.Cluster` snapshots (the same in-memory state the VMR2L loader
builds) at chosen times, in one pass.

Modelling choices (all seeded, so a seed fixes every draw):

* **Time origin.** The replay's time 0 is the trace's first line (``start_s``) and it ends at the
  censoring cut (see :mod:`digital_twin.vm.azure_trace`): dev spans 300,000 s, test 491,400 s. The
  cluster starts empty at time 0 (the trace has no VMs created before its window), so utilisation
  climbs over the first day; cut late in the span (fractions 0.5 to 1.0).
* **Arrival.** Each tenant batch arrives at one instant ``T + u * 300``, ``u ~ U[0, 1)`` drawn per
  batch (``jitter=False``: at ``T`` exactly); its VMs are placed in trace order.
* **Lifetime.** ``U<k>`` draws a lifetime uniformly in bucket ``k``'s range ``[lo_k, hi_k)``, at
  least 1 s. An uncensored VM is known to have ended by the cut, so its departure is clipped to the
  cut (counted in ``stats["clipped_departures"]``). ``C<k>`` VMs never depart: they were still
  running at the cut.
* **Thinning.** The trace is a whole region, far bigger than ``N`` hosts. Whole tenant batches are
  kept with probability ``load_scale`` (seeded). Left as ``None``, :func:`suggest_load_scale` picks
  it so that the *expected* kept demand at the cut times is ``target_utilisation`` of the cluster's
  capacity, in whichever of CPU and memory is the tighter. Batches are heavy-tailed (one tenant can
  start hundreds of VMs), so the realised utilisation varies with the seed by several points.
* **Placement.** Best fit over NUMA nodes, as an OpenStack Nova-style scheduler with NUMA topology
  would do: among the (host, node) cells with enough free CPU and memory, the one with the least
  free CPU; ties by least free memory, then lowest host index, then node 0. A flavour too big for
  one NUMA node spans both (``numa=2``): it is split evenly (odd vCPU: the extra one on node 0),
  on the host with the least free CPU in total (ties: memory, then host index). A VM that fits
  nowhere is rejected and counted. Departures are processed before arrivals at the same instant;
  a snapshot at time ``t`` holds the VMs with ``arrival <= t < departure``.
* **Held-out split.** ``dev`` (development and training) and ``test`` (held out) are separate
  files; every result, trace and snapshot name carries its split.

Example:
    >>> from digital_twin.vm.azure_replay import replay
    >>> res = replay("dev", num_hosts=236, fractions=[0.5, 0.75, 1.0], seed=0)   # doctest: +SKIP
    >>> res.clusters[-1].fragment_rate(), res.stats["rejected"]                   # doctest: +SKIP
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from digital_twin.vm.azure_trace import AzureV1Trace, BIN_S
from digital_twin.vm.cluster import Cluster, VMType, make_cluster

MIN_LIFETIME_S = 1.0
"""Shortest sampled lifetime: a VM never departs at the instant it arrives."""


@dataclass(frozen=True)
class HostSpec:
    """One host: two NUMA nodes. The default is the real VMR2L snapshots' host (88 vCPU, 360 GiB)."""

    numa_cpu: tuple[int, int] = (44, 44)  # vCPU per NUMA node
    numa_mem_mb: tuple[float, float] = (184388.0, 184388.0)  # huge-page MB per NUMA node

    @property
    def cpu(self) -> int:
        return int(sum(self.numa_cpu))

    @property
    def mem_mb(self) -> float:
        return float(sum(self.numa_mem_mb))


# ---------------------------------------------------------------------- trace -> VM types and times
def flavour_types(trace: AzureV1Trace, host: HostSpec = HostSpec()) -> list[VMType]:
    """One :class:`VMType` per flavour of ``trace``, named ``azure.<letter>``.

    ``numa=1`` when the flavour fits one NUMA node of ``host``, else 2 (split over both nodes).
    """
    return [
        VMType(f"azure.{letter}", int(c), float(m), 1 if _fits_one_node(int(c), float(m), host) else 2)
        for letter, c, m in zip(trace.flavour_letters, trace.flavour_cpu, trace.flavour_mem_mb)
    ]


def sample_times(trace: AzureV1Trace, seed: int, jitter: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Seeded arrival and departure times of every VM of ``trace``, in replay seconds (time 0 = its ``start_s``).

    Arrival and lifetime draws come from separate streams of ``seed`` and do not depend on
    which VMs a replay keeps.

    Returns:
        ``(arrival, departure, clipped)``: (V,) float64 each, departure ``inf`` for censored
        VMs; ``clipped``: how many uncensored departures were clipped to the cut.
    """
    arr_rng, life_rng, _ = _streams(seed)
    offset = arr_rng.random(trace.num_batches)[trace.batch] * BIN_S if jitter else 0.0
    arrival = (trace.time - trace.start_s).astype(np.float64) + offset
    u = life_rng.random(trace.num_vms)
    lo, hi = trace.bucket_lo_s[trace.bucket], trace.bucket_hi_s[trace.bucket]
    lifetime = np.maximum(lo + u * (hi - lo), MIN_LIFETIME_S)
    departure = arrival + lifetime
    end = trace.span_s
    clipped = int(((departure > end) & ~trace.censored).sum())
    departure = np.where(trace.censored, np.inf, np.minimum(departure, end))
    return arrival, departure, clipped


def demand(trace: AzureV1Trace, times: Sequence[float], seed: int, jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Concurrent vCPU and memory (MB) of the whole, unthinned trace at replay times ``times``."""
    arrival, departure, _ = sample_times(trace, seed, jitter)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    out = []
    for size in (trace.flavour_cpu[trace.flavour].astype(np.float64), trace.flavour_mem_mb[trace.flavour]):
        level = np.zeros(len(times))
        for when, sign in ((arrival, 1.0), (departure, -1.0)):
            order = np.argsort(when, kind="stable")
            cum = np.concatenate([[0.0], np.cumsum(size[order])])
            level += sign * cum[np.searchsorted(when[order], times, side="right")]
        out.append(level)
    return out[0], out[1]


def _fits_one_node(cpu: int, mem: float, host: HostSpec) -> bool:
    return any(cpu <= c and mem <= m for c, m in zip(host.numa_cpu, host.numa_mem_mb))


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for arrival offsets, lifetimes and thinning."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


# ---------------------------------------------------------------------- replay
@dataclass(frozen=True)
class CutStats:
    """State at one snapshot cut; counts are cumulative from time 0 to the cut."""

    time_s: float  # replay seconds since the trace start
    trace_time_s: float  # absolute trace seconds
    num_vms: int  # VMs on the cluster
    offered: int  # trace arrivals so far (whole region)
    kept: int  # of them kept by thinning
    placed: int
    rejected: int  # kept but fitting nowhere
    departed: int  # placed VMs that departed
    cpu_utilisation: float
    mem_utilisation: float
    fragment_rate: float  # FR at 16 vCPU (cluster.fragment_rate())


@dataclass
class ReplayResult:
    """Snapshots of one replay, one per requested cut (in the requested order), and its statistics.

    Shapes:
        times_s: (C,); arrival_s, departure_s, kept, host_of: (V,) over the trace's VMs
    """

    split: str
    seed: int
    num_hosts: int
    host: HostSpec
    load_scale: float
    times_s: np.ndarray  # (C,) replay seconds of each cut
    clusters: list[Cluster]
    cuts: list[CutStats]
    arrival_s: np.ndarray  # (V,) sampled arrival, replay seconds
    departure_s: np.ndarray  # (V,) sampled departure (inf: censored)
    kept: np.ndarray  # (V,) bool, kept by thinning
    host_of: np.ndarray  # (V,) host the VM was placed on; -1 not kept, rejected or arriving after the last cut
    clipped_departures: int = 0  # uncensored VMs of the whole trace whose departure was clipped to the cut
    trace_span_s: float = 0.0
    elapsed_s: float = 0.0  # wall time of the replay call (parse cached, load-scale pick and events)

    @property
    def stats(self) -> dict[str, Any]:
        """Totals up to the last cut, plus utilisation and fragment rate at each cut (requested order)."""
        last = max(self.cuts, key=lambda c: c.time_s) if self.cuts else None
        totals = {k: getattr(last, k) if last else 0 for k in ("offered", "kept", "placed", "rejected", "departed")}
        return {
            "split": self.split,
            "load_scale": self.load_scale,
            **totals,
            "clipped_departures": self.clipped_departures,
            "time_s": [c.time_s for c in self.cuts],
            "num_vms": [c.num_vms for c in self.cuts],
            "cpu_utilisation": [c.cpu_utilisation for c in self.cuts],
            "mem_utilisation": [c.mem_utilisation for c in self.cuts],
            "fragment_rate": [c.fragment_rate for c in self.cuts],
        }


def suggest_load_scale(
    trace: AzureV1Trace,
    num_hosts: int,
    times_s: Sequence[float],
    seed: int = 0,
    host: HostSpec = HostSpec(),
    target_utilisation: float = 0.85,
    jitter: bool = True,
) -> float:
    """Batch-keeping probability that fills the cluster to ``target_utilisation`` at the given cuts.

    The whole region's concurrent demand is averaged over ``times_s`` (with this seed's lifetimes);
    keeping batches with probability ``p`` keeps ``p`` of it in expectation. The result is the ``p``
    that brings the tighter of CPU and memory to the target, capped at 1.

    Args:
        trace: the split.
        num_hosts: hosts in the cluster.
        times_s: replay seconds of the cuts to fill for (e.g. the cuts you will ask for).
        seed: the replay's seed (lifetimes and arrival offsets).
        host: host spec.
        target_utilisation: wanted used/total, in (0, 1].
        jitter: as for :func:`replay`.
    """
    if not 0.0 < target_utilisation <= 1.0:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    cpu, mem = demand(trace, times_s, seed, jitter)
    mean_cpu, mean_mem = float(np.mean(cpu)), float(np.mean(mem))
    if mean_cpu <= 0.0:
        return 1.0
    scale = target_utilisation * min(num_hosts * host.cpu / mean_cpu, num_hosts * host.mem_mb / mean_mem)
    return float(min(scale, 1.0))


def replay(
    split: str = "dev",
    num_hosts: int = 236,
    *,
    times: Sequence[float] | None = None,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    load_scale: float | None = None,
    target_utilisation: float = 0.85,
    host: HostSpec = HostSpec(),
    jitter: bool = True,
    data_dir: str | Path | None = None,
) -> ReplayResult:
    """Replay one split onto ``num_hosts`` hosts and cut a snapshot at each requested time.

    Args:
        split: ``"dev"`` (development, training) or ``"test"`` (held out).
        num_hosts: hosts in the cluster, all of spec ``host``.
        times: cut times in seconds since the trace start (see the module docstring), each in
            ``[0, span]``; give this or ``fractions``.
        fractions: cut times as fractions of the span, each in ``[0, 1]``. Default ``[1.0]``.
        seed: fixes arrival offsets, lifetimes and thinning.
        load_scale: probability of keeping each tenant batch; ``None`` picks it with
            :func:`suggest_load_scale` for these cuts and ``target_utilisation``.
        target_utilisation: used when ``load_scale`` is None.
        host: host spec (default: 2 x 44 vCPU, 2 x 184,388 MB).
        jitter: draw each batch's arrival within its 300 s bin (True) or put it at the line's timestamp.
        data_dir: trace directory (default the bundled ``data/azure_vm_v1``).

    Returns:
        The snapshots (``vm_<trace index>`` on ``pm_<i>``) and statistics.
    """
    started = _time.perf_counter()
    trace = AzureV1Trace.load(split, data_dir)
    cut_times = _cut_times(trace, times, fractions)
    if num_hosts <= 0:
        raise ValueError(f"num_hosts must be positive, got {num_hosts}")
    if load_scale is None:
        load_scale = suggest_load_scale(trace, num_hosts, cut_times, seed, host, target_utilisation, jitter)
    if not 0.0 < load_scale <= 1.0:
        raise ValueError(f"load_scale must be in (0, 1], got {load_scale}")

    arrival, departure, clipped = sample_times(trace, seed, jitter)
    _, _, thin_rng = _streams(seed)
    kept = (thin_rng.random(trace.num_batches) < load_scale)[trace.batch]
    vm_types = flavour_types(trace, host)
    host_of, clusters, cuts = _run_events(trace, vm_types, host, num_hosts, arrival, departure, kept, cut_times, seed)
    return ReplayResult(
        split=trace.split, seed=seed, num_hosts=num_hosts, host=host, load_scale=float(load_scale),
        times_s=cut_times, clusters=clusters, cuts=cuts, arrival_s=arrival, departure_s=departure,
        kept=kept, host_of=host_of, clipped_departures=clipped, trace_span_s=trace.span_s,
        elapsed_s=_time.perf_counter() - started,
    )


def replay_snapshot(
    split: str = "dev",
    num_hosts: int = 236,
    time: float | None = None,
    seed: int = 0,
    *,
    fraction: float | None = None,
    **kwargs: Any,
) -> Cluster:
    """One snapshot: :func:`replay` with a single cut (``time`` seconds, or ``fraction`` of the span; default the end)."""
    res = replay(
        split, num_hosts, seed=seed,
        times=None if time is None else [time],
        fractions=None if fraction is None else [fraction],
        **kwargs,
    )
    return res.clusters[0]


def _cut_times(trace: AzureV1Trace, times: Sequence[float] | None, fractions: Sequence[float] | None) -> np.ndarray:
    if times is not None and fractions is not None:
        raise ValueError("give cut times either as times (seconds) or as fractions, not both")
    span = trace.span_s
    if times is None:
        frac = np.asarray([1.0] if fractions is None else fractions, dtype=np.float64).reshape(-1)
        if len(frac) == 0 or not np.all((frac >= 0.0) & (frac <= 1.0)):
            raise ValueError(f"fractions must be a non-empty list of values in [0, 1], got {list(frac)}")
        return frac * span
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(t) == 0 or not np.all((t >= 0.0) & (t <= span)):
        raise ValueError(
            f"times must be a non-empty list of seconds in [0, {span:g}] (split {trace.split}: "
            f"trace seconds {trace.start_s}..{trace.cut_s}), got {list(t)}"
        )
    return t


def _run_events(
    trace: AzureV1Trace,
    vm_types: list[VMType],
    host: HostSpec,
    num_hosts: int,
    arrival: np.ndarray,
    departure: np.ndarray,
    kept: np.ndarray,
    cut_times: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, list[Cluster], list[CutStats]]:
    """Event replay: departures before arrivals at the same instant, snapshots after each cut's events."""
    last_cut = float(cut_times.max())
    ids = np.flatnonzero(kept & (arrival <= last_cut))  # trace indices that can enter the cluster
    dep = departure[ids]
    has_dep = dep <= last_cut
    ev_time = np.concatenate([arrival[ids], dep[has_dep]])
    ev_kind = np.concatenate([np.ones(len(ids), np.int8), np.zeros(int(has_dep.sum()), np.int8)])  # 0 dep, 1 arr
    ev_vm = np.concatenate([np.arange(len(ids)), np.flatnonzero(has_dep)])  # position in ids
    order = np.lexsort((ids[ev_vm], ev_kind, ev_time))
    ev_time, ev_kind, ev_vm = ev_time[order], ev_kind[order], ev_vm[order]

    # Per-flavour request and how it lands: 1-NUMA (c, m) or split (c0, c1, m0, m1).
    span = [t.numa for t in vm_types]
    fc_req = [t.request_cpu for t in vm_types]
    fm_req = [t.request_mem_mb for t in vm_types]
    half = [(-(-c // 2), c // 2, m / 2.0, m / 2.0) for c, m in zip(fc_req, fm_req)]

    free_cpu = np.tile(np.asarray(host.numa_cpu, dtype=np.int64), (num_hosts, 1))
    free_mem = np.tile(np.asarray(host.numa_mem_mb, dtype=np.float64), (num_hosts, 1))
    fc_flat, fm_flat = free_cpu.reshape(-1), free_mem.reshape(-1)  # views: cell 2h+n
    big = np.iinfo(np.int64).max

    n_ids = len(ids)
    flav = trace.flavour[ids].tolist()
    cell = np.full(n_ids, -1, dtype=np.int64)  # 1-NUMA: 2h+n; split: 2h (node 0), -1: not placed
    alive = np.zeros(n_ids, dtype=bool)
    cell_l = [-1] * n_ids

    offered_cum = np.searchsorted(np.sort(arrival), cut_times, side="right")
    kept_arrival = np.sort(arrival[kept])
    cut_order = np.argsort(cut_times, kind="stable")
    ev_time_l, ev_kind_l, ev_vm_l = ev_time, ev_kind.tolist(), ev_vm.tolist()
    placed = rejected = departed = 0
    pos = 0
    clusters: list[Cluster | None] = [None] * len(cut_times)
    cuts: list[CutStats | None] = [None] * len(cut_times)
    type_cpu = np.array(fc_req, dtype=np.int64)
    type_mem = np.array(fm_req, dtype=np.float64)
    type_span = np.array(span, dtype=np.int64)
    host_ids = [f"pm_{i}" for i in range(num_hosts)]
    numa_cpu_total = np.tile(np.asarray(host.numa_cpu, dtype=np.int64), (num_hosts, 1))
    numa_mem_total = np.tile(np.asarray(host.numa_mem_mb, dtype=np.float64), (num_hosts, 1))

    for ci in cut_order.tolist():
        t_cut = float(cut_times[ci])
        end = int(np.searchsorted(ev_time_l, t_cut, side="right"))
        for e in range(pos, end):
            v = ev_vm_l[e]
            f = flav[v]
            if ev_kind_l[e] == 0:  # departure
                c = cell_l[v]
                if c < 0:
                    continue
                if span[f] == 1:
                    fc_flat[c] += fc_req[f]
                    fm_flat[c] += fm_req[f]
                else:
                    c0, c1, m0, m1 = half[f]
                    fc_flat[c] += c0
                    fc_flat[c + 1] += c1
                    fm_flat[c] += m0
                    fm_flat[c + 1] += m1
                alive[v] = False
                departed += 1
                continue
            if span[f] == 1:
                cpu_left = np.where((fc_flat >= fc_req[f]) & (fm_flat >= fm_req[f]), fc_flat, big)
                least = cpu_left.min()
                if least == big:
                    rejected += 1
                    continue
                c = int(np.where(cpu_left == least, fm_flat, np.inf).argmin())
                fc_flat[c] -= fc_req[f]
                fm_flat[c] -= fm_req[f]
            else:
                c0, c1, m0, m1 = half[f]
                ok = (free_cpu[:, 0] >= c0) & (free_cpu[:, 1] >= c1) & (free_mem[:, 0] >= m0) & (free_mem[:, 1] >= m1)
                cpu_left = np.where(ok, free_cpu.sum(axis=1), big)
                least = cpu_left.min()
                if least == big:
                    rejected += 1
                    continue
                h = int(np.where(cpu_left == least, free_mem.sum(axis=1), np.inf).argmin())
                c = 2 * h
                fc_flat[c] -= c0
                fc_flat[c + 1] -= c1
                fm_flat[c] -= m0
                fm_flat[c + 1] -= m1
            cell_l[v] = c
            alive[v] = True
            placed += 1
        pos = end

        cell[:] = cell_l
        members = np.flatnonzero(alive)
        cluster = _snapshot(
            trace, vm_types, ids[members], cell[members], type_cpu, type_mem, type_span,
            host_ids, numa_cpu_total, numa_mem_total, f"azure_v1.{trace.split}.seed{seed}.t{t_cut:g}",
        )
        used_cpu = 1.0 - free_cpu.sum() / numa_cpu_total.sum()
        used_mem = 1.0 - free_mem.sum() / numa_mem_total.sum()
        clusters[ci] = cluster
        cuts[ci] = CutStats(
            time_s=t_cut, trace_time_s=t_cut + trace.start_s, num_vms=len(members),
            offered=int(offered_cum[ci]), kept=int(np.searchsorted(kept_arrival, t_cut, side="right")),
            placed=placed, rejected=rejected, departed=departed,
            cpu_utilisation=float(used_cpu), mem_utilisation=float(used_mem),
            fragment_rate=float(cluster.fragment_rate()),
        )

    host_of = np.full(trace.num_vms, -1, dtype=np.int64)
    placed_mask = np.asarray(cell_l, dtype=np.int64) >= 0
    host_of[ids[placed_mask]] = np.asarray(cell_l, dtype=np.int64)[placed_mask] // 2
    return host_of, clusters, cuts  # type: ignore[return-value]


def _snapshot(
    trace: AzureV1Trace,
    vm_types: list[VMType],
    vm_trace_idx: np.ndarray,
    vm_cell: np.ndarray,
    type_cpu: np.ndarray,
    type_mem: np.ndarray,
    type_span: np.ndarray,
    host_ids: list[str],
    numa_cpu_total: np.ndarray,
    numa_mem_total: np.ndarray,
    name: str,
) -> Cluster:
    """The cluster of the VMs alive at a cut, built with :func:`make_cluster`."""
    flav = trace.flavour[vm_trace_idx]
    span2 = type_span[flav] == 2
    c, m = type_cpu[flav], type_mem[flav]
    node = vm_cell % 2
    rows = np.arange(len(flav))
    node_cpu = np.zeros((len(flav), 2), dtype=np.int64)
    node_mem = np.zeros((len(flav), 2), dtype=np.float64)
    node_cpu[rows, node] = c
    node_mem[rows, node] = m
    node_cpu[span2] = np.stack([-(-c[span2] // 2), c[span2] // 2], axis=1)
    node_mem[span2] = np.stack([m[span2] / 2.0, m[span2] / 2.0], axis=1)
    return make_cluster(
        name, vm_types, host_ids, numa_cpu_total, numa_mem_total,
        [f"vm_{i}" for i in vm_trace_idx.tolist()], flav, vm_cell // 2, node_cpu, node_mem,
    )


def describe(result: ReplayResult) -> str:
    """A few human-readable lines on a replay (for logs and reports)."""
    s = result.stats
    lines = [
        f"Azure V1 {result.split} -> {result.num_hosts} hosts, seed {result.seed}, load_scale {result.load_scale:.4f}: "
        f"offered {s['offered']}, kept {s['kept']}, placed {s['placed']}, rejected {s['rejected']}, "
        f"departed {s['departed']} ({result.elapsed_s:.2f} s)",
    ]
    for c in result.cuts:
        lines.append(
            f"  t={c.time_s:9.0f} s ({c.time_s / result.trace_span_s:4.2f}): {c.num_vms:5d} VMs, "
            f"CPU {c.cpu_utilisation:.3f}, mem {c.mem_utilisation:.3f}, FR {c.fragment_rate:.4f}"
        )
    return "\n".join(lines)


__all__ = [
    "CutStats", "HostSpec", "ReplayResult", "demand", "describe", "flavour_types", "replay", "replay_snapshot",
    "sample_times", "suggest_load_scale",
]
