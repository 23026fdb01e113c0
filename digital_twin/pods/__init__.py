"""The pod-packing digital twin: Kubernetes nodes and prioritised pods, running and Pending.

Plain numpy; nothing here decides where a pod goes (the default scheduler's port, CP-SAT and the
sequencing live in ``agents.pods``). Modules: :mod:`~digital_twin.pods.cluster` (state, feasibility,
bind / evict / move / undo, metrics), :mod:`~digital_twin.pods.generator` (the "Priority Matters"
scenarios, the default source), :mod:`~digital_twin.pods.openb` (the Alibaba openb lists, research use only).
"""

from digital_twin.pods.cluster import GPU_FULL, InfeasiblePodChangeError, Metrics, PodChange, PodCluster
from digital_twin.pods.generator import ScenarioGenerator, ScenarioSpec, generate
from digital_twin.pods.openb import QOS_PRIORITY, TraceFormatError, load_openb, load_openb_lifetimes

__all__ = [
    "GPU_FULL", "InfeasiblePodChangeError", "Metrics", "PodChange", "PodCluster",
    "ScenarioGenerator", "ScenarioSpec", "generate",
    "QOS_PRIORITY", "TraceFormatError", "load_openb", "load_openb_lifetimes",
]
