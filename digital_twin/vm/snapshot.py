"""Load and save VM-rescheduling snapshots in the VMR2L JSON schema, as the real files have it.

A snapshot is one JSON document: ``cluster_list[]`` (hosts with two NUMA nodes, VMs with their
NUMA usage, anti-affinity ``deployment_set``s), ``vm_type_list[]`` and ``general_requirement``
(schema in ``data/vmr2l_snapshots/SOURCE.md`` and the traces README).

Checks. Malformed input raises :class:`SnapshotError` naming the file, the JSON path (e.g.
``cluster_list[0].vm_instance[17].numa[0].cpu``) and the reason: missing field, wrong type, VM on an
unknown host, duplicate ids, unknown instance type, a NUMA node over capacity, a file that cannot
be read (missing, a directory, not UTF-8, not JSON, nested too deeply), no cluster or a cluster
without hosts, and numbers the twin's fixed-width arithmetic cannot hold: integers beyond
:data:`MAX_INT` and numbers beyond :data:`MAX_NUMBER` in magnitude (so that no sum over a
cluster can overflow), non-finite numbers. Whatever a file holds, :func:`load_snapshot` raises
no other exception (the tests fuzz it with mutations of a real snapshot). The stored free
CPU/memory of each NUMA node is compared with what the placed VMs leave free; disagreements go in a
:class:`ConsistencyReport` and a :class:`SnapshotConsistencyWarning` (the real files disagree on
memory for 10-14% of NUMA nodes), or raise in ``strict`` mode. The twin uses the recomputed values.

Saving writes the same schema; an unchanged snapshot saves to a document equal to the one loaded.
Deployment sets added, changed or removed since loading (see :mod:`digital_twin.vm.deployment_sets`)
are written from the clusters.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from digital_twin.vm.cluster import Cluster, DeploymentSet, VMType, fleet_fragment_rate, make_cluster
from digital_twin.vm.metrics import FRAGMENT_SIZES

_ANTI_AFFINITY_GRANULARITIES = ("host", "rack")

MAX_INT = 2**31 - 1
"""Largest integer field accepted (vCPU, NUMA node, counts): sums of 2**32 of them fit int64."""

MAX_NUMBER = 2.0**53
"""Largest magnitude of a number field (memory MB, free values): integers up to it are exact in float64."""

MAX_ID_BITS = 128
"""Largest integer id (host, VM, rack, cluster) in bits: ids are compared as text, and text of a huge int costs."""

MIN_REQUEST_MEM_MB = 1.0
"""Smallest ``request_mem_mb`` of a VM type: new-VM counts (free memory / request) stay within int64."""


class SnapshotError(ValueError):
    """Malformed snapshot: names the file, the JSON path and the reason."""

    def __init__(self, file: str, path: str, reason: str):
        self.file, self.path, self.reason = file, path, reason
        super().__init__(f"{file}: {path}: {reason}")


class SnapshotConsistencyWarning(UserWarning):
    """Stored free capacity disagrees with the VMs placed (see :class:`ConsistencyReport`)."""


@dataclass(frozen=True)
class FreeDisagreement:
    """One NUMA node whose stored free value differs from the recomputed one."""

    cluster: str
    host_id: str
    host_index: int
    numa: int
    field: str  # "free_cpu" or "memory_huge_free_mb"
    stored: float
    recomputed: float
    path: str


@dataclass
class ConsistencyReport:
    """What the loader found inconsistent but could load: free-value and anti-affinity disagreements."""

    file: str
    numa_nodes_checked: int = 0
    numa_nodes_by_cluster: dict[str, int] = field(default_factory=dict)
    free_disagreements: list[FreeDisagreement] = field(default_factory=list)
    anti_affinity_violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.free_disagreements and not self.anti_affinity_violations

    def count(self, cluster: str | None = None, field_name: str | None = None) -> int:
        """Number of NUMA nodes that disagree (optionally for one cluster and/or field)."""
        return sum(
            1 for d in self.free_disagreements
            if (cluster is None or d.cluster == cluster) and (field_name is None or d.field == field_name)
        )

    def summary(self, examples: int = 3) -> str:
        """Human-readable report: per cluster and field, how many NUMA nodes disagree, with examples."""
        if self.ok:
            return f"{self.file}: stored free CPU and memory agree with the placed VMs on all {self.numa_nodes_checked} NUMA nodes"
        lines = [f"{self.file}: stored free values disagree with the placed VMs (the twin uses the recomputed ones):"]
        for cluster, checked in self.numa_nodes_by_cluster.items():
            for fname in ("free_cpu", "memory_huge_free_mb"):
                items = [d for d in self.free_disagreements if d.cluster == cluster and d.field == fname]
                if not items:
                    lines.append(f"  cluster {cluster}: {fname} agrees on all {checked} NUMA nodes")
                    continue
                lines.append(f"  cluster {cluster}: {fname} disagrees on {len(items)} of {checked} NUMA nodes")
                for d in items[:examples]:
                    lines.append(
                        f"    {d.path} (host {d.host_id}, NUMA {d.numa}): stored {d.stored:g}, recomputed {d.recomputed:g}"
                    )
        for text in self.anti_affinity_violations:
            lines.append(f"  anti-affinity already violated: {text}")
        return "\n".join(lines)


@dataclass(frozen=True)
class GeneralRequirement:
    """``general_requirement`` of a snapshot."""

    optimization_objective: int | None = None
    maximum_migration_each_batch: int | None = None
    maximum_migration: int | None = None
    maximum_time: float | None = None
    available_zone: str | None = None


@dataclass
class Snapshot:
    """A loaded snapshot: one :class:`Cluster` per ``cluster_list`` entry, plus shared type and requirement data."""

    clusters: list[Cluster]
    vm_types: list[VMType]
    requirement: GeneralRequirement
    source: str = "<memory>"
    report: ConsistencyReport | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def cluster(self, name: str) -> Cluster:
        """The cluster called ``name``."""
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(f"{self.source}: no cluster named {name!r} (have {[c.name for c in self.clusters]})")

    def fragment_rate(self, size: int = 16) -> float:
        """Fragment rate over all clusters' active NUMA nodes (how the VMR2L papers report a snapshot)."""
        return fleet_fragment_rate(self.clusters, size)

    def metrics(self) -> dict[str, Any]:
        """Snapshot-wide metrics: fragment rates, new-VM capacity per type, migrations, memory moved."""
        out: dict[str, Any] = {"fragment_rate": self.fragment_rate(16)}
        for size in FRAGMENT_SIZES:
            out[f"fragment_rate_{size}"] = self.fragment_rate(size)
        capacity: dict[str, int] = {}
        for c in self.clusters:
            for name, n in c.new_vm_capacity().items():
                capacity[name] = capacity.get(name, 0) + n
        out["new_vm_capacity"] = capacity
        out["num_migrations"] = sum(c.num_migrations for c in self.clusters)
        out["memory_moved_mb"] = sum(c.memory_moved_mb for c in self.clusters)
        return out

    def copy(self) -> "Snapshot":
        """An independent copy: clusters are copied, static metadata shared."""
        return Snapshot([c.copy() for c in self.clusters], self.vm_types, self.requirement, self.source, self.report, self.meta)

    @classmethod
    def from_clusters(cls, clusters: Iterable[Cluster], requirement: GeneralRequirement | None = None) -> "Snapshot":
        """A snapshot of clusters built in memory (e.g. replayed from a trace); they share the first's types."""
        clusters = list(clusters)
        types = clusters[0].vm_types if clusters else []
        return cls(clusters=clusters, vm_types=list(types), requirement=requirement or GeneralRequirement())


# ---------------------------------------------------------------------- reading
class _Reader:
    """Typed field access that reports file and JSON path on failure."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, reason: str) -> SnapshotError:
        return SnapshotError(self.file, path, reason)

    def get(self, obj: Any, key: str, path: str, kind: str, optional: bool = False) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(path, f"expected an object, got {type(obj).__name__}")
        full = f"{path}.{key}" if path else key
        if key not in obj:
            if optional:
                return None
            raise self.fail(full, "missing required field")
        return self.check(obj[key], full, kind)

    def check(self, value: Any, path: str, kind: str) -> Any:
        ok = {
            "str": isinstance(value, str),
            "list": isinstance(value, list),
            "dict": isinstance(value, dict),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "int": (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, float) and value.is_integer()),
            "flag": isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)),
            "scalar": isinstance(value, (str, int, float)) and not isinstance(value, bool),
        }[kind]
        if not ok:
            expected = {"int": "an integer", "number": "a number", "flag": "a boolean or 0/1",
                        "str": "a string", "list": "a list", "dict": "an object", "scalar": "a string or number"}[kind]
            raise self.fail(path, f"expected {expected}, got {_excerpt(value)}")
        if kind == "scalar" and isinstance(value, int) and value.bit_length() > MAX_ID_BITS:
            raise self.fail(path, f"integer {_excerpt(value)} too large for an id (at most {MAX_ID_BITS} bits)")
        if kind == "int":
            if abs(value) > MAX_INT:
                raise self.fail(path, f"integer {_excerpt(value)} out of range (at most {MAX_INT} in magnitude)")
            return int(value)  # 2.0 is read as 2: it indexes arrays (NUMA node) and counts
        if kind == "number":
            if isinstance(value, float) and not np.isfinite(value):  # Python's json reads NaN and Infinity
                raise self.fail(path, f"expected a finite number, got {value}")
            if abs(value) > MAX_NUMBER:  # exact for ints of any size (no float() overflow)
                raise self.fail(path, f"number {_excerpt(value)} out of range (at most {MAX_NUMBER:.0f} in magnitude)")
        return value


def _excerpt(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of a value for a message (huge ints are not rendered in full)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # str() of an int beyond 4,300 digits raises; the bit length gives the size for free.
        return f"{'-' if value < 0 else ''}<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # not JSON: an in-memory document can hold anything
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_snapshot(path: str | Path, strict: bool = False) -> Snapshot:
    """Load a VMR2L-schema snapshot file.

    Args:
        path: the JSON file.
        strict: raise :class:`SnapshotError` on any stored-vs-recomputed disagreement instead of
            reporting it.

    Returns:
        The snapshot; ``snapshot.report`` lists disagreements (also issued as a
        :class:`SnapshotConsistencyWarning` when there are any).

    Raises:
        SnapshotError: malformed input (file, JSON path and reason in the message).
    """
    file = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:  # missing, a directory, unreadable
        raise SnapshotError(file, "$", f"cannot read the file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SnapshotError(file, f"byte {e.start}", f"not UTF-8 text ({e.reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SnapshotError(file, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}") from None
    except RecursionError:
        raise SnapshotError(file, "$", "invalid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        raise SnapshotError(file, "$", f"invalid JSON: {e}") from None
    return snapshot_from_document(doc, file=file, strict=strict)


def snapshot_from_document(doc: Any, file: str = "<document>", strict: bool = False) -> Snapshot:
    """Build a :class:`Snapshot` from an already-parsed JSON document (see :func:`load_snapshot`)."""
    r = _Reader(file)
    if not isinstance(doc, dict):
        raise r.fail("$", f"expected a JSON object at the top level, got {type(doc).__name__}")
    vm_types, type_index = _read_vm_types(r, r.get(doc, "vm_type_list", "", "list"))
    requirement = _read_requirement(r, r.get(doc, "general_requirement", "", "dict"))
    report = ConsistencyReport(file=file)
    clusters = []
    seen_hosts: dict[str, str] = {}
    seen_vms: dict[str, str] = {}
    cluster_docs = r.get(doc, "cluster_list", "", "list")
    if not cluster_docs:
        raise r.fail("cluster_list", "no cluster: a snapshot needs at least one")
    for ci, cdoc in enumerate(cluster_docs):
        clusters.append(
            _read_cluster(r, cdoc, f"cluster_list[{ci}]", vm_types, type_index, report, seen_hosts, seen_vms)
        )
    if not report.ok:
        if strict:
            first = report.free_disagreements[0] if report.free_disagreements else None
            where = first.path if first else "cluster_list"
            raise r.fail(where, "strict mode: " + report.summary().split("\n", 1)[1].strip())
        warnings.warn(report.summary(), SnapshotConsistencyWarning, stacklevel=3)
    meta = {"top_keys": list(doc.keys()), "vm_type_list": doc["vm_type_list"], "general_requirement": doc["general_requirement"],
            "extra": {k: v for k, v in doc.items() if k not in ("cluster_list", "vm_type_list", "general_requirement")}}
    return Snapshot(clusters=clusters, vm_types=vm_types, requirement=requirement, source=file, report=report, meta=meta)


def _read_vm_types(r: _Reader, items: list) -> tuple[list[VMType], dict[str, int]]:
    types, index = [], {}
    for i, t in enumerate(items):
        p = f"vm_type_list[{i}]"
        name = r.get(t, "vm_type", p, "str")
        if name in index:
            raise r.fail(f"{p}.vm_type", f"duplicate vm_type {name!r} (also vm_type_list[{index[name]}])")
        cpu = r.get(t, "request_cpu", p, "int")
        mem = r.get(t, "request_mem_mb", p, "number")
        numa = r.get(t, "numa", p, "int")
        if cpu <= 0:
            raise r.fail(f"{p}.request_cpu", f"must be positive, got {cpu}")
        if mem < MIN_REQUEST_MEM_MB:
            raise r.fail(f"{p}.request_mem_mb", f"must be at least {MIN_REQUEST_MEM_MB:g} MB, got {mem}")
        if numa not in (1, 2):
            raise r.fail(f"{p}.numa", f"must be 1 or 2 (NUMA nodes spanned), got {numa}")
        expected = r.get(t, "expected_newly_created_num", p, "int", optional=True)
        weight = r.get(t, "weight", p, "number", optional=True)
        index[name] = i
        types.append(VMType(name, int(cpu), float(mem), int(numa), int(expected or 0), float(weight or 0.0)))
    return types, index


def _read_requirement(r: _Reader, g: dict) -> GeneralRequirement:
    p = "general_requirement"
    limit = r.get(g, "maximum_migration", p, "int", optional=True)
    if limit is not None and limit < 1:
        # The budget of every planner and of the env (which divides by it): none left is no task.
        raise r.fail(f"{p}.maximum_migration", f"must be at least 1, got {limit}")
    return GeneralRequirement(
        optimization_objective=r.get(g, "optimization_objective", p, "int", optional=True),
        maximum_migration_each_batch=r.get(g, "maximum_migration_each_batch", p, "int", optional=True),
        maximum_migration=limit,
        maximum_time=r.get(g, "maximum_time", p, "number", optional=True),
        available_zone=r.get(g, "available_zone", p, "scalar", optional=True),
    )


_HOST_KEYS = ("node_id", "status", "node_cpu", "node_mem_mb", "numa", "rack_id")
_HOST_NUMA_KEYS = ("node", "total_cpu", "free_cpu", "memory_huge_total_mb", "memory_huge_free_mb")
_VM_KEYS = ("instance_id", "instance_type", "host_id", "numa", "allow_migration")


def _read_cluster(
    r: _Reader, c: Any, p: str, vm_types: list[VMType], type_index: dict[str, int],
    report: ConsistencyReport, seen_hosts: dict[str, str], seen_vms: dict[str, str],
) -> Cluster:
    name = r.get(c, "cluster_name", p, "scalar")
    hosts = r.get(c, "host_info", p, "list")
    if not hosts:
        raise r.fail(f"{p}.host_info", "no host: a cluster needs at least one")
    num_hosts = len(hosts)
    host_ids: list[str] = []
    status: list[str] = []
    cpu_total = np.zeros((num_hosts, 2), dtype=np.int64)
    mem_total = np.zeros((num_hosts, 2), dtype=np.float64)
    stored_cpu = np.zeros((num_hosts, 2), dtype=np.float64)
    stored_mem = np.zeros((num_hosts, 2), dtype=np.float64)
    host_raw: list[dict[str, Any]] = []
    rack_raw: list[Any] = []
    host_index: dict[str, int] = {}
    for h, hdoc in enumerate(hosts):
        hp = f"{p}.host_info[{h}]"
        hid = str(r.get(hdoc, "node_id", hp, "scalar"))
        if hid in seen_hosts:
            raise r.fail(f"{hp}.node_id", f"duplicate host id {hid!r} (also {seen_hosts[hid]})")
        seen_hosts[hid] = hp
        host_index[hid] = h
        host_ids.append(hid)
        status.append(r.get(hdoc, "status", hp, "str"))
        rack_raw.append(r.get(hdoc, "rack_id", hp, "scalar", optional=True))
        raw = {k: hdoc[k] for k in ("node_cpu", "node_mem_mb") if k in hdoc}
        for k in ("node_cpu", "node_mem_mb"):
            if k in hdoc:
                r.check(hdoc[k], f"{hp}.{k}", "number")
        numa = r.get(hdoc, "numa", hp, "list")
        if len(numa) != 2:
            raise r.fail(f"{hp}.numa", f"hosts must have exactly 2 NUMA nodes, got {len(numa)}")
        nodes_seen = set()
        numa_extra = []
        for j, ndoc in enumerate(numa):
            np_ = f"{hp}.numa[{j}]"
            node = r.get(ndoc, "node", np_, "int")
            if node not in (0, 1) or node in nodes_seen:
                raise r.fail(f"{np_}.node", f"NUMA node must be 0 or 1 and appear once, got {node}")
            nodes_seen.add(node)
            cpu_total[h, node] = r.get(ndoc, "total_cpu", np_, "int")
            mem_total[h, node] = r.get(ndoc, "memory_huge_total_mb", np_, "number")
            for key, total in (("total_cpu", cpu_total[h, node]), ("memory_huge_total_mb", mem_total[h, node])):
                if total < 0:
                    raise r.fail(f"{np_}.{key}", f"must be >= 0, got {ndoc[key]}")
            stored_cpu[h, node] = r.get(ndoc, "free_cpu", np_, "number")
            stored_mem[h, node] = r.get(ndoc, "memory_huge_free_mb", np_, "number")
            numa_extra.append({k: v for k, v in ndoc.items() if k not in _HOST_NUMA_KEYS})
        raw["key_order"] = list(hdoc.keys())
        raw["numa_key_order"] = [list(n.keys()) for n in numa]
        raw["numa_raw"] = numa
        raw["extra"] = {k: v for k, v in hdoc.items() if k not in _HOST_KEYS}
        host_raw.append(raw)

    vms = r.get(c, "vm_instance", p, "list")
    num_vms = len(vms)
    vm_ids: list[str] = []
    vm_type = np.zeros(num_vms, dtype=np.int64)
    vm_host = np.zeros(num_vms, dtype=np.int64)
    node_cpu = np.zeros((num_vms, 2), dtype=np.int64)
    node_mem = np.zeros((num_vms, 2), dtype=np.float64)
    allow = np.zeros(num_vms, dtype=bool)
    vm_raw: list[dict[str, Any]] = []
    vm_index: dict[str, int] = {}
    for v, vdoc in enumerate(vms):
        vp = f"{p}.vm_instance[{v}]"
        vid = str(r.get(vdoc, "instance_id", vp, "scalar"))
        if vid in seen_vms:
            raise r.fail(f"{vp}.instance_id", f"duplicate instance id {vid!r} (also {seen_vms[vid]})")
        seen_vms[vid] = vp
        vm_index[vid] = v
        vm_ids.append(vid)
        tname = r.get(vdoc, "instance_type", vp, "str")
        if tname not in type_index:
            raise r.fail(f"{vp}.instance_type", f"unknown instance type {tname!r} (not in vm_type_list)")
        vm_type[v] = type_index[tname]
        hid = str(r.get(vdoc, "host_id", vp, "scalar"))
        if hid not in host_index:
            raise r.fail(f"{vp}.host_id", f"unknown host {hid!r} (not in this cluster's host_info)")
        vm_host[v] = host_index[hid]
        allow_raw = r.get(vdoc, "allow_migration", vp, "flag")
        allow[v] = bool(allow_raw)
        numa = r.get(vdoc, "numa", vp, "list")
        if len(numa) not in (1, 2):
            raise r.fail(f"{vp}.numa", f"a VM uses 1 or 2 NUMA nodes, got {len(numa)}")
        nodes_seen = set()
        order = []
        for j, ndoc in enumerate(numa):
            np_ = f"{vp}.numa[{j}]"
            node = r.get(ndoc, "node", np_, "int")
            if node not in (0, 1) or node in nodes_seen:
                raise r.fail(f"{np_}.node", f"NUMA node must be 0 or 1 and appear once per VM, got {node}")
            nodes_seen.add(node)
            order.append(int(node))
            cpu = r.get(ndoc, "cpu", np_, "int")
            mem = r.get(ndoc, "mem_mb", np_, "number")
            if cpu < 0 or mem < 0 or (cpu == 0 and mem == 0):
                raise r.fail(np_, f"a VM's NUMA usage must be positive, got cpu={cpu} mem_mb={mem}")
            node_cpu[v, node] = cpu
            node_mem[v, node] = mem
        vm_raw.append({
            "key_order": list(vdoc.keys()),
            "allow_raw": allow_raw,
            "numa_key_order": [list(n.keys()) for n in numa],
            "numa_values": {int(n["node"]): (n["cpu"], n["mem_mb"]) for n in numa},
            "numa_order": order,
            "extra": {k: vv for k, vv in vdoc.items() if k not in _VM_KEYS},
            "numa_extra": [{k: vv for k, vv in n.items() if k not in ("node", "cpu", "mem_mb")} for n in numa],
        })

    # Capacity: recompute free from placements; over capacity is malformed, a stored mismatch is reported.
    used_cpu = np.zeros((num_hosts, 2), dtype=np.int64)
    used_mem = np.zeros((num_hosts, 2), dtype=np.float64)
    np.add.at(used_cpu, vm_host, node_cpu)
    np.add.at(used_mem, vm_host, node_mem)
    free_cpu, free_mem = cpu_total - used_cpu, mem_total - used_mem
    for h, node in np.argwhere((free_cpu < 0) | (free_mem < 0)).tolist():
        on_node = [vm_ids[v] for v in np.flatnonzero((vm_host == h) & (node_cpu[:, node] + node_mem[:, node] > 0))]
        raise r.fail(
            f"{p}.host_info[{h}].numa[{_numa_pos(host_raw[h], node)}]",
            f"over capacity: VMs placed on host {host_ids[h]} NUMA {node} ({', '.join(on_node[:8])}"
            f"{'...' if len(on_node) > 8 else ''}) use {used_cpu[h, node]} vCPU / {used_mem[h, node]:g} MB "
            f"of {cpu_total[h, node]} / {mem_total[h, node]:g}",
        )
    report.numa_nodes_checked += 2 * num_hosts
    report.numa_nodes_by_cluster[str(name)] = 2 * num_hosts
    for fname, stored, recomputed in (("free_cpu", stored_cpu, free_cpu), ("memory_huge_free_mb", stored_mem, free_mem)):
        for h, node in np.argwhere(stored != recomputed).tolist():
            report.free_disagreements.append(FreeDisagreement(
                cluster=str(name), host_id=host_ids[h], host_index=h, numa=node, field=fname,
                stored=float(stored[h, node]), recomputed=float(recomputed[h, node]),
                path=f"{p}.host_info[{h}].numa[{_numa_pos(host_raw[h], node)}].{fname}",
            ))

    # Anti-affinity sets.
    other = r.get(c, "other_requirement", p, "dict", optional=True)
    dsets: list[DeploymentSet] = []
    if other is not None:
        for k, ds in enumerate(r.get(other, "deployment_set", f"{p}.other_requirement", "list", optional=True) or []):
            dp = f"{p}.other_requirement.deployment_set[{k}]"
            gran = r.get(ds, "granularity", dp, "str")
            if gran not in _ANTI_AFFINITY_GRANULARITIES:
                raise r.fail(f"{dp}.granularity", f"unsupported granularity {gran!r} (supported: {', '.join(_ANTI_AFFINITY_GRANULARITIES)})")
            members = []
            for m, vid in enumerate(r.get(ds, "data", dp, "list")):
                if str(r.check(vid, f"{dp}.data[{m}]", "scalar")) not in vm_index:
                    raise r.fail(f"{dp}.data[{m}]", f"unknown instance id {vid!r} (not in this cluster's vm_instance)")
                members.append(vm_index[str(vid)])
            members_arr = np.array(sorted(set(members)), dtype=np.int64)
            dsets.append(DeploymentSet(gran, members_arr))
    if all(isinstance(x, int) and abs(x) < 2**63 for x in rack_raw):
        host_rack = np.array(rack_raw, dtype=np.int64)
    else:  # string (or missing) rack ids: code them in order of appearance
        rack_codes = {v: i for i, v in enumerate(dict.fromkeys(map(str, rack_raw)))}
        host_rack = np.array([rack_codes[str(x)] for x in rack_raw], dtype=np.int64)
    for k, ds in enumerate(dsets):
        where = vm_host[ds.members] if ds.granularity == "host" else host_rack[vm_host[ds.members]]
        if len(np.unique(where)) < len(where):
            report.anti_affinity_violations.append(
                f"cluster {name}: deployment_set[{k}] ({ds.granularity}) has members sharing a {ds.granularity}"
            )

    cluster = make_cluster(
        str(name), vm_types, host_ids, cpu_total, mem_total, vm_ids, vm_type, vm_host, node_cpu, node_mem,
        host_status=status, host_rack=host_rack, vm_allow_migration=allow, deployment_sets=dsets,
    )
    cluster.meta = {
        "cluster_name_raw": name,
        "key_order": list(c.keys()),
        "host_raw": host_raw,
        "rack_raw": rack_raw,
        "stored_free_cpu": stored_cpu,
        "stored_free_mem": stored_mem,
        "loaded_free_cpu": free_cpu,
        "loaded_free_mem": free_mem,
        "vm_raw": vm_raw,
        "vm_type_info": c.get("vm_type_info"),
        "other_requirement": other,
        "deployment_sets_loaded": _set_signature(cluster),
        "extra": {k: v for k, v in c.items() if k not in ("cluster_name", "host_info", "vm_type_info", "vm_instance", "other_requirement")},
    }
    return cluster


def _set_signature(cluster: Cluster) -> list[tuple[str, list[int]]]:
    """The cluster's deployment sets as plain data, to tell whether they changed since loading."""
    return [(d.granularity, np.unique(d.members).tolist()) for d in cluster.deployment_sets]


def _numa_pos(host_raw: dict[str, Any], node: int) -> int:
    """Position in the host's ``numa[]`` list of NUMA node ``node`` (files list them in any order)."""
    for j, n in enumerate(host_raw["numa_raw"]):
        if int(n["node"]) == node:
            return j
    return node


# ---------------------------------------------------------------------- writing
FREE_VALUE_MODES = ("stored", "recomputed")


def snapshot_to_document(snapshot: Snapshot, free_values: str = "stored") -> dict[str, Any]:
    """The snapshot as a VMR2L-schema JSON document (current placements).

    Args:
        snapshot: the snapshot to write.
        free_values: how to write each NUMA node's ``free_cpu`` / ``memory_huge_free_mb``:
            ``"stored"`` keeps the file's own accounting, adjusted by what migrations changed
            since loading (an unchanged snapshot writes back exactly what was read, quirks
            included); ``"recomputed"`` writes the values the placed VMs leave free.

    Returns:
        A JSON-serialisable dict.
    """
    if free_values not in FREE_VALUE_MODES:
        raise ValueError(f"free_values must be one of {FREE_VALUE_MODES}, got {free_values!r}")
    meta = snapshot.meta
    doc: dict[str, Any] = {
        "cluster_list": [_cluster_to_document(c, free_values) for c in snapshot.clusters],
        "vm_type_list": meta.get("vm_type_list") or [
            {"vm_type": t.name, "request_cpu": t.request_cpu, "request_mem_mb": t.request_mem_mb, "numa": t.numa,
             "expected_newly_created_num": t.expected_newly_created_num, "weight": t.weight}
            for t in snapshot.vm_types
        ],
        "general_requirement": meta.get("general_requirement") or {
            k: v for k, v in snapshot.requirement.__dict__.items() if v is not None
        },
    }
    doc.update(meta.get("extra", {}))
    order = meta.get("top_keys") or list(doc)
    return {k: doc[k] for k in order} | {k: v for k, v in doc.items() if k not in order}


def save_snapshot(snapshot: Snapshot, path: str | Path, free_values: str = "stored", indent: int | None = None) -> None:
    """Write the snapshot to ``path`` in the VMR2L schema (see :func:`snapshot_to_document`)."""
    doc = snapshot_to_document(snapshot, free_values=free_values)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=indent)


def _reorder(values: dict[str, Any], order: list[str] | None) -> dict[str, Any]:
    if not order:
        return values
    return {k: values[k] for k in order if k in values} | {k: v for k, v in values.items() if k not in order}


def _free_value(raw: Any, delta: float) -> Any:
    # Keep the stored value's JSON type (the real files write free_cpu as 8.0, total_cpu as 44).
    if delta == 0:
        return raw
    return type(raw)(raw + delta)


def _cluster_to_document(cluster: Cluster, free_values: str) -> dict[str, Any]:
    meta = cluster.meta
    host_raw = meta.get("host_raw")
    stored_cpu, stored_mem = meta.get("stored_free_cpu"), meta.get("stored_free_mem")
    loaded_cpu, loaded_mem = meta.get("loaded_free_cpu"), meta.get("loaded_free_mem")
    rack_raw = meta.get("rack_raw")
    hosts = []
    for h, hid in enumerate(cluster.host_ids):
        raw = host_raw[h] if host_raw else None
        numa_entries = []
        nodes = [int(n["node"]) for n in raw["numa_raw"]] if raw else [0, 1]
        for j, node in enumerate(nodes):
            free_cpu, free_mem = int(cluster.free_cpu[h, node]), float(cluster.free_mem[h, node])
            if raw and free_values == "stored":
                nraw = raw["numa_raw"][j]
                free_cpu_out = _free_value(nraw["free_cpu"], free_cpu - int(loaded_cpu[h, node]))
                free_mem_out = _free_value(nraw["memory_huge_free_mb"], free_mem - float(loaded_mem[h, node]))
            else:
                free_cpu_out, free_mem_out = float(free_cpu), free_mem
            entry = {
                "node": raw["numa_raw"][j]["node"] if raw else node,
                "total_cpu": raw["numa_raw"][j]["total_cpu"] if raw else int(cluster.numa_cpu_total[h, node]),
                "free_cpu": free_cpu_out,
                "memory_huge_total_mb": raw["numa_raw"][j]["memory_huge_total_mb"] if raw else float(cluster.numa_mem_total[h, node]),
                "memory_huge_free_mb": free_mem_out,
            }
            if raw:
                entry |= {k: v for k, v in raw["numa_raw"][j].items() if k not in entry}
            numa_entries.append(_reorder(entry, raw["numa_key_order"][j] if raw else None))
        host = {
            "node_id": hid,
            "status": cluster.host_status[h],
            "node_cpu": raw["node_cpu"] if raw and "node_cpu" in raw else int(cluster.numa_cpu_total[h].sum()),
            "node_mem_mb": raw["node_mem_mb"] if raw and "node_mem_mb" in raw else float(cluster.numa_mem_total[h].sum()),
            "numa": numa_entries,
            "rack_id": rack_raw[h] if rack_raw is not None else int(cluster.host_rack[h]),
        }
        if raw:
            if "rack_id" not in raw["key_order"] and rack_raw[h] is None:
                del host["rack_id"]
            host |= raw["extra"]
        hosts.append(_reorder(host, raw["key_order"] if raw else None))

    vm_raw = meta.get("vm_raw")
    node_cpu, node_mem = cluster.vm_node_usage()
    vms = []
    for v, vid in enumerate(cluster.vm_ids):
        raw = vm_raw[v] if vm_raw else None
        used_nodes = [n for n in (0, 1) if node_cpu[v, n] > 0 or node_mem[v, n] > 0]
        if raw and len(used_nodes) == 2:
            used_nodes = raw["numa_order"]
        numa = []
        for j, node in enumerate(used_nodes):
            if raw:
                # The VM's shape never changes, only where it sits: reuse the values as written.
                values = raw["numa_values"][node] if len(used_nodes) == 2 else next(iter(raw["numa_values"].values()))
                entry = {"node": node, "cpu": values[0], "mem_mb": values[1]} | raw["numa_extra"][j]
                numa.append(_reorder(entry, raw["numa_key_order"][j]))
            else:
                numa.append({"node": node, "cpu": int(node_cpu[v, node]), "mem_mb": float(node_mem[v, node])})
        vm = {
            "instance_id": vid,
            "instance_type": cluster.vm_types[int(cluster.vm_type[v])].name,
            "host_id": cluster.host_ids[int(cluster.vm_host[v])],
            "numa": numa,
            "allow_migration": raw["allow_raw"] if raw else bool(cluster.vm_allow_migration[v]),
        }
        if raw:
            vm |= raw["extra"]
        vms.append(_reorder(vm, raw["key_order"] if raw else None))

    other = meta.get("other_requirement")
    if "other_requirement" not in meta or meta.get("deployment_sets_loaded") != _set_signature(cluster):
        # Sets built in memory, or changed since loading (added, stripped): write them from the
        # cluster, keeping whatever else the file's other_requirement held.
        other = dict(other or {}) | {"deployment_set": [
            {"granularity": d.granularity, "data": [cluster.vm_ids[m] for m in np.unique(d.members).tolist()]}
            for d in cluster.deployment_sets
        ]}
    type_info = meta.get("vm_type_info")
    if type_info is None and "vm_type_info" not in meta:
        counts = np.bincount(cluster.vm_type, minlength=len(cluster.vm_types))
        type_info = [{"vm_type": t.name, "flavor_limit": int(n)} for t, n in zip(cluster.vm_types, counts)]
    doc = {
        "cluster_name": meta.get("cluster_name_raw", cluster.name),
        "host_info": hosts,
        "vm_type_info": type_info,
        "vm_instance": vms,
        "other_requirement": other,
    }
    if type_info is None and "vm_type_info" in meta:
        del doc["vm_type_info"]
    if other is None:
        del doc["other_requirement"]
    doc |= meta.get("extra", {})
    return _reorder(doc, meta.get("key_order"))
