"""Guess which input is an image and how pixels become its tensor; the CLI can override the guess.

Which input is an image, and its layout, is ``bundle.layout``'s guess (the runtime makes the same
one for a model without a manifest); this module adds the preprocessing around it.
"""

from __future__ import annotations

from bundle.layout import FLOAT_DATATYPES, IMAGE_DATATYPES, guess_layout, image_axes
from bundle.manifest import ImagePreprocessing, TensorSpec
from convert.errors import ConversionError
from convert.formats import ImageOptions

DEFAULT_SIZE = 224  # used when the model's spatial size is dynamic


def guess_image(inputs: list[TensorSpec], options: ImageOptions) -> ImagePreprocessing | None:
    """The preprocessing for the single image-like input, or None (none, several, or disabled)."""
    if options.disable:
        return None
    candidates = [(spec, guess_layout(spec.shape, spec.datatype)) for spec in inputs]
    if options.layout:
        candidates = [(s, options.layout) for s in inputs if len(s.shape) == 4 and s.datatype in IMAGE_DATATYPES]
    images = [(s, layout) for s, layout in candidates if layout]
    if len(images) != 1 or len(inputs) != 1:
        return None
    spec, layout = images[0]
    return build(spec, layout, None, options)


def build(spec: TensorSpec, layout: str, base: ImagePreprocessing | None, options: ImageOptions) -> ImagePreprocessing:
    """``base`` (a converter's own preprocessing) with the CLI's overrides applied."""
    if layout not in ("NHWC", "NCHW"):
        raise ConversionError(f"--layout {layout!r}: expected NHWC or NCHW")
    height, width, channels = image_axes(spec.shape, layout)
    color = options.color_mode or (base.color_mode if base else ("L" if channels == 1 else "RGB"))
    if color not in ("RGB", "BGR", "L"):
        raise ConversionError(f"--color-mode {color!r}: expected RGB, BGR or L")
    if channels not in (-1, 1 if color == "L" else 3):
        raise ConversionError(
            f"input {spec.name!r} has {channels} channels ({layout}), which colour mode {color} cannot fill"
        )
    default_scale = 1.0 / 255.0 if spec.datatype in FLOAT_DATATYPES else 1.0
    n = 1 if color == "L" else 3
    mean = options.mean if options.mean is not None else (base.mean if base else [0.0])
    std = options.std if options.std is not None else (base.std if base else [1.0])
    for label, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, n):
            raise ConversionError(f"{label} has {len(values)} values; colour mode {color} needs 1 or {n}")
    if any(v == 0 for v in std):
        raise ConversionError("--std values must be non-zero")
    return ImagePreprocessing(
        input=spec.name,
        layout=layout,  # type: ignore[arg-type]
        height=height if height > 0 else (base.height if base else DEFAULT_SIZE),
        width=width if width > 0 else (base.width if base else DEFAULT_SIZE),
        color_mode=color,  # type: ignore[arg-type]
        datatype=spec.datatype,
        scale=options.scale if options.scale is not None else (base.scale if base else default_scale),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
    )


def apply(
    inputs: list[TensorSpec], converter_guess: ImagePreprocessing | None, options: ImageOptions
) -> ImagePreprocessing | None:
    """The final preprocessing: the converter's, else the guess; CLI options override either."""
    if options.disable:
        return None
    if converter_guess is None:
        return guess_image(inputs, options)
    spec = next((s for s in inputs if s.name == converter_guess.input), None)
    if spec is None:
        return converter_guess
    return build(spec, options.layout or converter_guess.layout, converter_guess, options)
