"""What the controller lets a policy's decision do to a live Deployment.

Applied after the policy, in this order: the policy's replica bounds; a scale-down stabilisation
window (the largest replica count recommended within the window, as the HPA's
``stabilizationWindowSeconds``: a dip in load does not shed pods at once); a maximum change per
period. Pure numpy: unit-tested without a cluster.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyRules:
    """Args:
        low, high: (S,) replica bounds.
        max_change: Most replicas added or removed per service per period (None: no limit).
        scale_down_window_s: Scale down only to the highest recommendation of this many seconds.
    """

    low: np.ndarray
    high: np.ndarray
    max_change: int | None = None
    scale_down_window_s: float = 0.0
    _history: deque = field(default_factory=deque, repr=False)

    def apply(self, current: np.ndarray, proposed: np.ndarray, now_s: float) -> np.ndarray:
        """(S,) replicas to set, from the current and the policy's proposed replicas."""
        current = np.asarray(current, dtype=np.int64)
        target = np.clip(np.asarray(proposed, dtype=np.int64), self.low, self.high)
        if self.scale_down_window_s > 0:
            self._history.append((now_s, target.copy()))
            while self._history and self._history[0][0] < now_s - self.scale_down_window_s:
                self._history.popleft()
            highest = np.max([t for _, t in self._history], axis=0)
            target = np.where(target < current, np.minimum(current, highest), target)
        if self.max_change is not None:
            target = np.clip(target, current - self.max_change, current + self.max_change)
        return np.clip(target, self.low, self.high)
