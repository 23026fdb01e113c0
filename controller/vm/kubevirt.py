"""VM rescheduling on a KubeVirt cluster: the fleet from Nodes and VMIs, migrations as VMIM objects.

**Reading the cluster** (:func:`fleet_from_cluster`, ``reschedule --from-cluster``). Hosts are
the Nodes (optionally those matching ``--node-selector``), VMs the KubeVirt
``VirtualMachineInstance``s in phase ``Running`` with a ``status.nodeName`` among them:

=====================  ==========================================================================
fleet field            where it comes from
=====================  ==========================================================================
cluster                Node label ``clustergym.io/cluster`` (default ``default``); a VM's is its Node's
host order             natural order of Node names within each cluster (``node-2`` before ``node-10``)
NUMA vCPU per node     Node labels ``clustergym.io/numa0-cpu`` / ``numa1-cpu``; default: allocatable
                       ``cpu`` split evenly over two NUMA nodes
NUMA memory per node   labels ``clustergym.io/numa0-memory-mb`` / ``numa1-memory-mb``; default: allocatable
                       ``hugepages-1Gi`` (else ``memory``) in MiB, split evenly
active                 schedulable (not cordoned) and condition ``Ready`` is ``True``
rack                   Node label ``clustergym.io/rack`` (default: ``topology.kubernetes.io/zone``, else none)
VM id, order           ``namespace/name``, natural order within each cluster
vCPU                   ``spec.domain.cpu`` sockets x cores x threads; else ``resources.requests.cpu``
memory (MiB)           ``spec.domain.memory.guest``; else ``spec.domain.resources.requests.memory``
NUMA placement         annotation ``clustergym.io/numa-nodes``: ``"0"``, ``"1"`` or ``"0,1"`` (split
                       evenly); default: node 0 if the VM fits one NUMA node of its host, else both
migratable             condition ``LiveMigratable`` is ``True`` and annotation
                       ``clustergym.io/allow-migration`` is not ``"false"``
anti-affinity          each ``spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution``
                       term with ``labelSelector.matchLabels``: the VMIs of its namespace that match
                       form one set; ``topologyKey`` ``kubernetes.io/hostname`` is host granularity,
                       ``clustergym.io/rack`` or ``topology.kubernetes.io/zone`` rack granularity
=====================  ==========================================================================

KubeVirt itself does not report which host NUMA node a VMI's vCPUs are pinned to; the annotation
is where a node agent (or an operator) records it.

**Migrating** (:class:`MigrationRunner`, ``--apply``). Each planned move becomes a
``kubevirt.io/v1`` ``VirtualMachineInstanceMigration`` with ``spec.vmiName`` and
``spec.addedNodeSelector: {kubernetes.io/hostname: <to_host>}`` (KubeVirt >= 1.6), created in plan
order; one that depends on earlier ones (``after``, see :mod:`controller.vm.planner`) waits until
they succeed, and is skipped if one failed. The destination NUMA node is the host's to choose
(KubeVirt's dedicated-CPU placement); the plan records the one the policy intended.
:func:`check_permissions` asks the API server (SelfSubjectAccessReview) before anything is created.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from controller.vm.fleet import Fleet
from controller.vm.planner import Plan

KUBEVIRT = ("kubevirt.io", "v1")
VMIS, MIGRATIONS = "virtualmachineinstances", "virtualmachineinstancemigrations"
CLUSTER_LABEL, RACK_LABEL = "clustergym.io/cluster", "clustergym.io/rack"
ZONE_LABEL, HOSTNAME_LABEL = "topology.kubernetes.io/zone", "kubernetes.io/hostname"
NUMA_CPU_LABELS = ("clustergym.io/numa0-cpu", "clustergym.io/numa1-cpu")
NUMA_MEMORY_LABELS = ("clustergym.io/numa0-memory-mb", "clustergym.io/numa1-memory-mb")
NUMA_ANNOTATION, MIGRATABLE_ANNOTATION = "clustergym.io/numa-nodes", "clustergym.io/allow-migration"
PLAN_LABEL = "clustergym.io/plan"
DONE_PHASES = {"Succeeded": True, "Failed": False}

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"": 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


class ClusterReadError(ValueError):
    """An object of the cluster cannot be read into the fleet (names the object and the field)."""


def quantity(text: Any, what: str) -> float:
    """A Kubernetes quantity (``"88"``, ``"500m"``, ``"16Gi"``) as a number of base units."""
    match = _QUANTITY.match(str(text).strip())
    unit = match.group(2) if match else None
    if match is None or (unit not in _BINARY and unit not in _DECIMAL):
        raise ClusterReadError(f"{what}: {text!r} is not a Kubernetes quantity")
    return float(match.group(1)) * (_BINARY.get(unit) or _DECIMAL[unit])


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _get(obj: dict, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _condition(obj: dict, kind: str) -> str | None:
    for condition in _get(obj, "status", "conditions", default=[]) or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _numa_pair(labels: dict, keys: tuple[str, str], total: float, what: str) -> list[float]:
    given = [labels.get(k) for k in keys]
    if all(v is None for v in given):
        return [total / 2, total / 2]
    if any(v is None for v in given):
        raise ClusterReadError(f"{what}: give both labels {keys[0]} and {keys[1]}, or neither")
    try:
        return [float(v) for v in given]
    except ValueError:
        raise ClusterReadError(f"{what}: labels {keys} must be numbers, got {given}") from None


def _vm_cpu(vmi: dict, what: str) -> int:
    cpu = _get(vmi, "spec", "domain", "cpu")
    if isinstance(cpu, dict) and any(k in cpu for k in ("sockets", "cores", "threads")):
        return int(cpu.get("sockets", 1)) * int(cpu.get("cores", 1)) * int(cpu.get("threads", 1))
    request = _get(vmi, "spec", "domain", "resources", "requests", "cpu")
    if request is None:
        raise ClusterReadError(f"{what}: no spec.domain.cpu and no spec.domain.resources.requests.cpu")
    return int(round(quantity(request, f"{what} requests.cpu")))


def _vm_memory_mb(vmi: dict, what: str) -> float:
    memory = _get(vmi, "spec", "domain", "memory", "guest") or \
        _get(vmi, "spec", "domain", "resources", "requests", "memory")
    if memory is None:
        raise ClusterReadError(f"{what}: no spec.domain.memory.guest and no spec.domain.resources.requests.memory")
    return quantity(memory, f"{what} memory") / 2**20


def _racks(values: list[str | None]) -> np.ndarray:
    """Rack codes as the snapshot loader makes them: the ids if all are integers, else order of appearance."""
    if values and all(v is not None and re.fullmatch(r"-?[0-9]{1,18}", v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    codes = {v: i for i, v in enumerate(dict.fromkeys(str(v) for v in values))}
    return np.array([codes[str(v)] for v in values], dtype=np.int64)


def fleet_from_cluster(api_client, namespaces: list[str] | None = None, node_selector: str | None = None,
                       budget: int | None = None) -> Fleet:
    """The fleet the cluster runs now (mapping in the module docstring).

    Args:
        api_client: a ``kubernetes.client.ApiClient``.
        namespaces: read VMIs of these namespaces only (default: all).
        node_selector: a label selector for the Nodes that are hosts (default: all).
        budget: the fleet's migration budget.

    Raises:
        ClusterReadError: an object that cannot be read (named), or no Nodes.
    """
    from kubernetes import client

    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    nodes = core.list_node(label_selector=node_selector or "", _preload_content=False)
    nodes = [n for n in _json(nodes)["items"]]
    if not nodes:
        raise ClusterReadError(f"no Nodes{f' match {node_selector!r}' if node_selector else ''}")
    if namespaces:
        vmis = [v for ns in namespaces for v in custom.list_namespaced_custom_object(*KUBEVIRT, ns, VMIS)["items"]]
    else:
        vmis = custom.list_cluster_custom_object(*KUBEVIRT, VMIS)["items"]

    hosts = []
    for node in nodes:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        what = f"Node {name}"
        allocatable = _get(node, "status", "allocatable", default={}) or {}
        cpu_total = quantity(allocatable.get("cpu", "0"), f"{what} allocatable.cpu")
        memory = allocatable.get("hugepages-1Gi")
        if memory is None or quantity(memory, what) == 0:
            memory = allocatable.get("memory", "0")
        cpu = _numa_pair(labels, NUMA_CPU_LABELS, cpu_total, what)
        mem = _numa_pair(labels, NUMA_MEMORY_LABELS, quantity(memory, f"{what} allocatable memory") / 2**20, what)
        active = not _get(node, "spec", "unschedulable", default=False) and _condition(node, "Ready") == "True"
        hosts.append(dict(name=name, cluster=labels.get(CLUSTER_LABEL, "default"), cpu=[int(c) for c in cpu], mem=mem,
                          active=active, rack=labels.get(RACK_LABEL, labels.get(ZONE_LABEL))))
    cluster_names = sorted({h["cluster"] for h in hosts}, key=natural_key)
    hosts.sort(key=lambda h: (cluster_names.index(h["cluster"]), natural_key(h["name"])))
    host_index = {h["name"]: i for i, h in enumerate(hosts)}
    numa_cpu = np.array([h["cpu"] for h in hosts], dtype=np.int64)

    vms = []
    for vmi in vmis:
        meta = vmi["metadata"]
        vm_id = f"{meta['namespace']}/{meta['name']}"
        node = _get(vmi, "status", "nodeName")
        if _get(vmi, "status", "phase") != "Running" or node not in host_index:
            continue
        what = f"VirtualMachineInstance {vm_id}"
        h = host_index[node]
        cpu, mem = _vm_cpu(vmi, what), _vm_memory_mb(vmi, what)
        annotations = meta.get("annotations") or {}
        nodes_text = annotations.get(NUMA_ANNOTATION)
        if nodes_text is None:
            numa = [0] if cpu <= numa_cpu[h].min() else [0, 1]
        elif nodes_text.replace(" ", "") in ("0", "1", "0,1"):
            numa = [int(x) for x in nodes_text.replace(" ", "").split(",")]
        else:
            raise ClusterReadError(f"{what}: annotation {NUMA_ANNOTATION} is {nodes_text!r}; use 0, 1 or 0,1")
        migratable = _condition(vmi, "LiveMigratable") == "True" and \
            str(annotations.get(MIGRATABLE_ANNOTATION, "true")).lower() != "false"
        vms.append(dict(id=vm_id, namespace=meta["namespace"], labels=meta.get("labels") or {}, host=h,
                        cluster=hosts[h]["cluster"], cpu=cpu, mem=mem, numa=numa, migratable=migratable,
                        terms=_get(vmi, "spec", "affinity", "podAntiAffinity",
                                   "requiredDuringSchedulingIgnoredDuringExecution", default=[]) or []))
    vms.sort(key=lambda v: (cluster_names.index(v["cluster"]), natural_key(v["id"])))

    vm_cpu = np.zeros((len(vms), 2), np.int64)
    vm_mem = np.zeros((len(vms), 2), np.float64)
    for i, vm in enumerate(vms):
        if vm["numa"] == [0, 1]:  # split evenly, node 0 takes the odd vCPU
            vm_cpu[i] = [vm["cpu"] - vm["cpu"] // 2, vm["cpu"] // 2]
            vm_mem[i] = [vm["mem"] / 2, vm["mem"] / 2]
        else:
            vm_cpu[i, 0], vm_mem[i, 0] = vm["cpu"], vm["mem"]
    try:
        return _fleet(cluster_names, hosts, numa_cpu, vms, vm_cpu, vm_mem, budget)
    except ValueError as err:  # e.g. VMIs that overfill a NUMA node by the annotations
        raise ClusterReadError(f"the Nodes and VMIs do not form a valid fleet: {err}") from None


def _fleet(cluster_names, hosts, numa_cpu, vms, vm_cpu, vm_mem, budget) -> Fleet:
    return Fleet(
        cluster_names=cluster_names,
        host_ids=[h["name"] for h in hosts],
        host_cluster=np.array([cluster_names.index(h["cluster"]) for h in hosts], dtype=np.int64),
        numa_cpu_total=numa_cpu,
        numa_mem_total=np.array([h["mem"] for h in hosts], dtype=np.float64),
        host_active=np.array([h["active"] for h in hosts], dtype=bool),
        host_rack=_racks([h["rack"] for h in hosts]),
        vm_ids=[v["id"] for v in vms],
        vm_cluster=np.array([cluster_names.index(v["cluster"]) for v in vms], dtype=np.int64),
        vm_host=np.array([v["host"] for v in vms], dtype=np.int64),
        vm_placement=np.array([v["numa"][0] if len(v["numa"]) == 1 else 0 for v in vms], dtype=np.int64),
        vm_span=np.array([len(v["numa"]) for v in vms], dtype=np.int64),
        vm_cpu=vm_cpu, vm_mem=vm_mem,
        vm_allow_migration=np.array([v["migratable"] for v in vms], dtype=bool),
        deployment_sets=_anti_affinity_sets(vms),
        budget=budget,
    )


def _anti_affinity_sets(vms: list[dict]) -> list[tuple[str, np.ndarray]]:
    """One set per distinct (namespace, matchLabels, granularity) among the VMIs' required anti-affinity terms."""
    granularity_of = {HOSTNAME_LABEL: "host", RACK_LABEL: "rack", ZONE_LABEL: "rack"}
    sets: dict[tuple, np.ndarray] = {}
    for vm in vms:
        for term in vm["terms"]:
            granularity = granularity_of.get(term.get("topologyKey"))
            selector = _get(term, "labelSelector", "matchLabels")
            if granularity is None or not selector:
                continue  # other topologies and expression selectors do not constrain a host or rack
            key = (vm["namespace"], tuple(sorted(selector.items())), granularity)
            if key not in sets:
                sets[key] = np.array([i for i, other in enumerate(vms) if other["namespace"] == vm["namespace"]
                                      and all(other["labels"].get(k) == v for k, v in selector.items())], np.int64)
    return [(granularity, members) for (_, _, granularity), members in sets.items() if members.size > 1]


def _json(response) -> dict:
    import json

    return json.loads(response.data)


# ---------------------------------------------------------------------- migrations
def check_permissions(api_client, namespaces: list[str]) -> str | None:
    """Why the credentials cannot create migrations in ``namespaces`` (None: they can)."""
    from kubernetes import client

    auth = client.AuthorizationV1Api(api_client)
    for ns in sorted(set(namespaces)):
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(group=KUBEVIRT[0], resource=MIGRATIONS, verb="create",
                                                            namespace=ns)))
        status = auth.create_self_subject_access_review(review).status
        if not status.allowed:
            return (f"the credentials may not create {MIGRATIONS}.kubevirt.io in namespace {ns} (apply "
                    "deploy/vm-migrations.yaml, or bind KubeVirt's kubevirt.io:migrate ClusterRole); nothing was created")
    return None


@dataclass
class MigrationResult:
    index: int
    vm: str
    to_host: str
    outcome: str  # succeeded, failed, timed_out, skipped, error
    name: str | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class MigrationRunner:
    """Creates a plan's migrations in order, each after the earlier ones it depends on.

    Args:
        api_client: a ``kubernetes.client.ApiClient``.
        plan_id: the value of the ``clustergym.io/plan`` label on every migration created.
        timeout_s: how long one migration may take before it counts as failed (it is left in place).
        poll_s: how often migrations' phases are read.
        parallel: most migrations in flight at once (KubeVirt's own default is 5 per cluster).
    """

    api_client: Any
    plan_id: str
    timeout_s: float = 600.0
    poll_s: float = 1.0
    parallel: int = 5
    log: Callable[[str], None] = print
    results: list[MigrationResult] = field(default_factory=list)

    def apply(self, plan: Plan) -> list[MigrationResult]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        custom = client.CustomObjectsApi(self.api_client)
        results = [MigrationResult(m.index, m.vm, m.to_host, "pending") for m in plan.migrations]
        started: dict[int, float] = {}
        for move in plan.migrations:
            while True:  # wait for what this one depends on, and for a free slot
                self._poll(custom, plan, results, started)
                deps = [results[i].outcome for i in move.after]
                if any(d not in ("pending", "running", "succeeded") for d in deps):
                    failed = [i for i in move.after if results[i].outcome not in ("pending", "running", "succeeded")]
                    results[move.index].outcome = "skipped"
                    results[move.index].detail = f"depends on migration(s) {failed}, which did not succeed"
                    self.log(f"migration {move.index} ({move.vm} -> {move.to_host}) skipped: "
                             f"{results[move.index].detail}")
                    break
                running = sum(r.outcome == "running" for r in results)
                if all(d == "succeeded" for d in deps) and running < self.parallel:
                    self._create(custom, move, results[move.index], ApiException)
                    if results[move.index].outcome == "running":
                        started[move.index] = time.monotonic()
                    break
                time.sleep(self.poll_s)
        while any(r.outcome == "running" for r in results):
            time.sleep(self.poll_s)
            self._poll(custom, plan, results, started)
        self.results = results
        return results

    def _create(self, custom, move, result: MigrationResult, api_exception) -> None:
        namespace, name = move.vm.split("/", 1)
        body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": {"generateName": f"{name}-to-{move.to_host}-"[:58], "namespace": namespace,
                             "labels": {PLAN_LABEL: self.plan_id},
                             "annotations": {"clustergym.io/plan-index": str(move.index),
                                             "clustergym.io/numa-nodes": ",".join(map(str, move.to_numa))}},
                "spec": {"vmiName": name, "addedNodeSelector": {HOSTNAME_LABEL: move.to_host}}}
        try:
            created = custom.create_namespaced_custom_object(*KUBEVIRT, namespace, MIGRATIONS, body)
        except api_exception as err:
            result.outcome, result.detail = "error", f"create refused: HTTP {err.status} {err.reason}"
            self.log(f"migration {move.index} ({move.vm} -> {move.to_host}): {result.detail}")
            return
        except Exception as err:  # noqa: BLE001 -- timeouts, connection errors: reported, the rest goes on
            result.outcome, result.detail = "error", f"create failed: {type(err).__name__}: {str(err)[:200]}"
            self.log(f"migration {move.index} ({move.vm} -> {move.to_host}): {result.detail}")
            return
        result.outcome, result.name = "running", created["metadata"]["name"]
        self.log(f"migration {move.index}: {move.vm} {move.from_host} -> {move.to_host} ({result.name})")

    def _poll(self, custom, plan: Plan, results: list[MigrationResult], started: dict[int, float]) -> None:
        for result in results:
            if result.outcome != "running":
                continue
            namespace = plan.migrations[result.index].vm.split("/", 1)[0]
            try:
                obj = custom.get_namespaced_custom_object(*KUBEVIRT, namespace, MIGRATIONS, result.name)
            except Exception as err:  # noqa: BLE001 -- transient API errors: poll again
                self.log(f"migration {result.index}: reading {result.name} failed ({err}); retrying")
                continue
            phase = _get(obj, "status", "phase")
            elapsed = time.monotonic() - started[result.index]
            if phase in DONE_PHASES:
                result.outcome = "succeeded" if DONE_PHASES[phase] else "failed"
                result.seconds = round(elapsed, 2)
                self.log(f"migration {result.index} ({result.name}): {phase} after {elapsed:.1f} s")
            elif elapsed > self.timeout_s:
                result.outcome, result.seconds = "timed_out", round(elapsed, 2)
                result.detail = f"still {phase or 'without a phase'} after {self.timeout_s:g} s (left in place)"
                self.log(f"migration {result.index} ({result.name}): {result.detail}")
