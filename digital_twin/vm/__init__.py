"""The VM-rescheduling digital twin (VMR2L problem): snapshots, cluster state, metrics.

Plain numpy; nothing here knows about RL.
"""

from digital_twin.vm.cluster import (
    Cluster,
    DeploymentSet,
    InfeasibleMigrationError,
    Migration,
    VMType,
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
    "FRAGMENT_SIZES", "fragment_rate", "type_fit_counts",
    "ConsistencyReport", "GeneralRequirement", "Snapshot", "SnapshotConsistencyWarning", "SnapshotError",
    "load_snapshot", "save_snapshot", "snapshot_from_document", "snapshot_to_document",
]
