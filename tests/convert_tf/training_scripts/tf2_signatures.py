"""A TF2 SavedModel with two signatures, as a module exported for two uses (run as a script).

``python tf2_signatures.py OUT DEFAULT`` saves ``OUT/export`` with a ``classify`` signature
(features -> probabilities) and an ``embed`` signature (features -> a 4-wide embedding); with
DEFAULT ``yes`` the classifier is also ``serving_default``. ``OUT/expected.npz`` holds an input
batch and what each signature returns for it, computed by TensorFlow in this process.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf


class Model(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        self.encoder = tf.Variable(rng.normal(size=(6, 4)).astype("float32"), name="encoder")
        self.head = tf.Variable(rng.normal(size=(4, 3)).astype("float32"), name="head")

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
    def embed(self, features):
        return {"embedding": tf.nn.tanh(features @ self.encoder)}

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
    def classify(self, features):
        return {"probabilities": tf.nn.softmax(self.embed(features)["embedding"] @ self.head)}


def main(out: Path, default: bool) -> None:
    model = Model()
    signatures = {"classify": model.classify, "embed": model.embed}
    if default:
        signatures["serving_default"] = model.classify
    tf.saved_model.save(model, str(out / "export"), signatures=signatures)
    x = np.random.default_rng(4).normal(size=(5, 6)).astype("float32")
    np.savez(
        out / "expected.npz",
        features=x,
        probabilities=model.classify(x)["probabilities"].numpy(),
        embedding=model.embed(x)["embedding"].numpy(),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] == "yes")
