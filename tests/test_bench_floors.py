"""bench/run.py's floors and ceilings: the arithmetic that says whether a target can be met on this machine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"
X = "\u00d7"  # the report's multiplication sign


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _line(run, values: dict, starts: str) -> str:
    return next(text for what, text, _ in run.paired_targets({"mobilenetv2": values}) if what.startswith(starts))


def test_the_c1_floor_is_the_paced_no_ops_transport_added_to_raw(run) -> None:
    """raw 7 ms; the paced no-op busy 7 ms and answered in 8.12 ms: its transport 1.12 ms, the floor 1.16 times raw."""
    c1 = next(t for t in run.PAIR_TARGETS if t.a[:3] == ("modelport", "V2 binary", 1))
    assert c1.floor[0] == run.NOOP_PACED
    values = {
        "raw||1|p50_ms": [7.0, 7.0],
        "modelport|V2 binary|1|p50_ms": [8.4, 8.4],
        f"{run.NOOP_PACED}|V2 binary|1|p50_ms": [8.12, 8.12],
        f"{run.NOOP_PACED}|busy_ms": [7.0],
    }
    text = _line(run, values, "MobileNetV2 V2 binary c=1 p50")
    assert text.startswith(f"1.20{X}"), text
    assert f"the floor, no-op aiohttp, at raw's pace on the same request: 1.16{X}" in text, text


def test_the_c8_ceiling_adds_the_no_ops_cpu_per_request_to_the_models(run) -> None:
    values = {
        "raw||8|best_rows_per_s": [180.0],
        "modelport|V2 binary|8|rps": [126.0],
        "no-op aiohttp|V2 binary|8|rps": [3420.0],
    }
    text = _line(run, values, "MobileNetV2 V2 binary c=8 vs")
    assert text.startswith(f"0.70{X}"), text
    assert f"the ceiling, no-op aiohttp on the same request: 0.95{X}" in text, text
