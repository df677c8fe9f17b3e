"""The simple API with requests: nested lists, records, rows, image uploads, model info, shortcuts."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.runtime.images import by_hand, encode, png
from tests.runtime.models import CNN_LABELS

RNG = np.random.default_rng(5)


def _post(server, path, **kwargs):
    return requests.post(f"{server.url}{path}", timeout=10, **kwargs)


def test_list_and_info(server):
    models = {m["name"]: m for m in requests.get(f"{server.url}/api/models", timeout=10).json()["models"]}
    assert set(models) == {"mlp", "cnn", "cnn_nchw", "two_io", "types", "fixed", "tabular"}
    assert models["mlp"] == {"name": "mlp", "version": "2", "versions": ["1", "2"], "ready": True, "format": "onnx"}
    info = requests.get(f"{server.url}/api/models/cnn", timeout=10).json()
    assert info["labels"] == CNN_LABELS
    assert info["image"]["layout"] == "NHWC" and info["image"]["height"] == 8 and not info["image"]["derived"]
    assert "Upload an image" in info["description"] and "top-5 of 4 labelled classes" in info["description"]
    assert info["endpoints"]["image"] == "/api/models/cnn/image"
    info = requests.get(f"{server.url}/api/models/mlp", timeout=10).json()
    assert info["description"].startswith('POST {"inputs": {...}} to /api/models/mlp/predict')
    assert "'x' (4 FP32 numbers per row)" in info["description"]
    assert requests.get(f"{server.url}/api/models/nope", timeout=10).status_code == 404


def test_predict_named_and_bare(server, reference):
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    want = reference("mlp", {"x": x}, version="2")["probs"]
    for body in ({"inputs": {"x": x.tolist()}}, x.tolist()):
        reply = _post(server, "/api/models/mlp/predict", json=body)
        assert reply.status_code == 200, reply.text
        got = np.array(reply.json()["outputs"]["probs"], dtype=np.float32)
        assert got.tobytes() == want.tobytes()
        assert reply.json()["model_version"] == "2" and "records" not in reply.json()
    one_row = _post(server, "/api/models/mlp/predict", json=x[0].tolist()).json()["outputs"]["probs"]
    assert np.array(one_row, dtype=np.float32).tobytes() == want[:1].tobytes()


def test_predict_casts_to_input_types(server):
    body = {
        "inputs": {
            "i64": [[1, 2]],
            "i32": [[3.0, 4]],
            "flag": [[True, False]],
            "half": [[0.5, 2]],
            "u8": [[255, 0]],
            "text": [["a", "b"]],
        }
    }
    out = _post(server, "/api/models/types/predict", json=body).json()["outputs"]
    assert out == {
        "i64_out": [[2, 3]],
        "i32_out": [[4, 5]],
        "flag_out": [[False, True]],
        "half_out": [[0.25, 4.0]],
        "u8_out": [[255, 0]],
        "text_out": [["a", "b"]],
    }
    bad = _post(server, "/api/models/types/predict", json={"inputs": {**body["inputs"], "i32": [[1.5, 2]]}})
    assert bad.status_code == 400 and "whole numbers" in bad.json()["error"]


def test_records_and_rows(server):
    records = [{"age": 30, "city": "Oslo"}, {"age": 41.5, "city": "Lima"}]
    for body in (records, {"records": records}, {"columns": ["city", "age"], "rows": [["Oslo", 30], ["Lima", 41.5]]}):
        reply = _post(server, "/api/models/tabular/predict", json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert data["records"] == [{"score": 60.0, "city_out": "Oslo"}, {"score": 83.0, "city_out": "Lima"}]
        assert data["outputs"]["score"] == [[60.0], [83.0]]
    reply = _post(server, "/api/models/tabular/predict", json=[{"age": 1}])
    assert reply.status_code == 400 and "missing field 'city'" in reply.json()["error"]
    reply = _post(server, "/api/models/mlp/predict", json=[{"x": 1}])
    assert reply.status_code == 400 and "one value per row" in reply.json()["error"]


def test_shortcut_needs_model_when_several(server, reference):
    reply = _post(server, "/predict", json=[[1, 2, 3, 4]])
    assert reply.status_code == 400 and "?model=NAME" in reply.json()["error"]
    reply = _post(server, "/predict?model=mlp", json=[[1, 2, 3, 4]])
    assert reply.status_code == 200


@pytest.mark.parametrize("model", ["cnn", "cnn_nchw"])
def test_image_upload_matches_by_hand(server, reference, model):
    pixels = RNG.integers(0, 256, (20, 15, 3), dtype=np.uint8)
    data = png(pixels)
    want = reference(model, {"image": by_hand(data, model)})["probs"]
    multipart = _post(server, f"/api/models/{model}/image", files={"image": ("x.png", data, "image/png")})
    raw = _post(server, f"/api/models/{model}/image?top_k=2", data=data, headers={"Content-Type": "image/png"})
    for reply in (multipart, raw):
        assert reply.status_code == 200, reply.text
        got = np.array(reply.json()["outputs"]["probs"], dtype=np.float32)
        assert got.tobytes() == want.tobytes()
    predictions = raw.json()["predictions"]
    assert len(predictions) == 2
    order = np.argsort(-want[0])
    assert [p["index"] for p in predictions] == order[:2].tolist()
    assert predictions[0]["score"] == pytest.approx(float(want[0][order[0]]))
    if model == "cnn":
        assert [p["label"] for p in predictions] == [CNN_LABELS[i] for i in order[:2]]
        assert len(multipart.json()["predictions"]) == 4  # top-5 of 4 classes
    else:
        assert "label" not in predictions[0]


def test_image_other_field_name_and_jpeg(server, reference):
    data = encode(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8), "JPEG")
    reply = _post(server, "/api/models/cnn/image", files={"upload": ("a.jpg", data, "image/jpeg")})
    assert reply.status_code == 200, reply.text
    want = reference("cnn", {"image": by_hand(data, "cnn")})["probs"]
    assert np.array(reply.json()["outputs"]["probs"], dtype=np.float32).tobytes() == want.tobytes()


def test_image_errors(server):
    reply = _post(server, "/api/models/cnn/image", data=b"not an image", headers={"Content-Type": "image/png"})
    assert reply.status_code == 400 and "not a decodable image" in reply.json()["error"]
    assert " at 0x" not in reply.json()["error"]  # no Python object repr from Pillow
    truncated = png(np.zeros((8, 8, 3), dtype=np.uint8))[:40]
    reply = _post(server, "/api/models/cnn/image", files={"image": ("t.png", truncated)})
    assert reply.status_code == 400
    reply = _post(server, "/api/models/cnn/image", data=b"{}", headers={"Content-Type": "application/json"})
    assert reply.status_code == 415
    reply = _post(server, "/api/models/mlp/image", data=png(np.zeros((4, 4, 3), np.uint8)))
    assert reply.status_code == 400 and "no image input" in reply.json()["error"]
    reply = _post(server, "/api/models/cnn/image?top_k=0", data=b"x", headers={"Content-Type": "image/png"})
    assert reply.status_code == 400 and "top_k" in reply.json()["error"]


def test_simple_bad_bodies(server):
    reply = _post(server, "/api/models/mlp/predict", data=b"[1, 2")
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]
    reply = _post(server, "/api/models/mlp/predict", json={"inputs": {"nope": [1]}})
    assert reply.status_code == 400 and "no input 'nope'" in reply.json()["error"]
    reply = _post(server, "/api/models/mlp/predict", json=[[1, 2], [3]])
    assert reply.status_code == 400 and "ragged" in reply.json()["error"]
    reply = _post(server, "/api/models/two_io/predict", json=[[1, 2, 3]])
    assert reply.status_code == 400 and "several inputs" in reply.json()["error"]
    # the server still serves after all that
    assert _post(server, "/api/models/mlp/predict", json=[[1, 2, 3, 4]]).status_code == 200
