"""The TensorFlow-family converters called directly: real models, tf2onnx, onnxruntime vs the
source framework's own numbers recorded when the model was saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, GraphOptions, get_converter
from tests.convert_tf import builders

ATOL = 1e-4
pytestmark = pytest.mark.slow

# case -> (input names, output names) the served model must have
EXPECTED_NAMES = {
    "cnn": (["image"], ["probs"]),
    "two_io": (["features", "extra"], ["score", "klass"]),
    "savedmodel-keras-export": (["extra", "features"], ["output_0", "output_1"]),
    "savedmodel-tf-module": (["sensor_readings"], ["anomaly score", "logits"]),
    "savedmodel-tf1": (["features"], ["logits", "probabilities"]),
    "graphdef-tf1-frozen": (["x"], ["probs"]),
    "graphdef-tf2-function": (["inputs"], ["Identity"]),
    "graphdef-keras2-session": (["img"], ["pred/Softmax"]),
}


def convert(saved: builders.Saved | Path, fmt: str | None, workdir: Path, **options) -> Converted:
    path = saved.path if isinstance(saved, builders.Saved) else saved
    fmt = fmt or saved.fmt
    return get_converter(fmt)(path, ConvertOptions(**options), workdir)


def onnx_predict(converted: Converted, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(converted.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, atol=ATOL, rtol=0, err_msg=name)


def assert_well_formed(converted: Converted, workdir: Path, inputs: list[str], outputs: list[str]) -> None:
    """Own names (no ``:0``), a dynamic batch axis everywhere, a valid opset-17 graph."""
    assert converted.model_path == workdir / "model.onnx" and converted.model_path.is_file()
    assert converted.format == "onnx"
    assert [i.name for i in converted.inputs] == inputs
    assert [o.name for o in converted.outputs] == outputs
    for spec in (*converted.inputs, *converted.outputs):
        assert ":" not in spec.name and not spec.name.startswith("unk__")
        assert spec.shape[0] == -1 and spec.datatype == "FP32"
    assert converted.max_batch_size == -1
    assert converted.opset == 17
    assert {"tensorflow", "tf2onnx"} <= set(converted.converters)
    model = onnx.load(str(converted.model_path))
    onnx.checker.check_model(model)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not list(workdir.glob(".*tmp*"))


def check_reference(converted: Converted) -> None:
    """The converter's own reference (what verification uses) agrees with onnxruntime at batch 5."""
    sample = converted.make_inputs(11, 5)
    assert [a.shape[0] for a in sample.values()] == [5] * len(sample)
    assert_close(onnx_predict(converted, sample), converted.reference(sample))


# ---- Keras ----------------------------------------------------------------------------------------
KERAS_CASES = [f"{kind}-{saved}" for kind in ("cnn", "two_io") for saved in ("keras.keras", "keras.h5", "tf_keras.h5")]


@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras_matches_source(tf_models: dict[str, builders.Saved], tmp_path: Path, case: str) -> None:
    saved = tf_models[case]
    kind, library = case.split("-")[0], case.split("-")[1].split(".")[0]
    converted = convert(saved, None, tmp_path)

    assert_well_formed(converted, tmp_path, *EXPECTED_NAMES[kind])
    assert converted.source_format == saved.fmt
    assert converted.detail["loaded_with"] == library
    assert converted.detail["keras_version_in_file"].startswith("3." if library == "keras" else "2.")
    assert library in converted.converters
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)
    check_reference(converted)


@pytest.mark.parametrize(
    ("variant", "datatype"), [("sequential_embedding", "INT32"), ("dict_io", "FP32"), ("tf_keras_sequential", "FP32")]
)
def test_keras_variants(tf_models: dict[str, builders.Saved], tmp_path: Path, variant: str, datatype: str) -> None:
    """Sequential models (Keras 3 with an Input, Keras 2 from ``input_shape``), integer token ids
    (sampled below the Embedding's 50 rows), dict inputs and outputs named by their keys."""
    saved = tf_models[variant]
    converted = convert(saved, None, tmp_path)
    assert [i.name for i in converted.inputs] == list(saved.inputs)
    assert [o.name for o in converted.outputs] == list(saved.outputs)
    assert [i.datatype for i in converted.inputs] == [datatype] * len(saved.inputs)
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)
    check_reference(converted)
    if variant == "sequential_embedding":
        tokens = converted.make_inputs(0, 64)["tokens"]
        assert tokens.dtype == np.int32 and tokens.max() < 50 and tokens.max() >= 10


def test_keras_outputs_option_selects_and_orders(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    saved = tf_models["two_io-keras.keras"]
    converted = convert(saved, None, tmp_path, outputs=["klass"])
    assert [o.name for o in converted.outputs] == ["klass"]
    assert_close(onnx_predict(converted, saved.inputs), {"klass": saved.outputs["klass"]})


def test_keras_unknown_output_is_named_in_error(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"--outputs names nope.*outputs: score, klass"):
        convert(tf_models["two_io-keras.keras"], None, tmp_path, outputs=["nope"])
    assert not (tmp_path / "model.onnx").exists()


def test_weights_only_h5_is_refused(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    import tf_keras

    model = tf_keras.models.load_model(tf_models["cnn-tf_keras.h5"].path, compile=False)
    weights = tmp_path / "cnn.weights.h5"
    model.save_weights(weights)
    with pytest.raises(ConversionError, match=r"cnn\.weights\.h5: this HDF5 file holds weights only"):
        convert(weights, "keras_h5", tmp_path / "out")


def test_opset_option(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    saved = tf_models["cnn-keras.keras"]
    converted = convert(saved, None, tmp_path, opset=13)
    assert converted.opset == 13
    assert onnx.load(str(converted.model_path)).opset_import[0].version == 13
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)


# ---- SavedModel -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["savedmodel-keras-export", "savedmodel-tf-module", "savedmodel-tf1"])
def test_savedmodel_matches_source(tf_models: dict[str, builders.Saved], tmp_path: Path, case: str) -> None:
    saved = tf_models[case]
    converted = convert(saved, None, tmp_path)
    assert_well_formed(converted, tmp_path, *EXPECTED_NAMES[case])
    assert converted.detail["signature"] == "serving_default"
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)
    check_reference(converted)
    if case == "savedmodel-tf1":  # frozen from a Session: the TF tensor names are recorded
        assert converted.detail["tags"] == ["serve"]
        assert [o.source_name for o in converted.outputs] == ["model/logits:0", "probs:0"]


# ---- frozen GraphDef --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["graphdef-tf1-frozen", "graphdef-tf2-function", "graphdef-keras2-session"])
def test_graphdef_finds_inputs_and_outputs(tf_models: dict[str, builders.Saved], tmp_path: Path, case: str) -> None:
    """The TF1 graph still holds a ``labels`` placeholder and a ``loss``: neither is served."""
    saved = tf_models[case]
    converted = convert(saved, None, tmp_path)
    assert_well_formed(converted, tmp_path, *EXPECTED_NAMES[case])
    assert [i.source_name for i in converted.inputs] == [f"{n}:0" for n in EXPECTED_NAMES[case][0]]
    assert [o.source_name for o in converted.outputs] == [f"{n}:0" for n in EXPECTED_NAMES[case][1]]
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)
    check_reference(converted)


def test_graphdef_overrides(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    """--outputs picks an inner tensor (``x:0`` and ``x`` both accepted); its value is the softmax's input."""
    saved = tf_models["graphdef-tf1-frozen"]
    converted = convert(
        saved, None, tmp_path, format_options=[GraphOptions(inputs=["x:0"])], outputs=["model/logits:0", "probs"]
    )
    assert [i.name for i in converted.inputs] == ["x"]
    assert [o.name for o in converted.outputs] == ["model/logits", "probs"]
    got = onnx_predict(converted, saved.inputs)
    logits = got["model/logits"]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, saved.outputs["probs"], atol=ATOL)
    np.testing.assert_allclose(got["probs"], saved.outputs["probs"], atol=ATOL)


def test_graphdef_unknown_tensor_is_named(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"frozen\.pb: --outputs names 'nope'"):
        convert(tf_models["graphdef-tf1-frozen"], None, tmp_path, outputs=["nope"])


def test_graphdef_input_shape_fills_unknown_dims(tmp_path: Path) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None], name="signal")
        tf.multiply(tf.reduce_sum(x * x, axis=1, keepdims=True), 0.5, name="energy")
    path = tmp_path / "unknown.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())

    with pytest.raises(ConversionError, match=r"input signal has unknown dimensions.*--input-shape signal="):
        convert(path, "graphdef", tmp_path / "a")
    converted = convert(path, "graphdef", tmp_path / "b", input_shapes={"signal": [1, 7]})
    assert converted.inputs[0].shape == [-1, 7]
    signal = np.arange(14, dtype=np.float32).reshape(2, 7)
    np.testing.assert_allclose(
        onnx_predict(converted, {"signal": signal})["energy"], 0.5 * (signal**2).sum(1, keepdims=True)
    )


def test_not_a_graph_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pb"
    path.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 10)
    with pytest.raises(ConversionError, match=r"junk\.pb: not a TensorFlow GraphDef"):
        convert(path, "graphdef", tmp_path / "out")


# ---- TF1 checkpoints --------------------------------------------------------------------------------
def copy_run(run: builders.CheckpointRun, destination: Path) -> Path:
    return Path(shutil.copytree(run.directory, destination))


def assert_serves_step(converted: Converted, run: builders.CheckpointRun, step: int) -> None:
    assert converted.detail["step"] == step
    got = onnx_predict(converted, run.inputs)
    assert_close(got, run.outputs_by_step[step])
    for other, outputs in run.outputs_by_step.items():
        if other != step:
            assert np.abs(got["probs"] - outputs["probs"]).max() > 1e-2, f"step {step} looks like step {other}"


def test_checkpoint_newest_step_wins(checkpoint_run: builders.CheckpointRun, tmp_path: Path) -> None:
    """Saved at 100, 1200, 300: the state file says 300, the newest step is 1200."""
    assert "model.ckpt-300" in (checkpoint_run.directory / "checkpoint").read_text()
    converted = convert(checkpoint_run.directory, "checkpoint", tmp_path)
    assert_well_formed(converted, tmp_path, ["x"], ["probs"])
    assert_serves_step(converted, checkpoint_run, 1200)
    assert converted.detail["meta_graph"] == "model.ckpt-1200.meta"
    check_reference(converted)


def test_checkpoint_without_state_file(checkpoint_run: builders.CheckpointRun, tmp_path: Path) -> None:
    directory = copy_run(checkpoint_run, tmp_path / "run")
    (directory / "checkpoint").unlink()
    assert_serves_step(convert(directory, "checkpoint", tmp_path / "out"), checkpoint_run, 1200)


def test_checkpoint_state_file_pointing_to_old_moved_step(
    checkpoint_run: builders.CheckpointRun, tmp_path: Path
) -> None:
    """The trainer's absolute paths, from another machine, naming an old step."""
    import tensorflow as tf

    directory = copy_run(checkpoint_run, tmp_path / "run")
    (directory / "checkpoint").write_text(
        'model_checkpoint_path: "/mnt/training/job-17/model.ckpt-100"\n'
        'all_model_checkpoint_paths: "/mnt/training/job-17/model.ckpt-100"\n'
    )
    assert tf.train.latest_checkpoint(str(directory)) in (None, "/mnt/training/job-17/model.ckpt-100")
    assert_serves_step(convert(directory, "checkpoint", tmp_path / "out"), checkpoint_run, 1200)


def test_checkpoint_meta_only_for_older_step(tmp_path: Path) -> None:
    """``write_meta_graph`` only on the first save: graph from step 100, variables from step 2000."""
    run = builders.save_checkpoints(tmp_path / "run", [100, 2000], seed=3, meta_for={100})
    assert not (run.directory / "model.ckpt-2000.meta").exists()
    converted = convert(run.directory, "checkpoint", tmp_path / "out")
    assert_serves_step(converted, run, 2000)
    assert converted.detail["meta_graph"] == "model.ckpt-100.meta"
    assert any("graph from model.ckpt-100.meta" in note for note in converted.notes)


def test_checkpoint_without_meta_is_refused(checkpoint_run: builders.CheckpointRun, tmp_path: Path) -> None:
    directory = copy_run(checkpoint_run, tmp_path / "run")
    for meta in directory.glob("*.meta"):
        meta.unlink()
    with pytest.raises(ConversionError, match=r"checkpoint model\.ckpt-1200 has no \.meta graph file"):
        convert(directory, "checkpoint", tmp_path / "out")


def test_checkpoint_incomplete_newest_step_is_skipped(checkpoint_run: builders.CheckpointRun, tmp_path: Path) -> None:
    """A step whose .data shard never finished writing is not a checkpoint: the next newest wins."""
    directory = copy_run(checkpoint_run, tmp_path / "run")
    for shard in directory.glob("model.ckpt-1200.data-*"):
        shard.unlink()
    assert_serves_step(convert(directory, "checkpoint", tmp_path / "out"), checkpoint_run, 300)


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    import tensorflow as tf

    class Igamma(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 0.5)}

    module = Igamma()
    tf.saved_model.save(module, str(tmp_path / "igamma"), signatures={"serving_default": module.serve})
    with pytest.raises(ConversionError, match=r"igamma: tf2onnx cannot convert the TensorFlow ops Igamma to ONNX"):
        convert(tmp_path / "igamma", "savedmodel", tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_keras_unknown_dims_need_input_shape(tmp_path: Path) -> None:
    """A fully convolutional model takes any image size: --input-shape fixes the served one."""
    import keras

    keras.utils.set_random_seed(4)
    image = keras.Input((None, None, 3), name="image")
    pooled = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(2, 3, name="conv")(image))
    path = tmp_path / "fcn.keras"
    model = keras.Model(image, pooled)
    model.save(path)

    with pytest.raises(
        ConversionError, match=r"input image has unknown dimensions \[\?, \?, \?, 3\].*--input-shape image="
    ):
        convert(path, "keras", tmp_path / "a")
    converted = convert(path, "keras", tmp_path / "b", input_shapes={"image": [1, 12, 10, 3]})
    assert converted.inputs[0].shape == [-1, 12, 10, 3]
    sample = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    want = np.asarray(model.predict(sample, verbose=0))
    np.testing.assert_allclose(onnx_predict(converted, {"image": sample})["global_max_pooling2d"], want, atol=ATOL)


@pytest.mark.parametrize("hard_coded", [False, True])
def test_graphdef_fixed_batch(tmp_path: Path, hard_coded: bool) -> None:
    """A placeholder built for batch 1 is served with a dynamic batch (noted) when the graph allows it;
    a graph that reshapes to the fixed batch is refused with the reason, before verification."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        if hard_coded:
            tf.reshape(x * 2.0, [1, 2, 2], name="y")
        else:
            tf.multiply(x, 2.0, name="y")
    path = tmp_path / "fixed.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    if hard_coded:
        with pytest.raises(ConversionError, match=r"requested shape has 4; the graph was built for a fixed batch size"):
            convert(path, "graphdef", tmp_path / "out")
        return
    converted = convert(path, "graphdef", tmp_path / "out")
    assert converted.inputs[0].shape == [-1, 4]
    assert converted.notes == ["input x had a fixed batch size 1 in the graph; served with a dynamic one"]
    x_value = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(onnx_predict(converted, {"x": x_value})["y"], 2 * x_value)


def test_keras_falls_back_to_the_other_library(tf_models: dict[str, builders.Saved], tmp_path: Path) -> None:
    """A Keras 3 HDF5 file whose version attribute says 2.x (re-stamped by some tool): tf_keras
    cannot read its config, Keras 3 can; the fallback is taken and noted."""
    import h5py

    saved = tf_models["two_io-keras.h5"]
    path = Path(shutil.copyfile(saved.path, tmp_path / "restamped.h5"))
    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = "2.4.0"
    converted = convert(path, "keras_h5", tmp_path / "out")
    assert converted.detail == {"keras_version_in_file": "2.4.0", "loaded_with": "keras"}
    assert any(note.startswith("loaded with keras after tf_keras:") for note in converted.notes)
    assert_close(onnx_predict(converted, saved.inputs), saved.outputs)


@pytest.mark.parametrize("rescaling", [True, False])
def test_keras_rescaling_layer_means_raw_pixels(tmp_path: Path, rescaling: bool) -> None:
    """The converter's image hint: raw pixels (scale 1) when the model rescales them itself;
    otherwise no hint (the pipeline's guess, 1/255, applies)."""
    import keras

    keras.utils.set_random_seed(2)
    image = keras.Input((6, 5, 3), name="photo")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(image) if rescaling else image
    probs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(x)))
    path = tmp_path / "photo.keras"
    keras.Model(image, probs).save(path)

    converted = convert(path, "keras", tmp_path / "out")
    if not rescaling:
        assert converted.image is None
        return
    assert converted.image is not None
    assert (converted.image.input, converted.image.layout, converted.image.height, converted.image.width) == (
        "photo",
        "NHWC",
        6,
        5,
    )
    assert converted.image.scale == 1.0 and converted.image.color_mode == "RGB"
    assert any("Rescaling" in note for note in converted.notes)


def test_checkpoint_outputs_override(checkpoint_run: builders.CheckpointRun, tmp_path: Path) -> None:
    """--outputs reaches into the checkpoint's graph: the logits of the newest step."""
    converted = convert(checkpoint_run.directory, "checkpoint", tmp_path, outputs=["model/logits:0"])
    assert [o.name for o in converted.outputs] == ["model/logits"]
    logits = onnx_predict(converted, checkpoint_run.inputs)["model/logits"]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, checkpoint_run.outputs_by_step[1200]["probs"], atol=ATOL)


def test_tf1_inference_switches_become_constants(tmp_path: Path) -> None:
    """keep_prob (fed 1.0 at inference) and is_training (False) are scalars, not model inputs."""
    import tensorflow as tf

    v1 = tf.compat.v1
    generator = np.random.default_rng(9)
    graph = tf.Graph()
    x_value = generator.normal(size=(3, 5)).astype(np.float32)
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 5], name="x")
        keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
        is_training = v1.placeholder(tf.bool, [], name="is_training")
        moving_mean = tf.constant(generator.normal(size=5).astype(np.float32))
        batch_mean = tf.reduce_mean(x, axis=0)
        centred = x - tf.cond(is_training, lambda: batch_mean, lambda: moving_mean)
        hidden = tf.nn.dropout(centred, rate=1.0 - keep_prob)
        scores = tf.matmul(hidden, tf.constant(generator.normal(size=(5, 2)).astype(np.float32)), name="scores")
        with v1.Session(graph=graph) as session:
            want = session.run(scores, {x: x_value, keep_prob: 1.0, is_training: False})
    path = tmp_path / "switches.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())

    converted = convert(path, "graphdef", tmp_path / "out")
    assert [i.name for i in converted.inputs] == ["x"]
    assert converted.notes == [
        "placeholder keep_prob fixed to 1.0 for inference",
        "placeholder is_training fixed to False for inference",
    ]
    np.testing.assert_allclose(onnx_predict(converted, {"x": x_value})["scores"], want, atol=ATOL)
    check_reference(converted)
