"""VM planners by name, imported on first use.

:data:`VM_PLANNERS` maps a name to ``"module:function"``: asking for a name imports only that
planner's module, so listing the names (``--help``, error messages) loads neither OR-Tools nor torch.
:func:`get_planner` also accepts ``agent:PATH``, a saved MaskablePPO model played as a planner
(:class:`agents.vm.agent.AgentPlanner`).
"""

from __future__ import annotations

import importlib

from agents.vm.plan import Planner

VM_PLANNERS: dict[str, str] = {
    "random": "agents.vm.heuristics:random_plan",
    "ffd": "agents.vm.heuristics:ffd_plan",
    "greedy": "agents.vm.heuristics:greedy_plan",
    "beam": "agents.vm.beam:beam_plan",
    "cpsat": "agents.vm.cpsat:cpsat_plan",
    "cpsat_lns": "agents.vm.cpsat:cpsat_lns_plan",
}
"""Planner name -> ``"module:function"``; each function is
``plan(snapshot, budget, time_limit_s=None, seed=0, **kwargs) -> PlanResult``."""

PLANNER_SUMMARIES: dict[str, str] = {
    "random": "uniformly random feasible migrations",
    "ffd": "largest VMs first, first destination that lowers FR",
    "greedy": "best FR decrease per migration",
    "beam": "beam search, each move scored one follow-up ahead",
    "cpsat": "CP-SAT optimum of the final placement, then sequenced",
    "cpsat_lns": "greedy, then CP-SAT over freed host neighbourhoods",
}
"""A few words on how each planner plans (reports, ``--help``)."""

AGENT_PREFIX = "agent:"
"""``agent:PATH`` names a saved MaskablePPO model (a ``model.zip`` or a run folder); ``agent:PATH?samples=16``
decodes it risk-seeking (:mod:`agents.vm.agent` documents the options)."""


TIME_BUDGETED = ("beam", "cpsat", "cpsat_lns")
"""Planners whose quality depends on ``time_limit_s`` (an ``agent:PATH?samples=K`` spec is one too)."""


def is_time_budgeted(spec: str) -> bool:
    """Whether the planner ``spec`` names plans better with more time (see :data:`TIME_BUDGETED`)."""
    return spec in TIME_BUDGETED or (spec.startswith(AGENT_PREFIX) and "samples=" in spec)


def get_planner(spec: str) -> Planner:
    """The planner a name or ``agent:PATH`` stands for.

    Args:
        spec: a key of :data:`VM_PLANNERS`, or ``agent:PATH`` / ``agent:PATH?samples=K``.

    Returns:
        A callable ``plan(snapshot, budget, time_limit_s=None, seed=0) -> PlanResult``.

    Raises:
        ValueError: ``spec`` is neither a known name nor ``agent:PATH``, or has a bad option.
        FileNotFoundError: the agent's model file does not exist.
    """
    if spec.startswith(AGENT_PREFIX):
        from agents.vm.agent import AgentPlanner

        return AgentPlanner.from_spec(spec[len(AGENT_PREFIX):])
    target = VM_PLANNERS.get(spec)
    if target is None:
        raise ValueError(f"unknown VM planner {spec!r}; choose one of {', '.join(VM_PLANNERS)} or agent:PATH")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)
