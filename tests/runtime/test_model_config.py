"""config.pbtxt: the text-format reader and every version policy case (latest N, all, specific)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.model_config import (
    ConfigError,
    VersionPolicy,
    parse_text_proto,
    read_version_policy,
    version_policy,
)

# what convert/bundle.py writes, plus a policy
TRITON_CONFIG = """
name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 64  # rows
input [
  { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  {
    name: "probs"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }
]
version_policy: { latest: { num_versions: 2 } }
dynamic_batching < max_queue_delay_microseconds: 100 >
"""


def test_reads_a_triton_config():
    config = parse_text_proto(TRITON_CONFIG)
    assert config["name"] == ["mlp"] and config["max_batch_size"] == [64]
    assert config["input"][0]["dims"] == [4] and config["output"][0]["data_type"] == ["TYPE_FP32"]
    assert config["dynamic_batching"][0]["max_queue_delay_microseconds"] == [100]
    assert version_policy(config) == VersionPolicy("latest", num_versions=2)


@pytest.mark.parametrize(
    ("text", "policy", "selected"),
    [
        ("", VersionPolicy(), [5]),  # no policy: latest 1
        ("version_policy { latest { num_versions: 2 } }", VersionPolicy("latest", 2), [5, 3]),
        ("version_policy: { latest: { num_versions: 9 } }", VersionPolicy("latest", 9), [5, 3, 2, 1]),
        ("version_policy: { latest {} }", VersionPolicy("latest", 1), [5]),
        ("version_policy: { all { } }", VersionPolicy("all"), [5, 3, 2, 1]),
        ("version_policy: { specific { versions: [1, 3] } }", VersionPolicy("specific", versions=(3, 1)), [3, 1]),
        ("version_policy { specific { versions: 2 versions: 7 } }", VersionPolicy("specific", versions=(7, 2)), [2]),
    ],
)
def test_policies_select_versions(text, policy, selected):
    parsed = version_policy(parse_text_proto(text))
    assert parsed == policy
    assert parsed.select([1, 2, 3, 5]) == selected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version_policy: { latest { num_versions: 0 } }", "num_versions must be one integer of at least 1"),
        ("version_policy: { newest { } }", "exactly one of latest"),
        ("version_policy: { all {} latest {} }", "exactly one of latest"),
        ("version_policy: { specific { } }", "must list non-negative integer versions"),
        ('version_policy: { specific { versions: ["1"] } }', "must list non-negative integer versions"),
        ("version_policy: { all { }", "missing '}'"),
        ("name: \n\n  @", "line 3: unexpected character '@'"),
        ("max_batch_size 8", "needs ':' and a value"),
    ],
)
def test_bad_configs_name_the_problem(text, message):
    with pytest.raises(ConfigError, match=message):
        version_policy(parse_text_proto(text, "m/config.pbtxt"), "m/config.pbtxt")


def test_read_from_a_model_directory(tmp_path: Path):
    assert read_version_policy(tmp_path) == VersionPolicy()  # no config.pbtxt
    (tmp_path / "config.pbtxt").write_text("version_policy: { all {} }\n")
    assert read_version_policy(tmp_path).kind == "all"
    (tmp_path / "config.pbtxt").write_text("version_policy: {\n latest { num_versions: -1 } }\n")
    with pytest.raises(ConfigError) as exc:
        read_version_policy(tmp_path)
    assert str(tmp_path / "config.pbtxt") in str(exc.value)
