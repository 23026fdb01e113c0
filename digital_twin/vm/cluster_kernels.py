"""Compiled kernels of :class:`digital_twin.vm.cluster.Cluster`'s per-migration bookkeeping.

After a migration the cluster re-evaluates every VM shape on the two hosts it touched, carries
the changes into the per-set counts of fitting hosts, and answers "which VMs can move" for every
VM. Each is a few dozen scalar operations per shape or a pass over the VMs: numpy spends that
time dispatching (about 40 µs per migration on a 1,264-host snapshot with 330 deployment sets,
measured), a compiled loop a few microseconds. numba's dispatch costs ~0.07 µs per array argument
on an idle core and ~0.15 µs in an env's step loop (measured: the array headers are out of cache
by then), so a per-step caller makes one call per migration: ``migrate_refresh*`` (:func:`move_vm`,
then :func:`refresh_shape_hosts` on the touched hosts, then :func:`movable_from_cells` and
:func:`rack_second_look`), and one per VM selected (:func:`destinations_from_fit`). ``move_vm``
alone is ``Cluster.migrate``'s and ``undo``'s, ``refresh_movable*`` ``Cluster.movable_vms_into``'s;
the new-VM capacity is recounted on the touched hosts only (``refresh_fit_counts``). The
reference is the cluster's from-scratch recompute (``Cluster._compute_shape_masks``,
``_build_set_fit``, ``feasible_destinations_all``): ``tests/vm/test_deployment_sets.py`` and
``tests/vm/test_properties.py`` compare the incremental state with it after random migration
sequences, and the one-call path with the separate calls.

Compiled on first use (a few seconds) and cached with the project's other kernels
(:mod:`digital_twin.numba_cache`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)


@njit(cache=True)
def move_vm(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active, vm_host,
            vm_placement, memb_rows, num_host_sets, member_start, member_vms, rack_code, occ_hp, occ_r, track, pending,
            num_pending, any_fit, rack_fit, nbf):
    """Move VM ``vm`` from ``(src, src_place)`` to ``(dst, dst_place)`` without checks (``Cluster._move``).

    Its canonical usage ``(cpu0, cpu1)`` / ``(mem0, mem1)`` leaves the NUMA node(s) of the source
    and takes those of the destination (part j on node ``j ^ placement``, a part that uses
    nothing skipped); ``vm_host`` / ``vm_placement`` follow. Returns ``(change of the free vCPU
    summed over active nodes, of its sum mod 8, mod 16, mod 32, change of the crowded (rack, rack
    set) cells, pending rows now)``: the fragment sums' updates (Python's ``%``, which numba's
    integer ``%`` follows).

    Deployment sets: ``memb_rows`` are the VM's (host sets below ``num_host_sets``, then rack
    sets). Its presence moves in ``occ_hp`` (H, W) uint64, bit ``s % 64`` of word ``s // 64``:
    host set ``s`` has a member on the host (the set's other members, ``member_vms[member_start[s]:
    member_start[s + 1]]``, say whether it still has one on the source and had one on the
    destination), and in the counts ``occ_r`` (R, S_r), a rack set's only when the rack changes.
    With ``track`` (the per-set fit counts are built), each unit (host or rack) that a set stops
    or starts occupying is deferred as a row ``(nbf row, unit, sign, rack?)`` of ``pending``,
    applied by the next :func:`refresh_shape_hosts` against the fit cached until then; when the
    buffer cannot take this move's rows, the rows already there are applied first, here (against
    the same cached fit, so the counts are as if the refresh had applied them). The buffer holds
    at least ``2 * len(memb_rows)`` rows (the caller's part).
    """
    d_free, d8, d16, d32 = move_capacity(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu,
                                         free_mem, active, vm_host, vm_placement)
    crowded = 0
    m = memb_rows.shape[0]
    if m == 0:
        return d_free, d8, d16, d32, crowded, num_pending
    if track and num_pending + 2 * m > pending.shape[0]:
        apply_pending(pending, num_pending, any_fit, rack_fit, nbf)
        num_pending = 0
    for i in range(m):
        row = memb_rows[i]
        rack = row >= num_host_sets
        if rack:
            s = row - num_host_sets
            a, b = rack_code[src], rack_code[dst]
            if a == b:
                continue
            occ_r[a, s] -= 1
            occ_r[b, s] += 1
            left, came = occ_r[a, s], occ_r[b, s]
            crowded += (1 if came == 2 else 0) - (1 if left == 1 else 0)
        else:
            s = row
            a, b = src, dst
            left = came = 0  # the set's other members on the source (after the move) and on the destination (+ the VM)
            for j in range(member_start[s], member_start[s + 1]):
                m = member_vms[j]
                if m != vm:
                    h = vm_host[m]
                    left += h == src
                    came += h == dst
            came += 1
            word, bit = s >> 6, np.uint64(1) << np.uint64(s & 63)
            if left == 0:
                occ_hp[a, word] &= ~bit
            occ_hp[b, word] |= bit
        if track:
            if left == 0:
                pending[num_pending, 0], pending[num_pending, 1] = row, a
                pending[num_pending, 2], pending[num_pending, 3] = -1, rack
                num_pending += 1
            if came == 1:
                pending[num_pending, 0], pending[num_pending, 1] = row, b
                pending[num_pending, 2], pending[num_pending, 3] = 1, rack
                num_pending += 1
    return d_free, d8, d16, d32, crowded, num_pending


@njit(cache=True)
def move_capacity(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active, vm_host,
                  vm_placement):
    """:func:`move_vm` for a VM in no deployment set (its first part: capacity, placement, the
    fragment sums' four changes, returned), five arrays to unbox instead of thirteen."""
    d_free = d8 = d16 = d32 = 0
    for side in range(2):
        host = src if side == 0 else dst
        place = src_place if side == 0 else dst_place
        sign = 1 if side == 0 else -1
        counted = active[host]
        for part in range(2):
            cpu = cpu0 if part == 0 else cpu1
            mem = mem0 if part == 0 else mem1
            if cpu == 0 and mem == 0:  # (Cluster._vm_parts: the parts with some usage)
                continue
            node = part ^ place
            old = free_cpu[host, node]
            new = old + sign * cpu
            free_cpu[host, node] = new
            free_mem[host, node] = free_mem[host, node] + sign * mem
            if counted:
                d_free += new - old
                d8 += new % 8 - old % 8
                d16 += new % 16 - old % 16
                d32 += new % 32 - old % 32
    vm_host[vm] = dst
    vm_placement[vm] = dst_place
    return d_free, d8, d16, d32


@njit(cache=True)
def apply_pending(pending, num_pending, any_fit, rack_fit, nbf):
    """Apply the first ``num_pending`` deferred set-count rows ``(nbf row, unit, sign, rack?)`` of
    ``pending`` against the cached fit: the row gains (loses) that host's or rack's fitting hosts."""
    num_shapes = nbf.shape[1]
    for p in range(num_pending):
        row, unit, sign = pending[p, 0], pending[p, 1], pending[p, 2]
        if pending[p, 3]:
            for k in range(num_shapes):
                nbf[row, k] += sign * rack_fit[k, unit]
        else:
            for k in range(num_shapes):
                nbf[row, k] += sign * np.int64(any_fit[k, unit])


@njit(cache=True)
def refresh_shape_hosts(hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split,
                        fit, any_fit, count, track, rack_code, rack_fit, occ_hp, occ_r, nbf, pending, num_pending):
    """Re-evaluate every shape on ``hosts``; keep ``any_fit``'s counts and, with ``track``, the sets'.

    Shapes: free_cpu / free_mem (H, 2); shape_cpu / shape_mem (K, 2), split (K,) (a shape over both
    NUMA nodes: part j on node j, placement 0 only); fit (K, H, 2), any_fit (K, H), count (K,).
    With ``track``: rack_code (H,), rack_fit (K, R) fitting hosts per rack, occ_hp (H, W) host
    sets present per host (bits, see :func:`move_vm`) and occ_r (R, S_r) rack-set occupancy, nbf
    (S_h + S_r, K) the fitting hosts each set occupies (S_h = ``nbf`` rows less occ_r's columns);
    a host that starts (stops) fitting shape k adds (removes) one for every set present on it or
    its rack.

    First, with ``track``, the first ``num_pending`` rows of ``pending`` (n, 4) are applied: the
    set occupancy changes that migrations deferred (:func:`move_vm`), each ``(nbf row,
    host or rack, sign, rack?)``: the row gains (loses) that unit's fitting hosts as they were
    before this refresh.
    """
    num_shapes = shape_cpu.shape[0]
    if track:
        apply_pending(pending, num_pending, any_fit, rack_fit, nbf)
    for h in hosts:
        c0, c1 = free_cpu[h, 0], free_cpu[h, 1]
        m0, m1 = free_mem[h, 0], free_mem[h, 1]
        on = active[h]
        for k in range(num_shapes):
            if not on:
                a0 = a1 = False
            elif split[k]:
                a0 = c0 >= shape_cpu[k, 0] and c1 >= shape_cpu[k, 1] and m0 >= shape_mem[k, 0] and m1 >= shape_mem[k, 1]
                a1 = False
            else:
                a0 = c0 >= shape_cpu[k, 0] and m0 >= shape_mem[k, 0]
                a1 = c1 >= shape_cpu[k, 0] and m1 >= shape_mem[k, 0]
            fit[k, h, 0] = a0
            fit[k, h, 1] = a1
            now = a0 or a1
            if now == any_fit[k, h]:
                continue
            any_fit[k, h] = now
            d = 1 if now else -1
            count[k] += d
            if track:
                r = rack_code[h]
                rack_fit[k, r] += d
                for w in range(occ_hp.shape[1]):
                    word, s = occ_hp[h, w], w * 64
                    while word:
                        if word & np.uint64(1):
                            nbf[s, k] += d
                        word >>= np.uint64(1)
                        s += 1
                num_host_sets = nbf.shape[0] - occ_r.shape[1]
                for s in range(occ_r.shape[1]):
                    if occ_r[r, s] > 0:
                        nbf[num_host_sets + s, k] += d


@njit(cache=True)
def movable_from_cells(out, vm_cell, vm_host, any_fit, count, nbf, num_host_sets):
    """out[v] = VM v may migrate and its shape fits some host other than its own, its host set
    allowing; returns how many.

    A verdict depends on the VM's shape ``k`` and, for a member of one host set ``s``, on that
    set alone: the hosts fitting ``k`` must outnumber the fitting hosts ``s`` occupies (its own
    host is one of them, so it is excluded too); a VM in no host set needs one fitting host
    other than its own, which only a shape that fits exactly one host makes depend on where the
    VM is. So the verdicts are a small table over cells, ``[(host set s, shape k) for s < S_h |
    shape k | never]``, and each VM reads its cell's: ``vm_cell[v]`` (int32), the never cell for
    a VM that may not migrate, the shape's for a VM in no host set (rack-set members included:
    :func:`rack_second_look` refines theirs). The pass over the VMs reads 4 bytes a VM and a table
    that stays in L1, without branches, where reading each VM's shape, host and set cell and
    gathering from the (K, H) fit and the (S, K) counts cost several times as much in a step loop
    that keeps other data in cache; only a shape that fits a single host (rare on a large
    cluster) takes a second pass, for its VMs on that host. ``nbf`` (S_h + S_r, K): fitting hosts
    each set occupies (host sets first).
    """
    num_shapes, num_hosts = count.shape[0], any_fit.shape[1]
    base = num_host_sets * num_shapes
    # 0 no, 1 yes; int32, so that the pass below gathers from it without branches (SIMD).
    table = np.empty(base + num_shapes + 1, np.int32)
    for s in range(num_host_sets):
        for k in range(num_shapes):
            table[s * num_shapes + k] = count[k] > nbf[s, k]  # (nbf counts the VM's own host if it fits)
    one_host = False  # a shape that fits one host only: its VMs in no host set can go there unless on it
    for k in range(num_shapes):
        have = count[k]
        table[base + k] = have > 0
        one_host |= have == 1
    table[base + num_shapes] = 0
    out_u8 = out.view(np.uint8)
    n = 0
    for v in range(vm_cell.shape[0]):
        t = table[vm_cell[v]]
        out_u8[v] = t
        n += t
    if one_host:
        any_u8 = any_fit.reshape(-1).view(np.uint8)  # (numba's bool-to-integer conversion costs more than the loop)
        for v in range(vm_cell.shape[0]):
            k = vm_cell[v] - base
            if 0 <= k < num_shapes and count[k] == 1 and any_u8[k * num_hosts + vm_host[v]]:
                out_u8[v] = 0
                n -= 1
    return n


@njit(cache=True)
def rack_second_look(out, n, vm_host, count, nbf, any_fit, rp, rack_code, rack_fit, occ_r, rack_crowded):
    """Each rack-set member that :func:`movable_from_cells` found movable by its shape: movable if a
    fitting host outside the set's racks is left, or, when it is alone in its rack, another
    fitting host of that rack; returns the new count.

    ``rp`` (m, 6): per rack-set membership ``(vm, set, shape, flat (set, shape) cell of nbf, shape
    * H, shape * R)``. No VM is in two sets (``Cluster._multi`` is false).
    """
    nbf_flat, any_flat = nbf.reshape(-1), any_fit.reshape(-1)
    rack_fit_flat, occ_r_flat = rack_fit.reshape(-1), occ_r.reshape(-1)
    num_rack_sets = occ_r.shape[1]
    for i in range(rp.shape[0]):
        v = rp[i, 0]
        if not out[v]:
            continue
        open_hosts = count[rp[i, 2]] - nbf_flat[rp[i, 3]]
        if open_hosts > 0:
            continue
        own = vm_host[v]
        own_rack = rack_code[own]
        back = rack_fit_flat[rp[i, 5] + own_rack] - (1 if any_flat[rp[i, 4] + own] else 0)
        if rack_crowded and occ_r_flat[own_rack * num_rack_sets + rp[i, 1]] != 1:
            back = 0
        if open_hosts + back <= 0:
            out[v] = False
            n -= 1
    return n


@njit(cache=True)
def refresh_movable(out, hosts, num_hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit,
                    count, vm_cell, vm_host):
    """:func:`refresh_shape_hosts` on ``hosts[:num_hosts]`` (no sets to track), then
    :func:`movable_from_cells` (shape cells only): one call per migration."""
    none = np.zeros((0, 0), np.int64)
    if num_hosts:
        refresh_shape_hosts(hosts[:num_hosts], free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit,
                            any_fit, count, False, vm_host[:0], none, np.zeros((0, 0), np.uint64),
                            np.zeros((0, 0), np.int8), none, none, 0)
    return movable_from_cells(out, vm_cell, vm_host, any_fit, count, none, 0)


@njit(cache=True)
def refresh_movable_single_sets(out, hosts, num_hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit,
                                any_fit, count, rack_code, rack_fit, occ_hp, occ_r, nbf, pending, num_pending,
                                vm_cell, vm_host, rp, rack_crowded):
    """:func:`refresh_shape_hosts` on ``hosts[:num_hosts]`` (the set counts tracked, pending changes
    first), then :func:`movable_from_cells` and :func:`rack_second_look`: one call per migration."""
    if num_hosts or num_pending:
        refresh_shape_hosts(hosts[:num_hosts], free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit,
                            count, True, rack_code, rack_fit, occ_hp, occ_r, nbf, pending, num_pending)
    n = movable_from_cells(out, vm_cell, vm_host, any_fit, count, nbf, nbf.shape[0] - occ_r.shape[1])
    return rack_second_look(out, n, vm_host, count, nbf, any_fit, rp, rack_code, rack_fit, occ_r, rack_crowded)


@njit(cache=True)
def migrate_refresh(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active, vm_host,
                    vm_placement, hosts, num_hosts, shape_cpu, shape_mem, split, fit, any_fit, count, vm_cell, out):
    """:func:`move_vm` (a cluster without sets), then :func:`refresh_movable` on the two hosts it
    touched and ``hosts[:num_hosts]``: a migration and every VM's verdict in one call.

    Returns :func:`move_vm`'s six values, the last two (crowded cells, pending rows) 0, and the
    number of movable VMs.
    """
    no_i8 = np.zeros((0, 0), np.int8)
    no_u64 = np.zeros((0, 0), np.uint64)
    no_i64 = np.zeros((0, 0), np.int64)
    none = vm_host[:0]
    d_free, d8, d16, d32, crowded, num_pending = move_vm(
        vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active, vm_host,
        vm_placement, none, 0, none, none, none, no_u64, no_i8, False, no_i64, 0, any_fit, no_i64, no_i64)
    touched = _with_pair(hosts, num_hosts, src, dst)
    refresh_shape_hosts(touched, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit, count,
                        False, none, no_i64, no_u64, no_i8, no_i64, no_i64, 0)
    movable = movable_from_cells(out, vm_cell, vm_host, any_fit, count, no_i64, 0)
    return d_free, d8, d16, d32, crowded, num_pending, movable


@njit(cache=True)
def migrate_refresh_single_sets(vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active,
                                vm_host, vm_placement, memb_rows, member_start, member_vms, rack_code, occ_hp, occ_r,
                                pending, num_pending, hosts, num_hosts, shape_cpu, shape_mem, split, fit, any_fit,
                                count, rack_fit, nbf, vm_cell, rp, rack_crowded, out):
    """:func:`move_vm` (a cluster whose VMs are in one set at most, its set counts built), then
    :func:`refresh_movable_single_sets` on the two hosts it touched and ``hosts[:num_hosts]``, the
    move's set-count changes with the ones pending before (``pending[:num_pending]``): a migration
    and every VM's verdict in one call, where two calls pass ~35 arrays (numba unboxes each, ~0.1
    µs a time in a step loop). Returns :func:`move_vm`'s six values (pending rows: 0, all applied)
    and the number of movable VMs. ``pending`` holds ``num_pending + 2 * len(memb_rows)`` rows or
    at least ``2 * len(memb_rows)`` (the caller's part, as for :func:`move_vm`).
    """
    num_host_sets = nbf.shape[0] - occ_r.shape[1]
    d_free, d8, d16, d32, crowded, num_pending = move_vm(
        vm, src, src_place, dst, dst_place, cpu0, cpu1, mem0, mem1, free_cpu, free_mem, active, vm_host,
        vm_placement, memb_rows, num_host_sets, member_start, member_vms, rack_code, occ_hp, occ_r, True, pending,
        num_pending, any_fit, rack_fit, nbf)
    touched = _with_pair(hosts, num_hosts, src, dst)
    refresh_shape_hosts(touched, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit, count,
                        True, rack_code, rack_fit, occ_hp, occ_r, nbf, pending, num_pending)
    n = movable_from_cells(out, vm_cell, vm_host, any_fit, count, nbf, num_host_sets)
    n = rack_second_look(out, n, vm_host, count, nbf, any_fit, rp, rack_code, rack_fit, occ_r,
                         rack_crowded + crowded > 0)
    return d_free, d8, d16, d32, crowded, 0, n


@njit(cache=True)
def _with_pair(hosts, num_hosts, a, b):
    """``[a, b, *hosts[:num_hosts]]`` (a host twice is refreshed twice, the second time a no-op)."""
    out = np.empty(num_hosts + 2, np.int64)
    out[0], out[1] = a, b
    out[2:] = hosts[:num_hosts]
    return out


@njit(cache=True)
def destinations_from_fit(out, fit, k, vm, memb_rows, num_host_sets, set_start, set_vms, vm_host, rack_code, num_racks):
    """``out[h, p]``: VM ``vm``, of shape ``k``, fits NUMA placement p of host h and none of its sets forbids h.

    ``fit`` (K, H, 2) is the cluster's per-shape capacity feasibility, up to date (the hosts
    migrations touched refreshed first): the VM's row is copied, then its own host (never a
    destination) and the hosts its sets close are cleared. ``memb_rows``: its deployment sets, as
    rows of the member lists ``set_vms[set_start[row]: set_start[row + 1]]`` (host sets first,
    rack sets from ``num_host_sets``). A host set closes the host of every member; a rack set the
    rack of every member other than the VM itself (its own rack stays open while it is alone
    there). Reading the members (a dozen) instead of a column of the (H, S) occupancy touches a
    few cache lines, where the column touched one per host.
    """
    num_hosts = out.shape[0]
    own = vm_host[vm]
    flat, row = out.reshape(-1), fit[k].reshape(-1)  # (both C-contiguous: one vectorised copy)
    for i in range(2 * num_hosts):
        flat[i] = row[i]
    out[own, 0] = out[own, 1] = False
    for i in range(memb_rows.shape[0]):
        row = memb_rows[i]
        if row < num_host_sets:
            for j in range(set_start[row], set_start[row + 1]):
                h = vm_host[set_vms[j]]  # (the VM itself: its own host, already closed)
                out[h, 0] = out[h, 1] = False
        else:
            closed = np.zeros(num_racks, np.bool_)
            any_closed = False
            for j in range(set_start[row], set_start[row + 1]):
                m = set_vms[j]
                if m != vm:
                    closed[rack_code[vm_host[m]]] = True
                    any_closed = True
            if any_closed:
                for h in range(num_hosts):
                    if closed[rack_code[h]]:
                        out[h, 0] = out[h, 1] = False


@njit(cache=True)
def refresh_fit_counts(hosts, free_cpu, free_mem, active, cpu_per_node, mem_per_node, span2, counts, totals):
    """Recount, on ``hosts``, how many new VMs of each type fit (``metrics.type_fit_counts``), and keep ``totals``.

    Shapes: free_cpu / free_mem (H, 2); cpu_per_node (T,) int64 > 0, mem_per_node (T,) float64 > 0
    (a 2-NUMA type's half request); span2 (T,); counts (T, H) the per-host counts, rewritten on
    ``hosts``; totals (T,) their sums over all hosts, moved by the change.
    """
    for h in hosts:
        on = active[h]
        for t in range(cpu_per_node.shape[0]):
            n = 0
            if on:
                n0 = min(free_cpu[h, 0] // cpu_per_node[t], np.int64(np.floor(free_mem[h, 0] / mem_per_node[t])))
                n1 = min(free_cpu[h, 1] // cpu_per_node[t], np.int64(np.floor(free_mem[h, 1] / mem_per_node[t])))
                n0, n1 = max(n0, 0), max(n1, 0)
                n = min(n0, n1) if span2[t] else n0 + n1
            totals[t] += n - counts[t, h]
            counts[t, h] = n
