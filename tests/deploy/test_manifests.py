"""deploy/: every manifest against the schema its API server would use, plus what the schemas cannot say.

Custom resources (ClusterServingRuntime, InferenceService) are validated against KServe's own CRDs'
``openAPIV3Schema`` with unknown fields rejected (tests/deploy/manifests.py), their ``metadata``
against Kubernetes' ObjectMeta; core resources against the Kubernetes schemas bundled in
kubernetes-validate (strict, pinned version). Then the cross-checks: the runtime's args parse with
the server's own CLI, threads equal the CPU limit, grace periods cover the server's shutdown, the
selectors find the pods.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from referencing import Registry, Resource

from runtime.settings import Settings, parse_settings
from tests.deploy.manifests import (
    CRD_FILES,
    KUBERNETES_VERSION,
    ROOT,
    cluster_serving_runtime,
    crd_dir,
    crd_schema,
    documents,
    manifests,
)

MANIFESTS = manifests()
CUSTOM = {key: doc for key, doc in MANIFESTS.items() if doc["kind"] in CRD_FILES}
CORE = {key: doc for key, doc in MANIFESTS.items() if doc["kind"] not in CRD_FILES}
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
POD_DEFAULT_GRACE = 30  # Kubernetes' terminationGracePeriodSeconds when a pod sets none
# What Knative (KServe's default, serverless mode) accepts in a container and its securityContext
# (knative/serving pkg/apis/serving/fieldmask.go: ContainerMask, SecurityContextMask); anything else
# is refused with "must not set the field(s)" when KServe creates the Knative Service.
KNATIVE_CONTAINER_FIELDS = {
    "args", "command", "env", "envFrom", "image", "imagePullPolicy", "livenessProbe", "name", "ports",
    "readinessProbe", "resources", "securityContext", "startupProbe", "terminationMessagePath",
    "terminationMessagePolicy", "volumeMounts", "workingDir",
}  # fmt: skip
KNATIVE_SECURITY_CONTEXT_FIELDS = {
    "allowPrivilegeEscalation", "capabilities", "readOnlyRootFilesystem", "runAsGroup", "runAsNonRoot",
    "runAsUser", "seccompProfile",
}  # fmt: skip


def crd_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of a custom resource, as ``path: message``."""
    group, _, version = doc["apiVersion"].partition("/")
    assert group == "serving.kserve.io", doc["apiVersion"]
    validator = jsonschema.Draft7Validator(crd_schema(doc["kind"], version))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    return errors + object_meta_errors(doc["metadata"])


def object_meta_errors(metadata: dict[str, Any]) -> list[str]:
    """A CRD says only ``metadata: object``; the API server checks it as Kubernetes' ObjectMeta."""
    schema_dir = resources.files(kubernetes_validate) / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    registry = Registry().with_resource(DEFINITIONS_ID, Resource.from_contents(definitions))
    schema = {"$ref": f"{DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(metadata)]


@pytest.mark.parametrize("key", sorted(CUSTOM))
def test_custom_resources_validate_against_kserve_crds(key):
    assert crd_errors(CUSTOM[key]) == []


@pytest.mark.parametrize("key", sorted(CORE))
def test_core_resources_validate_against_kubernetes(key):
    assert kubernetes_validate.validate(CORE[key], KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION[:4]


def test_every_kind_is_covered():
    kinds = {doc["kind"] for doc in MANIFESTS.values()}
    assert kinds == {
        "ClusterServingRuntime",
        "InferenceService",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_a_misspelt_field_fails():
    """The proof that the validation above can fail: one typo in each kind of schema."""
    runtime = cluster_serving_runtime("onnx")
    bad = copy.deepcopy(runtime)
    context = bad["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    errors = crd_errors(bad)
    assert len(errors) == 1 and "readOnlyRootFileSystem" in errors[0], errors
    assert errors[0].startswith("spec.containers.0.securityContext:")

    service = copy.deepcopy(next(d for d in CUSTOM.values() if d["kind"] == "InferenceService"))
    service["spec"]["predictor"]["model"]["storageURI"] = service["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in crd_errors(service))

    labelled = copy.deepcopy(runtime)
    labelled["metadata"]["label"] = {"a": "b"}
    assert any("label" in e and e.startswith("metadata") for e in crd_errors(labelled))

    deployment = copy.deepcopy(MANIFESTS["deploy/k8s/deployment.yaml#Deployment/modelport"])
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_validation_works_offline(monkeypatch):
    """Both validators resolve every schema from local files: no connection is ever attempted."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"schema validation tried the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for doc in CORE.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    for doc in CUSTOM.values():
        assert crd_errors(doc) == []


# ---- what the schemas cannot say ------------------------------------------------------------------


def _cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _server_settings(container: dict[str, Any], name: str = "churn") -> Settings:
    """The container's args as the server parses them, with ``{{.Name}}`` substituted as KServe does."""
    args = [a.replace("{{.Name}}", name) for a in container["args"]]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    return parse_settings(args, env=env)


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


@pytest.mark.parametrize("fmt", ["onnx", "pmml", "onnx-grpc"])
def test_cluster_serving_runtime_runs_the_server_the_kserve_way(fmt):
    """HTTP runtimes (onnx, pmml) and the gRPC one (onnx-grpc): one declared port each, as Knative requires."""
    runtime = cluster_serving_runtime(fmt)
    grpc = fmt.endswith("-grpc")
    spec = runtime["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["python", "-m", "runtime"]
    assert any("{{.Name}}" in a for a in container["args"])
    settings = _server_settings(container)
    assert settings.model_name == "churn"
    assert str(settings.repository) == "/mnt/models"
    assert settings.port == 8080
    assert spec["protocolVersions"] == (["grpc-v2"] if grpc else ["v2"])
    assert {f["name"] for f in spec["supportedModelFormats"]} == {fmt.removesuffix("-grpc")}
    # the HTTP runtime is the one picked for an InferenceService that names no runtime
    assert all(f["autoSelect"] is not grpc for f in spec["supportedModelFormats"])
    assert spec["annotations"] == {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}

    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    if fmt.startswith("onnx"):  # oversubscribed intra-op threads are the usual CPU slowdown
        assert settings.intra_op_threads == _cpu(limits["cpu"])

    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert f"--uid {context['runAsUser']}" in (ROOT / "Dockerfile.serve").read_text()  # the image's own user
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the only writable path (the model view)

    assert set(container) <= KNATIVE_CONTAINER_FIELDS, set(container) - KNATIVE_CONTAINER_FIELDS
    assert set(context) <= KNATIVE_SECURITY_CONTEXT_FIELDS, set(context) - KNATIVE_SECURITY_CONTEXT_FIELDS
    (port,) = container["ports"]  # Knative: "More than one container port is set" otherwise
    if grpc:  # KServe routes gRPC to the port named h2c; the standard health service says when it is ready
        assert (port["name"], port["containerPort"]) == ("h2c", settings.grpc_port)
        assert container["readinessProbe"]["grpc"] == {"port": settings.grpc_port}
        assert container["livenessProbe"]["tcpSocket"] == {"port": settings.grpc_port}
    else:
        assert (port["name"], port["containerPort"]) == ("http1", settings.port)
        assert settings.grpc_port == 0  # nothing listens that the runtime does not declare
        for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
            assert container[probe]["httpGet"] == {"path": path, "port": settings.port}


def test_priorities_do_not_collide_with_kserves_own_runtimes():
    """KServe's webhook refuses two ClusterServingRuntimes giving one format and version the same priority,
    and one runtime giving a format two priorities (servingruntime_webhook.go)."""
    theirs = {}
    for path in sorted((crd_dir().parent / "examples").glob("*.yaml")):
        for doc in documents(path):
            for f in doc["spec"]["supportedModelFormats"]:
                theirs.setdefault((f["name"], f.get("version")), set()).add(f.get("priority"))
    assert ("onnx", "1") in theirs  # Triton's: the example really is read
    for fmt in ("onnx", "pmml"):
        ours = cluster_serving_runtime(fmt)["spec"]["supportedModelFormats"]
        assert len({f["priority"] for f in ours}) == 1
        for f in ours:
            assert f["priority"] not in theirs.get((f["name"], f["version"]), set()), f


def test_inference_services_name_a_runtime_that_serves_their_format():
    runtimes = {cluster_serving_runtime(f)["metadata"]["name"]: cluster_serving_runtime(f) for f in ("onnx", "pmml")}
    services = [d for d in CUSTOM.values() if d["kind"] == "InferenceService"]
    assert len(services) == 2
    for service in services:
        predictor = service["spec"]["predictor"]
        model = predictor["model"]
        runtime = runtimes[model["runtime"]]
        assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
        assert re.match(r"^(s3|gs|https?|pvc)://", model["storageUri"])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", service["metadata"]["name"])  # also the model's name
        (container,) = runtime["spec"]["containers"]
        grace = _server_settings(container).shutdown_grace
        # Knative sets the pod's grace from the revision timeout (300 s); in raw deployment mode it is
        # the pod's, Kubernetes' default 30 s unless the InferenceService sets it
        assert predictor.get("terminationGracePeriodSeconds", POD_DEFAULT_GRACE) > grace


def test_the_autoscaling_target_is_the_one_docs_derive():
    service = MANIFESTS["deploy/kserve/inferenceservice-onnx.yaml#InferenceService/churn"]
    predictor = service["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"scaleTarget: {predictor['scaleTarget']}" in docs


@pytest.mark.parametrize("name", ["deployment.yaml", "fetch/deployment.yaml"])
def test_deployment_drains_before_it_is_killed(name):
    deployment = MANIFESTS[f"deploy/k8s/{name}#Deployment/modelport"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    grace = float(env.get("MODELPORT_SHUTDOWN_GRACE", Settings.shutdown_grace))
    assert pod["terminationGracePeriodSeconds"] > _pre_stop_seconds(container) + grace
    assert _pre_stop_seconds(container) > 0  # endpoints are removed asynchronously
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert float(env["MODELPORT_INTRA_OP_THREADS"]) == _cpu(container["resources"]["limits"]["cpu"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["PORT"]) == ports["http"]
    assert int(env["MODELPORT_GRPC_PORT"]) == ports["grpc"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    if "MODEL_REPOSITORY" in env:  # fetched at start: into a writable volume, not the read-only root
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["MODEL_REPOSITORY"] in mounts


def test_service_hpa_and_pdb_find_the_deployment():
    deployment = MANIFESTS["deploy/k8s/deployment.yaml#Deployment/modelport"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = MANIFESTS["deploy/k8s/service.yaml#Service/modelport"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    pdb = MANIFESTS["deploy/k8s/pdb.yaml#PodDisruptionBudget/modelport"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = MANIFESTS["deploy/k8s/hpa.yaml#HorizontalPodAutoscaler/modelport"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always evict one pod
    assert "requests" in container["resources"]  # CPU utilisation is relative to the request
