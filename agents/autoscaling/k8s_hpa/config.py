"""kube-controller-manager settings that shape HPA decisions (``HPAControllerConfiguration``).

Mirrors ``pkg/controller/podautoscaler/config/types.go`` and the flag defaults of
``config/v1alpha1/defaults.go``, plus the two legacy scale-up constants of ``horizontal.go``
that the Go tests override.
"""

from __future__ import annotations

from dataclasses import dataclass


#: kube-controller-manager defaults (``pkg/controller/podautoscaler/config/v1alpha1/defaults.go``).
DEFAULT_TOLERANCE = 0.1
DEFAULT_CPU_INITIALIZATION_PERIOD_S = 300.0
DEFAULT_INITIAL_READINESS_DELAY_S = 30.0
DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S = 300.0
DEFAULT_SYNC_PERIOD_S = 15.0
#: ``scaleUpLimitFactor`` / ``scaleUpLimitMinimum`` in ``horizontal.go`` (behaviour-less HPAs only).
LEGACY_SCALE_UP_LIMIT_FACTOR = 2.0
LEGACY_SCALE_UP_LIMIT_MINIMUM = 4.0


@dataclass(frozen=True)
class HPAControllerConfig:
    """kube-controller-manager settings that shape HPA decisions (``HPAControllerConfiguration``).

    Attributes:
        tolerance: ``--horizontal-pod-autoscaler-tolerance``.
        cpu_initialization_period_s: ``--horizontal-pod-autoscaler-cpu-initialization-period``.
        initial_readiness_delay_s: ``--horizontal-pod-autoscaler-initial-readiness-delay``.
        downscale_stabilization_window_s: ``--horizontal-pod-autoscaler-downscale-stabilization``;
            used by behaviour-less HPAs and as the default scale-down window.
        legacy_scale_up_limit_factor: ``scaleUpLimitFactor`` (a package variable in Go; its
            unit tests set it to 8). Behaviour-less HPAs only.
        legacy_scale_up_limit_minimum: ``scaleUpLimitMinimum``. Behaviour-less HPAs only.
    """

    tolerance: float = DEFAULT_TOLERANCE
    cpu_initialization_period_s: float = DEFAULT_CPU_INITIALIZATION_PERIOD_S
    initial_readiness_delay_s: float = DEFAULT_INITIAL_READINESS_DELAY_S
    downscale_stabilization_window_s: float = DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S
    legacy_scale_up_limit_factor: float = LEGACY_SCALE_UP_LIMIT_FACTOR
    legacy_scale_up_limit_minimum: float = LEGACY_SCALE_UP_LIMIT_MINIMUM

    def __post_init__(self) -> None:
        for name in ("tolerance", "cpu_initialization_period_s", "initial_readiness_delay_s",
                     "downscale_stabilization_window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative")
