"""``python -m convert SOURCE --repository DIR --name NAME ...``: one model in, one bundle out.

Exit 0 with a one-line summary on stdout, or non-zero with one line on stderr naming the file and
what is wrong (``MODELPORT_DEBUG=1`` adds tracebacks for unexpected errors). Exit codes: 1 internal
error, 2 conversion, 3 fetch, 4 unpack, 5 detection, 6 verification, 7 repository, 64 usage, 130
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from bundle.fetch import DownloadPolicy, repository_configured
from bundle.manifest import Manifest
from convert.errors import ConversionError, UsageError
from convert.formats import ConvertOptions, GraphOptions, ImageOptions, SignatureOptions, TabularOptions, formats

EXIT_USAGE = 64
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2, which means "conversion failed" here
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m convert",
        description="Convert a TensorFlow/Keras/PyTorch/scikit-learn/ONNX/PMML model into a verified bundle.",
        epilog="Without SOURCE (or with --from-repository) the model is downloaded from the model repository "
        "named by XQUERY_ADDR, MODEL_ID, MODEL_VERSION and GUID. See docs/convert.md.",
    )
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="file, directory, .zip/.tar.gz, or http(s) URL")
    parser.add_argument("--from-repository", action="store_true", help="download from XQUERY_ADDR (SOURCE omitted)")
    parser.add_argument("--repository", required=True, type=Path, metavar="DIR", help="model repository to write")
    parser.add_argument("--name", required=True, help="model name (REPO/NAME)")
    parser.add_argument("--version", default="1", help="version directory (default 1)")
    parser.add_argument("--format", metavar="FMT", help=f"skip detection: {', '.join(f.name for f in formats())}")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=d0,d1,...")
    parser.add_argument(
        "--input-dtype",
        default="FP32",
        metavar="T|NAME=T,...",
        help="V2 datatype of the --input-shape inputs (default FP32), or one per input: ids=INT64,x=FP32",
    )
    parser.add_argument("--inputs", type=_names, metavar="T,...", help="graph input tensors (GraphDef, checkpoint)")
    parser.add_argument("--outputs", type=_names, metavar="T,...", help="graph output tensors")
    parser.add_argument(
        "--signature", metavar="NAME", help="SavedModel: the signature to serve (default serving_default)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--target", choices=("onnx", "pmml"), help="scikit-learn: serve as PMML (default) or ONNX")
    parser.add_argument("--sample", type=Path, metavar="CSV", help="scikit-learn/PMML: rows to verify with")
    parser.add_argument("--labels", type=Path, metavar="FILE", help="class labels, one per line")
    parser.add_argument("--max-batch-size", type=int, default=64, help="for models with a dynamic batch axis")
    image = parser.add_argument_group("image preprocessing (overrides the guess)")
    image.add_argument("--color-mode", choices=("RGB", "BGR", "L"))
    image.add_argument("--scale", type=float, help="pixel (0..255) multiplier, default 1/255 for float inputs")
    image.add_argument("--mean", type=_floats, metavar="a,b,c")
    image.add_argument("--std", type=_floats, metavar="a,b,c")
    image.add_argument("--layout", choices=("NHWC", "NCHW"))
    image.add_argument("--no-image", action="store_true", help="never treat an input as an image")
    check = parser.add_argument_group("verification")
    check.add_argument("--no-verify", action="store_true", help="skip the comparison (recorded in the manifest)")
    check.add_argument("--atol", type=float, default=1e-4)
    check.add_argument("--rtol", type=float, default=1e-3)
    quant = parser.add_argument_group("int8 quantization (ONNX; docs/convert.md)")
    quant.add_argument("--quantize", choices=("dynamic", "static"), help="serve an int8 model if it passes the gate")
    quant.add_argument("--calibration", type=Path, metavar="DIR|CSV", help="static: images or CSV rows to calibrate")
    quant.add_argument("--min-agreement", type=float, default=0.99, help="top-1 agreement with float (default 0.99)")
    quant.add_argument("--quant-rtol", type=float, default=0.1, help="regression deviation / range (default 0.1)")
    fetching = parser.add_argument_group("download")
    fetching.add_argument("--timeout", type=float, default=30.0, help="seconds per connect/read (default 30)")
    fetching.add_argument("--retries", type=int, default=4, help="retries on connection errors and 5xx (default 4)")
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    for fmt in formats():  # a plug-in format's own flags, in a group of its own
        add_arguments = getattr(fmt, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parser.add_argument_group(f"{fmt.description} ({fmt.name})"))
    return parser


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated tensor names")
    return names


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def parse_input_shapes(items: Sequence[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            shapes[name.strip()] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise UsageError(f"--input-shape {item!r}: expected NAME=d0,d1,... (integers, -1 for variable)") from None
    return shapes


def read_labels(path: Path) -> list[str]:
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--labels {path}: cannot read: {exc}") from None
    labels = [label for label in labels if label]
    if not labels:
        raise UsageError(f"--labels {path}: the file has no labels (one per line)")
    return labels


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    if args.sample is not None and not args.sample.is_file():
        raise UsageError(f"--sample {args.sample}: no such file")
    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0")
    if args.max_batch_size < 1:
        raise UsageError("--max-batch-size must be >= 1")
    if args.calibration is not None and not args.calibration.exists():
        raise UsageError(f"--calibration {args.calibration}: no such file or directory")
    if args.calibration is not None and args.quantize != "static":
        raise UsageError("--calibration needs --quantize static")
    if not 0 <= args.min_agreement <= 1 or args.quant_rtol < 0:
        raise UsageError("--min-agreement must be within 0..1 and --quant-rtol >= 0")
    return ConvertOptions(
        format=args.format,
        input_shapes=parse_input_shapes(args.input_shape),
        input_dtype=args.input_dtype,
        outputs=args.outputs,
        opset=args.opset,
        format_options=[
            GraphOptions(inputs=args.inputs),
            SignatureOptions(signature=args.signature),
            TabularOptions(target=args.target, sample_csv=args.sample),
            *plugin_options(args),
        ],
        image=ImageOptions(
            color_mode=args.color_mode,
            scale=args.scale,
            mean=args.mean,
            std=args.std,
            layout=args.layout,
            disable=args.no_image,
        ),
        labels=read_labels(args.labels) if args.labels else None,
        verify=not args.no_verify,
        atol=args.atol,
        rtol=args.rtol,
        max_batch_size=args.max_batch_size,
        quantize=args.quantize,
        calibration=args.calibration,
        min_agreement=args.min_agreement,
        quant_rtol=args.quant_rtol,
    )


def plugin_options(args: argparse.Namespace) -> list[object]:
    """The option objects plug-in formats build from their own flags (``options_from_args``)."""
    found = []
    for fmt in formats():
        from_args = getattr(fmt, "options_from_args", None)
        value = from_args(args) if from_args is not None else None
        if value is not None:
            found.append(value)
    return found


def summary(manifest: Manifest, target: Path) -> str:
    source = manifest.source.format if manifest.source else "?"
    parity = manifest.parity
    if parity is None or not parity.verified:
        check = "not verified" + (f" ({parity.notes[-1]})" if parity and parity.notes else "")
    else:
        check = (
            f"parity max abs {parity.max_abs_error:.2g}, max rel {parity.max_rel_error:.2g} on {parity.samples} samples"
        )
        if parity.label_agreement is not None:
            check += f", labels {parity.label_agreement:.0%}"
    if parity is not None and parity.quantization:
        q = parity.quantization
        agreement = f"top-1 agreement {q['top1_agreement']:.1%}, " if q.get("top1_agreement") is not None else ""
        check += (
            f"; int8 ({q['mode']}): {agreement}max deviation {q['max_rel_deviation']:.2g} of range, "
            f"{q['float_bytes'] / 1e6:.2f} -> {q['quantized_bytes'] / 1e6:.2f} MB"
        )
    extras = []
    if manifest.image is not None:
        image = manifest.image
        extras.append(f"image {image.input} {image.height}x{image.width} {image.color_mode} {image.layout}")
    if manifest.labels:
        extras.append(f"{len(manifest.labels)} labels on {manifest.label_output}")
    described = f" ({'; '.join(extras)})" if extras else ""
    return f"{manifest.name} v{manifest.version}: {source} -> {manifest.format}{described}, {check}; wrote {target}"


def main(argv: Sequence[str] | None = None) -> int:
    from convert.pipeline import DEBUG_ENV, convert_model

    try:
        args = build_parser().parse_args(argv)
        if args.source is not None and args.from_repository:
            raise UsageError("give SOURCE or --from-repository, not both")
        if args.source is None and not repository_configured():
            raise UsageError("no SOURCE given and XQUERY_ADDR is not set (see --help)")
        options = options_from_args(args)
        policy = DownloadPolicy(timeout=args.timeout, retries=max(0, args.retries))
        manifest = convert_model(
            args.source, args.repository, args.name, args.version, options, force=args.force, policy=policy
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr
        )
        return EXIT_INTERNAL
    interface = (manifest.source.detail.get("interface") if manifest.source else None) or {}
    if interface.get("summary"):  # a guess the user should see, and know how to override
        print(f"note: {interface['summary']}", file=sys.stderr)
    print(summary(manifest, args.repository / manifest.name / manifest.version))
    return 0
