"""runtime/codecs/grpc_wire.py writes ModelInferResponse bytes by hand: they must be exactly the bytes
protobuf's serializer writes for the same message (here tritonclient's copy of the messages: the wire
contract), and parse back to the same fields."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from runtime.codecs import grpc_wire

CASES = [
    ("mlp", "1", None, [("probs", "FP32", (1, 3), np.arange(3, dtype="<f4").tobytes())]),
    ("m", "", "", [("y", "INT64", (), b"\x01" * 8)]),  # empty version and id: proto3 defaults, not written
    ("m", "12", "req-9", [("a", "FP16", (2, 0), b""), ("b", "BOOL", (3,), b"\x01\x00\x01")]),
    ("mobilenetv2", "1", "x" * 200, [("logits", "FP32", (1, 1000), bytes(4000))]),  # lengths past one byte
    ("m", "1", "é", [("ñame", "BYTES", (1,), b"\x02\x00\x00\x00hi")]),  # UTF-8 is counted in bytes
    ("m", "1", None, [("big", "UINT8", (70_000, 1), bytes(70_000))]),  # a three-byte varint dimension
]


def reference(model: str, version: str, request_id: str | None, outputs) -> bytes:
    message = pb.ModelInferResponse(model_name=model, model_version=version)
    if request_id is not None:
        message.id = request_id
    for name, datatype, shape, data in outputs:
        message.outputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_output_contents.append(data)
    return message.SerializeToString()


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + str(i) for i, c in enumerate(CASES)])
def test_bytes_equal_protobufs_serializer(case):
    written = grpc_wire.raw_response(*case)
    assert written == reference(*case)
    assert grpc_wire.raw_response(*case) == written  # again, from the cache
    parsed = pb.ModelInferResponse.FromString(written)
    model, version, request_id, outputs = case
    assert (parsed.model_name, parsed.model_version, parsed.id) == (model, version, request_id or "")
    assert [(o.name, o.datatype, tuple(o.shape)) for o in parsed.outputs] == [o[:3] for o in outputs]
    assert list(parsed.raw_output_contents) == [o[3] for o in outputs]


def test_varint():
    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1):
        message = pb.InferParameter(uint64_param=value)  # field 5 of a oneof, varint: key 0x28, the value
        assert message.SerializeToString() == b"\x28" + grpc_wire.varint(value)
