"""Kubernetes nodes and pods as arrays: requests, priorities, owners, GPUs, running and pending pods.

A :class:`PodCluster` holds nodes (CPU millicores, memory MiB, a number of GPUs each with its free
share in thousandths, as the Alibaba ``openb`` trace counts them) and pods (requests, priority,
owning ReplicaSet, GPU request, the node each runs on or -1 while Pending). It answers where a pod
fits (over all nodes at once), and changes the placement only through :meth:`PodCluster.bind`,
:meth:`PodCluster.evict` and :meth:`PodCluster.move`, each of which refuses a change that breaks
a capacity with :class:`InfeasiblePodChangeError` naming what was needed and leaves the state as
it was; :meth:`PodCluster.undo` reverts the last change. No decision rule lives here (which pod
goes where is :mod:`agents.pods`'s).

GPU model (the FGD simulator's, for the openb trace): a pod asks for ``num_gpu`` GPUs of
``gpu_milli`` thousandths each; ``num_gpu == 1`` with ``gpu_milli < 1000`` shares one GPU, more
than one GPU means whole GPUs (``gpu_milli == 1000``). A GPU can take the pod if its free share is
at least ``gpu_milli``. When a bind does not say which GPUs, the device is chosen as a device
plugin would, mechanically: the fitting GPUs with the least free share first, then the lowest
index (tightest fit keeps whole GPUs whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from digital_twin.pods import cluster_kernels as kernels

GPU_FULL = 1000
"""A whole GPU, in thousandths (the trace's ``gpu_milli`` unit)."""


_new_change = tuple.__new__
"""``tuple.__new__(PodChange, fields)``: a third of ``PodChange(...)``'s cost on the per-change path."""


class InfeasiblePodChangeError(ValueError):
    """A bind, eviction or move that would break a capacity or is not possible; nothing changed."""


class PodChange(NamedTuple):
    """One change of the placement, as :attr:`PodCluster.history` records it (enough to undo it).

    ``kind`` is ``"bind"`` (a Pending pod onto ``to_node``), ``"evict"`` (a running pod back to
    Pending) or ``"move"`` (a running pod from ``from_node`` to ``to_node``); nodes are -1 where
    not applicable; ``from_gpus`` / ``to_gpus`` are the GPU indices held before and after.
    """

    kind: str
    pod: int
    from_node: int
    to_node: int
    from_gpus: tuple[int, ...]
    to_gpus: tuple[int, ...]


@dataclass(frozen=True)
class Metrics:
    """What the placement achieves.

    Attributes:
        tiers: the distinct priorities, highest first.
        placed_by_tier: running pods of each tier (same order as ``tiers``).
        total_by_tier: pods of each tier, running or Pending.
        pending: Pending pods.
        evictions, moves, binds: changes made since the cluster was built (or :meth:`reset_counters`).
        cpu_allocation, memory_allocation: requested / allocatable over all nodes (0..1).
        gpu_allocation: allocated GPU share / GPU capacity (NaN without GPUs).
        gpu_fragmentation: FGD's expected fragmentation, GPU thousandths summed over nodes (NaN without GPUs).
    """

    tiers: tuple[int, ...]
    placed_by_tier: tuple[int, ...]
    total_by_tier: tuple[int, ...]
    pending: int
    evictions: int
    moves: int
    binds: int
    cpu_allocation: float
    memory_allocation: float
    gpu_allocation: float
    gpu_fragmentation: float


class PodCluster:
    """Nodes and pods; the running set and the Pending set.

    Args:
        node_names: one name per node (unique; the scheduler's tie-break orders by them).
        node_cpu_milli, node_memory_mib: allocatable CPU (m) and memory (MiB) per node, > 0.
        node_gpus: GPUs per node (default none); at most :attr:`max_gpus` per node.
        pod_names: one name per pod (unique).
        pod_cpu_milli, pod_memory_mib: requests per pod, >= 0.
        pod_priority: priority per pod (higher is more important).
        pod_owner: ReplicaSet index per pod (``owner_names[pod_owner[i]]``), -1 for none.
        owner_names: ReplicaSet names.
        pod_num_gpu, pod_gpu_milli: GPUs requested and share per GPU (0 / 0 for a CPU-only pod).
        pod_node: the node each pod runs on, -1 for Pending (default: all Pending).
        pod_start: when each pod was created (s); preemption prefers victims that started later.
        pod_gpus: for running GPU pods, the GPU indices each holds (default: chosen as a bind would).
        name: a label for messages.

    Raises:
        ValueError: inconsistent lengths, a bad value, or a starting placement that overfills a node.
    """

    def __init__(self, node_names: Sequence[str], node_cpu_milli, node_memory_mib, pod_names: Sequence[str],
                 pod_cpu_milli, pod_memory_mib, pod_priority, *, node_gpus=None, pod_owner=None,
                 owner_names: Sequence[str] = (), pod_num_gpu=None, pod_gpu_milli=None, pod_node=None,
                 pod_start=None, pod_gpus: Sequence[Sequence[int]] | None = None, name: str = "cluster") -> None:
        self.name = name
        self.node_names = [str(n) for n in node_names]
        self.pod_names = [str(p) for p in pod_names]
        self.owner_names = [str(o) for o in owner_names]
        n, p = len(self.node_names), len(self.pod_names)
        self.cpu_capacity = self._array(node_cpu_milli, n, "node_cpu_milli")       # (N,) m
        self.memory_capacity = self._array(node_memory_mib, n, "node_memory_mib")  # (N,) MiB
        self.gpu_count = self._array(np.zeros(n) if node_gpus is None else node_gpus, n, "node_gpus")  # (N,)
        pod_cpu = self._array(pod_cpu_milli, p, "pod_cpu_milli")                   # (P,) m
        pod_memory = self._array(pod_memory_mib, p, "pod_memory_mib")              # (P,) MiB
        self.pod_priority = self._array(pod_priority, p, "pod_priority", signed=True)  # (P,)
        self.pod_owner = self._array(np.full(p, -1) if pod_owner is None else pod_owner, p, "pod_owner", signed=True)
        pod_num_gpu = self._array(np.zeros(p) if pod_num_gpu is None else pod_num_gpu, p, "pod_num_gpu")
        pod_gpu_milli = self._array(np.zeros(p) if pod_gpu_milli is None else pod_gpu_milli, p, "pod_gpu_milli")
        self.pod_start = np.zeros(p) if pod_start is None else np.asarray(pod_start, dtype=float).reshape(p)
        self.max_gpus = int(self.gpu_count.max(initial=0))
        # The compiled changes take one buffer (numba's dispatch costs per argument): the requests,
        # the free capacity, the placement and the GPUs held are views of it, so they cannot disagree.
        self._state = kernels.allocate(n, max(self.max_gpus, 1), p)
        self._set_views()
        self._req[:] = pod_cpu, pod_memory, pod_num_gpu, pod_gpu_milli
        self._check(n, p)
        # (N, G) free share per GPU slot; slots beyond a node's count hold -1 so that nothing fits them.
        self.gpu_free[:] = np.where(np.arange(self.gpu_free.shape[1])[None, :] < self.gpu_count[:, None], GPU_FULL, -1)
        self._free[:] = self.cpu_capacity, self.memory_capacity
        self.pod_node[:] = -1
        self._num_pods, self._num_nodes = p, n                                     # the changes' range checks
        # (P, G) the GPU slots each pod holds (pod_gpus' order, -1 padded): what an eviction gives back.
        self._held[:] = -1
        self.pod_gpus: list[tuple[int, ...]] = [()] * p
        self.history: list[PodChange] = []
        self.evictions = self.moves = self.binds = 0
        start = np.full(p, -1) if pod_node is None else np.asarray(pod_node, dtype=np.int64).reshape(p)
        if ((start < -1) | (start >= n)).any():
            raise ValueError(f"cluster {name}: pod_node holds {int(start[(start < -1) | (start >= n)][0])}, "
                             f"not a node index in -1..{n - 1}")
        for pod in np.flatnonzero(start >= 0).tolist():
            node = int(start[pod])
            gpus = None if pod_gpus is None else tuple(int(g) for g in pod_gpus[pod])
            reason = self.bind_refusal(pod, node, gpus)
            if reason is not None:
                raise ValueError(f"cluster {name}: the starting placement is infeasible: {reason}")
            if gpus is None:
                self._bind_chosen(pod, node)
            else:
                self._place(pod, node, gpus)
        self.tiers = tuple(int(t) for t in np.unique(self.pod_priority)[::-1])

    _VIEWS = ("_req", "_free", "gpu_free", "pod_node", "_held", "_gpu_buf", "pod_cpu", "pod_memory", "pod_num_gpu",
              "pod_gpu_milli", "cpu_free", "memory_free")

    def _set_views(self) -> None:
        (self._req, self._free, self.gpu_free, self.pod_node, self._held,
         self._gpu_buf) = kernels.views(self._state)
        self.pod_cpu, self.pod_memory, self.pod_num_gpu, self.pod_gpu_milli = self._req
        self.cpu_free, self.memory_free = self._free

    # Pickling (checkpoints, deepcopy of an env): the views would come back as copies apart from the
    # buffer the kernels change, so they are dropped and rebuilt over the unpickled buffer.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._VIEWS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._set_views()

    # ------------------------------------------------------------------ construction checks
    def _array(self, values, length: int, what: str, signed: bool = False) -> np.ndarray:
        arr = np.asarray(values)
        if arr.shape != (length,):
            raise ValueError(f"cluster {self.name}: {what} has shape {arr.shape}, expected ({length},)")
        if not np.isfinite(arr.astype(float)).all() or (arr.astype(float) != np.round(arr.astype(float))).any():
            raise ValueError(f"cluster {self.name}: {what} must hold whole numbers")
        arr = arr.astype(np.int64)
        if not signed and (arr < 0).any():
            raise ValueError(f"cluster {self.name}: {what} holds {int(arr[arr < 0][0])}, must be >= 0")
        return arr

    def _check(self, n: int, p: int) -> None:
        for names, what in ((self.node_names, "node"), (self.pod_names, "pod")):
            if len(set(names)) != len(names):
                dup = next(x for x in names if names.count(x) > 1)
                raise ValueError(f"cluster {self.name}: {what} name {dup!r} is given twice")
        if ((self.cpu_capacity <= 0) | (self.memory_capacity <= 0)).any():
            raise ValueError(f"cluster {self.name}: every node needs allocatable CPU and memory > 0")
        if ((self.pod_owner < -1) | (self.pod_owner >= len(self.owner_names))).any():
            raise ValueError(f"cluster {self.name}: pod_owner must index owner_names (or be -1)")
        gpu_pod = self.pod_num_gpu > 0
        bad = gpu_pod & ((self.pod_gpu_milli <= 0) | (self.pod_gpu_milli > GPU_FULL)
                         | ((self.pod_num_gpu > 1) & (self.pod_gpu_milli != GPU_FULL)))
        bad |= ~gpu_pod & (self.pod_gpu_milli != 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"cluster {self.name}: pod {self.pod_names[i]} asks for {self.pod_num_gpu[i]} GPU(s) of "
                             f"{self.pod_gpu_milli[i]} thousandths; allowed: 0 GPUs of 0, one GPU of 1..1000, "
                             "or several whole GPUs (1000)")

    # ------------------------------------------------------------------ feasibility
    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def num_pods(self) -> int:
        return len(self.pod_names)

    @property
    def running(self) -> np.ndarray:
        """(P,) bool: the pod runs on a node."""
        return self.pod_node >= 0

    @property
    def pending(self) -> np.ndarray:
        """(P,) bool: the pod is Pending."""
        return self.pod_node < 0

    def gpu_fit_counts(self, gpu_milli) -> np.ndarray:
        """(N,) or (K, N): on each node, how many GPUs have at least ``gpu_milli`` free (per request given)."""
        need = np.asarray(gpu_milli)
        return (self.gpu_free[None, :, :] >= need.reshape(-1, 1, 1)).sum(axis=2).reshape(need.shape + (self.num_nodes,))

    def fits_empty(self, pods=None) -> np.ndarray:
        """(P, N) bool: the nodes each of ``pods`` (indices; default every pod) would fit if the node were empty."""
        idx = np.arange(self.num_pods) if pods is None else np.asarray(pods, dtype=np.int64)
        return ((self.pod_cpu[idx, None] <= self.cpu_capacity) & (self.pod_memory[idx, None] <= self.memory_capacity)
                & (self.pod_num_gpu[idx, None] <= self.gpu_count))

    def fits(self, pod: int, free_cpu=None, free_memory=None) -> np.ndarray:
        """(N,) bool: the nodes where Pending-or-not pod ``pod`` would fit now, ignoring where it runs.

        ``free_cpu`` / ``free_memory`` replace the free capacity (e.g. with victims removed)."""
        cpu = self.cpu_free if free_cpu is None else free_cpu
        mem = self.memory_free if free_memory is None else free_memory
        ok = (cpu >= self.pod_cpu[pod]) & (mem >= self.pod_memory[pod])
        if self.pod_num_gpu[pod] > 0:
            ok &= self.gpu_fit_counts(self.pod_gpu_milli[pod]) >= self.pod_num_gpu[pod]
        return ok

    def fits_all(self) -> np.ndarray:
        """(P, N) bool: :meth:`fits` of every pod at once (the masks of an env; CPU and memory broadcast)."""
        ok = (self.cpu_free[None, :] >= self.pod_cpu[:, None]) & (self.memory_free[None, :] >= self.pod_memory[:, None])
        gpu = self.pod_num_gpu > 0
        if gpu.any():
            need, inv = np.unique(self.pod_gpu_milli[gpu], return_inverse=True)
            counts = self.gpu_fit_counts(need)[inv]                     # (P_gpu, N)
            ok[gpu] &= counts >= self.pod_num_gpu[gpu][:, None]
        return ok

    def _need(self, pod: int, node: int) -> str | None:
        """What node ``node`` lacks for pod ``pod`` as things stand; None if it fits."""
        return self._short(kernels.check(pod, node, self._state), pod, node)

    def _short(self, code: int, pod: int, node: int) -> str | None:
        """The message of a :func:`kernels.fit_code` (None for FITS)."""
        if code == kernels.FITS:
            return None
        node_name, pod_name = self.node_names[node], self.pod_names[pod]
        if code == kernels.SHORT_CPU:
            return (f"node {node_name} has {self.cpu_free[node]} m CPU free, pod {pod_name} needs "
                    f"{self.pod_cpu[pod]} m")
        if code == kernels.SHORT_MEMORY:
            return (f"node {node_name} has {self.memory_free[node]} MiB memory free, pod {pod_name} needs "
                    f"{self.pod_memory[pod]} MiB")
        have = int((self.gpu_free[node] >= self.pod_gpu_milli[pod]).sum())
        return (f"node {node_name} has {have} GPU(s) with {self.pod_gpu_milli[pod]} thousandths free, pod "
                f"{pod_name} needs {self.pod_num_gpu[pod]}")

    def _gpu_refusal(self, pod: int, node: int, gpus: tuple[int, ...]) -> str | None:
        k, share = int(self.pod_num_gpu[pod]), int(self.pod_gpu_milli[pod])
        if len(gpus) != k or len(set(gpus)) != k:
            return f"pod {self.pod_names[pod]} needs {k} distinct GPU(s), given {list(gpus)}"
        for g in gpus:
            if not 0 <= g < self.gpu_count[node]:
                return f"node {self.node_names[node]} has no GPU {g} (it has {self.gpu_count[node]})"
            if self.gpu_free[node, g] < share:
                return (f"node {self.node_names[node]} GPU {g} has {self.gpu_free[node, g]} thousandths free, "
                        f"pod {self.pod_names[pod]} needs {share}")
        return None

    def bind_refusal(self, pod: int, node: int, gpus: tuple[int, ...] | None = None) -> str | None:
        """Why binding Pending pod ``pod`` to ``node`` (on ``gpus``) is refused; None if it is allowed."""
        if not 0 <= pod < self.num_pods:
            return f"no pod {pod} (the cluster has {self.num_pods})"
        if not 0 <= node < self.num_nodes:
            return f"no node {node} (the cluster has {self.num_nodes})"
        if self.pod_node.item(pod) >= 0:
            return f"pod {self.pod_names[pod]} already runs on node {self.node_names[self.pod_node[pod]]}"
        need = self._need(pod, node)
        if need is None and gpus is not None:
            need = self._gpu_refusal(pod, node, gpus)
        return need

    # ------------------------------------------------------------------ changes
    # Each change is one compiled call (digital_twin/pods/cluster_kernels.py) on the fast path (no
    # GPUs given, indices in range); a refused call changed nothing, and the Python path after it
    # only names the reason. The GPU choice is kernels._choose_and_place's (the module docstring's rule).
    def _held_gpus(self, pod: int, k: int) -> tuple[int, ...]:
        return tuple(self._held[pod, :k].tolist()) if k else ()

    def _bind_chosen(self, pod: int, node: int) -> tuple[int, ...]:
        k = kernels.bind(pod, node, self._state)
        if k < 0:
            raise AssertionError(f"cluster {self.name}: kernels.bind refused a checked bind (code {k})")
        gpus = self.pod_gpus[pod] = self._held_gpus(pod, k)
        return gpus

    def _place(self, pod: int, node: int, gpus: tuple[int, ...]) -> None:
        """Put ``pod`` on ``node`` and exactly ``gpus`` (checked by the caller, or an earlier state), off its node first."""
        k = len(gpus)
        if k:
            self._gpu_buf[:k] = gpus
        kernels.put(pod, node, self._state, k)
        self.pod_gpus[pod] = gpus

    def _remove(self, pod: int) -> None:
        kernels.remove(pod, self._state)
        self.pod_gpus[pod] = ()

    def bind(self, pod: int, node: int, gpus: Sequence[int] | None = None) -> PodChange:
        """Bind Pending pod ``pod`` to ``node`` (on ``gpus``, default chosen as the module says).

        Raises:
            InfeasiblePodChangeError: the pod is not Pending or does not fit; nothing changed.
        """
        if gpus is None and 0 <= pod < self._num_pods and 0 <= node < self._num_nodes:
            k = kernels.bind(pod, node, self._state)
            if k >= 0:
                chosen = self.pod_gpus[pod] = tuple(self._held[pod, :k].tolist()) if k else ()
                change = _new_change(PodChange, ("bind", pod, -1, node, (), chosen))
                self.history.append(change)
                self.binds += 1
                return change
        gpus = None if gpus is None else tuple(int(g) for g in gpus)
        reason = self.bind_refusal(pod, node, gpus)
        if reason is not None:
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot bind: {reason}")
        if gpus is None:
            gpus = self._bind_chosen(pod, node)
        else:
            self._place(pod, node, gpus)
        change = PodChange("bind", pod, -1, node, (), gpus)
        self.history.append(change)
        self.binds += 1
        return change

    def evict(self, pod: int) -> PodChange:
        """Evict running pod ``pod`` back to Pending.

        Raises:
            InfeasiblePodChangeError: the pod does not run; nothing changed.
        """
        if not 0 <= pod < self._num_pods:
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot evict: no pod {pod} (the cluster has {self.num_pods})")
        held = self.pod_gpus[pod]
        node = kernels.remove(pod, self._state)
        if node < 0:
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot evict: pod {self.pod_names[pod]} is Pending")
        self.pod_gpus[pod] = ()
        change = _new_change(PodChange, ("evict", pod, node, -1, held, ()))
        self.history.append(change)
        self.evictions += 1
        return change

    def move(self, pod: int, node: int, gpus: Sequence[int] | None = None) -> PodChange:
        """Re-place running pod ``pod`` on another ``node`` in one step (its old resources are freed first).

        Raises:
            InfeasiblePodChangeError: the pod does not run, the node is its own, or it does not fit; nothing changed.
        """
        if gpus is None and 0 <= pod < self._num_pods and 0 <= node < self._num_nodes:
            src, old = self.pod_node.item(pod), self.pod_gpus[pod]
            k = kernels.move(pod, node, self._state)
            if k >= 0:
                new = self.pod_gpus[pod] = tuple(self._held[pod, :k].tolist()) if k else ()
                change = _new_change(PodChange, ("move", pod, src, node, old, new))
                self.history.append(change)
                self.moves += 1
                return change
        if not 0 <= pod < self.num_pods or self.pod_node[pod] < 0:
            what = f"no pod {pod}" if not 0 <= pod < self.num_pods else f"pod {self.pod_names[pod]} is Pending"
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot move: {what}")
        src, old = int(self.pod_node[pod]), self.pod_gpus[pod]
        if node == src:
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot move: pod {self.pod_names[pod]} already "
                                           f"runs on node {self.node_names[node]}")
        self._remove(pod)
        gpus_t = None if gpus is None else tuple(int(g) for g in gpus)
        reason = self.bind_refusal(pod, node, gpus_t)
        if reason is not None:
            self._place(pod, src, old)
            raise InfeasiblePodChangeError(f"cluster {self.name}: cannot move: {reason}")
        if gpus_t is None:
            gpus_t = self._bind_chosen(pod, node)
        else:
            self._place(pod, node, gpus_t)
        change = PodChange("move", pod, src, node, old, gpus_t)
        self.history.append(change)
        self.moves += 1
        return change

    def undo(self) -> PodChange:
        """Revert the most recent change (and its count).

        Raises:
            IndexError: there is nothing to undo.
        """
        try:
            change = self.history.pop()
        except IndexError:
            raise IndexError(f"cluster {self.name}: no change to undo") from None
        kind, pod = change[0], change[1]
        if kind == "bind":
            kernels.remove(pod, self._state)
            self.pod_gpus[pod] = ()
            self.binds -= 1
        else:  # an eviction or a move: back on its node and GPUs (a moved pod is taken off the new node first)
            self._place(pod, change[2], change[4])
            if kind == "evict":
                self.evictions -= 1
            else:
                self.moves -= 1
        return change

    def reset_counters(self) -> None:
        """Forget the history and zero the disruption counts (the current placement becomes the baseline)."""
        self.history.clear()
        self.evictions = self.moves = self.binds = 0

    def copy(self) -> PodCluster:
        """An independent copy (same pods and nodes, same placement, empty history)."""
        return self.at(self.pod_node, self.pod_gpus)

    def at(self, pod_node, pod_gpus: Sequence[Sequence[int]] | None = None) -> PodCluster:
        """A copy with the pods placed at ``pod_node`` (on ``pod_gpus``, default chosen as binds would),
        empty history.

        Raises:
            ValueError: the placement overfills a node or a GPU (the constructor's check).
        """
        return PodCluster(self.node_names, self.cpu_capacity, self.memory_capacity, self.pod_names, self.pod_cpu,
                          self.pod_memory, self.pod_priority, node_gpus=self.gpu_count, pod_owner=self.pod_owner,
                          owner_names=self.owner_names, pod_num_gpu=self.pod_num_gpu, pod_gpu_milli=self.pod_gpu_milli,
                          pod_node=pod_node, pod_start=self.pod_start, pod_gpus=pod_gpus, name=self.name)

    # ------------------------------------------------------------------ metrics
    def placed_by_tier(self, pod_node=None) -> tuple[int, ...]:
        """Running pods per priority tier, highest tier first (of ``pod_node``, default the current placement)."""
        where = self.pod_node if pod_node is None else np.asarray(pod_node)
        return tuple(int(((self.pod_priority == t) & (where >= 0)).sum()) for t in self.tiers)

    def capacity_violations(self) -> list[str]:
        """Recomputed from the pod list (not the running totals): every node or GPU over capacity."""
        out = []
        on = self.pod_node >= 0
        cpu = np.bincount(self.pod_node[on], weights=self.pod_cpu[on], minlength=self.num_nodes)
        mem = np.bincount(self.pod_node[on], weights=self.pod_memory[on], minlength=self.num_nodes)
        for j in np.flatnonzero((cpu > self.cpu_capacity) | (mem > self.memory_capacity)):
            out.append(f"node {self.node_names[j]}: {cpu[j]:.0f}/{self.cpu_capacity[j]} m, {mem[j]:.0f}/"
                       f"{self.memory_capacity[j]} MiB")
        used = np.zeros_like(self.gpu_free)
        for i in np.flatnonzero(on):
            for g in self.pod_gpus[i]:
                used[self.pod_node[i], g] += self.pod_gpu_milli[i]
        for j, g in np.argwhere(used > GPU_FULL):
            out.append(f"node {self.node_names[j]} GPU {g}: {used[j, g]} thousandths allocated")
        return out

    def gpu_fragmentation(self) -> float:
        """FGD's expected GPU fragmentation of the cluster, in GPU thousandths (NaN without GPUs).

        For the workload ``M`` (the pods' distinct request types, weighted by how many pods have
        each), ``F_n(M) = sum_m p_m F_n(m)``: if task ``m`` cannot run on node ``n`` (CPU, memory or
        GPUs short) or asks for no GPU, all of ``n``'s free GPU share is fragment; otherwise the free
        share of the GPUs that cannot take ``m``'s per-GPU share is. The cluster's is the sum over nodes.
        """
        if self.max_gpus == 0:
            return float("nan")
        kinds, counts = np.unique(np.stack([self.pod_cpu, self.pod_memory, self.pod_num_gpu, self.pod_gpu_milli], 1),
                                  axis=0, return_counts=True)
        p = counts / counts.sum()                                          # (T,)
        free = np.where(self.gpu_free > 0, self.gpu_free, 0)               # (N, G); empty slots count 0
        total = free.sum(axis=1)                                           # (N,)
        cpu, mem, k, share = kinds.T
        usable = free[None] >= share[:, None, None]                        # (T, N, G)
        runs = ((self.cpu_free[None] >= cpu[:, None]) & (self.memory_free[None] >= mem[:, None])
                & (usable.sum(axis=2) >= k[:, None]) & (k[:, None] > 0))   # (T, N)
        frag = np.where(runs, (free[None] * ~usable).sum(axis=2), total[None])
        return float((p[:, None] * frag).sum())

    def metrics(self) -> Metrics:
        """The current :class:`Metrics` (vectorised over pods and nodes)."""
        tiers = self.tiers
        on = self.pod_node >= 0
        gpu_cap = float(self.gpu_count.sum()) * GPU_FULL
        gpu_used = float((self.pod_num_gpu * self.pod_gpu_milli)[on].sum())
        return Metrics(
            tiers=tiers, placed_by_tier=self.placed_by_tier(),
            total_by_tier=tuple(int((self.pod_priority == t).sum()) for t in tiers),
            pending=int((~on).sum()), evictions=self.evictions, moves=self.moves, binds=self.binds,
            cpu_allocation=float(1 - self.cpu_free.sum() / self.cpu_capacity.sum()),
            memory_allocation=float(1 - self.memory_free.sum() / self.memory_capacity.sum()),
            gpu_allocation=gpu_used / gpu_cap if gpu_cap else float("nan"),
            gpu_fragmentation=self.gpu_fragmentation(),
        )
