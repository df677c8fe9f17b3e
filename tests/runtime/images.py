"""Test images and the by-hand preprocessing the image endpoints must reproduce (Pillow + numpy only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.runtime.models import CNN_IMAGE, NCHW_IMAGE

SPECS = {"cnn": CNN_IMAGE, "cnn_nchw": NCHW_IMAGE}


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    return encode(pixels, "PNG")


def by_hand(data: bytes, model: str) -> np.ndarray:
    """What the manifest says, written out: decode, mode, bilinear resize, (p*scale-mean)/std, layout, batch."""
    spec = SPECS[model]
    image = Image.open(io.BytesIO(data)).convert("L" if spec.color_mode == "L" else "RGB")
    image = image.resize((spec.width, spec.height), Image.BILINEAR)
    pixels = np.asarray(image).astype(np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    values = (pixels * np.float32(spec.scale) - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None].astype(np.float32))
