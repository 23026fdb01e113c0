"""VM rescheduling against a real API server with KubeVirt's CRDs.

A real cluster (the first 40 hosts of the bundled snapshot's ``cluster1`` with their 360 VMs) with
anti-affinity sets of both granularities is written as Nodes and Running VMIs (tests/controller/vm_cluster.py);
``--from-cluster`` must rebuild the fleet the file loader gives and plan the same migrations;
``--apply`` must refuse before creating anything without the migration permission, create the
plan's migrations in plan order, each after those it depends on, skip what depends on a failed
one, and leave the VMIs where the plan put them (the executor plays virt-controller).
``kube_cluster`` comes from tests/controller/conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from kubernetes import client

from controller.vm.kubevirt import KUBEVIRT, MIGRATIONS, VMIS, fleet_from_cluster
from controller.vm.planner import plan_migrations
from controller.vm.snapshot_file import load_fleet
from digital_twin.vm.cluster import Cluster
from digital_twin.vm.deployment_sets import with_deployment_sets
from digital_twin.vm.snapshot import GeneralRequirement, Snapshot, load_snapshot, save_snapshot
from envs.vm_sources import REAL_SNAPSHOTS
from tests.controller.vm_cluster import MigrationExecutor, create_fleet_objects, k8s_name

NAMESPACE = "vms"
SELECTOR = "clustergym.io/cluster=cluster1"


def first_hosts(cluster: Cluster, n: int) -> Cluster:
    """The cluster's first ``n`` hosts and the VMs on them, as they are placed."""
    keep = np.flatnonzero(cluster.vm_host < n)
    return dataclasses.replace(
        cluster, host_ids=cluster.host_ids[:n], host_status=cluster.host_status[:n],
        numa_cpu_total=cluster.numa_cpu_total[:n], numa_mem_total=cluster.numa_mem_total[:n],
        host_rack=cluster.host_rack[:n], vm_ids=[cluster.vm_ids[i] for i in keep], vm_type=cluster.vm_type[keep],
        vm_host=cluster.vm_host[keep], vm_placement=cluster.vm_placement[keep], vm_span=cluster.vm_span[keep],
        vm_cpu=cluster.vm_cpu[keep], vm_mem=cluster.vm_mem[keep], vm_allow_migration=cluster.vm_allow_migration[keep],
        deployment_sets=[], meta={})


@pytest.fixture(scope="module")
def vm_cluster(kube_cluster, tmp_path_factory):
    """``(file fleet, snapshot file)`` after writing the fleet into the API server."""
    full = load_snapshot(REAL_SNAPSHOTS / "reset_vm_pm_id_clear2.json")
    cluster = with_deployment_sets(first_hosts(full.cluster("cluster1"), 40), 0, num_host_sets=10, num_rack_sets=3,
                                   hosts_per_rack=6, member_fraction=0.5)
    # k8s object names: ids as the API server will spell them, so the two fleets compare directly.
    cluster = dataclasses.replace(cluster, host_ids=[k8s_name(h) for h in cluster.host_ids],
                                  vm_ids=[f"{NAMESPACE}/{k8s_name(v)}" for v in cluster.vm_ids], meta={})
    path = tmp_path_factory.mktemp("vm_cluster") / "cluster1_40_sets.json"
    save_snapshot(Snapshot.from_clusters([cluster], GeneralRequirement(maximum_migration=20)), path)
    fleet = load_fleet(path)
    kube_cluster.create_namespace(NAMESPACE)
    object_fleet = dataclasses.replace(fleet, vm_ids=[v.split("/", 1)[1] for v in fleet.vm_ids])
    create_fleet_objects(kube_cluster.api_client(), object_fleet, NAMESPACE)
    return fleet, path


def assert_same_fleet(got, want) -> None:
    for name in ("cluster_names", "host_ids", "vm_ids"):
        assert getattr(got, name) == getattr(want, name), name
    for name in ("host_cluster", "numa_cpu_total", "numa_mem_total", "host_active", "vm_cluster", "vm_host",
                 "vm_placement", "vm_span", "vm_cpu", "vm_mem", "vm_allow_migration", "free_cpu", "free_mem"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    # Rack codes: the same partition of hosts (the file's ids vs the labels' values).
    _, got_racks = np.unique(got.host_rack, return_inverse=True)
    _, want_racks = np.unique(want.host_rack, return_inverse=True)
    np.testing.assert_array_equal(got_racks, want_racks)
    canonical = lambda sets: sorted((g, tuple(sorted(m.tolist()))) for g, m in sets)  # noqa: E731
    assert canonical(got.deployment_sets) == canonical(want.deployment_sets)


def reschedule(kube_cluster, *args, token=None, timeout=180):
    kubeconfig = kube_cluster.kubeconfig_for(token, "vm-user") if token else kube_cluster.admin_kubeconfig
    return subprocess.run([sys.executable, "-m", "controller", "reschedule", "--from-cluster", "--kubeconfig",
                           str(kubeconfig), "--namespace", NAMESPACE, "--node-selector", SELECTOR, *args],
                          capture_output=True, text=True, timeout=timeout)


def migrations(kube_cluster) -> list[dict]:
    custom = client.CustomObjectsApi(kube_cluster.api_client())
    return custom.list_namespaced_custom_object(*KUBEVIRT, NAMESPACE, MIGRATIONS)["items"]


def vmi_nodes(kube_cluster) -> dict[str, str]:
    custom = client.CustomObjectsApi(kube_cluster.api_client())
    items = custom.list_namespaced_custom_object(*KUBEVIRT, NAMESPACE, VMIS)["items"]
    return {f"{NAMESPACE}/{v['metadata']['name']}": v["status"]["nodeName"] for v in items}


def test_from_cluster_rebuilds_the_file_fleet_and_its_plan(kube_cluster, vm_cluster, vm_policy, tmp_path):
    fleet, path = vm_cluster
    assert len(fleet.host_ids) == 40 and len(fleet.vm_ids) == 360 and len(fleet.deployment_sets) >= 10
    read = fleet_from_cluster(kube_cluster.api_client(), [NAMESPACE], SELECTOR)
    assert_same_fleet(read, fleet)
    assert read.observation(-1, 20, 0).keys() == fleet.observation(-1, 20, 0).keys()
    for key, value in read.observation(-1, 20, 0).items():
        np.testing.assert_array_equal(value, fleet.observation(-1, 20, 0)[key], err_msg=key)

    out = tmp_path / "plan.json"
    done = reschedule(kube_cluster, "--policy", str(vm_policy.path), "--budget", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "40 hosts, 360 VMs" in done.stdout and "dry-run" in done.stdout
    from_cluster = json.loads(out.read_text())
    from_file = plan_migrations(fleet, vm_policy, budget=20, best_prefix=True).to_json()
    assert from_cluster["migrations"] == from_file["migrations"] and from_file["migrations"]
    assert not migrations(kube_cluster)  # dry-run created nothing


def test_apply_without_the_migration_permission_creates_nothing(kube_cluster, vm_cluster, vm_policy, tmp_path):
    api = kube_cluster.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    # Read access only: what --from-cluster needs, not what --apply needs.
    rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                              "metadata": {"name": "vm-reader"},
                              "rules": [{"apiGroups": ["kubevirt.io"], "resources": [VMIS], "verbs": ["get", "list"]},
                                        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]})
    rbac.create_cluster_role_binding({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                      "metadata": {"name": "vm-reader"},
                                      "subjects": [{"kind": "User", "name": "other",
                                                    "apiGroup": "rbac.authorization.k8s.io"}],
                                      "roleRef": {"kind": "ClusterRole", "name": "vm-reader",
                                                  "apiGroup": "rbac.authorization.k8s.io"}})
    out = tmp_path / "plan.json"
    done = reschedule(kube_cluster, "--policy", str(vm_policy.path), "--apply", "--out", str(out),
                      token=kube_cluster.user_tokens["other"])
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()
    assert len(line) == 1 and "may not create virtualmachineinstancemigrations.kubevirt.io in namespace vms" in line[0]
    assert "nothing was created" in line[0]
    assert json.loads(out.read_text())["migrations"]  # the plan is kept for review
    assert not migrations(kube_cluster)


def test_apply_runs_the_plan_in_dependency_order(kube_cluster, vm_cluster, vm_policy, tmp_path):
    fleet, _ = vm_cluster
    before = vmi_nodes(kube_cluster)
    read = fleet_from_cluster(kube_cluster.api_client(), [NAMESPACE], SELECTOR)
    plan = plan_migrations(read, vm_policy, budget=20, best_prefix=True)
    dependent = [m for m in plan.migrations if m.after]
    assert dependent and len(plan.migrations) >= 5
    # Fail the first migration others depend on: those (transitively) must be skipped, the rest run.
    failing = plan.migrations[dependent[0].after[0]]
    blocked = {failing.index}
    for m in plan.migrations:
        if set(m.after) & blocked:
            blocked.add(m.index)
    out = tmp_path / "plan.json"
    with MigrationExecutor(kube_cluster.api_client(), NAMESPACE, fail={failing.vm.split("/", 1)[1]}) as executor:
        done = reschedule(kube_cluster, "--policy", str(vm_policy.path), "--budget", "20", "--apply",
                          "--out", str(out))
    assert done.returncode == 1, done.stdout + done.stderr  # not every migration succeeded
    applied = {r["index"]: r for r in json.loads(out.read_text())["applied"]}
    doc = json.loads(out.read_text())
    assert [m["vm"] for m in doc["migrations"]] == [m.vm for m in plan.migrations]  # the plan made above
    assert applied[failing.index]["outcome"] == "failed"
    assert {i for i, r in applied.items() if r["outcome"] == "skipped"} == blocked - {failing.index}
    assert all(r["outcome"] == "succeeded" for i, r in applied.items() if i not in blocked)

    created = migrations(kube_cluster)
    assert len(created) == len(plan.migrations) - len(blocked) + 1
    assert all(m["spec"]["addedNodeSelector"] == {"kubernetes.io/hostname": plan.migrations[
        int(m["metadata"]["annotations"]["clustergym.io/plan-index"])].to_host} for m in created)
    created_lines = re.findall(r"^migration (\d+): \S+ \S+ -> \S+ \(", done.stdout, flags=re.M)
    order = [int(i) for i in created_lines]
    assert order == sorted(order) and len(order) == len(created)  # created in plan order
    seen_at = {index: t for index, _, _, t in executor.seen}
    for m in plan.migrations:
        if m.index in seen_at:  # created only after what it depends on had finished
            assert all(executor.finished[i] <= seen_at[m.index] for i in m.after)

    after = vmi_nodes(kube_cluster)
    expected = dict(before)
    for m in plan.migrations:
        if m.index not in blocked:
            expected[m.vm] = m.to_host
    assert after == expected

    # The cluster moved on: a second run plans on the new placement and, with nothing failing, succeeds.
    now = fleet_from_cluster(kube_cluster.api_client(), [NAMESPACE], SELECTOR)
    with MigrationExecutor(kube_cluster.api_client(), NAMESPACE):
        done = reschedule(kube_cluster, "--policy", str(vm_policy.path), "--budget", "5", "--apply",
                          "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    second = json.loads(out.read_text())
    assert second["fragment_rate_before"] == pytest.approx(now.fragment_rates()[0], abs=1e-12)
    assert [r["outcome"] for r in second["applied"]] == ["succeeded"] * len(second["migrations"]) != []
    expected = dict(after)
    for m in second["migrations"]:  # a VM the plan moves twice ends where its last move puts it
        expected[m["vm"]] = m["to_host"]
    assert vmi_nodes(kube_cluster) == expected
