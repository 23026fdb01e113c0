"""``clustergym/VMRescheduling-v0``: defragment a VM cluster with a limited number of live migrations.

A thin Gymnasium shell over the VM-rescheduling twin (:mod:`digital_twin.vm`).
"""

from __future__ import annotations

import inspect
import struct
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)
from agents.vm.plan import resolve_budget
from digital_twin.cli import ConfigError, check_keys
from digital_twin.vm.cluster import Cluster
from digital_twin.vm.snapshot import Snapshot
from envs.vm_sources import REAL_SNAPSHOTS, FileSource, SnapshotSource, load_vm_config, make_source

VM_FEATURES = ("cpu_node0", "cpu_node1", "mem_node0", "mem_node1", "spans_both_nodes", "allow_migration", "selected")
HOST_FEATURES = ("free_cpu_node0", "free_cpu_node1", "free_mem_node0", "free_mem_node1",
                 "fragment_node0", "fragment_node1", "active")
GLOBAL_FEATURES = ("fragment_rate", "fragment_rate_8", "fragment_rate_32", "budget_left", "phase")

PHASE_PICK_VM, PHASE_PICK_DESTINATION = 0, 1
_PACK_GLOBALS = struct.Struct(f"={2 * len(GLOBAL_FEATURES)}f")
_TOUCHED_ROWS = 256  # migrations an episode records for its reset to rewrite only their rows (more: every row)


@njit(cache=True)
def _write_migration_rows(vm_features, host_features, vm_host, rows, vm, local, h0, src, dst, free_cpu, free_mem,
                          cpu_scale, mem_scale, touched, num_touched):
    """The observation rows a migration changed, in one compiled call: VM ``vm`` (local index
    ``local`` of a cluster whose hosts start at ``h0``) takes its first four features from ``rows``
    (its cluster's cached rows for its new placement) and is no longer selected; its host entry
    is ``dst``; hosts ``src`` and ``dst`` get their free vCPU and memory per node (over the
    scales) and ``(free mod 16) / 16`` per node. Values are computed in float64 and stored as
    float32 (round to nearest), as :meth:`VMReschedulingEnv._rebuild_features` does with numpy.
    ``(local, src, dst)`` goes into row ``num_touched`` of ``touched`` if it has one (see
    :func:`_restore_rows`).
    """
    if num_touched < touched.shape[0]:
        touched[num_touched, 0], touched[num_touched, 1], touched[num_touched, 2] = local, src, dst
    for j in range(4):
        vm_features[vm, j] = rows[local, j]
    vm_features[vm, 6] = 0.0
    vm_host[vm] = dst + h0
    for side in range(2):
        host = src if side == 0 else dst
        row = host + h0
        cpu0, cpu1 = free_cpu[host, 0], free_cpu[host, 1]
        host_features[row, 0] = cpu0 / cpu_scale
        host_features[row, 1] = cpu1 / cpu_scale
        host_features[row, 2] = free_mem[host, 0] / mem_scale
        host_features[row, 3] = free_mem[host, 1] / mem_scale
        host_features[row, 4] = (cpu0 % 16) / 16.0
        host_features[row, 5] = (cpu1 % 16) / 16.0


@njit(cache=True)
def _restore_rows(vm_features, host_features, vm_host, start_rows, start_hosts, start_vm_host, v0, h0, touched, n):
    """Put back, from a cluster's rows at the start of the episode (``start_*``), the rows that the
    ``n`` migrations recorded in ``touched`` rewrote: each ``(local VM, source host, destination
    host)``; its VM's row and host entry, both hosts' rows (a cluster whose VMs start at ``v0``,
    hosts at ``h0``)."""
    for i in range(n):
        local = touched[i, 0]
        vm_features[v0 + local, :] = start_rows[local, :]
        vm_host[v0 + local] = start_vm_host[local] + h0
        for j in range(1, 3):
            host = touched[i, j]
            host_features[h0 + host, :] = start_hosts[host, :]


class VMReschedulingEnv(gym.Env[dict[str, np.ndarray], int]):
    """Live-migrate VMs to lower the cluster's fragment rate, within a migration budget.

    ## Description
    A snapshot of one or more clusters of two-NUMA hosts (real VMR2L-schema files or snapshots
    replayed from the Azure V1 trace) starts each episode. Each migration moves one VM to another
    host of its cluster. The goal is VMR2L's: the lowest fragment rate
    ``FR = sum(free_cpu mod 16) / sum(free_cpu)`` over all active NUMA nodes after at most
    ``budget`` migrations (MNL).

    ## Action Space
    ``Discrete(n)`` with ``n = max(max_vms, 2 * max_hosts) + 1``, read in two phases, as VMR2L's
    two-stage policy (their ablation: two-stage FR 0.298 vs a flat mask 0.54):

    * phase 0, pick a VM: action ``v < max_vms`` selects VM ``v``; action ``n - 1`` stops the episode.
    * phase 1, pick its destination: action ``2 * host + placement``; ``placement`` is the NUMA
      node for a VM on one node (0 or 1), always 0 for a VM split over both nodes.

    ``action_masks()`` (bool, for ``sb3_contrib.MaskablePPO``) and ``obs["action_mask"]`` (int8)
    give the valid actions of the current phase: in phase 0 the VMs with at least one feasible
    destination, and stop; in phase 1 exactly the feasible destinations of the selected VM
    (capacity on the NUMA node(s), anti-affinity, migratable, active host, same cluster, not its
    own host).

    ## Observation Space
    A ``Dict`` of padded arrays from which a graph network rebuilds the VM-host bipartite graph:

    | key | shape | dtype | meaning |
    |---|---|---|---|
    | ``vm_features`` | (max_vms, 7) | float32 | :data:`VM_FEATURES`: vCPU and memory on NUMA node 0 / 1 of its host (per largest NUMA node of the snapshot), split flag, migratable, selected |
    | ``host_features`` | (max_hosts, 7) | float32 | :data:`HOST_FEATURES`: free vCPU and memory per node (same scale), ``(free mod 16) / 16`` per node, active |
    | ``vm_host`` | (max_vms,) | int64 | host index of each VM (the graph's edges) |
    | ``vm_mask`` / ``host_mask`` | (max_vms,) / (max_hosts,) | int8 | 1 for real entries, 0 for padding |
    | ``selected_vm`` | (1,) | int64 | VM picked in phase 0, -1 in phase 0 |
    | ``globals`` | (5,) | float32 | :data:`GLOBAL_FEATURES`: FR at 16, 8 and 32 vCPU, share of budget left, phase |
    | ``action_mask`` | (n,) | int8 | valid actions now |

    Features depend only on the snapshot, never on the padding sizes. After a migration only the
    moved VM's row and its two hosts' rows change, and only those are rewritten; a reset to the
    template's placement (every episode of a file or fixed source) rewrites only the rows the
    last episode's migrations touched (``incremental_obs=False`` rebuilds everything, for checking).

    Every observation is new arrays (copies of the env's buffers, one ``memcpy`` each), shared
    with nothing: it stays as it was however long it is held (rollout buffers, a policy diffing
    consecutive observations), and the caller may modify it.

    ## Info
    Every ``reset`` and ``step``: ``fragment_rate`` (FR at 16 vCPU), ``fragment_rate_8``,
    ``fragment_rate_32``, ``fragment_rate_start`` (FR at reset), ``migrations_used``, ``budget``
    (this episode's), ``budget_source`` (where it came from: ``"config"`` for the env's
    ``budget``, ``"options"`` for ``reset(options={"budget": ...})``, ``"snapshot"`` for the
    file's ``maximum_migration``, ``"default"`` for 50), ``memory_moved_mb`` (memory of the VMs
    migrated so far), ``phase`` and ``split`` (the source's). A phase-1 step adds ``migration``
    (below); the step that ends the episode adds ``new_vm_capacity`` (new VMs of each type that
    still fit, the one entry that costs more than a lookup, so computed only then); an invalid
    action under ``"penalty"`` adds ``invalid_action`` and ``invalid_action_reason``.

    ## Rewards
    Phase 1: the decrease of FR caused by the migration (negative if it got worse); phase 0: 0.
    A phase-1 step's ``info["migration"]`` is the move made, ``(cluster index, VM, host,
    placement)`` with indices local to the cluster (replayable with ``Cluster.migrate``).
    The episode's return is its total FR gain. Worked example: FR 0.9770 -> 0.9700 after the first
    migration gives reward 0.0070. An invalid action under ``invalid_action="penalty"`` gives
    ``-invalid_action_penalty``.

    ## Starting State
    A snapshot from ``source`` (default: the bundled real file ``reset_vm_pm_id_clear2.json``,
    236 + 43 hosts, 1,934 + 155 VMs), phase 0.

    ## Episode End
    *Termination*: the budget is spent, stop is chosen, or no VM has a feasible destination.
    *Truncation*: never by the env itself.

    ## Arguments
    * ``source``: a :class:`~envs.vm_sources.SnapshotSource` or its config mapping
      (``{kind: files, paths: [...], split: ...}`` or ``{kind: azure, split: dev, num_hosts: 236}``).
    * ``max_hosts``, ``max_vms``: padding sizes. Left out (None), they follow the data: the
      source's :meth:`~envs.vm_sources.SnapshotSource.max_size` (exact for files, a capacity bound
      for generated snapshots; :func:`make_vm_env` takes the largest over all of a config's
      sources, so that its train, val and eval envs share one observation space). Given, they fix
      the observation space (e.g. to keep a trained MLP's); a snapshot larger than that is refused
      at reset, naming the config key and the size it needs (the graph policy is size-agnostic,
      so a larger padding costs memory, not retraining).
    * ``budget``: migration budget MNL. Left out (None), each episode's is its snapshot's
      ``general_requirement.maximum_migration`` (50 if the file states none); given (a config's
      ``env.budget``), it overrides that, smaller or larger. ``reset(options={"budget": n})``
      overrides both for one episode. The rule is :func:`agents.vm.plan.resolve_budget`, the one
      every planner and ``evaluate.py`` follow, so the env and the baselines play an episode at one
      budget.
    * ``invalid_action``: ``"raise"`` (``ValueError``, state unchanged) or ``"penalty"`` (state
      unchanged, reward ``-invalid_action_penalty``, ``info["invalid_action"] = True``).
    * ``incremental_obs``: update observations incrementally (default) or rebuild each step.

    ## Version History
    * v0: first version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        source: SnapshotSource | dict[str, Any] | None = None,
        max_hosts: int | None = None,
        max_vms: int | None = None,
        budget: int | None = None,
        invalid_action: str = "raise",
        invalid_action_penalty: float = 0.01,
        incremental_obs: bool = True,
        render_mode: str | None = None,
    ):
        arguments = dict(locals())  # the parameters, checked by the same rule as a config's env section
        check_env_options(type(self).__name__, {name: arguments[name] for name in env_option_names()})
        self.source = make_source(source) if source is not None else FileSource(
            [REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json"], split="train")
        if max_hosts is None or max_vms is None:
            max_size = getattr(self.source, "max_size", None)
            if max_size is None:
                raise ConfigError(f"{type(self).__name__}: give max_hosts and max_vms: the source "
                                  f"{type(self.source).__name__} has no max_size() to derive them from")
            hosts, vms = max_size()
            max_hosts, max_vms = max_hosts or hosts, max_vms or vms
        max_hosts, max_vms = int(max_hosts), int(max_vms)
        self.max_hosts, self.max_vms, self.max_budget = max_hosts, max_vms, budget
        self.invalid_action, self.invalid_action_penalty = invalid_action, invalid_action_penalty
        self.incremental_obs = incremental_obs
        self.render_mode = render_mode
        self.num_actions = max(max_vms, 2 * max_hosts) + 1
        self.stop_action = self.num_actions - 1

        self.action_space = spaces.Discrete(self.num_actions)
        self.observation_space = spaces.Dict({
            "vm_features": spaces.Box(0.0, 1.0, (max_vms, len(VM_FEATURES)), np.float32),
            "host_features": spaces.Box(0.0, 1.0, (max_hosts, len(HOST_FEATURES)), np.float32),
            "vm_host": spaces.Box(0, max_hosts - 1, (max_vms,), np.int64),
            "vm_mask": spaces.Box(0, 1, (max_vms,), np.int8),
            "host_mask": spaces.Box(0, 1, (max_hosts,), np.int8),
            "selected_vm": spaces.Box(-1, max_vms - 1, (1,), np.int64),
            "globals": spaces.Box(0.0, 1.0, (len(GLOBAL_FEATURES),), np.float32),
            "action_mask": spaces.Box(0, 1, (self.num_actions,), np.int8),
        })
        # Observation buffers, updated in place across steps (copies are returned: Gymnasium's
        # checker requires observations that share no memory with each other).
        self._vm_features = np.zeros((max_vms, len(VM_FEATURES)), np.float32)
        self._host_features = np.zeros((max_hosts, len(HOST_FEATURES)), np.float32)
        self._vm_host = np.zeros(max_vms, np.int64)
        self._vm_mask = np.zeros(max_vms, np.int8)
        self._host_mask = np.zeros(max_hosts, np.int8)
        self._mask = np.zeros(self.num_actions, bool)
        self._selected_vm = np.full(1, -1, np.int64)  # obs["selected_vm"], kept with self.selected
        self._globals = np.zeros((2, len(GLOBAL_FEATURES)), np.float32)  # obs["globals"] in phase 0 / 1
        self._mask_token: object | None = None  # the cluster placement a phase-1 mask was read off
        self._set_buffer_views()
        # Per cluster, its VMs' feature rows (they depend on static arrays, which copies of a
        # snapshot share): computed once per template, not per episode (see _static_rows).
        self._static_cache: dict[int, tuple] = {}
        self._layout: tuple | None = None
        self.snapshot: Snapshot | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on a fresh snapshot.

        Args:
            seed: seeds ``self.np_random``, which draws the snapshot.
            options: ``{"snapshot": Snapshot}`` to start from a given snapshot (it is copied),
                ``{"budget": int}`` to override the budget for this episode (see ``budget``).

        Raises:
            ValueError: the snapshot is larger than the padding, or the budget is below 1.
        """
        super().reset(seed=seed)
        if seed is not None:
            self.source.restart()  # a seeded reset must not depend on snapshots buffered earlier
        options = options or {}
        if self.snapshot is not None and self.selected >= 0:  # (an episode cut short in phase 1)
            self._vm_features[self.selected, 6] = 0.0  # the buffers: as the last rebuild, but the rows moves touched
        snapshot = options.get("snapshot")
        self.snapshot = snapshot.copy() if snapshot is not None else self.source(self.np_random)
        self._bind(self.snapshot)
        if options.get("budget") is not None:
            self.budget, self.budget_source = resolve_budget(self.snapshot, int(options["budget"]), "options")
        else:
            self.budget, self.budget_source = resolve_budget(self.snapshot, self.max_budget, "config")
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1 migration, got {self.budget} ({self.budget_source})")
        self.migrations_used = 0
        self.phase = PHASE_PICK_VM
        self.selected = -1
        self._selected_vm[0] = -1
        self._refresh_fragment_rates()
        self._set_globals()
        self._memory_moved = float(sum(c.memory_moved_mb for c in self._clusters))  # (changes with migrations only)
        self.fr_start = self._fr[0]
        self._rebuild_features()
        # Movable VMs per cluster, written in place into the cluster's slice of _movable.
        self._movable_count = [self._start_movable(c) for c in range(len(self._clusters))]
        self._set_mask()
        return self._observation(), self._info()

    def _start_movable(self, c: int) -> int:
        """Cluster ``c``'s movable VMs at reset, into its slice of ``_movable``; returns how many.

        An episode that starts from its template's placement (the same placement token, as every
        episode of a file or fixed source) copies the verdicts of the last one that did; the
        verdicts follow the placement and the static arrays only (see :meth:`_static`), and a
        fresh copy has nothing to refresh (``Cluster.copy`` leaves the template's caches clean).
        """
        cluster, view = self._clusters[c], self._movable_views[c]
        slot = self._statics[c][4]
        token = cluster.placement_token
        if slot[0] is not None and slot[0][0] is token:
            view[:] = slot[0][1]
            return slot[0][2]
        count = cluster.movable_vms_into(view)
        slot[0] = (token, view.copy(), count)
        return count

    def step(self, action: int):
        assert self.snapshot is not None, "call reset() before step()"
        action = int(action)
        if not (0 <= action < self.num_actions and self._mask[action]):
            return self._invalid(action)
        if self.phase == PHASE_PICK_VM:
            if action == self.stop_action:
                return self._observation(), 0.0, True, False, self._info(final=True)
            self.selected = action
            self._selected_vm[0] = action
            self._vm_features[action, 6] = 1.0
            self.phase = PHASE_PICK_DESTINATION
            self._set_mask()
            return self._observation(), 0.0, False, False, self._info()

        vm, host, placement = self.selected, action // 2, action % 2
        c = self._vm_cluster[vm]
        cluster = self._clusters[c]
        fr_before = self._fr[0]
        # Only the migrated VM's cluster changed: the other clusters' movable VMs stand.
        if cluster.placement_token is self._mask_token:
            # The mask is the VM's feasible destinations in this very placement: no need to check
            # again; the move and the cluster's movable VMs are one compiled call.
            move, self._movable_count[c] = cluster.migrate_feasible_into(
                vm - self._vm_offset[c], host - self._host_offset[c], placement, self._movable_views[c])
        else:  # (the cluster was changed behind the env's back since: the twin checks the move)
            move = cluster.migrate(vm - self._vm_offset[c], host - self._host_offset[c], placement)
            self._movable_count[c] = cluster.movable_vms_into(self._movable_views[c])
        self.migrations_used += 1
        self._refresh_fragment_rates()
        self._set_globals()
        self._memory_moved = float(sum(c.memory_moved_mb for c in self._clusters))
        reward = fr_before - self._fr[0]
        if self.incremental_obs:
            self._update_features(c, vm, move.from_host, move.to_host, placement)
        else:
            self._rebuild_features()
            self._vm_features[vm, 6] = 0.0
        self.selected = -1
        self._selected_vm[0] = -1
        self.phase = PHASE_PICK_VM
        terminated = self.migrations_used >= self.budget or not any(self._movable_count)
        self._set_mask()
        info = self._info(final=terminated)
        # The move in the twin's own terms: (cluster index, VM, destination host, placement) within the cluster.
        info["migration"] = (c, move.vm, move.to_host, move.to_placement)
        return self._observation(), reward, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions now, one bool per action (what ``MaskablePPO`` asks for); a copy, the caller's own."""
        return self._mask.copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.snapshot is None:
            return None
        phase = "pick a VM" if self.phase == PHASE_PICK_VM else f"pick a destination for VM {self.selected}"
        return (f"FR {self._fr[0]:.4f} (start {self.fr_start:.4f}), migrations "
                f"{self.migrations_used}/{self.budget}, {phase}, {int(self._mask.sum())} valid actions")

    # ------------------------------------------------------------------ snapshot binding
    def _bind(self, snapshot: Snapshot) -> None:
        """Lay the snapshot's clusters side by side in one global VM and host index."""
        clusters = snapshot.clusters
        layout = tuple((c.num_hosts, c.num_vms) for c in clusters)
        num_hosts = sum(h for h, _ in layout)
        num_vms = sum(v for _, v in layout)
        if num_hosts > self.max_hosts or num_vms > self.max_vms:
            name = snapshot.source if snapshot.source != "<memory>" else \
                f"a snapshot of {type(self.source).__name__}(split={self.source.split!r})"
            raise ValueError(padding_error(f"snapshot {name}", num_hosts, num_vms, self.max_hosts, self.max_vms))
        self._clusters: list[Cluster] = clusters
        if layout != self._layout:  # the index layout and the masks follow the cluster sizes only
            self._layout = layout
            self._host_offset = np.cumsum([0] + [h for h, _ in layout]).tolist()
            self._vm_offset = np.cumsum([0] + [v for _, v in layout]).tolist()
            self._vm_cluster = np.repeat(np.arange(len(clusters)), [v for _, v in layout]).tolist()
            self.num_hosts, self.num_vms = num_hosts, num_vms
            self._vm_mask[:] = 0
            self._vm_mask[:num_vms] = 1
            self._host_mask[:] = 0
            self._host_mask[:num_hosts] = 1
            self._movable = np.zeros(num_vms, bool)
            self._set_views()
            self._set_touched()
        # Scales from the snapshot itself, so features never depend on padding.
        statics = self._statics = [self._static(c) for c in clusters]
        self._cpu_scale = float(max(int(e[1]) for c, e in zip(clusters, statics) if c.num_hosts))
        self._mem_scale = float(max(float(e[2]) for c, e in zip(clusters, statics) if c.num_hosts))
        self._rows = [self._static_rows(c, e) for c, e in zip(clusters, statics)]

    def _set_buffer_views(self) -> None:
        """The action mask as int8, the observation's dtype (the same bytes), for its copies."""
        self._mask_int8 = self._mask.view(np.int8)

    def _set_touched(self) -> None:
        """Per cluster, ``(placement token, rows entry)`` of the cached rows the buffers hold (None:
        unknown) but for the rows the migrations since rewrote, and those migrations ``(local VM,
        source host, destination host)`` (a buffer of ``_TOUCHED_ROWS``, and how many: past it,
        every row is rewritten): a reset to that placement at those scales rewrites only those
        rows (:meth:`_rebuild_features`)."""
        self._buffer_base: list[tuple | None] = [None] * len(self._layout)
        self._touched = [np.zeros((_TOUCHED_ROWS, 3), np.int64) for _ in self._layout]
        self._num_touched = [0] * len(self._layout)

    def _set_views(self) -> None:
        """Each cluster's slice of ``_movable`` and of the action mask (its destinations, as (H, 2))."""
        hosts, vms = self._host_offset, self._vm_offset
        self._movable_views = [self._movable[vms[c]: vms[c + 1]] for c in range(len(self._layout))]
        self._dest_views = [self._mask[2 * hosts[c]: 2 * hosts[c + 1]].reshape(-1, 2) for c in range(len(self._layout))]

    # Pickling (checkpoints, deepcopy): views would come back as separate copies, so they are
    # dropped and rebuilt over the unpickled buffers.
    _VIEWS = ("_movable_views", "_dest_views", "_mask_int8")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_selected_vm" not in state:  # pickled before obs["selected_vm"] had its buffer
            self._selected_vm = np.full(1, getattr(self, "selected", -1), np.int64)
            self._mask_token = None  # (nor was the mask's placement kept: its next move is checked)
        if "_touched" not in state and self._layout is not None:  # (nor the rows moves touched: rebuilt at reset)
            self._set_touched()
        if "_globals" not in state:
            self._globals = np.zeros((2, len(GLOBAL_FEATURES)), np.float32)
            if self.snapshot is not None:
                self._set_globals()
        self._set_buffer_views()
        if self._layout is not None:
            self._set_views()

    def _static(self, cluster: Cluster) -> tuple:
        """``(arrays, largest NUMA vCPU, largest NUMA memory, rows by scales, [movable VMs at a placement])``
        of a cluster's static data (the last: ``(placement token, verdicts, count)`` or None, see
        :meth:`_start_movable`).

        Copies of a snapshot share their static arrays (``Cluster.copy``), so the entry of a
        template serves every episode drawn from it; an entry is found by the identity of those
        arrays (held, so never reused by another object).
        """
        arrays = (cluster.vm_cpu, cluster.vm_mem, cluster.vm_span, cluster.vm_allow_migration,
                  cluster.numa_cpu_total, cluster.numa_mem_total)
        entry = self._static_cache.get(id(cluster.vm_cpu))
        if entry is None or any(a is not b for a, b in zip(entry[0], arrays)):
            if len(self._static_cache) >= 16:  # generated sources: every snapshot is new, keep few
                self._static_cache.clear()
            empty = not cluster.num_hosts
            entry = (arrays, 0 if empty else cluster.numa_cpu_total.max(),
                     0.0 if empty else cluster.numa_mem_total.max(), {}, [None])
            self._static_cache[id(cluster.vm_cpu)] = entry
        return entry

    def _static_rows(self, cluster: Cluster, static: tuple) -> list:
        """A cluster's VM feature rows, ``selected`` 0: ``[placement 0 (V, 7), placement 1 (V, 7), last block]``.

        The VM features depend only on static arrays, the scales and the placement (which NUMA
        node holds which part), so both variants are computed once per template and scales.
        ``last block`` is ``(placement token, VM rows, host rows)`` of the last full rebuild: an
        episode that starts from the template's placement (every episode of a file or fixed
        source: the same :attr:`~digital_twin.vm.cluster.Cluster.placement_token`) copies its rows whole.
        ``static`` is the cluster's :meth:`_static` entry.
        """
        by_scale = static[3]
        scales = (self._cpu_scale, self._mem_scale)
        rows = by_scale.get(scales)
        if rows is None:
            cpu = cluster.vm_cpu.astype(np.float32)
            mem = cluster.vm_mem.astype(np.float32)
            cs, ms = scales
            span, allow = (cluster.vm_span == 2)[:, None], cluster.vm_allow_migration[:, None]
            zero = np.zeros((cluster.num_vms, 1), np.float32)
            canonical = np.concatenate([cpu / cs, mem / ms, span, allow, zero], axis=1).astype(np.float32)
            swapped = np.concatenate([cpu[:, ::-1] / cs, mem[:, ::-1] / ms, span, allow, zero], axis=1).astype(np.float32)
            rows = by_scale[scales] = [canonical, swapped, None]
        return rows

    def _refresh_fragment_rates(self) -> None:
        """Snapshot-wide FR at 16, 8 and 32 vCPU, recomputed from the clusters' running sums after a change.

        :func:`~digital_twin.vm.cluster.fleet_fragment_rate`'s definition (the clusters' numerators
        summed over their summed free vCPU, 0 when none is free), the three sizes in one pass.
        """
        free = frag16 = frag8 = frag32 = 0
        for c in self._clusters:
            denominator, numerator8, numerator16, numerator32 = c.fragment_totals()
            free += denominator
            frag8 += numerator8
            frag16 += numerator16
            frag32 += numerator32
        self._fr = (frag16 / free, frag8 / free, frag32 / free) if free else (0.0, 0.0, 0.0)

    # ------------------------------------------------------------------ masks
    def _set_mask(self) -> None:
        mask = self._mask
        mask.fill(False)
        if self.phase == PHASE_PICK_VM:
            mask[: self.num_vms] = self._movable
            mask[self.stop_action] = True
            return
        c = self._vm_cluster[self.selected]
        cluster = self._clusters[c]
        cluster.feasible_destinations(self.selected - self._vm_offset[c], out=self._dest_views[c])
        self._mask_token = cluster.placement_token  # the placement this mask was read off

    def _invalid(self, action: int):
        if self.phase == PHASE_PICK_VM:
            if not 0 <= action < self.num_actions:
                why = f"action {action} outside Discrete({self.num_actions})"
            elif action >= self.num_vms:
                why = f"action {action} picks padding: the snapshot has {self.num_vms} VMs (stop is {self.stop_action})"
            else:
                c = self._vm_cluster[action]
                why = (f"VM {self._clusters[c].vm_ids[action - self._vm_offset[c]]} (action {action}) "
                       "has no feasible destination")
        else:
            vm = self.selected
            c = self._vm_cluster[vm]
            host, placement = action // 2, action % 2
            lo, hi = self._host_offset[c], self._host_offset[c + 1]
            if action == self.stop_action or not 0 <= action < 2 * self.num_hosts:
                why = f"action {action} is not a destination (hosts 0..{self.num_hosts - 1}, 2*host+placement)"
            elif not lo <= host < hi:
                why = f"host {host} is outside VM {vm}'s cluster {self._clusters[c].name} (hosts {lo}..{hi - 1})"
            else:
                why = self._clusters[c].check_migration(vm - self._vm_offset[c], host - lo, placement)
        message = f"invalid action in phase {self.phase}: {why}"
        if self.invalid_action == "raise":
            raise ValueError(message)
        info = self._info()
        info["invalid_action"] = True
        info["invalid_action_reason"] = message
        return self._observation(), -float(self.invalid_action_penalty), False, False, info

    # ------------------------------------------------------------------ observations
    def _rebuild_features(self) -> None:
        """Write every row of the observation buffers from the clusters (reset; every step with ``incremental_obs=False``)."""
        vm_features, host_features, vm_host = self._vm_features, self._host_features, self._vm_host
        cs, ms = self._cpu_scale, self._mem_scale
        for c, cluster in enumerate(self._clusters):
            v0, h0 = self._vm_offset[c], self._host_offset[c]
            variants = self._rows[c]
            canonical, swapped, last = variants
            rows = vm_features[v0: v0 + cluster.num_vms]
            hosts = host_features[h0: h0 + cluster.num_hosts]
            token = cluster.placement_token
            touched, self._num_touched[c] = self._num_touched[c], 0
            if last is not None and last[0] is token:  # the placement of the last rebuild: its rows
                base = self._buffer_base[c]
                if base is not None and base[0] is token and base[1] is variants and touched <= _TOUCHED_ROWS:
                    # Still in the buffers, but for the rows the migrations since rewrote.
                    if touched:
                        _restore_rows(vm_features, host_features, vm_host, last[1], last[2], cluster.vm_host,
                                      v0, h0, self._touched[c], touched)
                else:
                    rows[:] = last[1]
                    hosts[:] = last[2]
                    np.add(cluster.vm_host, h0, out=vm_host[v0: v0 + cluster.num_vms])
                    self._buffer_base[c] = (token, variants)
                continue
            self._buffer_base[c] = None
            np.add(cluster.vm_host, h0, out=vm_host[v0: v0 + cluster.num_vms])
            rows[:] = canonical
            swap = np.flatnonzero(cluster.vm_placement == 1)
            if swap.size:
                rows[swap] = swapped[swap]
            free_cpu, free_mem = cluster.free_cpu, cluster.free_mem
            hosts[:, 0:2] = free_cpu / cs  # float64, then stored as float32 (as the incremental update does)
            hosts[:, 2:4] = free_mem / ms
            hosts[:, 4:6] = (free_cpu & 15) / 16.0  # = free_cpu % 16 for int64, several times faster
            hosts[:, 6] = cluster.host_active
            if self.incremental_obs:  # (rebuilding every step, there is no episode start to keep)
                variants[2] = (token, rows.copy(), hosts.copy())
                self._buffer_base[c] = (token, variants)
        vm_features[self.num_vms:] = 0.0
        host_features[self.num_hosts:] = 0.0
        vm_host[self.num_vms:] = 0
        if self.selected >= 0:
            vm_features[self.selected, 6] = 1.0

    def _update_features(self, c: int, vm: int, src: int, dst: int, placement: int) -> None:
        """Rewrite the rows a migration changed: the VM's (now at ``placement``, no longer
        selected) and its old and new host's (one compiled call: :func:`_write_migration_rows`)."""
        cluster = self._clusters[c]
        n = self._num_touched[c]
        _write_migration_rows(self._vm_features, self._host_features, self._vm_host, self._rows[c][placement],
                              vm, vm - self._vm_offset[c], self._host_offset[c], src, dst, cluster.free_cpu,
                              cluster.free_mem, self._cpu_scale, self._mem_scale, self._touched[c], n)
        self._num_touched[c] = n + 1

    def _set_globals(self) -> None:
        """``obs["globals"]`` of both phases (FR and budget left change with migrations only), into
        ``_globals`` (2, 5): struct packs the Python floats as float32, rounding as numpy's cast does."""
        left = (self.budget - self.migrations_used) / self.budget
        fr16, fr8, fr32 = self._fr
        _PACK_GLOBALS.pack_into(self._globals, 0, fr16, fr8, fr32, left, float(PHASE_PICK_VM),
                                fr16, fr8, fr32, left, float(PHASE_PICK_DESTINATION))

    def _observation(self) -> dict[str, np.ndarray]:
        globals_ = self._globals[self.phase].copy()
        return {
            "vm_features": self._vm_features.copy(),
            "host_features": self._host_features.copy(),
            "vm_host": self._vm_host.copy(),
            "vm_mask": self._vm_mask.copy(),
            "host_mask": self._host_mask.copy(),
            "selected_vm": self._selected_vm.copy(),
            "globals": globals_,
            "action_mask": self._mask_int8.copy(),  # the same bytes as int8: a copy, no conversion
        }

    def _info(self, final: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {
            "fragment_rate": self._fr[0],
            "fragment_rate_8": self._fr[1],
            "fragment_rate_32": self._fr[2],
            "fragment_rate_start": self.fr_start,
            "migrations_used": self.migrations_used,
            "budget": self.budget,
            "budget_source": self.budget_source,
            "memory_moved_mb": self._memory_moved,
            "phase": self.phase,
            "split": self.source.split,
        }
        if final:
            # New-VM capacity recounts the hosts touched since the last call: cheap, but kept to
            # episode ends. Summed over the clusters as Snapshot.metrics() does.
            capacity: dict[str, int] = {}
            for cluster in self._clusters:
                for name, n in cluster.new_vm_capacity().items():
                    capacity[name] = capacity.get(name, 0) + n
            info["new_vm_capacity"] = capacity
        return info


def padding_error(what: str, hosts: int, vms: int, max_hosts: int, max_vms: int, where: str = "") -> str:
    """The message for data larger than the padding: which config key, and the size it needs."""
    keys = [f"env.max_hosts to at least {hosts}"] if hosts > max_hosts else []
    keys += [f"env.max_vms to at least {vms}"] if vms > max_vms else []
    return (f"{where + ': ' if where else ''}{what} has {hosts} hosts and {vms} VMs; the env pads to "
            f"max_hosts={max_hosts}, max_vms={max_vms}: set {' and '.join(keys)} in the config, or leave "
            "max_hosts and max_vms out so that the padding follows the sources")


# ---------------------------------------------------------------------- the env section of a config
def _int_at_least(low: int, none_ok: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and none_ok:
            return None
        ok = not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= low
        return None if ok else f"an integer >= {low}{' or null (follow the data)' if none_ok else ''}"
    return check


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "one of " + ", ".join(map(repr, choices))


_OPTION_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "max_hosts": _int_at_least(1, none_ok=True),
    "max_vms": _int_at_least(1, none_ok=True),
    "budget": lambda v: None if v is None else _int_at_least(1)(v),  # None: the snapshot's maximum_migration
    "invalid_action": _one_of("raise", "penalty"),
    "invalid_action_penalty": lambda v: None if not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0
    else "a number >= 0",
    "incremental_obs": lambda v: None if isinstance(v, bool) else "true or false",
    "render_mode": _one_of(None, *VMReschedulingEnv.metadata["render_modes"]),
}
"""One value check per constructor parameter (a test keeps the two in step)."""


def env_option_names() -> list[str]:
    """The keys a config's ``env`` section takes: :class:`VMReschedulingEnv`'s parameters but
    ``source`` (the sources are the config's ``*_source`` keys)."""
    params = inspect.signature(VMReschedulingEnv.__init__).parameters
    return [name for name in params if name not in ("self", "source")]


def check_env_options(where: str, options: Any, prefix: str = "") -> dict[str, Any]:
    """Check env options (a config's ``env`` section, overrides, or the constructor's arguments).

    Args:
        where: what to name in messages (the config file, ``"VMReschedulingEnv"``, ...).
        options: the options given.
        prefix: how the options are spelt in the file (``"env."``).

    Returns:
        ``options``, unchanged.

    Raises:
        ConfigError: an unknown key (with the allowed ones and a did-you-mean) or a bad value.
    """
    check_keys(where, options, env_option_names(), prefix=prefix)
    for key, value in options.items():
        wanted = _OPTION_CHECKS[key](value)
        if wanted:
            raise ConfigError(f"{where}: {prefix}{key} must be {wanted}, got {value!r}")
    return options


def make_vm_env(config: dict[str, Any] | str | Path | None = None, split: str = "train",
                **overrides: Any) -> VMReschedulingEnv:
    """A :class:`VMReschedulingEnv` from a config (mapping or YAML path; see ``configs/vm_rescheduling/``).

    Also the entry point of ``gym.make("clustergym/VMRescheduling-v0", config=..., split=...)``,
    which thus takes its configuration as ``clustergym/MicroserviceAutoscaling-v0`` does.

    Args:
        config: the config, or the path of its YAML file (checked by
            :func:`~envs.vm_sources.load_vm_config`); None: no config, the keyword arguments are
            the env's own (default source: the bundled real snapshot).
        split: ``"train"`` uses ``train_source``; ``"val"`` the held-out ``val_source`` (training
            picks its ``best`` model on it); ``"eval"`` the held-out ``eval_source``.
        overrides: env keyword arguments that take precedence over the config's ``env`` section.

    Raises:
        ConfigError: (a ``ValueError``) a mistake in the config or the overrides, or a file
            source whose snapshots do not fit the ``max_hosts`` / ``max_vms`` the config fixes.
    """
    if config is None:
        if split != "train":
            raise ConfigError(f"split={split!r} needs a config with a {split}_source (config=...)")
        check_keys("env keyword arguments", overrides, [*env_option_names(), "source", "config", "split"])
        return VMReschedulingEnv(**overrides)
    config = load_vm_config(config)
    where = config["path"]
    if split not in ("train", "val", "eval"):
        raise ConfigError(f"{where}: split must be 'train', 'val' or 'eval', got {split!r}")
    if f"{split}_source" not in config:
        raise ConfigError(f"{where}: no {split}_source")
    if "source" in overrides:
        raise ConfigError(f"source={overrides['source']!r:.40}: with a config, the source is its {split}_source; "
                          "give a config or a source, not both")
    kwargs = {**config["env"], **check_env_options("env keyword arguments", overrides)}
    sources = {key: make_source(config[key], where=f"{where}: {key}")
               for key in ("train_source", "val_source", "eval_source") if key in config}
    # One padding for every split of a config: its envs share one observation space.
    sizes = {key: src.max_size() for key, src in sources.items()
             if kwargs.get("max_hosts") is None or kwargs.get("max_vms") is None or isinstance(src, FileSource)}
    for key, (hosts, vms) in sizes.items():
        padded_hosts, padded_vms = kwargs.get("max_hosts") or hosts, kwargs.get("max_vms") or vms
        # Files are known exactly: refuse here rather than at the reset that draws the large one.
        if isinstance(sources[key], FileSource) and (hosts > padded_hosts or vms > padded_vms):
            raise ConfigError(padding_error(f"{key} (its largest file)", hosts, vms, padded_hosts, padded_vms, where))
    if kwargs.get("max_hosts") is None:
        kwargs["max_hosts"] = max(h for h, _ in sizes.values())
    if kwargs.get("max_vms") is None:
        kwargs["max_vms"] = max(v for _, v in sizes.values())
    return VMReschedulingEnv(source=sources[f"{split}_source"], **kwargs)
