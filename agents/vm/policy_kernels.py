"""Compiled kernels of :class:`agents.vm.policy.IncrementalPolicy`: the graph policy's layers on a few hosts.

A planning decision re-embeds one or two hosts (a dozen VMs, four NUMA nodes) and rescores every
node with the pointer heads. At that size numpy spends its time dispatching small operations
(about 0.5 ms per decision at 279 hosts, profiled); these kernels do the same arithmetic in
compiled loops. The reference is the torch policy itself: ``tests/agents/vm/test_policy.py``
checks the logits against :meth:`agents.vm.policy.VMGraphPolicy.action_logits` within 1e-5.

Weights are passed transposed (``(in, out)``, C-contiguous) and in float32, as the policy holds
them. Compiled on first use (about 10 s) and cached with the twin's kernels
(:mod:`digital_twin.numba_cache`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)


@njit(cache=True)
def linear(x, wt, b, relu_input):
    """``relu?(x) @ wt + b``. Shapes: x (N, I), wt (I, O), b (O,) -> (N, O).

    Each row is computed alone, in one order: a node's result does not depend on which other
    nodes share the call (a full encode and a re-embedding of its host agree bit for bit).
    """
    n, i_dim = x.shape
    o_dim = wt.shape[1]
    out = np.empty((n, o_dim), np.float32)
    for r in range(n):
        for o in range(o_dim):
            out[r, o] = b[o]
        for i in range(i_dim):
            v = x[r, i]
            if relu_input and v < 0.0:
                continue
            if v == 0.0:
                continue
            for o in range(o_dim):
                out[r, o] += v * wt[i, o]
    return out


@njit(cache=True)
def mlp2(x, w1t, b1, w2t, b2):
    """``Linear -> ReLU -> Linear`` (:func:`agents.layers.mlp` with one hidden layer)."""
    return linear(linear(x, w1t, b1, False), w2t, b2, True)


@njit(cache=True)
def layer_norm(x, w, b, eps):
    n, d = x.shape
    out = np.empty_like(x)
    for r in range(n):
        mean = np.float32(0.0)
        for j in range(d):
            mean += x[r, j]
        mean /= d
        var = np.float32(0.0)
        for j in range(d):
            c = x[r, j] - mean
            var += c * c
        var /= d
        inv = np.float32(1.0) / np.float32(math.sqrt(var + eps))
        for j in range(d):
            out[r, j] = (x[r, j] - mean) * inv * w[j] + b[j]
    return out


@njit(cache=True)
def transformer_conv(x_src, x_dst, src, dst, edge_attr, wq, bq, wk, bk, wv, bv, we, ws, bs, heads):
    """:class:`torch_geometric.nn.TransformerConv` (concat heads, ``edge_dim``, root weight, no beta).

    Shapes: x_src (S, d), x_dst (T, d), src / dst (E,) node rows, edge_attr (E, 2) -> (T, heads * C).
    """
    hc = wq.shape[1]
    c = hc // heads
    q = linear(x_dst, wq, bq, False)
    k = linear(x_src, wk, bk, False)
    v = linear(x_src, wv, bv, False)
    num_edges = src.shape[0]
    num_dst = x_dst.shape[0]
    e = np.zeros((num_edges, hc), np.float32)
    for m in range(num_edges):
        for i in range(edge_attr.shape[1]):
            a = edge_attr[m, i]
            for o in range(hc):
                e[m, o] += a * we[i, o]
    scale = np.float32(1.0 / math.sqrt(c))
    alpha = np.empty((num_edges, heads), np.float32)
    top = np.full((num_dst, heads), -np.inf, np.float32)
    for m in range(num_edges):
        t, s = dst[m], src[m]
        for h in range(heads):
            acc = np.float32(0.0)
            for j in range(h * c, (h + 1) * c):
                acc += q[t, j] * (k[s, j] + e[m, j])
            acc *= scale
            alpha[m, h] = acc
            if acc > top[t, h]:
                top[t, h] = acc
    total = np.zeros((num_dst, heads), np.float32)
    for m in range(num_edges):
        for h in range(heads):
            alpha[m, h] = np.float32(math.exp(alpha[m, h] - top[dst[m], h]))
            total[dst[m], h] += alpha[m, h]
    out = linear(x_dst, ws, bs, False)
    for m in range(num_edges):
        t, s = dst[m], src[m]
        for h in range(heads):
            weight = alpha[m, h] / (total[t, h] + np.float32(1e-16))
            for j in range(h * c, (h + 1) * c):
                out[t, j] += weight * (v[s, j] + e[m, j])
    return out


@njit(cache=True)
def block(x_vm, x_numa, src, dst, edge_attr, heads, n_wq, n_bq, n_wk, n_bk, n_wv, n_bv, n_we, n_ws, n_bs,
          v_wq, v_bq, v_wk, v_bk, v_wv, v_bv, v_we, v_ws, v_bs, sib_wt, sib_b, fn_w1, fn_b1, fn_w2, fn_b2,
          fv_w1, fv_b1, fv_w2, fv_b2, nn0_w, nn0_b, nn1_w, nn1_b, nv0_w, nv0_b, nv1_w, nv1_b, eps):
    """:class:`agents.vm.policy.GraphBlock`: VMs -> NUMA nodes, NUMA node <-> sibling, NUMA nodes -> VMs."""
    x_numa = x_numa + transformer_conv(x_vm, x_numa, src, dst, edge_attr, n_wq, n_bq, n_wk, n_bk, n_wv, n_bv,
                                       n_we, n_ws, n_bs, heads)
    n, d = x_numa.shape
    pair = np.empty((n, 2 * d), np.float32)
    for r in range(n):
        for j in range(d):
            pair[r, j] = x_numa[r, j]
            pair[r, d + j] = x_numa[r ^ 1, j]
    sibling = linear(pair, sib_wt, sib_b, False)
    x_numa = layer_norm(x_numa + np.maximum(sibling, np.float32(0.0)), nn0_w, nn0_b, eps)
    x_numa = layer_norm(x_numa + mlp2(x_numa, fn_w1, fn_b1, fn_w2, fn_b2), nn1_w, nn1_b, eps)
    x_vm = layer_norm(x_vm + transformer_conv(x_numa, x_vm, dst, src, edge_attr, v_wq, v_bq, v_wk, v_bk, v_wv,
                                              v_bv, v_we, v_ws, v_bs, heads), nv0_w, nv0_b, eps)
    x_vm = layer_norm(x_vm + mlp2(x_vm, fv_w1, fv_b1, fv_w2, fv_b2), nv1_w, nv1_b, eps)
    return x_vm, x_numa


@njit(cache=True)
def score(first, shift, w2t, b2):
    """The rest of a one-hidden-layer head: ``relu(first + shift) @ w2t + b2``, one score per row.

    ``first`` is the rows' cached first-layer activations (node part), ``shift`` the part every row
    shares (context, selected VM, bias). Shapes: (N, K), (K,), (K, 1), (1,) -> (N,). Every row is
    summed in the same order (no fastmath), so equal rows score exactly equal and ties fall to the
    lowest index, as in torch.
    """
    n, k = first.shape
    out = np.empty(n, np.float32)
    for r in range(n):
        acc = np.float32(0.0)
        for j in range(k):
            acc += max(first[r, j] + shift[j], np.float32(0.0)) * w2t[j, 0]
        out[r] = acc + b2[0]
    return out


@njit(cache=True)
def graph_inputs(vm_features, host_features, vm_host, vm_valid):
    """:func:`agents.vm.policy.build_graph` for one observation of a few hosts, padding kept.

    Shapes: vm_features (V, 7), host_features (H, 7), vm_host (V,) local host, vm_valid (V,) ->
    x_vm (V, 5), x_numa (2H, 7), src (E,), dst (E,), edge_attr (E, 2). Feature order is
    envs.vm_rescheduling's VM_FEATURES / HOST_FEATURES (checked by the policy's tests).
    """
    num_vms, num_hosts = vm_features.shape[0], host_features.shape[0]
    x_vm = np.empty((num_vms, 5), np.float32)
    for v in range(num_vms):
        x_vm[v, 0] = vm_features[v, 0] + vm_features[v, 1]
        x_vm[v, 1] = vm_features[v, 2] + vm_features[v, 3]
        x_vm[v, 2] = vm_features[v, 4]
        x_vm[v, 3] = vm_features[v, 5]
        x_vm[v, 4] = vm_features[v, 6]
    x_numa = np.empty((2 * num_hosts, 7), np.float32)
    for h in range(num_hosts):
        for node in range(2):
            other = 1 - node
            row = 2 * h + node
            x_numa[row, 0] = host_features[h, node]  # free vCPU
            x_numa[row, 1] = host_features[h, 2 + node]  # free memory
            x_numa[row, 2] = host_features[h, 4 + node]  # fragment
            x_numa[row, 3] = host_features[h, other]
            x_numa[row, 4] = host_features[h, 2 + other]
            x_numa[row, 5] = host_features[h, 4 + other]
            x_numa[row, 6] = host_features[h, 6]  # active
    count = 0
    src = np.empty(2 * num_vms, np.int64)
    dst = np.empty(2 * num_vms, np.int64)
    edge_attr = np.empty((2 * num_vms, 2), np.float32)
    for v in range(num_vms):
        if not vm_valid[v]:
            continue
        host = min(max(vm_host[v], 0), num_hosts - 1)
        used0 = vm_features[v, 0] > 0 or vm_features[v, 2] > 0
        used1 = vm_features[v, 1] > 0 or vm_features[v, 3] > 0
        for node in range(2):
            # a VM using nothing still belongs to its host (node 0)
            if (node == 0 and (used0 or not used1)) or (node == 1 and used1):
                src[count], dst[count] = v, 2 * host + node
                edge_attr[count, 0] = vm_features[v, node]
                edge_attr[count, 1] = vm_features[v, 2 + node]
                count += 1
    return x_vm, x_numa, src[:count], dst[:count], edge_attr[:count]
