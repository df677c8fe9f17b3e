"""Load deploy/ manifests and the schemas they are checked against (tests and CI's container stage).

KServe's CRDs are read from ``kserve/crds/`` in the workplace's shared folder, found by ``.ci/shared-dir``
(beside the checkout, a worktree's main checkout or a local clone's origin; ``MODELPORT_KSERVE_CRDS``
overrides). Their ``openAPIV3Schema`` is what the API
server validates a custom resource against; with ``kubectl apply --validate=strict`` (the default
field validation of kubectl since 1.27 warns, strict fails) an unknown field is an error, so
:func:`strict` closes every object schema that lists its properties: a misspelt field fails here too.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The Kubernetes version core resources are validated against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.33.0"
CRD_FILES = {
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}


def crd_dir() -> Path:
    candidates = []
    if os.environ.get("MODELPORT_KSERVE_CRDS"):
        candidates.append(Path(os.environ["MODELPORT_KSERVE_CRDS"]))
    shared = subprocess.run(  # the workplace's shared/ folder, found as the CI scripts find it
        ["bash", str(ROOT / ".ci" / "shared-dir"), f"kserve/crds/{CRD_FILES['InferenceService']}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if shared:
        candidates.append(Path(shared) / "kserve" / "crds")
    for path in candidates:
        if (path / CRD_FILES["InferenceService"]).is_file():
            return path
    tried = ", ".join(map(str, candidates)) or "no shared/kserve/crds beside the checkout, its main checkout or origin"
    raise FileNotFoundError(f"KServe CRDs not found: {tried} (set MODELPORT_KSERVE_CRDS or MODELPORT_SHARED)")


def documents(path: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the InferenceService CRD is large
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=loader) if d]


def manifests() -> dict[str, dict[str, Any]]:
    """``deploy/<dir>/<file>#<kind>/<name>`` -> the resource, for every YAML file under deploy/."""
    found = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in documents(path):
            found[f"{path.relative_to(ROOT)}#{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists the known ones (strict field validation)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema for ``kind`` at API ``version``, made strict."""
    (crd,) = documents(crd_dir() / CRD_FILES[kind])
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", True):
            return strict(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    raise LookupError(f"the {kind} CRD serves no version {version}")


def cluster_serving_runtime(fmt: str) -> dict[str, Any]:
    return documents(DEPLOY / "kserve" / f"clusterservingruntime-{fmt}.yaml")[0]
