"""Access control on a real server: bearer tokens and scopes against hostile clients, CORS, the admin
gate of the repository API, and the remaining body limits (total pixels per request, br/deflate)."""

from __future__ import annotations

import base64
import os
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtime import models
from tests.runtime.images import png
from tests.support.server import RunningServer, run_server

INFER = "infer-Zq8vN2kLp4Tr7Ws1"
ADMIN = "admin-Hx3mB9cQe6Yu0Ja5"
ORIGIN = "https://console.example"
X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def tokens_file(directory: Path, text: str) -> Path:
    path = directory / "tokens"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def secured(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("secured")
    tokens = tokens_file(work, f"# test tokens\n{INFER} infer\n{ADMIN} admin\n")
    args = ["--auth-tokens-file", str(tokens), "--cors-origin", ORIGIN, "--model-control-mode", "explicit"]
    args += ["--load-model", "mlp", "--load-model", "cnn", "--max-image-pixels", "10000"]
    args += ["--max-request-pixels", "15000", "--max-body-mb", "1"]
    with run_server(repository, *args, log_dir=work) as server:
        yield server


def _infer(server: RunningServer, headers: dict[str, str] | None = None, query: str = "") -> requests.Response:
    return requests.post(f"{server.url}/v2/models/mlp/infer{query}", json=X, headers=headers, timeout=10)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_wrong_token_and_malformed_headers_get_401(secured):
    cases = [
        None,
        _bearer("not-a-configured-token-000"),
        {"Authorization": INFER},  # no scheme
        {"Authorization": f"Basic {base64.b64encode(INFER.encode()).decode()}"},
        {"Authorization": "Bearer "},
        _bearer(INFER[:-1]),
        _bearer(INFER + "x"),
    ]
    for headers in cases:
        reply = _infer(secured, headers)
        assert reply.status_code == 401, headers
        assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="modelport"')
        assert reply.headers["Content-Type"] == "application/json" and "error" in reply.json()
        assert INFER not in reply.text


def test_token_in_the_query_string_is_ignored(secured):
    for query in (f"?token={INFER}", f"?access_token={INFER}", f"?authorization=Bearer%20{INFER}"):
        assert _infer(secured, None, query).status_code == 401


def test_lower_case_scheme_and_both_scopes_may_infer(secured):
    assert _infer(secured, {"Authorization": f"bearer {INFER}"}).status_code == 200
    assert _infer(secured, _bearer(ADMIN)).status_code == 200


def test_every_protected_surface_needs_a_token_and_health_stays_open(secured):
    protected = [
        ("GET", "/v2"),
        ("GET", "/v2/models/mlp"),
        ("GET", "/api/models"),
        ("GET", "/api/models/mlp"),
        ("POST", "/api/models/mlp/predict"),
        ("POST", "/api/models/cnn/image"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),  # unknown routes do not reveal themselves either
    ]
    for method, path in protected:
        assert requests.request(method, secured.url + path, timeout=10).status_code == 401, path
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mlp/ready", "/metrics"):
        assert requests.get(secured.url + path, timeout=10).status_code == 200, path
    page = requests.get(secured.url + "/", timeout=10)  # the static page loads; its API calls need the token
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    reply = requests.post(
        f"{secured.url}/api/models/mlp/predict", json=[[1, 2, 3, 4]], headers=_bearer(INFER), timeout=10
    )
    assert reply.status_code == 200


def test_admin_calls_with_an_infer_token_get_403(secured):
    for path in ("/v2/repository/index", "/v2/repository/models/mlp/load", "/v2/repository/models/mlp/unload"):
        reply = requests.post(secured.url + path, headers=_bearer(INFER), timeout=10)
        assert reply.status_code == 403, path
        assert "'admin' scope" in reply.json()["error"] and "WWW-Authenticate" not in reply.headers
        assert requests.post(secured.url + path, timeout=10).status_code == 401
    assert _infer(secured, _bearer(INFER)).status_code == 200  # nothing was unloaded
    index = requests.post(f"{secured.url}/v2/repository/index", headers=_bearer(ADMIN), timeout=10)
    assert index.status_code == 200 and {"name": "mlp", "version": "2", "state": "READY", "reason": ""} in index.json()


def test_tritonclient_sends_the_token_as_a_header(secured):
    client = httpclient.InferenceServerClient(secured.address)
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("mlp", [x])
    assert "401" in str(exc.value.status()) or "bearer token" in str(exc.value)
    assert client.infer("mlp", [x], headers=_bearer(INFER)).as_numpy("probs").shape == (1, 3)
    index = client.get_model_repository_index(headers=_bearer(ADMIN))
    assert any(row["name"] == "cnn" and row["state"] == "READY" for row in index)


def _raw(server: RunningServer, head: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_huge_authorization_header_is_refused_and_the_server_lives(secured):
    big = "Bearer " + "A" * 6000  # under aiohttp's 8190-byte header limit: our own length check
    reply = _infer(secured, {"Authorization": big})
    assert reply.status_code == 401 and "A" * 100 not in reply.text
    answer = _raw(  # over the header limit: the HTTP parser refuses it before any handler runs
        secured,
        f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'B' * 100_000}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    assert b"B" * 100 not in answer
    assert _infer(secured, _bearer(INFER)).status_code == 200
    assert "A" * 100 not in secured.log() and "B" * 100 not in secured.log()  # not logged either


def test_tokens_never_reach_the_log(secured):
    _infer(secured, _bearer(INFER), f"?token={INFER}")
    _infer(secured, _bearer(ADMIN + "-wrong"))
    log = secured.log()
    assert "runtime.access" in log
    assert "POST /v2/models/mlp/infer model=mlp status=200 duration_ms=" in log  # the line, query string left out
    assert INFER not in log and ADMIN not in log


def test_cors_preflight_and_headers(secured):
    preflight = requests.options(
        f"{secured.url}/v2/models/mlp/infer",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 204  # before authentication: browsers send no token on a preflight
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    reply = _infer(secured, {**_bearer(INFER), "Origin": ORIGIN})
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in reply.headers["Vary"]
    denied = _infer(secured, {"Origin": ORIGIN})  # a 401 is readable by the page too
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    stranger = requests.options(
        f"{secured.url}/v2/models/mlp/infer",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert stranger.status_code == 403 and "Access-Control-Allow-Origin" not in stranger.headers
    other = _infer(secured, {**_bearer(INFER), "Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def _images(count: int, size: int) -> dict:
    encoded = base64.b64encode(png(np.full((size, size, 3), 90, np.uint8))).decode()
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES", "data": [encoded] * count}]}


def test_total_pixels_of_one_request_are_limited(secured):
    url = f"{secured.url}/v2/models/cnn/infer"
    one = requests.post(url, json=_images(1, 100), headers=_bearer(INFER), timeout=10)  # 10,000 pixels
    assert one.status_code == 200
    two = requests.post(url, json=_images(2, 100), headers=_bearer(INFER), timeout=10)  # 20,000 > 15,000
    assert two.status_code == 413 and "--max-request-pixels" in two.json()["error"]
    big = requests.post(url, json=_images(1, 101), headers=_bearer(INFER), timeout=10)
    assert big.status_code == 413 and "--max-image-pixels" in big.json()["error"]


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("br", b"\x1b\x00 not brotli"), ("deflate", b"not deflate at all"), ("gzip", b"not gzip"), ("zstd", b"no")],
)
def test_undecodable_encodings_get_a_json_error(secured, encoding, body):
    answer = _raw(
        secured,
        f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INFER}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n",
        body,
    )
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n")[0] and b"application/json" in head
    assert b'"error"' in payload and encoding.encode() in payload


def test_compressed_bodies_decode_and_bombs_stop_at_the_body_limit(secured):
    raw = requests.models.complexjson.dumps(X).encode()
    for encoding, packed in (("br", brotli.compress(raw)), ("deflate", zlib.compress(raw))):
        reply = requests.post(
            f"{secured.url}/v2/models/mlp/infer",
            data=packed,
            headers={**_bearer(INFER), "Content-Encoding": encoding, "Content-Type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 200, (encoding, reply.text)
    bomb = brotli.compress(b" " * (64 * 1024 * 1024))  # 64 MiB of spaces in a few hundred bytes
    reply = requests.post(
        f"{secured.url}/v2/models/mlp/infer",
        data=bomb,
        headers={**_bearer(INFER), "Content-Encoding": "br", "Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 413 and "--max-body-mb" in reply.json()["error"]
    assert _infer(secured, _bearer(INFER)).status_code == 200


def test_repository_api_is_off_without_an_admin_token(tmp_path):
    models.save(tmp_path, "m", models.mlp())
    tokens = tokens_file(tmp_path, f"{INFER} infer\n")
    with run_server(tmp_path, "--auth-tokens-file", str(tokens), "--model-control-mode", "explicit") as server:
        reply = requests.post(f"{server.url}/v2/repository/models/m/load", headers=_bearer(INFER), timeout=10)
        assert reply.status_code == 403 and "--allow-unauthenticated-admin" in reply.json()["error"]
        assert "the repository API is off" in server.log()
    with run_server(tmp_path, "--model-control-mode", "explicit", "--allow-unauthenticated-admin") as server:
        assert requests.post(f"{server.url}/v2/repository/models/m/load", timeout=30).status_code == 200
        assert requests.post(f"{server.url}/v2/models/m/infer", json=X, timeout=10).status_code == 200
        assert "--allow-unauthenticated-admin" in server.log()
    with run_server(tmp_path, "--model-control-mode", "explicit") as server:  # no tokens at all: still off
        assert requests.post(f"{server.url}/v2/repository/index", timeout=10).status_code == 403


def test_auth_metrics_and_a_bad_tokens_file(tmp_path):
    models.save(tmp_path, "m", models.mlp())
    tokens = tokens_file(tmp_path, f"{INFER} infer\n")
    with run_server(tmp_path, "--auth-tokens-file", str(tokens), "--auth-metrics") as server:
        assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{server.url}/metrics", headers=_bearer(INFER), timeout=10).status_code == 200
    bad = tokens_file(tmp_path, f"{INFER} superuser\n")
    with run_server(tmp_path, "--auth-tokens-file", str(bad), wait_ready=False) as server:
        assert server.process.wait(timeout=60) == 1
        log = server.log()
        assert f"{bad}, line 1: scope must be 'infer' or 'admin'" in log and INFER not in log
        assert "Traceback" not in log
