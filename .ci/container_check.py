"""Checks a running serve container against numbers computed outside it (CI's container stage).

    python .ci/container_check.py onnx URL BUNDLE_DIR SAMPLE_JPG   # the example image classifier
    python .ci/container_check.py pmml URL                          # tests/pmml/data/claims_regression.pmml

ONNX: a V2 inference (JSON and binary, and gRPC when ``GRPC_ADDRESS`` is set) and an image upload must
equal onnxruntime run here on the bundle copied out of the image, with the image preprocessed by hand
with Pillow. PMML: a V2 inference must equal the regression written in the PMML document, computed by
hand. Both: the page at ``/`` is served from the image.
Prints one line per check and exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as http

failures = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global failures
    failures += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


def check_page(url: str) -> None:
    """GET / answers the try-it page built from the runtime/static/ files this checkout holds."""
    script = (Path(__file__).resolve().parents[1] / "runtime" / "static" / "app.js").read_text(encoding="utf-8")
    page = requests.get(f"{url}/", timeout=30)
    ok = page.status_code == 200 and page.headers.get("Content-Type", "").startswith("text/html")
    ok = ok and script in page.text and "connect-src 'self'" in page.headers.get("Content-Security-Policy", "")
    check("the try-it page at / ships in the image", ok, str(page.status_code))


def check_onnx(url: str, bundle: Path, sample: Path) -> None:
    import json

    import onnxruntime as ort
    from PIL import Image

    model_dir = next(p for p in sorted((bundle / "colour-classifier").iterdir()) if p.name.isdigit())
    manifest = json.loads((model_dir / "modelport.json").read_text())
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = manifest["inputs"][0]
    out_name = manifest["outputs"][0]["name"]
    x = np.random.default_rng(7).random((2, *spec["shape"][1:]), dtype=np.float32)
    expected = session.run([out_name], {spec["name"]: x})[0]

    client = http.InferenceServerClient(url.removeprefix("http://"))
    check("server live and ready", client.is_server_live() and client.is_server_ready())
    for binary in (False, True):
        inp = http.InferInput(spec["name"], list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("colour-classifier", [inp], outputs=[http.InferRequestedOutput(out_name, binary)])
        got = result.as_numpy(out_name)
        err = float(np.max(np.abs(got - expected)))
        check(f"V2 infer ({'binary' if binary else 'JSON'}) equals onnxruntime", err <= 1e-6, f"max abs {err:.2g}")
    if os.environ.get("GRPC_ADDRESS"):  # the image's V2 gRPC port, published by .ci/container.sh
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(os.environ["GRPC_ADDRESS"]) as g:
            inp = grpcclient.InferInput(spec["name"], list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            got = g.infer("colour-classifier", [inp]).as_numpy(out_name)
        err = float(np.max(np.abs(got - expected)))
        check("V2 gRPC infer (tritonclient.grpc) equals onnxruntime", err <= 1e-6, f"max abs {err:.2g}")

    image = manifest["image"]
    pil = Image.open(sample).convert(image["color_mode"]).resize((image["width"], image["height"]), Image.BILINEAR)
    pixels = (np.asarray(pil, dtype=np.float32) * image["scale"] - np.float32(image["mean"])) / np.float32(image["std"])
    want = session.run([out_name], {spec["name"]: pixels[None].astype(np.float32)})[0][0]
    with open(sample, "rb") as f:
        response = requests.post(f"{url}/api/models/colour-classifier/image", files={"image": f}, timeout=30)
    check("image upload answers 200", response.status_code == 200, str(response.status_code))
    body = response.json()
    got = np.asarray(body["outputs"][out_name][0], dtype=np.float32)
    err = float(np.max(np.abs(got - want)))
    check("image upload equals Pillow + onnxruntime by hand", err <= 1e-4, f"max abs {err:.2g}")
    top = body["predictions"][0]
    check("top-1 label", top["label"] == manifest["labels"][int(np.argmax(want))], top["label"])
    bad = requests.post(
        f"{url}/api/models/colour-classifier/image",
        data=b"not an image",
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    check("undecodable image is a 4xx with an error", 400 <= bad.status_code < 500 and "error" in bad.json())


def check_pmml(url: str) -> None:
    client = http.InferenceServerClient(url.removeprefix("http://"))
    check("server live and ready", client.is_server_live() and client.is_server_ready())
    age = np.array([25.0, 40.0, 61.5])
    salary = np.array([20000.0, 55000.0, 31000.0])
    location = np.array([b"carpark", b"street", b"street"], dtype=object)
    inputs = []
    for name, values, dtype in (("age", age, "FP64"), ("salary", salary, "FP64"), ("car_location", location, "BYTES")):
        inp = http.InferInput(name, [3], dtype)
        inp.set_data_from_numpy(values)
        inputs.append(inp)
    result = client.infer("claims", inputs)
    expected = 132.37 + 7.1 * age + 0.01 * salary + np.where(location == b"carpark", 41.1, 325.03)
    names = [o["name"] for o in result.get_response()["outputs"]]
    got = result.as_numpy("number_of_claims") if "number_of_claims" in names else None
    ok = got is not None and np.allclose(got.reshape(-1).astype(float), expected, atol=1e-6)
    check("PMML V2 infer equals the regression computed by hand", ok, f"outputs {names}")
    bad = requests.post(
        f"{url}/v2/models/claims/infer",
        timeout=30,
        json={"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": [30]}]},
    )
    check("missing field is a 400 naming it", bad.status_code == 400 and "salary" in bad.text, bad.text[:120])


def main() -> None:
    kind, url, *rest = sys.argv[1:]
    if kind == "onnx":
        check_onnx(url, Path(rest[0]), Path(rest[1]))
    else:
        check_pmml(url)
    check_page(url)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
