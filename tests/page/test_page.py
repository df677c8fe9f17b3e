"""``GET /``: the try-it page, in real headless Chromium against the real server and example models.

What a person does on it is what the tests do: open it, upload ``examples/sample.jpg``, fill the
tabular form (with the mouse and with the keyboard only), send a bad input, set a token, use it on a
phone-sized screen. Each answer on the page is compared with the same request made straight to the
API, and the code the page offers (curl, requests, tritonclient) is run and must answer the same.
Screenshots go to build/test-artifacts/page/.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from playwright.sync_api import expect

from tests.page.conftest import screenshot
from tests.support.examples import EXAMPLES
from tests.support.server import RunningServer, run_server

STATIC = Path(__file__).resolve().parents[2] / "runtime" / "static"
FEATURES = [0.25, -1.5, 2.0, 0.75, 3.125, -0.5, 1.0, 0.0625]


def open_model(page, server: RunningServer, name: str) -> None:
    page.goto(f"{server.url}/#model={name}")
    page.wait_for_selector(f"#model-title:has-text('{name}')")


def snippet(page, lang: str) -> str:
    return page.locator(f"pre[data-lang='{lang}']").inner_text()


def run_python(code: str, cwd: Path) -> str:
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{code}\n{run.stderr[-2000:]}"
    return run.stdout


def run_shell(code: str, cwd: Path) -> str:
    run = subprocess.run(["bash", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{code}\n{run.stderr[-2000:]}"
    return run.stdout


def test_page_is_one_self_contained_document(server: RunningServer) -> None:
    response = requests.get(f"{server.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = response.text
    # the stylesheet and the script are inlined; no URL names another host
    assert (STATIC / "app.js").read_text() in html and (STATIC / "app.css").read_text() in html
    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"https?://", html.replace("http://localhost", ""))


def test_lists_every_model_with_its_details(page, server: RunningServer) -> None:
    page.goto(f"{server.url}/")
    page.wait_for_selector("#models tbody tr")
    page.wait_for_selector("#status:has-text('all ready')")
    rows = page.locator("#models tbody tr")
    listed = {rows.nth(i).get_attribute("data-model"): rows.nth(i).inner_text() for i in range(rows.count())}
    assert sorted(listed) == ["claims", "colour-classifier", "tabular-regressor"]
    for name, text in listed.items():
        assert "ready" in text, name
    assert "pmml" in listed["claims"] and "onnx" in listed["colour-classifier"]

    page.click("text=colour-classifier")
    page.wait_for_selector("#model-title:has-text('colour-classifier')")
    section = page.locator("#model").inner_text()
    info = requests.get(f"{server.url}/api/models/colour-classifier", timeout=10).json()
    for fact in ["64 \u00d7 64 RGB", "NHWC", "opset 17", "keras", "purple", "probabilities", "[-1, 64, 64, 3]"]:
        assert fact in section, fact
    assert f"verified against the source framework on {info['parity']['samples']} samples" in section
    assert "tf2onnx " + info["source"]["converters"]["tf2onnx"] in section
    # the links to the API's own documents
    for href in ("/docs", "/openapi.json", "/metrics"):
        assert page.locator(f"nav a[href='{href}']").count() == 1
    screenshot(page, "1-models")


def test_image_upload_shows_the_api_answer(page, server: RunningServer, tmp_path: Path) -> None:
    open_model(page, server, "colour-classifier")
    page.set_input_files("#image-file", str(EXAMPLES / "sample.jpg"))
    page.wait_for_selector("#predictions li")
    assert page.locator("img.preview").get_attribute("src").startswith("blob:")
    with open(EXAMPLES / "sample.jpg", "rb") as image:
        api = requests.post(
            f"{server.url}/api/models/colour-classifier/image", files={"image": image}, timeout=30
        ).json()["predictions"]
    items = page.locator("#predictions li")
    assert items.count() == 5
    top = items.nth(0)
    assert top.get_attribute("data-label") == "red" and api[0]["label"] == "red"
    assert float(top.get_attribute("data-score")) == api[0]["score"]
    assert top.locator(".score").inner_text() == f"{api[0]['score']:.4f}"
    shown = [items.nth(i).get_attribute("data-label") for i in range(5)]
    assert shown == [p["label"] for p in api]
    width = top.locator(".meter span").evaluate("el => el.getBoundingClientRect().width")
    track = top.locator(".meter").evaluate("el => el.getBoundingClientRect().width")
    assert width == pytest.approx(track * api[0]["score"], abs=2)
    assert float(page.locator(".latency").get_attribute("data-ms")) > 0
    screenshot(page, "2-image")

    # the code offered for it runs and answers the same
    (tmp_path / "sample.jpg").write_bytes((EXAMPLES / "sample.jpg").read_bytes())
    curl = json.loads(run_shell(snippet(page, "curl"), tmp_path))
    assert curl["predictions"] == api
    out = run_python(snippet(page, "Python requests"), tmp_path)
    assert out.startswith("200 ") and ast.literal_eval(out[4:]) == api
    out = run_python(snippet(page, "tritonclient"), tmp_path)
    name, values = out.split(" ", 1)
    scores = np.asarray(ast.literal_eval(values))[0]
    assert name == "probabilities" and int(scores.argmax()) == 0
    assert float(np.float32(scores[0])) == pytest.approx(api[0]["score"], rel=1e-6)


def test_image_dropped_on_the_box(page, server: RunningServer) -> None:
    """A real drop event carrying the file, as a browser fires it when a file is dragged in."""
    open_model(page, server, "colour-classifier")
    encoded = base64.b64encode((EXAMPLES / "sample.jpg").read_bytes()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            return transfer;
        }""",
        encoded,
    )
    page.dispatch_event("label.drop", "dragover", {"dataTransfer": transfer})
    assert "over" in page.get_attribute("label.drop", "class")
    page.dispatch_event("label.drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#predictions li")
    assert page.locator("#predictions li").first.get_attribute("data-label") == "red"
    assert page.locator("img.preview").get_attribute("alt") == "preview of dropped.jpg"
    assert "image=@dropped.jpg" in snippet(page, "curl")


def test_tabular_form_shows_the_api_answer(page, server: RunningServer, tmp_path: Path) -> None:
    open_model(page, server, "tabular-regressor")
    for i, value in enumerate(FEATURES):
        page.fill(f"#in-0-{i}", str(value))
    page.click("#tensor-form button[type=submit]")
    page.wait_for_selector("#outputs tr[data-output='prediction']")
    body = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": FEATURES}]}
    api = requests.post(f"{server.url}/v2/models/tabular-regressor/infer", json=body, timeout=30).json()
    expected = api["outputs"][0]["data"][0]
    cell = page.locator("#outputs tr[data-output='prediction'] td.num")
    assert cell.inner_text() == repr(expected)
    assert json.loads(cell.get_attribute("data-values")) == [expected]
    # the JSON editor now holds the request that was sent
    assert json.loads(page.locator("#v2-json").input_value()) == body
    screenshot(page, "3-tabular")

    curl = json.loads(run_shell(snippet(page, "curl"), tmp_path))
    assert curl["outputs"][0]["data"] == [expected]
    out = run_python(snippet(page, "Python requests"), tmp_path)
    assert out.startswith("200 ") and ast.literal_eval(out[4:])["outputs"][0]["data"] == [expected]
    out = run_python(snippet(page, "tritonclient"), tmp_path)
    name, values = out.split(" ", 1)
    assert name == "prediction" and np.float32(ast.literal_eval(values)[0][0]) == np.float32(expected)


def test_pmml_form_has_a_dropdown_for_allowed_values(page, server: RunningServer) -> None:
    open_model(page, server, "claims")
    options = page.locator("select[data-input='car_location'] option").all_inner_texts()
    assert options == ["carpark", "street"]
    page.fill("input[data-input='age']", "30")
    page.fill("input[data-input='salary']", "5000")
    page.select_option("select[data-input='car_location']", "street")
    page.click("#tensor-form button[type=submit]")
    page.wait_for_selector("#outputs tr[data-output='number_of_claims']")
    api = requests.post(
        f"{server.url}/api/models/claims/predict",
        json=[{"age": 30, "salary": 5000, "car_location": "street"}],
        timeout=30,
    ).json()
    expected = api["records"][0]["number_of_claims"]
    assert expected == pytest.approx(720.4)  # the PMML's own regression formula
    cell = page.locator("#outputs tr[data-output='number_of_claims'] td.num")
    assert cell.inner_text() == repr(expected)
    screenshot(page, "4-pmml")


def test_bad_input_shows_the_servers_error_text(page, server: RunningServer, tmp_path: Path) -> None:
    open_model(page, server, "tabular-regressor")
    page.fill("#in-0-3", "abc")
    page.click("#tensor-form button[type=submit]")
    error = page.locator("#model .error[role=alert]")
    error.wait_for(state="visible")
    sent = json.loads(page.locator("#v2-json").input_value())
    answer = requests.post(f"{server.url}/v2/models/tabular-regressor/infer", json=sent, timeout=30)
    assert answer.status_code == 400
    assert error.inner_text() == answer.json()["error"]
    assert "features" in error.inner_text()
    assert page.locator("#outputs").count() == 0
    screenshot(page, "5-error-form")

    # the JSON editor: a shape the model does not take
    page.click("summary:has-text('V2 request as JSON')")
    wrong = {"inputs": [{"name": "features", "shape": [1, 7], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7]}]}
    page.fill("#v2-json", json.dumps(wrong))
    page.click("#send-json")
    expect(error).to_contain_text("[1, 7]")
    answer = requests.post(f"{server.url}/v2/models/tabular-regressor/infer", json=wrong, timeout=30)
    assert error.inner_text() == answer.json()["error"]

    # a file that is not an image
    open_model(page, server, "colour-classifier")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    page.set_input_files("#image-file", str(not_image))
    error.wait_for(state="visible")
    with open(not_image, "rb") as f:
        answer = requests.post(f"{server.url}/api/models/colour-classifier/image", files={"image": f}, timeout=30)
    assert answer.status_code == 400 and error.inner_text() == answer.json()["error"]
    assert "not a decodable image" in error.inner_text() and " at 0x" not in error.inner_text()
    expect(page.locator("img.preview")).to_be_hidden()  # no broken-image icon
    screenshot(page, "6-error-image")


def test_keyboard_only(page, server: RunningServer) -> None:
    """Tab to a model, Enter, type into the form field by field, Enter submits."""
    page.goto(f"{server.url}/")
    page.wait_for_selector("#models tbody tr")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "tabular-regressor":
            break
    else:
        pytest.fail("Tab never reached the tabular-regressor link")
    page.keyboard.press("Enter")
    expect(page.locator("#model-title")).to_be_focused()
    page.keyboard.press("Tab")
    for i, value in enumerate(FEATURES):
        assert page.evaluate("document.activeElement.id") == f"in-0-{i}"
        page.keyboard.press("Control+A")
        page.keyboard.type(str(value))
        if i < len(FEATURES) - 1:
            page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("#outputs tr[data-output='prediction']")
    body = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": FEATURES}]}
    api = requests.post(f"{server.url}/v2/models/tabular-regressor/infer", json=body, timeout=30).json()
    assert page.locator("#outputs td.num").inner_text() == repr(api["outputs"][0]["data"][0])


def test_every_control_has_a_label(page, server: RunningServer) -> None:
    for name in ("colour-classifier", "tabular-regressor", "claims"):
        open_model(page, server, name)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                              && !el.textContent.trim())
                .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], name


def test_token_lives_in_session_storage_and_goes_out_as_bearer(page, server: RunningServer) -> None:
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((urlsplit(r.url).path, r.headers.get("authorization"))))
    open_model(page, server, "tabular-regressor")
    assert all(auth is None for _, auth in sent)  # the page itself loads without a token
    page.fill("#token", "s3cret-token")
    page.click("text=Use token")
    page.wait_for_selector("#tensor-form")
    page.click("#tensor-form button[type=submit]")
    page.wait_for_selector("#outputs")
    assert ("/v2/models/tabular-regressor/infer", "Bearer s3cret-token") in sent
    assert ("/api/models", "Bearer s3cret-token") in sent
    assert page.evaluate("sessionStorage.getItem('modelport.token')") == "s3cret-token"
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    code = page.locator(".code").inner_text()
    assert "s3cret-token" not in code and "MODELPORT_TOKEN" in code
    assert "s3cret-token" not in page.url
    page.click("#token-forget")
    assert page.evaluate("sessionStorage.getItem('modelport.token')") is None


def test_phone_sized_viewport(browser, server: RunningServer, requests_seen: list[str]) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    context.on("request", lambda request: requests_seen.append(request.url))
    page = context.new_page()
    try:
        open_model(page, server, "colour-classifier")
        page.set_input_files("#image-file", str(EXAMPLES / "sample.jpg"))
        page.wait_for_selector("#predictions li")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.locator("#predictions").scroll_into_view_if_needed()
        screenshot(page, "7-phone", full_page=False)
        open_model(page, server, "claims")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "8-phone-pmml")
    finally:
        context.close()


TOKEN = "page-test-Vb7rK2pQ9sLm4Xw8"


@pytest.fixture(scope="module")
def secured(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same repository behind bearer tokens (only the tabular model, so no JVM starts)."""
    work = tmp_path_factory.mktemp("secured")
    tokens = work / "tokens"
    tokens.write_text(f"{TOKEN} infer\n")
    tokens.chmod(0o600)
    args = ["--auth-tokens-file", str(tokens), "--model", "tabular-regressor"]
    with run_server(repository, *args, log_dir=work) as running:
        yield running


def test_with_access_control_the_page_loads_and_asks_for_the_token(page, secured: RunningServer) -> None:
    assert requests.get(f"{secured.url}/", timeout=10).status_code == 200  # the page is open
    refused = requests.get(f"{secured.url}/api/models", timeout=10)
    assert refused.status_code == 401
    page.goto(f"{secured.url}/")
    status = page.locator("#status")
    expect(status).to_contain_text(refused.json()["error"])
    expect(status).to_contain_text("access token")
    assert page.locator("#models tbody tr").count() == 0
    screenshot(page, "9-token-needed")

    page.fill("#token", "wrong-token-0000000000")
    page.keyboard.press("Enter")
    wrong = requests.get(f"{secured.url}/api/models", headers={"Authorization": "Bearer wrong"}, timeout=10)
    expect(status).to_contain_text(wrong.json()["error"])

    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_selector("#tensor-form")
    for i, value in enumerate(FEATURES):
        page.fill(f"#in-0-{i}", str(value))
    page.click("#tensor-form button[type=submit]")
    page.wait_for_selector("#outputs tr[data-output='prediction']")
    body = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": FEATURES}]}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = requests.post(f"{secured.url}/v2/models/tabular-regressor/infer", json=body, headers=headers, timeout=30)
    assert page.locator("#outputs td.num").inner_text() == repr(api.json()["outputs"][0]["data"][0])
    # the curl snippet reads the token from the environment, and works with it
    code = snippet(page, "curl")
    assert TOKEN not in code and "$MODELPORT_TOKEN" in code
    run = subprocess.run(
        ["bash", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MODELPORT_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(run.stdout)["outputs"] == api.json()["outputs"]
    screenshot(page, "10-token-used")


def test_no_request_went_to_another_host(
    server: RunningServer, secured: RunningServer, requests_seen: list[str]
) -> None:
    """Runs last: every request the browser made in this module, from its own request log."""
    assert len(requests_seen) > 20
    servers = (server.url, secured.url)
    others = [
        url
        for url in requests_seen
        if not any(url.startswith(f"blob:{origin}/") for origin in servers)
        and not url.startswith("data:")
        and "{0.scheme}://{0.netloc}".format(urlsplit(url)) not in servers
    ]
    assert others == []
    paths = {urlsplit(url).path for url in requests_seen}
    assert {"/", "/api/models", "/api/models/colour-classifier/image", "/v2/models/tabular-regressor/infer"} <= paths
