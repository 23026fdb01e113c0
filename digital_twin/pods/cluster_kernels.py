"""Compiled kernels of :class:`digital_twin.pods.cluster.PodCluster`'s changes: check, GPU choice and update in one call.

A bind is a handful of scalar reads, compares and writes; done through numpy scalars from Python
it cost ~5.7 µs with its undo on the 32-node generated scenario and ~17 µs for an 8-GPU openb pod
(``bench/pods.py``), 2.5-3x slower than the same on Python lists. One compiled call per change
does the check, the GPU choice and the update. numba's dispatch costs ~0.2 µs plus ~0.06 µs per
array argument (measured), so everything a change reads or writes lives in one flat int64 buffer
(:func:`allocate`), of which the cluster's public arrays are views (:func:`views`): a kernel takes
the pod, the node and the buffer.

Layout (:func:`views`): a header ``N, G, P``; ``req`` (4, P) CPU (m), memory (MiB), GPUs requested
and share per GPU; ``free`` (2, N) free CPU and memory per node; ``gpu_free`` (N, G) free share per
GPU slot (-1 beyond a node's count, so that nothing fits there); ``pod_node`` (P,) node or -1;
``held`` (P, G) the GPU slots each pod holds, in the order of :attr:`PodCluster.pod_gpus`, -1
padded; ``given`` (G,) GPUs handed to :func:`put`.

Return codes: a change returns the number of GPUs the pod now holds (>= 0) or one of the negative
codes below; a refused change writes nothing. The messages are composed in Python from the codes
(only refusals pay for it). The reference is a plain-Python model of the same rules
(``tests/pods/test_properties.py``), compared after random sequences of changes and undos.

Compiled on first use (a few seconds) and cached with the project's other kernels
(:mod:`digital_twin.numba_cache`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)

FITS = 0
RUNNING = -1
"""The pod already runs (bind), or it is Pending (evict, move): see the caller."""
SHORT_CPU = -2
SHORT_MEMORY = -3
SHORT_GPU = -4
SAME_NODE = -5
"""A move onto the node the pod runs on."""


HEADER = 3


def allocate(num_nodes: int, num_gpu_slots: int, num_pods: int) -> np.ndarray:
    """A zeroed state buffer with its header set (see :func:`views` for the layout)."""
    n, g, p = num_nodes, num_gpu_slots, num_pods
    state = np.zeros(HEADER + 4 * p + 2 * n + n * g + p + p * g + g, dtype=np.int64)
    state[:HEADER] = n, g, p
    return state


def views(state: np.ndarray):
    """``req, free, gpu_free, pod_node, held, given``: the buffer's parts as numpy views (the layout)."""
    n, g, p = (int(x) for x in state[:HEADER])
    _, _, _, req, free, gpu, node, held, given = _offsets(state)
    return (state[req:free].reshape(4, p), state[free:gpu].reshape(2, n), state[gpu:node].reshape(n, g),
            state[node:held], state[held:given].reshape(p, g), state[given:given + g])


# The kernels index the flat buffer by offsets rather than through views: numba's reshape of a
# slice costs ~35 ns, and the five views per call took ~170 ns, as much as the call itself (measured).
@njit(cache=True, inline="always")
def _offsets(state):
    """``N, G, P`` and where ``req, free, gpu_free, pod_node, held, given`` start in the buffer."""
    n, g, p = state[0], state[1], state[2]
    req = HEADER
    free = req + 4 * p
    gpu = free + 2 * n
    node = gpu + n * g
    held = node + p
    given = held + p * g
    return n, g, p, req, free, gpu, node, held, given


@njit(cache=True, inline="always")
def fit_code(pod, node, state):
    """FITS, or what ``node`` lacks first for ``pod`` (CPU, then memory, then GPUs): the order of the messages."""
    n, g, p, req, free, gpu, _, _, _ = _offsets(state)
    if state[req + pod] > state[free + node]:
        return SHORT_CPU
    if state[req + p + pod] > state[free + n + node]:
        return SHORT_MEMORY
    k = state[req + 2 * p + pod]
    if k > 0:
        share, have, row = state[req + 3 * p + pod], 0, gpu + node * g
        for slot in range(g):
            if state[row + slot] >= share:
                have += 1
        if have < k:
            return SHORT_GPU
    return FITS


@njit(cache=True)
def check(pod, node, state):
    """:func:`fit_code` from Python (``PodCluster.bind_refusal``)."""
    return fit_code(pod, node, state)


@njit(cache=True, inline="always")
def _choose_and_place(pod, node, state):
    # The device plugin's mechanical choice: fitting GPUs with the least free share first, then the
    # lowest index (tightest fit keeps whole GPUs whole). All k are chosen on the shares before the
    # bind, then taken: a slot is chosen at most once.
    n, g, p, req, free, gpu, pnode, held, _ = _offsets(state)
    k, share = state[req + 2 * p + pod], state[req + 3 * p + pod]
    row, mine = gpu + node * g, held + pod * g
    for t in range(k):
        best = -1
        for slot in range(g):
            f = state[row + slot]
            if f < share:
                continue
            taken = False
            for u in range(t):
                if state[mine + u] == slot:
                    taken = True
                    break
            if not taken and (best < 0 or f < state[row + best]):
                best = slot
        state[mine + t] = best
    for t in range(k):
        state[row + state[mine + t]] -= share
    state[free + node] -= state[req + pod]
    state[free + n + node] -= state[req + p + pod]
    state[pnode + pod] = node
    return k


@njit(cache=True, inline="always")
def _take_off(pod, state):
    n, g, p, req, free, gpu, pnode, held, _ = _offsets(state)
    node = state[pnode + pod]
    share, row, mine = state[req + 3 * p + pod], gpu + node * g, held + pod * g
    for t in range(g):
        slot = state[mine + t]
        if slot < 0:
            break
        state[row + slot] += share
        state[mine + t] = -1
    state[free + node] += state[req + pod]
    state[free + n + node] += state[req + p + pod]
    state[pnode + pod] = -1
    return node


@njit(cache=True)
def bind(pod, node, state):
    """Bind Pending ``pod`` to ``node`` on the GPUs the module's rule chooses: GPUs held, or RUNNING / SHORT_*."""
    if state[_offsets(state)[6] + pod] >= 0:
        return RUNNING
    code = fit_code(pod, node, state)
    if code != FITS:
        return code
    return _choose_and_place(pod, node, state)


@njit(cache=True)
def move(pod, node, state):
    """Move running ``pod`` to another ``node`` (GPUs chosen): GPUs held, or RUNNING (it is Pending) / SAME_NODE / SHORT_*.

    The source's freed resources do not matter to the check since the destination is another node."""
    src = state[_offsets(state)[6] + pod]
    if src < 0:
        return RUNNING
    if src == node:
        return SAME_NODE
    code = fit_code(pod, node, state)
    if code != FITS:
        return code
    _take_off(pod, state)
    return _choose_and_place(pod, node, state)


@njit(cache=True)
def remove(pod, state):
    """Take running ``pod`` off its node (evict, undo of a bind): the node it ran on, or -1 (Pending, nothing changed)."""
    if state[_offsets(state)[6] + pod] < 0:
        return -1
    return _take_off(pod, state)


@njit(cache=True)
def put(pod, node, state, k):
    """Place ``pod`` (taken off its node first if it runs) on ``node``, GPUs ``given[:k]``, unchecked.

    For changes the caller has checked or that restore an earlier state (undo, a starting placement)."""
    n, g, p, req, free, gpu, pnode, held, given = _offsets(state)
    if state[pnode + pod] >= 0:
        _take_off(pod, state)
    share, row, mine = state[req + 3 * p + pod], gpu + node * g, held + pod * g
    for t in range(k):
        slot = state[given + t]
        state[mine + t] = slot
        state[row + slot] -= share
    state[free + node] -= state[req + pod]
    state[free + n + node] -= state[req + p + pod]
    state[pnode + pod] = node
    return k
