"""Snapshot loader/saver: real files, the disagreement report, exact round trips, malformed input."""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digital_twin.vm import (
    Snapshot,
    SnapshotConsistencyWarning,
    SnapshotError,
    load_snapshot,
    save_snapshot,
    snapshot_from_document,
    snapshot_to_document,
)
from tests.vm.conftest import BIG_REAL, SMALL_REAL, load_quietly


@pytest.mark.parametrize(
    "path, expected",
    [
        (SMALL_REAL, [("cluster1", 236, 1934, 67), ("cluster2", 43, 155, 13)]),
        (BIG_REAL, [("cluster1", 352, 504, 55), ("cluster2", 824, 4042, 184)]),
    ],
)
def test_real_files_load_every_cluster_and_report_the_memory_quirk(path, expected):
    with pytest.warns(SnapshotConsistencyWarning, match="memory_huge_free_mb disagrees"):
        snap = load_snapshot(path)
    assert [(c.name, c.num_hosts, c.num_vms) for c in snap.clusters] == [e[:3] for e in expected]
    for name, hosts, _, mem_bad in expected:
        assert snap.report.count(name, "memory_huge_free_mb") == mem_bad
        assert snap.report.count(name, "free_cpu") == 0  # CPU agrees everywhere
        assert snap.report.numa_nodes_by_cluster[name] == 2 * hosts
    summary = snap.report.summary()
    assert f"disagrees on {expected[0][3]} of {2 * expected[0][1]} NUMA nodes" in summary
    assert "free_cpu agrees on all" in summary
    first = snap.report.free_disagreements[0]
    assert first.path.startswith("cluster_list[0].host_info[") and first.path.endswith(".memory_huge_free_mb")
    for cluster in snap.clusters:
        assert cluster.capacity_violations() == []


def test_real_snapshot_values(real_snapshot):
    assert real_snapshot.fragment_rate() == pytest.approx(0.977044, abs=1e-6)
    c = real_snapshot.clusters[0]
    assert c.fragment_rate() == 1.0
    assert real_snapshot.requirement.maximum_migration == 10000
    assert len(real_snapshot.vm_types) == 7
    assert int((c.vm_span == 2).sum()) == 250  # VMs split over both NUMA nodes
    # pm_0 in the file: NUMA 0 has 8 vCPU free.
    assert c.free_cpu[c.host_index("pm_0"), 0] == 8


def test_disagreement_is_reported_with_stored_and_recomputed_values(tiny_doc, write_doc):
    tiny_doc["cluster_list"][0]["host_info"][1]["numa"][1]["memory_huge_free_mb"] = 1.0
    with pytest.warns(SnapshotConsistencyWarning) as record:
        snap = load_snapshot(write_doc(tiny_doc))
    d = snap.report.free_disagreements
    assert len(d) == 1 and d[0].host_id == "pm_1" and d[0].numa == 1
    assert (d[0].stored, d[0].recomputed) == (1.0, 168004.0)
    assert "cluster_list[0].host_info[1].numa[1].memory_huge_free_mb" in str(record[0].message)
    # The twin uses what the VMs leave free, not the stored value.
    assert snap.clusters[0].free_mem[1, 1] == 168004.0


def test_strict_mode_refuses_a_disagreement(tiny_doc, write_doc):
    tiny_doc["cluster_list"][0]["host_info"][0]["numa"][0]["free_cpu"] = 30.0
    path = write_doc(tiny_doc)
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path, strict=True)
    assert str(path) in str(err.value)
    assert err.value.path == "cluster_list[0].host_info[0].numa[0].free_cpu"
    assert "stored 30, recomputed 28" in str(err.value)


def test_consistent_file_loads_silently(tiny_doc, write_doc):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snap = load_snapshot(write_doc(tiny_doc), strict=True)
    assert snap.report.ok


@pytest.mark.parametrize("path", [SMALL_REAL, BIG_REAL])
def test_unchanged_real_snapshot_saves_byte_for_byte_equivalent(path, tmp_path):
    snap = load_quietly(path)
    original = json.loads(path.read_text())
    out = tmp_path / "out.json"
    save_snapshot(snap, out)
    assert json.loads(out.read_text()) == original
    # Same JSON types too (8.0 stays 8.0, True stays True).
    assert json.dumps(snapshot_to_document(snap)) == json.dumps(original)


def test_save_after_migrations_roundtrips_and_adjusts_stored_free(real_snapshot, tmp_path):
    snap = real_snapshot.copy()
    cluster = snap.clusters[0]
    from agents.vm.heuristics import greedy_migrations

    plan = greedy_migrations([cluster], budget=5)
    assert len(plan) == 5
    for mode in ("stored", "recomputed"):
        out = tmp_path / f"{mode}.json"
        save_snapshot(snap, out, free_values=mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = load_snapshot(out)
        back = again.clusters[0]
        np.testing.assert_array_equal(back.vm_host, cluster.vm_host)
        np.testing.assert_array_equal(back.vm_placement, cluster.vm_placement)
        np.testing.assert_array_equal(back.free_cpu, cluster.free_cpu)
        np.testing.assert_array_equal(back.free_mem, cluster.free_mem)
        assert again.fragment_rate() == snap.fragment_rate()
        if mode == "recomputed":
            assert caught == [] and again.report.ok
        else:
            # The file's own memory quirk is kept where it was, shifted by what moved.
            assert again.report.count("cluster1", "memory_huge_free_mb") == 67


def test_free_values_mode_is_checked(real_snapshot):
    with pytest.raises(ValueError, match="free_values"):
        snapshot_to_document(real_snapshot, free_values="guess")


def test_in_memory_clusters_save_in_the_schema(tmp_path):
    from tests.vm.conftest import TYPES
    from digital_twin.vm import make_cluster

    cluster = make_cluster(
        "built", TYPES, ["a", "b"], np.full((2, 2), 44), np.full((2, 2), 184388.0),
        ["x", "y"], np.array([1, 4]), np.array([0, 1]), np.array([[0, 4], [16, 16]]), np.array([[0, 8192.0], [32768.0, 32768.0]]),
    )
    snap = Snapshot.from_clusters([cluster])
    out = tmp_path / "built.json"
    save_snapshot(snap, out)
    doc = json.loads(out.read_text())
    vm_x = doc["cluster_list"][0]["vm_instance"][0]
    assert vm_x == {"instance_id": "x", "instance_type": "t4", "host_id": "a",
                    "numa": [{"node": 1, "cpu": 4, "mem_mb": 8192.0}], "allow_migration": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_snapshot(out, strict=True).clusters[0]
    np.testing.assert_array_equal(back.free_cpu, cluster.free_cpu)
    np.testing.assert_array_equal(back.vm_placement, cluster.vm_placement)


# ---------------------------------------------------------------------- malformed input
def _mutate(doc, steps):
    """Apply (json path, value) edits; value ``...`` deletes the key."""
    for path, value in steps:
        target = doc
        keys = path.split("/")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return doc


MALFORMED = [
    ("missing field", [("cluster_list/0/vm_instance/1/host_id", ...)],
     "cluster_list[0].vm_instance[1].host_id", "missing required field"),
    ("wrong type", [("cluster_list/0/vm_instance/0/numa/0/cpu", "sixteen")],
     "cluster_list[0].vm_instance[0].numa[0].cpu", "expected an integer"),
    ("fractional cpu", [("cluster_list/0/vm_instance/0/numa/0/cpu", 2.5)],
     "cluster_list[0].vm_instance[0].numa[0].cpu", "expected an integer"),
    ("unknown host", [("cluster_list/0/vm_instance/2/host_id", "pm_99")],
     "cluster_list[0].vm_instance[2].host_id", "unknown host 'pm_99'"),
    ("over capacity", [("cluster_list/0/vm_instance/0/numa/0/cpu", 48)],
     "cluster_list[0].host_info[0].numa[0]", "over capacity"),
    ("over memory", [("cluster_list/0/vm_instance/1/numa/0/mem_mb", 200000.0)],
     "cluster_list[0].host_info[0].numa[1]", "over capacity"),
    ("duplicate vm id", [("cluster_list/0/vm_instance/2/instance_id", "vm_0")],
     "cluster_list[0].vm_instance[2].instance_id", "duplicate instance id 'vm_0'"),
    ("duplicate host id", [("cluster_list/0/host_info/2/node_id", "pm_1")],
     "cluster_list[0].host_info[2].node_id", "duplicate host id 'pm_1'"),
    ("duplicate vm type", [("vm_type_list/1/vm_type", "m.4xlarge")],
     "vm_type_list[1].vm_type", "duplicate vm_type"),
    ("unknown instance type", [("cluster_list/0/vm_instance/1/instance_type", "m.9xlarge")],
     "cluster_list[0].vm_instance[1].instance_type", "unknown instance type 'm.9xlarge'"),
    ("bad numa node", [("cluster_list/0/vm_instance/1/numa/0/node", 2)],
     "cluster_list[0].vm_instance[1].numa[0].node", "NUMA node must be 0 or 1"),
    ("one numa host", [("cluster_list/0/host_info/2/numa", [])],
     "cluster_list[0].host_info[2].numa", "exactly 2 NUMA nodes"),
    ("bad allow flag", [("cluster_list/0/vm_instance/0/allow_migration", "yes")],
     "cluster_list[0].vm_instance[0].allow_migration", "expected a boolean or 0/1"),
    ("missing top level", [("general_requirement", ...)], "general_requirement", "missing required field"),
    ("unknown set member", [("cluster_list/0/other_requirement/deployment_set/0/data/1", "vm_77")],
     "cluster_list[0].other_requirement.deployment_set[0].data[1]", "unknown instance id 'vm_77'"),
    ("bad granularity", [("cluster_list/0/other_requirement/deployment_set/0/granularity", "zone")],
     "cluster_list[0].other_requirement.deployment_set[0].granularity", "unsupported granularity 'zone'"),
    ("bad type numa", [("vm_type_list/0/numa", 3)], "vm_type_list[0].numa", "must be 1 or 2"),
    # Issue #12: numbers beyond what fixed-width arithmetic holds, and degenerate snapshots.
    ("huge total_cpu", [("cluster_list/0/host_info/0/numa/0/total_cpu", 1e300)],
     "cluster_list[0].host_info[0].numa[0].total_cpu", "out of range"),
    ("huge vm cpu", [("cluster_list/0/vm_instance/0/numa/0/cpu", 2**63)],
     "cluster_list[0].vm_instance[0].numa[0].cpu", "out of range"),
    ("huge free_cpu", [("cluster_list/0/host_info/1/numa/1/free_cpu", 10**400)],
     "cluster_list[0].host_info[1].numa[1].free_cpu", "out of range"),
    ("huge memory", [("cluster_list/0/host_info/2/numa/0/memory_huge_total_mb", 1e308)],
     "cluster_list[0].host_info[2].numa[0].memory_huge_total_mb", "out of range"),
    ("nan free memory", [("cluster_list/0/host_info/0/numa/1/memory_huge_free_mb", float("nan"))],
     "cluster_list[0].host_info[0].numa[1].memory_huge_free_mb", "finite"),
    ("negative total", [("cluster_list/0/host_info/2/numa/1/total_cpu", -4)],
     "cluster_list[0].host_info[2].numa[1].total_cpu", "must be >= 0"),
    ("empty cluster_list", [("cluster_list", [])], "cluster_list", "no cluster"),
    ("cluster without hosts", [("cluster_list/0/host_info", [])], "cluster_list[0].host_info", "no host"),
    ("tiny request memory", [("vm_type_list/1/request_mem_mb", 1e-300)],
     "vm_type_list[1].request_mem_mb", "at least 1 MB"),
    ("zero budget", [("general_requirement/maximum_migration", 0)],
     "general_requirement.maximum_migration", "at least 1"),
    ("set member not an id", [("cluster_list/0/other_requirement/deployment_set/0/data/0", ["vm_0"])],
     "cluster_list[0].other_requirement.deployment_set[0].data[0]", "expected a string or number"),
]


@pytest.mark.parametrize("case, edits, json_path, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_file_path_and_reason(tiny_doc, write_doc, case, edits, json_path, reason):
    path = write_doc(_mutate(tiny_doc, edits))
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {json_path}: "), message
    assert reason in message
    assert err.value.file == str(path) and err.value.path == json_path


def test_invalid_json_names_line(write_doc, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"cluster_list": [\n  {"cluster_name": "x",,}\n]}')
    with pytest.raises(SnapshotError, match=r"broken.json: line 2 column \d+: invalid JSON"):
        load_snapshot(path)


def test_anti_affinity_already_violated_is_reported(tiny_doc, write_doc):
    tiny_doc["cluster_list"][0]["other_requirement"]["deployment_set"][0]["data"] = ["vm_0", "vm_1"]
    with pytest.warns(SnapshotConsistencyWarning, match="anti-affinity"):
        snap = load_snapshot(write_doc(tiny_doc))
    assert len(snap.report.anti_affinity_violations) == 1


def test_allow_migration_accepts_0_and_1_and_writes_them_back(tiny_doc):
    tiny_doc["cluster_list"][0]["vm_instance"][0]["allow_migration"] = 0
    snap = snapshot_from_document(tiny_doc)
    assert not snap.clusters[0].vm_allow_migration[0]
    assert snapshot_to_document(snap)["cluster_list"][0]["vm_instance"][0]["allow_migration"] == 0
    assert json.dumps(snapshot_to_document(snap)) == json.dumps(tiny_doc)


# ---------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("content, json_path, reason", [
    (b'{"cluster_list": [\xff\xfe]}', "byte 18", "not UTF-8"),
    (b"[" * 200_000, "$", "nested too deeply"),
    (b'{"x": ' + b"7" * 5000 + b"}", "$", "invalid JSON"),  # beyond Python's integer digit limit
], ids=["not utf-8", "deep nesting", "huge integer literal"])
def test_unreadable_content_names_file_and_reason(tmp_path, content, json_path, reason):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert err.value.file == str(path) and err.value.path == json_path
    assert reason in err.value.reason


def test_missing_file_and_directory_are_snapshot_errors(tmp_path):
    for path, reason in ((tmp_path / "nowhere.json", "No such file"), (tmp_path, "directory")):
        with pytest.raises(SnapshotError, match=reason) as err:
            load_snapshot(path)
        assert err.value.file == str(path) and err.value.path == "$"


def test_rack_ids_beyond_int64_are_coded_not_overflowed(tiny_doc):
    hosts = tiny_doc["cluster_list"][0]["host_info"]
    for host, rack in zip(hosts, (10**30, 5, 10**30)):
        host["rack_id"] = rack
    snap = snapshot_from_document(tiny_doc)
    c = snap.clusters[0]
    assert c.host_rack[0] == c.host_rack[2] != c.host_rack[1]
    assert snapshot_to_document(snap) == tiny_doc  # written back as read


def test_sets_changed_after_loading_are_written(tiny_doc):
    from digital_twin.vm.deployment_sets import strip_deployment_sets

    snap = snapshot_from_document(tiny_doc)
    stripped = snapshot_to_document(strip_deployment_sets(snap))
    assert stripped["cluster_list"][0]["other_requirement"] == {"deployment_set": []}
    # Unchanged sets are written back exactly as the file had them.
    written = snapshot_to_document(snap)["cluster_list"][0]["other_requirement"]
    assert written == tiny_doc["cluster_list"][0]["other_requirement"]


# ---------------------------------------------------------------------- fuzzing a real snapshot
def _real_base() -> dict:
    """The real clear2 file, cut to stay fast: cluster 1's first 40 hosts and their VMs, all of cluster 2,
    plus two satisfied deployment sets (the file has none), so that every part of the schema is in play."""
    doc = json.loads(SMALL_REAL.read_text())
    first = doc["cluster_list"][0]
    first["host_info"] = first["host_info"][:40]
    kept = {h["node_id"] for h in first["host_info"]}
    first["vm_instance"] = [v for v in first["vm_instance"] if v["host_id"] in kept]
    by_host = {}
    for vm in first["vm_instance"]:
        by_host.setdefault(vm["host_id"], vm["instance_id"])
    rack_of = {h["node_id"]: h["rack_id"] for h in first["host_info"]}
    by_rack = {}
    for host, vm in by_host.items():
        by_rack.setdefault(rack_of[host], vm)
    first["other_requirement"]["deployment_set"] = [
        {"granularity": "host", "data": list(by_host.values())[:6]},
        {"granularity": "rack", "data": list(by_rack.values())[:4]},
    ]
    return doc


REAL_BASE = _real_base()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


REAL_PATHS = [p for p in _paths(REAL_BASE) if p]

_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 44, 2**31, 2**63, -(2**63) - 1, 10**400, 10**30]),
    st.integers(-10, 10**6),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 1e300, 1e308, float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "ACTIVE", "host", "rack", "zone", "pm_0", "vm_0", "pm_1", "xxx.xxx.2xlarge"]),
    st.text(max_size=5),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["node", "cpu", "mem_mb", "node_id", "data", "x"]), inner, max_size=3), max_leaves=6)


@st.composite
def mutated_real_documents(draw):
    """The real base document with 1-4 random edits: replace, delete, duplicate or copy a value, or scale a number."""
    doc = copy.deepcopy(REAL_BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(REAL_PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced it
        # Weighted towards edits that keep the document well-typed, so that a good share still loads.
        kind = draw(st.sampled_from(
            ["replace"] * 2 + ["delete", "duplicate", "copy"] + ["sibling"] * 3 + ["scale"] * 2))
        lists = [i for i, key in enumerate(path) if isinstance(key, int)]
        if kind == "sibling" and lists:
            # The same field of another element of one of the lists on the path (another VM's host_id,
            # another host's free_cpu...): well-typed, and often a real conflict (capacity, duplicate id).
            at = draw(st.sampled_from(lists))
            container = doc
            for key in path[:at]:
                container = container[key]
            source = container[draw(st.integers(0, len(container) - 1))] if len(container) else None
            try:
                for key in path[at + 1:]:
                    source = source[key]
            except (KeyError, IndexError, TypeError):
                continue
            parent[path[-1]] = copy.deepcopy(source)
        elif kind == "delete":
            del parent[path[-1]]
        elif kind == "duplicate" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(current))
        elif kind == "copy":  # another node's value (a real id, number or object) put here
            source = doc
            try:
                for key in draw(st.sampled_from(REAL_PATHS)):
                    source = source[key]
            except (KeyError, IndexError, TypeError):
                continue
            parent[path[-1]] = copy.deepcopy(source)
        elif kind == "scale" and isinstance(current, (int, float)) and not isinstance(current, bool):
            parent[path[-1]] = current * draw(st.sampled_from([-1, 0, 2, 10**6, 1e300, 0.5]))
        else:
            parent[path[-1]] = draw(st.one_of(_SCALARS, _SCALARS, _VALUES))
    return doc


def _assert_loaded_snapshot_is_consistent(snap):
    assert snap.clusters and all(c.num_hosts >= 1 for c in snap.clusters)
    for c in snap.clusters:
        assert c.capacity_violations() == []
        assert c.metrics() == c.recompute_metrics()
        assert 0.0 <= c.fragment_rate() <= 1.0
        np.testing.assert_array_equal(c.movable_vms(), c.feasible_destinations_all().any(axis=(1, 2)))
    # What loaded also saves, and reloads to the same state.
    again = snapshot_from_document(json.loads(json.dumps(snapshot_to_document(snap))), file="<again>")
    for a, b in zip(snap.clusters, again.clusters):
        for name in ("vm_host", "vm_placement", "vm_cpu", "vm_mem", "free_cpu", "free_mem", "host_active", "host_rack"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert [(d.granularity, d.members.tolist()) for d in a.deployment_sets] == \
            [(d.granularity, d.members.tolist()) for d in b.deployment_sets]


def _load_or_refuse(load):
    """Load; a SnapshotError is a valid outcome, any other exception (or a numpy warning) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnapshotConsistencyWarning)
        warnings.simplefilter("error", RuntimeWarning)  # numpy overflow / invalid cast
        try:
            snap = load()
        except SnapshotError as err:
            assert err.file and err.path and err.reason
            return
        _assert_loaded_snapshot_is_consistent(snap)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(doc=mutated_real_documents())
def test_mutated_real_snapshot_loads_consistently_or_is_refused(doc):
    _load_or_refuse(lambda: snapshot_from_document(doc, file="mutated.json"))


@FUZZ
@given(data=st.data())
def test_corrupted_bytes_of_a_real_snapshot_load_consistently_or_are_refused(data):
    raw = bytearray(json.dumps(REAL_BASE).encode())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if edit == "flip":
            raw[at] = byte
        elif edit == "insert":
            raw.insert(at, byte)
        else:
            del raw[at]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corrupt.json"
        path.write_bytes(bytes(raw))
        _load_or_refuse(lambda: load_snapshot(path))
