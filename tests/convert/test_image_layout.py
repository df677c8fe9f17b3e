"""One layout guess (``bundle.layout``) for the converter's image preprocessing and the runtime's
derived one (a bare model.onnx): both stages call it, so they cannot disagree."""

from __future__ import annotations

import pytest

from bundle.layout import guess_layout
from bundle.manifest import Manifest, TensorSpec
from convert.formats import ImageOptions
from convert.image import guess_image
from runtime.codecs.image import image_preprocessing


@pytest.mark.parametrize(
    ("shape", "datatype", "layout"),
    [
        ([-1, 224, 224, 3], "FP32", "NHWC"),
        ([-1, 3, 224, 224], "FP32", "NCHW"),
        ([-1, 28, 28, 1], "UINT8", "NHWC"),
        ([-1, 1, 28, 28], "FP16", "NCHW"),
        ([-1, 3, 3, 1], "FP32", "NHWC"),  # both axes could be channels: the smaller last axis wins
        ([-1, 1, 3, 3], "FP32", "NCHW"),
        ([-1, 224, 224, 4], "FP32", None),
        ([-1, 224, 224, 3], "INT64", None),
        ([-1, 224, 3], "FP32", None),
    ],
)
def test_both_stages_make_the_same_guess(shape: list[int], datatype: str, layout: str | None) -> None:
    assert guess_layout(shape, datatype) == layout
    spec = TensorSpec("image", datatype, shape)
    converter = guess_image([spec], ImageOptions())
    runtime = image_preprocessing(Manifest(name="m", format="onnx", inputs=[spec], outputs=[]))
    assert (converter.layout if converter else None) == layout
    assert (runtime.layout if runtime else None) == layout
    if layout is not None:
        assert (converter.height, converter.width, converter.color_mode) == (
            runtime.height,
            runtime.width,
            runtime.color_mode,
        )


def test_runtime_needs_a_fixed_size_the_converter_defaults_it() -> None:
    spec = TensorSpec("image", "FP32", [-1, -1, -1, 3])
    assert guess_image([spec], ImageOptions()).height == 224
    assert image_preprocessing(Manifest(name="m", format="onnx", inputs=[spec], outputs=[])) is None
