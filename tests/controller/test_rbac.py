"""The shipped manifests, applied to a real API server, give the controller's ServiceAccount exactly
what it needs: scale in its namespace only (deploy/rbac.yaml); VMI migrations only once
deploy/vm-migrations.yaml is applied.

The identity is the manifests' own ServiceAccount with a token from the TokenRequest API, so the
RoleBinding is tested as shipped (only its namespace rewritten). ``kube_cluster`` comes from
tests/controller/conftest.py.
"""

from __future__ import annotations

import time

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.kube import ApiFailure, DeploymentScaler
from tests.controller.kube_server import ROOT, create_deployments

KUBEVIRT = ("kubevirt.io", "v1")
MIGRATIONS = "virtualmachineinstancemigrations"


def manifests(name: str, namespace: str, suffix: str = "") -> list[dict]:
    """deploy/NAME's objects with namespace `clustergym` rewritten to ``namespace``; cluster-scoped
    objects get ``suffix`` on their names, so tests do not collide."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / name).read_text()))
    for doc in docs:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
        elif suffix:
            doc["metadata"]["name"] += suffix
            if doc["kind"] == "ClusterRoleBinding":
                doc["roleRef"]["name"] += suffix
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


def apply(cluster, docs: list[dict]) -> None:
    api = cluster.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    create = {"ServiceAccount": lambda d: core.create_namespaced_service_account(d["metadata"]["namespace"], d),
              "Role": lambda d: rbac.create_namespaced_role(d["metadata"]["namespace"], d),
              "RoleBinding": lambda d: rbac.create_namespaced_role_binding(d["metadata"]["namespace"], d),
              "ClusterRole": rbac.create_cluster_role, "ClusterRoleBinding": rbac.create_cluster_role_binding}
    for doc in docs:
        create[doc["kind"]](doc)


def service_account_token(cluster, namespace: str, name: str = "clustergym-controller") -> str:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=["https://kubernetes.default.svc"], expiration_seconds=3600))
    return client.CoreV1Api(cluster.api_client()).create_namespaced_service_account_token(
        name, namespace, request).status.token


def status_of(call) -> int:
    try:
        call()
    except ApiException as err:
        return err.status
    return 200


def until_allowed(call, timeout_s: float = 10.0):
    """RBAC reaches the authorizer through a watch: a new binding takes effect within moments."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except ApiException as err:
            if err.status != 403 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_the_role_scales_in_its_namespace_and_nowhere_else(kube_cluster):
    for ns in ("rbac-app", "rbac-elsewhere"):
        kube_cluster.create_namespace(ns)
        create_deployments(client.AppsV1Api(kube_cluster.api_client()), ns, {"frontend": 2, "cart": 1})
    apply(kube_cluster, manifests("rbac.yaml", "rbac-app"))
    as_controller = kube_cluster.api_client(service_account_token(kube_cluster, "rbac-app"))
    apps = client.AppsV1Api(as_controller)

    assert until_allowed(lambda: apps.read_namespaced_deployment_scale("frontend", "rbac-app")).spec.replicas == 2
    apps.patch_namespaced_deployment_scale("cart", "rbac-app", {"spec": {"replicas": 2}})
    assert [d.metadata.name for d in apps.list_namespaced_deployment("rbac-app").items] == ["cart", "frontend"]
    scaler = DeploymentScaler(as_controller, "rbac-app")
    assert {k: v.replicas for k, v in scaler.read(["frontend", "cart"]).items()} == {"frontend": 2, "cart": 2}
    scaler.scale("frontend", 3)
    assert apps.read_namespaced_deployment_scale("frontend", "rbac-app").spec.replicas == 3

    # Elsewhere: 403, through the client and through the controller's scaler (reported, not retried).
    for call in (lambda: apps.read_namespaced_deployment_scale("frontend", "rbac-elsewhere"),
                 lambda: apps.patch_namespaced_deployment_scale("frontend", "rbac-elsewhere",
                                                                {"spec": {"replicas": 5}}),
                 lambda: apps.list_deployment_for_all_namespaces()):
        assert status_of(call) == 403
    elsewhere = DeploymentScaler(as_controller, "rbac-elsewhere", sleep=lambda s: None)
    with pytest.raises(ApiFailure) as err:
        elsewhere.read(["frontend"])
    assert err.value.status == 403 and err.value.reason == "api_forbidden"
    with pytest.raises(ApiFailure) as err:
        elsewhere.scale("frontend", 5)
    assert err.value.status == 403
    # Nothing beyond scale: the Deployment itself cannot be changed nor deleted, pods not even read.
    for call in (lambda: apps.patch_namespaced_deployment("frontend", "rbac-app", {"spec": {"paused": True}}),
                 lambda: apps.delete_namespaced_deployment("cart", "rbac-app"),
                 lambda: client.CoreV1Api(as_controller).list_namespaced_pod("rbac-app")):
        assert status_of(call) == 403
    # A user without the binding gets nothing.
    with pytest.raises(ApiFailure) as err:
        DeploymentScaler(kube_cluster.api_client(kube_cluster.user_tokens["other"]), "rbac-app").read(["frontend"])
    assert err.value.status == 403
    admin = client.AppsV1Api(kube_cluster.api_client())
    assert [admin.read_namespaced_deployment_scale(d, "rbac-elsewhere").spec.replicas for d in ("frontend", "cart")] \
        == [2, 1]


def test_migrations_are_forbidden_until_vm_migrations_yaml_is_applied(kube_cluster):
    ns = "rbac-vms"
    kube_cluster.create_namespace(ns)
    apply(kube_cluster, manifests("rbac.yaml", ns))
    admin = client.CustomObjectsApi(kube_cluster.api_client())
    admin.create_namespaced_custom_object(*KUBEVIRT, ns, "virtualmachineinstances", {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "vm-0"},
        "spec": {"domain": {"devices": {}}}})
    as_controller = kube_cluster.api_client(service_account_token(kube_cluster, ns))
    custom, core = client.CustomObjectsApi(as_controller), client.CoreV1Api(as_controller)
    migration = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                 "metadata": {"name": "move-vm-0"},
                 "spec": {"vmiName": "vm-0", "addedNodeSelector": {"kubernetes.io/hostname": "node-2"}}}

    def create():
        return custom.create_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS, migration)

    reads = [lambda: custom.list_namespaced_custom_object(*KUBEVIRT, ns, "virtualmachineinstances"),
             lambda: custom.get_namespaced_custom_object(*KUBEVIRT, ns, "virtualmachineinstances", "vm-0"),
             lambda: custom.list_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS),
             lambda: core.list_node()]
    assert status_of(create) == 403
    assert [status_of(call) for call in reads] == [403] * len(reads)
    assert not admin.list_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS)["items"]  # nothing was created

    docs = manifests("vm-migrations.yaml", ns, suffix=f"-{ns}")
    apply(kube_cluster, docs)
    try:
        assert until_allowed(create)["spec"]["vmiName"] == "vm-0"
        assert [status_of(call) for call in reads] == [200] * len(reads)
        assert status_of(lambda: custom.get_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS, "move-vm-0")) == 200
        # Still least privilege: no changing migrations or VMIs, no writing Nodes.
        for call in (lambda: custom.patch_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS, "move-vm-0",
                                                                   {"spec": {"vmiName": "vm-1"}}),
                     lambda: custom.patch_namespaced_custom_object_status(*KUBEVIRT, ns, MIGRATIONS, "move-vm-0",
                                                                          {"status": {"phase": "Succeeded"}}),
                     lambda: custom.delete_namespaced_custom_object(*KUBEVIRT, ns, "virtualmachineinstances", "vm-0"),
                     lambda: core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})):
            assert status_of(call) == 403
        assert status_of(lambda: custom.delete_namespaced_custom_object(*KUBEVIRT, ns, MIGRATIONS, "move-vm-0")) \
            == 200
    finally:
        rbac = client.RbacAuthorizationV1Api(kube_cluster.api_client())
        rbac.delete_cluster_role_binding(docs[1]["metadata"]["name"])
        rbac.delete_cluster_role(docs[0]["metadata"]["name"])
