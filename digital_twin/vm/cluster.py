"""A cluster of two-NUMA hosts and the VMs placed on them, as plain numpy arrays.

The :class:`Cluster` is the VM-rescheduling twin's state. It answers "where can this VM go?" for
every host at once (:meth:`Cluster.feasible_destinations`), performs live migrations that respect
NUMA capacity, anti-affinity and migratability (:meth:`Cluster.migrate`, refused moves change
nothing), undoes them, and keeps the fragment-rate metrics up to date per migration rather than by
recomputing them (the tests check the two always agree).

Placement model. A VM either sits on one NUMA node (``span == 1``) or is split over both
(``span == 2``). ``vm_cpu[v]`` / ``vm_mem[v]`` hold its usage in *canonical* order: for a 1-NUMA
VM ``[usage, 0]``; for a split VM ``[usage on node 0, usage on node 1]``. A destination is a pair
``(host, placement)`` with ``placement`` in ``{0, 1}``: for a 1-NUMA VM the NUMA node it lands on;
a split VM keeps its split, so only placement 0 exists for it. Moving within the same host is not a
migration and is never feasible.

Anti-affinity. A deployment set forbids two of its members on one host (``granularity="host"``) or
one rack (``"rack"``). The cluster keeps each set's occupancy (members per host, or per rack) and,
per set and VM shape, how many hosts that fit the shape the set occupies; a migration updates only
the moved VM's sets and the two hosts it touched, so the masks of all set members stay one pass
(:meth:`Cluster.movable_vms`) however many sets there are. The occupancy is updated by the move
itself; the per-set counts it implies are deferred to the next compiled refresh, which every
reader of those counts goes through first. A VM's destinations are its shape's cached capacity
fit, less the hosts (racks) its sets' members hold (:meth:`Cluster.feasible_destinations`).

Per-step callers. :meth:`Cluster.migrate_feasible_into` is the env's call per migration: the move
(capacity, fragment sums, placement, set occupancy), the refresh of the two hosts it touched and
every VM's "can it move" verdict, in one compiled call (:mod:`~digital_twin.vm.cluster_kernels`),
without the checks of :meth:`Cluster.migrate` for a move read off the current mask. The verdicts
are read from a small table of (set, shape) cells, one int32 per VM, rebuilt per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from digital_twin.vm.cluster_kernels import (destinations_from_fit, migrate_refresh, migrate_refresh_single_sets,
                                             movable_from_cells, move_capacity, move_vm, refresh_fit_counts,
                                             refresh_movable, refresh_movable_single_sets, refresh_shape_hosts)
from digital_twin.vm.metrics import FRAGMENT_SIZES, fragment_rate, free_from_placements, type_fit_counts

assert FRAGMENT_SIZES == (8, 16, 32), "Cluster._move unrolls the fragment sizes"

ACTIVE_STATUS = "ACTIVE"


class InfeasibleMigrationError(ValueError):
    """A migration that would break a constraint; the cluster is left unchanged."""


@dataclass(frozen=True)
class VMType:
    """An instance type new VMs are created from (``vm_type_list[]`` in the VMR2L schema)."""

    name: str
    request_cpu: int
    request_mem_mb: float
    numa: int  # how many NUMA nodes a new VM of this type spans: 1 or 2
    expected_newly_created_num: int = 0
    weight: float = 0.0


@dataclass(frozen=True)
class DeploymentSet:
    """Anti-affinity: no two members may share a host (or a rack, by ``granularity``).

    ``members`` are VM indices of the cluster; repeats count once. A VM may be in several sets.
    """

    granularity: str  # "host" or "rack"
    members: np.ndarray  # (M,) VM indices


class Migration(NamedTuple):
    """One live migration: VM ``vm`` moved from ``(from_host, from_placement)`` to ``(to_host, to_placement)``."""

    vm: int
    from_host: int
    from_placement: int
    to_host: int
    to_placement: int
    mem_mb: float


_new_tuple = tuple.__new__
_NO_COUNTS = np.zeros((0, 0), dtype=np.int64)  # stands in for the set counts of a cluster that has none built
_NO_SETS = np.zeros(0, dtype=np.int64)  # the memberships of a VM in no set (read only)
_NO_HOSTS = np.zeros(0, dtype=np.int64)  # no host to refresh (read only by the kernels)
_HOST_BUFFER = 8  # touched hosts a cluster hands its compiled refresh through a reused buffer (more: a new array)
_NO_PENDING = np.zeros((0, 4), dtype=np.int64)  # no deferred set-count change (read only)
_NO_FIT = np.zeros((0, 0), dtype=bool)  # stands in for the shape fit where nothing reads it (read only)
_PENDING_ROWS = 64  # deferred set-count changes a cluster holds before it applies them


def _membership_arrays(memb: dict[int, tuple[tuple[bool, int], ...]], num_host_sets: int) -> dict[int, np.ndarray]:
    """Each VM's deployment sets as the compiled masks take them: (m,) rows of the member lists
    (host sets first, then rack sets: ``num_host_sets + index in its group``)."""
    return {v: np.array([num_host_sets + s if r else s for r, s in keys], dtype=np.int64) for v, keys in memb.items()}


def _member_lists(groups: tuple[list[np.ndarray], list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The sets' members as one CSR list, host sets then rack sets: (starts (S + 1,), members)."""
    every = groups[0] + groups[1]
    sizes = [len(m) for m in every]
    starts = np.zeros(len(every) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    members = np.concatenate(every).astype(np.int64) if every else np.zeros(0, dtype=np.int64)
    return starts, members


def _presence_bits(present: np.ndarray) -> np.ndarray:
    """(H, S) bool as (H, ceil(S / 64)) uint64: bit ``s % 64`` of word ``s // 64`` is ``present[h, s]``."""
    rows, sets = present.shape
    words = max(1, -(-sets // 64))
    padded = np.zeros((rows, words * 64), dtype=bool)
    padded[:, :sets] = present
    packed = np.packbits(padded.reshape(rows, words, 64), axis=2, bitorder="little")  # (H, W, 8), byte j: bits 8j..
    return np.ascontiguousarray(packed).view("<u8").reshape(rows, words).astype(np.uint64)


def _presence_matrix(bits: np.ndarray, sets: int) -> np.ndarray:
    """:func:`_presence_bits` undone: (H, W) uint64 as (H, ``sets``) bool."""
    as_bytes = np.ascontiguousarray(bits.astype("<u8")).view(np.uint8).reshape(bits.shape[0], -1)
    return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :sets].astype(bool)


def _flat_view(array: np.ndarray) -> memoryview:
    """A flat memoryview sharing ``array``'s memory (C-contiguous), for fast scalar access.

    Element access through it yields Python scalars and costs less than numpy's own indexing;
    bool arrays are viewed as uint8.
    """
    assert array.flags.c_contiguous, "array must be C-contiguous"  # then reshape(-1) is a view
    flat = array.reshape(-1)
    return memoryview(flat.view(np.uint8) if flat.dtype == bool else flat)

@dataclass
class Cluster:
    """Hosts, VMs and placements of one cluster.

    Static arrays describe hosts and VMs; ``vm_host`` / ``vm_placement`` and the free-capacity
    arrays change with migrations. Construct with the fields below, then use the methods; the free
    capacity and all metrics are derived at construction (a ``ValueError`` names a deployment set
    of unknown granularity or with a member index outside the cluster).

    Shapes:
        numa_cpu_total, numa_mem_total, free_cpu, free_mem: (H, 2)
        host_active, host_rack: (H,)
        vm_type, vm_host, vm_placement, vm_span, vm_allow_migration: (V,)
        vm_cpu, vm_mem: (V, 2)
    """

    name: str
    vm_types: list[VMType]
    host_ids: list[str]
    host_status: list[str]
    numa_cpu_total: np.ndarray  # (H, 2) int64 vCPU
    numa_mem_total: np.ndarray  # (H, 2) float64 MB of huge-page memory
    host_rack: np.ndarray  # (H,) int64 rack code (for rack-level anti-affinity)
    vm_ids: list[str]
    vm_type: np.ndarray  # (V,) int64 index into vm_types
    vm_host: np.ndarray  # (V,) int64 host index
    vm_placement: np.ndarray  # (V,) int64: NUMA node of a 1-NUMA VM, 0 for a split VM
    vm_span: np.ndarray  # (V,) int64: 1 or 2 NUMA nodes
    vm_cpu: np.ndarray  # (V, 2) int64 canonical usage (see module docstring)
    vm_mem: np.ndarray  # (V, 2) float64 canonical usage (MB)
    vm_allow_migration: np.ndarray  # (V,) bool
    deployment_sets: list[DeploymentSet] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # serialisation-only data (snapshot writer)

    def __post_init__(self) -> None:
        self.numa_cpu_total = np.asarray(self.numa_cpu_total, dtype=np.int64)
        self.numa_mem_total = np.asarray(self.numa_mem_total, dtype=np.float64)
        self.host_rack = np.asarray(self.host_rack, dtype=np.int64)
        self.vm_type = np.asarray(self.vm_type, dtype=np.int64)
        self.vm_host = np.asarray(self.vm_host, dtype=np.int64).copy()
        self.vm_placement = np.asarray(self.vm_placement, dtype=np.int64).copy()
        self.vm_span = np.asarray(self.vm_span, dtype=np.int64)
        self.vm_cpu = np.asarray(self.vm_cpu, dtype=np.int64)
        self.vm_mem = np.asarray(self.vm_mem, dtype=np.float64)
        self.vm_allow_migration = np.asarray(self.vm_allow_migration, dtype=bool)
        self.host_active = np.array([s == ACTIVE_STATUS for s in self.host_status], dtype=bool)
        self._has_inactive = not bool(self.host_active.all())
        self._host_index = {h: i for i, h in enumerate(self.host_ids)}
        self._vm_index = {v: i for i, v in enumerate(self.vm_ids)}
        self._type_cpu = np.array([t.request_cpu for t in self.vm_types], dtype=np.int64)
        self._type_mem = np.array([t.request_mem_mb for t in self.vm_types], dtype=np.float64)
        self._type_span = np.array([t.numa for t in self.vm_types], dtype=np.int64)
        self._set_type_requests()
        self._build_shapes()
        # Per-VM Python scalars for the one-move hot path (numpy scalar access costs ~100 ns a time).
        self._vm_cpu_t = [tuple(r) for r in self.vm_cpu.tolist()]
        self._vm_mem_t = [tuple(r) for r in self.vm_mem.tolist()]
        self._vm_mem_total = self.vm_mem.sum(axis=1).tolist()
        self._vm_parts = [tuple(p for p in (0, 1) if c[p] or m[p]) for c, m in zip(self._vm_cpu_t, self._vm_mem_t)]
        self._vm_span_l = self.vm_span.tolist()
        self._allow_l = self.vm_allow_migration.tolist()
        self._active_l = self.host_active.tolist()
        self._num_vms, self._num_hosts = len(self.vm_ids), len(self.host_ids)
        self._build_sets()
        self.free_cpu, self.free_mem = free_from_placements(
            self.numa_cpu_total, self.numa_mem_total, self.vm_host, *self.vm_node_usage()
        )
        self._set_flat_views()
        self.history: list[Migration] = []
        self.memory_moved_mb = 0.0
        self._recompute_fragment_sums()
        self._fit_counts = self._compute_fit_counts()
        self._fit_totals = self._fit_counts.sum(axis=1)  # (T,) kept with the per-host counts
        # Copies share _fit_counts until one of them recounts (copy on write): most episodes read
        # the capacity once, at their end, and a copy per reset would cost more than the recount.
        self._fit_shared = False
        self._fit_dirty: set[int] = set()
        self._placement_token = object()  # replaced by every move (see placement_token)
        self._shape_fit: np.ndarray | None = None  # (K, H, 2) cache behind _shape_masks()
        self._shape_dirty: set[int] = set()

    # ------------------------------------------------------------------ sizes and lookups
    @property
    def num_hosts(self) -> int:
        return len(self.host_ids)

    @property
    def num_vms(self) -> int:
        return len(self.vm_ids)

    @property
    def placement_token(self) -> object:
        """An object that stands for the current placement: a new one after every migration or undo.

        Copies share it until either of them moves a VM, so two clusters with the same token (by
        ``is``) and the same static arrays have the same placement and free capacity: a cache of
        what they derive (the env's observation rows) may be reused without comparing the arrays.
        """
        return self._placement_token

    def host_index(self, host_id: str) -> int:
        """Index of a host by its id."""
        return self._host_index[host_id]

    def vm_index(self, vm_id: str) -> int:
        """Index of a VM by its id."""
        return self._vm_index[vm_id]

    @property
    def shape_span(self) -> np.ndarray:
        """(K,) NUMA nodes spanned by each VM shape; ``vm_shape[v]`` is VM ``v``'s shape.

        VMs of one shape (span, canonical CPU and memory usage) have the same feasible
        destinations, which lets masks and solvers work per shape instead of per VM.
        """
        return self._shape_span

    @property
    def shape_cpu(self) -> np.ndarray:
        """(K, 2) canonical vCPU usage of each VM shape (see :attr:`shape_span`)."""
        return self._shape_cpu

    @property
    def shape_mem(self) -> np.ndarray:
        """(K, 2) canonical memory usage (MB) of each VM shape (see :attr:`shape_span`)."""
        return self._shape_mem

    def vm_node_usage(self, placement: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CPU and memory each VM uses on NUMA node 0 and node 1 of its host.

        Args:
            placement: (V,) placements to evaluate instead of the current ones (a planned
                target, say); None for the current placement.

        Returns:
            ``(cpu, mem)``, each (V, 2): the canonical usage, swapped for placement 1.
        """
        swap = ((self.vm_placement if placement is None else np.asarray(placement)) == 1)[:, None]
        cpu = np.where(swap, self.vm_cpu[:, ::-1], self.vm_cpu)
        mem = np.where(swap, self.vm_mem[:, ::-1], self.vm_mem)
        return cpu, mem

    def _set_type_requests(self) -> None:
        # Per NUMA node request of each type (a 2-NUMA type needs half on each, as type_fit_counts
        # counts): the compiled recount takes them when all are positive, else the numpy definition does.
        self._type_span2 = self._type_span == 2
        self._type_cpu_node = np.where(self._type_span2, -(-self._type_cpu // 2), self._type_cpu).astype(np.int64)
        self._type_mem_node = np.where(self._type_span2, self._type_mem / 2.0, self._type_mem)
        self._fit_compiled = bool((self._type_cpu_node > 0).all() and (self._type_mem_node > 0).all()
                                  and np.isfinite(self._type_mem_node).all())

    def _build_sets(self) -> None:
        """Index the deployment sets: memberships, and each set's occupancy of hosts or racks.

        Raises:
            ValueError: a set of unknown granularity, or with a member index outside the cluster.
        """
        num_vms, num_hosts = self._num_vms, self._num_hosts
        # Dense rack codes 0..R-1 (files carry arbitrary rack ids), so rack occupancy is a (S_r, R) array.
        self._rack_code = np.unique(self.host_rack, return_inverse=True)[1].reshape(-1).astype(np.int64)
        self._rack_code_l = self._rack_code.tolist()
        num_racks = int(self._rack_code.max()) + 1 if num_hosts else 0
        groups: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])  # host sets, rack sets
        self._set_index: dict[tuple[bool, int], int] = {}  # (is rack set, index in its group) -> deployment_sets index
        memb: dict[int, list[tuple[bool, int]]] = {}
        for i, dset in enumerate(self.deployment_sets):
            if dset.granularity not in ("host", "rack"):
                raise ValueError(f"cluster {self.name}: deployment set {i}: granularity must be 'host' or 'rack', "
                                 f"got {dset.granularity!r}")
            members = np.unique(np.asarray(dset.members, dtype=np.int64).reshape(-1))
            bad = members[(members < 0) | (members >= num_vms)]
            if len(bad):
                raise ValueError(f"cluster {self.name}: deployment set {i}: member index {int(bad[0])} is not a VM "
                                 f"of the cluster (it has {num_vms})")
            rack = dset.granularity == "rack"
            key = (rack, len(groups[rack]))
            groups[rack].append(members)
            self._set_index[key] = i
            for m in members.tolist():
                memb.setdefault(m, []).append(key)
        self._set_members = groups
        self._vm_memb: dict[int, tuple[tuple[bool, int], ...]] = {v: tuple(k) for v, k in memb.items()}
        self._vm_memb_arrays = _membership_arrays(self._vm_memb, len(groups[0]))
        self._member_start, self._member_vms = _member_lists(groups)  # every set's members, for the masks
        self._has_sets = bool(memb)
        # Memberships (VM, set) in VM order, a VM's sets contiguous: the vectorised masks reduce over
        # them per VM (np.*.reduceat from _p_start).
        pairs = sorted((v, rack, s) for v, keys in memb.items() for rack, s in keys)
        nh, nr = len(groups[0]), len(groups[1])
        self._set_vms = np.array(sorted(memb), dtype=np.int64)
        self._p_vm = np.array([p[0] for p in pairs], dtype=np.int64)
        self._p_rack = np.array([p[1] for p in pairs], dtype=bool)
        self._p_set = np.array([p[2] for p in pairs], dtype=np.int64)
        self._p_start = (np.flatnonzero(np.r_[True, self._p_vm[1:] != self._p_vm[:-1]]) if pairs
                         else np.zeros(0, np.int64))
        self._multi = len(pairs) > len(self._set_vms)  # some VM is in more than one set
        k, shape = len(self._shape_span), self.vm_shape[self._p_vm]
        self._hp, self._rp = np.flatnonzero(~self._p_rack), np.flatnonzero(self._p_rack)
        hp, rp = self._hp, self._rp
        # Per membership, flat indices into _nbf (S_h + S_r, K), and for rack sets into the
        # (K, H) shape masks and the (K, R) per-rack fit counts (shape row offsets).
        self._num_shapes, self._num_racks, self._num_host_sets, self._num_rack_sets = k, num_racks, nh, nr
        self._hp_sk = self._p_set[hp] * k + shape[hp]
        self._rp_sk = (nh + self._p_set[rp]) * k + shape[rp]  # rack sets follow the host sets in _nbf
        self._rp_vm, self._rp_set = self._p_vm[rp], self._p_set[rp]
        self._rp_kh, self._rp_kr = shape[rp] * num_hosts, shape[rp] * num_racks
        self._p_shape = shape
        self._set_shape = self.vm_shape[self._set_vms]
        # Occupancy, unit-major so that the sets present on one host (rack) are one contiguous row:
        # (H, ceil(S_h / 64)) uint64 bits, which host sets have a member on each host (a count
        # per (host, set) would be a byte each: 150 KB on 1,010 hosts with 150 sets, copied with
        # every episode's snapshot; a move counts the set's other members on its two hosts
        # instead), and (R, S_r) members of each rack set per rack, in the narrowest integer that
        # holds any count (at most the largest set's size).
        where = self.vm_host[self._p_vm]
        largest = max((len(m) for group in groups for m in group), default=0)
        dtype = np.int8 if largest < 2**7 else np.int16 if largest < 2**15 else np.int32 if largest < 2**31 else np.int64
        self._occ_hp = _presence_bits(np.bincount(where[hp] * nh + self._p_set[hp], minlength=num_hosts * nh)
                                      .reshape(num_hosts, nh) > 0)
        self._occ_r = np.bincount(self._rack_code[where[rp]] * nr + self._p_set[rp], minlength=num_racks * nr) \
            .reshape(num_racks, nr).astype(dtype)
        # (rack, rack set) cells holding two members or more: none in a state that satisfies the sets.
        self._rack_crowded = int((self._occ_r >= 2).sum())
        # Built with the shape masks (_build_set_fit): fitting hosts per rack, and per (set, shape)
        # the fitting hosts the set occupies (its hosts, or the hosts of its racks).
        self._rack_fit: np.ndarray | None = None  # (K, R)
        self._nbf: np.ndarray | None = None  # (S_h + S_r, K): host sets, then rack sets
        # Set-count changes deferred by migrations (_move): a buffer made on first use.
        self._pending: np.ndarray | None = None  # (n, 4) int64
        self._num_pending = 0
        self._build_cells()

    def _build_cells(self) -> None:
        """Each VM's verdict cell for the compiled movable pass, and the rack-set memberships as its
        second look reads them.

        ``_vm_cell`` (V,): with one set at most per VM, ``s * K + k`` for a member of host set
        ``s`` of shape ``k``; ``S_h * K + k`` for a VM in no host set (``k`` alone when some VM is
        in several sets: the kernel's shape cells, the sets then checked apart); the cell after
        them for a VM that may not migrate (see :func:`~digital_twin.vm.cluster_kernels.movable_from_cells`).
        ``_rp_table`` (m, 6): ``(vm, set, shape, (S_h + set) * K + shape, shape * H, shape * R)`` per
        rack-set membership (:func:`~digital_twin.vm.cluster_kernels.rack_second_look`).
        """
        k = self._num_shapes
        single = self._has_sets and not self._multi
        base = self._num_host_sets * k if single else 0
        cell = base + self.vm_shape
        if single and len(self._hp):
            cell[self._p_vm[self._hp]] = self._hp_sk
        cell[~self.vm_allow_migration] = base + k
        self._vm_cell = cell.astype(np.int32 if base + k < 2**31 else np.int64)
        shape = self._p_shape[self._rp]
        self._rp_table = np.ascontiguousarray(
            np.stack([self._rp_vm, self._rp_set, shape, self._rp_sk, self._rp_kh, self._rp_kr], axis=1), dtype=np.int64
        ).reshape(-1, 6)
        self._host_buf: np.ndarray | None = None  # (made on first use: see _dirty_host_array)
        self._host_buf_view: memoryview | None = None

    def _build_set_fit(self) -> None:
        """From scratch, the per-set counts of fitting hosts behind the set members' masks."""
        any_fit = self._shape_any
        num_shapes, num_racks = any_fit.shape[0], self._num_racks
        cells = (np.arange(num_shapes)[:, None] * num_racks + self._rack_code[None, :]).reshape(-1)
        self._rack_fit = np.bincount(cells, weights=any_fit.reshape(-1), minlength=num_shapes * num_racks) \
            .reshape(num_shapes, num_racks).astype(np.int64)
        # Float matmuls (BLAS) of 0/1 matrices: integer counts, exact in float64.
        self._nbf = np.concatenate([
            _presence_matrix(self._occ_hp, self._num_host_sets).T.astype(np.float64) @ any_fit.T.astype(np.float64),
            (self._occ_r > 0).T.astype(np.float64) @ self._rack_fit.T.astype(np.float64),
        ]).astype(np.int64)
        self._num_pending = 0  # (counted from the occupancy as it is)

    def _build_shapes(self) -> None:
        # VMs of the same (span, usage) have the same feasible destinations; grouping them lets
        # masks for all VMs be computed once per shape.
        key = np.concatenate(
            [self.vm_span[:, None].astype(np.float64), self.vm_cpu.astype(np.float64), self.vm_mem], axis=1
        )
        if len(key):
            shapes, self.vm_shape = np.unique(key, axis=0, return_inverse=True)
        else:
            shapes, self.vm_shape = np.zeros((0, 5)), np.zeros(0, dtype=np.int64)
        self.vm_shape = self.vm_shape.reshape(-1).astype(np.int64)
        self._shape_span = shapes[:, 0].astype(np.int64)
        self._shape_cpu = shapes[:, 1:3].astype(np.int64)
        self._shape_mem = np.ascontiguousarray(shapes[:, 3:5])
        self._split_shapes = np.flatnonzero(self._shape_span == 2)
        self._shape_split = self._shape_span == 2
        self._vm_shape_row = self.vm_shape * len(self.host_ids)  # row offset into a flat (K*H,) array

    # ------------------------------------------------------------------ feasibility
    def feasible_destinations(self, vm: int, out: np.ndarray | None = None) -> np.ndarray:
        """Where VM ``vm`` may migrate to now.

        Feasible means: the VM may migrate, the destination host is active and is not its current
        host, the NUMA node(s) of the placement have the free CPU and memory, and no member of the
        VM's anti-affinity sets is on that host (or rack).

        Args:
            vm: VM index.
            out: an (H, 2) bool array to write into (and return) instead of a new one (a view
                of a caller's buffer, say).

        Returns:
            (H, 2) bool: ``mask[host, placement]``.
        """
        if not self._allow_l[vm]:
            if out is None:
                return np.zeros((self._num_hosts, 2), dtype=bool)
            out[:] = False
            return out
        mask = np.empty((self._num_hosts, 2), dtype=bool) if out is None else out
        if self._shape_fit is None or self._shape_dirty:
            self._shape_masks()  # the per-shape capacity feasibility, current on every host
        # The VM's shape row of it, less its own host and the hosts (racks) its sets' members hold.
        destinations_from_fit(mask, self._shape_fit, self.vm_shape.item(vm), vm, self._vm_memb_arrays.get(vm, _NO_SETS),
                              self._num_host_sets, self._member_start, self._member_vms, self.vm_host,
                              self._rack_code, self._num_racks)
        return mask

    def _anti_affinity_blocked(self, vm: int) -> np.ndarray:
        """(H,) bool: hosts VM ``vm`` may not go to because of its deployment sets.

        Read off the sets' occupancy (O(H) per set of the VM, whatever the set sizes); the VM's own
        host (rack) is blocked only if another member is there too.
        """
        blocked = None
        own = self.vm_host.item(vm)
        for rack, s in self._vm_memb.get(vm, ()):
            if rack:
                row = self._rack_blocked(vm, s)[self._rack_code]
            else:
                occ = self._host_set_occupancy(np.array([s]))[0]
                row = occ > 0
                row[own] = occ[own] > 1
            blocked = row if blocked is None else blocked | row
        return np.zeros(self._num_hosts, dtype=bool) if blocked is None else blocked

    def _host_set_occupancy(self, sets: np.ndarray) -> np.ndarray:
        """(len(sets), H) int64: the members of each of the host sets ``sets`` on each host, counted
        from the placement (the cluster keeps only which sets are present where: ``_occ_hp``)."""
        sets = np.asarray(sets, dtype=np.int64)
        start = self._member_start
        lens = start[sets + 1] - start[sets]
        before = np.cumsum(lens) - lens
        pos = np.repeat(start[sets] - before, lens) + np.arange(int(lens.sum()))
        cells = np.repeat(np.arange(len(sets)), lens) * self._num_hosts + self.vm_host[self._member_vms[pos]]
        return np.bincount(cells, minlength=len(sets) * self._num_hosts).reshape(len(sets), self._num_hosts)

    def _rack_blocked(self, vm: int, s: int) -> np.ndarray:
        """(R,) bool: racks that rack set ``s`` closes to its member ``vm`` (its own only if shared)."""
        r = self._rack_code_l[self.vm_host.item(vm)]
        row = self._occ_r[:, s] > 0
        row[r] = self._occ_r.item(r, s) > 1
        return row

    def _blocked_rows(self, pos: np.ndarray | None = None) -> np.ndarray:
        """(n, H) bool: :meth:`_anti_affinity_blocked` of the set members ``_set_vms[pos]`` (None: all), in one pass."""
        starts, total = self._p_start, len(self._p_vm)
        if pos is None:
            p, seg = np.arange(total), starts
        else:
            if len(pos) == 0:
                return np.zeros((0, self._num_hosts), dtype=bool)
            lens = np.r_[starts[1:], total][pos] - starts[pos]
            seg = np.r_[0, np.cumsum(lens)[:-1]]
            p = np.repeat(starts[pos] - seg, lens) + np.arange(int(lens.sum()))
        own = self.vm_host[self._p_vm[p]]
        sets, rack = self._p_set[p], self._p_rack[p]
        rows = np.empty((len(p), self._num_hosts), dtype=bool)
        i = np.flatnonzero(~rack)
        if len(i):
            occ = self._host_set_occupancy(sets[i])
            occ[np.arange(len(i)), own[i]] -= 1  # the VM itself blocks nothing
            rows[i] = occ > 0
        i = np.flatnonzero(rack)
        if len(i):
            occ = self._occ_r[:, sets[i]].T
            occ[np.arange(len(i)), self._rack_code[own[i]]] -= 1
            rows[i] = (occ > 0)[:, self._rack_code]
        return np.logical_or.reduceat(rows, seg, axis=0) if self._multi else rows

    def feasible_destinations_all(self) -> np.ndarray:
        """Feasible destinations of every VM at once.

        Returns:
            (V, H, 2) bool, row ``v`` equal to ``feasible_destinations(v)``.
        """
        mask = self._shape_masks()[self.vm_shape]
        mask[np.arange(self.num_vms), self.vm_host] = False
        mask[~self.vm_allow_migration] = False
        if self._has_sets:
            mask[self._set_vms] &= ~self._blocked_rows()[:, :, None]
        return mask

    def _compute_shape_masks(self, hosts: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(K, h, 2) bool: capacity feasibility of each VM shape on the given hosts (own host included)."""
        free_cpu, free_mem = self.free_cpu[hosts], self.free_mem[hosts]
        # 1-NUMA shapes: part 0 on either node. Split shapes: part j on node j, placement 0 only.
        mask = (free_cpu[None] >= self._shape_cpu[:, 0, None, None]) & (free_mem[None] >= self._shape_mem[:, 0, None, None])
        split = self._split_shapes
        if len(split):
            both = mask[split, :, 0] & (free_cpu[None, :, 1] >= self._shape_cpu[split, 1, None]) \
                & (free_mem[None, :, 1] >= self._shape_mem[split, 1, None])
            mask[split, :, 0] = both
            mask[split, :, 1] = False
        if self._has_inactive:
            mask[:, ~self.host_active[hosts]] = False
        return mask

    def _shape_masks(self) -> np.ndarray:
        """(K, H, 2) bool per-shape feasibility, refreshed only on hosts migrations touched since last asked."""
        if self._shape_fit is None:
            self._shape_fit = self._compute_shape_masks()
            self._shape_any = self._shape_fit.any(axis=2)
            self._shape_count = self._shape_any.sum(axis=1)
            self._shape_dirty.clear()
            if self._has_sets:
                self._build_set_fit()
        elif self._shape_dirty or self._num_pending:
            self._refresh_shape_hosts(self._shape_dirty)
            self._shape_dirty.clear()
        return self._shape_fit

    def _refresh_shape_hosts(self, hosts: set[int]) -> None:
        """Re-evaluate every shape on a few hosts (a migration touches two), and the set counts that follow.

        The set-count changes migrations deferred are applied first (see :meth:`_move`).
        """
        track = self._nbf is not None  # the per-set fit counts follow every change of "shape fits host"
        none = _NO_COUNTS  # (the kernel's arguments need arrays even when there are no set counts)
        pending = self._pending if self._num_pending else _NO_PENDING
        refresh_shape_hosts(np.fromiter(hosts, np.int64, len(hosts)), self.free_cpu, self.free_mem, self.host_active,
                            self._shape_cpu, self._shape_mem, self._shape_split, self._shape_fit, self._shape_any,
                            self._shape_count, track, self._rack_code, self._rack_fit if track else none,
                            self._occ_hp, self._occ_r, self._nbf if track else none, pending, self._num_pending)
        self._num_pending = 0

    def movable_vms(self, out: np.ndarray | None = None) -> np.ndarray:
        """(V,) bool: which VMs have at least one feasible destination now.

        Args:
            out: a (V,) bool array to write into (and return) instead of a new one.
        """
        movable = np.empty(self._num_vms, dtype=bool) if out is None else out
        self.movable_vms_into(movable)
        return movable

    def movable_vms_into(self, out: np.ndarray) -> int:
        """Write :meth:`movable_vms` into ``out`` ((V,) bool); returns how many VMs are movable.

        The hosts migrations touched since the masks were last asked for are re-evaluated in the
        same compiled call (one call per migration, which is what a per-step caller pays).
        """
        if self._shape_fit is None or (self._has_sets and self._multi):
            self._shape_masks()  # built from scratch, or (several sets per VM) refreshed here
        dirty = self._shape_dirty
        num_hosts = len(dirty)
        hosts = self._dirty_host_array(dirty) if num_hosts else _NO_HOSTS
        dirty.clear()
        # A VM is movable if its shape fits some host other than its own (and its sets leave one open).
        if not self._has_sets:
            return refresh_movable(out, hosts, num_hosts, self.free_cpu, self.free_mem, self.host_active,
                                   self._shape_cpu, self._shape_mem, self._shape_split, self._shape_fit,
                                   self._shape_any, self._shape_count, self._vm_cell, self.vm_host)
        if not self._multi:
            num_pending, self._num_pending = self._num_pending, 0
            return refresh_movable_single_sets(
                out, hosts, num_hosts, self.free_cpu, self.free_mem, self.host_active, self._shape_cpu,
                self._shape_mem, self._shape_split, self._shape_fit, self._shape_any, self._shape_count,
                self._rack_code, self._rack_fit, self._occ_hp, self._occ_r, self._nbf,
                self._pending if num_pending else _NO_PENDING, num_pending, self._vm_cell, self.vm_host,
                self._rp_table, self._rack_crowded > 0)
        # Some VM is in two sets or more: bounds, then a host-by-host look where unsure.
        movable_from_cells(out, self._vm_cell, self.vm_host, self._shape_any, self._shape_count, _NO_COUNTS, 0)
        out[self._set_vms] &= self._set_vms_movable()
        return int(np.count_nonzero(out))

    def _dirty_host_array(self, dirty: set[int]) -> np.ndarray:
        """The hosts in ``dirty`` as an int64 array for a compiled refresh: the first ``len(dirty)``
        entries of a buffer the cluster reuses (a migration touches two), or a new array if more."""
        if len(dirty) > _HOST_BUFFER:
            return np.fromiter(dirty, np.int64, len(dirty))
        view = self._host_buf_view
        if view is None:
            self._host_buf = np.zeros(_HOST_BUFFER, dtype=np.int64)
            view = self._host_buf_view = memoryview(self._host_buf)
        i = 0
        for host in dirty:
            view[i] = host
            i += 1
        return self._host_buf

    def _rack_avail(self) -> np.ndarray:
        """Per rack-set membership: fitting hosts open to the VM as far as that set is concerned.

        Those outside the set's racks, plus, when the VM is alone in its rack, the other fitting
        hosts of that rack (``back``).
        """
        own = self.vm_host.take(self._rp_vm)
        own_rack = self._rack_code.take(own)
        back = (self._rack_fit.reshape(-1).take(self._rp_kr + own_rack)
                - self._shape_any.reshape(-1).take(self._rp_kh + own))
        if self._rack_crowded:  # else every member is alone in its rack
            back *= self._occ_r.reshape(-1).take(own_rack * self._num_rack_sets + self._rp_set) == 1
        return (self._shape_count[None, :] - self._nbf).reshape(-1).take(self._rp_sk) + back

    def _set_vms_movable(self) -> np.ndarray:
        """(n,) bool per VM of ``_set_vms``: some fitting host other than its own is open to all its sets.

        Per membership (VM ``v`` of shape ``k`` in set ``s``): the hosts fitting ``k`` minus the
        fitting hosts ``s`` occupies (``v``'s own host is one, so it is excluded too); a rack set
        occupies whole racks, and when ``v`` is alone in its rack that rack is open again, bar
        ``v``'s own host. That count is exact for a VM in one set; for a VM in several, the smallest
        count and the count minus every set's exclusions bound the truth, and the rare VM the
        bounds leave open is checked host by host (:meth:`_blocked_rows`).
        """
        count = self._shape_count
        avail = np.empty(len(self._p_vm), dtype=np.int64)
        if len(self._hp):
            avail[self._hp] = (count[None, :] - self._nbf).reshape(-1).take(self._hp_sk)
        if len(self._rp):
            avail[self._rp] = self._rack_avail()
        if not self._multi:
            return avail > 0
        least = np.minimum.reduceat(avail, self._p_start)
        excluded = np.add.reduceat(count.take(self._p_shape) - avail, self._p_start)
        movable = least > 0
        unsure = np.flatnonzero(movable & (count.take(self._set_shape) - excluded <= 0))
        if len(unsure):
            vms = self._set_vms[unsure]
            open_ = self._shape_any[self.vm_shape[vms]] & ~self._blocked_rows(unsure)
            open_[np.arange(len(vms)), self.vm_host[vms]] = False
            movable[unsure] = open_.any(axis=1)
        return movable

    def check_migration(self, vm: int, host: int, placement: int) -> str | None:
        """Why migrating ``vm`` to ``(host, placement)`` is infeasible, or None when it is feasible."""
        if not 0 <= vm < self._num_vms:
            return f"VM index {vm} out of range [0, {self.num_vms})"
        if not 0 <= host < self._num_hosts:
            return f"host index {host} out of range [0, {self.num_hosts})"
        if placement != 0 and placement != 1:
            return f"placement must be 0 or 1, got {placement!r}"
        if not self._allow_l[vm]:
            return f"VM {self.vm_ids[vm]} does not allow migration"
        if host == self.vm_host.item(vm):
            return f"VM {self.vm_ids[vm]} is already on host {self.host_ids[host]}"
        if not self._active_l[host]:
            return f"host {self.host_ids[host]} is not active (status {self.host_status[host]!r})"
        if placement == 1 and self._vm_span_l[vm] == 2:
            return f"VM {self.vm_ids[vm]} spans both NUMA nodes: only placement 0 exists"
        cpu, mem = self._vm_cpu_t[vm], self._vm_mem_t[vm]
        base = 2 * host
        free_cpu, free_mem = self._free_cpu_flat, self._free_mem_flat
        if free_cpu is None:
            self._set_flat_views()
            free_cpu, free_mem = self._free_cpu_flat, self._free_mem_flat
        for part in self._vm_parts[vm]:
            node = part ^ placement
            if cpu[part] > free_cpu[base + node] or mem[part] > free_mem[base + node]:
                return self._capacity_reason(vm, host, node, cpu[part], mem[part])
        memb = self._vm_memb.get(vm)
        if memb is not None:
            return self._anti_affinity_reason(vm, host, memb)
        return None

    def _anti_affinity_reason(self, vm: int, host: int, memb: tuple[tuple[bool, int], ...]) -> str | None:
        """Which of VM ``vm``'s sets forbids ``host`` (not its own host) and through which member; None if none does."""
        own = self.vm_host.item(vm)
        for rack, s in memb:
            if rack:
                r = self._rack_code_l[host]
                taken = self._occ_r.item(r, s) - (r == self._rack_code_l[own])
            else:
                taken = (int(self._occ_hp.item(host, s >> 6)) >> (s & 63)) & 1
            if taken <= 0:
                continue
            # Refusal path only: find the member in the way, for the message.
            members = self._set_members[rack][s]
            where = self.vm_host[members]
            hit = (self._rack_code[where] == r) if rack else (where == host)
            other = int(members[hit & (members != vm)][0])
            at = f"host {self.host_ids[self.vm_host.item(other)]}"
            if rack:
                at += f", in the rack of host {self.host_ids[host]} (rack {self.host_rack.item(host)})"
            return (f"anti-affinity: deployment set {self._set_index[(rack, s)]} ({'rack' if rack else 'host'} "
                    f"granularity) of VM {self.vm_ids[vm]} already has VM {self.vm_ids[other]} on {at}")
        return None

    def _capacity_reason(self, vm: int, host: int, node: int, cpu: int, mem: float) -> str:
        free_cpu, free_mem = int(self.free_cpu[host, node]), float(self.free_mem[host, node])
        vm_id, host_id = self.vm_ids[vm], self.host_ids[host]
        if cpu > free_cpu:
            return f"host {host_id} NUMA {node} has {free_cpu} vCPU free, VM {vm_id} needs {cpu}"
        return f"host {host_id} NUMA {node} has {free_mem} MB free, VM {vm_id} needs {mem}"

    # ------------------------------------------------------------------ migrations
    def migrate(self, vm: int, host: int, placement: int = 0) -> Migration:
        """Live-migrate VM ``vm`` to ``(host, placement)``.

        Raises:
            InfeasibleMigrationError: the move breaks a constraint; nothing changed.

        Returns:
            The migration performed (also appended to :attr:`history`).
        """
        reason = self.check_migration(vm, host, placement)
        if reason is not None:
            raise InfeasibleMigrationError(f"cluster {self.name}: cannot migrate: {reason}")
        return self.migrate_feasible(vm, host, placement)

    def migrate_feasible(self, vm: int, host: int, placement: int = 0) -> Migration:
        """:meth:`migrate` without its checks, for a move known feasible in the current state.

        For a caller that took ``(host, placement)`` from :meth:`feasible_destinations` of ``vm``
        with no migration since (the env, whose action mask is exactly that): the checks would
        only repeat it. Anything else must go through :meth:`migrate`: an infeasible move made
        here breaks the cluster's invariants, silently.
        """
        src, src_place, mem = self.vm_host.item(vm), self.vm_placement.item(vm), self._vm_mem_total[vm]
        # tuple.__new__ skips NamedTuple's Python-level constructor (a third of a migration's cost).
        move = _new_tuple(Migration, (vm, src, src_place, host, placement, mem))
        self._move(vm, src, src_place, host, placement)
        self.history.append(move)
        self.memory_moved_mb += mem
        return move

    def undo(self) -> Migration:
        """Revert the most recent migration.

        Raises:
            IndexError: there is nothing to undo.
        """
        if not self.history:
            raise IndexError(f"cluster {self.name}: no migration to undo")
        move = self.history.pop()
        self._move(move.vm, move.to_host, move.to_placement, move.from_host, move.from_placement)
        self.memory_moved_mb -= move.mem_mb
        return move

    def _move(self, vm: int, src: int, src_place: int, dst: int, dst_place: int) -> None:
        """Move without checks: free capacity, placement, fragment sums and set occupancy, in one compiled call.

        The deployment sets' occupancy moves with the VM. A set's count of fitting hosts changes
        only when a host (rack) becomes or stops being occupied; it is kept against the cached fit,
        which :meth:`_refresh_shape_hosts` brings up to date. That change is deferred: ``(nbf row,
        unit, sign, rack?)`` goes into ``_pending``, and the next refresh (the compiled call that
        every reader of the counts goes through first) applies it against the fit cached until
        then, before re-evaluating the touched hosts: the same sums as applying it here. A full
        buffer is applied first (see :func:`~digital_twin.vm.cluster_kernels.move_vm`).
        """
        (cpu0, cpu1), (mem0, mem1) = self._vm_cpu_t[vm], self._vm_mem_t[vm]
        rows = self._vm_memb_arrays.get(vm)
        if rows is None:  # (in no set: the capacity part alone, fewer arrays to pass)
            d_free, d8, d16, d32 = move_capacity(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1,
                                                 self.free_cpu, self.free_mem, self.host_active, self.vm_host,
                                                 self.vm_placement)
        else:
            track = self._nbf is not None
            if track:
                pending = self._pending_buffer(len(rows))
                nbf, rack_fit, any_fit = self._nbf, self._rack_fit, self._shape_any
            else:
                pending, nbf, rack_fit, any_fit = _NO_PENDING, _NO_COUNTS, _NO_COUNTS, _NO_FIT
            d_free, d8, d16, d32, crowded, self._num_pending = move_vm(
                vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, self.free_cpu, self.free_mem,
                self.host_active, self.vm_host, self.vm_placement, rows, self._num_host_sets, self._member_start,
                self._member_vms, self._rack_code, self._occ_hp, self._occ_r, track, pending, self._num_pending,
                any_fit, rack_fit, nbf)
            self._rack_crowded += crowded
        self._moved(src, dst, d_free, d8, d16, d32)
        self._shape_dirty.add(src)
        self._shape_dirty.add(dst)

    def _moved(self, src: int, dst: int, d_free: int, d8: int, d16: int, d32: int) -> None:
        """A move's bookkeeping outside the compiled call: FR sums, the placement token, hosts to re-fit."""
        self._free_sum += d_free
        frag = self._frag_sums
        frag[8] += d8
        frag[16] += d16
        frag[32] += d32
        self._placement_token = object()
        self._fit_dirty.add(src)
        self._fit_dirty.add(dst)

    def _pending_buffer(self, memberships: int) -> np.ndarray:
        """The deferred set-count buffer, able to take the rows of a VM in ``memberships`` sets
        (made on first use; a larger one, the rows pending applied first, for a VM in many sets)."""
        pending = self._pending
        if pending is None or 2 * memberships > len(pending):
            if self._num_pending:
                self._refresh_shape_hosts(self._shape_dirty)
                self._shape_dirty.clear()
            pending = self._pending = np.zeros((max(_PENDING_ROWS, 2 * memberships), 4), dtype=np.int64)
        return pending

    def migrate_feasible_into(self, vm: int, host: int, placement: int, out: np.ndarray) -> tuple[Migration, int]:
        """:meth:`migrate_feasible`, then :meth:`movable_vms_into` ``out``: ``(the migration, movable VMs)``.

        One compiled call does both (the move, its set-count changes, the touched hosts' fit and
        every VM's verdict) where the masks are built and no VM is in two sets; otherwise the two
        calls. The same preconditions as :meth:`migrate_feasible`.
        """
        if self._shape_fit is None or (self._has_sets and self._multi):
            move = self.migrate_feasible(vm, host, placement)
            return move, self.movable_vms_into(out)
        src, src_place, mem = self.vm_host.item(vm), self.vm_placement.item(vm), self._vm_mem_total[vm]
        move = _new_tuple(Migration, (vm, src, src_place, host, placement, mem))
        (cpu0, cpu1), (mem0, mem1) = self._vm_cpu_t[vm], self._vm_mem_t[vm]
        dirty = self._shape_dirty  # (hosts moves touched since the last refresh, if any: refreshed too)
        num_hosts = len(dirty)
        hosts = self._dirty_host_array(dirty) if num_hosts else _NO_HOSTS
        dirty.clear()
        if not self._has_sets:
            d_free, d8, d16, d32, crowded, num_pending, movable = migrate_refresh(
                vm, src, src_place, host, placement, cpu0, cpu1, mem0, mem1, self.free_cpu, self.free_mem,
                self.host_active, self.vm_host, self.vm_placement, hosts, num_hosts, self._shape_cpu, self._shape_mem,
                self._shape_split, self._shape_fit, self._shape_any, self._shape_count, self._vm_cell, out)
        else:
            rows = self._vm_memb_arrays.get(vm, _NO_SETS)
            pending = self._pending_buffer(len(rows))
            d_free, d8, d16, d32, crowded, num_pending, movable = migrate_refresh_single_sets(
                vm, src, src_place, host, placement, cpu0, cpu1, mem0, mem1, self.free_cpu, self.free_mem,
                self.host_active, self.vm_host, self.vm_placement, rows, self._member_start, self._member_vms,
                self._rack_code, self._occ_hp, self._occ_r, pending, self._num_pending, hosts, num_hosts,
                self._shape_cpu, self._shape_mem, self._shape_split, self._shape_fit, self._shape_any,
                self._shape_count, self._rack_fit, self._nbf, self._vm_cell, self._rp_table, self._rack_crowded, out)
        self._num_pending = num_pending
        self._rack_crowded += crowded
        self._moved(src, host, d_free, d8, d16, d32)
        self.history.append(move)
        self.memory_moved_mb += mem
        return move, movable

    # ------------------------------------------------------------------ metrics
    @property
    def num_migrations(self) -> int:
        return len(self.history)

    def fragment_rate(self, size: int = 16) -> float:
        """Fragment rate at ``size`` vCPU (16: VMR2L's FR), maintained incrementally."""
        if size not in self._frag_sums:
            return fragment_rate(self.free_cpu, self.host_active, size)
        if self._free_sum == 0:
            return 0.0
        return self._frag_sums[size] / self._free_sum

    def _set_flat_views(self) -> None:  # (check_migration's; a copy makes them when it first checks)
        # Flat (H*2,) views of free_cpu / free_mem, index 2*host + node, sharing their memory.
        # memoryview element access returns Python scalars and is faster than numpy's on the
        # one-migration path, while the vectorised masks keep reading the numpy arrays.
        self._free_cpu_flat = _flat_view(self.free_cpu)
        self._free_mem_flat = _flat_view(self.free_mem)

    def fragment_sums(self, size: int = 16) -> tuple[int, int]:
        """``(sum of free_cpu mod size, sum of free_cpu)`` over active NUMA nodes: FR's numerator and denominator.

        Several clusters' FR is ``sum(numerators) / sum(denominators)``.
        """
        if size not in self._frag_sums:
            free = self.free_cpu[self.host_active]
            return int((free % size).sum()), int(free.sum())
        return self._frag_sums[size], self._free_sum

    def fragment_totals(self) -> tuple[int, int, int, int]:
        """``(sum of free_cpu, sum of free_cpu mod 8, mod 16, mod 32)`` over active NUMA nodes, in one call.

        The denominator and the three numerators of :meth:`fragment_sums` for ``FRAGMENT_SIZES``.
        """
        frag = self._frag_sums
        return self._free_sum, frag[8], frag[16], frag[32]

    def _recompute_fragment_sums(self) -> None:
        free = self.free_cpu[self.host_active]
        self._free_sum = int(free.sum())
        self._frag_sums = {size: int((free % size).sum()) for size in FRAGMENT_SIZES}

    def _compute_fit_counts(self, hosts: np.ndarray | slice = slice(None)) -> np.ndarray:
        return type_fit_counts(
            self.free_cpu[hosts], self.free_mem[hosts], self.host_active[hosts],
            self._type_cpu, self._type_mem, self._type_span,
        )

    def new_vm_capacity(self) -> dict[str, int]:
        """How many new VMs of each listed type still fit, one type at a time.

        Per-host counts are refreshed only for the hosts migrations touched since the last call.
        """
        if self._fit_dirty:
            if self._fit_shared:  # still the array of the cluster this one was copied from (or of a copy)
                self._fit_counts, self._fit_shared = self._fit_counts.copy(), False
            hosts = np.fromiter(self._fit_dirty, np.int64, len(self._fit_dirty))
            if self._fit_compiled:
                refresh_fit_counts(hosts, self.free_cpu, self.free_mem, self.host_active, self._type_cpu_node,
                                   self._type_mem_node, self._type_span2, self._fit_counts, self._fit_totals)
            else:  # a type requesting no CPU or memory: numpy's division semantics (type_fit_counts)
                self._fit_counts[:, hosts] = self._compute_fit_counts(hosts)
                self._fit_totals = self._fit_counts.sum(axis=1)
            self._fit_dirty.clear()
        return {t.name: int(n) for t, n in zip(self.vm_types, self._fit_totals.tolist())}

    def metrics(self) -> dict[str, Any]:
        """All tracked metrics: fragment rates, new-VM capacity per type, migrations, memory moved."""
        out: dict[str, Any] = {"fragment_rate": self.fragment_rate(16)}
        for size in FRAGMENT_SIZES:
            out[f"fragment_rate_{size}"] = self.fragment_rate(size)
        out["free_cpu"] = self._free_sum
        out["new_vm_capacity"] = self.new_vm_capacity()
        out["num_migrations"] = self.num_migrations
        out["memory_moved_mb"] = self.memory_moved_mb
        return out

    def recompute_metrics(self) -> dict[str, Any]:
        """The same metrics as :meth:`metrics`, from scratch (free capacity rebuilt from placements)."""
        free_cpu, free_mem = free_from_placements(
            self.numa_cpu_total, self.numa_mem_total, self.vm_host, *self.vm_node_usage()
        )
        out: dict[str, Any] = {"fragment_rate": fragment_rate(free_cpu, self.host_active, 16)}
        for size in FRAGMENT_SIZES:
            out[f"fragment_rate_{size}"] = fragment_rate(free_cpu, self.host_active, size)
        out["free_cpu"] = int(free_cpu[self.host_active].sum())
        counts = type_fit_counts(
            free_cpu, free_mem, self.host_active, self._type_cpu, self._type_mem, self._type_span
        ).sum(axis=1)
        out["new_vm_capacity"] = {t.name: int(n) for t, n in zip(self.vm_types, counts)}
        out["num_migrations"] = len(self.history)
        out["memory_moved_mb"] = float(sum(m.mem_mb for m in self.history))
        return out

    # ------------------------------------------------------------------ copies
    def copy(self) -> "Cluster":
        """An independent copy (placements, free capacity, metrics and history)."""
        # Fill the mask caches here first: a template copied per episode then builds them once,
        # and every copy starts with them (a copy of small arrays) instead of rebuilding them.
        self._shape_masks()
        # A shallow copy of the attributes (static arrays and lookups stay shared), without
        # copy.copy's trip through __getstate__/__setstate__: the views are rebuilt once, below.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name in ("vm_host", "vm_placement", "free_cpu", "free_mem", "_fit_totals", "_occ_hp", "_occ_r"):
            setattr(new, name, getattr(self, name).copy())
        self._fit_shared = new._fit_shared = True  # _fit_counts: whichever recounts first copies it
        for name in ("_rack_fit", "_nbf"):
            if getattr(self, name) is not None:
                setattr(new, name, getattr(self, name).copy())
        new._free_cpu_flat = new._free_mem_flat = None  # (made when first needed: see _set_flat_views)
        new._pending, new._num_pending = None, 0  # (none pending: _shape_masks above)
        new._host_buf = new._host_buf_view = None  # (a scratch buffer of its own)
        new.history = list(self.history)
        new._frag_sums = dict(self._frag_sums)
        new._fit_dirty = set(self._fit_dirty)
        new._shape_dirty = set(self._shape_dirty)
        if self._shape_fit is not None:
            new._shape_fit, new._shape_any = self._shape_fit.copy(), self._shape_any.copy()
            new._shape_count = self._shape_count.copy()
        return new

    # Pickling (training checkpoints hold envs mid-episode): memoryviews don't pickle, so they (and
    # the scratch buffer) are dropped, and made again when first needed.
    _FLAT_VIEWS = ("_free_cpu_flat", "_free_mem_flat", "_host_buf", "_host_buf_view")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._FLAT_VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_vm_memb" not in state:  # pickled before the sets kept their occupancy
            self.__dict__.pop("_vm_sets", None)
            self._build_sets()
            if self._shape_fit is not None and self._has_sets:
                self._build_set_fit()
        if "_shape_split" not in state:  # pickled before the masks were compiled
            self._shape_split = self._shape_span == 2
        if "_occ_hp" not in state and "_occ_h" in state:  # pickled with host-set counts: which sets are where
            self._occ_hp = _presence_bits(self.__dict__.pop("_occ_h") > 0)
        if "_vm_cell" not in state:  # pickled before the movable pass read verdict cells
            self._build_cells()
        self._host_buf = self._host_buf_view = None
        if "_member_start" not in state:  # pickled before the destinations were read off the members
            self._vm_memb_arrays = _membership_arrays(self._vm_memb, self._num_host_sets)
            self._member_start, self._member_vms = _member_lists(self._set_members)
        if "_fit_totals" not in state:  # pickled before the capacity totals were kept
            self._set_type_requests()
            self._fit_totals = self._fit_counts.sum(axis=1)
            self._fit_shared = False
        if "_placement_token" not in state:
            self._placement_token = object()
        if "_num_pending" not in state:  # pickled before set-count changes were deferred
            self._pending, self._num_pending = None, 0
        for name in ("_occ_h_flat", "_occ_r_flat", "_nbf_h", "_nbf_r", "_pending_flat"):  # (views of older versions)
            self.__dict__.pop(name, None)
        self._free_cpu_flat = self._free_mem_flat = None

    def capacity_violations(self) -> list[tuple[int, int]]:
        """(host, node) pairs whose free CPU or memory is negative; empty for any reachable state."""
        bad = np.argwhere((self.free_cpu < 0) | (self.free_mem < 0))
        return [tuple(map(int, row)) for row in bad]


def make_cluster(
    name: str,
    vm_types: Sequence[VMType],
    host_ids: Sequence[str],
    numa_cpu_total: np.ndarray,
    numa_mem_total: np.ndarray,
    vm_ids: Sequence[str],
    vm_type: np.ndarray,
    vm_host: np.ndarray,
    vm_node_cpu: np.ndarray,
    vm_node_mem: np.ndarray,
    host_status: Sequence[str] | None = None,
    host_rack: np.ndarray | None = None,
    vm_allow_migration: np.ndarray | None = None,
    deployment_sets: Sequence[DeploymentSet] = (),
) -> Cluster:
    """Build a :class:`Cluster` from per-node VM usage, the form traces and generators produce.

    Args:
        name: cluster name.
        vm_types: the instance types (``vm_type`` indexes into them).
        host_ids: one id per host.
        numa_cpu_total: (H, 2) vCPU per NUMA node.
        numa_mem_total: (H, 2) huge-page MB per NUMA node.
        vm_ids: one id per VM.
        vm_type: (V,) type index per VM.
        vm_host: (V,) host index per VM.
        vm_node_cpu: (V, 2) vCPU the VM uses on node 0 and node 1 (one of them 0 for a 1-NUMA VM).
        vm_node_mem: (V, 2) MB the VM uses on node 0 and node 1.
        host_status: per host; default all ``"ACTIVE"``.
        host_rack: (H,) rack per host; default 0.
        vm_allow_migration: (V,) default all True.
        deployment_sets: anti-affinity sets.
    """
    vm_node_cpu = np.asarray(vm_node_cpu, dtype=np.int64).reshape(-1, 2)
    vm_node_mem = np.asarray(vm_node_mem, dtype=np.float64).reshape(-1, 2)
    on_node = (vm_node_cpu > 0) | (vm_node_mem > 0)
    span = on_node.sum(axis=1)
    if (span == 0).any():
        raise ValueError(f"cluster {name}: VM {vm_ids[int(np.argmax(span == 0))]} uses no CPU or memory")
    # A 1-NUMA VM on node 1 is stored canonically as [usage, 0] with placement 1.
    placement = np.where((span == 1) & on_node[:, 1], 1, 0)
    swap = (placement == 1)[:, None]
    num_hosts, num_vms = len(host_ids), len(vm_ids)
    return Cluster(
        name=name,
        vm_types=list(vm_types),
        host_ids=list(host_ids),
        host_status=list(host_status) if host_status is not None else [ACTIVE_STATUS] * num_hosts,
        numa_cpu_total=numa_cpu_total,
        numa_mem_total=numa_mem_total,
        host_rack=host_rack if host_rack is not None else np.zeros(num_hosts, dtype=np.int64),
        vm_ids=list(vm_ids),
        vm_type=vm_type,
        vm_host=vm_host,
        vm_placement=placement,
        vm_span=span,
        vm_cpu=np.where(swap, vm_node_cpu[:, ::-1], vm_node_cpu),
        vm_mem=np.where(swap, vm_node_mem[:, ::-1], vm_node_mem),
        vm_allow_migration=vm_allow_migration if vm_allow_migration is not None else np.ones(num_vms, dtype=bool),
        deployment_sets=list(deployment_sets),
    )


def fleet_fragment_sums(clusters: Sequence[Cluster], size: int = 16) -> tuple[int, int]:
    """``(sum(free mod size), sum(free))`` over several clusters' active NUMA nodes.

    The one definition of a multi-cluster fragment rate: FR = first / second (0 when nothing is free).
    """
    sums = [c.fragment_sums(size) for c in clusters]
    return sum(s[0] for s in sums), sum(s[1] for s in sums)


def fleet_fragment_rate(clusters: Sequence[Cluster], size: int = 16) -> float:
    """Fragment rate over several clusters together (how the VMR2L papers report a snapshot)."""
    frag, free = fleet_fragment_sums(clusters, size)
    return frag / free if free else 0.0
