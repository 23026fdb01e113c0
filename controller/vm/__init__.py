"""The controller's own model of a VM fleet, for planning live migrations without the twin.

:mod:`~controller.vm.fleet` holds the hosts and VMs of one or more clusters as numpy arrays
(:class:`~controller.vm.fleet.Fleet`) and reproduces exactly what the gym env
``clustergym/VMRescheduling-v0`` observes and masks, so that a policy exported from training can
act on it; :mod:`~controller.vm.snapshot_file` reads a VMR2L-schema JSON snapshot into one.
Dependencies: numpy only (no torch, no twin, no envs; a test checks it in a fresh interpreter).
"""

from controller.vm.fleet import (
    GLOBAL_FEATURES,
    HOST_FEATURES,
    PHASE_PICK_DESTINATION,
    PHASE_PICK_VM,
    VM_FEATURES,
    Fleet,
)
from controller.vm.snapshot_file import FleetFileError, load_fleet

__all__ = ["Fleet", "FleetFileError", "load_fleet", "VM_FEATURES", "HOST_FEATURES", "GLOBAL_FEATURES",
           "PHASE_PICK_VM", "PHASE_PICK_DESTINATION"]
