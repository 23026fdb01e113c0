"""The autoscaling policy's inputs from live metrics, built exactly as the env builds them.

Everything here comes from the exported metadata (``policy.json``: the observation and action
specs ``train.py export`` writes from the env itself), so the rule has one home, the env; this
module only replays it:

* ``metrics = clip(float32(raw) * scale, 0, high)`` per (service, metric), in float32;
* ``adjacency`` and ``edge_index``: the call graph of the topology the policy was exported with;
* ``progress = min(k / window_steps, 1)`` where ``k`` counts decisions since the window began
  (the env's episode progress); the controller restarts the count every ``window_steps``;
* ``action_mask[s * D + d] = min_replicas[s] <= replicas[s] + deltas[d] <= max_replicas[s]``.

Shapes: S services, M metrics, D deltas; every array gets a batch axis of 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ObservationBuilder:
    """Builds the ONNX inputs from raw metrics and the Deployments' replicas.

    Args:
        metadata: The exported policy's ``policy.json``.
    """

    def __init__(self, metadata: dict[str, Any]):
        obs, action = metadata["observation"], metadata["action"]
        self.services: list[str] = list(obs["services"])
        self.metric_names: list[str] = [m["name"] for m in obs["metrics"]]
        self.scale = np.asarray(obs["scale"], dtype=np.float32)  # (S, M)
        self.high = np.asarray(obs["high"], dtype=np.float32)
        self.adjacency = np.asarray(obs["adjacency"], dtype=np.float32)
        self.edge_index = np.asarray(obs["edge_index"], dtype=np.int64).reshape(2, -1)
        self.window_steps = int(obs["progress"]["window_steps"])
        self.deltas = np.asarray(action["deltas"], dtype=np.int64)
        self.low = np.asarray(action["min_replicas"], dtype=np.int64)
        self.high_replicas = np.asarray(action["max_replicas"], dtype=np.int64)
        s, m = len(self.services), len(self.metric_names)
        if self.scale.shape != (s, m) or self.high.shape != (s, m) or self.adjacency.shape != (s, s):
            raise ValueError(f"policy metadata: scale {self.scale.shape}, high {self.high.shape}, adjacency "
                             f"{self.adjacency.shape} do not fit {s} services x {m} metrics")

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """(S, M) raw values -> (S, M) float32 normalised (the env's ``_normalise``)."""
        x = np.multiply(np.asarray(raw, dtype=np.float32), self.scale)
        np.minimum(x, self.high, out=x)
        np.maximum(x, 0.0, out=x)
        return x

    def action_mask(self, replicas: np.ndarray) -> np.ndarray:
        """(S * D,) bool: which deltas keep each service inside its bounds."""
        target = np.asarray(replicas, dtype=np.int64)[:, None] + self.deltas[None, :]
        return ((target >= self.low[:, None]) & (target <= self.high_replicas[:, None])).reshape(-1)

    def progress(self, decisions: int) -> float:
        """The env's episode progress after ``decisions`` decisions of the current window."""
        return float(np.float32(min((decisions % self.window_steps) / self.window_steps, 1.0)))

    def inputs(self, raw: np.ndarray, replicas: np.ndarray, decisions: int) -> dict[str, np.ndarray]:
        """The graph's inputs (batch of 1)."""
        return {
            "metrics": self.normalise(raw)[None],
            "adjacency": self.adjacency[None],
            "edge_index": self.edge_index[None],
            "progress": np.array([[self.progress(decisions)]], dtype=np.float32),
            "action_mask": self.action_mask(replicas)[None],
        }

    def clip(self, replicas: np.ndarray) -> np.ndarray:
        """Replicas clipped to the policy's bounds."""
        return np.clip(np.asarray(replicas, dtype=np.int64), self.low, self.high_replicas)
