"""Format detection by structure, on real files from each framework where that is cheap."""

from __future__ import annotations

import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convert.detect import detect, locate
from convert.errors import DetectionError


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def graphdef_bytes() -> bytes:
    """A GraphDef (tensorflow/core/framework/graph.proto) with two nodes, written by hand."""
    placeholder = field(1, b"input") + field(2, b"Placeholder")
    identity = field(1, b"output") + field(2, b"Identity") + field(3, b"input")
    versions = varint(1 << 3 | 0) + varint(1882)
    return field(1, placeholder) + field(1, identity) + field(4, versions)


def test_onnx(onnx_file: Path) -> None:
    assert detect(onnx_file).format == "onnx"


def test_onnx_in_directory_with_companions(tmp_path: Path, onnx_file: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "README.md").write_text("my model")
    found = detect(tmp_path)
    assert (found.format, found.path) == ("onnx", onnx_file)


def test_graphdef(tmp_path: Path) -> None:
    path = tmp_path / "frozen.pb"
    path.write_bytes(graphdef_bytes())
    assert detect(path).format == "graphdef"


def test_onnx_named_pb_is_still_onnx(tmp_path: Path, onnx_file: Path) -> None:
    path = tmp_path / "model.pb"
    path.write_bytes(onnx_file.read_bytes())
    assert detect(path).format == "onnx"


def test_savedmodel_directory(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01" + field(2, b""))
    found = detect(tmp_path)
    assert (found.format, found.path) == ("savedmodel", tmp_path)


def test_saved_model_pb_alone_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pb"
    path.write_bytes(b"\x08\x01" + field(2, field(1, b"meta")))
    with pytest.raises(DetectionError, match="without its variables/ directory"):
        detect(path)


def test_checkpoint_directory_without_checkpoint_file(tmp_path: Path) -> None:
    for step in (10, 20):
        (tmp_path / f"model.ckpt-{step}.index").write_bytes(b"i")
        (tmp_path / f"model.ckpt-{step}.data-00000-of-00001").write_bytes(b"d")
    (tmp_path / "model.ckpt-10.meta").write_bytes(b"m")
    found = detect(tmp_path)
    assert found.format == "checkpoint"
    assert found.detail["index_files"] == ["model.ckpt-10.index", "model.ckpt-20.index"]


def test_keras_h5_reports_keras_version(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "weird_name.bin"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps({"class_name": "Sequential"})
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
    found = detect(path)
    assert found.format == "keras_h5"
    assert found.detail["keras_version"] == "2.15.0"


def test_weights_only_h5_is_explained(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = [b"dense"]
    with pytest.raises(DetectionError, match=r"weights but no model_config \(model.save_weights\)"):
        detect(path)


def test_keras_v3_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("metadata.json", '{"keras_version": "3.15.0"}')
        zf.writestr("model.weights.h5", b"")
    assert detect(path).format == "keras"


def test_pmml(tmp_path: Path) -> None:
    path = tmp_path / "model.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by hand -->\n'
        '<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><Header/></PMML>\n'
    )
    assert detect(path).format == "pmml"


def test_xml_that_is_not_pmml(tmp_path: Path) -> None:
    path = tmp_path / "model.pmml"
    path.write_text('<?xml version="1.0"?><html><body/></html>')
    with pytest.raises(DetectionError, match="root element is not PMML"):
        detect(path)


@pytest.fixture(scope="module")
def sklearn_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    return LogisticRegression().fit(rng.standard_normal((20, 3)), np.arange(20) % 2)


def test_sklearn_pickle(tmp_path: Path, sklearn_model) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(sklearn_model, protocol=5))
    found = detect(path)
    assert found.format == "sklearn"
    assert "sklearn.linear_model._logistic" in found.detail["modules"]


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 3), ("bz2", 3)])
def test_sklearn_joblib(tmp_path: Path, sklearn_model, compress) -> None:
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(sklearn_model, path, compress=compress)
    assert detect(path).format == "sklearn"


def test_detection_never_unpickles(tmp_path: Path) -> None:
    """A pickle whose loading would run code is only read as opcodes."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil(), protocol=4))
    with pytest.raises(DetectionError, match="pickle of pathlib objects"):
        detect(path)
    assert not marker.exists()


def test_torch_formats(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    module = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    torch.save(module.state_dict(), tmp_path / "state.pt")
    torch.save(module.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert detect(tmp_path / "scripted.pt").format == "torchscript"
    assert detect(tmp_path / "state.pt").format == "torch_pickle"
    assert detect(tmp_path / "legacy.pt").format == "torch_pickle"


def test_detection_imports_no_framework() -> None:
    import subprocess

    code = (
        "import sys, convert.detect, convert.pipeline, convert.cli; "
        "convert.detect.supported(); convert.cli.build_parser(); "  # every registered format loaded
        "bad = [m for m in ('tensorflow', 'torch', 'keras', 'onnxruntime') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, I am a CSV,1,2,3\n", "not a recognised model file"),
        (pickle.dumps({"weights": [1, 2]}, protocol=4), "references no known model library"),
    ],
)
def test_unknown_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(DetectionError, match=message) as info:
        detect(path)
    assert str(path) in str(info.value)
    assert "supported: Keras .h5" in str(info.value)


def test_directory_without_model_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DetectionError, match=r"no model found among 1 files \(notes.txt \(not a recognised"):
        detect(tmp_path)


def test_directory_with_two_models(tmp_path: Path, onnx_file: Path) -> None:
    (tmp_path / "second.onnx").write_bytes(onnx_file.read_bytes())
    with pytest.raises(DetectionError, match="more than one model found"):
        detect(tmp_path)


def test_format_override_locates_the_file(tmp_path: Path, onnx_file: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\n")
    assert locate(tmp_path, "onnx").path == onnx_file
    assert locate(tmp_path, "savedmodel").path == tmp_path
    with pytest.raises(DetectionError, match="unknown format 'tflite'"):
        locate(tmp_path, "tflite")


def test_pointing_at_a_file_inside_a_directory_format(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    assert detect(tmp_path / "saved_model.pb").path == tmp_path
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.ckpt-5.index").write_bytes(b"i")
    (ckpt / "model.ckpt-5.data-00000-of-00001").write_bytes(b"d")
    found = detect(ckpt / "model.ckpt-5.index")
    assert (found.format, found.path, found.detail["requested"]) == ("checkpoint", ckpt, "model.ckpt-5")


def test_large_binary_companion_is_not_read_whole(tmp_path: Path, onnx_file: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\xff" * (1 << 20))
    assert detect(tmp_path).path == onnx_file


def test_common_wrong_files_are_named(tmp_path: Path) -> None:
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(DetectionError, match="TensorFlow Lite flatbuffer"):
        detect(tflite)
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    safetensors = tmp_path / "model.safetensors"
    safetensors.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    with pytest.raises(DetectionError, match="safetensors file"):
        detect(safetensors)
