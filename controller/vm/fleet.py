"""A VM fleet as plain numpy arrays: what the VM-rescheduling env observes and masks, without the twin.

The online controller plans live migrations with a policy exported from training on
``clustergym/VMRescheduling-v0`` (:mod:`envs.vm_rescheduling`). That policy reads the env's
observation dict and may only choose the actions of its mask, so the controller needs both,
bit for bit, from a fleet it loads from a snapshot file or builds from its own inventory. A
:class:`Fleet` is that: the hosts and VMs of one or more clusters laid side by side in one global
index, in the env's order (cluster by cluster; each cluster's hosts, then its VMs), with the
twin's rules for where a VM may go (``digital_twin.vm.cluster.Cluster``) and the env's feature
arithmetic (a test plays random episodes on the env and the fleet side by side and compares every
observation). numpy only: the controller imports neither torch nor the twin nor the envs.

Placement model (the twin's). A VM sits on one NUMA node (``span == 1``) or is split over both
(``span == 2``). ``vm_cpu[v]`` / ``vm_mem[v]`` hold its usage in *canonical* order: ``[usage, 0]``
for a 1-NUMA VM, ``[usage on node 0, usage on node 1]`` for a split VM. A destination is
``(host, placement)``: for a 1-NUMA VM the NUMA node it lands on; a split VM keeps its split, so
only placement 0 exists for it. A destination is feasible when the VM allows migration, the host
is active, in the VM's cluster and not its current host, the NUMA node(s) have the free vCPU and
memory, and no other member of the VM's anti-affinity sets is on that host (``"host"`` sets) or
in that host's rack (``"rack"`` sets).

Actions (the env's). ``n = max(V, 2 H) + 1`` actions for a fleet of ``H`` hosts and ``V`` VMs:
phase 0 (:data:`PHASE_PICK_VM`) picks VM ``v < V`` or stops (``n - 1``); phase 1
(:data:`PHASE_PICK_DESTINATION`) picks destination ``2 * host + placement``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The env's feature layout (envs.vm_rescheduling, checked equal by a test): the exported policy's input.
VM_FEATURES = ("cpu_node0", "cpu_node1", "mem_node0", "mem_node1", "spans_both_nodes", "allow_migration", "selected")
HOST_FEATURES = ("free_cpu_node0", "free_cpu_node1", "free_mem_node0", "free_mem_node1",
                 "fragment_node0", "fragment_node1", "active")
GLOBAL_FEATURES = ("fragment_rate", "fragment_rate_8", "fragment_rate_32", "budget_left", "phase")

PHASE_PICK_VM, PHASE_PICK_DESTINATION = 0, 1

GRANULARITIES = ("host", "rack")


def _array(name: str, value: Any, dtype: type, shape: tuple[int, ...], copy: bool = False) -> np.ndarray:
    """``value`` as a ``dtype`` array of ``shape``; a ValueError names the field when it is not one."""
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    kinds = {np.int64: "iub", np.float64: "iuf", bool: "biu"}[dtype]
    if arr.size and arr.dtype.kind not in kinds:
        raise ValueError(f"{name}: expected {np.dtype(dtype).name} values, got dtype {arr.dtype}")
    if dtype is bool and arr.dtype.kind != "b" and arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name}: expected booleans (or 0/1), got {arr[~np.isin(arr, (0, 1))][0]!r}")
    if dtype is np.float64 and arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite numbers, got {arr.reshape(-1)[~np.isfinite(arr.reshape(-1))][0]}")
    out = arr.astype(dtype, copy=copy)
    return np.ascontiguousarray(out)


def _first(bad: np.ndarray) -> int:
    """Index of the first True of a (flattened) bool array."""
    return int(np.flatnonzero(bad.reshape(-1))[0])


@dataclass(eq=False)
class Fleet:
    """Hosts, VMs and placements of one or more clusters, in one global index.

    Hosts and VMs are laid cluster by cluster (``host_cluster`` and ``vm_cluster`` never
    decrease), each cluster's in its own order: the env's ``_bind`` order, so VM ``v`` and host
    ``h`` here are VM ``v`` and host ``h`` of the env's observation and actions.

    The static fields describe the hardware and the VMs and are not to be changed after
    construction (derived tables are built from them once); ``vm_host`` / ``vm_placement`` and
    ``free_cpu`` / ``free_mem`` change with :meth:`migrate` only. Construction copies
    ``vm_host`` and ``vm_placement``, validates every field (``ValueError`` naming it) and derives
    the free capacity from the placements, as the twin does.

    Shapes (H hosts, V VMs):
        host_cluster, host_active, host_rack: (H,); numa_cpu_total, numa_mem_total, free_cpu, free_mem: (H, 2)
        vm_cluster, vm_host, vm_placement, vm_span, vm_allow_migration: (V,); vm_cpu, vm_mem: (V, 2)

    ``deployment_sets`` are ``(granularity, members)`` with granularity ``"host"`` or ``"rack"``
    and members GLOBAL VM indices of one cluster (stored sorted and without repeats); a rack is
    ``host_rack`` within the host's cluster. ``budget`` is the file's
    ``general_requirement.maximum_migration`` (None if it states none).
    """

    cluster_names: list[str]
    host_ids: list[str]
    host_cluster: np.ndarray  # (H,) int64 cluster index
    numa_cpu_total: np.ndarray  # (H, 2) int64 vCPU per NUMA node
    numa_mem_total: np.ndarray  # (H, 2) float64 huge-page MB per NUMA node
    host_active: np.ndarray  # (H,) bool: status ACTIVE (only active hosts take VMs and count in FR)
    host_rack: np.ndarray  # (H,) int64 rack code within the host's cluster
    vm_ids: list[str]
    vm_cluster: np.ndarray  # (V,) int64 cluster index
    vm_host: np.ndarray  # (V,) int64 global host index
    vm_placement: np.ndarray  # (V,) int64: NUMA node of a 1-NUMA VM, 0 for a split VM
    vm_span: np.ndarray  # (V,) int64: 1 or 2 NUMA nodes
    vm_cpu: np.ndarray  # (V, 2) int64 canonical vCPU
    vm_mem: np.ndarray  # (V, 2) float64 canonical MB
    vm_allow_migration: np.ndarray  # (V,) bool
    deployment_sets: list[tuple[str, np.ndarray]] = field(default_factory=list)
    budget: int | None = None

    def __post_init__(self) -> None:
        self.cluster_names = [str(c) for c in self.cluster_names]
        self.host_ids = [str(h) for h in self.host_ids]
        self.vm_ids = [str(v) for v in self.vm_ids]
        num_clusters, num_hosts, num_vms = len(self.cluster_names), len(self.host_ids), len(self.vm_ids)
        if num_hosts == 0:
            raise ValueError("host_ids: a fleet needs at least one host")
        h1, h2, v1, v2 = (num_hosts,), (num_hosts, 2), (num_vms,), (num_vms, 2)
        self.host_cluster = _array("host_cluster", self.host_cluster, np.int64, h1)
        self.numa_cpu_total = _array("numa_cpu_total", self.numa_cpu_total, np.int64, h2)
        self.numa_mem_total = _array("numa_mem_total", self.numa_mem_total, np.float64, h2)
        self.host_active = _array("host_active", self.host_active, bool, h1)
        self.host_rack = _array("host_rack", self.host_rack, np.int64, h1)
        self.vm_cluster = _array("vm_cluster", self.vm_cluster, np.int64, v1)
        self.vm_host = _array("vm_host", self.vm_host, np.int64, v1, copy=True)
        self.vm_placement = _array("vm_placement", self.vm_placement, np.int64, v1, copy=True)
        self.vm_span = _array("vm_span", self.vm_span, np.int64, v1)
        self.vm_cpu = _array("vm_cpu", self.vm_cpu, np.int64, v2)
        self.vm_mem = _array("vm_mem", self.vm_mem, np.float64, v2)
        self.vm_allow_migration = _array("vm_allow_migration", self.vm_allow_migration, bool, v1)
        self._validate(num_clusters)
        self.deployment_sets = self._normalise_sets(self.deployment_sets)
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, (int, np.integer)) or self.budget < 1:
                raise ValueError(f"budget: expected None or an integer >= 1, got {self.budget!r}")
            self.budget = int(self.budget)

        self.free_cpu, self.free_mem = self._free_from_placements()
        over = (self.free_cpu < 0) | (self.free_mem < 0)
        if over.any():
            h, node = divmod(_first(over), 2)
            on = np.flatnonzero((self.vm_host == h) & (self._node_usage()[0][:, node] + self._node_usage()[1][:, node] > 0))
            raise ValueError(f"vm_host: host {self.host_ids[h]} NUMA {node} is over capacity: its VMs "
                             f"({', '.join(self.vm_ids[v] for v in on[:8])}{'...' if len(on) > 8 else ''}) leave "
                             f"{int(self.free_cpu[h, node])} vCPU / {float(self.free_mem[h, node]):g} MB free")
        self._build_static()
        self._build_sets()
        self._dirty()

    # ------------------------------------------------------------------ construction
    def _validate(self, num_clusters: int) -> None:
        """Value checks of the static fields (shapes and dtypes are checked by _array)."""
        for name, ids in (("host_ids", self.host_ids), ("vm_ids", self.vm_ids)):
            if len(set(ids)) < len(ids):  # ids name hosts and VMs to the controller: one each
                seen: dict[str, int] = {}
                for i, ident in enumerate(ids):
                    if ident in seen:
                        raise ValueError(f"{name}: duplicate id {ident!r} (positions {seen[ident]} and {i})")
                    seen[ident] = i
        for name, arr in (("host_cluster", self.host_cluster), ("vm_cluster", self.vm_cluster)):
            bad = (arr < 0) | (arr >= num_clusters)
            if bad.any():
                raise ValueError(f"{name}: cluster index {int(arr[_first(bad)])} at position {_first(bad)} "
                                 f"outside [0, {num_clusters}) (cluster_names has {num_clusters})")
            if len(arr) > 1 and (np.diff(arr) < 0).any():
                i = _first(np.diff(arr) < 0) + 1
                raise ValueError(f"{name}: clusters must be laid one after the other (non-decreasing), "
                                 f"position {i} goes back from cluster {int(arr[i - 1])} to {int(arr[i])}")
        for name, arr in (("numa_cpu_total", self.numa_cpu_total), ("numa_mem_total", self.numa_mem_total),
                          ("vm_cpu", self.vm_cpu), ("vm_mem", self.vm_mem)):
            if (arr < 0).any():
                raise ValueError(f"{name}: values must be >= 0, got {arr.reshape(-1)[_first(arr < 0)]}")
        num_hosts = len(self.host_ids)
        bad = (self.vm_host < 0) | (self.vm_host >= num_hosts)
        if bad.any():
            raise ValueError(f"vm_host: VM {self.vm_ids[_first(bad)]} on host index {int(self.vm_host[_first(bad)])}, "
                             f"outside [0, {num_hosts})")
        bad = self.host_cluster[self.vm_host] != self.vm_cluster
        if bad.any():
            v = _first(bad)
            raise ValueError(f"vm_host: VM {self.vm_ids[v]} of cluster {self.cluster_names[self.vm_cluster[v]]} is on "
                             f"host {self.host_ids[self.vm_host[v]]} of cluster "
                             f"{self.cluster_names[self.host_cluster[self.vm_host[v]]]}")
        bad = (self.vm_span != 1) & (self.vm_span != 2)
        if bad.any():
            raise ValueError(f"vm_span: VM {self.vm_ids[_first(bad)]} spans {int(self.vm_span[_first(bad)])} "
                             "NUMA nodes, expected 1 or 2")
        bad = (self.vm_placement != 0) & ((self.vm_placement != 1) | (self.vm_span == 2))
        if bad.any():
            v = _first(bad)
            raise ValueError(f"vm_placement: VM {self.vm_ids[v]} has placement {int(self.vm_placement[v])}, expected "
                             f"{'0 (it spans both NUMA nodes)' if self.vm_span[v] == 2 else '0 or 1'}")
        # Canonical usage: a 1-NUMA VM uses part 0 only, a split VM both parts (the twin's make_cluster).
        used = (self.vm_cpu > 0) | (self.vm_mem > 0)
        bad = used.sum(axis=1) != self.vm_span
        if bad.any():
            v = _first(bad)
            raise ValueError(f"vm_cpu, vm_mem: VM {self.vm_ids[v]} (span {int(self.vm_span[v])}) has canonical usage "
                             f"cpu={self.vm_cpu[v].tolist()} mem={self.vm_mem[v].tolist()}: a 1-NUMA VM uses "
                             "[usage, 0], a split VM uses both parts")
        bad = used[:, 1] & ~used[:, 0]
        if bad.any():
            raise ValueError(f"vm_cpu, vm_mem: VM {self.vm_ids[_first(bad)]} uses part 1 only; canonical order "
                             "puts a 1-NUMA VM's usage in part 0")

    def _normalise_sets(self, sets: Any) -> list[tuple[str, np.ndarray]]:
        out = []
        num_vms = len(self.vm_ids)
        for i, entry in enumerate(sets):
            try:
                granularity, members = entry
            except (TypeError, ValueError):
                raise ValueError(f"deployment_sets[{i}]: expected (granularity, members), got {entry!r:.60}") from None
            if granularity not in GRANULARITIES:
                raise ValueError(f"deployment_sets[{i}]: granularity must be 'host' or 'rack', got {granularity!r}")
            arr = np.asarray(members).reshape(-1)
            if arr.size and arr.dtype.kind not in "iu":
                raise ValueError(f"deployment_sets[{i}]: members must be VM indices, got dtype {arr.dtype}")
            arr = np.unique(arr.astype(np.int64))
            bad = (arr < 0) | (arr >= num_vms)
            if bad.any():
                raise ValueError(f"deployment_sets[{i}]: member index {int(arr[_first(bad)])} is not a VM "
                                 f"(the fleet has {num_vms})")
            if arr.size and (self.vm_cluster[arr] != self.vm_cluster[arr[0]]).any():
                raise ValueError(f"deployment_sets[{i}]: members in clusters "
                                 f"{sorted({self.cluster_names[c] for c in self.vm_cluster[arr].tolist()})}: "
                                 "a set lies within one cluster")
            out.append((str(granularity), arr))
        return out

    def _node_usage(self) -> tuple[np.ndarray, np.ndarray]:
        """(V, 2) vCPU and MB each VM uses on NUMA node 0 and 1 of its host (canonical, swapped for placement 1)."""
        swap = (self.vm_placement == 1)[:, None]
        return np.where(swap, self.vm_cpu[:, ::-1], self.vm_cpu), np.where(swap, self.vm_mem[:, ::-1], self.vm_mem)

    def _free_from_placements(self) -> tuple[np.ndarray, np.ndarray]:
        # digital_twin.vm.metrics.free_from_placements' arithmetic, summation order included: bincount
        # adds each cell's VMs in index order, the order of a cluster's own VMs, so free_mem here is
        # bit-identical to the twin's (the env's memory features are computed from it).
        cpu, mem = self._node_usage()
        cells = np.concatenate([2 * self.vm_host, 2 * self.vm_host + 1])
        num_cells = self.numa_cpu_total.size
        used_cpu = np.bincount(cells, weights=np.concatenate([cpu[:, 0], cpu[:, 1]]), minlength=num_cells)
        used_mem = np.bincount(cells, weights=np.concatenate([mem[:, 0], mem[:, 1]]), minlength=num_cells)
        free_cpu = self.numa_cpu_total - used_cpu.astype(np.int64).reshape(-1, 2)
        return np.ascontiguousarray(free_cpu), np.ascontiguousarray(self.numa_mem_total - used_mem.reshape(-1, 2))

    def _build_static(self) -> None:
        """Tables that depend on the static fields only: feature scales and rows, VM shapes, racks."""
        num_vms = len(self.vm_ids)
        # The env's scales: the largest NUMA node of the snapshot (so features never depend on padding).
        self._cpu_scale = float(int(self.numa_cpu_total.max()))
        self._mem_scale = float(float(self.numa_mem_total.max()))
        cs, ms = self._cpu_scale, self._mem_scale
        # The env's _static_rows, expression for expression (float32 division by a Python float).
        cpu, mem = self.vm_cpu.astype(np.float32), self.vm_mem.astype(np.float32)
        span, allow = (self.vm_span == 2)[:, None], self.vm_allow_migration[:, None]
        zero = np.zeros((num_vms, 1), np.float32)
        self._rows_canonical = np.concatenate([cpu / cs, mem / ms, span, allow, zero], axis=1).astype(np.float32)
        self._rows_swapped = np.concatenate([cpu[:, ::-1] / cs, mem[:, ::-1] / ms, span, allow, zero],
                                            axis=1).astype(np.float32)
        self._vm_rows = np.where((self.vm_placement == 1)[:, None], self._rows_swapped, self._rows_canonical)
        # VMs of one shape (cluster, span, usage) have the same capacity-feasible hosts: masks are per shape.
        key = np.concatenate([self.vm_cluster[:, None].astype(np.float64), self.vm_span[:, None].astype(np.float64),
                              self.vm_cpu.astype(np.float64), self.vm_mem], axis=1)
        if num_vms:
            shapes, inverse = np.unique(key, axis=0, return_inverse=True)
        else:
            shapes, inverse = np.zeros((0, 6)), np.zeros(0, np.int64)
        self._vm_shape = inverse.reshape(-1).astype(np.int64)
        self._shape_cluster = shapes[:, 0].astype(np.int64)
        self._shape_split = np.flatnonzero(shapes[:, 1] == 2)
        self._shape_cpu = shapes[:, 2:4].astype(np.int64)
        self._shape_mem = np.ascontiguousarray(shapes[:, 4:6])
        # (K, H): hosts a shape may use at all (its cluster's active hosts).
        self._shape_hosts = (self._shape_cluster[:, None] == self.host_cluster[None, :]) & self.host_active[None, :]
        self._all_allowed = bool(self.vm_allow_migration.all())
        # Dense global rack codes: racks are per cluster (rack 3 of two clusters are two racks).
        self._rack_code = np.unique(np.stack([self.host_cluster, self.host_rack], axis=1), axis=0,
                                    return_inverse=True)[1].reshape(-1).astype(np.int64)
        self._num_racks = int(self._rack_code.max()) + 1
        self._host_index: dict[str, int] | None = None
        self._vm_index: dict[str, int] | None = None

    def _build_sets(self) -> None:
        """Index the sets: members per set (CSR) and memberships (VM, set) sorted by VM."""
        sizes = [len(m) for _, m in self.deployment_sets]
        self._set_rack = np.array([g == "rack" for g, _ in self.deployment_sets], dtype=bool)
        self._set_ptr = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._set_flat = (np.concatenate([m for _, m in self.deployment_sets]).astype(np.int64)
                          if self.deployment_sets else np.zeros(0, np.int64))
        flat_set = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        self._has_sets = bool(len(self._set_flat))
        # Memberships in VM order (stable: a VM's sets in set order): p -> VM, set, position in _set_flat.
        order = np.argsort(self._set_flat, kind="stable")
        self._p_flat = order
        self._p_vm = self._set_flat[order]
        self._p_set = flat_set[order]
        self._p_rack = self._set_rack[self._p_set] if len(order) else np.zeros(0, bool)
        self._flat_set = flat_set
        num_vms = len(self.vm_ids)
        self._vm_p_lo = np.searchsorted(self._p_vm, np.arange(num_vms), side="left")
        self._vm_p_hi = np.searchsorted(self._p_vm, np.arange(num_vms), side="right")
        per_vm = self._vm_p_hi - self._vm_p_lo
        # VMs in exactly one set get an exact count per membership; the (rare) VMs in several sets
        # are checked host by host, over the union of their sets' closed hosts.
        self._single_p = self._vm_p_lo[per_vm == 1]
        self._multi_vms = np.flatnonzero(per_vm > 1)

    def _dirty(self) -> None:
        """Forget what depends on the placement (after a migration)."""
        self._fit: np.ndarray | None = None
        self._movable: np.ndarray | None = None

    # ------------------------------------------------------------------ sizes and lookups
    @property
    def num_hosts(self) -> int:
        return len(self.host_ids)

    @property
    def num_vms(self) -> int:
        return len(self.vm_ids)

    @property
    def num_actions(self) -> int:
        """Actions of the env padded to this fleet: ``max(V, 2 H) + 1``; the last one stops."""
        return max(self.num_vms, 2 * self.num_hosts) + 1

    def host_index(self, host_id: str) -> int:
        """Global index of a host by its id (KeyError if unknown)."""
        if self._host_index is None:
            self._host_index = {h: i for i, h in enumerate(self.host_ids)}
        return self._host_index[host_id]

    def vm_index(self, vm_id: str) -> int:
        """Global index of a VM by its id (KeyError if unknown)."""
        if self._vm_index is None:
            self._vm_index = {v: i for i, v in enumerate(self.vm_ids)}
        return self._vm_index[vm_id]

    def copy(self) -> "Fleet":
        """An independent copy: placements and free capacity copied, static tables shared."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name in ("vm_host", "vm_placement", "free_cpu", "free_mem", "_vm_rows"):
            setattr(new, name, getattr(self, name).copy())
        for name in ("_fit", "_movable"):
            if getattr(self, name) is not None:
                setattr(new, name, getattr(self, name).copy())
        return new

    # ------------------------------------------------------------------ feasibility
    def _check_vm(self, vm: Any) -> int:
        try:
            vm = operator.index(vm)
        except TypeError:
            raise ValueError(f"VM index must be an integer, got {vm!r}") from None
        if not 0 <= vm < self.num_vms:
            raise ValueError(f"VM index {vm} out of range [0, {self.num_vms})")
        return vm

    def _shape_fit(self) -> np.ndarray:
        """(K, H, 2) bool: capacity feasibility of each VM shape per host and placement (own host included).

        Only the shape's cluster's active hosts; a split shape has placement 0 only.
        """
        if self._fit is None:
            free_cpu, free_mem = self.free_cpu, self.free_mem
            cpu, mem = self._shape_cpu, self._shape_mem
            fit = (free_cpu[None] >= cpu[:, 0, None, None]) & (free_mem[None] >= mem[:, 0, None, None])
            split = self._shape_split
            if len(split):
                fit[split, :, 0] &= (free_cpu[None, :, 1] >= cpu[split, 1, None]) \
                    & (free_mem[None, :, 1] >= mem[split, 1, None])
                fit[split, :, 1] = False
            fit &= self._shape_hosts[:, :, None]
            self._fit = fit
        return self._fit

    def _blocked_rows(self, p: np.ndarray) -> np.ndarray:
        """(len(p), H) bool: the hosts membership ``p``'s set closes to its VM.

        Those where another member is (host set), or every host of a rack where another member is
        (rack set). The VM itself closes nothing: its own host is excluded from destinations anyway.
        """
        num_hosts = self.num_hosts
        sets, vms = self._p_set[p], self._p_vm[p]
        starts, lens = self._set_ptr[sets], self._set_ptr[sets + 1] - self._set_ptr[sets]
        row = np.repeat(np.arange(len(p)), lens)
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        other = self._set_flat[np.repeat(starts, lens) + offsets]
        keep = other != vms[row]
        row, where = row[keep], self.vm_host[other[keep]]
        rack = self._set_rack[sets][row]
        rows = np.zeros((len(p), num_hosts), dtype=bool)
        rows[row[~rack], where[~rack]] = True
        if rack.any():
            racks = np.zeros((len(p), self._num_racks), dtype=bool)
            racks[row[rack], self._rack_code[where[rack]]] = True
            is_rack = self._p_rack[p]
            rows[is_rack] |= racks[is_rack][:, self._rack_code]
        return rows

    def feasible_destinations(self, vm: int) -> np.ndarray:
        """Where VM ``vm`` may migrate to now (the env's phase-1 mask, as ``mask[host, placement]``).

        Args:
            vm: global VM index.

        Returns:
            (H, 2) bool over global hosts: False outside the VM's cluster, at placement 1 of a split
            VM, and everywhere for a VM that does not allow migration (Cluster.feasible_destinations
            within the cluster).

        Raises:
            ValueError: ``vm`` is not a VM index.
        """
        vm = self._check_vm(vm)
        if not self.vm_allow_migration[vm]:
            return np.zeros((self.num_hosts, 2), dtype=bool)
        mask = self._shape_fit()[self._vm_shape[vm]].copy()
        mask[self.vm_host[vm]] = False
        lo, hi = self._vm_p_lo[vm], self._vm_p_hi[vm]
        if hi > lo:
            mask[self._blocked_rows(np.arange(lo, hi)).any(axis=0)] = False
        return mask

    def movable(self) -> np.ndarray:
        """(V,) bool: which VMs have at least one feasible destination now (Cluster.movable_vms).

        Per shape, the hosts that fit it; a VM is movable when some fitting host other than its own
        is left open by its sets. For a VM in one set that is a count: the fitting hosts minus those
        the set occupies (hosts, or whole racks; the VM's own rack stays open when it is alone
        there, bar its own host). VMs in several sets are checked host by host.
        """
        if self._movable is None:
            fit = self._shape_fit().any(axis=2)  # (K, H)
            count = fit.sum(axis=1)
            shape = self._vm_shape
            movable = count[shape] > fit[shape, self.vm_host]
            if not self._all_allowed:
                movable &= self.vm_allow_migration
            if self._has_sets:
                self._refine_with_sets(movable, fit, count)
            self._movable = movable
        return self._movable.copy()

    def _refine_with_sets(self, movable: np.ndarray, fit: np.ndarray, count: np.ndarray) -> None:
        """Clear ``movable`` of the set members whose sets close every fitting host (in place)."""
        num_racks = self._num_racks
        # Occupancy as unique (set, unit) pairs, a unit a host (host set) or rack (rack set): sets only
        # ever hold a few members, so this is O(members x shapes), not O(sets x hosts x shapes).
        where = self.vm_host[self._set_flat]
        rack_flat = self._set_rack[self._flat_set]
        unit = np.where(rack_flat, self._rack_code[where], where)
        width = max(self.num_hosts, num_racks)
        pair_key, pair_of_flat, pair_count = np.unique(self._flat_set * width + unit, return_inverse=True,
                                                       return_counts=True)
        pair_set, pair_unit = pair_key // width, pair_key % width
        pair_rack = self._set_rack[pair_set]
        # (K, R) fitting hosts per rack.
        num_shapes = fit.shape[0]
        cells = (np.arange(num_shapes)[:, None] * num_racks + self._rack_code[None, :]).reshape(-1)
        rack_fit = np.bincount(cells, weights=fit.reshape(-1), minlength=num_shapes * num_racks) \
            .reshape(num_shapes, num_racks).astype(np.int64)
        # Per pair, the fitting hosts (per shape) it closes; summed per set: (S, K).
        closed = np.empty((len(pair_key), num_shapes), dtype=np.int64)
        closed[~pair_rack] = fit.T[pair_unit[~pair_rack]]
        closed[pair_rack] = rack_fit.T[pair_unit[pair_rack]]
        starts = np.flatnonzero(np.r_[True, pair_set[1:] != pair_set[:-1]])
        per_set = np.zeros((len(self.deployment_sets), num_shapes), dtype=np.int64)
        per_set[pair_set[starts]] = np.add.reduceat(closed, starts, axis=0)

        p = self._single_p
        if len(p):
            vms, sets = self._p_vm[p], self._p_set[p]
            shape, own = self._vm_shape[vms], self.vm_host[vms]
            avail = count[shape] - per_set[sets, shape]  # own host among the closed (its unit is occupied)
            rack = self._p_rack[p]
            if rack.any():
                # Alone in its rack, the VM's rack is open to it again, bar its own host.
                alone = rack & (pair_count[pair_of_flat[self._p_flat[p]]] == 1)
                own_rack = self._rack_code[own]
                avail += np.where(alone, rack_fit[shape, own_rack] - fit[shape, own], 0)
            movable[vms] &= avail > 0
        vms = self._multi_vms
        if len(vms):
            lo, hi = self._vm_p_lo[vms], self._vm_p_hi[vms]
            lens = hi - lo
            p = np.repeat(lo, lens) + np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
            blocked = np.logical_or.reduceat(self._blocked_rows(p), np.cumsum(lens) - lens, axis=0)
            open_ = fit[self._vm_shape[vms]] & ~blocked
            open_[np.arange(len(vms)), self.vm_host[vms]] = False
            movable[vms] &= open_.any(axis=1)

    def check_migration(self, vm: int, host: int, placement: int) -> str | None:
        """Why migrating ``vm`` to ``(host, placement)`` is infeasible, or None when it is feasible.

        The reason names the VM and host ids and what was needed (free vCPU/MB, the set member in
        the way); feasible exactly where :meth:`feasible_destinations` says so.
        """
        try:
            vm, host = operator.index(vm), operator.index(host)
        except TypeError:
            return f"VM and host must be integer indices, got {vm!r}, {host!r}"
        if not 0 <= vm < self.num_vms:
            return f"VM index {vm} out of range [0, {self.num_vms})"
        if not 0 <= host < self.num_hosts:
            return f"host index {host} out of range [0, {self.num_hosts})"
        if placement is not None and not isinstance(placement, bool) and placement in (0, 1):
            placement = int(placement)
        else:
            return f"placement must be 0 or 1, got {placement!r}"
        vm_id, host_id = self.vm_ids[vm], self.host_ids[host]
        if not self.vm_allow_migration[vm]:
            return f"VM {vm_id} does not allow migration"
        if host == self.vm_host[vm]:
            return f"VM {vm_id} is already on host {host_id}"
        cluster, host_cluster = int(self.vm_cluster[vm]), int(self.host_cluster[host])
        if host_cluster != cluster:
            return (f"host {host_id} is in cluster {self.cluster_names[host_cluster]}, VM {vm_id} in cluster "
                    f"{self.cluster_names[cluster]}: migrations stay within a cluster")
        if not self.host_active[host]:
            return f"host {host_id} is not active: VM {vm_id} may not go there"
        span = int(self.vm_span[vm])
        if placement == 1 and span == 2:
            return f"VM {vm_id} spans both NUMA nodes: only placement 0 exists"
        for part in range(span):
            node = part ^ placement
            cpu, mem = int(self.vm_cpu[vm, part]), float(self.vm_mem[vm, part])
            free_cpu, free_mem = int(self.free_cpu[host, node]), float(self.free_mem[host, node])
            if cpu > free_cpu:
                return f"host {host_id} NUMA {node} has {free_cpu} vCPU free, VM {vm_id} needs {cpu}"
            if mem > free_mem:
                return f"host {host_id} NUMA {node} has {free_mem:g} MB free, VM {vm_id} needs {mem:g}"
        for p in range(self._vm_p_lo[vm], self._vm_p_hi[vm]):
            s = int(self._p_set[p])
            granularity, members = self.deployment_sets[s]
            where = self.vm_host[members]
            hit = (self._rack_code[where] == self._rack_code[host]) if granularity == "rack" else (where == host)
            hit &= members != vm
            if hit.any():
                other = int(members[_first(hit)])
                at = f"host {self.host_ids[self.vm_host[other]]}"
                if granularity == "rack":
                    at += f", in the rack of host {host_id} (rack {int(self.host_rack[host])})"
                return (f"anti-affinity: deployment set {s} ({granularity} granularity) of VM {vm_id} already has "
                        f"VM {self.vm_ids[other]} on {at}")
        return None

    # ------------------------------------------------------------------ migrations
    def migrate(self, vm: int, host: int, placement: int = 0) -> None:
        """Live-migrate VM ``vm`` to ``(host, placement)``.

        Raises:
            ValueError: the move is infeasible (the reason of :meth:`check_migration`); nothing changed.
        """
        reason = self.check_migration(vm, host, placement)
        if reason is not None:
            raise ValueError(f"cannot migrate: {reason}")
        vm, host, placement = int(vm), int(host), int(placement)
        src, src_place = int(self.vm_host[vm]), int(self.vm_placement[vm])
        # Part by part as Cluster._move does (x + m back at the source, x - m at the destination:
        # the twin's x + (-1) * m, the same float), so free_mem stays bit-identical to the twin's.
        for part in range(int(self.vm_span[vm])):
            cpu, mem = int(self.vm_cpu[vm, part]), float(self.vm_mem[vm, part])
            node = part ^ src_place
            self.free_cpu[src, node] += cpu
            self.free_mem[src, node] = float(self.free_mem[src, node]) + mem
            node = part ^ placement
            self.free_cpu[host, node] -= cpu
            self.free_mem[host, node] = float(self.free_mem[host, node]) - mem
        self.vm_host[vm] = host
        self.vm_placement[vm] = placement
        self._vm_rows[vm] = (self._rows_swapped if placement == 1 else self._rows_canonical)[vm]
        self._dirty()

    # ------------------------------------------------------------------ metrics and observations
    def fragment_rates(self) -> tuple[float, float, float]:
        """Fleet-wide fragment rates at 16, 8 and 32 vCPU (the env's ``_refresh_fragment_rates``).

        ``sum(free mod k) / sum(free)`` over the active hosts' NUMA nodes of all clusters
        together, 0 when nothing is free; integer sums, one division each.
        """
        free = self.free_cpu if bool(self.host_active.all()) else self.free_cpu[self.host_active]
        total = int(free.sum())
        if not total:
            return 0.0, 0.0, 0.0
        # free >= 0 always (migrations are refused otherwise): free & (k - 1) == free % k.
        return int((free & 15).sum()) / total, int((free & 7).sum()) / total, int((free & 31).sum()) / total

    def action_mask(self, selected: int = -1) -> np.ndarray:
        """(n,) bool, n = :attr:`num_actions`: the env's valid actions.

        Phase 0 (``selected < 0``): the movable VMs, and stop (``n - 1``). Phase 1: the feasible
        destinations ``2 * host + placement`` of VM ``selected``.
        """
        mask = np.zeros(self.num_actions, dtype=bool)
        if selected < 0:
            mask[: self.num_vms] = self.movable()
            mask[-1] = True
        else:
            mask[: 2 * self.num_hosts] = self.feasible_destinations(selected).reshape(-1)
        return mask

    def observation(self, selected: int, budget: int, used: int) -> dict[str, np.ndarray]:
        """The env's observation dict for an env padded to exactly this fleet (max_hosts=H, max_vms=V).

        Args:
            selected: the VM picked in phase 0, or -1 (phase 0: picking a VM).
            budget: the episode's migration budget (>= 1).
            used: migrations made so far, 0..budget.

        Returns:
            ``vm_features`` (V, 7) float32, ``host_features`` (H, 7) float32, ``vm_host`` (V,)
            int64, ``vm_mask`` (V,) int8, ``host_mask`` (H,) int8, ``selected_vm`` (1,) int64,
            ``globals`` (5,) float32, ``action_mask`` (n,) int8: the same keys, dtypes and values as
            ``VMReschedulingEnv``'s, new arrays the caller owns.

        Raises:
            ValueError: ``selected`` is not -1 or a VM index, or the budget or its use is out of range.
        """
        selected = int(selected)
        if selected != -1:
            self._check_vm(selected)
        if isinstance(budget, bool) or int(budget) != budget or budget < 1:
            raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
        if not 0 <= used <= budget:
            raise ValueError(f"used must be in [0, budget={budget}], got {used!r}")
        budget, used = int(budget), int(used)
        vm_features = self._vm_rows.copy()
        if selected >= 0:
            vm_features[selected, 6] = 1.0
        cs, ms = self._cpu_scale, self._mem_scale
        free_cpu = self.free_cpu
        host_features = np.empty((self.num_hosts, len(HOST_FEATURES)), np.float32)
        host_features[:, 0:2] = free_cpu / cs  # float64, then stored as float32 (the env's order)
        host_features[:, 2:4] = self.free_mem / ms
        host_features[:, 4:6] = (free_cpu & 15) / 16.0
        host_features[:, 6] = self.host_active
        phase = PHASE_PICK_DESTINATION if selected >= 0 else PHASE_PICK_VM
        globals_ = np.array([*self.fragment_rates(), (budget - used) / budget, float(phase)], dtype=np.float32)
        return {
            "vm_features": vm_features,
            "host_features": host_features,
            "vm_host": self.vm_host.copy(),
            "vm_mask": np.ones(self.num_vms, np.int8),
            "host_mask": np.ones(self.num_hosts, np.int8),
            "selected_vm": np.array([selected], dtype=np.int64),
            "globals": globals_,
            "action_mask": self.action_mask(selected).view(np.int8),
        }
