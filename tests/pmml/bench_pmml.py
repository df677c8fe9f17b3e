"""Per-record cost of scoring a PMML document: batch path vs per-row loops, jpype vs py4j.

Not a test (no assertions on timings: the machine is shared). Run under the serving environment:

    .venv/serve/bin/python -m tests.pmml.bench_pmml [MODEL.pmml] [--rows 5000]

Each gateway runs in its own child process (pypmml keeps one gateway per process). Figures are the
best of several repeats after a warm-up, so the JVM's JIT has compiled the scoring path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = Path(__file__).parent / "data" / "claims_regression.pmml"


def best_us_per_row(run, rows: int, repeats: int = 5) -> float:
    run()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings) / rows * 1e6


def measure(gateway: str, model_path: Path, rows: int) -> dict[str, float]:
    import pypmml

    pypmml.PMMLContext.getOrCreate(gateway=gateway)
    from runtime.engines.pmml import PmmlEngine, describe, example_columns

    model = pypmml.Model.fromFile(str(model_path))
    model.setSupplementOutput(True)
    engine = PmmlEngine(model, describe(model, model_path, "bench"))
    columns = engine.validate(example_columns(engine.manifest.inputs, rows))
    names = [s.name for s in engine.manifest.inputs]
    records = [dict(zip(names, row, strict=True)) for row in zip(*(columns[n].tolist() for n in names), strict=True)]
    lists = [list(r.values()) for r in records]
    per_row_rows = min(rows, 500 if gateway == "py4j" else rows)
    figures = {
        "batch (engine: one JSON call)": best_us_per_row(lambda: engine.predict(columns), rows),
        "per-row dict": best_us_per_row(lambda: [model.predict(r) for r in records[:per_row_rows]], per_row_rows),
        "per-row list": best_us_per_row(lambda: [model.predict(r) for r in lists[:per_row_rows]], per_row_rows),
    }
    one = {n: v[:1] for n, v in columns.items()}
    figures["batch of 1 (latency, us)"] = best_us_per_row(lambda: engine.predict(one), 1, repeats=50)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--gateway", choices=("jpype", "py4j"))
    args = parser.parse_args()
    if args.gateway:
        print(json.dumps(measure(args.gateway, args.model, args.rows)))
        return
    for gateway in ("jpype", "py4j"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.pmml.bench_pmml",
                str(args.model),
                "--rows",
                str(args.rows),
                "--gateway",
                gateway,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        for name, value in figures.items():
            print(f"{gateway:6} {name:32} {value:10.1f} us/row")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
