"""The fast image path: JPEG draft mode (DCT scaling) for photos much larger than the model input, compared
with the straightforward full decode + bilinear resize it replaces."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from bundle.manifest import ImagePreprocessing
from runtime.codecs.image import decode_image, to_tensor
from tests.runtime import models

MAX_PIXELS = 40_000_000
SPEC = ImagePreprocessing(input="image", layout="NHWC", height=224, width=224, color_mode="RGB", datatype="FP32")


def photo(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """A photo-like picture: smooth colour fields, hard edges, some texture (random noise is no photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6, 3)
    base = np.stack([128 + 100 * np.sin(x / 40.0 + p) * np.cos(y / 55.0 - p) for p in phase], -1)
    cx, cy = rng.integers(100, width - 100), rng.integers(100, height - 100)
    base[(x - cx) ** 2 + (y - cy) ** 2 < 80**2] = rng.integers(0, 256, 3)
    base[100:140, 50 : width - 40] = rng.integers(0, 256, 3)
    texture = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    texture = np.asarray(texture.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(base * 0.8 + texture * 0.2, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def straightforward(data: bytes, spec: ImagePreprocessing) -> np.ndarray:
    """Full decode, EXIF orientation, RGB, bilinear resize: the path before draft mode."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    pixels = np.asarray(image.resize((spec.width, spec.height), Image.Resampling.BILINEAR))
    return to_tensor(pixels, spec)


def test_draft_decode_stays_close_to_the_full_decode():
    """Pixel difference of draft mode on 640x480 photos resized to 224x224 (documented in docs/runtime.md)."""
    diffs = []
    for seed in range(4):
        data = jpeg(photo(seed))
        fast = decode_image(data, SPEC, MAX_PIXELS)
        slow = straightforward(data, SPEC)
        assert fast.shape == slow.shape == (224, 224, 3) and fast.dtype == np.float32
        diffs.append(np.abs(fast - slow) * 255)  # scale 1/255: back to pixel levels
        assert not np.array_equal(fast, slow)  # draft mode really ran
    levels = np.concatenate([d.ravel() for d in diffs])
    assert levels.mean() < 1.5, levels.mean()
    assert np.percentile(levels, 99) <= 6, np.percentile(levels, 99)


def test_small_images_and_pngs_decode_exactly_as_before():
    small = jpeg(photo(7, 400, 300))  # under twice the input size: no draft
    np.testing.assert_array_equal(decode_image(small, SPEC, MAX_PIXELS), straightforward(small, SPEC))
    buffer = io.BytesIO()
    Image.fromarray(photo(8)).save(buffer, "PNG")
    data = buffer.getvalue()
    # reduce() then bilinear: within one level of the direct bilinear resize
    assert np.abs(decode_image(data, SPEC, MAX_PIXELS) - straightforward(data, SPEC)).max() * 255 <= 1.01


def test_draft_respects_exif_rotation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = jpeg(photo(3, 960, 480), exif)
    fast = decode_image(data, SPEC, MAX_PIXELS)
    slow = straightforward(data, SPEC)
    assert np.abs(fast - slow).mean() * 255 < 1.5


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_classifier_answers_agree_with_the_full_decode(tmp_path, layout):
    """The served answer for a photo: the same top-1 class, probabilities within 1e-2 of the full decode's."""
    model = models._convnet("c", ["N", 224, 224, 3] if layout == "NHWC" else ["N", 3, 224, 224], 3, 4, layout == "NHWC")
    spec = ImagePreprocessing(input="image", layout=layout, height=224, width=224, color_mode="RGB", datatype="FP32")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in range(6):
        data = jpeg(photo(seed))
        fast = session.run(None, {"image": decode_image(data, spec, MAX_PIXELS)[None]})[0]
        slow = session.run(None, {"image": straightforward(data, spec)[None]})[0]
        assert fast.argmax() == slow.argmax()
        np.testing.assert_allclose(fast, slow, atol=1e-2)
