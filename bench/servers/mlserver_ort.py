"""A small onnxruntime runtime for MLServer (its own venv, .venv/mlserver): what a team would write for ONNX.

Set in model-settings.json as ``"implementation": "mlserver_ort.OrtRuntime"`` with ``parameters.uri`` the
.onnx file; ``ORT_THREADS`` sets onnxruntime's intra-op threads.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OrtRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "2"))
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as runtime/engines/onnx.py
        self._session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {t.name: NumpyCodec.decode_input(t).astype(np.float32) for t in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        outputs = [NumpyCodec.encode_output(name=n, payload=r) for n, r in zip(self._outputs, results, strict=True)]
        return InferenceResponse(model_name=self.name, outputs=outputs)
