"""What-if move evaluation: the fragment sums after each move, without making it."""

from __future__ import annotations

import numpy as np

from digital_twin.vm.what_if import fragment_after_each_move


def test_what_if_equals_actually_migrating(real_cluster):
    feasible, d_frag, d_free = fragment_after_each_move(real_cluster)
    frag0, free0 = real_cluster.fragment_sums()
    options = np.argwhere(feasible)
    rng = np.random.default_rng(3)
    for vm, host, place in options[rng.choice(len(options), 200, replace=False)]:
        real_cluster.migrate(int(vm), int(host), int(place))
        frag, free = real_cluster.fragment_sums()
        assert (frag - frag0, free - free0) == (d_frag[vm, host, place], d_free[vm, host, place])
        real_cluster.undo()
    np.testing.assert_array_equal(feasible, real_cluster.feasible_destinations_all())
