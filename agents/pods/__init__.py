"""Pod-packing decision rules: the Kubernetes default scheduler's port, its preemption, the exact
CP-SAT fallback of "Priority Matters", and the sequencing of a target placement into valid steps."""

from agents.pods.cpsat import PackingResult, Stage, solve
from agents.pods.default_scheduler import DefaultScheduler, queue_order, schedule
from agents.pods.fallback import fallback_steps, live_cluster, neighbourhood
from agents.pods.preemption import Candidate, pick_one_node, preempt, select_victims
from agents.pods.sequencing import Step, replay, sequence

__all__ = [
    "PackingResult", "Stage", "solve",
    "DefaultScheduler", "queue_order", "schedule",
    "fallback_steps", "live_cluster", "neighbourhood",
    "Candidate", "pick_one_node", "preempt", "select_victims",
    "Step", "replay", "sequence",
]
