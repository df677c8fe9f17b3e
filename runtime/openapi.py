"""The runtime's HTTP contract as an OpenAPI 3.0 document, and a self-contained page that renders it.

``runtime/routes.py`` builds the document from its route table (``document(ROUTES)``), so every route
the app registers is documented and every documented route exists; the server serves it at
``GET /openapi.json`` and ``render_docs`` of it at ``GET /docs``. schemathesis fuzzes the live server
against it (no 5xx, every response matches its schema).

The document is generic: it describes every model the server could load, so tensor payloads are
schemas of the protocol (names, datatypes, shapes, nested data), not of one model's inputs.

Standard library only: the server imports this at start, and the page must load nothing external
(production hosts often have no route to a CDN), so the HTML is rendered here, once, at import.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from bundle import datatypes


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (sent when the model's queue is full).",
        "schema": {"type": "string"},
    }
}

# Errors any model-addressed operation can answer; each operation adds its own.
E400 = _error("Bad request: malformed body, unknown input or output, wrong datatype, shape or data length.")
E404 = _error("Unknown model, version or route.")
E413 = _error("Over a limit: body size, tensor element count, image pixels or batch size.")
E415 = _error("Unsupported content type.")
E503 = _error("Model not ready, or its queue is full (then with Retry-After); retry later.", RETRY_AFTER)
E504 = _error("The request's deadline (--request-timeout) passed before inference finished.")

INFER_ERRORS = {"400": E400, "404": E404, "413": E413, "415": E415, "503": E503, "504": E504}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error answer: one message saying what is wrong and, where it applies, which input.",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "ModelReady": {
        "type": "object",
        "required": ["name", "version", "ready"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "ready": {"type": "boolean"},
            "error": {"type": "string", "description": "Why the model is not ready (its load error)."},
        },
    },
    "Parameters": {
        "type": "object",
        "description": "Free-form V2 parameters (e.g. binary_data_output, binary_data_size, binary_data).",
        "additionalProperties": True,
    },
    "Datatype": {"type": "string", "enum": list(datatypes.NAMES)},
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": _ref("Datatype"),
            "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1 marks a variable dim."},
        },
    },
    "TensorData": {
        "type": "array",
        "description": "Row-major tensor contents, flat or nested; strings for BYTES, booleans for BOOL.",
        "items": {},
    },
    "RequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": _ref("Datatype"),
            "parameters": _ref("Parameters"),
            "data": _ref("TensorData"),
        },
    },
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "inputs": {"type": "array", "items": _ref("RequestInput")},
            "outputs": {"type": "array", "items": _ref("RequestOutput")},
        },
    },
    "ResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": _ref("Datatype"),
            "parameters": _ref("Parameters"),
            "data": _ref("TensorData"),
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "outputs": {"type": "array", "items": _ref("ResponseOutput")},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
        },
    },
    "SimplePredictRequest": {
        "description": (
            'Named tensors {"inputs": {"x": [[1, 2, 3]]}}; for a single-input model just the nested list (or '
            '{"inputs": nested list}); for tabular models (every input one value per row) records '
            '[{"field": value}, ...] or {"records": [...]}, or {"columns": [...], "rows": [[...], ...]}. '
            "A tensor missing only its batch axis gets it added; values are cast to the input's datatype."
        ),
        "oneOf": [
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "oneOf": [
                            {"type": "object", "additionalProperties": {"type": "array", "items": {}}},
                            {"type": "array", "items": {}},
                        ]
                    }
                },
            },
            {"type": "object", "required": ["records"], "properties": {"records": _ref("Records")}},
            {
                "type": "object",
                "required": ["columns", "rows"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "rows": {"type": "array", "items": {"type": "array", "items": {}}},
                },
            },
            {"type": "array", "items": {}, "description": "A nested list, or records."},
        ],
    },
    "Records": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    "SimplePredictResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "outputs": {
                "type": "object",
                "description": "Output name -> nested list (strings for BYTES outputs).",
                "additionalProperties": True,
            },
            "records": {
                "type": "array",
                "description": "Tabular requests only: one object per row, {output: value}.",
                "items": {"type": "object", "additionalProperties": True},
            },
        },
    },
    "ModelSummary": {
        "type": "object",
        "description": (
            "A model in plain words: a sentence saying how to call it, inputs and outputs, image "
            "preprocessing, labels, endpoints, provenance and conversion parity (when known)."
        ),
        "required": ["name", "version", "format", "ready"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "format": {"type": "string"},
            "platform": {"type": "string"},
            "ready": {"type": "boolean"},
            "error": {"type": "string", "description": "Why the model is not ready."},
            "description": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "max_batch_size": {"type": "integer"},
            "endpoints": {"type": "object", "additionalProperties": {"type": "string"}},
            "image": {"type": "object", "additionalProperties": True},
            "labels": {"type": "array", "items": {"type": "string"}},
            "source": {"type": "object", "additionalProperties": True},
            "parity": {"type": "object", "additionalProperties": True},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "version", "ready", "format"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "string"}},
                        "ready": {"type": "boolean"},
                        "format": {"type": "string", "enum": ["onnx", "pmml"]},
                    },
                },
            }
        },
    },
    "ImageUpload": {
        "type": "object",
        "description": "A multipart form with the encoded image (PNG, JPEG, ...) in one file field.",
        "properties": {"image": {"type": "string", "format": "binary"}},
    },
    "ImagePrediction": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {
                "type": "array",
                "description": "Classifier-like outputs only: the top-k classes, best first.",
                "items": {
                    "type": "object",
                    "required": ["index", "score"],
                    "properties": {
                        "index": {"type": "integer"},
                        "label": {"type": "string", "description": "When the manifest has labels."},
                        "score": {"type": "number"},
                    },
                },
            },
            "outputs": {"type": "object", "additionalProperties": True},
        },
    },
}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


MODEL = _path_param("name", "The model's name (its directory in the repository).")
VERSION = _path_param("version", "The model version (a numeric directory); the default is the highest.")
MODEL_QUERY = {
    "name": "model",
    "in": "query",
    "required": False,
    "description": "Which model, when the server holds several (else 400).",
    "schema": {"type": "string"},
}
TOP_K = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "description": "How many classes to return for classifier-like outputs.",
    "schema": {"type": "integer", "minimum": 1},
}

BINARY_HEADER = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": (
        "Binary tensor data extension: the byte length of the JSON inference request that starts the body; "
        "the raw tensors follow it in input order, each of its input's parameters.binary_data_size bytes. "
        "Required when the body is application/octet-stream."
    ),
    "schema": {"type": "integer", "minimum": 0},
}

INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": _ref("InferenceRequest"),
            "example": {
                "id": "42",
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            },
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "JSON inference request (Inference-Header-Content-Length bytes) followed by raw tensors.",
        },
    },
}

INFER_OK = {
    "description": (
        "Inference result. With binary outputs requested (binary_data_output) the body is "
        "application/octet-stream: the JSON response then the raw outputs, split by the response's "
        "Inference-Header-Content-Length header."
    ),
    "headers": {
        "Inference-Header-Content-Length": {
            "description": "Length of the JSON part when the body carries binary outputs.",
            "schema": {"type": "integer"},
        }
    },
    "content": {
        "application/json": {"schema": _ref("InferenceResponse")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _infer(version: bool) -> dict[str, Any]:
    params = [MODEL, VERSION, BINARY_HEADER] if version else [MODEL, BINARY_HEADER]
    return {
        "post": {
            "tags": ["V2"],
            "operationId": "v2_model_version_infer" if version else "v2_model_infer",
            "summary": "Run inference (JSON tensors or the binary tensor data extension)",
            "parameters": params,
            "requestBody": INFER_BODY,
            "responses": {"200": INFER_OK, **INFER_ERRORS},
        }
    }


def _metadata(version: bool) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["V2"],
            "operationId": "v2_model_version_metadata" if version else "v2_model_metadata",
            "summary": "Model metadata: inputs and outputs with V2 datatypes and shapes",
            "parameters": [MODEL, VERSION] if version else [MODEL],
            "responses": {"200": _json(_ref("ModelMetadata"), "Model metadata."), "400": E400, "404": E404},
        }
    }


def _model_ready(version: bool) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["V2"],
            "operationId": "v2_model_version_ready" if version else "v2_model_ready",
            "summary": "Model readiness: 200 when it can serve inference",
            "parameters": [MODEL, VERSION] if version else [MODEL],
            "responses": {
                "200": _json(_ref("ModelReady"), "Ready."),
                "400": E400,
                "404": E404,
                "503": _json(_ref("ModelReady"), "Known but not ready (loading, or failed to load): see error."),
            },
        }
    }


IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": _ref("ImageUpload")},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

SIMPLE_ERRORS = {"400": E400, "404": E404, "413": E413, "415": E415, "503": E503, "504": E504}


def _simple_predict(with_name: bool) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["Simple API"],
            "operationId": "simple_model_predict" if with_name else "simple_predict",
            "summary": (
                "Predict from nested lists or records"
                if with_name
                else "Predict with the only model served (or ?model=NAME)"
            ),
            "parameters": [MODEL] if with_name else [MODEL_QUERY],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _ref("SimplePredictRequest"),
                        "example": {"inputs": {"x": [[0.1, 0.2, 0.3, 0.4]]}},
                    }
                },
            },
            "responses": {"200": _json(_ref("SimplePredictResponse"), "Named outputs."), **SIMPLE_ERRORS},
        }
    }


def _simple_image(with_name: bool) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["Simple API"],
            "operationId": "simple_model_image" if with_name else "simple_image",
            "summary": "Classify an uploaded image (multipart field 'image' or a raw image body)",
            "description": (
                "The image is decoded with Pillow, converted to the model's colour mode, resized to its "
                "height x width, laid out and normalised as the model's manifest says. Images over the pixel "
                "limit are refused before decoding (decompression bombs)."
            ),
            "parameters": [MODEL, TOP_K] if with_name else [MODEL_QUERY, TOP_K],
            "requestBody": IMAGE_BODY,
            "responses": {"200": _json(_ref("ImagePrediction"), "Outputs and top-k classes."), **SIMPLE_ERRORS},
        }
    }


def _get(tag: str, op_id: str, summary: str, responses: dict[str, Any], params: list | None = None) -> dict:
    operation: dict[str, Any] = {"tags": [tag], "operationId": op_id, "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    return {"get": operation}


TEXT_OK = {"content": {"text/plain": {"schema": {"type": "string"}}}}

# Triton's model repository extension (runtime/handlers/repository_api.py); admin scope.
E401 = _error("No bearer token, or an unknown one (with WWW-Authenticate: Bearer).")
E403 = _error("The token's scope is too small, or the repository API is off (no admin token configured).")
REPOSITORY_ROW = {
    "type": "object",
    "required": ["name", "version", "state", "reason"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string", "description": "Empty for a model with no version loaded."},
        "state": {"type": "string", "enum": ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
        "reason": {"type": "string", "description": "Why it is not READY (a load error, 'unloaded', ...)."},
    },
}


def _repository(op_id: str, summary: str, body: dict[str, Any], ok: dict[str, Any], with_name: bool) -> dict:
    operation: dict[str, Any] = {
        "tags": ["Model control"],
        "operationId": op_id,
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"200": ok, "400": E400, "401": E401, "403": E403},
    }
    if with_name:
        operation["parameters"] = [MODEL]
        operation["responses"]["404"] = E404
    return {"post": operation}


_LOAD_BODY = {"type": "object", "properties": {"parameters": {"type": "object"}}}
_EMPTY_OK = _json({"type": "object"}, "Done.")
REPOSITORY_OPERATIONS: list[dict[str, Any]] = [
    _repository(
        "repository_index",
        "Every model in the repository with its versions' state and reason",
        {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        _json({"type": "array", "items": REPOSITORY_ROW}, "The index."),
        with_name=False,
    ),
    _repository(
        "repository_load",
        "Load or reload a model (the new versions warm up beside the serving ones; a failure keeps them)",
        _LOAD_BODY,
        _EMPTY_OK,
        with_name=True,
    ),
    _repository(
        "repository_unload",
        "Unload a model once its requests in flight have finished",
        _LOAD_BODY,
        _EMPTY_OK,
        with_name=True,
    ),
]

# Every operation the runtime serves, whatever its path; the route table (runtime/routes.py) names one
# per route by operationId and ``document`` builds the paths from that table.
_OPERATIONS: list[dict[str, Any]] = [
    _get("V2", "v2_live", "Server liveness", {"200": _json(_ref("Live"), "The process is up.")}),
    _get(
        "V2",
        "v2_ready",
        "Server readiness: 200 once every model is loaded and warmed up",
        {"200": _json(_ref("Ready"), "Ready."), "503": _json(_ref("Ready"), "Not ready yet, or shutting down.")},
    ),
    _get("V2", "v2_server_metadata", "Server metadata and extensions", {"200": _json(_ref("ServerMetadata"), "")}),
    _metadata(version=False),
    _metadata(version=True),
    _model_ready(version=False),
    _model_ready(version=True),
    _infer(version=False),
    _infer(version=True),
    _get("Simple API", "simple_models", "Every model served, in plain words", {"200": _json(_ref("ModelList"), "")}),
    _get(
        "Simple API",
        "simple_model_info",
        "One model in plain words: inputs, outputs, image preprocessing, labels, provenance",
        {"200": _json(_ref("ModelSummary"), ""), "404": E404},
        [MODEL],
    ),
    _simple_predict(with_name=True),
    _simple_image(with_name=True),
    _simple_predict(with_name=False),
    _simple_image(with_name=False),
    *REPOSITORY_OPERATIONS,
    _get(
        "Operations",
        "metrics",
        "Prometheus metrics (nv_inference_* per model)",
        {"200": {"description": "Prometheus text exposition format.", **TEXT_OK}},
    ),
    _get(
        "Operations",
        "openapi",
        "This document",
        {
            "200": {
                "description": "OpenAPI 3.0 document.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    ),
    _get(
        "Operations",
        "docs",
        "This document as a page",
        {"200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
    ),
    _get(
        "Operations",
        "page",
        "A page to try every model in a browser (self-contained: loads nothing from another host)",
        {"200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
    ),
]
OPERATIONS: dict[str, dict[str, Any]] = {op["operationId"]: op for item in _OPERATIONS for op in item.values()}

INFO: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "modelport runtime",
        "version": "1",
        "description": (
            "Serves converted models over the Open Inference Protocol (KServe V2 REST, with Triton's binary "
            "tensor data extension) and a simple JSON and image-upload API. Every error is a JSON body "
            '{"error": "..."}: 4xx for bad client input, 503 when not ready or over capacity (with '
            "Retry-After), 504 past the request deadline."
        ),
    },
    "tags": [
        {"name": "V2", "description": "Open Inference Protocol (KServe V2) REST."},
        {"name": "Simple API", "description": "JSON nested lists and image uploads, for people with curl."},
        {"name": "Model control", "description": "Triton's model repository extension (admin token)."},
        {"name": "Operations", "description": "Metrics and this documentation."},
    ],
    "components": {
        "schemas": SCHEMAS,
        # With --auth-tokens-file every operation but health, readiness and /metrics needs a token.
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def document(routes: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    """The OpenAPI document of ``(method, path, operationId)`` routes, in their order. A route whose
    operation is not in ``OPERATIONS`` is a KeyError at import: every route is documented."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation_id in routes:
        paths.setdefault(path, {})[method.lower()] = OPERATIONS[operation_id]
    spec = dict(INFO)
    spec["paths"] = paths
    return spec


# ---- the human-readable page ----------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
details{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}
.m{display:inline-block;min-width:3.5rem;font-weight:bold;font-family:monospace}
.get{color:#1a6}.post{color:#15c}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f6f6f6;padding:.5rem;overflow:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
"""


def _pre(value: Any) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=2))}</pre>"


def _render_operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<details><summary><span class="m {method}">{method.upper()}</span> <code>{html.escape(path)}</code>'
        f" &mdash; {html.escape(op.get('summary', ''))}</summary>"
    ]
    if op.get("description"):
        parts.append(f"<p>{html.escape(op['description'])}</p>")
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td><td>{html.escape(p.get('description', ''))}</td></tr>"
            for p in op["parameters"]
        )
        parts.append(f"<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>{rows}</table>")
    body = op.get("requestBody")
    if body:
        for media, content in body["content"].items():
            parts.append(f"<p>Request body <code>{html.escape(media)}</code></p>")
            if "example" in content:
                parts.append(_pre(content["example"]))
            parts.append(_pre(content.get("schema", {})))
    rows = "".join(
        f"<tr><td>{code}</td><td>{html.escape(resp.get('description', ''))}</td>"
        f"<td>{', '.join(html.escape(m) for m in resp.get('content', {}))}</td></tr>"
        for code, resp in op["responses"].items()
    )
    parts.append(f"<table><tr><th>status</th><th>meaning</th><th>content</th></tr>{rows}</table></details>")
    return "".join(parts)


def render_docs(spec: dict[str, Any]) -> str:
    """The spec as one static HTML page: no script, no external resource, readable in any browser."""
    sections: dict[str, list[str]] = {tag["name"]: [] for tag in spec.get("tags", [])}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for tag in op.get("tags", ["Other"]):
                sections.setdefault(tag, []).append(_render_operation(path, method, op))
    info = spec["info"]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(info['title'])} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(info['title'])} API</h1><p>{html.escape(info['description'])}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.0).</p>',
    ]
    descriptions = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    for tag, operations in sections.items():
        out.append(f"<h2>{html.escape(tag)}</h2><p>{html.escape(descriptions.get(tag, ''))}</p>")
        out.extend(operations)
    out.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f"<details><summary><code>{html.escape(name)}</code></summary>{_pre(schema)}</details>")
    out.append("</body></html>")
    return "\n".join(out)
