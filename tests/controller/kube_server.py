"""A real Kubernetes control plane on loopback ports: etcd, kube-apiserver, kube-controller-manager.

etcd is Debian's ``etcd-server``; kube-apiserver and kube-controller-manager 1.20.2 are built
from Debian's ``kubernetes`` source package by ``scripts/test_servers.sh`` (which prints where).
The API server serves TLS with a throwaway CA (``openssl``), authenticates static tokens, and
authorises with RBAC, as a real cluster does; the controller-manager gives Deployments their
ReplicaSets (there is no scheduler or kubelet: pods stay Pending). KubeVirt's VMI and VMI
migration CRDs (trimmed, vendored in ``controller/kubevirt/crds.yaml``) are registered and
Established before the fixture returns. One control plane per test run (``kube_cluster``, session
scope; ``tests/controller/conftest.py`` imports it, so test modules must not import it again, which
would start a second one), stopped and deleted at the end. A missing binary is a failure naming
the install script, not a skip.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from tests.controller.prometheus_server import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBEVIRT_CRDS = ROOT / "controller" / "kubevirt" / "crds.yaml"


def server_paths() -> dict[str, str]:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "test_servers.sh"), "--check"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.fail(f"{result.stderr.strip()} (make test does)", pytrace=False)
    return dict(line.split("=", 1) for line in result.stdout.split())


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """ca.crt/key, apiserver.crt/key (127.0.0.1, localhost), sa.key/pub (service-account tokens)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=clustergym-test-ca", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\n"
                                    "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj",
             "/CN=kube-apiserver", cwd=folder)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "2", "-extfile", "san.cnf", cwd=folder)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


@dataclass
class KubeCluster:
    """A running control plane.

    Attributes:
        url: ``https://127.0.0.1:PORT``.
        ca_file: The CA that signed the serving certificate.
        admin_kubeconfig: A kubeconfig of the admin (group ``system:masters``).
        user_tokens: Static users without any role: ``{"controller": token, "other": token}``.
        crds: The registered (Established) CRDs' names.
        start_s: Seconds from the first process to the last CRD Established.
    """

    url: str
    ca_file: Path
    folder: Path
    admin_token: str
    user_tokens: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    crds: list[str] = field(default_factory=list)
    start_s: float = 0.0

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig_for(self.admin_token, "admin")

    def kubeconfig_for(self, token: str, name: str | None = None) -> Path:
        path = self.folder / f"kubeconfig-{name or token[:8]}"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n    certificate-authority: {self.ca_file}\n"
            f"users:\n- name: user\n  user:\n    token: {token}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\ncurrent-context: test\n")
        return path

    def api_client(self, token: str | None = None):
        """An official ``kubernetes.client.ApiClient`` (the admin's by default)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(configuration)

    def create_namespace(self, name: str) -> None:
        from kubernetes import client

        namespace = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        client.CoreV1Api(self.api_client()).create_namespace(namespace)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait(check, what: str, processes: list[subprocess.Popen], folder: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                logs = "\n".join(f.read_text()[-1500:] for f in folder.glob("*.log"))
                raise AssertionError(f"{p.args[0]} exited ({p.returncode}) before {what}:\n{logs}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def register_crds(cluster: KubeCluster, path: Path = KUBEVIRT_CRDS, timeout_s: float = 60.0) -> list[str]:
    """Create the CRDs of ``path`` and wait until each is Established (its API is served)."""
    from kubernetes import client

    api = client.ApiextensionsV1Api(cluster.api_client())
    names = []
    for doc in yaml.safe_load_all(path.read_text()):
        api.create_custom_resource_definition(doc)
        names.append(doc["metadata"]["name"])

    def established() -> bool:
        for name in names:
            conditions = api.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    _wait(established, "KubeVirt CRDs Established", cluster.processes, cluster.folder, timeout_s)
    _check_custom_resource_writes(cluster)
    return names


def _check_custom_resource_writes(cluster: KubeCluster) -> None:
    """A dry-run write of a custom resource. kube-apiserver 1.20 built with Go >= 1.18 against the
    reflect2 v1.0.1 it vendors dies (SIGSEGV in mapiterinit) on the first one: say so in one line."""
    from kubernetes import client

    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "probe"},
            "spec": {"domain": {"devices": {}}}}
    try:
        client.CustomObjectsApi(cluster.api_client()).create_namespaced_custom_object(
            "kubevirt.io", "v1", "default", "virtualmachineinstances", body, dry_run="All")
    except Exception as err:  # noqa: BLE001 - the process' state decides the message
        api = cluster.processes[1]
        try:
            api.wait(5)
        except subprocess.TimeoutExpired:
            raise err from None
        log = (cluster.folder / "kube-apiserver.log").read_text()
        cause = " (SIGSEGV in reflect2's mapiterinit: built with Go >= 1.18 against reflect2 v1.0.1)" \
            if "mapiterinit" in log else ""
        pytest.fail(f"kube-apiserver crashed on a custom-resource write{cause}: rebuild it with "
                    f"scripts/test_servers.sh", pytrace=False)


def start_kube_cluster() -> KubeCluster:
    paths = server_paths()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="clustergym-kube-"))
    make_certificates(folder)
    admin = secrets.token_hex(16)
    users = {"controller": "controller-token-0123456789", "other": "other-token-0123456789"}
    rows = [f"{admin},admin,admin-uid,system:masters", f"{users['controller']},controller,controller-uid",
            f"{users['other']},other,other-uid"]
    (folder / "tokens.csv").write_text("\n".join(rows) + "\n")
    cluster = KubeCluster("", folder / "ca.crt", folder, admin, users)
    try:
        etcd_port, etcd_peer, api_port, manager_port = free_port(), free_port(), free_port(), free_port()

        def spawn(name: str, args: list[str]) -> subprocess.Popen:
            log = open(folder / f"{name}.log", "wb")
            cluster.processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            return cluster.processes[-1]

        spawn("etcd", [paths["etcd"], "--data-dir", str(folder / "etcd"), "--listen-client-urls",
                       f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                       "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}", "--initial-advertise-peer-urls",
                       f"http://127.0.0.1:{etcd_peer}", "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}"])
        _wait(lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).ok, "etcd healthy",
              cluster.processes, folder)
        spawn("kube-apiserver", [
            paths["kube-apiserver"], f"--etcd-servers=http://127.0.0.1:{etcd_port}", "--bind-address=127.0.0.1",
            f"--secure-port={api_port}", "--insecure-port=0", f"--tls-cert-file={folder / 'apiserver.crt'}",
            f"--tls-private-key-file={folder / 'apiserver.key'}", f"--client-ca-file={folder / 'ca.crt'}",
            f"--token-auth-file={folder / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-key-file={folder / 'sa.pub'}",
            f"--service-account-signing-key-file={folder / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc", "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24", "--advertise-address=127.0.0.1", "--anonymous-auth=false",
            "--enable-priority-and-fairness=false"])
        cluster.url = f"https://127.0.0.1:{api_port}"
        headers = {"Authorization": f"Bearer {admin}"}
        _wait(lambda: requests.get(f"{cluster.url}/readyz", headers=headers, verify=str(cluster.ca_file),
                                   timeout=2).text == "ok", "kube-apiserver ready", cluster.processes, folder)
        spawn("kube-controller-manager", [
            paths["kube-controller-manager"], f"--kubeconfig={cluster.kubeconfig_for(admin, 'manager')}",
            "--controllers=deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token",
            "--leader-elect=false", f"--service-account-private-key-file={folder / 'sa.key'}",
            f"--root-ca-file={folder / 'ca.crt'}", "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1", f"--secure-port={manager_port}", "--port=0",
            f"--tls-cert-file={folder / 'apiserver.crt'}", f"--tls-private-key-file={folder / 'apiserver.key'}",
            f"--authentication-kubeconfig={cluster.kubeconfig_for(admin, 'manager')}",
            f"--authorization-kubeconfig={cluster.kubeconfig_for(admin, 'manager')}"])
        cluster.crds = register_crds(cluster)
        # /healthz is open without credentials (--authorization-always-allow-paths); it serves the same
        # 127.0.0.1 certificate as the API server.
        _wait(lambda: requests.get(f"https://127.0.0.1:{manager_port}/healthz", verify=str(cluster.ca_file),
                                   timeout=2).text == "ok",
              "kube-controller-manager healthy", cluster.processes, folder)
        cluster.start_s = time.monotonic() - started
        return cluster
    except BaseException:
        cluster.stop()
        raise


def create_deployments(apps, namespace: str, replicas: dict[str, int]) -> None:
    """Deployments ``name`` with ``count`` replicas (one container each; its pods stay Pending)."""
    from kubernetes import client

    for name, count in replicas.items():
        labels = {"app": name}
        apps.create_namespaced_deployment(namespace, client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=int(count), selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="registry.invalid/app")])))))


@pytest.fixture(scope="session")
def kube_cluster():
    """One control plane for the whole test run (:class:`KubeCluster`)."""
    cluster = start_kube_cluster()
    yield cluster
    cluster.stop()
