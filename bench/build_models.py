"""Build the two benchmark models with random weights, and their bundles through the project's converter.

Run with .venv/dev's python: ``python bench/build_models.py OUT_DIR``. Writes ``OUT_DIR/mlp.keras`` (32->64->10),
``OUT_DIR/mobilenetv2.keras`` (224x224, BatchNorm moving statistics set to non-trivial values so the graph
does real work), ``OUT_DIR/repo/{mlp,mobilenetv2}/1/`` (ONNX bundles made by ``python -m convert``, so the
benchmark measures what users get) and ``OUT_DIR/sample.jpg``. Seeded: every run builds the same models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def build_keras(out: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    mlp = keras.Sequential(
        [keras.Input((32,), name="x"), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
    )
    mlp.save(out / "mlp.keras")
    net = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, beta.shape).astype("float32"),
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, var.shape).astype("float32"),
                ]
            )
    net.save(out / "mobilenetv2.keras")


def convert(out: Path, name: str, *extra: str) -> None:
    command = [sys.executable, "-m", "convert", str(out / f"{name}.keras"), "--repository", str(out / "repo")]
    subprocess.run([*command, "--name", name, "--max-batch-size", "64", "--force", *extra], check=True)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_keras(out)
    convert(out, "mlp")
    # keras.applications.mobilenet_v2.preprocess_input: pixel / 127.5 - 1
    convert(out, "mobilenetv2", "--scale", str(1 / 127.5), "--mean", "1,1,1", "--std", "1,1,1", "--layout", "NHWC")
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out / "sample.jpg", quality=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
