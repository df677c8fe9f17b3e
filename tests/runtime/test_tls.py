"""TLS: a certificate generated for 127.0.0.1 by the test; tritonclient and requests over https, with
tokens; plain http to the TLS port fails; bad certificate files stop the start with one message."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from gevent import ssl as gevent_ssl

from tests.runtime import models
from tests.support.server import run_server

TOKEN = "tls-admin-token-5e1f0c2a"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for IP 127.0.0.1 (and localhost), valid one day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(command, check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command (.ci/run installs it)")
def test_https_with_tritonclient_and_requests(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    cert, key = make_certificate(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} admin\n")
    os.chmod(tokens, 0o600)
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens-file", str(tokens)]
    with run_server(tmp_path, *args, "--model-control-mode", "explicit", "--load-model", "mlp", tls_ca=cert) as server:
        assert server.url.startswith("https://")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        reply = requests.post(
            f"{server.url}/v2/models/mlp/infer", json=body, headers=auth, verify=str(cert), timeout=10
        )
        assert reply.status_code == 200 and reply.json()["outputs"][0]["shape"] == [1, 3]
        assert (
            requests.post(f"{server.url}/v2/models/mlp/infer", json=body, verify=str(cert), timeout=10).status_code
            == 401
        )
        with pytest.raises(requests.exceptions.SSLError):  # the client checks the certificate
            requests.get(f"{server.url}/v2/health/ready", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain http on the TLS port
            requests.get(f"http://127.0.0.1:{server.port}/v2/health/ready", timeout=10)

        def context(*args, **kwargs):
            return gevent_ssl.create_default_context(cafile=str(cert))

        client = httpclient.InferenceServerClient(server.address, ssl=True, ssl_context_factory=context)
        assert client.is_server_ready()
        x = httpclient.InferInput("x", [2, 4], "FP32")
        x.set_data_from_numpy(np.ones((2, 4), np.float32), binary_data=True)
        assert client.infer("mlp", [x], headers=auth).as_numpy("probs").shape == (2, 3)
        client.load_model("mlp", headers=auth)  # the repository API over TLS too
        assert [row["state"] for row in client.get_model_repository_index(headers=auth)] == ["READY"]
        client.close()
        assert "on https://127.0.0.1" in server.log()


def test_bad_certificate_files_stop_the_start(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate\n")
    with run_server(tmp_path, "--tls-cert", str(garbage), "--tls-key", str(garbage), wait_ready=False) as server:
        assert server.process.wait(timeout=60) == 1
        log = server.log()
        assert f"--tls-cert {garbage}" in log and "cannot use them" in log and "Traceback" not in log
    with run_server(
        tmp_path, "--tls-cert", str(tmp_path / "absent.pem"), "--tls-key", str(garbage), wait_ready=False
    ) as server:
        assert server.process.wait(timeout=60) == 1
        assert f"--tls-cert {tmp_path / 'absent.pem'}: no such file" in server.log()
