"""Tiny TensorFlow-family models with random weights, saved every way the converters read.

Each builder saves a model and records what the source framework itself predicted on fixed inputs
(batch 3) while the model was still in memory, so a test compares onnxruntime against numbers that
did not go through any converter or loader. BatchNorm moving statistics are set to non-trivial
values: with the initial mean 0 / variance 1 a broken BatchNorm conversion would go unnoticed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 3


@dataclass
class Saved:
    """A saved model and the source framework's own outputs on ``inputs`` (served names)."""

    path: Path
    fmt: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]  # in the model's output order
    # Checkpoints: the outputs of the steps that must NOT be served, by step.
    other_steps: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def randomize_batchnorm(model: Any, seed: int) -> None:
    """gamma, beta, moving mean and moving variance all random (variance positive)."""
    generator = rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            weights = []
            for w in layer.get_weights():
                weights.append(generator.uniform(0.5, 2.0, w.shape).astype("float32"))
            gamma, beta, mean, variance = weights
            beta = beta - 1.25
            mean = generator.normal(0.0, 1.0, mean.shape).astype("float32")
            layer.set_weights([gamma, beta, mean, variance])


def keras_outputs(model: Any, inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    result = model.predict(inputs if len(inputs) > 1 else next(iter(inputs.values())), verbose=0)
    if isinstance(result, dict):
        return {n: np.asarray(result[n]) for n in names}
    flat = list(result) if isinstance(result, (list, tuple)) else [result]
    return {n: np.asarray(v) for n, v in zip(names, flat, strict=True)}


# ---- Keras (Keras 3 and tf_keras share the layer API) ----------------------------------------------
def small_cnn(k: Any, seed: int) -> Any:
    """8x8 RGB -> conv -> BatchNorm -> pool -> dense softmax over 4 classes."""
    k.utils.set_random_seed(seed)
    image = k.Input((8, 8, 3), name="image")
    x = k.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    probs = k.layers.Dense(4, activation="softmax", name="probs")(x)
    model = k.Model(image, probs)
    randomize_batchnorm(model, seed)
    return model


def two_in_two_out(k: Any, seed: int) -> Any:
    """Inputs ``features`` (5) and ``extra`` (3); outputs ``score`` (2, linear) and ``klass`` (3, softmax)."""
    k.utils.set_random_seed(seed)
    features = k.Input((5,), name="features")
    extra = k.Input((3,), name="extra")
    x = k.layers.Concatenate()([features, extra])
    x = k.layers.Dense(8, activation="tanh", name="hidden")(x)
    x = k.layers.BatchNormalization(name="bn")(x)
    score = k.layers.Dense(2, name="score")(x)
    klass = k.layers.Dense(3, activation="softmax", name="klass")(x)
    model = k.Model([features, extra], [score, klass])
    randomize_batchnorm(model, seed)
    return model


def keras_inputs(kind: str, seed: int) -> dict[str, np.ndarray]:
    generator = rng(seed + 100)
    if kind == "cnn":
        return {"image": generator.normal(size=(BATCH, 8, 8, 3)).astype("float32")}
    return {
        "features": generator.normal(size=(BATCH, 5)).astype("float32"),
        "extra": generator.normal(size=(BATCH, 3)).astype("float32"),
    }


KERAS_OUTPUTS = {"cnn": ["probs"], "two_io": ["score", "klass"]}


def save_keras(directory: Path, kind: str, library: str, suffix: str, seed: int = 0) -> Saved:
    """``library``: "keras" (Keras 3) or "tf_keras" (a Keras-2-era file); ``suffix``: ".h5" or ".keras"."""
    import warnings

    if library == "keras":
        import keras as k
    else:
        import tf_keras as k
    model = small_cnn(k, seed) if kind == "cnn" else two_in_two_out(k, seed)
    inputs = keras_inputs(kind, seed)
    outputs = keras_outputs(model, inputs, KERAS_OUTPUTS[kind])
    path = directory / f"{kind}_{library}{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return Saved(path, "keras" if suffix == ".keras" else "keras_h5", inputs, outputs)


# ---- SavedModel -------------------------------------------------------------------------------------
def save_keras_export(directory: Path, seed: int = 0) -> Saved:
    """Keras 3 ``model.export``: signature keys are the input names and ``output_0``/``output_1``."""
    import keras

    model = two_in_two_out(keras, seed)
    inputs = keras_inputs("two_io", seed)
    outputs = keras_outputs(model, inputs, ["output_0", "output_1"])
    path = directory / "keras_export"
    model.export(str(path), verbose=False)
    return Saved(path, "savedmodel", inputs, outputs)


def save_tf_module(directory: Path, seed: int = 0) -> Saved:
    """A plain tf.Module with a hand-written signature: keys that are not TensorFlow op names."""
    import tensorflow as tf

    generator = rng(seed)

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(generator.normal(size=(4, 3)).astype("float32"))
            self.mean = tf.Variable(generator.normal(size=(4,)).astype("float32"))
            self.var = tf.Variable(generator.uniform(0.5, 2.0, size=(4,)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="sensor_readings")])
        def serve(self, sensor_readings: Any) -> dict[str, Any]:
            normalised = (sensor_readings - self.mean) / tf.sqrt(self.var + 1e-3)
            logits = tf.matmul(normalised, self.w)
            return {"anomaly score": tf.reduce_sum(logits, axis=1, keepdims=True), "logits": logits}

    module = Scorer()
    path = directory / "tf_module"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    inputs = {"sensor_readings": rng(seed + 100).normal(size=(BATCH, 4)).astype("float32")}
    result = module.serve(tf.constant(inputs["sensor_readings"]))
    outputs = {"anomaly score": result["anomaly score"].numpy(), "logits": result["logits"].numpy()}
    return Saved(path, "savedmodel", inputs, outputs)


# ---- TF1 graphs: frozen GraphDef and checkpoints ----------------------------------------------------
def tf1_classifier(tf: Any, generator: np.random.Generator, trainable: bool) -> dict[str, Any]:
    """x[None, 6] -> batch-norm (moving stats) -> dense -> softmax ``probs``; plus what a training
    script leaves behind: a ``labels`` placeholder, a loss, an optimizer and a global step."""
    v1 = tf.compat.v1

    def param(name: str, value: np.ndarray) -> Any:
        value = value.astype("float32")
        return (
            v1.get_variable(name, initializer=value, use_resource=False) if trainable else tf.constant(value, name=name)
        )

    x = v1.placeholder(tf.float32, [None, 6], name="x")
    labels = v1.placeholder(tf.float32, [None, 3], name="labels")
    with v1.variable_scope("model"):
        mean = param("moving_mean", generator.normal(size=6))
        variance = param("moving_variance", generator.uniform(0.5, 2.0, size=6))
        gamma = param("gamma", generator.uniform(0.5, 1.5, size=6))
        beta = param("beta", generator.normal(size=6))
        w = param("w", generator.normal(size=(6, 3)))
        b = param("b", generator.normal(size=3))
        normalised = tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-3)
        logits = tf.add(tf.matmul(normalised, w), b, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    ops = {"x": x, "probs": probs, "loss": loss}
    if trainable:
        step = v1.train.get_or_create_global_step()
        ops["train"] = v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
    return ops


def save_frozen_graph(directory: Path, seed: int = 0) -> Saved:
    """A frozen graph the TF1 way: variables folded into constants, training nodes left in."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    inputs = {"x": rng(seed + 100).normal(size=(BATCH, 6)).astype("float32")}
    with graph.as_default():
        ops = tf1_classifier(tf, rng(seed), trainable=True)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            outputs = {"probs": session.run(ops["probs"], {ops["x"]: inputs["x"]})}
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["probs", "loss"])
    path = directory / "frozen.pb"
    path.write_bytes(frozen.SerializeToString())
    return Saved(path, "graphdef", inputs, outputs)


def save_function_graph(directory: Path, seed: int = 0) -> Saved:
    """A TF2-style frozen graph (convert_variables_to_constants_v2): outputs named ``Identity``."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    generator = rng(seed)
    w = tf.Variable(generator.normal(size=(5, 2)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="inputs")])
    def forward(inputs: Any) -> Any:
        return tf.nn.relu(tf.matmul(inputs, w))

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    path = directory / "function.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    inputs = {"inputs": rng(seed + 100).normal(size=(BATCH, 5)).astype("float32")}
    return Saved(path, "graphdef", inputs, {"Identity": forward(inputs["inputs"]).numpy()})


@dataclass
class CheckpointRun:
    directory: Path
    inputs: dict[str, np.ndarray]
    outputs_by_step: dict[int, dict[str, np.ndarray]]


def save_checkpoints(
    directory: Path, steps: list[int], seed: int = 0, meta_for: set[int] | None = None
) -> CheckpointRun:
    """One training run saved at several global steps, with weights changed between saves (every
    save writes a .meta unless ``meta_for`` lists the steps that get one)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    directory.mkdir(parents=True, exist_ok=True)
    generator = rng(seed + 7)
    inputs = {"x": rng(seed + 100).normal(size=(BATCH, 6)).astype("float32")}
    outputs: dict[int, dict[str, np.ndarray]] = {}
    graph = tf.Graph()
    with graph.as_default():
        ops = tf1_classifier(tf, rng(seed), trainable=True)
        saver = v1.train.Saver(max_to_keep=None)
        step_var = v1.train.get_global_step()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            for step in steps:
                for var in v1.trainable_variables():
                    shape = var.shape.as_list()
                    value = (
                        generator.uniform(0.5, 2.0, shape) if "variance" in var.name else generator.normal(size=shape)
                    )
                    var.load(value.astype("float32"), session)
                step_var.load(step, session)
                outputs[step] = {"probs": session.run(ops["probs"], {ops["x"]: inputs["x"]})}
                saver.save(
                    session,
                    str(directory / "model.ckpt"),
                    global_step=step,
                    write_meta_graph=meta_for is None or step in meta_for,
                )
    return CheckpointRun(directory, inputs, outputs)


# ---- Keras variants: Sequential, integer inputs, dict inputs and outputs ---------------------------
def save_keras_variant(directory: Path, variant: str, seed: int = 0) -> Saved:
    """``sequential_embedding`` (Keras 3, INT32 token ids through an Embedding of 50 rows),
    ``dict_io`` (Keras 3, dict inputs and outputs, outputs not in key order),
    ``tf_keras_sequential`` (a Keras 2 Sequential model built from ``input_shape``, no Input layer)."""
    import warnings

    generator = rng(seed + 100)
    if variant == "tf_keras_sequential":
        import tf_keras as k
    else:
        import keras as k
    k.utils.set_random_seed(seed)
    if variant == "sequential_embedding":
        model = k.Sequential(
            [
                k.Input((6,), dtype="int32", name="tokens"),
                k.layers.Embedding(50, 4, name="embed"),
                k.layers.GlobalAveragePooling1D(),
                k.layers.Dense(2, name="logits"),
            ]
        )
        inputs = {"tokens": generator.integers(0, 50, size=(BATCH, 6)).astype("int32")}
        outputs = {"logits": np.asarray(model.predict(inputs["tokens"], verbose=0))}
        path = directory / "sequential_embedding.keras"
    elif variant == "dict_io":
        alpha, beta = k.Input((3,), name="alpha"), k.Input((2,), name="beta")
        hidden = k.layers.Dense(4, activation="relu")(k.layers.Concatenate()([alpha, beta]))
        model = k.Model(
            {"alpha": alpha, "beta": beta}, {"zeta": k.layers.Dense(1)(hidden), "eta": k.layers.Dense(2)(hidden)}
        )
        inputs = {
            "alpha": generator.normal(size=(BATCH, 3)).astype("float32"),
            "beta": generator.normal(size=(BATCH, 2)).astype("float32"),
        }
        result = model.predict(inputs, verbose=0)
        outputs = {"zeta": np.asarray(result["zeta"]), "eta": np.asarray(result["eta"])}
        path = directory / "dict_io.keras"
    else:
        model = k.Sequential([k.layers.Dense(3, input_shape=(4,), activation="tanh"), k.layers.Dense(2, name="scores")])
        inputs = {"dense_input": generator.normal(size=(BATCH, 4)).astype("float32")}
        outputs = {"scores": np.asarray(model.predict(inputs["dense_input"], verbose=0))}
        path = directory / "tf_keras_sequential.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return Saved(path, "keras" if path.suffix == ".keras" else "keras_h5", inputs, outputs)


def save_tf1_saved_model(directory: Path, seed: int = 0) -> Saved:
    """A TF1 SavedModel (``simple_save``): reference variables, signature keys unlike the op names."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    inputs = {"features": rng(seed + 100).normal(size=(BATCH, 6)).astype("float32")}
    path = directory / "tf1_saved_model"
    with graph.as_default():
        ops = tf1_classifier(tf, rng(seed), trainable=True)
        logits = graph.get_tensor_by_name("model/logits:0")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            probs, raw = session.run([ops["probs"], logits], {ops["x"]: inputs["features"]})
            v1.saved_model.simple_save(
                session,
                str(path),
                inputs={"features": ops["x"]},
                outputs={"probabilities": ops["probs"], "logits": logits},
            )
    return Saved(path, "savedmodel", inputs, {"logits": raw, "probabilities": probs})


def save_keras2_frozen_graph(directory: Path, seed: int = 0) -> Saved:
    """What Keras-2-era deployment scripts did: build the Keras model in a TF1 graph, take the
    backend session, freeze. Leaves ``keras_learning_phase`` (a PlaceholderWithDefault), Dropout and
    BatchNorm conds (Switch/Merge) and unused assignment placeholders in the graph."""
    import tensorflow as tf
    import tf_keras
    from tf_keras.src import backend as keras_backend

    v1 = tf.compat.v1
    graph = tf.Graph()
    inputs = {"img": rng(seed + 100).normal(size=(BATCH, 8, 8, 3)).astype("float32")}
    with graph.as_default():
        session = v1.Session(graph=graph)
        keras_backend.set_session(session)
        image = tf_keras.Input((8, 8, 3), name="img")
        x = tf_keras.layers.Conv2D(4, 3, name="conv")(image)
        x = tf_keras.layers.BatchNormalization(name="bn")(x)
        x = tf_keras.layers.Dropout(0.5)(x)
        x = tf_keras.layers.Flatten()(x)
        model = tf_keras.Model(image, tf_keras.layers.Dense(3, activation="softmax", name="pred")(x))
        session.run(v1.global_variables_initializer())
        randomize_batchnorm(model, seed)
        outputs = {"pred/Softmax": session.run(model.output, {model.input: inputs["img"]})}
        frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), [model.output.op.name])
        session.close()
    path = directory / "keras2_frozen.pb"
    path.write_bytes(frozen.SerializeToString())
    return Saved(path, "graphdef", inputs, outputs)
