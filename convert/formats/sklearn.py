"""scikit-learn estimators and pipelines (pickle or joblib) to PMML (default) or ONNX (``--target onnx``).

Loading a pickle runs code from the file: this happens only here, in the conversion child process
of the build stage; the runtime never unpickles anything. PMML comes from sklearn2pmml (a Java
program: a JRE is needed at convert time), ONNX from skl2onnx with plain label and probability
tensors (no ZipMap). Field names are the training DataFrame's (``feature_names_in_``), else
``x1..xn``. The reference for verification is the estimator's own ``predict``/``predict_proba``.

Tree models after a transformer (a scaler, say) compare float32-rounded features with their split
thresholds in scikit-learn, while PMML compares doubles (and ONNX float32 of its own arithmetic);
a row whose value lies within float32 rounding of a threshold can take the other branch. The
reference counts such rows on the verification sample and the recorded notes say how many.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bundle.manifest import TensorSpec
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, TabularOptions
from convert.formats.pmml import Ranges, _version, describe_pmml, sample_inputs
from convert.toolkit import tensor_spec

DEFAULT_TARGET = "y"


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    model = load_estimator(source)
    fields = field_names(model)
    if options.of(TabularOptions).target == "onnx":
        return to_onnx(model, fields, source, options, Path(workdir))
    return to_pmml(model, fields, source, options, Path(workdir))


# ---- reading the estimator -------------------------------------------------------------------------
def load_estimator(source: Path) -> Any:
    import joblib  # reads plain pickles too

    try:
        model = joblib.load(source)
    except Exception as exc:
        raise ConversionError(
            f"{source}: cannot unpickle the scikit-learn model: {type(exc).__name__}: {exc}"
        ) from None
    if not hasattr(model, "predict"):
        raise ConversionError(f"{source}: the pickle holds a {type(model).__name__}, not an estimator with predict()")
    return model


def field_names(model: Any) -> list[str]:
    active = getattr(model, "active_fields", None)  # a PMMLPipeline that was told its fields
    if active is not None and len(active):
        return [str(n) for n in active]
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    count = getattr(model, "n_features_in_", None)
    if count is None:
        raise ConversionError(f"{type(model).__name__}: not fitted, or it does not say how many features it takes")
    return [f"x{i + 1}" for i in range(int(count))]


def _parts(estimator: Any, columns: list[str] | None) -> Iterator[tuple[Any, list[str] | None]]:
    """Every estimator inside ``estimator`` with the raw input columns it sees (None: derived ones)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        for position, (_, step) in enumerate(estimator.steps):
            if step is not None and step != "passthrough":
                yield from _parts(step, columns if position == 0 else None)
    elif isinstance(estimator, ColumnTransformer):
        for _, transformer, selected in estimator.transformers_:
            if columns is not None and not isinstance(transformer, str):
                picked = [columns[c] if isinstance(c, int | np.integer) else str(c) for c in np.atleast_1d(selected)]
                yield from _parts(transformer, picked)
    else:
        yield estimator, columns


def text_categories(model: Any, fields: list[str]) -> dict[str, list[str]]:
    """Fields whose encoder learnt string categories (BYTES inputs, object columns for sklearn),
    with the categories it knows."""
    text: dict[str, list[str]] = {}
    for part, columns in _parts(model, fields):
        categories = getattr(part, "categories_", None)
        if columns is None or categories is None:
            continue
        for col, cats in zip(columns, categories, strict=False):
            if np.asarray(cats).dtype.kind in "OSU":
                text[col] = [str(c) for c in cats if c is not None and c == c]  # NaN is not a category to draw
    return text


def fitted_ranges(model: Any, fields: list[str]) -> Ranges:
    """Plausible ranges for synthetic numbers, from statistics the model learnt on its raw inputs."""
    ranges: Ranges = {}
    for part, columns in _parts(model, fields):
        if columns is None:
            continue
        if hasattr(part, "mean_") and hasattr(part, "scale_"):  # StandardScaler
            for col, mean, scale in zip(columns, part.mean_, part.scale_, strict=False):
                ranges[col] = (float(mean - 3 * scale), float(mean + 3 * scale))
        elif hasattr(part, "data_min_"):  # MinMaxScaler, MaxAbsScaler-alikes
            for col, low, high in zip(columns, part.data_min_, part.data_max_, strict=False):
                ranges[col] = (float(low), float(high))
        else:
            for index, (low, high) in _threshold_ranges(part).items():
                if index < len(columns):
                    ranges[columns[index]] = (low, high)
    return ranges


def _trees(estimator: Any) -> list[Any]:
    if hasattr(estimator, "tree_"):
        return [estimator]
    members = getattr(estimator, "estimators_", None)
    if members is None:
        return []
    return [tree for member in np.ravel(np.asarray(members, dtype=object)) for tree in _trees(member)]


def _threshold_ranges(estimator: Any) -> dict[int, tuple[float, float]]:
    """Per feature index: a range around the split thresholds, so synthetic rows take both branches."""
    found: dict[int, list[float]] = {}
    for tree in _trees(estimator):
        internal = tree.tree_.feature >= 0
        for feature, threshold in zip(tree.tree_.feature[internal], tree.tree_.threshold[internal], strict=True):
            found.setdefault(int(feature), []).append(float(threshold))
    out = {}
    for feature, values in found.items():
        low, high = min(values), max(values)
        margin = max(1.0, (high - low) * 0.25)
        out[feature] = (low - margin, high + margin)
    return out


def _final_estimator(model: Any) -> Any:
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) else model


# ---- the reference ------------------------------------------------------------------------------
class Reference:
    """scikit-learn's own predictions on the rows verification feeds the served model."""

    def __init__(self, model: Any, fields: list[str], text: set[str], named: bool, notes: list[str]) -> None:
        self.model, self.fields, self.text, self.named, self.notes = model, fields, text, named, notes
        self.final = _final_estimator(model)

    def frame(self, inputs: dict[str, np.ndarray]) -> Any:
        """The rows as sklearn saw them in training: a DataFrame when it was fitted on one."""
        import pandas as pd

        rows = len(next(iter(inputs.values())))
        columns = {}
        for name in self.fields:
            if name not in inputs:  # a field the served model dropped as unused: any value will do
                columns[name] = np.full(
                    rows, "" if name in self.text else 0.0, dtype=object if name in self.text else float
                )
                continue
            value = np.asarray(inputs[name]).reshape(rows)
            columns[name] = value.astype(object) if name in self.text else value.astype(np.float64)
        if self.named:
            return pd.DataFrame(columns, columns=self.fields)
        return np.column_stack([columns[name] for name in self.fields])

    def probabilities(self, rows: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(rows), dtype=np.float64)

    def note_split_flips(self, rows: Any) -> None:
        """Count rows where float32 rounding sends a transformed feature to the other side of a split."""
        from sklearn.pipeline import Pipeline

        trees = _trees(self.final)
        if not trees or not isinstance(self.model, Pipeline) or len(self.model.steps) < 2:
            return
        transformed = Pipeline(self.model.steps[:-1]).transform(rows)
        transformed = np.asarray(transformed.toarray() if hasattr(transformed, "toarray") else transformed, np.float64)
        rounded = transformed.astype(np.float32).astype(np.float64)
        flipped = np.zeros(len(transformed), dtype=bool)
        for tree in trees:
            internal = tree.tree_.feature >= 0
            for feature, threshold in zip(tree.tree_.feature[internal], tree.tree_.threshold[internal], strict=True):
                flipped |= (transformed[:, feature] <= threshold) != (rounded[:, feature] <= threshold)
        self.notes.append(
            f"tree model after a transformer: scikit-learn rounds transformed features to float32 before comparing "
            f"them with split thresholds; on {int(flipped.sum())} of {len(flipped)} verification rows that rounding "
            f"crosses a threshold (those rows may score differently when served)"
        )


# ---- PMML ---------------------------------------------------------------------------------------
def to_pmml(model: Any, fields: list[str], source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    from sklearn2pmml import make_pmml_pipeline, sklearn2pmml
    from sklearn2pmml.pipeline import PMMLPipeline

    if shutil.which("java") is None:
        raise ConversionError(f"{source}: converting scikit-learn to PMML runs sklearn2pmml, which needs Java on PATH")
    target_name = _target_name(model, fields)
    if isinstance(model, PMMLPipeline) and getattr(model, "target_fields", None) is not None:
        pipeline = model
    else:
        pipeline = make_pmml_pipeline(model, active_fields=fields, target_fields=[target_name])
    out = workdir / "model.pmml"
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            sklearn2pmml(pipeline, str(out))
    except Exception as exc:
        detail = " ".join((str(exc) or captured.getvalue()).strip().splitlines()[-3:])
        raise ConversionError(f"{source}: sklearn2pmml cannot convert {type(model).__name__}: {detail}") from None
    manifest = describe_pmml(out, source)
    order = {name: i for i, name in enumerate(fields)}
    inputs = sorted(manifest.inputs, key=lambda spec: order.get(spec.name, len(order)))
    notes: list[str] = []
    unused = [name for name in fields if name not in {s.name for s in inputs}]
    if unused:
        notes.append(f"fields the model never uses were left out of the PMML inputs: {', '.join(unused)}")
    reference = Reference(model, fields, {s.name for s in inputs if s.datatype == "BYTES"}, _named(model), notes)
    kinds = _pmml_output_kinds(out)

    def predict(inputs_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = reference.frame(inputs_)
        reference.note_split_flips(rows)
        result: dict[str, np.ndarray] = {}
        proba = reference.probabilities(rows) if any(k[0] == "probability" for k in kinds.values()) else None
        classes = [str(c) for c in getattr(reference.final, "classes_", [])]
        for spec in manifest.outputs:
            kind, value = kinds.get(spec.source_name or spec.name, ("", None))
            if spec.name == manifest.target:
                result[spec.name] = np.asarray(model.predict(rows))
            elif kind == "probability" and value is None and proba is not None:
                result[spec.name] = proba.max(axis=1)
            elif kind == "probability" and proba is not None and _class_index(value, classes) is not None:
                result[spec.name] = proba[:, _class_index(value, classes)]
        return result

    make_inputs, sample_note = sample_inputs(
        inputs, options.of(TabularOptions).sample_csv, fitted_ranges(model, fields)
    )
    notes.append(sample_note)
    return Converted(
        model_path=out,
        format="pmml",
        inputs=inputs,
        outputs=manifest.outputs,
        source_format="sklearn",
        converters={"sklearn2pmml": _version("sklearn2pmml"), "scikit-learn": _version("scikit-learn")},
        max_batch_size=-1,
        target=manifest.target,
        detail={"estimator": type(model).__name__},
        notes=notes,
        reference=predict,
        make_inputs=make_inputs,
        label_outputs=[manifest.target] if manifest.target and _is_classifier(model) else [],
    )


def _target_name(model: Any, fields: list[str]) -> str:
    declared = getattr(model, "target_fields", None)
    if declared is not None and len(declared):
        return str(declared[0])
    return DEFAULT_TARGET if DEFAULT_TARGET not in fields else "target"


def _named(model: Any) -> bool:
    return getattr(model, "feature_names_in_", None) is not None or bool(getattr(model, "active_fields", None))


def _pmml_output_kinds(path: Path) -> dict[str, tuple[str, str | None]]:
    """PMML output field -> (feature, value): which sklearn quantity each output corresponds to."""
    from runtime.engines import pmml as engine

    model = engine.load_model(path)
    return {str(f.name): (str(f.feature), None if f.value is None else str(f.value)) for f in model.outputFields}


def _class_index(value: str | None, classes: list[str]) -> int | None:
    if value is None:
        return None
    for i, name in enumerate(classes):
        if name == value:
            return i
        with contextlib.suppress(ValueError):
            if float(name) == float(value):
                return i
    return None


def _is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(_final_estimator(model)))


# ---- ONNX ---------------------------------------------------------------------------------------
def to_onnx(model: Any, fields: list[str], source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    categories = text_categories(model, fields)
    text = set(categories)
    initial_types = [
        (name, StringTensorType([None, 1]) if name in text else FloatTensorType([None, 1])) for name in fields
    ]
    plain = Pipeline(list(model.steps)) if isinstance(model, Pipeline) else model  # e.g. a PMMLPipeline
    if not text and len(fields) > 1 and not _starts_with_column_transformer(plain):
        plain = _per_field_front(plain, fields)
    final = _final_estimator(plain)
    classifier = is_classifier(final)
    try:
        onx = skl_to_onnx(
            plain,
            initial_types=initial_types,
            options={id(final): {"zipmap": False}} if classifier else None,
            target_opset={"": options.opset, "ai.onnx.ml": 3},
        )
    except Exception as exc:
        raise ConversionError(f"{source}: skl2onnx cannot convert {type(model).__name__}: {exc}") from None
    out = workdir / "model.onnx"
    out.write_bytes(onx.SerializeToString())
    inputs = [
        TensorSpec(name, "BYTES", [-1, 1], "categorical", categories[name])
        if name in text
        else TensorSpec(name, "FP32", [-1, 1], "continuous")
        for name in fields
    ]
    outputs = [tensor_spec(o, source) for o in onx.graph.output]
    notes: list[str] = []
    reference = Reference(model, fields, text, _named(model), notes)
    names = [o.name for o in outputs]

    def predict(inputs_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = reference.frame(inputs_)
        reference.note_split_flips(rows)
        predicted = np.asarray(model.predict(rows))
        if not classifier:
            return {names[0]: predicted.reshape(len(predicted), -1)}
        return {names[0]: predicted, names[1]: reference.probabilities(rows)}

    make_columns, sample_note = sample_inputs(
        [TensorSpec(s.name, s.datatype, [-1], s.optype, s.allowed_values) for s in inputs],
        options.of(TabularOptions).sample_csv,
        fitted_ranges(model, fields),
    )
    notes.append(sample_note)
    if classifier:
        notes.append("inputs are float32 in ONNX: probabilities differ from scikit-learn's float64 by rounding")
    return Converted(
        model_path=out,
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        source_format="sklearn",
        converters={"skl2onnx": _version("skl2onnx"), "scikit-learn": _version("scikit-learn")},
        opset=options.opset,
        max_batch_size=-1,
        labels=[str(c) for c in final.classes_] if classifier else None,
        label_output=names[1] if classifier and len(names) > 1 else None,
        detail={"estimator": type(model).__name__},
        notes=notes,
        reference=predict,
        make_inputs=lambda seed, batch: {k: v.reshape(-1, 1) for k, v in make_columns(seed, batch).items()},
        label_outputs=[names[0]] if classifier else [],
    )


def _starts_with_column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    return isinstance(first, ColumnTransformer)


def _per_field_front(model: Any, fields: list[str]) -> Any:
    """Put a pass-through ColumnTransformer in front, so skl2onnx joins the per-field inputs
    (most converters accept only one input tensor). It selects columns only, so fitting it on one
    row of zeros learns nothing that matters."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    front = ColumnTransformer([("fields", "passthrough", fields)]).fit(
        pd.DataFrame([[0.0] * len(fields)], columns=fields)
    )
    steps = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    return Pipeline([("fields", front), *steps])
