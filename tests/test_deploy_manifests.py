"""The Kubernetes manifests (deploy/kubernetes) and the Containerfile, read as
data: the probes, the security context, the resources, the disruption budget,
and that every name one file uses is defined by another."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "Containerfile"
HEALTH_SERVICES = {"", "feedback.v1.FeedbackService", "feedback.v1.ThreadRegistry"}


def load_all() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


DOCUMENTS = load_all()


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> Iterator[dict[str, Any]]:
    return (d for d in DOCUMENTS if d["kind"] == "Deployment")


def all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def server() -> dict[str, Any]:
    deployment = find("Deployment", "feedback-service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def image_uid() -> int:
    """The uid the Containerfile's runtime stage runs as."""
    users = re.findall(r"^USER\s+(\d+)(?::\d+)?\s*$", CONTAINERFILE.read_text(), re.MULTILINE)
    assert users, "the Containerfile sets no numeric USER"
    return int(users[-1])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert all(
        d["metadata"].get("namespace") == kustomization["namespace"]
        for d in DOCUMENTS
        if d["kind"] != "Namespace"
    )


def test_probes_are_native_grpc_health_checks_on_the_grpc_port() -> None:
    container = server()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = container[probe]["grpc"]
        assert grpc["port"] == ports["grpc"] == 50051, probe
        assert grpc.get("service", "") in HEALTH_SERVICES, probe
    # The server turns NOT_SERVING while the database is away: liveness must
    # give it longer than readiness before the kubelet restarts the pod.
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (
        live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    )


@pytest.mark.parametrize("deployment", list(workloads()), ids=lambda d: d["metadata"]["name"])
def test_every_container_is_locked_down(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in all_containers(deployment):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["runAsUser"] > 0, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context.get("privileged", False) is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in context["capabilities"], container["name"]


def test_the_server_runs_as_the_images_user() -> None:
    deployment = find("Deployment", "feedback-service")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == image_uid()
    for container in all_containers(deployment):
        assert container["securityContext"]["runAsUser"] == image_uid()


@pytest.mark.parametrize("deployment", list(workloads()), ids=lambda d: d["metadata"]["name"])
def test_every_container_has_requests_and_limits(deployment: dict[str, Any]) -> None:
    for container in all_containers(deployment):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, (container["name"], kind)


def test_only_declared_volumes_are_writable() -> None:
    """The root filesystem is read-only; an emptyDir would be the only
    writable place, and the server on PostgreSQL needs none."""
    for deployment in workloads():
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        assert not [v for v in volumes if "emptyDir" in v], deployment["metadata"]["name"]
        for container in all_containers(deployment):
            assert all(m.get("readOnly") for m in container.get("volumeMounts", [])), container["name"]


def test_termination_grace_covers_the_servers_drain() -> None:
    settings = find("ConfigMap", "feedback-service")["data"]
    pod = find("Deployment", "feedback-service")["spec"]["template"]["spec"]
    pause = int(server()["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > float(settings["FEEDBACK_SHUTDOWN_GRACE_S"]) + pause


def test_disruption_budget_and_autoscaler_fit_the_deployment() -> None:
    deployment = find("Deployment", "feedback-service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find("PodDisruptionBudget", "feedback-service")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find("HorizontalPodAutoscaler", "feedback-service")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "feedback-service"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # A drain can always evict one pod, and one is always left serving.
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def test_service_port_is_named_grpc_and_reaches_the_server() -> None:
    labels = find("Deployment", "feedback-service")["spec"]["template"]["metadata"]["labels"]
    for name in ("feedback-service", "feedback-service-headless"):
        service = find("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["name"] == port["targetPort"] == "grpc"


def test_secrets_and_settings_referenced_exist() -> None:
    for deployment in workloads():
        pod = deployment["spec"]["template"]["spec"]
        for container in all_containers(deployment):
            for source in container.get("envFrom", []):
                find("ConfigMap", source["configMapRef"]["name"])
            for variable in container.get("env", []):
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["key"] in find("Secret", ref["name"])["stringData"], variable["name"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                keys = find("Secret", volume["secret"]["secretName"])["stringData"]
                assert {item["key"] for item in volume["secret"].get("items", [])} <= keys.keys()
            if "configMap" in volume:
                find("ConfigMap", volume["configMap"]["name"])


def test_settings_are_real_settings() -> None:
    """Every FEEDBACK_* variable the manifests set is one the server reads."""
    config = (ROOT / "feedback_service" / "config" / "settings.py").read_text()
    deployment = find("Deployment", "feedback-service")
    names = set(find("ConfigMap", "feedback-service")["data"])
    names |= {v["name"] for c in all_containers(deployment) for v in c.get("env", [])}
    for name in names:
        assert name.startswith("FEEDBACK_")
        assert name.removeprefix("FEEDBACK_").lower() in config, name


def test_secrets_stay_out_of_the_configmap() -> None:
    settings = find("ConfigMap", "feedback-service")["data"]
    assert not {"FEEDBACK_DATABASE_URL", "FEEDBACK_SERVICE_TOKENS", "FEEDBACK_JWT_SECRET"} & settings.keys()


def test_containerfile_builds_every_stage_from_the_base_image() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) >= 2 and set(stages) == {"${BASE_IMAGE}"}
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["feedback-service", "serve"]' in text
    assert re.search(r"FEEDBACK_LISTEN=0\.0\.0\.0:50051", text)
    assert image_uid() != 0
