"""A small onnxruntime runtime for MLServer (its own venv, .venv/mlserver): what a team would write for ONNX.

Set in model-settings.json as ``"implementation": "mlserver_ort.OrtRuntime"`` with ``parameters.uri`` the
.onnx file; ``ORT_THREADS`` sets onnxruntime's intra-op threads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runtime.engines import EngineOptions
from runtime.engines.onnx import session_options


class OrtRuntime(MLModel):
    async def load(self) -> bool:
        options = session_options(EngineOptions(intra_op_threads=int(os.environ.get("ORT_THREADS", "2"))))
        self._session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {t.name: NumpyCodec.decode_input(t).astype(np.float32) for t in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        outputs = [NumpyCodec.encode_output(name=n, payload=r) for n, r in zip(self._outputs, results, strict=True)]
        return InferenceResponse(model_name=self.name, outputs=outputs)
