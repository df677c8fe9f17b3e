"""--input-shape / --input-dtype handling: no torch needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.errors import ConversionError
from convert.formats import ConvertOptions
from convert.formats.torch_common import example_inputs, parse_input_dtypes

SOURCE = Path("/models/net.pt")


def test_one_dtype_applies_to_every_input() -> None:
    assert parse_input_dtypes("int64", ["a", "b"], SOURCE) == {"a": "INT64", "b": "INT64"}


def test_per_input_dtypes_default_to_fp32() -> None:
    assert parse_input_dtypes("ids=INT64", ["ids", "mask"], SOURCE) == {"ids": "INT64", "mask": "FP32"}


def test_dtype_for_an_unknown_input_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"names 'idz', which is not an --input-shape input \(ids\)"):
        parse_input_dtypes("idz=INT64", ["ids"], SOURCE)


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"--input-dtype 'BYTES' is not supported"):
        parse_input_dtypes("BYTES", ["x"], SOURCE)


def test_examples_keep_the_flag_order() -> None:
    options = ConvertOptions(input_shapes={"b": [-1, 2], "a": [4, 3, 8, 8]}, input_dtype="b=INT32")
    examples = example_inputs(options, SOURCE, "TorchScript")
    assert [(e.name, e.shape, e.datatype) for e in examples] == [("b", (-1, 2), "INT32"), ("a", (4, 3, 8, 8), "FP32")]


@pytest.mark.parametrize("dims", [[1, 0, 3], [1, -1], [0, 3], []])
def test_non_positive_dimensions_are_refused(dims: list[int]) -> None:
    with pytest.raises(ConversionError, match="--input-shape x="):
        example_inputs(ConvertOptions(input_shapes={"x": dims}), SOURCE, "TorchScript")
