"""Build the example models ``make serve`` converts and serves: ``python examples/make_examples.py OUTDIR``.

Writes into OUTDIR:

* ``colour_classifier.keras``: a Keras 3 CNN that names the dominant colour of a 64x64 RGB image
  (float pixels in [0, 1], NHWC) as one of the five classes in ``labels.txt``. Two conv blocks with
  BatchNormalization, global average pooling, softmax. Trained for a few seconds on synthetic
  images, so its answers mean something (``sample.jpg`` is red).
* ``tabular_regressor.keras``: a Keras 3 MLP from 8 numeric features (input ``features``) to one
  number (output ``prediction``), trained on y = 2*x0 - x1 + 0.5*x2*x3 + sin(x4) + 0.1*(x5+x6+x7).
* ``labels.txt`` and ``sample.jpg``: copies of the committed files beside this script (the sample
  is regenerated with ``--write-sample``; it is deterministic).

Everything is seeded and TensorFlow runs with op determinism, so the same machine and library
versions give the same files. The models are not committed: they are built at ``make`` time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LABELS_FILE = HERE / "labels.txt"
SAMPLE_FILE = HERE / "sample.jpg"
IMAGE_SIZE = 64
SEED = 20240611
# Class -> RGB centre in [0, 1]; the order is the order of labels.txt.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.92, 0.85, 0.15),
    "purple": (0.55, 0.18, 0.70),
}


def labels() -> list[str]:
    names = [line.strip() for line in LABELS_FILE.read_text().splitlines() if line.strip()]
    if names != list(COLOURS):
        raise SystemExit(f"{LABELS_FILE} lists {names}, expected {list(COLOURS)}")
    return names


def colour_images(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of one dominant colour each: a jittered background, a darker or lighter blob, noise."""
    classes = rng.integers(0, len(COLOURS), size=count)
    centres = np.array(list(COLOURS.values()), dtype=np.float32)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    for i, klass in enumerate(classes):
        base = centres[klass] + rng.normal(0, 0.06, 3)
        cy, cx, radius = rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(6, 20)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2)[..., None]
        shade = rng.uniform(0.6, 1.3)
        image = np.where(blob, base * shade, base) + rng.normal(0, 0.05, (IMAGE_SIZE, IMAGE_SIZE, 3))
        images[i] = np.clip(image, 0.0, 1.0)
    return images, classes


def build_colour_classifier(keras, train: tuple[np.ndarray, np.ndarray]):
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(len(COLOURS), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="colour_classifier")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, classes = train
    model.fit(images, classes, epochs=6, batch_size=32, shuffle=False, verbose=0)
    return model


def tabular_target(x: np.ndarray) -> np.ndarray:
    return (2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + np.sin(x[:, 4]) + 0.1 * x[:, 5:8].sum(1))[:, None]


def build_tabular_regressor(keras, rng: np.random.Generator):
    features = rng.normal(size=(2048, 8)).astype(np.float32)
    target = tabular_target(features).astype(np.float32)
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(32, activation="relu", name="hidden1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden2")(x)
    outputs = keras.layers.Dense(1, name="prediction")(x)
    model = keras.Model(inputs, outputs, name="tabular_regressor")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(features, target, epochs=15, batch_size=64, shuffle=False, verbose=0)
    return model


def write_sample_image(path: Path) -> None:
    """A 96x96 red scene (the server resizes to 64x64): gradient background, a lighter disc."""
    from PIL import Image

    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    red = np.array(COLOURS["red"], dtype=np.float32)
    image = red * (0.85 + 0.15 * xx[..., None] / 95.0)
    disc = ((yy - 40) ** 2 + (xx - 55) ** 2 < 22**2)[..., None]
    image = np.where(disc, np.clip(red * 1.2, 0, 1), image)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=85)


def load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[None] / 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--write-sample", action="store_true", help=f"regenerate {SAMPLE_FILE.name} beside this script")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    names = labels()
    if args.write_sample or not SAMPLE_FILE.exists():
        write_sample_image(SAMPLE_FILE)

    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    train = colour_images(rng, 1200)
    test_images, test_classes = colour_images(rng, 300)
    classifier = build_colour_classifier(keras, train)
    accuracy = float((classifier.predict(test_images, verbose=0).argmax(1) == test_classes).mean())
    sample_probabilities = classifier.predict(load_image(SAMPLE_FILE), verbose=0)[0]
    regressor = build_tabular_regressor(keras, rng)
    check = rng.normal(size=(256, 8)).astype(np.float32)
    rmse = float(np.sqrt(((regressor.predict(check, verbose=0) - tabular_target(check)) ** 2).mean()))

    save_atomically(classifier, out / "colour_classifier.keras")
    save_atomically(regressor, out / "tabular_regressor.keras")
    shutil.copyfile(LABELS_FILE, out / "labels.txt")
    shutil.copyfile(SAMPLE_FILE, out / "sample.jpg")
    print(
        f"colour_classifier.keras: held-out accuracy {accuracy:.3f}; "
        f"sample.jpg -> {names[sample_probabilities.argmax()]}"
    )
    print(f"tabular_regressor.keras: held-out RMSE {rmse:.3f} (target std {tabular_target(check).std():.3f})")
    print(f"wrote {out}/{{colour_classifier.keras,tabular_regressor.keras,labels.txt,sample.jpg}}")
    return 0


def save_atomically(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
