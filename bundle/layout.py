"""Which 4-D input is an image, and how its axes are laid out: one guess for both stages.

The converter uses it to propose image preprocessing for the manifest; the runtime uses it for a
bare ``model.onnx`` served without a manifest. An input of rank 4 with 1 or 3 channels on the last
axis (NHWC, TensorFlow's habit) or the second (NCHW, PyTorch's) is an image. When both axes
qualify, NHWC wins only if the last axis is the smaller, which is how real images look (224x224x3,
not 3x3x224). Dynamic dimensions (-1 or None) never count as channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Layout = Literal["NHWC", "NCHW"]
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
IMAGE_DATATYPES = FLOAT_DATATYPES | {"UINT8"}
CHANNELS = (1, 3)


def guess_layout(shape: Sequence[int | None], datatype: str) -> Layout | None:
    """NHWC, NCHW, or None when the tensor does not look like a batch of images."""
    if len(shape) != 4 or datatype not in IMAGE_DATATYPES:
        return None
    last, second = shape[3], shape[1]
    if last in CHANNELS and second in CHANNELS:
        return "NHWC" if last <= second else "NCHW"
    if last in CHANNELS:
        return "NHWC"
    if second in CHANNELS:
        return "NCHW"
    return None


def image_axes(shape: Sequence[int | None], layout: Layout) -> tuple[int | None, int | None, int | None]:
    """(height, width, channels) of a 4-D shape in ``layout``."""
    h_axis, w_axis, c_axis = (1, 2, 3) if layout == "NHWC" else (2, 3, 1)
    return shape[h_axis], shape[w_axis], shape[c_axis]
