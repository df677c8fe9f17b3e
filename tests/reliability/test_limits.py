"""Every request limit answers 413/400 with a clear ``{"error"}``, and the server keeps serving.

Two servers: one with the default limits (the decompression bomb and a huge claimed shape must be
refused at the defaults, cheaply), one with small limits so each limit is hit with small requests.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.server import RunningServer, run_server

SMALL_LIMITS = ("--max-body-mb", "1", "--max-elements", "100000", "--max-json-depth", "16")
SMALL_LIMITS += ("--max-image-pixels", "10000")


@pytest.fixture(scope="module")
def limited(repository: Path) -> Iterator[RunningServer]:
    with run_server(repository, *SMALL_LIMITS) as running:
        yield running


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of zeros: a few hundred KiB on the wire, ``width * height`` bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def v2_body(shape: list[int], data: list, name: str = "x") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}


def assert_refused(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def assert_still_serving(server: RunningServer) -> None:
    response = requests.post(f"{server.url}/v2/models/mlp/infer", json=v2_body([1, 4], [1, 2, 3, 4]), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 3]
    assert server.process.poll() is None


def test_body_over_the_size_limit_is_413(limited: RunningServer) -> None:
    body = json.dumps(v2_body([1, 4], [1, 2, 3, 4])).encode() + b" " * (2 << 20)  # 2 MiB of padding
    response = requests.post(
        f"{limited.url}/v2/models/mlp/infer", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert_refused(response, 413, "1 MiB", "--max-body-mb")
    assert_still_serving(limited)


def pieces(body: bytes, size: int) -> Iterator[bytes]:
    """``body`` as a generator: requests sends it chunked, with no Content-Length to refuse it by."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_over_the_size_limit_is_413(limited: RunningServer) -> None:
    body = json.dumps(v2_body([1, 4], [1, 2, 3, 4])).encode() + b" " * (2 << 20)
    response = requests.post(
        f"{limited.url}/v2/models/mlp/infer",
        data=pieces(body, 64 << 10),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert "Content-Length" not in response.request.headers
    assert_refused(response, 413, "1 MiB", "--max-body-mb")
    assert_still_serving(limited)


def test_body_in_many_chunks_is_read_whole(limited: RunningServer) -> None:
    """A body under the limit that arrives in many pieces is answered as the same body in one piece."""
    rows = np.random.default_rng(5).standard_normal((2000, 4)).astype(np.float32)
    body = json.dumps(v2_body([2000, 4], rows.reshape(-1).tolist())).encode() + b" " * (400 << 10)
    url = f"{limited.url}/v2/models/mlp/infer"
    headers = {"Content-Type": "application/json"}
    whole = requests.post(url, data=body, headers=headers, timeout=30)
    chunked = requests.post(url, data=pieces(body, 1000), headers=headers, timeout=30)
    assert whole.status_code == 200, whole.text
    assert chunked.status_code == 200, chunked.text
    assert chunked.json()["outputs"] == whole.json()["outputs"]
    assert whole.json()["outputs"][0]["shape"] == [2000, 3]


def test_image_upload_over_the_size_limit_is_413(limited: RunningServer) -> None:
    files = {"image": ("big.png", b"\x89PNG" + b"\x00" * (2 << 20), "image/png")}
    response = requests.post(f"{limited.url}/api/models/vision/image", files=files, timeout=30)
    assert_refused(response, 413, "MiB")
    assert_still_serving(limited)


def test_too_many_elements_is_413(limited: RunningServer) -> None:
    rows = 100000 // 4 + 1
    body = v2_body([rows, 4], [0.5] * (rows * 4))
    response = requests.post(f"{limited.url}/v2/models/mlp/infer", json=body, timeout=30)
    assert_refused(response, 413, "elements", "--max-elements")
    response = requests.post(
        f"{limited.url}/api/models/mlp/predict", json={"inputs": {"x": [[0.5] * 4] * rows}}, timeout=30
    )
    assert response.status_code == 413, response.text
    assert_still_serving(limited)


def test_a_huge_claimed_shape_is_refused_before_any_allocation(server: RunningServer) -> None:
    """Default limits: shape [10^12, 4] with four numbers must not make the server allocate 16 TB."""
    started = time.perf_counter()
    response = requests.post(f"{server.url}/v2/models/mlp/infer", json=v2_body([10**12, 4], [1, 2, 3, 4]), timeout=10)
    assert_refused(response, 413, "elements")
    binary_header = json.dumps(
        {"inputs": [{"name": "x", "shape": [10**12, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    response = requests.post(
        f"{server.url}/v2/models/mlp/infer",
        data=binary_header + b"\x00" * 16,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(binary_header)),
        },
        timeout=10,
    )
    assert response.status_code in (400, 413), response.text
    assert time.perf_counter() - started < 5
    assert_still_serving(server)


def test_too_deep_json_is_400(limited: RunningServer) -> None:
    deep = "[" * 40 + "1" + "]" * 40
    body = '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ' + deep + "}]}"
    for path in ("/v2/models/mlp/infer", "/api/models/mlp/predict"):
        response = requests.post(
            limited.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert_refused(response, 400, "deeper than 16", "--max-json-depth")
    # Brackets inside strings do not count: a 40-bracket string id is fine.
    ok = v2_body([1, 4], [1, 2, 3, 4]) | {"id": "[" * 40}
    response = requests.post(f"{limited.url}/v2/models/mlp/infer", json=ok, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "[" * 40
    assert_still_serving(limited)


def test_very_deep_json_at_the_default_limit_is_400_not_a_crash(server: RunningServer) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = requests.post(
        f"{server.url}/v2/models/mlp/infer", data=deep, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert_refused(response, 400, "deeper")
    assert_still_serving(server)


def test_decompression_bomb_is_413_at_the_default_limit(server: RunningServer) -> None:
    bomb = png_bomb(7000, 7000)  # 49 M pixels > 40 M default; ~50 KiB on the wire
    assert len(bomb) < 1 << 20
    started = time.perf_counter()
    response = requests.post(
        f"{server.url}/api/models/vision/image", data=bomb, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert_refused(response, 413, "7000x7000", "--max-image-pixels")
    files = {"image": ("bomb.png", bomb, "image/png")}
    response = requests.post(f"{server.url}/api/models/vision/image", files=files, timeout=30)
    assert_refused(response, 413, "pixels")
    assert time.perf_counter() - started < 10  # refused from the header, never decoded
    assert_still_serving(server)


def test_image_over_the_pixel_limit_is_413_also_through_v2_bytes(limited: RunningServer) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((101, 100, 3), np.uint8)).save(buffer, format="PNG")  # 10100 > 10000
    png = buffer.getvalue()
    response = requests.post(
        f"{limited.url}/api/models/vision/image", data=png, headers={"Content-Type": "image/png"}, timeout=10
    )
    assert_refused(response, 413, "100x101", "10000")
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [png.decode("latin-1")]}]}
    response = requests.post(f"{limited.url}/v2/models/vision/infer", json=body, timeout=10)
    assert response.status_code in (400, 413), response.text
    assert "error" in response.json()
    small = io.BytesIO()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(small, format="PNG")  # exactly the limit
    response = requests.post(
        f"{limited.url}/api/models/vision/image",
        data=small.getvalue(),
        headers={"Content-Type": "image/png"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert_still_serving(limited)


def test_batch_larger_than_max_batch_size_is_400(limited: RunningServer) -> None:
    """The vision model's manifest says max_batch_size 8."""
    images = np.zeros((9, 3, 8, 8), np.float32)
    body = {"inputs": [{"name": "image", "shape": [9, 3, 8, 8], "datatype": "FP32", "data": images.ravel().tolist()}]}
    response = requests.post(f"{limited.url}/v2/models/vision/infer", json=body, timeout=10)
    assert_refused(response, 400, "batch size 9", "max_batch_size 8")
    body["inputs"][0]["shape"] = [8, 3, 8, 8]
    body["inputs"][0]["data"] = images[:8].ravel().tolist()
    response = requests.post(f"{limited.url}/v2/models/vision/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert_still_serving(limited)


def test_too_many_images_in_a_v2_bytes_batch_are_refused_before_decoding(server: RunningServer) -> None:
    """16 large (but under-limit) PNGs to a model with max_batch_size 8: the batch check must come
    first, or one 0.8 MB request buys seconds of decoding (about 0.6 s of CPU per 36 M-pixel image)."""
    png = base64.b64encode(png_bomb(6000, 6000)).decode()
    body = {"inputs": [{"name": "image", "shape": [16], "datatype": "BYTES", "data": [png] * 16}]}
    started = time.perf_counter()
    response = requests.post(f"{server.url}/v2/models/vision/infer", json=body, timeout=120)
    elapsed = time.perf_counter() - started
    assert_refused(response, 400, "batch size 16", "max_batch_size 8")
    assert elapsed < 2, f"refused only after {elapsed:.1f}s: the images were decoded first"
    assert_still_serving(server)
