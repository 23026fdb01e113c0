"""Speed of the VM-rescheduling twin on the real 236-host / 1,934-VM cluster.

Prints, for each operation, calls per second of the twin and of a straightforward pure-Python
reference (lists of hosts and VMs, Python loops, FR recomputed after each move) run in the same
process on the same inputs, and their ratio:

- full feasibility mask of one VM over every (host, NUMA placement);
- migration with the fragment rate kept up to date (the twin: checks + incremental update;
  the reference: checks + update + FR recomputed over all hosts);
- fragment rate recomputed from scratch from the VM placements.

Goals: >= 100,000 masks/s and >= 50,000 migrations/s, each >= 10x the reference.
Run with ``OMP_NUM_THREADS=1`` on an otherwise idle machine: ``make bench`` or
``python bench/vm_twin.py [--seconds 1.0]``.
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

from digital_twin.resources import bundled_path  # noqa: E402
from digital_twin.vm import Cluster, load_snapshot  # noqa: E402
from digital_twin.vm.metrics import fragment_rate, free_from_placements  # noqa: E402

SNAPSHOT = bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json")


class ReferenceCluster:
    """The straightforward way: Python lists per host and VM, loops everywhere."""

    def __init__(self, cluster: Cluster):
        self.cpu_total = cluster.numa_cpu_total.tolist()
        self.mem_total = cluster.numa_mem_total.tolist()
        self.active = cluster.host_active.tolist()
        self.vm_host = cluster.vm_host.tolist()
        cpu, mem = cluster.vm_node_usage()
        self.vm_cpu = cpu.tolist()  # per node on the current host
        self.vm_mem = mem.tolist()
        self.span = cluster.vm_span.tolist()
        self.allow = cluster.vm_allow_migration.tolist()
        self.free_cpu, self.free_mem = self._free_from_vms()
        self.fr = self.compute_fragment_rate()

    def _free_from_vms(self):
        free_cpu = [list(row) for row in self.cpu_total]
        free_mem = [list(row) for row in self.mem_total]
        for v, h in enumerate(self.vm_host):
            for n in (0, 1):
                free_cpu[h][n] -= self.vm_cpu[v][n]
                free_mem[h][n] -= self.vm_mem[v][n]
        return free_cpu, free_mem

    def fragment_rate(self) -> float:
        """The FR kept up to date by :meth:`migrate` (recomputed over all hosts after each move)."""
        return self.fr

    def compute_fragment_rate(self, size: int = 16) -> float:
        frag = free = 0
        for h, row in enumerate(self.free_cpu):
            if self.active[h]:
                for f in row:
                    frag += f % size
                    free += f
        return frag / free if free else 0.0

    def recompute_fragment_rate(self) -> float:
        self.free_cpu, self.free_mem = self._free_from_vms()
        return self.compute_fragment_rate()

    def _demand(self, v, place):
        cpu, mem = self.vm_cpu[v], self.vm_mem[v]
        if self.span[v] == 1:
            c, m = max(cpu), max(mem)
            return ([c, 0], [m, 0.0]) if place == 0 else ([0, c], [0.0, m])
        return (cpu, mem) if place == 0 else (None, None)

    def feasible_destinations(self, v):
        mask = []
        for h in range(len(self.free_cpu)):
            row = []
            for place in (0, 1):
                cpu, mem = self._demand(v, place)
                ok = (self.allow[v] and self.active[h] and h != self.vm_host[v] and cpu is not None
                      and all(self.free_cpu[h][n] >= cpu[n] and self.free_mem[h][n] >= mem[n] for n in (0, 1)))
                row.append(ok)
            mask.append(row)
        return mask

    def migrate(self, v, h, place):
        cpu, mem = self._demand(v, place)
        if not (self.allow[v] and self.active[h] and h != self.vm_host[v] and cpu is not None
                and all(self.free_cpu[h][n] >= cpu[n] and self.free_mem[h][n] >= mem[n] for n in (0, 1))):
            raise ValueError("infeasible")
        src = self.vm_host[v]
        for n in (0, 1):
            self.free_cpu[src][n] += self.vm_cpu[v][n]
            self.free_mem[src][n] += self.vm_mem[v][n]
            self.free_cpu[h][n] -= cpu[n]
            self.free_mem[h][n] -= mem[n]
        self.vm_host[v], self.vm_cpu[v], self.vm_mem[v] = h, list(cpu), list(mem)
        self.fr = self.compute_fragment_rate()


def rate(fn, seconds: float, batch: int) -> float:
    """Calls per second of ``fn(i)``, timed over at least ``seconds``."""
    calls = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn(calls)
            calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def random_walk(cluster: Cluster, steps: int, seed: int) -> list[tuple[int, int, int]]:
    """A sequence of feasible migrations, each feasible after the ones before it."""
    rng = np.random.default_rng(seed)
    walk_cluster = cluster.copy()
    moves = []
    while len(moves) < steps:
        vm = int(rng.integers(walk_cluster.num_vms))
        options = np.argwhere(walk_cluster.feasible_destinations(vm))
        if len(options):
            host, place = (int(x) for x in options[rng.integers(len(options))])
            walk_cluster.migrate(vm, host, place)
            moves.append((vm, host, place))
    return moves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1.0)")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = load_snapshot(SNAPSHOT).clusters[0]
    print(f"VM twin on {SNAPSHOT.name} {cluster.name}: {cluster.num_hosts} hosts x 2 NUMA, {cluster.num_vms} VMs "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    rng = np.random.default_rng(0)
    vms = rng.integers(cluster.num_vms, size=4096).tolist()

    # Sanity: twin and reference agree before anything is timed.
    reference = ReferenceCluster(cluster)
    for v in vms[:50]:
        assert np.array_equal(cluster.feasible_destinations(v), np.array(reference.feasible_destinations(v)))
    assert reference.fr == cluster.fragment_rate()

    rows = []
    rows.append(("feasibility mask (1 VM, all hosts x NUMA)", 100_000,
                 rate(lambda i: cluster.feasible_destinations(vms[i & 4095]), args.seconds, 512),
                 rate(lambda i: reference.feasible_destinations(vms[i & 4095]), args.seconds, 8)))

    moves = random_walk(cluster, 20_000, seed=1)

    def replay_rate(make, chunk: int) -> float:
        """Migrations per second replaying the walk on fresh copies, reading FR after each move."""
        done, elapsed = 0, 0.0
        while elapsed < args.seconds:
            state = make()
            start = time.perf_counter()
            for vm, host, place in moves[:chunk]:
                state.migrate(vm, host, place)
                state.fragment_rate()
            elapsed += time.perf_counter() - start
            done += chunk
        return done / elapsed

    rows.append(("migration + up-to-date FR", 50_000,
                 replay_rate(cluster.copy, len(moves)),
                 replay_rate(lambda: ReferenceCluster(cluster), 4000)))
    check = cluster.copy()
    for move in moves[:2000]:
        check.migrate(*move)
    assert check.metrics() == check.recompute_metrics(), "incremental metrics drifted from a recompute"

    def twin_recompute(_: int) -> float:
        free_cpu, _free_mem = free_from_placements(
            cluster.numa_cpu_total, cluster.numa_mem_total, cluster.vm_host, *cluster.vm_node_usage()
        )
        return fragment_rate(free_cpu, cluster.host_active)

    rows.append(("FR recomputed from placements", None,
                 rate(twin_recompute, args.seconds, 64),
                 rate(lambda i: reference.recompute_fragment_rate(), args.seconds, 4)))

    print(f"{'operation':<44}{'twin /s':>14}{'reference /s':>15}{'ratio':>9}   goal")
    for name, goal, twin_per_s, ref_per_s in rows:
        ratio = twin_per_s / ref_per_s
        verdict = "" if goal is None else (
            f">= {goal:,}/s and >= 10x: {'met' if twin_per_s >= goal and ratio >= 10 else 'NOT met'}")
        print(f"{name:<44}{twin_per_s:>14,.0f}{ref_per_s:>15,.0f}{ratio:>8.1f}x   {verdict}")


if __name__ == "__main__":
    main()
