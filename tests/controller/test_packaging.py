"""The controller ships alone: its requirements pin what pyproject.toml pins, and nothing of the
training stack; its image copies only controller/; the manifests are valid and least-privilege."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*"?([A-Za-z0-9_.-]+)==([^",\s]+)', text, flags=re.M))


def test_requirements_pin_what_the_project_pins_and_no_training_stack():
    ours = pins((ROOT / "controller" / "requirements.txt").read_text())
    project = pins((ROOT / "pyproject.toml").read_text())
    assert set(ours) == {"onnxruntime", "numpy", "kubernetes", "requests", "prometheus-client", "pyyaml"}
    assert all(project[name] == version for name, version in ours.items()), (ours, project)
    assert not set(ours) & {"torch", "torch-geometric", "stable-baselines3", "numba", "gymnasium"}
    assert "torch" not in (ROOT / "controller" / "requirements.txt").read_text().replace("no torch", "")


def test_dockerfile_copies_only_the_controller():
    """The build context is controller/ (``docker build ... controller/``): nothing else can be copied;
    no COPY reaches out of it (``..``, another stage, a URL)."""
    text = (ROOT / "controller" / "Dockerfile").read_text()
    assert re.search(r"^#\s+docker build .*\scontroller/$", text, flags=re.M)
    copies = [line.split()[1:] for line in text.splitlines() if line.split()[:1] in (["COPY"], ["ADD"])]
    assert copies and not any(w.startswith("--from") for words in copies for w in words)
    sources = [src for words in copies for src in [w for w in words if not w.startswith("--")][:-1]]
    assert sources and all(".." not in src and "://" not in src and (ROOT / "controller" / src).exists()
                           for src in sources), sources
    assert "torch" not in text.replace("no torch", "")
    assert "FROM python:3.11-slim" in text
    assert "USER 10001" in text and 'ENTRYPOINT ["python", "-m", "controller"]' in text


def test_manifests_parse_and_the_role_is_least_privilege():
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted((ROOT / "deploy").glob("*.yaml"))}
    assert set(docs) == {"rbac.yaml", "controller.yaml", "vm-migrations.yaml"}
    role = next(d for d in docs["rbac.yaml"] if d["kind"] == "Role")
    assert sorted((tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in role["rules"]) == [
        (("deployments",), ("get", "list", "watch")), (("deployments/scale",), ("get", "patch"))]
    migrations = next(d for d in docs["vm-migrations.yaml"] if d["kind"] == "ClusterRole")
    assert sorted((r["apiGroups"][0], r["resources"][0], tuple(sorted(r["verbs"]))) for r in migrations["rules"]) == [
        ("", "nodes", ("get", "list")),
        ("kubevirt.io", "virtualmachineinstancemigrations", ("create", "delete", "get", "list", "watch")),
        ("kubevirt.io", "virtualmachineinstances", ("get", "list", "watch"))]
    deployment = next(d for d in docs["controller.yaml"] if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "clustergym-controller" and pod["securityContext"]["runAsNonRoot"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    from controller.cli import build_parser

    build_parser().parse_args(container["args"])  # the manifest's arguments are the CLI's
