"""``--model-name``: one model served from whatever shape a storage initializer left (runtime/storage.py).

Every shape KServe can leave at /mnt/models is laid out here from the runtime tests' models and served
by the real server; answers are compared with onnxruntime (and, for PMML, the regression written in
the document). Ambiguous or empty roots must stop the start with one line naming what was found.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as http

from runtime import storage
from runtime.errors import ModelLoadError
from runtime.settings import parse_settings
from tests.support.server import ROOT, run_server

PMML = ROOT / "tests" / "pmml" / "data" / "claims_regression.pmml"


def lay_out(shape: str, source: Path, root: Path) -> Path:
    """``source`` (a version directory holding model.onnx [+ modelport.json]) stored as ``shape`` under ``root``.

    Returns the path given to the server (``root``, or the file itself for a subPath-style mount)."""
    model = source / "model.onnx"
    if shape == "repository":  # a Triton repository of one model, its directory named anything
        shutil.copytree(source, root / "whatever-it-was-called" / "7")
        (root / "whatever-it-was-called" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    elif shape == "model":
        shutil.copytree(source, root / "3")
    elif shape == "version":
        shutil.copytree(source, root)
    elif shape == "file-in-dir":  # a bare file under its own name, beside a storage tool's hidden marker
        root.mkdir(parents=True)
        shutil.copy(model, root / "churn-v2.onnx")
        (root / ".complete").write_text("")
    elif shape == "file":  # /mnt/models is the file itself (a PVC subPath): no suffix, the bytes say ONNX
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, root)
    return root


SHAPES = ["repository", "model", "version", "file-in-dir", "file"]
VERSIONS = {"repository": "7", "model": "3"}  # stored version directories keep their number; the rest are "1"


@pytest.mark.parametrize("shape", SHAPES)
def test_every_stored_shape_serves_under_the_given_name(shape, repository, reference, tmp_path):
    """A live server per shape: metadata under the given name, an inference equal to onnxruntime."""
    mounted = lay_out(shape, repository / "cnn" / "1", tmp_path / "mnt" / "models")
    with run_server(mounted, "--model-name", "churn", log_dir=tmp_path) as server:
        client = http.InferenceServerClient(server.address)
        meta = client.get_model_metadata("churn")
        assert meta["name"] == "churn"
        assert [i["name"] for i in meta["inputs"]] == ["image"]
        assert meta["versions"] == [VERSIONS.get(shape, "1")]
        x = np.random.default_rng(3).random((2, 8, 8, 3), dtype=np.float32)
        inp = http.InferInput("image", [2, 8, 8, 3], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        got = client.infer("churn", [inp]).as_numpy("probs")
        np.testing.assert_allclose(got, reference("cnn", {"image": x})["probs"], rtol=0, atol=1e-6)
        answer = client.infer("churn", [inp], model_version=VERSIONS.get(shape, "1")).get_response()
        assert answer["model_name"] == "churn"
        # the manifest travels with the shapes that carry it: labels from modelport.json
        info = requests.get(server.url + "/api/models/churn", timeout=10).json()
        assert (info.get("labels") is not None) == (shape in ("repository", "model", "version"))
    assert "as model 'churn'" in server.log()


def test_bare_pmml_file_without_suffix_is_served_by_pypmml(tmp_path):
    mounted = tmp_path / "mnt" / "models"
    mounted.parent.mkdir(parents=True)
    shutil.copy(PMML, mounted)
    with run_server(mounted, "--model-name", "claims", log_dir=tmp_path) as server:
        client = http.InferenceServerClient(server.address)
        inputs = []
        for name, values, dtype in (
            ("age", np.array([25.0, 61.5]), "FP64"),
            ("salary", np.array([20000.0, 31000.0]), "FP64"),
            ("car_location", np.array([b"carpark", b"street"], dtype=object), "BYTES"),
        ):
            inp = http.InferInput(name, [2], dtype)
            inp.set_data_from_numpy(values)
            inputs.append(inp)
        got = client.infer("claims", inputs).as_numpy("number_of_claims").reshape(-1)
    expected = 132.37 + 7.1 * np.array([25.0, 61.5]) + 0.01 * np.array([20000.0, 31000.0]) + np.array([41.1, 325.03])
    np.testing.assert_allclose(got.astype(float), expected, atol=1e-6)


def _ambiguous_roots(source: Path, root: Path) -> dict[str, Path]:
    cases = {}
    two = root / "two-models"
    shutil.copytree(source, two / "a" / "1")
    shutil.copytree(source, two / "b" / "1")
    cases["two-models"] = two
    mixed = root / "file-and-versions"
    shutil.copytree(source, mixed / "1")
    shutil.copy(source / "model.onnx", mixed / "model.onnx")
    cases["file-and-versions"] = mixed
    files = root / "two-files"
    files.mkdir()
    shutil.copy(source / "model.onnx", files / "a.onnx")
    shutil.copy(PMML, files / "b.pmml")
    cases["two-files"] = files
    both = root / "onnx-and-pmml"
    both.mkdir()
    shutil.copy(source / "model.onnx", both / "model.onnx")
    shutil.copy(PMML, both / "model.pmml")
    cases["onnx-and-pmml"] = both
    return cases


@pytest.mark.parametrize(
    "case, found",
    [
        ("two-models", "model directories a/, b/"),
        ("file-and-versions", "model.onnx; version directories 1/"),
        ("two-files", "model files a.onnx, b.pmml"),
        ("onnx-and-pmml", "model.onnx, model.pmml"),
    ],
)
def test_ambiguous_layouts_fail_with_one_line_naming_what_was_found(case, found, repository, tmp_path):
    root = _ambiguous_roots(repository / "cnn" / "1", tmp_path)[case]
    with pytest.raises(ModelLoadError) as err:
        storage.locate(root)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{root}: ambiguous, found ")
    assert found in message
    assert "expected exactly one" in message


def test_ambiguous_root_stops_the_server_with_that_line(repository, tmp_path):
    root = _ambiguous_roots(repository / "cnn" / "1", tmp_path)["two-models"]
    with pytest.raises(RuntimeError) as err, run_server(root, "--model-name", "churn", log_dir=tmp_path):
        pass
    assert "exited with 1" in str(err.value)
    assert f"cannot start: {root}: ambiguous, found model directories a/, b/" in str(err.value)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize("shape", ["model", "file"])
def test_a_corrupt_model_is_named_by_its_stored_path_not_the_view(shape, repository, tmp_path):
    """Load errors name the user's file: the temporary view is an implementation detail."""
    mounted = lay_out(shape, repository / "cnn" / "1", tmp_path / "mnt" / "models")
    stored = mounted if shape == "file" else mounted / "3" / "model.onnx"
    stored.write_bytes(b"not an onnx graph")
    with pytest.raises(RuntimeError) as err, run_server(mounted, "--model-name", "churn", log_dir=tmp_path):
        pass
    line = next(x for x in str(err.value).splitlines() if "cannot start" in x)
    assert f"cannot start: {stored.resolve()}: " in line, line
    assert "modelport-view-" not in line


def test_nothing_servable_names_what_is_there_and_the_expected_shapes(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / "README.md").write_text("hello")
    (root / "weights").mkdir()
    with pytest.raises(ModelLoadError, match=r"no model found \(found: README.md, weights/\); expected one of: "):
        storage.locate(root)
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        storage.locate(tmp_path / "missing")


def test_name_must_be_a_single_path_component(repository, tmp_path):
    root = lay_out("model", repository / "cnn" / "1", tmp_path / "models")
    with pytest.raises(ModelLoadError, match=r"model name '\.\./x'"):
        storage.repository_view(root, "../x")


def test_view_writes_only_under_tmpdir_and_leaves_the_model_untouched(repository, tmp_path, monkeypatch):
    root = lay_out("file-in-dir", repository / "cnn" / "1", tmp_path / "models")
    before = sorted(p.name for p in root.iterdir())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    view = storage.repository_view(root, "churn")
    assert view.parent == scratch
    assert (view / "churn" / "1" / "model.onnx").resolve() == (root / "churn-v2.onnx").resolve()
    assert sorted(p.name for p in root.iterdir()) == before


def test_unwritable_tmp_is_one_line_saying_what_to_mount(repository, tmp_path, monkeypatch):
    root = lay_out("model", repository / "cnn" / "1", tmp_path / "models")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-dir"))
    with pytest.raises(ModelLoadError, match=r"mount a writable directory \(an emptyDir\) at /tmp or set TMPDIR"):
        storage.repository_view(root, "churn")


def test_model_name_flag_and_env():
    assert parse_settings(["--repository", "/mnt/models", "--model-name", "churn"], env={}).model_name == "churn"
    assert parse_settings(["--repository", "/m"], env={"MODELPORT_MODEL_NAME": "x"}).model_name == "x"
    assert parse_settings(["--repository", "/m"], env={}).model_name is None
    with pytest.raises(SystemExit):
        parse_settings(["--repository", "/m", "--model-name", "a", "--model", "b"], env={})
