"""Build the two benchmark models with random weights, and their bundles through the project's converter.

Run with .venv/dev's python: ``python bench/build_models.py OUT_DIR``. Writes ``OUT_DIR/mlp.keras`` (32->64->10),
``OUT_DIR/mobilenetv2.keras`` (224x224, BatchNorm moving statistics set to non-trivial values so the graph
does real work), ``OUT_DIR/repo/{mlp,mobilenetv2}/1/`` (ONNX bundles made by ``python -m convert``, so the
benchmark measures what users get), their int8 copies ``mlp_int8`` and ``mobilenetv2_int8`` (``--quantize``),
``OUT_DIR/sample.jpg`` and the 640x480 ``OUT_DIR/photo.jpg`` the image endpoint uploads. Seeded: every run
builds the same models.
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


def convert(out: Path, name: str, *extra: str, source: str | None = None) -> None:
    keras_file = out / f"{source or name}.keras"
    command = [sys.executable, "-m", "convert", str(keras_file), "--repository", str(out / "repo")]
    subprocess.run([*command, "--name", name, "--max-batch-size", "64", "--force", *extra], check=True)


def photo(width: int = 640, height: int = 480) -> np.ndarray:
    """A photo-like picture (smooth colour fields, hard edges, texture) for the image endpoint: the issue's
    640x480 JPEG upload, which JPEG draft mode decodes at half scale for a 224x224 model."""
    from PIL import Image

    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 40.0 + p) * np.cos(y / 55.0 - p) for p in (0, 1, 2)], -1)
    base[(x - 320) ** 2 + (y - 240) ** 2 < 90**2] = (230, 40, 40)
    base[100:140, 50:600] = (20, 200, 90)
    texture = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    texture = np.asarray(texture.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(base * 0.8 + texture * 0.2, 0, 255).astype(np.uint8)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_keras(out)
    convert(out, "mlp")
    # keras.applications.mobilenet_v2.preprocess_input: pixel / 127.5 - 1
    image_args = ("--scale", str(1 / 127.5), "--mean", "1,1,1", "--std", "1,1,1", "--layout", "NHWC")
    convert(out, "mobilenetv2", *image_args)
    # int8 copies for the quantized rows. The weights are random, so the classes mean nothing and the gate is
    # lowered to 0 here: the speed is what is measured; the agreement is recorded in the manifest all the same.
    convert(out, "mlp_int8", "--quantize", "dynamic", "--min-agreement", "0", source="mlp")
    convert(out, "mobilenetv2_int8", *image_args, "--quantize", "static", "--min-agreement", "0", source="mobilenetv2")
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out / "sample.jpg", quality=90)
    Image.fromarray(photo()).save(out / "photo.jpg", quality=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
