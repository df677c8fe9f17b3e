"""Models saved the way training scripts save them: the served model is the inference graph.

The scripts in ``training_scripts/`` run as separate Python processes (a TF1 script disables TF2
behaviour for its whole process), train for real and record TensorFlow's own predictions; the
tests convert what they saved through the whole pipeline and compare onnxruntime with those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bundle.manifest import Manifest
from convert import cli
from convert.errors import ConversionError
from convert.formats import ConvertOptions, GraphOptions, SignatureOptions
from convert.pipeline import convert_model

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "training_scripts"
ATOL = 1e-4
RUNS = {
    "checkpoint": ("tf1_train.py", "checkpoint"),
    "frozen": ("tf1_train.py", "frozen"),
    "savedmodel": ("tf1_train.py", "savedmodel"),
    "two_signatures": ("tf2_signatures.py", "no"),
    "two_signatures_default": ("tf2_signatures.py", "yes"),
}


@dataclass
class Run:
    directory: Path
    expected: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every training script run once, concurrently (each is mostly TensorFlow start-up)."""
    root = Path(tmp_path_factory.mktemp("training"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    started = {}
    for name, (script, mode) in RUNS.items():
        (root / name).mkdir()
        started[name] = subprocess.Popen(
            [sys.executable, str(SCRIPTS / script), str(root / name), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, process in started.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {output[-2000:]}"
    return {name: Run(root / name, dict(np.load(root / name / "expected.npz"))) for name in RUNS}


def predict(repository: Path, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def convert(source: Path, repository: Path, name: str, **options: object) -> Manifest:
    return convert_model(source, repository, name, options=ConvertOptions(**options), subprocess=False)


def assert_inference_graph(manifest: Manifest, left_out: set[str]) -> None:
    """Inputs x only, outputs the probabilities only; the training placeholders left out, recorded."""
    assert [i.name for i in manifest.inputs] == ["x"]
    assert [o.name for o in manifest.outputs] == ["probs"]
    assert manifest.parity is not None and manifest.parity.verified
    interface = manifest.source.detail["interface"]
    assert interface["chosen"] == "found in a training graph"
    assert interface["inputs"] == ["x:0"] and interface["outputs"] == ["probs:0"]
    assert set(interface["left_out"]) == left_out
    assert "labels" in interface["left_out"]["y"]
    assert "--inputs/--outputs" in interface["summary"]


TRAINING_PLACEHOLDERS = {"y", "keep_prob", "learning_rate", "is_training"}


def test_checkpoint_from_a_training_loop(runs: dict[str, Run], tmp_path: Path) -> None:
    """Saver in a loop (steps 10, 20, 30): the newest step, its predictions, not its loss."""
    run = runs["checkpoint"]
    manifest = convert(run.directory, tmp_path, "ckpt")
    assert manifest.source.format == "checkpoint" and manifest.source.detail["step"] == 30
    assert_inference_graph(manifest, TRAINING_PLACEHOLDERS)
    got = predict(tmp_path, "ckpt", {"x": run.expected["x"]})
    np.testing.assert_allclose(got["probs"], run.expected["probs"], atol=ATOL)


def test_frozen_graph_with_training_ops(runs: dict[str, Run], tmp_path: Path) -> None:
    """Frozen with the loss, accuracy, summaries and gradients as output nodes: probs is served."""
    run = runs["frozen"]
    manifest = convert(run.directory / "frozen_model.pb", tmp_path, "frozen")
    assert manifest.source.format == "graphdef"
    assert_inference_graph(manifest, {"y", "keep_prob", "is_training"})  # learning_rate was not frozen in
    got = predict(tmp_path, "frozen", {"x": run.expected["x"]})
    np.testing.assert_allclose(got["probs"], run.expected["probs"], atol=ATOL)


def test_tf1_savedmodel_without_a_signature(runs: dict[str, Run], tmp_path: Path) -> None:
    run = runs["savedmodel"]
    manifest = convert(run.directory / "export", tmp_path, "sm")
    assert manifest.source.format == "savedmodel" and manifest.source.detail["tags"] == ["train"]
    assert_inference_graph(manifest, TRAINING_PLACEHOLDERS)
    got = predict(tmp_path, "sm", {"x": run.expected["x"]})
    np.testing.assert_allclose(got["probs"], run.expected["probs"], atol=ATOL)


def test_outputs_option_wins(runs: dict[str, Run], tmp_path: Path) -> None:
    """--outputs picks another prediction; asking for the accuracy makes the labels an input."""
    run = runs["checkpoint"]
    manifest = convert(run.directory, tmp_path, "pred", outputs=["predictions"])
    assert [i.name for i in manifest.inputs] == ["x"] and [o.name for o in manifest.outputs] == ["predictions"]
    assert manifest.source.detail["interface"]["chosen"] == "--outputs given, inputs found"
    got = predict(tmp_path, "pred", {"x": run.expected["x"]})
    np.testing.assert_array_equal(got["predictions"], run.expected["probs"].argmax(axis=1))

    manifest = convert(
        run.directory, tmp_path, "acc", outputs=["net/logits/BiasAdd"], format_options=[GraphOptions(inputs=["x"])]
    )
    assert manifest.source.detail["interface"]["chosen"] == "--inputs/--outputs"
    logits = predict(tmp_path, "acc", {"x": run.expected["x"]})["net/logits/BiasAdd"]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, run.expected["probs"], atol=ATOL)


def test_cli_prints_the_choice_and_the_override(
    runs: dict[str, Run], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_CONVERT_INPROCESS", "1")
    code = cli.main([str(runs["frozen"].directory / "frozen_model.pb"), "--repository", str(tmp_path), "--name", "m"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: found in a training graph: inputs x:0; outputs probs:0; left out y (labels/targets" in err
    assert "override with --inputs/--outputs" in err


def test_savedmodel_serving_default_among_two(runs: dict[str, Run], tmp_path: Path) -> None:
    run = runs["two_signatures_default"]
    manifest = convert(run.directory / "export", tmp_path, "sm")
    assert manifest.source.detail["signature"] == "serving_default"
    assert [o.name for o in manifest.outputs] == ["probabilities"]
    got = predict(tmp_path, "sm", {"features": run.expected["features"]})
    np.testing.assert_allclose(got["probabilities"], run.expected["probabilities"], atol=ATOL)


def test_savedmodel_two_signatures_no_default_refused_then_picked(runs: dict[str, Run], tmp_path: Path) -> None:
    run = runs["two_signatures"]
    with pytest.raises(ConversionError) as info:
        convert(run.directory / "export", tmp_path, "refused")
    message = str(info.value)
    assert "classify, embed" in message and "--signature NAME" in message
    assert not (tmp_path / "refused").exists()

    for signature, output in (("classify", "probabilities"), ("embed", "embedding")):
        manifest = convert(
            run.directory / "export", tmp_path, signature, format_options=[SignatureOptions(signature=signature)]
        )
        assert manifest.source.detail["signature"] == signature
        assert [o.name for o in manifest.outputs] == [output]
        got = predict(tmp_path, signature, {"features": run.expected["features"]})
        np.testing.assert_allclose(got[output], run.expected[output], atol=ATOL)

    with pytest.raises(ConversionError, match=r"--signature 'predict'.*classify, embed"):
        convert(run.directory / "export", tmp_path, "typo", format_options=[SignatureOptions(signature="predict")])


def test_errors_name_the_archive_and_member_not_the_workdir(runs: dict[str, Run], tmp_path: Path) -> None:
    """A failure inside an unpacked archive names the archive the user gave and the member."""
    archive = tmp_path / "training-run.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(runs["frozen"].directory / "frozen_model.pb", arcname="run/frozen_model.pb")
        tar.add(SCRIPTS / "tf1_train.py", arcname="run/train.py")
    with pytest.raises(ConversionError) as info:
        convert(archive, tmp_path / "repo", "m", outputs=["no_such_tensor"])
    message = str(info.value)
    assert message.startswith(f"{archive} (member run/frozen_model.pb): --outputs names 'no_such_tensor'")
    assert "modelport-convert-" not in message


def test_labels_found_by_structure_not_name(tmp_path: Path) -> None:
    """A regression target called ``reference_scores``: it meets no weight before the loss."""
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(5)
    graph = tf.Graph()
    x_value = rng.normal(size=(4, 3)).astype(np.float32)
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="readings")
        target = v1.placeholder(tf.float32, [None, 1], name="reference_scores")
        score = tf.matmul(x, tf.constant(rng.normal(size=(3, 1)).astype(np.float32)), name="score")
        error = tf.reduce_mean(tf.math.squared_difference(score, target), name="mse")
        tf.identity(v1.gradients(error, [x])[0], name="saliency_grad")
        with v1.Session(graph=graph) as session:
            want = session.run(score, {x: x_value})
    path = tmp_path / "regression.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    manifest = convert(path, tmp_path / "repo", "reg")
    assert [i.name for i in manifest.inputs] == ["readings"] and [o.name for o in manifest.outputs] == ["score"]
    assert "reference_scores" in manifest.source.detail["interface"]["left_out"]
    np.testing.assert_allclose(predict(tmp_path / "repo", "reg", {"readings": x_value})["score"], want, atol=ATOL)
