"""SOURCE -> bundle: fetch, unpack, detect, convert + verify (in a child process), write.

The converter and the verification run together in a "spawn" child: TensorFlow and torch keep
memory and threads for the life of a process, and a converter that segfaults must not take the
CLI with it. Only picklable data comes back (the ``ConversionResult`` and the ``Parity``).
Nothing touches the repository until the very last step, which is all-or-nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import signal
import sys
import traceback
import types
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

from bundle.archive import DEFAULT_LIMITS, ExtractLimits
from bundle.fetch import DEFAULT_POLICY, DownloadPolicy, temporary_directory
from bundle.manifest import Manifest, Parity, SourceInfo
from convert import bundle, detect, image
from convert.errors import ConversionError, UsageError
from convert.formats import ConversionResult, ConvertOptions, Format, get_format, register
from convert.source import open_source

DEBUG_ENV = "MODELPORT_DEBUG"  # set to 1: print the converter's traceback on unexpected errors
CHILD_LOG = "converter.log"  # the child's stdout/stderr, inside the conversion workdir
TIMEOUT_ENV = "MODELPORT_CONVERT_TIMEOUT"  # seconds for conversion + verification; unset: no limit
PLUGINS_ENV = "MODELPORT_CONVERTERS"
INPROCESS_ENV = "MODELPORT_CONVERT_INPROCESS"  # set to 1: no child process (debugging)


def convert_model(
    source: str | Path | None,
    repository: Path,
    name: str,
    version: str = "1",
    options: ConvertOptions | None = None,
    *,
    force: bool = False,
    policy: DownloadPolicy = DEFAULT_POLICY,
    limits: ExtractLimits = DEFAULT_LIMITS,
    env: Mapping[str, str] | None = None,
    subprocess: bool | None = None,
    converters: Mapping[str, str] | None = None,
) -> Manifest:
    """Convert ``source`` (path, URL, or None for the model repository) into REPO/NAME/VERSION.

    ``converters`` adds or replaces ``{format: "module:function"}`` entries of the registry (in the
    child too): a plug-in point, and how tests inject converters that misbehave on purpose.
    """
    options = options or ConvertOptions()
    version = str(version)
    bundle.check_target(repository, name, version, force)
    if subprocess is None:
        subprocess = os.environ.get(INPROCESS_ENV) != "1"
    with temporary_directory(prefix="modelport-convert-") as workdir:
        given = open_source(source, workdir, policy=policy, limits=limits, env=env, is_model_file=is_model_file)
        try:
            root = given.root
            converters = {**plugin_converters(), **(converters or {})}
            register_converters(converters)
            found = detect.locate(root, options.format) if options.format else detect.detect(root)
            check_format_options(found, options)
            options = dataclasses.replace(options, source_root=root if root.is_dir() else root.parent)
            output_dir = workdir / "converted"
            output_dir.mkdir()
            run = run_in_child if subprocess else run_here
            converted, parity = run(found, options, output_dir, converters)
        except ConversionError as exc:
            # Name what the user gave (path or URL, plus the archive member), never the workdir.
            exc.args = (given.scrub(str(exc)), *exc.args[1:])
            raise
        manifest = build_manifest(converted, parity, found, given.location, name, version, options)
        bundle.write_bundle(repository, manifest, converted.model_path, force=force, extra=converted.optimized_path)
    return manifest


def plugin_converters(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Extra converters from ``MODELPORT_CONVERTERS="fmt=package.module:function,..."``: used with
    ``--format fmt``, for formats this project does not know (detection never picks them)."""
    text = (os.environ if env is None else env).get(PLUGINS_ENV, "").strip()
    plugins = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        fmt, sep, target = item.partition("=")
        if not sep or not fmt.strip() or ":" not in target:
            raise ConversionError(f"{PLUGINS_ENV}: {item!r} is not FORMAT=package.module:function")
        plugins[fmt.strip()] = target.strip()
    return plugins


def register_converters(converters: Mapping[str, str] | None) -> None:
    """``{format: "module:function"}`` as forced-only formats (never detected: no sniffer), in
    whichever process runs this; a test's misbehaving converter replaces a format on purpose."""
    for name, target in (converters or {}).items():
        fmt = Format(
            name=name,
            family=name,
            description=f"{name} ({target})",
            converter=target,
            locator=functools.partial(detect.locate_in_family, family=name),
        )
        register(fmt, overwrite=True)


def check_format_options(found: detect.Detection, options: ConvertOptions) -> None:
    """A format's flag given for a model of another format is a mistake, not something to ignore."""
    accepted = tuple(getattr(get_format(found.format), "options", ()))
    wrong = [flag for flag, kind in options.given() if not (accepted and issubclass(kind, accepted))]
    if wrong:
        raise UsageError(
            f"{found.path}: {', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to {found.format} models"
        )


def is_model_file(path: Path) -> bool:
    """An archive that is itself a model (``.keras``, a TorchScript zip, a joblib .gz): not unpacked."""
    try:
        return isinstance(detect.sniff_file(path), detect.Detection)
    except Exception:
        return False


# ---- conversion + verification, in a child process ---------------------------------------------


def convert_and_verify(
    found: detect.Detection, options: ConvertOptions, workdir: Path, converters: Mapping[str, str] | None = None
) -> tuple[ConversionResult, Parity]:
    """Runs in the child: the converter, then verification against the source framework."""
    from convert import verify  # imports the engine only where it runs

    register_converters(converters)
    options = dataclasses.replace(options, format=found.format)
    try:
        converted = get_format(found.format).convert(found.path, options, workdir)
    except ImportError as exc:
        raise ConversionError(f"{found.path}: the {found.format} converter is not available: {exc}") from None
    if converted.format == "onnx":
        converted.image = image.apply(converted.inputs, converted.image, options.image)
    if options.verify:
        parity = verify.verify(converted, options)
    else:
        parity = Parity(verified=False, notes=[*converted.notes, "verification skipped (--no-verify)"])
    if options.quantize:
        from convert import quantize

        converted, parity = quantize.apply(converted, parity, options, workdir)
    if converted.format == "onnx":  # the served file, optimised once here rather than at every server start
        from convert.optimize import write_optimized

        written = write_optimized(converted.model_path, workdir)
        if written is not None:
            converted.optimized_path, converted.optimized = written
    return converted.result(), parity


def run_here(
    found: detect.Detection, options: ConvertOptions, workdir: Path, converters: Mapping[str, str] | None = None
) -> tuple[ConversionResult, Parity]:
    try:
        return convert_and_verify(found, options, workdir, converters)
    except ConversionError:
        raise
    except Exception as exc:
        raise _unexpected(found, exc) from exc


def run_in_child(
    found: detect.Detection, options: ConvertOptions, workdir: Path, converters: Mapping[str, str] | None = None
) -> tuple[ConversionResult, Parity]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    args = (sender, found, options, workdir, converters)
    child = context.Process(target=_child_main, args=args, name="modelport-convert")
    with _plain_main():
        child.start()
    sender.close()
    limit = _timeout()
    try:
        try:
            if limit is not None and not receiver.poll(limit):
                raise ConversionError(
                    f"{found.path}: the {found.format} converter did not finish within {limit:g} s "
                    f"({TIMEOUT_ENV}); it was stopped"
                )
            kind, payload = receiver.recv()
        except EOFError:
            child.join()
            raise ConversionError(
                f"{found.path}: the {found.format} converter crashed ({_exit_reason(child.exitcode)})"
                + _log_tail(workdir / CHILD_LOG)
            ) from None
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join()
        receiver.close()
    if kind == "ok":
        return payload
    raise payload  # the child's ConversionError itself (a subclass keeps its type and exit code)


def _timeout() -> float | None:
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConversionError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds") from None
    return seconds if seconds > 0 else None


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """Start the child without re-running the caller's ``__main__`` (spawn does by default): the
    child needs only convert/, and a script read from stdin or lacking a main guard would break."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def _child_main(
    sender: Connection,
    found: detect.Detection,
    options: ConvertOptions,
    workdir: Path,
    converters: Mapping[str, str] | None,
) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches both
    if os.environ.get(DEBUG_ENV) != "1":
        _redirect_output(workdir / CHILD_LOG)  # frameworks' chatter would bury the one-line result
    try:
        result: tuple = ("ok", convert_and_verify(found, options, workdir, converters))
    except ConversionError as exc:
        result = ("error", exc)
    except BaseException as exc:
        result = ("error", _unexpected(found, exc))
    try:
        sender.send(result)
    except Exception as exc:  # an unpicklable result or error is a converter bug; say so rather than hang
        what = "error" if result[0] == "error" else "result"
        detail = f" ({type(result[1]).__name__}: {result[1]})" if what == "error" else ""
        sender.send(
            ("error", ConversionError(f"{found.path}: the converter's {what} cannot be returned{detail}: {exc}"))
        )
    finally:
        sender.close()


def _redirect_output(log_path: Path) -> None:
    """Send the child's stdout and stderr (file descriptors too: TensorFlow logs from C++) to a log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the process)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _log_tail(log_path: Path, lines: int = 3) -> str:
    """The last lines the crashed converter printed: often the reason (e.g. a fatal C++ check)."""
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    tail = " | ".join(line.strip()[:300] for line in text[-lines:] if line.strip())
    return f"; last output: {tail}" if tail else ""


def _unexpected(found: detect.Detection, exc: BaseException) -> ConversionError:
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exception(exc, file=sys.stderr)
    text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return ConversionError(f"{found.path}: the {found.format} converter failed: {type(exc).__name__}: {text}")


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}; out of memory?"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---- manifest ----------------------------------------------------------------------------------


def build_manifest(
    converted: ConversionResult,
    parity: Parity,
    found: detect.Detection,
    location: str,
    name: str,
    version: str,
    options: ConvertOptions,
) -> Manifest:
    labels = options.labels if options.labels is not None else converted.labels
    label_output = converted.label_output
    if labels is not None:
        label_output = _label_output(converted, labels, label_output)
    max_batch_size = options.max_batch_size if converted.max_batch_size < 0 else converted.max_batch_size
    return Manifest(
        name=name,
        version=version,
        format=converted.format,
        inputs=converted.inputs,
        outputs=converted.outputs,
        max_batch_size=max_batch_size,
        image=converted.image,
        labels=labels,
        label_output=label_output,
        target=converted.target,
        source=SourceInfo(
            format=found.format,
            location=location,
            converters=converted.converters,
            opset=converted.opset,
            detail={**found.detail, **converted.detail},
        ),
        parity=parity,
        optimized=converted.optimized,
    )


def _label_output(converted: ConversionResult, labels: list[str], chosen: str | None) -> str:
    """The output the labels index: the converter's choice, else the one whose last axis fits."""
    specs = {s.name: s for s in converted.outputs}
    if chosen is None:
        fitting = [s.name for s in converted.outputs if s.shape and s.shape[-1] == len(labels)]
        if len(fitting) != 1:
            shapes = ", ".join(f"{s.name}{s.shape}" for s in converted.outputs)
            raise ConversionError(
                f"--labels: {len(labels)} labels, but no single output has a last axis of that size ({shapes})"
            )
        return fitting[0]
    spec = specs.get(chosen)
    if spec is not None and spec.shape and spec.shape[-1] > 0 and spec.shape[-1] != len(labels):
        raise ConversionError(f"--labels: {len(labels)} labels, but output {chosen!r} has {spec.shape[-1]} classes")
    return chosen
