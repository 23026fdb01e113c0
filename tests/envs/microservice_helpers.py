"""Helpers shared by the microservice env tests."""

from __future__ import annotations

import numpy as np


def masked_random_actions(rng: np.random.Generator, masks: np.ndarray, num_deltas: int, upward: bool = False) -> np.ndarray:
    """Delta indices allowed by flat masks, one per service.

    Args:
        rng: Generator.
        masks: (B, S * D) int8/bool masks, service-major (the envs' ``action_mask``).
        num_deltas: D.
        upward: Pick the highest allowed index (the largest scale-up, deltas being ascending)
            instead of a uniform draw.

    Returns:
        (B, S) int64 indices.
    """
    m = np.asarray(masks, dtype=bool).reshape(masks.shape[0], -1, num_deltas)
    if upward:
        return (num_deltas - 1 - np.argmax(m[:, :, ::-1], axis=2)).astype(np.int64)
    return np.argmax(rng.random(m.shape) * m, axis=2).astype(np.int64)
