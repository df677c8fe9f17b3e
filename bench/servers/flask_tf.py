"""The old service's shape: Flask under gunicorn (one sync worker) calling a Keras model in TensorFlow.

``KERAS_MODEL=model.keras gunicorn -w 1 -b 127.0.0.1:PORT --chdir bench/servers flask_tf:app`` with .venv/dev.
POST /predict {"instances": nested list} -> {"predictions": nested list}. ``model(x)`` rather than
``model.predict`` (which costs ~50 ms of per-call overhead) so the baseline is the old service at its best.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from flask import Flask, jsonify, request

model = keras.models.load_model(os.environ["KERAS_MODEL"], compile=False)
app = Flask(__name__)


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    x = np.asarray(request.get_json(force=True)["instances"], dtype=np.float32)
    return jsonify({"predictions": np.asarray(model(x, training=False)).tolist()})
