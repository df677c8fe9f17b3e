"""Raw onnxruntime in-process, the limit: ``python bench/raw_ort.py [--quick] MODEL.onnx SECONDS THREADS [JPEG]``
prints JSON.

``latency``: batch-1 calls back to back (what c=1 over HTTP could at best reach); ``rows_per_s``: rows/s with
batch sizes 1, 8 and 32 (what adaptive batching could at best reach); ``threaded``: batch-1 calls from 8 threads
sharing one session (onnxruntime releases the GIL), what concurrent requests without batching could reach.
With a fourth argument (a JPEG), also the image endpoint's limit: the server's own decode, then the model.
``one_thread_rows_per_s``: THREADS threads sharing a session with one intra-op thread each, the other way to
fill the cores. ``--quick`` (the paired rounds of bench/run.py) measures only the batch-1 p50, the best
in-process rows/s (8 threads, batches of 8, or one thread per run) and the image limit.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime import memory
from runtime.engines import EngineOptions
from runtime.engines.onnx import session_options


def loop(session: ort.InferenceSession, feeds: dict, seconds: float) -> list[float]:
    times = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        session.run(None, feeds)
        times.append(time.perf_counter() - now)
    return times


def threaded(session: ort.InferenceSession, feeds: dict, seconds: float, threads: int) -> float:
    counts = [0] * threads

    def work(index: int) -> None:
        counts[index] = len(loop(session, feeds, seconds))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def make_session(path: str, threads: int) -> ort.InferenceSession:
    """A session with ``threads`` intra-op threads and otherwise the server's own options."""
    options = session_options(EngineOptions(intra_op_threads=threads))
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    quick = sys.argv[1] == "--quick"  # the paired rounds (bench/run.py): only what the targets compare with
    args = sys.argv[2:] if quick else sys.argv[1:]
    path, seconds, threads = args[0], float(args[1]), int(args[2])
    memory.tune_malloc()  # the server's allocator settings, as for its session options
    session = make_session(path, threads)
    # The other layout: each run on one intra-op thread, ``threads`` runs at once (docs/runtime.md, "Throughput
    # over latency"). On a compute-bound model it can beat runs of ``threads`` threads: part of "best".
    single = make_session(path, 1) if threads > 1 else None
    spec = session.get_inputs()[0]
    row = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]]

    def feeds(batch: int) -> dict:
        return {spec.name: np.random.default_rng(0).random((batch, *row), dtype=np.float32)}

    loop(session, feeds(1), 0.3)  # warm-up
    times = np.array(loop(session, feeds(1), seconds))
    if quick:
        result = {
            "p50_ms": float(np.percentile(times, 50) * 1e3),
            "threaded_c8_rps": threaded(session, feeds(1), seconds / 2, 8),
        }
        runs = loop(session, feeds(8), seconds / 2)
        if single is not None:
            result["one_thread_rows_per_s"] = threaded(single, feeds(1), seconds / 2, threads)
        result["best_rows_per_s"] = max(
            result["threaded_c8_rps"], 8 * len(runs) / sum(runs), result.get("one_thread_rows_per_s", 0)
        )
        if len(args) > 3:
            result.update(image_reference(session, Path(args[3]), seconds))
        print(json.dumps(result))
        return
    best = {}
    for batch in (1, 8, 32):
        runs = loop(session, feeds(batch), seconds / 3)
        best[batch] = batch * len(runs) / sum(runs)
    concurrent = threaded(session, feeds(1), seconds / 3, 8)
    result = {
        "rps": len(times) / times.sum(),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "rows_per_s": best,
        "threaded_c8_rps": concurrent,
    }
    if single is not None:
        result["one_thread_rows_per_s"] = threaded(single, feeds(1), seconds / 3, threads)
    if len(args) > 3:  # an image: decode + resize with the server's own Pillow steps, then run
        result.update(image_reference(session, Path(args[3]), seconds))
    print(json.dumps(result))


def image_reference(session: ort.InferenceSession, jpeg: Path, seconds: float) -> dict:
    """The in-process limit for the image endpoint: ``runtime.codecs.image.decode_image`` (draft mode, reduce,
    bilinear resize, float32) then ``session.run``, batch-1 back to back (c=1) and from 8 threads (best)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bundle.manifest import read_manifest
    from runtime.codecs.image import decode_image, image_preprocessing

    spec = image_preprocessing(read_manifest(Path(session._model_path).parent))
    data = jpeg.read_bytes()

    def once() -> None:
        session.run(None, {spec.input: decode_image(data, spec, 40_000_000)[None]})

    def run_for(duration: float) -> list[float]:
        times, end = [], time.perf_counter() + duration
        while (now := time.perf_counter()) < end:
            once()
            times.append(time.perf_counter() - now)
        return times

    run_for(0.3)
    times = np.array(run_for(seconds / 2))
    counts = [0] * 8

    def work(index: int) -> None:
        counts[index] = len(run_for(seconds / 3))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {
        "image_p50_ms": float(np.percentile(times, 50) * 1e3),
        "image_rps_c1": len(times) / times.sum(),
        "image_threaded_c8": sum(counts) / (seconds / 3),
    }


if __name__ == "__main__":
    main()
