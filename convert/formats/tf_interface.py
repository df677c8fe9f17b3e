"""Which tensors of a TensorFlow 1 graph are the served model's inputs and outputs.

A graph written by a training script (a checkpoint's ``.meta``, a frozen ``.pb``, a TF1 SavedModel
saved without a signature) holds much more than the model: a labels placeholder, a loss, gradients,
an optimizer and its slots, a global step, metrics, summaries, savers and initialisers. The served
model is the inference subgraph inside it:

* **Training machinery** is found by op type (``Apply*``, ``Assign``, ``SaveV2``, summaries, loss
  kernels...) and by name scope (``gradients``, ``loss``, ``Adam``, ``accuracy``...), then
  everything its data flows into (an update computed from gradients is training machinery whatever
  its name).
* **Targets** are the placeholders the loss compares predictions with: named like labels (``y``,
  ``labels``, ``targets``...) or, structurally, placeholders whose data reaches the training
  machinery without ever meeting a weight (a features placeholder meets one at its first MatMul).
  Everything computed from a target (accuracy, the loss) is left out with it.
* **Outputs** are the sinks of what remains (ops nothing else consumes), else the earliest tensors
  it hands to the training machinery (the logits the loss reads). Scalars, strings and values that
  depend on an input only through its shape are never outputs.
* **Inputs** are the ``Placeholder`` ops those outputs need. A ``PlaceholderWithDefault`` (learning
  rate, keep probability, a training switch) keeps its default; scalar ``keep_prob`` and
  ``is_training`` placeholders become their inference constants (see ``graphdef``).

``--inputs``/``--outputs`` win over all of this. The choice is recorded in the manifest
(``source.detail.interface``) with what was left out and why, and printed by the CLI.

TensorFlow is only touched through the ``tf.Graph`` handed in, so this module imports nothing heavy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convert.errors import ConversionError

# Name-scope components that mark training and bookkeeping ops (compared case-insensitively, with
# TensorFlow's ``_1`` uniquifying suffix removed).
BOOKKEEPING_SCOPES = re.compile(
    r"^(save|restore|init|init_all_tables|gradients|loss|losses|total_loss|train|training|train_op|train_step|"
    r"optimizer|adam|sgd|gradientdescent|momentum|rmsprop|adagrad|adadelta|ftrl|summary|summaries|metrics|"
    r"accuracy|eval|evaluation|global_step|.*_grad|.*cross_?entropy.*|.*xent.*|.*_loss)$",
    re.IGNORECASE,
)
BOOKKEEPING_OPS = {
    "NoOp",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "AssignVariableOp",
    "SaveV2",
    "Save",
    "SaveSlices",
    "RestoreV2",
    "Restore",
    "RestoreSlice",
    "MergeV2Checkpoints",
    "ShardedFilename",
    "StringJoin",
    "ScalarSummary",
    "HistogramSummary",
    "ImageSummary",
    "AudioSummary",
    "MergeSummary",
    "TensorSummary",
    "TensorSummaryV2",
    "WriteScalarSummary",
    "Print",
    "PrintV2",
    "Assert",
    "VarIsInitializedOp",
    "IsVariableInitialized",
    "SoftmaxCrossEntropyWithLogits",
    "SparseSoftmaxCrossEntropyWithLogits",
}
# Ops whose output describes a tensor's shape, not its values: a value reached only through them
# does not depend on the input's data.
SHAPE_OPS = {"Shape", "ShapeN", "Size", "Rank"}
NEVER_OUTPUTS = {"Placeholder", "PlaceholderWithDefault", "Const", "VariableV2", "Variable", "VarHandleOp"}
LABEL_NAME = re.compile(
    r"^(y|y_|ys|y_?true|y_?target|labels?|targets?|ground_?truth|gt|answers?|true_.+|.+_(labels?|targets?))$",
    re.IGNORECASE,
)
PLACEHOLDER_OPS = ("Placeholder", "PlaceholderWithDefault")


@dataclass
class Interface:
    """Tensor names (``x:0``) of the served inputs and outputs, how they were chosen, and the
    placeholders left out with the reason (recorded in the manifest)."""

    inputs: list[str]
    outputs: list[str]
    how: str  # "--inputs/--outputs", "signature", "found", "found in a training graph"
    inputs_given: bool = False  # the user (or a signature) named the inputs: no switch constants
    left_out: dict[str, str] = field(default_factory=dict)  # placeholder op name -> why

    def record(self) -> dict[str, Any]:
        return {
            "chosen": self.how,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "left_out": dict(self.left_out),
            "override": "--inputs and --outputs name the graph's tensors",
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """One line for the user: what was chosen, what was left out, how to change it."""
        text = f"{self.how}: inputs {', '.join(self.inputs)}; outputs {', '.join(self.outputs)}"
        if self.left_out:
            text += "; left out " + ", ".join(f"{name} ({why})" for name, why in self.left_out.items())
        if self.how.startswith("found"):
            text += "; override with --inputs/--outputs"
        return text


def choose(
    graph: Any,
    source: Path | str,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> Interface:
    """The interface of ``graph``: ``inputs``/``outputs`` (``x`` or ``x:0``, from --inputs and
    --outputs) where given, the inference subgraph's otherwise."""
    given_outputs = [resolve(graph, name, "--outputs", source) for name in outputs or []]
    given_inputs = [resolve(graph, name, "--inputs", source) for name in inputs or []]
    training = bookkeeping_ops(graph)
    targets = target_placeholders(graph, training)
    found_outputs = given_outputs or find_outputs(graph, training, targets, source)
    found_inputs = given_inputs or find_inputs(found_outputs, source)
    overlap = {t.name for t in found_inputs} & {t.name for t in found_outputs}
    if overlap:
        raise ConversionError(f"{source}: {', '.join(sorted(overlap))} cannot be both an input and an output")
    if given_inputs and given_outputs:
        how = "--inputs/--outputs"
    elif given_outputs:
        how = "--outputs given, inputs found"
    elif given_inputs:
        how = "--inputs given, outputs found"
    else:
        how = "found in a training graph" if training or targets else "found"
    chosen = {t.op.name for t in found_inputs}
    left_out = {}
    for op in graph.get_operations():
        if op.type not in PLACEHOLDER_OPS or op.name in chosen or op.name in training:
            continue  # a saver's filename placeholder is nobody's business
        if op.name in targets:
            left_out[op.name] = "labels/targets: the loss and metrics read it, the predictions do not"
        elif op.type == "PlaceholderWithDefault":
            left_out[op.name] = "keeps its default"
        else:
            left_out[op.name] = "the outputs do not need it"
    return Interface(
        inputs=[t.name for t in found_inputs],
        outputs=[t.name for t in found_outputs],
        how=how,
        inputs_given=bool(given_inputs),
        left_out=left_out,
    )


def resolve(graph: Any, name: str, flag: str, source: Path | str) -> Any:
    """``x`` or ``x:0`` -> the tensor; an op name alone means its first output."""
    tensor_name = name if ":" in name else f"{name}:0"
    try:
        return graph.get_tensor_by_name(tensor_name)
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"{source}: {flag} names {name!r}, which is not a tensor of the graph") from exc


# ---- graph walks ------------------------------------------------------------------------------------
def ancestors(ops: Iterable[Any], through_shapes: bool = True) -> set[str]:
    """Names of ``ops`` and every op they read from (data edges). ``through_shapes=False`` stops at
    shape ops: what remains is what the values depend on."""
    seen: set[str] = set()
    stack = list(ops)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if through_shapes or op.type not in SHAPE_OPS:
            stack.extend(t.op for t in op.inputs)
    return seen


def downstream(graph: Any, start: set[str]) -> set[str]:
    """``start`` and every op its data flows into (control edges do not count: TF2 frozen graphs
    hang the output ``Identity`` on a NoOp)."""
    marked = set(start)
    for op in graph.get_operations():  # operations are in topological order
        if op.name not in marked and any(t.op.name in marked for t in op.inputs):
            marked.add(op.name)
    return marked


def is_bookkeeping(op: Any) -> bool:
    if op.type in BOOKKEEPING_OPS or op.type.startswith(("Apply", "ResourceApply", "Save", "Restore")):
        return True
    return any(BOOKKEEPING_SCOPES.match(re.sub(r"_\d+$", "", part)) for part in op.name.split("/"))


def bookkeeping_ops(graph: Any) -> set[str]:
    return downstream(graph, {op.name for op in graph.get_operations() if is_bookkeeping(op)})


def target_placeholders(graph: Any, training: set[str]) -> set[str]:
    """Labels and targets: named so, or (in a graph with training machinery) placeholders whose
    data reaches that machinery without meeting a weight on the way. Never every placeholder."""
    placeholders = [op for op in graph.get_operations() if op.type == "Placeholder"]
    by_name = {op.name for op in placeholders if LABEL_NAME.match(re.sub(r"_\d+$", "", op.name.split("/")[-1]))}
    structural = set()
    if training:
        constant = constant_ops(graph)
        for op in placeholders:
            if op.outputs and op.outputs[0].shape.rank == 0:
                continue  # scalars (keep_prob, a learning rate) are switches, not targets
            reaches, meets_weight = walk_from(op, training, constant)
            if reaches and not meets_weight:
                structural.add(op.name)
    for candidates in (by_name | structural, by_name):
        if {op.name for op in placeholders} - candidates:
            return candidates
    return set()


def constant_ops(graph: Any) -> set[str]:
    """Ops that depend on no placeholder: constants, variables and what is computed from them."""
    fed = downstream(graph, {op.name for op in graph.get_operations() if op.type in PLACEHOLDER_OPS})
    return {op.name for op in graph.get_operations()} - fed


def is_weight(tensor: Any, constant: set[str]) -> bool:
    """A float tensor of two or more elements computed from no placeholder: a kernel, a bias."""
    if tensor.op.name not in constant or not tensor.dtype.is_floating:
        return False
    shape = tensor.shape
    if shape.rank is None or not shape.is_fully_defined():
        return tensor.op.type in ("VariableV2", "VarHandleOp", "ReadVariableOp", "Identity")
    size = 1
    for dim in shape.as_list():
        size *= dim
    return size >= 2


def walk_from(start: Any, training: set[str], constant: set[str]) -> tuple[bool, bool]:
    """(does ``start``'s data reach the training machinery, does it meet a weight before it)."""
    reaches = meets = False
    seen: set[str] = set()
    stack = [c for t in start.outputs for c in t.consumers()]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.name in training:
            reaches = True
            continue
        if op.type in SHAPE_OPS:
            continue
        if any(is_weight(t, constant) for t in op.inputs):
            meets = True
        stack.extend(c for t in op.outputs for c in t.consumers())
    return reaches, meets


def servable(tensor: Any) -> bool:
    """Numbers or booleans with a batch axis (a scalar cannot be batched; rank unknown may be fine)."""
    dtype = tensor.dtype
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool) or dtype.is_quantized:
        return False
    return tensor.shape.rank != 0


def find_outputs(graph: Any, training: set[str], targets: set[str], source: Path | str) -> list[Any]:
    """Sinks of the inference subgraph first. Only when there are none (the model's last op feeds
    just the loss) the tensors it hands to the training machinery, keeping the earliest of those
    (the logits, not the loss's own reshapes downstream of them)."""
    ignored = downstream(graph, training | targets)
    features = {op.name for op in graph.get_operations() if op.type == "Placeholder"} - targets
    sinks, handed_over = [], []
    for op in graph.get_operations():
        if op.name in ignored or op.type in NEVER_OUTPUTS or op.type in SHAPE_OPS or not op.outputs:
            continue
        if not ancestors([op], through_shapes=False) & features:
            continue  # constant-only subgraphs, variable reads, shape arithmetic
        consumers = [c for t in op.outputs for c in t.consumers()]
        if not consumers:
            sinks.append(op)
        elif any(c.name in ignored for c in consumers):
            handed_over.append(op)
    chosen = sinks
    if not chosen and handed_over:
        names = {op.name for op in handed_over}
        chosen = [op for op in handed_over if not (ancestors(t.op for t in op.inputs) & names)]
    tensors = [t for op in chosen for t in op.outputs if servable(t)]
    if not tensors:
        raise ConversionError(
            f"{source}: no output found (no op that computes from a placeholder and feeds nothing but training "
            f"ops); name them with --outputs"
        )
    return tensors


def find_inputs(outputs: list[Any], source: Path | str) -> list[Any]:
    """The ``Placeholder`` ops the outputs need (a ``PlaceholderWithDefault`` keeps its default)."""
    needed = ancestors(t.op for t in outputs)
    graph = outputs[0].graph
    found = [op.outputs[0] for op in graph.get_operations() if op.type == "Placeholder" and op.name in needed]
    if not found:
        raise ConversionError(
            f"{source}: the outputs {', '.join(t.name for t in outputs)} depend on no Placeholder; name the inputs "
            f"with --inputs"
        )
    return found
