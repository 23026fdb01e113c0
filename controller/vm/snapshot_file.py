"""Read a VMR2L-schema JSON snapshot into a :class:`~controller.vm.fleet.Fleet`, without the twin.

The schema is the one ``digital_twin.vm.snapshot.load_snapshot`` reads (the bundled files under
``data/vmr2l_snapshots/``, schema in their ``SOURCE.md``): ``cluster_list[]`` of clusters with
``host_info[]`` (two NUMA nodes each, ``status``, ``rack_id``), ``vm_instance[]`` (NUMA usage,
``allow_migration``) and optional ``other_requirement.deployment_set[]`` (anti-affinity,
``"host"`` or ``"rack"`` granularity), plus ``vm_type_list[]`` and ``general_requirement``. The
reading rules are the twin's, so a file loads here exactly when it loads there, to the same
arrays (a test compares them): the same required fields and types, ids compared as text, racks
coded the same way, free capacity recomputed from the placed VMs (the files' stored free values
are checked for type only; the real files' memory ledger disagrees on 10-14 % of NUMA nodes,
which the twin reports and this loader, like the twin, does not use).

Errors: :class:`FleetFileError`, a ``ValueError`` of one line ``"{file}: {json path}: {what is
wrong}"``, e.g. ``snap.json: cluster_list[0].vm_instance[17].host_id: unknown host 'pm_9' (not in
this cluster's host_info)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from controller.vm.fleet import GRANULARITIES, Fleet

ACTIVE_STATUS = "ACTIVE"
MAX_INT = 2**31 - 1  # the twin's limits (digital_twin.vm.snapshot): sums over a cluster cannot overflow
MAX_NUMBER = 2.0**53
MAX_ID_BITS = 128
MIN_REQUEST_MEM_MB = 1.0


class FleetFileError(ValueError):
    """A snapshot file that cannot be read into a fleet: names the file, the JSON path and the reason."""

    def __init__(self, file: str, path: str, reason: str):
        self.file, self.path, self.reason = file, path, reason
        super().__init__(f"{file}: {path}: {' '.join(str(reason).split())}")  # one line


def _excerpt(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_EXPECTED = {"int": "an integer", "number": "a number", "flag": "a boolean or 0/1", "str": "a string",
             "list": "a list", "dict": "an object", "scalar": "a string or number"}


class _Reader:
    """Typed field access whose failures name the file and the JSON path."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, reason: str) -> FleetFileError:
        return FleetFileError(self.file, path, reason)

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
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            "str": isinstance(value, str),
            "list": isinstance(value, list),
            "dict": isinstance(value, dict),
            "number": number,
            "int": (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, float) and value.is_integer()),
            "flag": isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)),
            "scalar": isinstance(value, str) or number,
        }[kind]
        if not ok:
            raise self.fail(path, f"expected {_EXPECTED[kind]}, got {_excerpt(value)}")
        if kind == "scalar" and isinstance(value, int) and value.bit_length() > MAX_ID_BITS:
            raise self.fail(path, f"integer {_excerpt(value)} too large for an id (at most {MAX_ID_BITS} bits)")
        if kind == "int":
            if abs(value) > MAX_INT:
                raise self.fail(path, f"integer {_excerpt(value)} out of range (at most {MAX_INT} in magnitude)")
            return int(value)
        if kind == "number":
            if isinstance(value, float) and not np.isfinite(value):
                raise self.fail(path, f"expected a finite number, got {value}")
            if abs(value) > MAX_NUMBER:
                raise self.fail(path, f"number {_excerpt(value)} out of range (at most {MAX_NUMBER:.0f} in magnitude)")
        return value


def load_fleet(path: str | Path) -> Fleet:
    """Load a VMR2L-schema snapshot file as a fleet (clusters in file order, hosts then VMs of each).

    Returns:
        The fleet; ``budget`` is ``general_requirement.maximum_migration`` (None if absent),
        hosts whose ``status`` is not ``"ACTIVE"`` are inactive, ``allow_migration`` is kept per VM
        and deployment sets become global member indices.

    Raises:
        FleetFileError: the file cannot be read or is malformed (one line: file, JSON path, reason).
    """
    file = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FleetFileError(file, "$", f"cannot read the file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FleetFileError(file, f"byte {e.start}", f"not UTF-8 text ({e.reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise FleetFileError(file, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}") from None
    except RecursionError:
        raise FleetFileError(file, "$", "invalid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        raise FleetFileError(file, "$", f"invalid JSON: {e}") from None
    return fleet_from_document(doc, file)


def fleet_from_document(doc: Any, file: str = "<document>") -> Fleet:
    """A fleet from an already-parsed VMR2L-schema document (see :func:`load_fleet`)."""
    r = _Reader(file)
    if not isinstance(doc, dict):
        raise r.fail("$", f"expected a JSON object at the top level, got {type(doc).__name__}")
    type_names = _read_vm_types(r, r.get(doc, "vm_type_list", "", "list"))
    budget = _read_budget(r, r.get(doc, "general_requirement", "", "dict"))
    cluster_docs = r.get(doc, "cluster_list", "", "list")
    if not cluster_docs:
        raise r.fail("cluster_list", "no cluster: a snapshot needs at least one")
    seen_hosts: dict[str, str] = {}
    seen_vms: dict[str, str] = {}
    parts = []
    for ci, cdoc in enumerate(cluster_docs):
        parts.append(_read_cluster(r, cdoc, f"cluster_list[{ci}]", type_names, seen_hosts, seen_vms))
    host_offset = np.cumsum([0] + [len(c["host_ids"]) for c in parts])
    vm_offset = np.cumsum([0] + [len(c["vm_ids"]) for c in parts])
    sets = [(g, members + vm_offset[ci]) for ci, c in enumerate(parts) for g, members in c["sets"]]
    try:
        return Fleet(
            cluster_names=[c["name"] for c in parts],
            host_ids=[h for c in parts for h in c["host_ids"]],
            host_cluster=np.repeat(np.arange(len(parts)), [len(c["host_ids"]) for c in parts]),
            numa_cpu_total=np.concatenate([c["cpu_total"] for c in parts]),
            numa_mem_total=np.concatenate([c["mem_total"] for c in parts]),
            host_active=np.concatenate([c["active"] for c in parts]),
            host_rack=np.concatenate([c["rack"] for c in parts]),
            vm_ids=[v for c in parts for v in c["vm_ids"]],
            vm_cluster=np.repeat(np.arange(len(parts)), [len(c["vm_ids"]) for c in parts]),
            vm_host=np.concatenate([c["vm_host"] + host_offset[ci] for ci, c in enumerate(parts)]),
            vm_placement=np.concatenate([c["placement"] for c in parts]),
            vm_span=np.concatenate([c["span"] for c in parts]),
            vm_cpu=np.concatenate([c["cpu"] for c in parts]).reshape(-1, 2),
            vm_mem=np.concatenate([c["mem"] for c in parts]).reshape(-1, 2),
            vm_allow_migration=np.concatenate([c["allow"] for c in parts]),
            deployment_sets=sets,
            budget=budget,
        )
    except ValueError as e:  # the checks above leave none; kept one line and named after the file
        raise r.fail("cluster_list", str(e)) from None


def _read_vm_types(r: _Reader, items: list) -> set[str]:
    """The instance type names (their fields checked as the twin checks them; the fleet needs only the names)."""
    index: dict[str, int] = {}
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
        r.get(t, "expected_newly_created_num", p, "int", optional=True)
        r.get(t, "weight", p, "number", optional=True)
        index[name] = i
    return set(index)


def _read_budget(r: _Reader, g: dict) -> int | None:
    p = "general_requirement"
    limit = r.get(g, "maximum_migration", p, "int", optional=True)
    if limit is not None and limit < 1:
        raise r.fail(f"{p}.maximum_migration", f"must be at least 1, got {limit}")
    for key, kind in (("optimization_objective", "int"), ("maximum_migration_each_batch", "int"),
                      ("maximum_time", "number"), ("available_zone", "scalar")):
        r.get(g, key, p, kind, optional=True)
    return limit


def _read_cluster(r: _Reader, c: Any, p: str, type_names: set[str],
                  seen_hosts: dict[str, str], seen_vms: dict[str, str]) -> dict[str, Any]:
    """One cluster's arrays, local indices (the caller lays the clusters side by side)."""
    name = str(r.get(c, "cluster_name", p, "scalar"))
    hosts = r.get(c, "host_info", p, "list")
    if not hosts:
        raise r.fail(f"{p}.host_info", "no host: a cluster needs at least one")
    num_hosts = len(hosts)
    host_ids: list[str] = []
    active = np.zeros(num_hosts, dtype=bool)
    cpu_total = np.zeros((num_hosts, 2), dtype=np.int64)
    mem_total = np.zeros((num_hosts, 2), dtype=np.float64)
    numa_pos = np.zeros((num_hosts, 2), dtype=np.int64)  # position of node n in the host's numa[] (messages)
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
        active[h] = r.get(hdoc, "status", hp, "str") == ACTIVE_STATUS
        rack_raw.append(r.get(hdoc, "rack_id", hp, "scalar", optional=True))
        for k in ("node_cpu", "node_mem_mb"):
            if k in hdoc:
                r.check(hdoc[k], f"{hp}.{k}", "number")
        numa = r.get(hdoc, "numa", hp, "list")
        if len(numa) != 2:
            raise r.fail(f"{hp}.numa", f"hosts must have exactly 2 NUMA nodes, got {len(numa)}")
        nodes_seen: set[int] = set()
        for j, ndoc in enumerate(numa):
            np_ = f"{hp}.numa[{j}]"
            node = r.get(ndoc, "node", np_, "int")
            if node not in (0, 1) or node in nodes_seen:
                raise r.fail(f"{np_}.node", f"NUMA node must be 0 or 1 and appear once, got {node}")
            nodes_seen.add(node)
            numa_pos[h, node] = j
            cpu_total[h, node] = r.get(ndoc, "total_cpu", np_, "int")
            mem_total[h, node] = r.get(ndoc, "memory_huge_total_mb", np_, "number")
            for key, total in (("total_cpu", cpu_total[h, node]), ("memory_huge_total_mb", mem_total[h, node])):
                if total < 0:
                    raise r.fail(f"{np_}.{key}", f"must be >= 0, got {ndoc[key]}")
            r.get(ndoc, "free_cpu", np_, "number")  # the stored ledger: checked, not used (recomputed)
            r.get(ndoc, "memory_huge_free_mb", np_, "number")

    vms = r.get(c, "vm_instance", p, "list")
    num_vms = len(vms)
    vm_ids: list[str] = []
    vm_host = np.zeros(num_vms, dtype=np.int64)
    node_cpu = np.zeros((num_vms, 2), dtype=np.int64)
    node_mem = np.zeros((num_vms, 2), dtype=np.float64)
    allow = np.zeros(num_vms, dtype=bool)
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
        if tname not in type_names:
            raise r.fail(f"{vp}.instance_type", f"unknown instance type {tname!r} (not in vm_type_list)")
        hid = str(r.get(vdoc, "host_id", vp, "scalar"))
        if hid not in host_index:
            raise r.fail(f"{vp}.host_id", f"unknown host {hid!r} (not in this cluster's host_info)")
        vm_host[v] = host_index[hid]
        allow[v] = bool(r.get(vdoc, "allow_migration", vp, "flag"))
        numa = r.get(vdoc, "numa", vp, "list")
        if len(numa) not in (1, 2):
            raise r.fail(f"{vp}.numa", f"a VM uses 1 or 2 NUMA nodes, got {len(numa)}")
        nodes_seen = set()
        for j, ndoc in enumerate(numa):
            np_ = f"{vp}.numa[{j}]"
            node = r.get(ndoc, "node", np_, "int")
            if node not in (0, 1) or node in nodes_seen:
                raise r.fail(f"{np_}.node", f"NUMA node must be 0 or 1 and appear once per VM, got {node}")
            nodes_seen.add(node)
            cpu = r.get(ndoc, "cpu", np_, "int")
            mem = r.get(ndoc, "mem_mb", np_, "number")
            if cpu < 0 or mem < 0 or (cpu == 0 and mem == 0):
                raise r.fail(np_, f"a VM's NUMA usage must be positive, got cpu={cpu} mem_mb={mem}")
            node_cpu[v, node] = cpu
            node_mem[v, node] = mem

    # Over capacity is malformed (the twin's check, same summation).
    used_cpu = np.zeros((num_hosts, 2), dtype=np.int64)
    used_mem = np.zeros((num_hosts, 2), dtype=np.float64)
    np.add.at(used_cpu, vm_host, node_cpu)
    np.add.at(used_mem, vm_host, node_mem)
    free_cpu, free_mem = cpu_total - used_cpu, mem_total - used_mem
    over = np.argwhere((free_cpu < 0) | (free_mem < 0))
    if len(over):
        h, node = over[0].tolist()
        on_node = [vm_ids[v] for v in np.flatnonzero((vm_host == h) & (node_cpu[:, node] + node_mem[:, node] > 0))]
        raise r.fail(
            f"{p}.host_info[{h}].numa[{numa_pos[h, node]}]",
            f"over capacity: VMs placed on host {host_ids[h]} NUMA {node} ({', '.join(on_node[:8])}"
            f"{'...' if len(on_node) > 8 else ''}) use {used_cpu[h, node]} vCPU / {used_mem[h, node]:g} MB "
            f"of {cpu_total[h, node]} / {mem_total[h, node]:g}",
        )

    sets: list[tuple[str, np.ndarray]] = []
    other = r.get(c, "other_requirement", p, "dict", optional=True)
    if other is not None:
        for k, ds in enumerate(r.get(other, "deployment_set", f"{p}.other_requirement", "list", optional=True) or []):
            dp = f"{p}.other_requirement.deployment_set[{k}]"
            gran = r.get(ds, "granularity", dp, "str")
            if gran not in GRANULARITIES:
                raise r.fail(f"{dp}.granularity", f"unsupported granularity {gran!r} (supported: {', '.join(GRANULARITIES)})")
            members = []
            for m, vid in enumerate(r.get(ds, "data", dp, "list")):
                if str(r.check(vid, f"{dp}.data[{m}]", "scalar")) not in vm_index:
                    raise r.fail(f"{dp}.data[{m}]", f"unknown instance id {vid!r} (not in this cluster's vm_instance)")
                members.append(vm_index[str(vid)])
            sets.append((gran, np.array(sorted(set(members)), dtype=np.int64)))

    # Racks as the twin codes them: integer ids as they are, anything else (strings, a missing
    # rack_id) numbered in order of appearance of its text.
    if all(isinstance(x, int) and abs(x) < 2**63 for x in rack_raw):
        rack = np.array(rack_raw, dtype=np.int64)
    else:
        codes = {x: i for i, x in enumerate(dict.fromkeys(map(str, rack_raw)))}
        rack = np.array([codes[str(x)] for x in rack_raw], dtype=np.int64)

    # Canonical usage (the twin's make_cluster): a 1-NUMA VM on node 1 is [usage, 0] at placement 1.
    on_node = (node_cpu > 0) | (node_mem > 0)
    span = on_node.sum(axis=1).astype(np.int64)
    placement = np.where((span == 1) & on_node[:, 1], 1, 0).astype(np.int64)
    swap = (placement == 1)[:, None]
    return {
        "name": name, "host_ids": host_ids, "active": active, "cpu_total": cpu_total, "mem_total": mem_total,
        "rack": rack, "vm_ids": vm_ids, "vm_host": vm_host, "placement": placement, "span": span,
        "cpu": np.where(swap, node_cpu[:, ::-1], node_cpu), "mem": np.where(swap, node_mem[:, ::-1], node_mem),
        "allow": allow, "sets": sets,
    }
