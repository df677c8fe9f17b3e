"""The OpenAPI document is true: it lists exactly the app's routes, and the live server keeps to it.

The fuzz run drives the real server with schemathesis (its CLI, bounded in examples per operation
and in total time) and fails on any 5xx or any response that does not match the document.
``MODELPORT_FUZZ_EXAMPLES`` (default 50) and ``MODELPORT_FUZZ_SECONDS`` (default 120) bound it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from runtime.routes import DOCS_HTML, OPENAPI
from tests.reliability.figures import record
from tests.support.server import RunningServer, run_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
FUZZ_EXAMPLES = int(os.environ.get("MODELPORT_FUZZ_EXAMPLES", "50"))
FUZZ_SECONDS = int(os.environ.get("MODELPORT_FUZZ_SECONDS", "120"))
METHODS = {"get", "post", "put", "patch", "delete"}


def documented_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in METHODS}


def registered_routes() -> set[tuple[str, str]]:
    """The routes ``create_app`` registers (HEAD is aiohttp's automatic twin of GET: not an operation)."""
    from runtime.app import create_app
    from runtime.settings import Settings

    app = create_app(Settings(repository=Path("/nonexistent")))  # nothing loads until startup
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_every_registered_route_is_documented_and_every_documented_route_exists() -> None:
    documented, registered = documented_routes(OPENAPI), registered_routes()
    assert registered - documented == set(), "routes missing from runtime/openapi.py"
    assert documented - registered == set(), "documented routes the app does not register"


def test_every_operation_documents_its_errors_as_the_error_schema() -> None:
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), f"{method} {path} has no operationId"
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and not path.endswith("/ready") and path != "/v2/health/ready":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


def test_served_document_and_docs_page(server: RunningServer) -> None:
    served = requests.get(f"{server.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == json.loads(json.dumps(OPENAPI))
    page = requests.get(f"{server.url}/docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.text == DOCS_HTML
    for path in OPENAPI["paths"]:
        assert path in page.text
    # Self-contained: nothing loads from elsewhere (no CDN, no external script, style or font).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text, re.IGNORECASE)
    assert "<script" not in page.text.lower()


def fuzz_schema(spec: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The document with path parameters narrowed to what the test repository holds.

    Random model names only ever reach the 404 branch; an enum lets the positive cases reach the
    model and its decoding paths, while negative cases still try names outside it.
    """
    spec = copy.deepcopy(spec)
    for item in spec["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": models}
                elif parameter["in"] == "path" and parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": ["1"]}
    return spec


FUZZ_TOKEN = "fuzz-infer-token"


@pytest.fixture(scope="module")
def auth_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server with access control on, as an operator would run a shared one: an infer token for the
    fuzzer, and an admin token it does not have (so the repository API answers 403, not "off")."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"{FUZZ_TOKEN} infer\nfuzz-admin-token-not-given admin\n")
    with run_server(repository, "--auth-tokens-file", str(tokens)) as running:
        yield running


def test_fuzz_live_server_against_the_document(auth_server: RunningServer, tmp_path: Path) -> None:
    """Fuzz with an infer-scope token: inference reaches the model, the repository API answers 403, and
    schemathesis checks that each operation declaring bearer security rejects a request without it (401)."""
    server = auth_server
    bearer = {"Authorization": f"Bearer {FUZZ_TOKEN}"}
    spec = requests.get(f"{server.url}/openapi.json", headers=bearer, timeout=10).json()
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(fuzz_schema(spec, ["mlp", "vision"])))
    report_dir = tmp_path / "report"
    cmd = [
        str(SCHEMATHESIS),
        "run",
        str(schema_file),
        "--url",
        server.url,
        "--header",
        f"Authorization: Bearer {FUZZ_TOKEN}",
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        "all",
        # Schema-valid is not model-valid (a generic tensor is rarely the model's input): 400 is right.
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--max-time",
        str(FUZZ_SECONDS),
        # One worker: with two, hypothesis's ast.parse runs in two threads at once and CPython 3.11.7 fails
        # with "AST constructor recursion depth mismatch" (CPython gh-106905, fixed in later 3.11 releases).
        "--workers",
        "1",
        "--seed",
        "20261125",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--report",
        "json,har",
        "--report-dir",
        str(report_dir),
        "--report-json-path",
        str(report_dir / "run.json"),
        "--report-har-path",
        str(report_dir / "run.har"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, cwd=tmp_path)
    report = json.loads((report_dir / "run.json").read_text())
    entries = json.loads((report_dir / "run.har").read_text())["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    record(
        f"fuzz: {len(entries)} requests sent, {report['test_cases']['generated']} test cases, "
        f"{report['operations']['tested']} operations, {server_errors} 5xx, "
        f"{sum(f['count'] for f in report['failures'])} failures, "
        f"{report['running_time']:.0f}s; statuses {dict(sorted(statuses.items()))}"
    )
    assert report["operations"]["tested"] == len(documented_routes(spec))
    assert server_errors == 0, run.stdout[-8000:]
    assert report["failures"] == [], run.stdout[-8000:]
    assert report["errors"] == [], run.stdout[-8000:]
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert statuses[200] > 0  # the fuzzer reached real inference, not only the error branches
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    assert server.process.poll() is None
    assert FUZZ_TOKEN not in server.log(), "a token reached the server log"
