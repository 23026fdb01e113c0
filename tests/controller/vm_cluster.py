"""A fleet written into a real API server as Nodes and KubeVirt VMIs, and a stand-in for virt-controller.

:func:`create_fleet_objects` writes each host as a Node and each VM as a Running
``VirtualMachineInstance`` the way :mod:`controller.vm.kubevirt` documents it reads them (labels
for the cluster, rack and NUMA sizes; the NUMA-nodes annotation; ``LiveMigratable``; one
required pod anti-affinity term per deployment set), so ``--from-cluster`` can be checked
against the file the fleet came from.

:class:`MigrationExecutor` does what KubeVirt's virt-controller does to a
``VirtualMachineInstanceMigration``, reduced to its effect on the API objects: after a short
delay it moves the VMI to the node ``spec.addedNodeSelector`` names (``status.nodeName``; its
NUMA-nodes annotation becomes the plan's, as a node agent would record the new pinning) and sets
the migration's ``status.phase`` to ``Succeeded``, or ``Failed`` for the VMIs it is told to fail.
No VM runs anywhere: the tests check the controller's API traffic against a real API server.
"""

from __future__ import annotations

import threading
import time

from controller.vm.kubevirt import HOSTNAME_LABEL, KUBEVIRT, MIGRATIONS, NUMA_ANNOTATION, VMIS


def k8s_name(identifier: str) -> str:
    """``pm_12`` -> ``pm-12``: snapshot ids as DNS-1123 object names."""
    return identifier.lower().replace("_", "-")


def create_fleet_objects(api_client, fleet, namespace: str) -> None:
    """Nodes and Running VMIs (in ``namespace``) for every host and VM of ``fleet``."""
    from kubernetes import client

    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    for h, host in enumerate(fleet.host_ids):
        name = k8s_name(host)
        cpu, mem = fleet.numa_cpu_total[h], fleet.numa_mem_total[h]
        labels = {HOSTNAME_LABEL: name, "clustergym.io/cluster": fleet.cluster_names[fleet.host_cluster[h]],
                  "clustergym.io/rack": str(int(fleet.host_rack[h])),
                  "clustergym.io/numa0-cpu": str(int(cpu[0])), "clustergym.io/numa1-cpu": str(int(cpu[1])),
                  "clustergym.io/numa0-memory-mb": f"{mem[0]:g}", "clustergym.io/numa1-memory-mb": f"{mem[1]:g}"}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                "spec": {"unschedulable": not bool(fleet.host_active[h])}}
        core.create_node(node)
        status = {"status": {
            "capacity": {"cpu": str(int(cpu.sum())), "memory": f"{int(mem.sum())}Mi", "pods": "110"},
            "allocatable": {"cpu": str(int(cpu.sum())), "memory": f"{int(mem.sum())}Mi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
        core.patch_node_status(name, status)

    sets_of: dict[int, list[tuple[int, str]]] = {}
    for k, (granularity, members) in enumerate(fleet.deployment_sets):
        for vm in members.tolist():
            sets_of.setdefault(vm, []).append((k, granularity))
    for v, vm_id in enumerate(fleet.vm_ids):
        name = k8s_name(vm_id)
        memory = float(fleet.vm_mem[v].sum())
        assert memory == int(memory), f"{vm_id}: memory {memory} MB is not whole MiB"
        split = fleet.vm_span[v] == 2
        numa = "0,1" if split else str(int(fleet.vm_placement[v]))
        sets = sets_of.get(v, [])
        body = {
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {f"clustergym.io/set-{k}": "member" for k, _ in sets},
                         "annotations": {"clustergym.io/numa-nodes": numa}},
            "spec": {"domain": {"cpu": {"cores": int(fleet.vm_cpu[v].sum()), "sockets": 1, "threads": 1,
                                        "dedicatedCpuPlacement": True},
                                "memory": {"guest": f"{int(memory)}Mi"}, "devices": {}}},
        }
        if sets:
            body["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {f"clustergym.io/set-{k}": "member"}},
                 "topologyKey": HOSTNAME_LABEL if granularity == "host" else "clustergym.io/rack"}
                for k, granularity in sets]}}
        custom.create_namespaced_custom_object(*KUBEVIRT, namespace, VMIS, body)
        migratable = "True" if fleet.vm_allow_migration[v] else "False"
        custom.patch_namespaced_custom_object_status(*KUBEVIRT, namespace, VMIS, name, {"status": {
            "phase": "Running", "nodeName": k8s_name(fleet.host_ids[fleet.vm_host[v]]),
            "conditions": [{"type": "LiveMigratable", "status": migratable}]}})


class MigrationExecutor:
    """Completes the migrations created in ``namespace`` (see the module docstring), in a thread.

    Attributes:
        seen: ``(plan index, VMI, target node, time)`` of each migration, in the order they were found.
        fail: VMI names whose migrations fail.
    """

    def __init__(self, api_client, namespace: str, delay_s: float = 0.3, fail: set[str] | None = None):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.namespace, self.delay_s, self.fail = namespace, delay_s, set(fail or ())
        self.seen: list[tuple[int, str, str, float]] = []
        self.finished: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MigrationExecutor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        pending: dict[str, tuple[dict, float]] = {}
        known: set[str] = set()
        while not self._stop.is_set():
            for item in self.custom.list_namespaced_custom_object(*KUBEVIRT, self.namespace, MIGRATIONS)["items"]:
                name = item["metadata"]["name"]
                if name not in known:
                    known.add(name)
                    if (item.get("status") or {}).get("phase"):
                        continue  # finished before this executor started
                    index = int(item["metadata"]["annotations"]["clustergym.io/plan-index"])
                    target = item["spec"]["addedNodeSelector"][HOSTNAME_LABEL]
                    self.seen.append((index, item["spec"]["vmiName"], target, time.monotonic()))
                    pending[name] = (item, time.monotonic() + self.delay_s)
            now = time.monotonic()
            for name, (item, due) in list(pending.items()):
                if now < due:
                    continue
                vmi, target = item["spec"]["vmiName"], item["spec"]["addedNodeSelector"][HOSTNAME_LABEL]
                ok = vmi not in self.fail
                if ok:  # the VMI runs on the target now, pinned to the NUMA node(s) the plan intended
                    numa = item["metadata"]["annotations"]["clustergym.io/numa-nodes"]
                    self.custom.patch_namespaced_custom_object(
                        *KUBEVIRT, self.namespace, VMIS, vmi, {"metadata": {"annotations": {NUMA_ANNOTATION: numa}}})
                    self.custom.patch_namespaced_custom_object_status(
                        *KUBEVIRT, self.namespace, VMIS, vmi, {"status": {"nodeName": target}})
                self.custom.patch_namespaced_custom_object_status(
                    *KUBEVIRT, self.namespace, MIGRATIONS, name,
                    {"status": {"phase": "Succeeded" if ok else "Failed"}})
                self.finished[int(item["metadata"]["annotations"]["clustergym.io/plan-index"])] = time.monotonic()
                del pending[name]
            self._stop.wait(0.05)
