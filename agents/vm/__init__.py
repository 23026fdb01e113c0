"""VM-rescheduling planners: the plan type, heuristics, exact CP-SAT, beam search and saved agents.

``get_planner(name)`` (or ``agent:PATH``) returns one by name; :data:`VM_PLANNERS` lists the names.
Both are loaded on first access (PEP 562), so ``import agents.vm`` imports no planner, OR-Tools or
torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_planner", "VM_PLANNERS"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agents.vm import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
