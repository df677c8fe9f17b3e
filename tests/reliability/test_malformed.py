"""Malformed bodies that aiohttp itself chokes on get a 400 ``{"error"}``, never a 500.

Each case here was a 500 found by the fuzzer or by hand: the multipart parser and the
Content-Encoding decoder raise aiohttp's own exceptions while the handler reads the body.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.server import RunningServer

BAD_BODIES = [
    pytest.param(
        "/api/models/vision/image", {"Content-Type": "multipart/form-data"}, b"abc", "multipart", id="no-boundary"
    ),
    pytest.param(
        "/api/models/vision/image",
        {"Content-Type": "multipart/form-data; boundary=xx"},
        b"abc",
        "starting boundary",
        id="no-starting-boundary",
    ),
    pytest.param(
        "/api/models/vision/image",
        {"Content-Type": "multipart/form-data; boundary=xx"},
        b'--xx\r\nContent-Disposition: form-data; name="\x10"\r\n\r\ntrue\r\n--xx--\r\n',
        "header",
        id="control-char-in-part-header",
    ),
    pytest.param(
        "/v2/models/mlp/infer",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        b"not gzip",
        "content-encoding",
        id="bad-gzip-v2",
    ),
    pytest.param(
        "/predict/image",
        {"Content-Type": "image/png", "Content-Encoding": "gzip"},
        b"not gzip",
        "content-encoding",
        id="bad-gzip-image",
    ),
    pytest.param(
        "/v2/models/mlp/infer",
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "99999"},
        b"{}",
        "Inference-Header-Content-Length",
        id="binary-header-past-end",
    ),
    pytest.param(
        "/v2/models/mlp/infer",
        {"Content-Type": "application/json"},
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}',
        "x",
        id="data-length-mismatch",
    ),
]


@pytest.mark.parametrize(("path", "headers", "body", "expected"), BAD_BODIES)
def test_malformed_body_is_a_clear_400(
    server: RunningServer, path: str, headers: dict[str, str], body: bytes, expected: str
) -> None:
    # /predict/image needs a single-model server; with two models it is a 400 of its own, also fine.
    response = requests.post(server.url + path, data=body, headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    if path != "/predict/image":
        assert expected.lower() in message.lower(), message
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    assert "unhandled error" not in server.log()
