"""TensorFlow 1 checkpoints (``*.index`` + ``*.data-*`` + ``*.meta``) to ONNX.

The newest global step wins, by the step number in the file names (``model.ckpt-1200.index``), not
by the ``checkpoint`` state file: archives from the old platform carry a state file that is missing,
points to an older step, or names an absolute path from the training machine, and
``tf.train.latest_checkpoint`` trusts it. The graph comes from the ``.meta`` of the chosen step, or
from the newest older ``.meta`` when the trainer wrote the graph only once (``write_meta_graph=False``
later); the chosen step's variables are restored into it, frozen to constants, and the frozen graph
is converted like a GraphDef (see ``graphdef``), inputs and outputs found the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, GraphOptions, tf_interface
from convert.formats.graphdef import convert_frozen
from convert.formats.tf_common import first_line, import_tensorflow, quiet

STEP_SUFFIX = re.compile(r"^(?P<prefix>.+?)-(?P<step>\d+)$")


@dataclass(frozen=True)
class CheckpointFiles:
    prefix: Path  # what Saver.restore takes: the .index path without its suffix
    step: int | None  # None: a prefix with no -STEP suffix (sorts before every step)
    meta: Path  # the graph to import


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    source = Path(source)
    chosen = choose_checkpoint(source)
    graph_def, interface = freeze(chosen, options, source)
    detail = {
        "step": chosen.step,
        "checkpoint": chosen.prefix.name,
        "meta_graph": chosen.meta.name,
    }
    converted = convert_frozen(
        graph_def,
        source,
        options,
        workdir,
        source_format=options.format or "checkpoint",
        detail=detail,
        interface=interface,
    )
    if chosen.meta.name != f"{chosen.prefix.name}.meta":
        converted.notes.append(f"graph from {chosen.meta.name}; variables from {chosen.prefix.name}")
    return converted


def step_of(prefix_name: str) -> tuple[str, int | None]:
    match = STEP_SUFFIX.match(prefix_name)
    return (match["prefix"], int(match["step"])) if match else (prefix_name, None)


def sort_key(step: int | None) -> int:
    return -1 if step is None else step


def choose_checkpoint(directory: Path) -> CheckpointFiles:
    """The newest step whose variables are complete (``.index`` and its ``.data-*`` shards), with
    the ``.meta`` of the same step or else the newest one before it (else simply the newest)."""
    if directory.is_file():
        directory = directory.parent
    indexes = sorted(directory.rglob("*.index"))
    complete = []
    for index in indexes:
        prefix = index.with_suffix("")
        if any(index.parent.glob(f"{prefix.name}.data-*")):
            complete.append(prefix)
    if not complete:
        found = ", ".join(p.name for p in indexes) or "none"
        raise ConversionError(
            f"{directory}: no complete TensorFlow checkpoint (an .index with its .data-* files; .index found: {found})"
        )
    newest = max(complete, key=lambda p: (sort_key(step_of(p.name)[1]), str(p)))
    step = step_of(newest.name)[1]
    metas = [(step_of(m.with_suffix("").name)[1], m) for m in directory.rglob("*.meta")]
    if not metas:
        raise ConversionError(
            f"{directory}: checkpoint {newest.name} has no .meta graph file (needed to know the model's graph); "
            f"save with tf.compat.v1.train.Saver (write_meta_graph=True) or export a SavedModel"
        )
    same = [m for s, m in metas if s == step and m.with_suffix("").name == newest.name]
    older = [(s, m) for s, m in metas if sort_key(s) <= sort_key(step)]
    if same:
        meta = same[0]
    elif older:
        meta = max(older, key=lambda item: (sort_key(item[0]), str(item[1])))[1]
    else:
        meta = max(metas, key=lambda item: (sort_key(item[0]), str(item[1])))[1]
    return CheckpointFiles(prefix=newest, step=step, meta=meta)


def freeze(chosen: CheckpointFiles, options: ConvertOptions, source: Path) -> tuple[object, tf_interface.Interface]:
    """Import the meta graph, restore the chosen variables, fold them into constants; returns the
    frozen inference subgraph and its interface, chosen on the full graph (where the training ops
    still show what is training machinery and which placeholder holds the labels)."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default(), quiet():
        try:
            saver = tf.compat.v1.train.import_meta_graph(str(chosen.meta), clear_devices=True)
        except Exception as exc:
            raise ConversionError(f"{chosen.meta}: cannot import the meta graph: {first_line(exc)}") from exc
        if saver is None:
            saver = tf.compat.v1.train.Saver()
    interface = tf_interface.choose(graph, source, options.of(GraphOptions).inputs, options.outputs)
    with tf.compat.v1.Session(graph=graph) as session, quiet():
        try:
            saver.restore(session, str(chosen.prefix))
        except Exception as exc:
            raise ConversionError(
                f"{chosen.prefix}: cannot restore the variables into {chosen.meta.name}: {first_line(exc)}"
            ) from exc
        frozen = freeze_session(session, interface, chosen.prefix)
    return frozen, interface


def freeze_session(session: object, interface: tf_interface.Interface, source: Path) -> object:
    """The interface's subgraph of the session's graph, variables folded into constants (the
    optimizer's slots and the training ops are not part of it, so reference variables freeze)."""
    tf = import_tensorflow()
    keep = list(dict.fromkeys(name.split(":")[0] for name in [*interface.outputs, *interface.inputs]))
    try:
        graph_def = session.graph.as_graph_def()
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(session, graph_def, keep)
        return tf.compat.v1.graph_util.extract_sub_graph(frozen, keep)
    except Exception as exc:
        raise ConversionError(f"{source}: cannot freeze the variables: {first_line(exc)}") from exc
