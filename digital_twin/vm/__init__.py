"""The VM-rescheduling digital twin (VMR2L problem): snapshots, cluster state, metrics.

Plain numpy; nothing here knows about RL or decides which VM to move (planners live in
``agents.vm``). Besides the names below: :mod:`~digital_twin.vm.what_if` (every move's effect at
once), :mod:`~digital_twin.vm.generators` (synthetic clusters), :mod:`~digital_twin.vm.azure_trace`
and :mod:`~digital_twin.vm.azure_replay` (snapshots from the Azure V1 trace).
"""

from digital_twin.vm.cluster import (
    Cluster,
    DeploymentSet,
    InfeasibleMigrationError,
    Migration,
    VMType,
    fleet_fragment_rate,
    fleet_fragment_sums,
    make_cluster,
)
from digital_twin.vm.metrics import FRAGMENT_SIZES, fragment_rate, type_fit_counts
from digital_twin.vm.snapshot import (
    ConsistencyReport,
    GeneralRequirement,
    Snapshot,
    SnapshotConsistencyWarning,
    SnapshotError,
    load_snapshot,
    save_snapshot,
    snapshot_from_document,
    snapshot_to_document,
)

__all__ = [
    "Cluster", "DeploymentSet", "InfeasibleMigrationError", "Migration", "VMType", "make_cluster",
    "fleet_fragment_rate", "fleet_fragment_sums",
    "FRAGMENT_SIZES", "fragment_rate", "type_fit_counts",
    "ConsistencyReport", "GeneralRequirement", "Snapshot", "SnapshotConsistencyWarning", "SnapshotError",
    "load_snapshot", "save_snapshot", "snapshot_from_document", "snapshot_to_document",
]
