"""The test control plane is a real one: TLS, token authentication, RBAC, a controller-manager that
gives Deployments their ReplicaSets, KubeVirt's CRDs served with their schema; and every manifest
in deploy/ is valid YAML that this API server accepts.

``kube_cluster`` comes from tests/controller/conftest.py (one control plane per test run).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.controller.kube_server import KUBEVIRT_CRDS, ROOT, create_deployments

KUBEVIRT = ("kubevirt.io", "v1")


def poll(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_tls_token_authentication_and_rbac(kube_cluster):
    assert kube_cluster.url.startswith("https://127.0.0.1:") and 0 < kube_cluster.start_s < 60
    print(f"control plane started in {kube_cluster.start_s:.1f} s")
    with pytest.raises(requests.exceptions.SSLError):  # a real certificate chain: not trusted without the CA
        requests.get(f"{kube_cluster.url}/readyz", timeout=5)
    admin = config.new_client_from_config(str(kube_cluster.admin_kubeconfig))
    assert "default" in [n.metadata.name for n in client.CoreV1Api(admin).list_namespace().items]
    assert client.VersionApi(admin).get_code().git_version.startswith("v1.20.2")
    # A known user without any binding: authenticated, forbidden. An unknown token: unauthorised.
    nobody = config.new_client_from_config(str(kube_cluster.kubeconfig_for(kube_cluster.user_tokens["controller"])))
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(nobody).list_namespace()
    assert denied.value.status == 403 and 'User "controller"' in json.loads(denied.value.body)["message"]
    with pytest.raises(ApiException) as unknown:
        client.CoreV1Api(kube_cluster.api_client("not-a-token")).list_namespace()
    assert unknown.value.status == 401


def test_a_deployment_gets_a_replicaset_and_its_pods_stay_pending(kube_cluster):
    kube_cluster.create_namespace("server-deployments")
    apps, core = client.AppsV1Api(kube_cluster.api_client()), client.CoreV1Api(kube_cluster.api_client())
    create_deployments(apps, "server-deployments", {"web": 3})
    replica_sets = poll(lambda: apps.list_namespaced_replica_set("server-deployments").items, "a ReplicaSet")
    assert [r.spec.replicas for r in replica_sets] == [3]
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    pods = poll(lambda: (p := core.list_namespaced_pod("server-deployments").items) and len(p) == 3 and p,
                "3 pods")
    assert {p.status.phase for p in pods} == {"Pending"}  # no scheduler, no kubelet
    # The scale subresource (what the controller patches) drives the ReplicaSet.
    apps.patch_namespaced_deployment_scale("web", "server-deployments", {"spec": {"replicas": 1}})
    poll(lambda: [r.spec.replicas for r in apps.list_namespaced_replica_set("server-deployments").items] == [1],
         "the ReplicaSet scaled to 1")
    # The garbage collector removes the ReplicaSet with its Deployment.
    apps.delete_namespaced_deployment("web", "server-deployments", propagation_policy="Foreground")
    poll(lambda: not apps.list_namespaced_replica_set("server-deployments").items, "the ReplicaSet deleted")


def test_kubevirt_crds_are_established_with_their_schema_and_status(kube_cluster):
    api = kube_cluster.api_client()
    shipped = {d["metadata"]["name"]: d for d in yaml.safe_load_all(KUBEVIRT_CRDS.read_text())}
    assert set(kube_cluster.crds) == set(shipped) == {"virtualmachineinstances.kubevirt.io",
                                                      "virtualmachineinstancemigrations.kubevirt.io"}
    for name, doc in shipped.items():
        served = api.sanitize_for_serialization(client.ApiextensionsV1Api(api).read_custom_resource_definition(name))
        assert {c["type"]: c["status"] for c in served["status"]["conditions"]}["Established"] == "True"
        assert served["spec"]["names"] == doc["spec"]["names"]
        (version,) = served["spec"]["versions"]
        assert (version["name"], version["storage"], version["subresources"]) == ("v1", True, {"status": {}})
        assert version["schema"] == doc["spec"]["versions"][0]["schema"]  # accepted as structural, unchanged

    kube_cluster.create_namespace("server-kubevirt")
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*KUBEVIRT, "server-kubevirt", "virtualmachineinstances", {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "vm-0"},
        "spec": {"domain": {"cpu": {"cores": 4}, "memory": {"guest": "8Gi"}, "devices": {}}}})
    vmi = custom.patch_namespaced_custom_object_status(
        *KUBEVIRT, "server-kubevirt", "virtualmachineinstances", "vm-0",
        {"status": {"nodeName": "node-1", "phase": "Running"}})
    assert vmi["status"]["nodeName"] == "node-1" and vmi["spec"]["domain"]["cpu"]["cores"] == 4  # unknown kept

    migration = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                 "metadata": {"name": "move-vm-0"},
                 "spec": {"vmiName": "vm-0", "addedNodeSelector": {"kubernetes.io/hostname": "node-2"}}}
    created = custom.create_namespaced_custom_object(*KUBEVIRT, "server-kubevirt",
                                                     "virtualmachineinstancemigrations", migration)
    assert created["spec"] == migration["spec"]
    # The status is a subresource: writing it through the object itself is ignored.
    created["status"] = {"phase": "Succeeded"}
    replaced = custom.replace_namespaced_custom_object(*KUBEVIRT, "server-kubevirt",
                                                       "virtualmachineinstancemigrations", "move-vm-0", created)
    assert "status" not in replaced
    # The typed fields are checked by the server.
    for spec in ({"vmiName": 7}, {"vmiName": "vm-0", "addedNodeSelector": {"kubernetes.io/hostname": 2}},
                 {"vmiName": "vm-0", "addedNodeSelector": ["node-2"]}):
        with pytest.raises(ApiException) as invalid:
            custom.create_namespaced_custom_object(*KUBEVIRT, "server-kubevirt", "virtualmachineinstancemigrations",
                                                   {**migration, "metadata": {"name": "bad"}, "spec": spec})
        assert invalid.value.status == 422, spec


def test_every_manifest_parses_and_the_server_accepts_it(kube_cluster):
    """Each object of deploy/*.yaml, its namespace rewritten, passes a server-side dry-run create
    (schema, defaulting, admission, RBAC escalation checks: all but storing it)."""
    kube_cluster.create_namespace("server-manifests")
    dynamic = DynamicClient(kube_cluster.api_client())
    kinds = []
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and {"apiVersion", "kind", "metadata"} <= set(doc), path
            if "namespace" in doc["metadata"]:
                doc["metadata"]["namespace"] = "server-manifests"
            for subject in doc.get("subjects", []):
                subject["namespace"] = "server-manifests"
            resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            created = resource.create(body=doc, namespace=doc["metadata"].get("namespace"), dry_run="All")
            assert created.metadata.name == doc["metadata"]["name"]
            kinds.append(f"{path.name}:{doc['kind']}")
    assert sorted(kinds) == sorted([
        "controller.yaml:ConfigMap", "controller.yaml:Deployment", "rbac.yaml:ServiceAccount", "rbac.yaml:Role",
        "rbac.yaml:RoleBinding", "vm-migrations.yaml:ClusterRole", "vm-migrations.yaml:ClusterRoleBinding"])
    # A dry run stores nothing.
    assert not client.AppsV1Api(kube_cluster.api_client()).list_namespaced_deployment("server-manifests").items
