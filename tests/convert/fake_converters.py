"""Converters that misbehave on purpose, plugged in through ``convert_model(converters=...)``.

They wrap the ONNX pass-through so the served file is real; what they change is the reference the
verification compares against, or how the process ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.formats import onnx as onnx_format


def _session_reference(model_path: Path, offset: float):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: v + offset for n, v in zip(names, session.run(names, inputs), strict=True)}

    return reference


def exact(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    """A "source framework" that is onnxruntime itself: parity must be exact."""
    converted = onnx_format.convert(source, options, workdir)
    converted.reference = _session_reference(converted.model_path, 0.0)
    converted.source_format = "fake_exact"
    return converted


def off_by_a_bit(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    """The reference differs by 0.01 everywhere: verification must fail at the default tolerance."""
    converted = onnx_format.convert(source, options, workdir)
    converted.reference = _session_reference(converted.model_path, 0.01)
    converted.source_format = "fake_off"
    return converted


def refuses(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    print("a framework warning nobody asked for", file=sys.stderr, flush=True)
    raise ConversionError(f"{source}: refused on purpose")


def unpack_error(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    from convert.errors import UnpackError

    raise UnpackError(f"{source}: bad member")  # a subclass, with its own exit code


def buggy(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    return {}["missing"]  # a KeyError: a converter bug, not a user error


def crashes(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    print("fatal: the native library gave up", flush=True)
    os._exit(17)  # like a segfault or the OOM killer: no Python exception reaches the parent


def hangs(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    import time

    time.sleep(600)
    raise AssertionError("not reached")


FAKES = {
    "fake_hangs": "tests.convert.fake_converters:hangs",
    "fake_exact": "tests.convert.fake_converters:exact",
    "fake_off": "tests.convert.fake_converters:off_by_a_bit",
    "fake_refuses": "tests.convert.fake_converters:refuses",
    "fake_buggy": "tests.convert.fake_converters:buggy",
    "fake_unpack_error": "tests.convert.fake_converters:unpack_error",
    "fake_crashes": "tests.convert.fake_converters:crashes",
}
