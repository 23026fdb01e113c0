"""Compiled kernels of :class:`digital_twin.vm.cluster.Cluster`'s per-migration bookkeeping.

After a migration the cluster re-evaluates every VM shape on the two hosts it touched, carries
the changes into the per-set counts of fitting hosts, and answers "which VMs can move" for every
VM. Each is a few dozen scalar operations per shape or a pass over the VMs: numpy spends that
time dispatching (about 40 µs per migration on a 1,264-host snapshot with 330 deployment sets,
measured), a compiled loop a few microseconds. The reference is the cluster's from-scratch
recompute (``Cluster._compute_shape_masks``, ``_build_set_fit``, ``feasible_destinations_all``):
``tests/vm/test_deployment_sets.py`` and ``tests/vm/test_properties.py`` compare the incremental
state with it after random migration sequences.

Compiled on first use (a few seconds) and cached with the project's other kernels
(:mod:`digital_twin.numba_cache`).
"""

from __future__ import annotations

from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)


@njit(cache=True)
def refresh_shape_hosts(hosts, free_cpu, free_mem, active, shape_cpu, shape_mem, split,
                        fit, any_fit, count, track, rack_code, rack_fit, occ_h, occ_r, nbf):
    """Re-evaluate every shape on ``hosts``; keep ``any_fit``'s counts and, with ``track``, the sets'.

    Shapes: free_cpu / free_mem (H, 2); shape_cpu / shape_mem (K, 2), split (K,) (a shape over both
    NUMA nodes: part j on node j, placement 0 only); fit (K, H, 2), any_fit (K, H), count (K,).
    With ``track``: rack_code (H,), rack_fit (K, R) fitting hosts per rack, occ_h (H, S_h) and
    occ_r (R, S_r) set occupancy, nbf (S_h + S_r, K) the fitting hosts each set occupies; a host
    that starts (stops) fitting shape k adds (removes) one for every set present on it or its rack.
    """
    num_shapes = shape_cpu.shape[0]
    num_host_sets = occ_h.shape[1]
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
    """out[v] = VM v may migrate and its shape fits some host other than its own (sets aside)."""
    for v in range(vm_shape.shape[0]):
        k = vm_shape[v]
        out[v] = count[k] > (1 if any_fit[k, vm_host[v]] else 0) and (all_allowed or allow[v])


@njit(cache=True)
def movable_single_sets(out, vm_shape, vm_host, allow, all_allowed, any_fit, count, vm_set_cell, host_cells, nbf,
                        rp_vm, rp_set, rp_kh, rp_kr, rack_code, rack_fit, occ_r, rack_crowded):
    """:func:`movable_by_shape`, then each VM's set verdict, when no VM is in two sets (``Cluster._set_vms_movable``).

    A VM of shape k in set s is movable if the hosts fitting k outnumber the fitting hosts s
    occupies (its own host is one of them, so it is excluded too). ``vm_set_cell`` is each VM's
    flat (set, shape) cell into ``nbf`` (host sets first: cells below ``host_cells``; ``nbf.size``
    for a VM in no set). A rack-set member alone in its rack also has the other fitting hosts of
    that rack, so the rack-set memberships (``rp_*``) get that second look where the count says no.
    """
    movable_by_shape(vm_shape, vm_host, allow, all_allowed, any_fit, count, out)
    nbf_flat, any_flat, rack_fit_flat, occ_r_flat = nbf.reshape(-1), any_fit.reshape(-1), rack_fit.reshape(-1), occ_r.reshape(-1)
    num_rack_sets = occ_r.shape[1]
    for v in range(out.shape[0]):
        cell = vm_set_cell[v]
        if cell < host_cells and out[v]:
            out[v] = count[vm_shape[v]] > nbf_flat[cell]
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
        out[v] = open_hosts + back > 0


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
    for h in range(free_cpu.shape[0]):
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
        for h in range(free_cpu.shape[0]):
            if memb_rack[i]:
                r = rack_code[h]
                closed = occ_r[r, s] > (1 if r == own_rack else 0)
            else:
                closed = occ_h[h, s] > 0
            if closed:
                out[h, 0] = out[h, 1] = False
