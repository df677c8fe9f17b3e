"""Model control and access control over gRPC, on the live server through tritonclient.grpc: Triton's
RepositoryIndex / RepositoryModelLoad / RepositoryModelUnload, bearer tokens in the ``authorization``
metadata (UNAUTHENTICATED, PERMISSION_DENIED), a failed load's reason, and TLS with the REST certificate."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.runtime.test_model_control import place
from tests.runtime.test_tls import make_certificate
from tests.support.server import run_server

INFER = "grpc-infer-token-2b7d4e91"
ADMIN = "grpc-admin-token-8c1f5a03"


def _code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.status().removeprefix("StatusCode.")


def _y(client: grpcclient.InferenceServerClient, headers: dict[str, str], version: str = "") -> float:
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 4), np.float32))
    return float(client.infer("m", [x], model_version=version, headers=headers).as_numpy("y")[0, 0])


def test_repository_rpcs_with_tokens(tmp_path):
    place(tmp_path, "m", 1, 1.0)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{INFER} infer\n{ADMIN} admin\n")
    os.chmod(tokens, 0o600)
    args = ("--model-control-mode", "explicit", "--load-model", "m", "--auth-tokens-file", str(tokens))
    with run_server(tmp_path, *args) as server, grpcclient.InferenceServerClient(server.grpc_address) as client:
        infer, admin = {"authorization": f"Bearer {INFER}"}, {"authorization": f"bearer {ADMIN}"}
        assert client.is_server_ready()  # health stays open
        with pytest.raises(InferenceServerException) as exc:
            _y(client, {})
        assert _code(exc) == "UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as exc:
            _y(client, {"authorization": "Bearer not-a-valid-token-123"})
        assert _code(exc) == "UNAUTHENTICATED"
        assert _y(client, infer) == 1.0
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_repository_index(headers=infer)
        assert _code(exc) == "PERMISSION_DENIED" and "'admin' scope" in exc.value.message()
        with pytest.raises(InferenceServerException) as exc:
            client.load_model("m", headers=infer)
        assert _code(exc) == "PERMISSION_DENIED"

        index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
        assert index == [{"name": "m", "version": "1", "state": "READY"}]  # proto3 JSON leaves "" out

        place(tmp_path, "m", 2, 2.0)
        client.load_model("m", headers=admin)
        assert _y(client, infer) == 2.0

        broken = tmp_path / "m" / "3" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"garbage")
        with pytest.raises(InferenceServerException) as exc:
            client.load_model("m", headers=admin)
        assert _code(exc) == "INVALID_ARGUMENT" and str(broken) in exc.value.message()
        assert _y(client, infer) == 2.0  # the old version still serves
        rows = client.get_model_repository_index(headers=admin, as_json=True)["models"]
        assert any(r["version"] == "3" and r["state"] == "UNAVAILABLE" and str(broken) in r["reason"] for r in rows)
        shutil.rmtree(broken.parent)

        client.unload_model("m", headers=admin)
        with pytest.raises(InferenceServerException) as exc:
            _y(client, infer)
        assert _code(exc) == "NOT_FOUND"
        assert client.get_model_repository_index(headers=admin, as_json=True)["models"] == [
            {"name": "m", "state": "UNAVAILABLE", "reason": "unloaded"}
        ]
        log = server.log()
        assert "GRPC /inference.GRPCInferenceService/RepositoryModelLoad" in log
        assert INFER not in log and ADMIN not in log


def test_repository_rpcs_closed_without_admin_and_over_tls(tmp_path):
    place(tmp_path, "m", 1, 1.0)
    cert, key = make_certificate(tmp_path)
    args = ("--model-control-mode", "explicit", "--load-model", "m", "--tls-cert", str(cert), "--tls-key", str(key))
    with run_server(tmp_path, *args, tls_ca=cert) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address, ssl=True, root_certificates=str(cert))
        assert _y(client, {}) == 1.0  # no tokens configured: inference is open, over TLS
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_repository_index()
        assert _code(exc) == "PERMISSION_DENIED" and "repository API is off" in exc.value.message()
        client.close()
