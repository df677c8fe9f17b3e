"""Encoded images (PNG, JPEG, ...) -> the model's input tensor, as the manifest's preprocessing says.

Steps, in order: refuse images over the pixel limit from the header alone (before any decoding, so
a decompression bomb costs nothing), decode with Pillow (a JPEG at least twice the input size at 1/2, 1/4 or
1/8 scale: draft mode), apply the EXIF orientation, convert to the
colour mode (RGB, BGR or L), resize to width x height with bilinear filtering, compute
``(pixel * scale - mean) / std`` per channel in float32, lay out HWC or CHW, cast to the datatype.
A model without a manifest gets a derived preprocessing when it has exactly one 4-D input whose
channel axis (1 or 3 channels) and spatial size are fixed: RGB/L, scale 1/255, mean 0, std 1.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bundle.datatypes import Datatype
from bundle.layout import guess_layout, image_axes
from bundle.manifest import ImagePreprocessing, Manifest
from runtime.errors import BadRequest, PayloadTooLarge

DRAFT_MIN_RATIO = 2  # JPEG draft (DCT-scaled) decoding only when the photo is at least this much larger
REDUCING_GAP = 3.0  # Image.reduce (a box filter) before the bilinear resize while the scale is above 3x

Image.MAX_IMAGE_PIXELS = None  # our own limit (max_pixels) applies, with a 413 instead of a warning


def image_preprocessing(manifest: Manifest) -> ImagePreprocessing | None:
    """The manifest's image preprocessing, or one derived from a single NHWC/NCHW input."""
    if manifest.image is not None:
        return manifest.image
    if len(manifest.inputs) != 1:
        return None
    spec = manifest.inputs[0]
    layout = guess_layout(spec.shape, spec.datatype)  # the converter's guess too
    if layout is None:
        return None
    height, width, channels = image_axes(spec.shape, layout)
    if height <= 0 or width <= 0:  # without a manifest there is no size to resize to
        return None
    scale = 1.0 if spec.datatype == "UINT8" else 1.0 / 255.0
    return ImagePreprocessing(
        input=spec.name,
        layout=layout,
        height=height,
        width=width,
        color_mode="L" if channels == 1 else "RGB",
        datatype=spec.datatype,
        scale=scale,
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open without decoding (Pillow reads the header only) and check the pixel count."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # Pillow's text names its internal buffer object: say it in our words
        raise BadRequest(
            "the upload is not a decodable image: not a format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"the upload is not a decodable image ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(--max-image-pixels)"
        )
    return image


def _decode(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _draft(image, spec)
            image.load()
            image = ImageOps.exif_transpose(image)
            mode = "L" if spec.color_mode == "L" else "RGB"
            if image.mode != mode:
                image = image.convert(mode)
            if image.size != (spec.width, spec.height):
                image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"the upload is not a decodable image ({type(exc).__name__}: {exc})") from None
    return to_tensor(pixels, spec)


def _draft(image: Image.Image, spec: ImagePreprocessing) -> None:
    """Let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling) when the model input is at least
    ``DRAFT_MIN_RATIO`` times smaller on both axes: far fewer pixels to decode and to resize. Pillow picks the
    smallest scale that still covers the requested size, so the final bilinear resize always shrinks. The
    pixels differ slightly from a full decode (docs/runtime.md, "Image decoding" has the measured difference)."""
    if image.format != "JPEG":
        return
    width, height = spec.width, spec.height
    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
        width, height = height, width
    if image.size[0] >= DRAFT_MIN_RATIO * width and image.size[1] >= DRAFT_MIN_RATIO * height:
        image.draft(image.mode, (width, height))


def decode_image(data: bytes, spec: ImagePreprocessing, max_pixels: int) -> np.ndarray:
    """One encoded image -> an array of shape [H, W, C] (NHWC) or [C, H, W] (NCHW), no batch axis."""
    return _decode(_open(data, max_pixels), spec)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read (its size known, nothing decoded); ``decode_opened`` finishes it."""
    return _open(data, max_pixels)


def decode_opened(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """``decode_image`` of an image ``open_image`` returned."""
    return _decode(image, spec)


def to_tensor(pixels: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """Pixels (H, W) or (H, W, 3) in 0..255 -> the normalised, laid-out, cast tensor without batch axis."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.color_mode == "BGR":
        pixels = pixels[:, :, ::-1]
    # float32 throughout, in place: one buffer for (pixel * scale - mean) / std, no float64 intermediate
    values = np.multiply(pixels, np.float32(spec.scale), dtype=np.float32)
    values -= np.asarray(spec.mean, dtype=np.float32)
    values /= np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    dtype = Datatype(spec.datatype).numpy
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return np.ascontiguousarray(values, dtype=dtype)  # the one conversion to the model's dtype (and layout copy)


def decode_batch(
    items: np.ndarray, spec: ImagePreprocessing, max_pixels: int, max_total_pixels: int | None = None
) -> np.ndarray:
    """A V2 BYTES tensor of encoded images (raw bytes, or base64 text in JSON) -> a batch tensor.

    Every header is read and counted before any image is decoded: each image against ``max_pixels``
    and all of them together against ``max_total_pixels``, so a batch of images each just under the
    per-image limit cannot buy a multiple of its decoding work."""
    return np.stack([_decode(image, spec) for image in open_batch(items, spec, max_pixels, max_total_pixels)])


def open_batch(
    items: np.ndarray, spec: ImagePreprocessing, max_pixels: int, max_total_pixels: int | None = None
) -> list[Image.Image]:
    """``decode_batch``'s first half: every image's header read and counted, nothing decoded."""
    opened = []
    total = 0
    for item in items.ravel().tolist():
        if isinstance(item, str):
            try:
                item = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(
                    f"input {spec.input!r}: a JSON BYTES image must be base64 text (or use binary_data_size)"
                ) from None
        image = _open(item, max_pixels)
        total += image.size[0] * image.size[1]
        if max_total_pixels is not None and total > max_total_pixels:
            raise PayloadTooLarge(
                f"input {spec.input!r}: the images of this request hold more than {max_total_pixels} pixels "
                f"together (--max-request-pixels); {len(opened) + 1} of {items.size} counted so far"
            )
        opened.append(image)
    if not opened:
        raise BadRequest(f"input {spec.input!r}: no images")
    return opened
