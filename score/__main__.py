"""``python -m score INPUT --repository DIR --model NAME --output PATH [options]``.

Prints one summary line and exits 0; or prints one line saying what is wrong and exits 1 (the job
failed, e.g. ``--fail-on-error`` met a bad row) or 2 (a usage error: no such model, column or file).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if not __package__:  # run as a file (spark-submit score/__main__.py ...): the project root holds the packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score.job import INPUT_FORMATS, OUTPUT_FORMATS, Job, ScoreError, run


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise ScoreError(f"{flag} takes NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m score",
        description="Score a table or a folder of images with a modelport bundle on Apache Spark.",
    )
    p.add_argument("input", help="a parquet/csv/json file or directory, or a folder of images (any Spark path)")
    p.add_argument("--repository", required=True, type=Path, help="the model repository (REPO/NAME/VERSION/...)")
    p.add_argument("--model", required=True, help="the model's name in the repository")
    p.add_argument("--version", help="the version directory (default: the highest)")
    p.add_argument("--output", required=True, help="where Spark writes the result (a directory)")
    p.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")
    p.add_argument("--input-format", choices=INPUT_FORMATS, help="default: from the path")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, help="default: from the path, else parquet")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="INPUT=COLUMN",
        help="feed INPUT from COLUMN; an [N,K] input from K numeric columns: INPUT=f0,f1,... or INPUT='f*'",
    )
    p.add_argument("--keep", help="input columns to carry through to the output, comma-separated (an id)")
    p.add_argument("--batch-rows", type=int, help="rows per Arrow batch and model call (default 10000; 64 for images)")
    p.add_argument("--fail-on-error", action="store_true", help="stop the job at the first bad row")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # PySpark 4.3 warns on import that pandas 3 is not yet fully supported; scoring goes through
    # Arrow (mapInArrow) and never through pandas (tests/score prove it on the pinned versions).
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    try:
        job = Job(
            input=args.input,
            repository=args.repository,
            model=args.model,
            version=args.version,
            output=args.output,
            master=args.master,
            input_format=args.input_format,
            output_format=args.output_format,
            mapping=_pairs(args.map, "--map"),
            keep=[c.strip() for c in args.keep.split(",") if c.strip()] if args.keep is not None else None,
            batch_rows=args.batch_rows,
            fail_on_error=args.fail_on_error,
            overwrite=args.overwrite,
            conf=_pairs(args.conf, "--conf"),
        )
        result = run(job)
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    print(
        f"{result.model} v{result.version}: scored {result.rows} rows ({result.errors} with errors) "
        f"in {result.seconds:.1f}s on {len(result.worker_pids)} Python workers "
        f"({result.engine_loads} engine loads); wrote {result.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
