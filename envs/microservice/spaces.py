"""Spaces and batched observations shared by the microservice envs."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from envs.microservice.core import MicroserviceCore


class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """``MultiDiscrete`` whose ``sample(mask=...)`` also takes sb3-contrib's flat mask.

    sb3-contrib concatenates the per-dimension masks into one ``(sum(nvec),)`` array, which is
    what the envs put in ``obs["action_mask"]``; Gymnasium's ``MultiDiscrete.sample`` wants a
    tuple of per-dimension int8 arrays. This subclass accepts both, so
    ``space.sample(mask=obs["action_mask"])`` works (as PettingZoo's API test calls it).
    """

    def sample(self, mask=None, probability=None):
        if isinstance(mask, np.ndarray) and self.nvec.ndim == 1 and mask.shape == (int(self.nvec.sum()),):
            mask = tuple(np.split(mask.astype(np.int8, copy=False), np.cumsum(self.nvec)[:-1]))
        return super().sample(mask=mask, probability=probability)


def single_observation_space(core: MicroserviceCore) -> spaces.Dict:
    """The single-agent observation space (see :class:`MicroserviceAutoscalingEnv`)."""
    s, d, e = core.num_services, core.num_deltas, core.edge_index.shape[1]
    return spaces.Dict({
        "metrics": spaces.Box(0.0, core.obs_high, dtype=np.float32),
        "adjacency": spaces.Box(0.0, max(float(core.calls.max()), 1.0), (s, s), np.float32),
        "edge_index": spaces.Box(0, max(s - 1, 0), (2, e), np.int64),
        "progress": spaces.Box(0.0, 1.0, (1,), np.float32),
        "action_mask": spaces.Box(0, 1, (s * d,), np.int8),
    })


def batched_observation(core: MicroserviceCore) -> dict[str, np.ndarray]:
    """Observations of all B clusters as a dict of (B, ...) arrays (the vector env's batch)."""
    b = core.num_clusters
    return {
        "metrics": core.metrics,
        "adjacency": np.broadcast_to(core.calls, (b, *core.calls.shape)).copy(),
        "edge_index": np.broadcast_to(core.edge_index, (b, *core.edge_index.shape)).copy(),
        "progress": core.progress[:, None],
        "action_mask": core.action_mask().reshape(b, -1).view(np.int8),
    }

