"""The try-it page in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

Nothing is downloaded at test time: Playwright's Python package brings its driver, and the browser
is the system's (``.ci/run`` and ``make install-browser`` install it with apt). Every request the
browser makes is recorded from the browser's own network events, so a test can prove the page
talks to no host but the server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.examples import Built
from tests.support.server import ROOT, RunningServer, run_server

CHROMIUM = Path(os.environ.get("MODELPORT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "page"
CLAIMS_PMML = ROOT / "tests" / "pmml" / "data" / "claims_regression.pmml"


@pytest.fixture(scope="module")
def repository(examples_built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two example models, plus a PMML model with a categorical field (the form's dropdown)."""
    from convert.pipeline import convert_model

    repo = tmp_path_factory.mktemp("page-repo")
    for name in ("colour-classifier", "tabular-regressor"):
        shutil.copytree(examples_built.repository / name, repo / name)
    convert_model(CLAIMS_PMML, repo, "claims")
    return repo


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with run_server(repository, log_dir=repository.parent) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make install-browser` (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def requests_seen() -> list[str]:
    """Every URL any page of this module's browser contexts asked for (the browser's own log)."""
    return []


@pytest.fixture
def page(browser, requests_seen: list[str], server: RunningServer):
    """A fresh browser context (own sessionStorage) at desktop size, its requests recorded."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.on("request", lambda request: requests_seen.append(request.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
