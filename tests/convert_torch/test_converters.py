"""The PyTorch converters called directly: real models, real exporters, onnxruntime vs torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, get_converter
from tests.convert_torch.builders import Artifacts, load_io

ATOL = 1e-4

# kind -> (--input-shape, --input-dtype, --outputs, expected output names)
CASES: dict[str, tuple[dict[str, list[int]], str, list[str] | None, list[str]]] = {
    "mlp": ({"x": [1, 6]}, "FP32", None, ["output"]),
    "cnn": ({"image": [1, 3, 8, 8]}, "FP32", ["probabilities"], ["probabilities"]),
    "two_io": ({"a": [1, 4], "b": [1, 2]}, "FP32", None, ["output_0", "output_1"]),
    "embedding": ({"ids": [1, 5]}, "INT64", None, ["output"]),
    "mixed": ({"ids": [1, 4], "x": [1, 3]}, "ids=INT64", None, ["output"]),
}
SAVED_AS = {"script": "torchscript", "trace": "torchscript", "pickle": "torch_pickle"}


def convert(path: Path, fmt: str, workdir: Path, **options) -> Converted:
    return get_converter(fmt)(path, ConvertOptions(**options), workdir)


def onnx_predict(converted: Converted, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(converted.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def assert_matches_recorded(converted: Converted, io_path: Path) -> None:
    """onnxruntime on the inputs the model was built with (batch 3; exported with batch 2) against
    the outputs torch gave in the builder process."""
    inputs, expected = load_io(io_path)
    got = onnx_predict(converted, inputs)
    assert len(got) == len(expected)
    for spec, want in zip(converted.outputs, expected, strict=True):
        assert got[spec.name].shape == want.shape
        np.testing.assert_allclose(got[spec.name], want, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("saved_as", list(SAVED_AS))
@pytest.mark.parametrize("kind", list(CASES))
def test_converts_and_matches_torch(torch_models: Artifacts, tmp_path: Path, kind: str, saved_as: str) -> None:
    shapes, dtype, outputs, output_names = CASES[kind]
    converted = convert(
        torch_models.path(kind, saved_as),
        SAVED_AS[saved_as],
        tmp_path,
        input_shapes=shapes,
        input_dtype=dtype,
        outputs=outputs,
    )

    assert converted.model_path == tmp_path / "model.onnx" and converted.model_path.is_file()
    assert converted.format == "onnx" and converted.source_format == SAVED_AS[saved_as]
    assert [i.name for i in converted.inputs] == list(shapes)
    assert [i.shape for i in converted.inputs] == [[-1, *dims[1:]] for dims in shapes.values()]
    expected_types = {"ids": "INT64", "x": "FP32"} if dtype == "ids=INT64" else dict.fromkeys(shapes, dtype)
    assert {i.name: i.datatype for i in converted.inputs} == expected_types
    assert [o.name for o in converted.outputs] == output_names
    assert all(o.shape[0] == -1 and o.datatype == "FP32" for o in converted.outputs)
    assert converted.max_batch_size == -1
    assert set(converted.converters) == {"torch", "onnx", "onnxscript"}
    expected_exporter = "dynamo" if saved_as == "pickle" else "torchscript"
    assert converted.detail["exporter"] == expected_exporter
    assert converted.opset == (18 if expected_exporter == "dynamo" else 17)

    assert_matches_recorded(converted, torch_models.directory / f"{kind}_io.npz")
    # The converter's own torch reference, on its own sample inputs, at yet another batch size.
    sample = converted.make_inputs(7, 5)
    reference = converted.reference(sample)
    got = onnx_predict(converted, sample)
    assert list(reference) == output_names
    for name in output_names:
        assert reference[name].shape[0] == 5
        np.testing.assert_allclose(got[name], reference[name], atol=ATOL, rtol=0)


@pytest.mark.slow
def test_dict_outputs_are_named_by_their_keys(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(torch_models.path("dict_heads", "pickle"), "torch_pickle", tmp_path, input_shapes={"x": [1, 5]})
    assert [(o.name, o.shape) for o in converted.outputs] == [("scale", [-1, 2]), ("mean", [-1, 2])]
    assert_matches_recorded(converted, torch_models.directory / "dict_heads_io.npz")


@pytest.mark.slow
@pytest.mark.parametrize("saved_as", ["script", "trace"])
def test_torchscript_dict_outputs_are_refused_with_advice(
    torch_models: Artifacts, tmp_path: Path, saved_as: str
) -> None:
    with pytest.raises(ConversionError, match=r"returns a dict \(scale, mean\).*torch.save\(model\)"):
        convert(torch_models.path("dict_heads", saved_as), "torchscript", tmp_path, input_shapes={"x": [1, 5]})


@pytest.mark.slow
def test_integer_samples_stay_inside_the_embedding(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(
        torch_models.path("embedding", "pickle"),
        "torch_pickle",
        tmp_path,
        input_shapes={"ids": [2, 5]},
        input_dtype="INT64",
    )
    ids = converted.make_inputs(3, 64)["ids"]
    assert ids.dtype == np.int64 and ids.shape == (64, 5)
    assert ids.min() >= 0 and ids.max() < 20  # nn.Embedding(20, 8)
    assert ids.max() >= 12  # the table's own size, not a fixed default


@pytest.mark.slow
def test_dynamo_failure_falls_back_to_the_torchscript_exporter(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(
        torch_models.path("data_dependent", "pickle"), "torch_pickle", tmp_path, input_shapes={"x": [1, 4]}
    )
    assert converted.detail["exporter"] == "torchscript"
    assert "dynamo exporter" in converted.detail["exporter_fallback_reason"]
    assert any("fell back" in note for note in converted.notes)
    # Tracing read a tensor as a Python bool: the user is told the branch may be frozen.
    assert any("Python boolean" in warning for warning in converted.detail["tracer_warnings"])
    assert any(note.startswith("the trace may hold only the export example's branch") for note in converted.notes)
    assert_matches_recorded(converted, torch_models.directory / "data_dependent_io.npz")


@pytest.mark.slow
def test_class_defined_in_main_is_found_in_a_module_beside_the_pt(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(
        torch_models.directory / "main" / "model.pt", "torch_pickle", tmp_path, input_shapes={"x": [1, 6]}
    )
    assert converted.detail["main_classes_from"] == {"MainMLP": "training_classes"}
    assert_matches_recorded(converted, torch_models.directory / "main" / "io.npz")


@pytest.mark.slow
def test_legacy_non_zip_pickle_converts(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(torch_models.path("mlp", "legacy"), "torch_pickle", tmp_path, input_shapes={"x": [1, 6]})
    assert converted.detail["exporter"] == "dynamo"
    assert_matches_recorded(converted, torch_models.directory / "mlp_io.npz")


@pytest.mark.slow
def test_torchscript_archive_given_as_a_pickle_still_converts(torch_models: Artifacts, tmp_path: Path) -> None:
    converted = convert(torch_models.path("mlp", "script"), "torch_pickle", tmp_path, input_shapes={"x": [1, 6]})
    assert converted.detail == {"loaded_as": "torchscript", "exporter": "torchscript"}
    assert_matches_recorded(converted, torch_models.directory / "mlp_io.npz")


@pytest.mark.slow
def test_class_module_found_from_the_old_platform_layout(torch_models: Artifacts, tmp_path: Path) -> None:
    """``model/model/weights/net.pt`` with the class module in ``model/model/``: the parents up to the
    unpacked root are importable."""
    root = tmp_path / "unpacked" / "model" / "model"
    (root / "weights").mkdir(parents=True)
    module_file = torch_models.directory / f"{torch_models.nets_module}.py"
    shutil.copy(module_file, root / module_file.name)
    shutil.copy(torch_models.path("mlp", "pickle"), root / "weights" / "net.pt")
    converted = convert(root / "weights" / "net.pt", "torch_pickle", tmp_path / "work", input_shapes={"x": [1, 6]})
    assert_matches_recorded(converted, torch_models.directory / "mlp_io.npz")


@pytest.mark.slow
def test_directory_source_with_one_model_file(torch_models: Artifacts, tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    shutil.copy(torch_models.path("cnn", "trace"), source / "classifier.pt")
    converted = convert(source, "torchscript", tmp_path / "work", input_shapes={"image": [1, 3, 8, 8]})
    assert_matches_recorded(converted, torch_models.directory / "cnn_io.npz")


# ---- refusals: each names the file and says what to do ------------------------------------------
@pytest.mark.slow
def test_bare_state_dict_is_refused_with_an_explanation(torch_models: Artifacts, tmp_path: Path) -> None:
    path = torch_models.directory / "mlp_state_dict.pt"
    with pytest.raises(ConversionError) as raised:
        convert(path, "torch_pickle", tmp_path, input_shapes={"x": [1, 6]})
    message = str(raised.value)
    assert str(path) in message
    assert "bare state_dict" in message and "body.0.weight" in message
    assert "only the weights, not the architecture" in message
    assert "torch.jit.save" in message and "torch.save(model" in message
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_training_checkpoint_dict_is_refused_with_an_explanation(torch_models: Artifacts, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"keys: epoch, model_state_dict, optimizer.*state_dict holds only"):
        convert(torch_models.directory / "mlp_checkpoint.pt", "torch_pickle", tmp_path, input_shapes={"x": [1, 6]})


@pytest.mark.slow
def test_missing_class_module_is_named(torch_models: Artifacts, tmp_path: Path) -> None:
    path = torch_models.directory / "missing" / "model.pt"
    with pytest.raises(ConversionError) as raised:
        convert(path, "torch_pickle", tmp_path, input_shapes={"x": [1, 6]})
    message = str(raised.value)
    assert str(path) in message
    assert "needs the Python module 'vanished_nets_" in message and "beside the .pt" in message


@pytest.mark.slow
@pytest.mark.parametrize("saved_as", ["script", "pickle"])
def test_missing_input_shape_explains_the_flag(torch_models: Artifacts, tmp_path: Path, saved_as: str) -> None:
    path = torch_models.path("mlp", saved_as)
    with pytest.raises(ConversionError) as raised:
        convert(path, SAVED_AS[saved_as], tmp_path)
    message = str(raised.value)
    assert str(path) in message
    assert "--input-shape NAME=d0,d1,..." in message and "e.g. --input-shape x=1,3,224,224" in message


@pytest.mark.slow
def test_wrong_input_shape_is_reported_against_the_flag(torch_models: Artifacts, tmp_path: Path) -> None:
    with pytest.raises(
        ConversionError, match=r"forward\(\) failed on the example inputs \(x=1,5 FP32\).*--input-shape"
    ):
        convert(torch_models.path("mlp", "script"), "torchscript", tmp_path, input_shapes={"x": [1, 5]})


@pytest.mark.slow
def test_outputs_count_must_match(torch_models: Artifacts, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"--outputs names 1 tensors \(only\) but forward\(\) returns 2"):
        convert(
            torch_models.path("two_io", "pickle"),
            "torch_pickle",
            tmp_path,
            input_shapes={"a": [1, 4], "b": [1, 2]},
            outputs=["only"],
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("torch_pickle", "not a file written by torch.save"), ("torchscript", "not a loadable TorchScript archive")],
)
def test_garbage_file_is_refused(tmp_path: Path, fmt: str, expected: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(ConversionError, match=expected):
        convert(path, fmt, tmp_path / "work", input_shapes={"x": [1, 6]})


@pytest.mark.slow
def test_export_self_check_spots_a_model_that_computes_something_else(torch_models: Artifacts, tmp_path: Path) -> None:
    """The check that lets a pickled module fall back from a dynamo export that runs but is wrong."""
    import torch

    from convert.formats.torch_common import disagrees, example_inputs

    converted = convert(torch_models.path("mlp", "script"), "torchscript", tmp_path, input_shapes={"x": [1, 6]})
    options = ConvertOptions(input_shapes={"x": [1, 6]})
    examples = example_inputs(options, tmp_path, "TorchScript")
    same = torch.jit.load(str(torch_models.path("mlp", "trace")))
    assert disagrees(converted.model_path, same, examples, ["output"], options, 10, tmp_path) is None
    changed = torch.jit.load(str(torch_models.path("mlp", "trace")))
    with torch.no_grad():
        next(iter(changed.parameters())).add_(0.5)
    message = disagrees(converted.model_path, changed, examples, ["output"], options, 10, tmp_path)
    assert message is not None and message.startswith("output 'output' differs from torch by up to")
