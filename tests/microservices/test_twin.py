"""MicroserviceTwin's input checks: a wrong shape is one clear ValueError, not numpy's broadcast error."""

import numpy as np
import pytest

from digital_twin.microservices import MicroserviceTwin


def test_step_with_a_wrong_shape_names_expected_and_given(chain4):
    twin = MicroserviceTwin(chain4, load=np.full(8, 100.0), batch_size=2)
    twin.reset(seed=0)
    for bad in (np.ones((3, 4), int), np.ones(5, int), np.ones((2, 4, 1), int)):
        with pytest.raises(ValueError) as err:
            twin.step(bad)
        message = str(err.value)
        assert message.startswith("desired_replicas must have shape (2, 4) (clusters x services of chain4) or (4,)")
        assert message.endswith(f"got shape {bad.shape}") and "broadcast" not in message
    # The accepted shapes still step: one row per cluster, or one count per service for all.
    for good in (np.full((2, 4), 3), np.full(4, 3)):
        obs, _ = twin.step(good)
        assert obs.shape[:2] == (2, 4)
