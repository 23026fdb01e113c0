"""From-scratch metric definitions on hand-computed cases."""

import numpy as np
import pytest

from digital_twin.vm.metrics import fragment_rate, free_from_placements, type_fit_counts


def test_fragment_rate_hand_computed():
    free = np.array([[8, 20], [16, 3], [40, 40]])
    active = np.array([True, True, False])
    # (8 + 4 + 0 + 3) / (8 + 20 + 16 + 3)
    assert fragment_rate(free, active, 16) == pytest.approx(15 / 47)
    assert fragment_rate(free, active, 8) == pytest.approx((0 + 4 + 0 + 3) / 47)
    assert fragment_rate(np.zeros((2, 2), int), np.array([True, True])) == 0.0


def test_type_fit_counts_hand_computed():
    free_cpu = np.array([[20, 9], [44, 44]])
    free_mem = np.array([[65536.0, 8192.0], [16384.0, 184388.0]])
    active = np.array([True, True])
    cpu = np.array([8, 16, 32])
    mem = np.array([16384.0, 32768.0, 65536.0])
    span = np.array([1, 1, 2])
    counts = type_fit_counts(free_cpu, free_mem, active, cpu, mem, span)
    # 8 vCPU: host0 node0 min(2, 4)=2, node1 min(1, 0)=0; host1 node0 min(5, 1)=1, node1 min(5, 11)=5
    # 16 vCPU: host0 1 + 0; host1 node0 min(2, 0)=0, node1 min(2, 5)=2
    # 32 split (16 + 32 GiB per node): host0 min(1, 0)=0; host1 min(min(2, 0), min(2, 5))=0
    np.testing.assert_array_equal(counts, [[2, 6], [1, 2], [0, 0]])
    counts = type_fit_counts(free_cpu, free_mem, np.array([True, False]), cpu, mem, span)
    np.testing.assert_array_equal(counts[:, 1], [0, 0, 0])


def test_free_from_placements():
    free_cpu, free_mem = free_from_placements(
        np.full((2, 2), 44), np.full((2, 2), 100.0), np.array([0, 0, 1]),
        np.array([[4, 0], [8, 8], [0, 2]]), np.array([[10.0, 0], [5.0, 5.0], [0, 1.0]]),
    )
    np.testing.assert_array_equal(free_cpu, [[32, 36], [44, 42]])
    np.testing.assert_array_equal(free_mem, [[85.0, 95.0], [100.0, 99.0]])
