"""Exact CP-SAT planning of MNL-constrained fragment-rate minimisation, and a large-neighbourhood variant.

The problem (VMR2L): move at most ``budget`` (MNL) VMs, each inside its own cluster, so that the
snapshot's fragment rate ``FR = sum(free mod 16) / sum(free)`` over active NUMA nodes is smallest,
respecting NUMA CPU and memory capacity, anti-affinity and the migratable flags. A plan moves each
VM at most once, straight to its final ``(host, placement)``, so the MNL counts VMs whose final
host differs from their original host, which is also the number of migrations the twin replays.

The pieces:

* :mod:`~agents.vm.cpsat.model`: :class:`FRModel`, the counted CP-SAT model (interchangeable VMs
  counted per shape, anti-affinity members per set and shape, ``free = 16 q + r`` per node; sets
  that would cost too many variables relaxed and checked on each solution).
* :mod:`~agents.vm.cpsat.bounds`: :func:`lagrangian_bound` and :func:`touch_bound`, lower bounds from
  how much the few nodes a budget of migrations touches can lose (CP-SAT's own is weak on a
  thousand hosts or more).
* :mod:`~agents.vm.cpsat.sequencing`: :func:`sequence_moves`, the order in which a target
  placement's moves are feasible one by one (greedy, then an exact ordering model).
* :mod:`~agents.vm.cpsat.planners`: :func:`cpsat_plan` (solve, sequence, repair capacity cycles)
  and :func:`cpsat_lns_plan` (large neighbourhoods of hosts, racks or sets, from greedy's plan).

Bounds are over plans that move each VM at most once (the MNL-as-moved-VMs reading); a plan that
moves a VM away and back could in principle do better with the same number of migrations.
"""

from agents.vm.cpsat.bounds import lagrangian_bound, touch_bound
from agents.vm.cpsat.model import FRModel, Target
from agents.vm.cpsat.planners import cpsat_lns_plan, cpsat_plan
from agents.vm.cpsat.sequencing import sequence_moves, sequence_plan

__all__ = ["FRModel", "Target", "cpsat_lns_plan", "cpsat_plan", "lagrangian_bound", "sequence_moves", "sequence_plan",
           "touch_bound"]
