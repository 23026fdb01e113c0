"""The Alibaba ``openb`` node and pod lists (cluster-trace-gpu-v2023, the FGD paper's) as a :class:`PodCluster`.

Files (``../shared/traces/alibaba_openb/``): ``openb_node_list_all_node.csv`` with
``sn, cpu_milli, memory_mib, gpu, model`` and ``openb_pod_list_default.csv`` with ``name,
cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, pod_phase, creation_time,
deletion_time, scheduled_time`` (seconds). The trace's licence allows research use only, so
nothing in clustergym reads it by default: a caller names the files.

QoS classes become priorities by :data:`QOS_PRIORITY`: ``LS`` (Alibaba's latency-sensitive,
online services) 3, ``Guaranteed`` 2, ``Burstable`` 1, ``BE`` (best effort) 0, following the
order in which Kubernetes keeps pods under pressure (Guaranteed > Burstable > BestEffort) with
Alibaba's LS above them. Not modelled: ``gpu_spec`` (a GPU-model constraint) and the GPU model of
a node. Every pod is loaded Pending with its ``creation_time`` as its start time; a bad file
raises :class:`TraceFormatError` naming the file, the row (the line number, header = 1) and the field.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from digital_twin.pods.cluster import GPU_FULL, PodCluster

QOS_PRIORITY = {"LS": 3, "Guaranteed": 2, "Burstable": 1, "BE": 0}
"""Priority of each ``qos`` class of the trace (higher is more important)."""
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
               "creation_time", "deletion_time", "scheduled_time")


class TraceFormatError(ValueError):
    """An openb file that is not as the trace writes it (the message names the file, row and field)."""


def _rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise TraceFormatError(f"{path}: no such file (an openb CSV with columns {', '.join(columns)})")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise TraceFormatError(f"{path}: row 1 (header): missing column(s) {', '.join(missing)}; "
                                       f"expected {', '.join(columns)}")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TraceFormatError(f"{path}: not a CSV file ({exc})") from None


def _number(path: Path, line: int, row: dict[str, str], field: str, low: float = 0, whole: bool = True) -> float:
    text = (row.get(field) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(f"{path}: row {line}: {field} is {text!r}, not a number") from None
    if not np.isfinite(value) or value < low or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise TraceFormatError(f"{path}: row {line}: {field} is {text!r}; must be {kind} >= {low:g}")
    return value


def load_openb(node_csv: str | Path, pod_csv: str | Path, max_nodes: int | None = None,
               max_pods: int | None = None, phases: Sequence[str] | None = None, name: str = "openb") -> PodCluster:
    """Nodes and pods of the openb lists, every pod Pending.

    Args:
        node_csv, pod_csv: the two CSV files.
        max_nodes, max_pods: keep the first rows only (None: all).
        phases: keep pods whose ``pod_phase`` is one of these (None: all).
        name: the cluster's label.

    Raises:
        TraceFormatError: a missing file or column, a bad value (file, row and field named).
    """
    node_csv, pod_csv = Path(node_csv), Path(pod_csv)
    nodes = _rows(node_csv, NODE_COLUMNS)[:max_nodes]
    pods = _rows(pod_csv, POD_COLUMNS)
    if phases is not None:
        pods = [(line, r) for line, r in pods if r["pod_phase"] in phases]
    pods = pods[:max_pods]
    node_vals = np.array([[_number(node_csv, line, r, "cpu_milli", 1), _number(node_csv, line, r, "memory_mib", 1),
                           _number(node_csv, line, r, "gpu")] for line, r in nodes], dtype=np.int64).reshape(-1, 3)
    pod_vals, prio = [], []
    for line, r in pods:
        k = _number(pod_csv, line, r, "num_gpu")
        share = _number(pod_csv, line, r, "gpu_milli")
        if share > GPU_FULL or (k == 0) != (share == 0) or (k > 1 and share != GPU_FULL):
            raise TraceFormatError(f"{pod_csv}: row {line}: num_gpu {r['num_gpu']} with gpu_milli {r['gpu_milli']}; "
                                   "allowed: 0 with 0, 1 with 1..1000, more than 1 with 1000")
        qos = (r.get("qos") or "").strip()
        if qos not in QOS_PRIORITY:
            raise TraceFormatError(f"{pod_csv}: row {line}: qos is {qos!r}; allowed: {', '.join(QOS_PRIORITY)}")
        prio.append(QOS_PRIORITY[qos])
        pod_vals.append((_number(pod_csv, line, r, "cpu_milli"), _number(pod_csv, line, r, "memory_mib"), k, share,
                         _number(pod_csv, line, r, "creation_time", whole=False)))
    arr = np.array(pod_vals, dtype=float).reshape(-1, 5)
    return PodCluster([r["sn"] for _, r in nodes], node_vals[:, 0], node_vals[:, 1], [r["name"] for _, r in pods],
                      arr[:, 0], arr[:, 1], np.array(prio, dtype=np.int64), node_gpus=node_vals[:, 2],
                      pod_num_gpu=arr[:, 2], pod_gpu_milli=arr[:, 3], pod_start=arr[:, 4], name=name)


def load_openb_lifetimes(pod_csv: str | Path) -> dict[str, tuple[float, float]]:
    """``name -> (creation_time, deletion_time)`` of every pod of the openb pod list (seconds), for replays.

    Raises:
        TraceFormatError: a missing file or column, a bad time, or a pod deleted before it was created.
    """
    pod_csv = Path(pod_csv)
    out = {}
    for line, r in _rows(pod_csv, POD_COLUMNS):
        created = _number(pod_csv, line, r, "creation_time", whole=False)
        deleted = _number(pod_csv, line, r, "deletion_time", whole=False)
        if deleted < created:
            raise TraceFormatError(f"{pod_csv}: row {line}: deletion_time {r['deletion_time']} is before "
                                   f"creation_time {r['creation_time']}")
        out[r["name"]] = (created, deleted)
    return out
