"""Compiled kernels of :class:`digital_twin.vm.cluster.Cluster`'s per-migration bookkeeping.

After a migration the cluster re-evaluates every VM shape on the two hosts it touched, carries
the changes into the per-set counts of fitting hosts, and answers "which VMs can move" for every
VM. Each is a few dozen scalar operations per shape or a pass over the VMs: numpy spends that
time dispatching (about 40 µs per migration on a 1,264-host snapshot with 330 deployment sets,
measured), a compiled loop a few microseconds. Per migration a stepping caller makes one call
(``refresh_movable*``: the deferred set-count changes, the touched hosts, then every VM's
verdict), since numba's dispatch costs ~0.2 µs per array argument; the new-VM capacity is
recounted on the touched hosts only (``refresh_fit_counts``). The reference is the cluster's from-scratch
recompute (``Cluster._compute_shape_masks``, ``_build_set_fit``, ``feasible_destinations_all``):
``tests/vm/test_deployment_sets.py`` and ``tests/vm/test_properties.py`` compare the incremental
state with it after random migration sequences.

Compiled on first use (a few seconds) and cached with the project's other kernels
(:mod:`digital_twin.numba_cache`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)


@njit(cache=True)
def refresh_shape_hosts(hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split,
                        fit, any_fit, count, track, rack_code, rack_fit, occ_h, occ_r, nbf, pending, num_pending):
    """Re-evaluate every shape on ``hosts``; keep ``any_fit``'s counts and, with ``track``, the sets'.

    Shapes: free_cpu / free_mem (H, 2); shape_cpu / shape_mem (K, 2), split (K,) (a shape over both
    NUMA nodes: part j on node j, placement 0 only); fit (K, H, 2), any_fit (K, H), count (K,).
    With ``track``: rack_code (H,), rack_fit (K, R) fitting hosts per rack, occ_h (H, S_h) and
    occ_r (R, S_r) set occupancy, nbf (S_h + S_r, K) the fitting hosts each set occupies; a host
    that starts (stops) fitting shape k adds (removes) one for every set present on it or its rack.

    First, with ``track``, the first ``num_pending`` rows of ``pending`` (n, 4) are applied: the
    set occupancy changes that migrations deferred (``Cluster._move_in_sets``), each ``(nbf row,
    host or rack, sign, rack?)``: the row gains (loses) that unit's fitting hosts as they were
    before this refresh.
    """
    num_shapes = shape_cpu.shape[0]
    num_host_sets = occ_h.shape[1]
    if track:
        for p in range(num_pending):
            row, unit, sign = pending[p, 0], pending[p, 1], pending[p, 2]
            if pending[p, 3]:
                for k in range(num_shapes):
                    nbf[row, k] += sign * rack_fit[k, unit]
            else:
                for k in range(num_shapes):
                    nbf[row, k] += sign * np.int64(any_fit[k, unit])
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
                for s in range(num_host_sets):
                    if occ_h[h, s] > 0:
                        nbf[s, k] += d
                for s in range(occ_r.shape[1]):
                    if occ_r[r, s] > 0:
                        nbf[num_host_sets + s, k] += d


@njit(cache=True)
def movable_by_shape(vm_shape, vm_host, allow, all_allowed, any_fit, count, out):
    """out[v] = VM v may migrate and its shape fits some host other than its own (sets aside); returns how many.

    Branch-free per VM (``count[k]`` against the 0/1 of its own host), a flat gather into ``any_fit``
    read as uint8 (numba's bool-to-integer conversion costs more than the rest of the loop).
    """
    num_hosts = any_fit.shape[1]
    any_flat = any_fit.reshape(-1).view(np.uint8)
    allow_u8 = allow.view(np.uint8)
    n = 0
    if all_allowed:
        for v in range(vm_shape.shape[0]):
            k = vm_shape[v]
            ok = count[k] > any_flat[k * num_hosts + vm_host[v]]
            out[v] = ok
            n += ok
    else:
        for v in range(vm_shape.shape[0]):
            k = vm_shape[v]
            ok = (count[k] > any_flat[k * num_hosts + vm_host[v]]) & (allow_u8[v] != 0)
            out[v] = ok
            n += ok
    return n


@njit(cache=True)
def movable_single_sets(out, vm_shape, vm_host, allow, all_allowed, any_fit, count, vm_set_cell, host_cells, nbf,
                        rp_vm, rp_set, rp_kh, rp_kr, rack_code, rack_fit, occ_r, rack_crowded):
    """:func:`movable_by_shape`, then each VM's set verdict, when no VM is in two sets (``Cluster._set_vms_movable``); returns how many.

    A VM of shape k in set s is movable if the hosts fitting k outnumber the fitting hosts s
    occupies (its own host is one of them, so it is excluded too). ``vm_set_cell`` is each VM's
    flat (set, shape) cell into ``nbf`` (host sets first: cells below ``host_cells``; ``nbf.size``
    for a VM in no set). A rack-set member alone in its rack also has the other fitting hosts of
    that rack, so the rack-set memberships (``rp_*``) get that second look where the count says no.
    """
    num_hosts = any_fit.shape[1]
    nbf_flat, any_flat, rack_fit_flat, occ_r_flat = nbf.reshape(-1), any_fit.reshape(-1), rack_fit.reshape(-1), occ_r.reshape(-1)
    any_u8, allow_u8 = any_flat.view(np.uint8), allow.view(np.uint8)  # (see movable_by_shape)
    n = 0
    last = nbf_flat.shape[0] - 1
    for v in range(vm_shape.shape[0]):
        k = vm_shape[v]
        cell = vm_set_cell[v]
        # A host set's fitting hosts bound the VM (no set, rack set: no bound here; the latter below).
        bound = nbf_flat[min(cell, last)] * np.int64(cell < host_cells)
        have = count[k]
        ok = (have > any_u8[k * num_hosts + vm_host[v]]) & (have > bound)
        if not all_allowed:
            ok = ok & (allow_u8[v] != 0)
        out[v] = ok
        n += ok
    num_rack_sets = occ_r.shape[1]
    for i in range(rp_vm.shape[0]):
        v = rp_vm[i]
        if not out[v]:
            continue
        open_hosts = count[vm_shape[v]] - nbf_flat[vm_set_cell[v]]
        if open_hosts > 0:
            continue
        own = vm_host[v]
        own_rack = rack_code[own]
        back = rack_fit_flat[rp_kr[i] + own_rack] - (1 if any_flat[rp_kh[i] + own] else 0)
        if rack_crowded and occ_r_flat[own_rack * num_rack_sets + rp_set[i]] != 1:
            back = 0
        if open_hosts + back <= 0:
            out[v] = False
            n -= 1
    return n


@njit(cache=True)
def refresh_movable(out, hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit, count,
                    vm_shape, vm_host, allow, all_allowed):
    """:func:`refresh_shape_hosts` on ``hosts`` (no sets to track), then :func:`movable_by_shape`: one call per migration."""
    if hosts.shape[0]:
        none = np.zeros((0, 0), np.int64)
        refresh_shape_hosts(hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit, count,
                            False, vm_host[:0], none, none, none, none, none, 0)
    return movable_by_shape(vm_shape, vm_host, allow, all_allowed, any_fit, count, out)


@njit(cache=True)
def refresh_movable_single_sets(out, hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit,
                                count, vm_shape, vm_host, allow, all_allowed, rack_code, rack_fit, occ_h, occ_r, nbf,
                                pending, num_pending, vm_set_cell, host_cells, rp_vm, rp_set, rp_kh, rp_kr,
                                rack_crowded):
    """:func:`refresh_shape_hosts` on ``hosts`` (the set counts tracked, pending changes first), then :func:`movable_single_sets`."""
    if hosts.shape[0] or num_pending:
        refresh_shape_hosts(hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split, fit, any_fit, count,
                            True, rack_code, rack_fit, occ_h, occ_r, nbf, pending, num_pending)
    return movable_single_sets(out, vm_shape, vm_host, allow, all_allowed, any_fit, count, vm_set_cell, host_cells,
                               nbf, rp_vm, rp_set, rp_kh, rp_kr, rack_code, rack_fit, occ_r, rack_crowded)


@njit(cache=True)
def destinations_mask(out, free_cpu, free_mem, active, need_cpu, need_mem, split, own,
                          memb_rack, memb_set, rack_code, occ_h, occ_r):
    """``out[h, p]``: a VM of this shape fits NUMA placement p of host h and none of its sets forbids h.

    need_cpu / need_mem (2,): the VM's parts; ``split``: it spans both nodes (part j on node j,
    placement 0 only), else its one part goes on node p. ``own``: its host (never a destination).
    memb_rack / memb_set: its deployment sets (rack granularity?, index in its group); a host set
    closes every host holding a member, a rack set every rack holding a member (its own rack only
    when another member is there too).
    """
    c0, c1, m0, m1 = need_cpu[0], need_cpu[1], need_mem[0], need_mem[1]
    num_hosts = free_cpu.shape[0]
    for h in range(num_hosts):
        if not active[h]:
            out[h, 0] = out[h, 1] = False
        elif split:
            out[h, 0] = free_cpu[h, 0] >= c0 and free_cpu[h, 1] >= c1 and free_mem[h, 0] >= m0 and free_mem[h, 1] >= m1
            out[h, 1] = False
        else:
            out[h, 0] = free_cpu[h, 0] >= c0 and free_mem[h, 0] >= m0
            out[h, 1] = free_cpu[h, 1] >= c0 and free_mem[h, 1] >= m0
    out[own, 0] = out[own, 1] = False
    own_rack = rack_code[own]
    for i in range(memb_set.shape[0]):
        s = memb_set[i]
        if memb_rack[i]:
            # Racks first (a few dozen), then each host reads its rack's verdict.
            closed = np.empty(occ_r.shape[0], np.bool_)
            for r in range(occ_r.shape[0]):
                closed[r] = occ_r[r, s] > (1 if r == own_rack else 0)
            for h in range(num_hosts):
                if closed[rack_code[h]]:
                    out[h, 0] = out[h, 1] = False
        else:
            for h in range(num_hosts):
                if occ_h[h, s] > 0:
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
